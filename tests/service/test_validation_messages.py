"""422 messages name fields as a client writes them, one line per field (service.errors)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from metarec.service import schemas
from metarec.service.errors import describe_validation


def _message(model: type[pydantic.BaseModel], body: dict[str, Any]) -> str:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(body)
    status, code, message = describe_validation(list(caught.value.errors()))
    assert (status, code) == (422, "validation_error")
    return message


def test_a_validators_message_wins_over_another_union_members_type_mismatch() -> None:
    body = {"items": [{"item_id": "g", "title": "T", "genres": ["A|B"]}]}
    # was items[0].genres.list[function-after[_a_genre(), ...]][0]: ...; and a second
    # line from the string member
    assert _message(schemas.ItemsIn, body) == (
        "items[0].genres[0]: must not contain '|': give each genre as its own list entry "
        "(got 'A|B')"
    )


def test_every_error_of_the_member_that_got_further_keeps_its_place() -> None:
    # merged at the union's root, "genres: ... (got '')" lost which entry was empty,
    # and a validator's message hid the other entries' errors
    body = {"items": [{"item_id": "g", "title": "T", "genres": ["Comedy", "", "A|B"]}]}
    assert _message(schemas.ItemsIn, body) == (
        "items[0].genres[1]: String should have at least 1 character (got ''); "
        "items[0].genres[2]: must not contain '|': give each genre as its own list entry "
        "(got 'A|B')"
    )


def test_type_mismatches_of_every_member_are_one_line_joined_by_or() -> None:
    event = {"event_id": "e", "item_id": "1", "type": "like", "timestamp": [1]}
    assert _message(schemas.EventsIn, {"events": [event]}) == (
        "events[0].timestamp: Input should be a valid datetime; or Input should be a valid number"
    )


def test_a_clients_own_key_named_like_a_type_is_kept() -> None:
    error = {"loc": ("body", "features", "time"), "msg": "Value error, bad", "type": "value_error"}
    assert describe_validation([error | {"input": "x"}])[2] == "features.time: bad (got 'x')"


def test_a_bare_event_is_named_as_sent_and_a_list_body_is_told_the_wrapper() -> None:
    event = {"event_id": "e", "item_id": "1", "type": "like", "timestamp": [1]}
    with pytest.raises(pydantic.ValidationError) as caught:
        schemas.EventsIn.model_validate(event)
    # located as FastAPI locates a body's errors
    errors = [{**e, "loc": ("body", *e["loc"])} for e in caught.value.errors()]
    bare = describe_validation(errors, event, "events")[2]
    # was "events[0].timestamp", a field the client never sent
    assert bare == "timestamp: Input should be a valid datetime; or Input should be a valid number"
    assert schemas.EventsIn.model_validate(event | {"timestamp": 1}).where(0) == ""
    wrapped = schemas.EventsIn.model_validate({"events": [event | {"timestamp": 1}] * 3})
    assert wrapped.where(2) == "events[2]."
    error = {"loc": ("body",), "msg": "Input should be a valid dictionary", "type": "dict_type"}
    said = describe_validation([error | {"input": [event]}], [event], "events")[2]
    hint = ' (several events go in {"events": [...]})'
    assert said == "body: expected a JSON object, got a list" + hint
    elsewhere = describe_validation([error | {"input": [event]}], [event], "users")[2]
    assert elsewhere == "body: expected a JSON object, got a list"


def test_query_and_path_fields_are_named_as_body_fields_are_and_long_values_keep_a_quote() -> None:
    error = {"loc": ("query", "candidates"), "msg": "too long", "type": "string_too_long"}
    said = describe_validation([error | {"input": "x" * 500}])[2]
    assert said.startswith("candidates: too long (got 'xxx") and said.endswith("x…')")
    assert len(said) == len("candidates: too long (got )") + 80
    path = {"loc": ("path", "user_id"), "msg": "too long", "type": "string_too_long"}
    assert describe_validation([path | {"input": "u"}])[2] == "user_id: too long (got 'u')"


@pytest.mark.parametrize(
    "user_id",
    # a red heart, a keycap, a CJK ideographic variation sequence, a double exclamation
    # mark emoji, a Persian word with its zero-width non-joiner
    [
        "\u2764\ufe0f",
        "1\ufe0f\u20e3",
        "\u8fbb\U000e0100",
        "\u203c\ufe0f",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    ],
)
def test_ids_whose_variation_selectors_and_joiners_draw_are_taken(user_id: str) -> None:
    assert schemas.UserIn.model_validate({"user_id": user_id}).user_id == user_id


@pytest.mark.parametrize(
    "model, body",
    [
        (schemas.ItemsIn,
         {"items": [{"item_id": f"i{n}", "title": "T", "genres": [0] * 100} for n in range(1000)]}),
        (schemas.EventsIn, {"events": [{}] * 1000}),
        (schemas.UserIn, {"user_id": "u", "ratings": [{}] * 1000}),
    ],
)  # fmt: skip
def test_a_long_bad_list_stops_at_its_first_bad_entry(
    model: type[pydantic.BaseModel], body: dict[str, Any]
) -> None:
    # every entry's errors (100,000 for a thousand items of 100 bad genres each) were
    # built and described on the event loop: over a second in which no one was answered
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(body)
    assert {e["loc"][1] for e in caught.value.errors()} == {0}

"""The request-body reader: JSON as the client meant it, or a message saying where not."""

from __future__ import annotations

import pytest

from metarec.service.json_body import UnreadableJson, parse


def test_plain_json_reads_as_the_standard_decoder_reads_it() -> None:
    body = b'{"a": [1, {"b": "\\ud83d\\ude00", "c": null}], "d": "caf\xc3\xa9"}'
    assert parse(body) == {"a": [1, {"b": "\U0001f600", "c": None}], "d": "caf\u00e9"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"a": 1, "a": 1}', "the key 'a' twice"),  # even with the same value
        (b'{"events": [{"x": 1}, {"y": 2, "y": 3}]}', "the key 'y' twice"),
        (b'{"caf\xc3\xa9": 1, "caf\\u00e9": 2}', "the key 'caf\u00e9' twice"),  # two spellings
        (b'{"a": [[{"b": ["ok", "\\udfff"]}]]}', "surrogate ('\\udfff')"),  # deep in lists
        (b'{"\\uD800x": 1}', "surrogate ('\\ud800x')"),  # upper-case escape, in a key
        (b'["\\ude00\\ud83d"]', "surrogate"),  # a pair in the wrong order is two lone ones
    ],
)
def test_json_that_says_two_things_or_holds_no_text_is_refused(body: bytes, needle: str) -> None:
    with pytest.raises(UnreadableJson) as caught:
        parse(body)
    assert needle in str(caught.value)


def test_objects_in_different_places_may_share_keys() -> None:
    assert parse(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    "body",
    [
        b'{"features": {"gender": "\xed\xb0\x80"}}',  # a surrogate encoded as if UTF-8
        b'{"features": {"occ\xed\xa0\x80": "x"}}',
        '{"user_id": "u"}'.encode("utf-16"),  # with its byte-order mark
    ],
)
def test_bytes_that_are_not_utf8_are_refused_as_such(body: bytes) -> None:
    # json.loads(bytes) would guess UTF-16 and pass an encoded surrogate through: the
    # user was stored, and every read of it was a 500
    with pytest.raises(UnicodeDecodeError):
        parse(body)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_or_utf32_without_a_byte_order_mark_is_named(encoding: str) -> None:
    with pytest.raises(UnreadableJson, match="UTF-16 or UTF-32"):
        parse('{"user_id": "u"}'.encode(encoding))


def test_a_long_key_is_cut_with_its_quote_kept() -> None:
    key = "k" * 300
    with pytest.raises(UnreadableJson) as caught:
        parse(f'{{"{key}": 1, "{key}": 2}}'.encode())
    assert "'kkkk" in str(caught.value) and "kkk...' twice in one object" in str(caught.value)

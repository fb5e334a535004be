"""The HTTP API end to end: real uvicorn on loopback, real SQLite file, real model."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from metarec.recommender import Recommender
from metarec.service.serving import Served

from .conftest import LiveServer


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def find(client: httpx.Client, title: str) -> str:
    """Item id of an exact display title, through the search endpoint."""
    hits = client.get("/v1/items", params={"q": title, "limit": 100}).json()["items"]
    exact = [h["item_id"] for h in hits if h["title"] == title]
    assert exact, f"{title!r} not found in {hits[:5]}"
    return exact[0]


def test_operations_endpoints(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready")
        assert ready.status_code == 200 and ready.json()["model"].startswith("ml100k-small@")
        assert ready.json()["rating_range"] == [1.0, 5.0]
        assert ready.json()["stars"] == [1.0, 2.0, 3.0, 4.0, 5.0]  # what the page's stars post
        assert ready.json()["like_threshold"] == 4.0
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/v1/items", "/v1/users", "/v1/users/{user_id}/events"} <= set(paths)
        c.get("/v1/items", params={"q": "star"})
        # methods the API has no route for: one label, not one each (WebDAV's, as the
        # C HTTP parser refuses invented ones with a 400 before the app sees them)
        for method in ("PROPFIND", "MKCOL"):
            assert c.request(method, "/health").status_code == 405
        metrics = c.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'metarec_http_requests_total{route="/v1/items",method="GET",status="200"}' in text
    assert 'route="/health",method="other",status="405"} 2' in text and "PROPFIND" not in text
    bucket = (
        'metarec_http_request_duration_seconds_bucket{route="/v1/items",status="200",le="+Inf"}'
    )
    assert bucket in text
    for name in (
        "metarec_adaptations_total",
        "metarec_events_stored_total",
        "metarec_adaptation_cache_size",
        "metarec_adaptation_duration_seconds_count",
    ):
        assert f"\n{name}" in text  # fmt: skip


def test_the_openapi_document_lists_what_the_service_answers(
    live_server: str, server_api_key: str
) -> None:
    """A client generated from /openapi.json: the statuses the server sends, /ready's
    body, the single-event form of events, and a rating always sent."""
    with httpx.Client(base_url=live_server) as c:
        doc = c.get("/openapi.json").json()
        paths = doc["paths"]

        def statuses(path: str, method: str) -> set[str]:
            return set(paths[path][method]["responses"])

        # reads name what they answer; no key is needed for them
        assert {"404", "400", "422"} <= statuses("/v1/items/{item_id}", "get")
        assert {"404", "503"} <= statuses("/v1/users/{user_id}/recommendations", "get")
        assert "401" not in statuses("/v1/items", "get") | statuses("/health", "get")
        assert c.get("/v1/items/no-such-item").status_code == 404
        # writes: key, host, size, media type and a busy store; events their conflict
        for path, method in (("/v1/items", "put"), ("/v1/users", "post")):
            assert {"401", "403", "413", "415", "503"} <= statuses(path, method)
        # refused before any route, so on every operation: a keyless server's Host
        # check, a body too large or not JSON (a GET's too), a head too large or slow
        for path, operations in paths.items():
            for operation in operations.values():
                assert {"403", "408", "413", "415", "431"} <= set(operation["responses"]), path
                for status, headers in (("503", "Retry-After"), ("405", "Allow")):
                    if status in operation["responses"]:
                        assert headers in operation["responses"][status]["headers"], path
        assert "503" in statuses("/v1/items", "get") and "503" in statuses(
            "/v1/items/{item_id}", "get"
        )
        told = c.request("GET", "/health", content=b"hello", headers={"Content-Type": "text/plain"})
        assert told.status_code == 415 and "415" in statuses("/health", "get")
        refused = c.request("PROPFIND", "/health")
        assert refused.status_code == 405 and "GET" in refused.headers["allow"]
        assert "409" in statuses("/v1/users/{user_id}/events", "post")
        bad_type = c.post("/v1/users", content=b"{}", headers={"Content-Type": "text/plain"})
        assert bad_type.status_code == 415 and bad_type.json()["error"]["code"]
        # /ready's body, as sent
        ready = doc["components"]["schemas"]["Ready"]
        assert set(ready["required"]) == set(c.get("/ready").json()) == {
            "status", "model", "rating_range", "stars", "like_threshold"
        }  # fmt: skip
        # one event object is a body the schema allows, as the server does
        body = paths["/v1/users/{user_id}/events"]["post"]["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        refs = {s["$ref"] for s in schema["anyOf"]}
        assert refs == {"#/components/schemas/EventsIn", "#/components/schemas/EventIn"}
        # a $ref beside the anyOf holds too in OpenAPI 3.1: only {"events": [...]} passed
        assert "$ref" not in schema
        # a feature's value is typed, with an example the service takes: "Try it out"
        # sent {"additionalProp1": {}}, the schema's "any", and was refused
        features = doc["components"]["schemas"]["UserIn"]["properties"]["features"]
        assert features["additionalProperties"] == {"type": ["string", "number", "boolean", "null"]}
        example = features["examples"][0]
        created = c.post(
            "/v1/users",
            json={"user_id": "openapi-example", "features": example},
            headers={"X-API-Key": server_api_key},
        )
        assert created.status_code == 201, created.text
        # fold-in's refusal when another process moved the state; a damaged store
        assert {"409", "500"} <= statuses("/v1/admin/fold-in", "post")
        # errors are JSON on /metrics as everywhere, though its 200 is text
        metrics_405 = paths["/metrics"]["get"]["responses"]["405"]["content"]
        assert set(metrics_405) == {"application/json"}
        assert c.post("/metrics").headers["content-type"] == "application/json"
        models = doc["components"]["schemas"]
        for model, field in (("EventsIn", "events"), ("ItemsIn", "items"), ("UserIn", "ratings")):
            assert models[model]["properties"][field]["maxItems"] == 1000  # answered with 413
        assert "rating" in doc["components"]["schemas"]["Recommendation"]["required"]


def test_search_is_case_insensitive_and_popular_first(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as c:
        hits = c.get("/v1/items", params={"q": "STAR", "limit": 5}).json()["items"]
        top = c.get("/v1/items", params={"limit": 3}).json()["items"]
        item = c.get(f"/v1/items/{hits[0]['item_id']}").json()
    assert len(hits) == 5 and all("star" in h["title"].lower() for h in hits)
    assert hits[0]["title"] == "Star Wars (1977)"  # the most rated title containing "star"
    assert top[0]["title"] == "Star Wars (1977)"
    assert item["n_ratings"] > 0 and item["text"].startswith("Star Wars (1977)")


def test_new_user_gets_a_list_then_feedback_changes_it(
    live_server: str, server_api_key: str
) -> None:
    user = uid()
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        titles = ("Toy Story (1995)", "Aladdin (1992)", "The Lion King (1994)")
        liked = {t: find(c, t) for t in titles}
        ratings = [
            {"item_id": i, "rating": r} for i, r in zip(liked.values(), (5, 5, 4), strict=True)
        ]
        created = c.post("/v1/users", json={"user_id": user, "ratings": ratings})
        assert created.status_code == 201 and created.json() == {"user_id": user, "n_events": 3}

        first = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
        assert first["user_id"] == user and first["n_events"] == 3
        assert first["model"].startswith("ml100k-small@")
        ids = [it["item_id"] for it in first["items"]]
        assert len(ids) == 10 and not set(ids) & set(liked.values())
        scores = [it["score"] for it in first["items"]]
        assert scores == sorted(scores, reverse=True)
        assert [it["rank"] for it in first["items"]] == list(range(1, 11))
        # a rating run also says which rating the user would most plausibly give
        rated = [it["rating"] for it in first["items"]]
        assert set(rated) <= {1.0, 2.0, 3.0, 4.0, 5.0}
        assert rated == sorted(rated, reverse=True)  # medians follow the scores' order

        # five events on items outside the list: only a re-adapted model can change the top 10
        picks = ["Alien (1979)", "The Terminator (1984)", "Die Hard (1988)",
                 "Sleepless in Seattle (1993)", "While You Were Sleeping (1995)"]  # fmt: skip
        pids = [find(c, t) for t in picks]
        assert not set(pids) & set(ids)
        kinds = ["like", "like", "rating", "dislike", "skip"]
        events = [
            {"event_id": uid("e"), "item_id": i, "type": k}
            for i, k in zip(pids, kinds, strict=True)
        ]
        events[2]["value"] = 5
        assert c.post(f"/v1/users/{user}/events", json={"events": events}).json() == {
            "accepted": 5,
            "duplicates": 0,
        }
        second = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
        bare = c.get(
            f"/v1/users/{user}/recommendations", params={"k": 10, "reasons": "false"}
        ).json()
        bad = c.get(f"/v1/users/{user}/recommendations", params={"reasons": "perhaps"})
        # listed again (exclude_seen off), each says what the user did: a skip was
        # "You rated it 2", the rating it stands for, and a dislike "Because you liked"
        seen = c.get(
            f"/v1/users/{user}/recommendations",
            params={"k": 6, "exclude_seen": "false", "candidates": ",".join(pids)},
        ).json()["items"]
    said = {it["item_id"]: it["reason"] for it in seen}
    assert said == {
        pids[0]: "You liked it",
        pids[1]: "You liked it",
        pids[2]: "You rated it 5",
        pids[3]: "You disliked it",
        pids[4]: "You skipped it",
    }
    assert second["n_events"] == 8
    assert [it["item_id"] for it in second["items"]] != ids
    # without reasons: the same list and scores, each reason null (the reasons' check
    # adapts the user again without each named rating: a client that shows none
    # need not pay for it)
    assert [{**it, "reason": None} for it in second["items"]] == bare["items"]
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    rated_titles = set(liked) | {"Alien (1979)", "The Terminator (1984)", "Die Hard (1988)"}
    reasons = [it["reason"] for it in second["items"]]
    because = [r for r in reasons if r.startswith("Because you liked")]
    assert because, reasons
    for reason in because:
        named = reason.removeprefix("Because you liked ").replace(" and ", ", ").split(", ")
        assert set(named) <= rated_titles, reason


def _readme_body(starts: str) -> dict[str, Any]:
    """The JSON body the README's endpoint table shows, found by how it starts."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| endpoint | what |") :].split("\n\n")[0]
    bodies = [b for b in table.split("`") if b.startswith(starts)]
    assert len(bodies) == 1, f"README's endpoint table: no single body starting {starts!r}"
    body: dict[str, Any] = json.loads(bodies[0])
    return body


def test_the_readme_request_bodies_are_accepted(live_server: str, server_api_key: str) -> None:
    """A user copying the README's examples gets 2xx, not a round of 422s."""
    items = _readme_body('{"items"')
    items["items"][0]["item_id"] = item = uid("i")
    user_body = _readme_body('{"user_id"')
    user_body["user_id"] = user = uid()
    event = _readme_body('{"event_id"')
    event["event_id"] = uid("e")
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        assert c.put("/v1/items", json=items).status_code == 200
        created = c.post("/v1/users", json=user_body)
        assert created.status_code == 201, created.text
        sent = c.post(f"/v1/users/{user}/events", json=event)
        assert sent.json() == {"accepted": 1, "duplicates": 0}, sent.text
        got = c.get(f"/v1/users/{user}").json()
        assert got["features"] == user_body["features"]
        # shown as MovieLens shows titles, with the year
        assert c.get(f"/v1/items/{item}").json()["title"].startswith(items["items"][0]["title"])


def test_zero_shot_user_gets_the_prior(live_server: str, server_api_key: str) -> None:
    user = uid()
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        assert c.post("/v1/users", json={"user_id": user}).json()["n_events"] == 0
        recs = c.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    assert recs["n_events"] == 0 and len(recs["items"]) == 5
    assert {it["reason"] for it in recs["items"]} == {"Well liked by users overall"}


def test_retried_event_ids_count_once(live_server: str, server_api_key: str) -> None:
    user = uid()
    ev = [{"event_id": uid("e"), "item_id": "1", "type": "click"} for _ in range(3)]
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        c.post("/v1/users", json={"user_id": user})
        path = f"/v1/users/{user}/events"
        assert c.post(path, json={"events": ev[:2]}).json() == {"accepted": 2, "duplicates": 0}
        assert c.post(path, json={"events": ev}).json() == {"accepted": 1, "duplicates": 2}
        assert c.post(path, json=ev[0]).json() == {"accepted": 0, "duplicates": 1}
        twice = {"events": [ev[0] | {"event_id": "dup-in-batch"}] * 2}
        assert c.post(path, json=twice).json() == {"accepted": 1, "duplicates": 1}
        # an id that names another event is refused, not counted as a retry; the whole
        # request is rolled back
        other = uid()
        c.post("/v1/users", json={"user_id": other})
        fresh = {"event_id": uid("e"), "item_id": "2", "type": "like"}
        for where, events in (
            (f"/v1/users/{other}/events", [ev[0]]),  # another user's id
            (path, [fresh, ev[0] | {"item_id": "2"}]),  # same user, another item
            (path, [fresh, ev[1] | {"type": "rating", "value": 2}]),
            (path, [fresh, fresh | {"item_id": "3"}]),  # two events under one id
        ):
            r = c.post(where, json={"events": events})
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "event_conflict"
            assert "event_id" in r.json()["error"]["message"]
        assert c.get(f"/v1/users/{other}").json()["n_events"] == 0
        got = c.get(f"/v1/users/{user}").json()
    assert got["n_events"] == 4 and len(got["history"]) == 4
    assert got["history"][0] == {
        "event_id": ev[0]["event_id"],  # the client's key, to match what it sent
        "item_id": "1",
        "title": "Toy Story (1995)",
        "type": "click",
        "value": None,
        "rating": 4.0,  # a click is a weak positive: 4 on 1-5
        "timestamp": got["history"][0]["timestamp"],
    }


def test_latest_event_per_item_wins(live_server: str, server_api_key: str) -> None:
    user = uid()
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        c.post("/v1/users", json={"user_id": user})
        like = {"event_id": uid("e"), "item_id": "50", "type": "like"}
        rating = {"event_id": uid("e"), "item_id": "50", "type": "rating", "value": 1}
        events = [like | {"timestamp": "2024-01-02T00:00:00Z"}, rating | {"timestamp": 1704067200}]
        c.post(f"/v1/users/{user}/events", json={"events": events})
        history = c.get(f"/v1/users/{user}").json()["history"]
    # the rating was sent last but happened first (2024-01-01): the later like wins
    assert [h["type"] for h in history] == ["rating", "like"]
    assert [h["timestamp"] for h in history] == [1704067200.0, 1704153600.0]


def test_a_client_clock_a_little_fast_is_taken(live_server: str, server_api_key: str) -> None:
    user = uid()
    soon = time.time() + 120  # inside the slack; 2099 is refused (see _bad_requests)
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        c.post("/v1/users", json={"user_id": user})
        ev = {"event_id": uid("e"), "item_id": "50", "type": "like", "timestamp": soon}
        assert c.post(f"/v1/users/{user}/events", json=ev).status_code == 200
        history = c.get(f"/v1/users/{user}").json()["history"]
    assert [h["timestamp"] for h in history] == [pytest.approx(soon)]


Case = tuple[str, str, dict[str, Any], int, str, str]


def _bad_requests(key: str) -> list[Case]:
    """(method, path, httpx kwargs, status, error code, text the message must contain,
    or start with where it starts with ``^``)."""
    h = {"X-API-Key": key}
    js = h | {"content-type": "application/json"}
    ok = {"event_id": "e-bad", "item_id": "1", "type": "like"}
    events = "/v1/users/{u}/events"

    def event(**kw: Any) -> dict[str, Any]:
        return {"json": ok | kw, "headers": h}

    def body(obj: Any) -> dict[str, Any]:
        return {"json": obj, "headers": h}

    rating = {"event_id": "x", "item_id": "1", "type": "rating"}
    recs = "/v1/users/{u}/recommendations"
    reload = "/v1/admin/reload"
    return [
        ("POST", events, {"content": b'{"event_id": ', "headers": js}, 400, "bad_json",
         "not valid JSON at character 13: Expecting value"),
        ("POST", events, event(item_id="no-such"), 422, "unknown_item", "no-such"),
        # a check across an event's fields names the field, not "body" ("^": the start)
        ("POST", events, event(type="click", value=3), 422, "validation_error",
         "^value: only a rating event takes one"),
        ("POST", events, body(rating), 422, "validation_error",
         "^value: required for a rating event"),
        ("POST", events, body({"events": [rating]}), 422, "validation_error",
         "^events[0]: value: required for a rating event"),
        ("POST", events, {"content": b'{"a": 1}', "headers": h | {"content-type": "text/plain"}},
         415, "unsupported_media_type", "'text/plain'"),
        ("POST", events, {"data": {"event_id": "f"}, "headers": h},
         415, "unsupported_media_type", "application/x-www-form-urlencoded"),
        # one event sent bare: its fields named as sent, not as "events[0].value"
        ("POST", events, body(rating | {"value": 7}), 422, "validation_error",
         "value: rating 7.0 is outside"),
        ("POST", events, body({"events": [rating | {"value": 7}]}), 422, "validation_error",
         "events[0].value: rating 7.0 is outside"),
        ("POST", events, body([ok]), 422, "validation_error",
         'expected a JSON object, got a list (several events go in {"events": [...]})'),
        # the user before the item: a 404 for the resource, not a 422 for a field
        ("POST", "/v1/users/nobody/events", event(item_id="nope"), 404, "unknown_user", "nobody"),
        ("GET", "/v1/users/nobody/recommendations?candidates=nope", {"headers": h}, 404,
         "unknown_user", "nobody"),
        # a NUL is in no title: it matched every title with a space
        ("GET", "/v1/items?q=%00", {}, 422, "validation_error",
         "q: must not contain the control character U+0000"),
        # PostgreSQL holds no NUL in text: a 500 "store damaged" there, a 404 here
        ("GET", "/v1/users/a%00b", {"headers": h}, 422, "validation_error",
         "user_id: must not contain the control character U+0000"),
        ("POST", "/v1/users/a%0Ab/events", event(), 422, "validation_error",
         "user_id: must not contain the control character U+000A"),
        ("GET", "/v1/items?q=a&q=b", {}, 422, "validation_error",
         "q: given 2 times; give each query parameter once"),
        ("PUT", "/v1/users/{u}", body({}), 405, "method_not_allowed",
         "PUT is not a method '/v1/users/{u}' takes; it takes DELETE, GET, HEAD"),
        # two routes at one path: Starlette's Allow named the first one's alone
        ("POST", "/v1/items", body({}), 405, "method_not_allowed",
         "POST is not a method '/v1/items' takes; it takes GET, HEAD, PUT"),
        ("POST", events, {"json": ok, "headers": [("X-API-Key", key), ("X-API-Key", key)]},
         400, "bad_request", "X-API-Key given 2 times"),
        # a list of genres is held to the limit of their "A|B" string
        ("PUT", "/v1/items", body({"items": [{"item_id": "g", "title": "G",
                                              "genres": ["g"] * 101}]}),
         422, "validation_error", "items[0].genres: List should have at most 100 items"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "g", "title": "G",
                                              "genres": ["x" * 20] * 60}]}),
         422, "validation_error", "1,259 characters; at most 1,000"),
        ("POST", events, body(rating | {"value": 0.5}), 422, "validation_error", "[1, 5]"),
        ("POST", events, body(rating), 422, "validation_error", "value"),
        ("POST", events, event(type="poke"), 422, "validation_error", "type"),
        ("POST", events, event(event_id=""), 422, "validation_error", "event_id"),
        # the prefix of the ids a user's initial ratings get: such an event read as one
        ("POST", events, event(event_id="init-abc"), 422, "validation_error",
         "event_id: ids starting 'init-' are the server's"),
        ("POST", events, event(event_id="x" * 129), 422, "validation_error", "event_id"),
        ("POST", events, event(colour="red"), 422, "validation_error", "colour"),
        ("POST", events, body({"events": []}), 422, "validation_error", "events"),
        ("POST", events, body({"events": [ok] * 1001}), 413, "too_large", "1000"),
        # past the limit and invalid too: each of 300,000 validated on the event loop,
        # 7 s in which no other request was answered; refused by size before that
        ("POST", events, body({"events": [{}] * 300_000}), 413, "too_large",
         "events: 300000 in one request; the limit is 1000"),
        ("POST", "/v1/users", body({"user_id": "big", "ratings": [{}] * 300_000}), 413,
         "too_large", "ratings: 300000 in one request; the limit is 1000"),
        ("PUT", "/v1/items", body({"items": [{}] * 300_000}), 413, "too_large",
         "items: 300000 in one request; the limit is"),
        ("POST", events, {"content": b" " * 1_000_001, "headers": js}, 413, "too_large", "bytes"),
        ("POST", events, {"json": ok}, 401, "missing_api_key", "X-API-Key"),
        ("POST", events, {"json": ok, "headers": {"X-API-Key": "no"}}, 401, "invalid_api_key", "X"),
        # the key comes before routing: without it no write route is confirmed or denied
        ("POST", "/v1/no-such-route", {"json": ok}, 401, "missing_api_key", "X-API-Key"),
        ("DELETE", "/v1/items", {}, 401, "missing_api_key", "X-API-Key"),
        ("POST", "/v1/no-such-route", body(ok), 404, "not_found", "/v1/no-such-route"),
        ("POST", "/v1/users/nobody/events", body(ok), 404, "unknown_user", "nobody"),
        ("GET", "/v1/users/nobody/recommendations", {"headers": h}, 404, "unknown_user", "nobody"),
        ("GET", "/v1/users/nobody", {"headers": h}, 404, "unknown_user", "nobody"),
        # a user's data is read with the key: features and histories were open to
        # whoever reached the port, and which users exist with them
        ("GET", "/v1/users/nobody", {}, 401, "missing_api_key", "X-API-Key"),
        ("GET", recs, {"headers": {"X-API-Key": "no"}}, 401, "invalid_api_key", "X"),
        ("GET", "/v1/users", {}, 401, "missing_api_key", "X-API-Key"),
        ("GET", recs + "?k=0", {"headers": h}, 422, "validation_error", "k"),
        ("GET", recs + "?k=101", {"headers": h}, 422, "validation_error", "k"),
        ("GET", recs + "?candidates=1,nope", {"headers": h}, 422, "unknown_item", "nope"),
        ("GET", "/v1/items/no-such-item", {}, 404, "unknown_item", "no-such-item"),
        ("GET", "/v1/items?limit=0", {}, 422, "validation_error", "limit"),
        ("POST", "/v1/users", body({"user_id": "{u}"}), 409, "user_exists", "{u}"),
        ("POST", "/v1/users", body({"user_id": ""}), 422, "validation_error", "user_id"),
        # looks like "ab" everywhere it is shown, and is another user
        ("POST", "/v1/users", body({"user_id": "a\u200bb"}), 422, "validation_error",
         "invisible character U+200B"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "x\u202ey", "title": "A"}]}),
         422, "validation_error", "invisible character U+202E"),
        ("POST", "/v1/users", body({"user_id": "cafe\u0301"}), 422, "validation_error",
         "NFC"),
        # a space that is not ' ', a tag character and a filler draw like "a b", "a"
        ("POST", "/v1/users", body({"user_id": "a\u00a0b"}), 422, "validation_error",
         "U+00A0 (NO-BREAK SPACE), which looks like a plain space"),
        ("POST", "/v1/users", body({"user_id": "a\U000e0041"}), 422, "validation_error",
         "invisible character U+E0041"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "a\u3164", "title": "A"}]}),
         422, "validation_error", "invisible character U+3164"),
        ("POST", "/v1/users", body({"user_id": "a\u2800b"}), 422, "validation_error",
         "invisible character U+2800"),
        # a variation selector after a letter draws nothing: "ab" again
        ("POST", "/v1/users", body({"user_id": "a\ufe0fb"}), 422, "validation_error",
         "variation selector U+FE0F after a character that takes none"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "n\U000e0100", "title": "A"}]}),
         422, "validation_error", "variation selector U+E0100"),
        ("POST", "/v1/users", body({"user_id": ".."}), 422, "validation_error",
         "clients resolve those path segments away"),
        # one line per field, not one per member of pydantic's unions
        ("PUT", "/v1/items", body({"items": [{"item_id": "g", "title": "A", "genres": ["A|B"]}]}),
         422, "validation_error", "items[0].genres[0]: must not contain '|'"),
        ("POST", events, event(timestamp="yesterday"), 422, "validation_error",
         "timestamp: Input should be a valid datetime or date, input is too short; "
         "or Input should be a valid number"),
        ("POST", "/v1/users", body({"user_id": "v", "ratings": [{"item_id": "1", "rating": 9}]}),
         422, "validation_error", "ratings[0].rating"),
        ("POST", "/v1/users", body({"user_id": "v", "ratings": [{"item_id": "zz", "rating": 3}]}),
         422, "unknown_item", "zz"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "n"}]}), 422, "validation_error", "title"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "n", "title": "A"}] * 2}),
         422, "validation_error", "repeated"),
        # times that are not times: stored, they would sort before or after every event
        *[("POST", events, {"content": b'{"event_id": "t", "item_id": "1", "type": "click", '
                            b'"timestamp": ' + t + b"}", "headers": js},
           422, "validation_error", "timestamp") for t in
          (b'"nan"', b"1e308", b"true", b"1" + b"0" * 400,
           # past year 9999 in UTC; a number in a string (pydantic read it as milliseconds)
           b'"9999-12-31T23:59:59-14:00"', b'"0001-01-01T00:00:00+14:00"', b'"1700000000000"',
           # float() reads these, and they reached the epoch-seconds branch
           b'"1_700_000_000"', b'"Infinity"')],
        # a wall-clock time without a zone, east of UTC: read as UTC, hours ahead
        ("POST", events, {"content": b'{"event_id": "t", "item_id": "1", "type": "click", '
                          b'"timestamp": "' + time.strftime(
                              "%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 9 * 3600)
                          ).encode() + b'"}', "headers": js},
         422, "validation_error", "without a zone is read as UTC"),
        # far ahead of the server's clock: as the latest event it would pin the item for good
        *[("POST", events, {"content": b'{"event_id": "t", "item_id": "1", "type": "click", '
                            b'"timestamp": ' + t + b"}", "headers": js},
           422, "validation_error", "ahead of the server's clock") for t in
          (b'"2099-01-01T00:00:00Z"', b"4102444800", str(time.time() + 3600).encode())],
        # a boolean is not a rating (pydantic read true as 1)
        ("POST", events, body(rating | {"value": True}), 422, "validation_error",
         "not a boolean"),
        ("POST", "/v1/users", body({"user_id": "v", "ratings": [{"item_id": "1", "rating": True}]}),
         422, "validation_error", "ratings[0].rating"),
        # nor is a number in a string, as for timestamps (pydantic read "5" as 5)
        ("POST", "/v1/users", body({"user_id": "v", "ratings": [{"item_id": "1", "rating": "5"}]}),
         422, "validation_error", "not a string"),
        ("POST", events, body(rating | {"value": "4"}), 422, "validation_error", "not a string"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "y", "title": "Y", "year": "2024"}]}),
         422, "validation_error", "items[0].year"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "y", "title": "Y", "year": True}]}),
         422, "validation_error", "not a boolean"),
        # a lone surrogate: valid JSON, no UTF-8; stored, every read of the user was a 500
        ("POST", "/v1/users", {"content": b'{"user_id": "s", "features": {"a": "\\ud800"}}',
                               "headers": js}, 400, "bad_json", "lone UTF-16 surrogate"),
        # control characters: invisible in every listing, a NUL ends C strings
        ("POST", "/v1/users", body({"user_id": "a\u0000b"}), 422, "validation_error", "U+0000"),
        ("POST", "/v1/users", body({"user_id": "a\tb"}), 422, "validation_error", "U+0009"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "c", "title": "T\u0000"}]}),
         422, "validation_error", "U+0000"),
        # feature values JSON or the feature encoder cannot hold
        # named by key, as the model's own check names them ("features: age:" before)
        *[("POST", "/v1/users", {"content": b'{"user_id": "f", "features": {"age": ' + v + b"}}",
                                 "headers": js}, 422, "validation_error", "features.age: " + m)
          for v, m in ((b"1" + b"0" * 400, "integers must lie within"),
                       (b"1e400", "must be finite (got inf)$"),  # not said twice
                       (b"[1]", "must be a string, a number"),
                       (b'"' + b"x" * 201 + b'"', "longer than 200 characters"))],
        # a feature's name too long: named once, in its place, not again as "(got ...)"
        ("POST", "/v1/users", body({"user_id": "f", "features": {"a" * 101: 1}}), 422,
         "validation_error", "String should have at most 100 characters$"),
        # ids the API could not address again: paths, the candidates list
        ("POST", "/v1/users", body({"user_id": "a/b"}), 422, "validation_error", "'/'"),
        ("POST", "/v1/users", body({"user_id": " a"}), 422, "validation_error", "space"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "a,b", "title": "A"}]}),
         422, "validation_error", "','"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "b", "title": "B", "author": "A"}]}),
         422, "validation_error", "items[0].author: not a field of an item"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "blank", "title": "   "}]}),
         422, "validation_error", "items[0].title"),
        # outside the folder reloads may load: refused before it is looked at
        ("POST", reload, body({"run": "/no/such/run"}), 403, "run_outside_runs_dir",
         "/no/such/run"),
        ("POST", reload, body({"run": "a\x00b"}), 422, "invalid_run", "NUL"),
        ("POST", reload, body({"run": "x" * 5000}), 403, "run_outside_runs_dir", "is not in the"),
        ("POST", reload, {"json": {"run": "/no/such/run"}}, 401, "missing_api_key", "X-API-Key"),
        ("GET", "/no/such/route", {}, 404, "not_found", "no endpoint at '/no/such/route'"),
        # "1/" is not item "1": a 307 to it answered for another id and re-sent writes
        ("GET", "/v1/items/1/", {}, 404, "unknown_item", "unknown item '1/'"),
        ("GET", "/v1/items/1%2F", {}, 404, "unknown_item", "unknown item '1/'"),
        ("GET", "/v1/items/", {}, 422, "validation_error", "item_id"),
        ("POST", events + "/", event(), 404, "not_found", "events/'"),
        # a final '/' is not taken away (item "1/" is not "1"), but said where it is the
        # only difference
        ("GET", "/docs/", {}, 404, "not_found", "no endpoint at '/docs/' (did you mean '/docs'?)"),
        ("POST", events + "/", event(), 404, "not_found", f"(did you mean '{events}'?)"),
        # a typo'd parameter was ignored, and the list looked like the one asked for
        ("GET", recs + "?k=1&candidate=50", {"headers": h}, 422, "validation_error",
         "unknown query parameter(s) ['candidate'] (this endpoint takes: candidates, "
         "exclude_seen, k, reasons)"),
        ("GET", recs + "?exclude-seen=false", {"headers": h}, 422, "validation_error",
         "['exclude-seen']"),
        # control characters in the idempotency key, as in every other id
        ("POST", events, event(event_id="e\u0000x"), 422, "validation_error", "U+0000"),
        # genres: '|' joins them in the stored text, so "Dra|ma" came back as two
        ("PUT", "/v1/items", body({"items": [{"item_id": "g", "title": "G",
                                              "genres": ["Dra|ma"]}]}),
         422, "validation_error", "items[0].genres"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "g", "title": "G", "genres": [""]}]}),
         422, "validation_error", "items[0].genres"),
        ("PUT", "/v1/items", body({"items": [{"item_id": "g", "title": "G",
                                              "genres": "a\u0000b"}]}),
         422, "validation_error", "U+0000"),
        # two first ratings of one item: which counted depended on storage order
        ("POST", "/v1/users", body({"user_id": "v", "ratings": [{"item_id": "1", "rating": 5},
                                                               {"item_id": "1", "rating": 1}]}),
         422, "validation_error", "item '1' is rated twice, at ratings[0] and ratings[1]"),
        ("POST", reload, body({"run": ""}), 422, "validation_error", "run"),
        # user features the model cannot read: a typo'd key or a number in a string
        # counted as "unknown" without a word
        ("POST", "/v1/users", body({"user_id": "v", "features": {"Age": 25}}),
         422, "validation_error", "features.Age: not a feature of this model (it reads age, "),
        ("POST", "/v1/users", body({"user_id": "v", "features": {"age": "25"}}),
         422, "validation_error", "features.age: must be a number or null (got '25')"),
        ("POST", "/v1/admin/fold-in", {"content": b"{{", "headers": js}, 400, "bad_json", "JSON"),
        ("POST", "/v1/admin/fold-in", body({"x": 1}), 422, "validation_error", "x"),
        # JSON that says two things: the last repeated key won without a word, and a
        # lone surrogate key was printed back as replacement characters
        ("POST", "/v1/users", {"content": b'{"user_id": "d1", "user_id": "d2"}', "headers": js},
         400, "bad_json", "gives the key 'user_id' twice in one object"),
        ("POST", events, {"content": b'{"event_id": "r", "item_id": "1", "type": "rating", '
                                     b'"value": 5, "value": 1}', "headers": js},
         400, "bad_json", "the key 'value' twice"),
        # Python's decoder reads NaN and Infinity, which JSON has no word for
        *[("POST", "/v1/users", {"content": b'{"user_id": "n", "features": {"age": ' + v + b"}}",
                                 "headers": js},
           400, "bad_json", f"holds {v.decode()}, which is not JSON")
          for v in (b"NaN", b"Infinity", b"-Infinity")],
        ("POST", events, {"content": b'{"event_id": "t", "item_id": "1", "type": "click", '
                          b'"timestamp": NaN}', "headers": js}, 400, "bad_json", "holds NaN"),
        ("POST", "/v1/users", {"content": b'{"user_id": "s", "features": {"\\ud800": 1}}',
                               "headers": js},
         400, "bad_json", "lone UTF-16 surrogate ('\\ud800')"),
        # the same surrogate encoded as if UTF-8: stored, and every read of the user a 500
        ("POST", "/v1/users", {"content": b'{"user_id": "s", "features": {"g": "\xed\xb0\x80"}}',
                               "headers": js},
         400, "bad_json", "not UTF-8 text (byte 0xed at position 36)"),
    ]  # fmt: skip


def test_malformed_requests_get_json_4xx(live_server: str, server_api_key: str) -> None:
    user = uid()
    key = {"X-API-Key": server_api_key}
    with httpx.Client(base_url=live_server, timeout=60) as c:
        c.post("/v1/users", json={"user_id": user}, headers={"X-API-Key": server_api_key})
        for method, path, kw, status, code, needle in _bad_requests(server_api_key):
            if "json" in kw:
                kw = kw | {"json": _subst(kw["json"], user)}
            r = c.request(method, path.replace("{u}", user), **kw)
            where = f"{method} {path} -> {r.status_code} {r.text[:200]}"
            assert r.status_code == status, where
            body = r.json()
            assert set(body) == {"error"} and body["error"]["code"] == code, where
            needle = needle.replace("{u}", user)
            if needle.startswith("^"):
                assert body["error"]["message"].startswith(needle[1:]), where
            elif needle.endswith("$"):
                assert body["error"]["message"].endswith(needle[:-1]), where
            else:
                assert needle in body["error"]["message"], where
            if status == 405:  # the header and the message name the same methods
                assert body["error"]["message"].endswith(f"it takes {r.headers['allow']}"), where
            assert "Traceback" not in r.text
        # nothing above was stored
        assert c.get(f"/v1/users/{user}", headers=key).json()["n_events"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",  # no request line
        b"FROB /health HTTP/1.1\r\nHost: x\r\n\r\n",  # a method the parser does not know
        b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n",  # a header without a colon
    ],
)
def test_unparseable_http_gets_a_json_400(live_server: str, raw: bytes) -> None:
    status, headers, body = _raw_reply(live_server, raw)
    assert status == "HTTP/1.1 400 Bad Request", body
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body) and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "bad_http" and "not an HTTP/1.1 request" in error["message"]
    # answered before the app's middleware, but with the headers every answer carries
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "deny"
    assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"


def _raw_reply(live_server: str, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    host, port = live_server.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        reply = b""
        while chunk := sock.recv(65536):  # the server closes the connection after it
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], dict(line.lower().split(": ", 1) for line in lines[1:]), body


def test_a_candidates_list_past_what_a_url_holds_is_named(
    live_server: str, server_api_key: str
) -> None:
    """The endpoint declared 200,000 characters of candidates, but a URL past 65,535
    bytes failed in the parser as "not an HTTP/1.1 request": the limit is now one a
    URL can hold even percent-encoded (requests sends a comma as %2C), and a longer
    URL a 414 saying why."""
    path = "/v1/users/nobody/recommendations?candidates="
    key = {"X-API-Key": server_api_key}
    over = httpx.get(live_server + path + "1," * 30_001, headers=key, timeout=30)
    assert over.status_code == 422, over.text
    assert "candidates" in over.text and "20000" in over.text
    status, headers, body = _raw_reply(
        live_server, f"GET {path}{'1,' * 40_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert status == "HTTP/1.1 414 URI Too Long" and headers["content-type"] == "application/json"
    assert headers["x-frame-options"] == "deny" and headers["cache-control"] == "no-store"
    error = json.loads(body)["error"]
    assert error["code"] == "uri_too_long"
    said = error["message"]
    assert "bytes as sent; this server reads up to 65,535: send fewer candidates" in said
    assert "(at most 20,000 characters" in said
    # the most the limit takes, sent as clients send it (each comma as %2C), still
    # reaches the endpoint: here, to be told the user is unknown
    most = ",".join(["1"] * 10_000)
    within = httpx.get(
        live_server + path[: path.index("?")], params={"candidates": most}, headers=key
    )
    assert within.status_code == 404 and within.json()["error"]["code"] == "unknown_user"


def _subst(obj: Any, user: str) -> Any:
    if isinstance(obj, dict):
        return {k: _subst(v, user) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_subst(v, user) for v in obj]
    return obj.replace("{u}", user) if isinstance(obj, str) else obj


def test_chunked_body_over_the_limit_is_413(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(max_body_bytes=1000)
    with live.client(live.settings.api_key) as c:
        r = c.post(
            "/v1/users",
            content=iter([b'{"user_id": "', b"x" * 2000, b'"}']),  # no Content-Length
            headers={"content-type": "application/json"},
        )
        small = c.post("/v1/users", content=iter([b'{"user_id": "chunky"}']),
                       headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert small.status_code == 201


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_refused_write_reads_a_late_body_and_keeps_the_connection(live_server: str) -> None:
    # A client's body can arrive after the server has decided to refuse the request (a
    # 401 needs only the headers). Answering and closing before it arrives makes the
    # late body hit a closed socket: a TCP reset, which can destroy the 401 before the
    # client reads it (a flaky "connection reset by peer" in CI). The guard reads the
    # body first and then keeps the connection open for the next request.
    host, port = live_server.removeprefix("http://").split(":")
    body = b'{"events": [{"event_id": "late", "item_id": "1", "type": "like"}]}'
    head = (
        f"POST /v1/users/someone/events HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        time.sleep(0.3)  # long enough for a guard that does not wait to answer and close
        sock.sendall(body)
        status, headers, payload = _read_response(sock)
        assert status == 401 and b"missing_api_key" in payload
        assert headers.get("connection") != "close"
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        status, _, _ = _read_response(sock)
        assert status == 200


@pytest.mark.parametrize(
    "with_key, length, status, code",
    [(False, 5000, 401, b"missing_api_key"), (True, 2_000_000, 413, b"too_large")],
)
def test_refused_write_does_not_ask_for_a_withheld_body(
    live_server: str, server_api_key: str, with_key: bool, length: int, status: int, code: bytes
) -> None:
    # a client that sent "Expect: 100-continue" waits before sending its body: the 401
    # (no key) or 413 (declared too large) comes at once, without a "100 Continue" that
    # would make it send the body for nothing
    host, port = live_server.removeprefix("http://").split(":")
    key = f"X-API-Key: {server_api_key}\r\n" if with_key else ""
    head = (
        f"POST /v1/users/someone/events HTTP/1.1\r\nHost: {host}\r\n{key}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        got, headers, payload = _read_response(sock)
    assert got == status and code in payload
    assert headers.get("connection") == "close"


def test_added_items_are_recommendable_at_once_and_survive_restart(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    live = make_server()
    new = {"item_id": "new-toy-4", "title": "Toy Story 4", "year": 2019,
           "genres": ["Animation", "Children's", "Comedy"], "text": "Forky."}  # fmt: skip
    with live.client(server_api_key) as c:
        r = c.put("/v1/items", json={"items": [new]})
        assert r.status_code == 200 and r.json()["added"] == 1
        c.post("/v1/users", json={"user_id": "kid", "ratings": [{"item_id": "1", "rating": 5}]})
        recs = c.get("/v1/users/kid/recommendations", params={"candidates": "new-toy-4,2", "k": 2})
        assert "new-toy-4" in [it["item_id"] for it in recs.json()["items"]]
        assert c.get("/v1/items", params={"q": "toy story 4"}).json()["items"] == [
            {"item_id": "new-toy-4", "title": "Toy Story 4 (2019)"}
        ]
        # an existing id is updated (re-encoded), not duplicated
        upd = c.put("/v1/items", json={"items": [new | {"title": "Toy Story Four"}]}).json()
        assert upd["added"] == 0 and upd["updated"] == 1
        assert upd["n_items"] == live.app.state.holder.current.rec.n_items
        # the same update sent again (a retry) changes nothing: it re-encoded the item,
        # dropped every user's cached adaptation and made the other workers reload
        holder = live.app.state.holder
        revision, version = holder.current.revision, holder.store.served_state()[0]
        c.get("/v1/users/kid/recommendations")  # adapted since the update, and cached
        adapted = _metric(live, "metarec_adaptations_total")
        retry = c.put("/v1/items", json={"items": [new | {"title": "Toy Story Four"}]}).json()
        assert (retry["added"], retry["updated"], retry["unchanged"]) == (0, 0, 1)
        assert holder.current.revision == revision
        assert holder.store.served_state()[0] == version
        c.get("/v1/users/kid/recommendations")
        assert _metric(live, "metarec_adaptations_total") == adapted  # still cached
        # a title with its year beside the same year is read once, added or updated:
        # "Matrix Redux (1999) (1999)" was the text, and the title of an updated item
        matrix = {"item_id": "mx", "title": "Matrix Redux (1999)", "year": 1999}
        for _ in ("added", "updated"):
            assert c.put("/v1/items", json={"items": [matrix]}).status_code == 200
            assert c.get("/v1/items/mx").json()["title"] == "Matrix Redux (1999)"
            rec = live.app.state.holder.current.rec
            text = rec.items["text"].iloc[rec.item_index["mx"]]
            assert text.startswith("Matrix Redux (1999).") and "(1999) (1999)" not in text
    live.stop()
    again = make_server()  # same SQLite file
    with again.client(server_api_key) as c:
        assert c.get("/v1/items/new-toy-4").json()["title"] == "Toy Story Four (2019)"
        assert c.get("/ready").status_code == 200
        recs = c.get("/v1/users/kid/recommendations", params={"candidates": "new-toy-4"}).json()
    assert recs["n_events"] == 1 and [it["item_id"] for it in recs["items"]] == ["new-toy-4"]


def test_a_stored_item_no_model_can_take_is_left_out_not_fatal(
    make_server: Callable[..., LiveServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store written before items were checked may hold a text-less item: the
    server starts without it (and says so) instead of refusing every start."""
    from metarec.service.store import FeedbackStore

    url = f"sqlite:///{tmp_path / 'old.db'}"
    FeedbackStore(url).upsert_items(
        [{"item_id": "blank", "title": "   "}, {"item_id": "good", "title": "Good Film"}]
    )
    with caplog.at_level("WARNING", logger="metarec.service"):
        live = make_server(db_url=url)
    assert "stored item 'blank' left out: no text to encode" in caplog.text
    with live.client() as c:
        assert c.get("/v1/items/good").json()["title"] == "Good Film"
        assert c.get("/v1/items/blank").status_code == 404


def test_restart_rebuilds_users_from_the_store(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    live = make_server()
    ratings = [{"item_id": i, "rating": r} for i, r in (("1", 5), ("50", 4), ("288", 1))]
    with live.client(server_api_key) as c:
        c.post("/v1/users", json={"user_id": "back", "features": {"age": 30}, "ratings": ratings})
        before = c.get("/v1/users/back/recommendations").json()
    live.stop()
    with make_server().client(server_api_key) as c:
        after = c.get("/v1/users/back/recommendations").json()
        user = c.get("/v1/users/back").json()
    assert after["items"] == before["items"] and after["n_events"] == 3
    assert user["features"] == {"age": 30}


def test_stored_items_the_model_cannot_take_do_not_stop_it_starting(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Items stored by an earlier run's service that this run cannot take (another
    encoder's width, say): every start crashed on them; now it serves without them."""
    import metarec.service.serving as serving
    from metarec.errors import DataError
    from metarec.service.store import FeedbackStore

    db = f"sqlite:///{tmp_path / 'items.db'}"
    store = FeedbackStore(db)
    store.upsert_items([{"item_id": "stored-1", "title": "A Stored Film"}])
    store.close()

    def cannot_take(*args: object, **kwargs: object) -> None:
        raise DataError("add_items: vectors of shape (1, 64); expected (1, 384)")

    monkeypatch.setattr(serving, "apply_items", cannot_take)
    live = make_server(db_url=db)
    with live.client(server_api_key) as c:
        assert c.get("/ready").status_code == 200
        assert c.get("/v1/items/stored-1").status_code == 404  # left out, loudly (logged)
        assert c.get("/v1/items/1").status_code == 200


def test_items_the_model_refuses_are_not_left_in_the_store(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import metarec.service.serving as serving
    from metarec.errors import DataError
    from metarec.service.store import FeedbackStore

    db = f"sqlite:///{tmp_path / 'refused.db'}"
    live = make_server(db_url=db)
    kept = {"item_id": "kept", "title": "A Kept Film", "text": "first text"}
    real_apply = serving.apply_items
    with live.client(server_api_key) as c:
        assert c.put("/v1/items", json={"items": [kept]}).status_code == 200
        store = FeedbackStore(db)
        try:
            stored_at = store.added_items(with_times=True)[0]["updated_at"]
        finally:
            store.close()

        calls = []

        def refuses_part_way(rec: Any, frame: Any, vectors: Any) -> tuple[int, int]:
            # the update is taken in memory, then the new item refused: the served model
            # must not keep the half (it did until the next restart); the re-read after
            # it applies the stored items as usual
            calls.append(len(frame))
            if len(calls) > 1:
                return real_apply(rec, frame, vectors)
            real_apply(rec, frame.iloc[:1], vectors[:1])
            raise DataError("add_items: vectors of shape (1, 64); expected (1, 384)")

        monkeypatch.setattr(serving, "apply_items", refuses_part_way)
        changed = {**kept, "text": "second text"}
        new = {"item_id": "new", "title": "A New Film"}
        assert c.put("/v1/items", json={"items": [changed, new]}).status_code == 422
        assert calls == [2, 1]  # refused, then the stored item applied to the fresh model
        assert c.get("/v1/items/kept").json()["text"] == "A Kept Film. first text"
        assert c.get("/v1/items/new").status_code == 404
    store = FeedbackStore(db)
    try:
        assert store.added_items(with_times=True) == [
            {"item_id": "kept", "title": "A Kept Film", "text": "first text",
             "genres": None, "year": None, "updated_at": stored_at}
        ]  # fmt: skip
    finally:
        store.close()


def test_reload_swaps_the_model(
    make_server: Callable[..., LiveServer], server_api_key: str, service_run: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-run"
    rec = Recommender.load(service_run)
    extra = pd.DataFrame({"item_id": ["only-in-other"], "title": ["Other Film"], "year": [2020]})
    rec.add_items(extra)
    rec.save(other)
    live = make_server()
    with live.client(server_api_key) as c:
        c.post("/v1/users", json={"user_id": "r", "ratings": [{"item_id": "1", "rating": 5}]})
        old = c.get("/v1/users/r/recommendations").json()["model"]
        assert c.get("/v1/items/only-in-other").status_code == 404
        swapped = c.post("/v1/admin/reload", json={"run": str(other)})
        assert swapped.status_code == 200
        assert set(swapped.json()) == {"model", "n_items"}
        assert swapped.json()["model"].startswith("other-run@")
        assert swapped.json()["n_items"] == rec.n_items
        new = c.get("/v1/users/r/recommendations").json()
        assert c.get("/v1/items/only-in-other").status_code == 200
        assert c.post("/v1/admin/reload").json()["model"] == new["model"]  # re-read the same run
    assert old.startswith("ml100k-small@") and new["model"].startswith("other-run@")
    assert new["n_events"] == 1


def test_a_reload_to_a_run_that_cannot_take_the_added_items_is_refused(
    make_server: Callable[..., LiveServer], server_api_key: str, service_run: Path, tmp_path: Path
) -> None:
    """A run whose encoder cannot encode here was served without every item added through
    the API (the start-up fallback), and published so to every process: 200, and the
    items gone. A reload keeps the model that has them."""
    other = tmp_path / "other-encoder"
    shutil.copytree(service_run, other)
    meta = json.loads((other / "recommender.json").read_text())
    meta["encoder"] = {**meta["encoder"], "type": "nope"}
    (other / "recommender.json").write_text(json.dumps(meta))
    live = make_server()
    with live.client(server_api_key) as c:
        item = {"item_id": "fresh", "title": "Night Train", "year": 2001}
        assert c.put("/v1/items", json={"items": [item]}).status_code == 200
        before = c.get("/ready").json()["model"]
        r = c.post("/v1/admin/reload", json={"run": str(other)})
        assert r.status_code == 422, r.text
        message = r.json()["error"]["message"]
        assert "cannot take the 1 items added through the API" in message, message
        assert f"still serving {before}" in message
        assert c.get("/v1/items/fresh").status_code == 200
        assert c.get("/ready").json()["model"] == before


def test_a_year_0_is_refused_as_the_data_layer_reads_it(
    live_server: str, server_api_key: str
) -> None:
    # taken, and encoded as "Zero Year (0)."; every start then warned that 0 is no year
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        item = {"item_id": "y0", "title": "Zero Year", "year": 0}
        r = c.put("/v1/items", json={"items": [item]})
        assert r.status_code == 422, r.text
        assert c.get("/v1/items/y0").status_code == 404


def test_a_reload_follows_a_link_moved_to_another_run(
    make_server: Callable[..., LiveServer], server_api_key: str, service_run: Path, tmp_path: Path
) -> None:
    """`ln -sfn NEW_RUN current; kill -HUP`: the served path is read again, so the link
    is followed to where it points now (it was resolved once, at the first load)."""
    other = tmp_path / "retrained-run"
    shutil.copytree(service_run, other)
    current = tmp_path / "current"
    current.symlink_to(service_run)
    live = make_server(run=current)
    with live.client(server_api_key) as c:
        assert c.get("/ready").json()["model"].startswith("ml100k-small@")
        current.unlink()
        current.symlink_to(other)
        assert c.post("/v1/admin/reload").json()["model"].startswith("retrained-run@")


def test_requests_keep_working_while_the_model_is_swapped(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    live = make_server()
    with live.client(server_api_key) as c:
        c.post("/v1/users", json={"user_id": "busy", "ratings": [{"item_id": "1", "rating": 5}]})
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with live.client(server_api_key) as c:
            while not stop.is_set():
                statuses.append(c.get("/v1/users/busy/recommendations").status_code)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    with live.client(server_api_key) as c:
        generations = [c.post("/v1/admin/reload") for _ in range(3)]
    stop.set()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in generations)
    assert statuses and set(statuses) == {200}
    assert live.app.state.holder.current.generation == 4


def test_ready_is_503_when_the_database_is_unreachable(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    from sqlalchemy import create_engine

    live = make_server()
    store = live.app.state.store
    with live.client() as c:
        assert c.get("/ready").status_code == 200
        good, store.engine = store.engine, create_engine(f"sqlite:///{tmp_path}/no/such/dir.db")
        try:
            r = c.get("/ready")
        finally:
            store.engine = good
    assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"


def test_a_reload_to_a_symlink_loop_is_422(
    make_server: Callable[..., LiveServer], server_api_key: str, tmp_path: Path
) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    live = make_server(runs_dir=tmp_path)
    with live.client(server_api_key) as c:
        r = c.post("/v1/admin/reload", json={"run": str(tmp_path / "a")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_run", r.text
        assert "symbolic link loop" in r.json()["error"]["message"]  # a 500 before
        assert c.get("/ready").status_code == 200  # the served model stays


def test_a_reload_loads_regular_run_folders_under_the_runs_dir_alone(
    make_server: Callable[..., LiveServer], server_api_key: str, service_run: Path, tmp_path: Path
) -> None:
    """Any path was taken: a client with the write key probed the file system
    (/proc/self/cwd named the working directory), read other files' values through a
    run linking to them, and hung worker threads on a FIFO."""
    runs = tmp_path / "runs"
    runs.mkdir()
    fifo_run = runs / "fifo"
    shutil.copytree(service_run, fifo_run)
    (fifo_run / "items.json").unlink()
    os.mkfifo(fifo_run / "items.json")
    secret = tmp_path / "secret.json"
    secret.write_text('{"format_version": "hunter2"}')
    leaky = runs / "leaky"
    shutil.copytree(service_run, leaky)
    (leaky / "recommender.json").unlink()
    (leaky / "recommender.json").symlink_to(secret)
    good = runs / "good"
    shutil.copytree(service_run, good)
    live = make_server(runs_dir=runs)
    with live.client(server_api_key) as c:
        for outside in ("/proc/self/cwd", str(tmp_path), str(runs / ".." / "secret.json")):
            r = c.post("/v1/admin/reload", json={"run": outside})
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "run_outside_runs_dir"
            assert str(Path.cwd()) not in r.text or str(Path.cwd()) in outside
        r = c.post("/v1/admin/reload", json={"run": str(leaky)})
        assert r.status_code == 422, r.text
        assert "recommender.json links out of the run folder" in r.text, r.text
        assert "hunter2" not in r.text
        # a link made outside the folder, into it: recorded as given, a reload without a
        # path followed it once it was moved elsewhere
        elsewhere = tmp_path / "l"
        elsewhere.symlink_to(good)
        r = c.post("/v1/admin/reload", json={"run": str(elsewhere)})
        assert r.status_code == 403 and str(runs) not in r.text, r.text  # the root unsaid
        # a link inside the folder is the operator's: followed wherever it leads
        (runs / "current").symlink_to(good)
        assert c.post("/v1/admin/reload", json={"run": str(runs / "current")}).status_code == 200
        assert c.post("/v1/admin/reload").status_code == 200  # the recorded path, again
        assert c.post("/v1/admin/reload", json={"run": str(runs)}).status_code == 403
        r = c.post("/v1/admin/reload", json={"run": str(fifo_run)})  # hung for good
        assert r.status_code == 422 and "items.json is not a regular file" in r.text, r.text
        assert c.post("/v1/admin/reload", json={"run": str(good)}).status_code == 200
        # the run being served may be read again wherever it is
        assert c.post("/v1/admin/reload", json={"run": str(good)}).status_code == 200
    # by default the folder holding the served run: a retrained run written beside it
    beside = make_server(run=good, db_url=f"sqlite:///{tmp_path / 'b.db'}", runs_dir=None)
    with beside.client(server_api_key) as c:
        assert c.post("/v1/admin/reload", json={"run": str(runs / "good")}).status_code == 200
        assert c.post("/v1/admin/reload", json={"run": str(service_run)}).status_code == 403


def test_a_store_locked_by_another_process_is_503_then_the_retry_lands(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sqlite3

    from metarec.service import store

    monkeypatch.setattr(store, "SQLITE_BUSY_TIMEOUT_S", 0.2)  # 30 s in service
    live = make_server(db_url=f"sqlite:///{tmp_path / 'locked.db'}")
    event = {"event_id": "e-locked", "item_id": "1", "type": "click"}
    with live.client(server_api_key) as c:
        assert c.post("/v1/users", json={"user_id": "lk"}).status_code == 201
        other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a second writer: another service, a shell
        try:
            r = c.post("/v1/users/lk/events", json=event)
        finally:
            other.execute("ROLLBACK")
            other.close()
        # was a 500 internal_error: nothing was stored, so the client may retry
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_busy", r.text
        assert r.headers["retry-after"] == "1"
        again = c.post("/v1/users/lk/events", json=event)
        assert again.status_code == 200 and again.json() == {"accepted": 1, "duplicates": 0}


def test_cors_origin_is_configurable(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(cors_origins=("https://app.example",))
    with live.client() as c:
        pre = c.options(
            "/v1/users",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "x-api-key,content-type"},
        )  # fmt: skip
        other = c.get("/health", headers={"Origin": "https://evil.example"})
        erase = c.options(
            "/v1/users/u1",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE",
                     "Access-Control-Request-Headers": "x-api-key"},
        )  # fmt: skip
    assert pre.status_code == 200 and erase.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
    # a refused preflight in the service's error shape (Starlette's was plain text)
    with live.client() as c:
        for origin, method, needle in [
            ("https://evil.example", "POST", "Disallowed CORS origin"),
            ("https://app.example", "PATCH", "Disallowed CORS method"),
        ]:
            r = c.options(
                "/v1/users", headers={"Origin": origin, "Access-Control-Request-Method": method}
            )
            assert r.status_code == 400 and r.headers["content-type"] == "application/json"
            assert r.json()["error"]["code"] == "cors_refused"
            assert needle in r.json()["error"]["message"] and origin in r.json()["error"]["message"]


def test_a_preflight_without_cors_is_refused_as_one(live_server: str) -> None:
    # it was 405 method_not_allowed ("OPTIONS is not a method ... takes"): the server
    # had no CORS layer at all without --cors
    with httpx.Client(base_url=live_server) as c:
        r = c.options(
            "/v1/users",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        plain = c.get("/health", headers={"Origin": "http://evil.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "cors_refused"
    assert "--cors ORIGIN" in r.json()["error"]["message"]
    assert "access-control-allow-origin" not in r.headers
    assert plain.status_code == 200 and not any(h.startswith("access-") for h in plain.headers)


def test_head_answers_as_get_without_a_body(live_server: str, server_api_key: str) -> None:
    # uptime checks and load balancers probe with HEAD; it was 405 on every route
    with httpx.Client(base_url=live_server) as c:
        for path in ("/health", "/ready", "/v1/items?limit=2"):
            got, head = c.get(path), c.head(path)
            assert head.status_code == got.status_code == 200, path
            assert (
                head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
            )
        assert c.head("/v1/users/nobody", headers={"X-API-Key": server_api_key}).status_code == 404
        assert c.head("/v1/users/nobody").status_code == 401  # a user's data: with the key


def test_a_request_target_the_routes_would_misread_is_refused(
    live_server: str, server_api_key: str
) -> None:
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        # %ff decoded with replacement named the user "\ufffd"
        r = c.get("/v1/users/%ff")
        assert r.status_code == 400 and "not UTF-8" in r.json()["error"]["message"], r.text
        # and in the query: searched for, or named as an unknown candidate, as "\ufffd"
        for target in ("/v1/items?q=%ff", "/v1/users/nobody/recommendations?candidates=%ff"):
            r = c.get(target)
            assert r.status_code == 400, (target, r.text)
            assert "query string is not UTF-8" in r.json()["error"]["message"]
        assert c.get("/v1/items?q=%C3%A9").status_code == 200  # é, well formed
        # the last of two values won without a word
        r = c.get("/v1/items?limit=2&limit=3")
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
        assert "limit: given 2 times" in r.json()["error"]["message"]
        assert c.get("/v1/items?limit=2").status_code == 200


def test_a_body_that_is_not_plain_json_is_415(live_server: str, server_api_key: str) -> None:
    import gzip

    raw = b'{"user_id": "ct"}'
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        for headers, content, needle in [
            ({}, raw, "no Content-Type"),  # was a 422 quoting the raw bytes
            ({"Content-Type": "application/json", "Content-Encoding": "gzip"},
             gzip.compress(raw), "Content-Encoding 'gzip'"),
            # read as UTF-8 whatever it said: a latin-1 'é' was misread or refused as bytes
            ({"Content-Type": "application/json; charset=ISO-8859-1"},
             '{"user_id": "caf\u00e9"}'.encode("latin-1"), "charset 'iso-8859-1'"),
            ({"Content-Type": "application/json; charset=utf-16"},
             raw.decode().encode("utf-16"), "charset 'utf-16'"),
        ]:  # fmt: skip
            r = c.post("/v1/users", content=content, headers=headers)
            assert r.status_code == 415, r.text
            assert r.json()["error"]["code"] == "unsupported_media_type"
            assert needle in r.json()["error"]["message"]
        # JSON's decoder never saw these: FastAPI said only "error parsing the body"
        js = {"Content-Type": "application/json"}
        for content, needle in [
            (b'{"user_id": "\xff\xfe"}', "not UTF-8 text (byte 0xff at position 13)"),
            (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
            (b'{"user_id": "d", "features": {"a": 1' + b"0" * 5000 + b"}}", "number too long"),
        ]:
            r = c.post("/v1/users", content=content, headers=js)
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_json", r.text
            assert needle in r.json()["error"]["message"], r.text
        for charset in ("utf-8", "UTF-8", '"utf8"', "us-ascii"):  # UTF-8, or its first 128
            r = c.post(
                "/v1/users",
                content=b'{"user_id": "%s"}' % charset.encode().strip(b'"'),
                headers={"Content-Type": f"application/json; charset={charset}"},
            )
            assert r.status_code == 201, r.text


def test_without_a_key_only_loopback_may_write(make_server: Callable[..., LiveServer]) -> None:
    from metarec.service.access import ApiKeyGuard

    live = make_server(api_key=None)
    with live.client() as c:  # we are on 127.0.0.1
        assert c.post("/v1/users", json={"user_id": "local"}).status_code == 201
    guard = ApiKeyGuard(live.app, None, live.settings.max_body_bytes)
    remote = {"type": "http", "method": "POST", "path": "/v1/users", "client": ("10.1.2.3", 5000)}
    denied = guard._check(remote)
    assert denied is not None and denied[0] == 403 and "loopback" in denied[2]
    assert guard._check(remote | {"client": ("::1", 5000)}) is None
    # users' data is read under the same rule (features and histories were open to any
    # client that reached the port); the catalogue and the probes are not
    from metarec.service.access import guarded

    for method, path, needs in [
        ("GET", "/v1/users/u1", True), ("GET", "/v1/users/u1/recommendations", True),
        ("HEAD", "/v1/users/u1", True), ("GET", "/v1/users", True),
        ("GET", "/v1/usersx", False), ("GET", "/v1/items", False), ("GET", "/ready", False),
        ("PUT", "/v1/items", True), ("POST", "/v1/admin/reload", True), ("POST", "/x", False),
    ]:  # fmt: skip
        assert guarded(method, path) is needs, (method, path)
    with live.client() as c:  # loopback: its own users' data, as its writes
        assert c.get("/v1/users/local").status_code == 200
        # but not for a page of another site open in this host's browser
        r = c.get("/v1/users/local", headers={"Origin": "http://localhost:18742"})
        assert r.status_code == 403, r.text
        assert (
            "a read of a user's data from a page of another origin" in r.json()["error"]["message"]
        )
    # a page of another site, open in this host's browser, posted to it as loopback:
    # any site could reload the model or fold feedback in
    with live.client() as c:
        for origin, status in [
            ("http://localhost:18742", 403), ("null", 403), (live.url, 200)
        ]:  # fmt: skip
            r = c.post("/v1/admin/fold-in", headers={"Origin": origin})
            assert r.status_code == status, (origin, r.text)
        assert (
            "a write from a page of another origin"
            in c.post("/v1/admin/fold-in", headers={"Origin": "http://localhost:18742"}).json()[
                "error"
            ]["message"]
        )
    listed = ApiKeyGuard(live.app, None, 1000, allowed_origins=("https://app.example",))
    plain = ApiKeyGuard(live.app, None, 1000)
    anyone = ApiKeyGuard(live.app, None, 1000, allowed_origins=("*",))

    def sent(host: bytes, origin: bytes) -> dict[str, Any]:
        return remote | {
            "client": ("127.0.0.1", 1),
            "headers": [(b"host", host), (b"origin", origin)],
        }

    # a rebound DNS name: its page sets Origin and Host alike, and is no loopback host
    assert plain._check(sent(b"evil.example:8000", b"http://evil.example:8000")) is not None
    assert plain._check(sent(b"localhost:80", b"http://localhost")) is None  # default port
    assert plain._check(sent(b"[::1]:8000", b"http://[::1]:8000")) is None
    # any name the keyless server answers to is its own origin: a page opened under one
    # could search but not rate ("a write from a page of another origin")
    named = ApiKeyGuard(live.app, None, 1000, allowed_hosts=("mybox",))
    for host in (b"demo.localhost:8000", b"localhost.:8000", b"mybox:8000", b"10.0.0.7:8000"):
        origin = b"http://" + host
        assert named._check(sent(host, origin)) is None, host
        assert named._check(sent(host, b"http://other.localhost:8000")) is not None, host
    assert plain._check(sent(b"mybox:8000", b"http://mybox:8000")) is not None  # not given
    assert anyone._check(sent(b"127.0.0.1:8000", b"https://elsewhere.example")) is None
    local = remote | {"client": ("127.0.0.1", 5000), "headers": [(b"host", b"127.0.0.1:8000")]}
    assert (
        listed._check(local | {"headers": [*local["headers"], (b"origin", b"https://app.example")]})
        is None
    )


def test_a_keyless_server_answers_loopback_only_under_a_name_it_was_given(
    make_server: Callable[..., LiveServer],
) -> None:
    """DNS rebinding: a site's page points its own name at 127.0.0.1 and reads the API
    as its own origin, with Host naming the site; an IP address cannot be rebound."""
    live = make_server(api_key=None, allowed_hosts=("metarec.internal",))
    port = live.url.rsplit(":", 1)[1]
    with live.client() as c:
        assert c.post("/v1/users", json={"user_id": "kept"}).status_code == 201
        for host, status in [
            (f"evil.example:{port}", 403),
            ("evil.example", 403),
            (f"127.0.0.1.evil.example:{port}", 403),
            (f"localhost.evil.example:{port}", 403),
            (f"bad host:{port}", 403),  # unreadable as a host: never a name of this server
            (f"127.0.0.1:{port}", 200),
            (f"[::1]:{port}", 200),
            (f"localhost:{port}", 200),
            (f"LocalHost.:{port}", 200),
            (f"app.localhost:{port}", 200),  # browsers keep *.localhost on loopback
            (f"Metarec.Internal:{port}", 200),  # listed with --allowed-host
        ]:
            r = c.get("/v1/users/kept", headers={"Host": host})
            assert r.status_code == status, (host, r.text)
            if status == 403:
                assert r.json()["error"]["code"] == "forbidden"
                assert "--allowed-host" in r.json()["error"]["message"], r.text
        # uvicorn takes a loopback client's X-Forwarded-For as its address, which a
        # rebound page can set: judged as a remote client, it read every history
        spoofed = {"Host": f"evil.example:{port}", "X-Forwarded-For": "203.0.113.9"}
        assert c.get("/v1/users/kept", headers=spoofed).status_code == 403
        assert "Host 'evil.example:" in c.get("/health", headers=spoofed).json()["error"]["message"]
        # writes too, before the key rule's Origin check could be fooled by a page
        # whose Origin and Host name the same rebound site
        r = c.post(
            "/v1/users",
            json={"user_id": "planted"},
            headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
        )
        assert r.status_code == 403, r.text
        assert c.get("/v1/users/planted").status_code == 404
    # two Host headers: the guard read the first, the cross-origin check the last
    host, _ = live.url.removeprefix("http://").split(":")
    for first, second in [("localhost", "evil.example"), ("evil.example", "localhost")]:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                f"GET /health HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\n\r\n".encode()
            )
            status, _, payload = _read_response(sock)
        assert status == 400 and b"the Host header is given 2 times" in payload, payload
    keyed = make_server()  # a key: meant to be reached, under whatever name
    with keyed.client() as c:
        assert c.get("/health", headers={"Host": "metarec.example.com"}).status_code == 200


def test_a_forwarded_for_header_never_names_the_client(
    make_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn read the client's address from X-Forwarded-For where $FORWARDED_ALLOW_IPS
    # trusted its sender ("*" in many container images): a remote client that wrote
    # "X-Forwarded-For: 127.0.0.1" was taken for loopback by a keyless server
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    live = make_server(api_key=None)
    with live.client() as c:
        r = c.post("/v1/users", json={"user_id": "x"}, headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 201, r.text  # the connection's peer, loopback, decides


def test_page_can_be_handed_the_key(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(page_api_key=True, cors_origins=("*",))
    with live.client() as c:
        response = c.get("/", headers={"Origin": "https://evil.example"})
        api = c.get("/health")
    page = response.text
    if 'name="metarec-api-key"' in page:
        assert f'name="metarec-api-key" content="{live.settings.api_key}"' in page
    # never shared with another origin: under --cors '*' any site read the key from it
    assert "access-control-allow-origin" not in response.headers
    # nor framed, sniffed or cached; the page's script may reach its own origin only
    for r in (response, api):
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "connect-src 'self'" in response.headers["content-security-policy"]


def test_a_page_that_carries_the_key_is_not_handed_to_a_rebound_name(
    make_server: Callable[..., LiveServer],
) -> None:
    # a site pointing its own name at the server read the key off "/" and then wrote
    # with it: a server with --page-api-key checks Host as a keyless one does
    live = make_server(page_api_key=True, allowed_hosts=("demo.lan",))
    port = live.url.rsplit(":", 1)[1]
    key = live.settings.api_key
    assert key is not None
    with live.client() as c:
        for host, status in [
            (f"evil.example:{port}", 403),
            (f"127.0.0.1:{port}", 200),
            (f"demo.lan:{port}", 200),
        ]:
            r = c.get("/", headers={"Host": host})
            assert r.status_code == status, (host, r.text)
            assert (key in r.text) == (status == 200)
        r = c.post(
            "/v1/users",
            json={"user_id": "planted"},
            headers={"Host": f"evil.example:{port}", "X-API-Key": key},
        )
        assert r.status_code == 403 and "--page-api-key" in r.json()["error"]["message"]
    keyed = make_server()  # a key kept off the page: reached under any name, as before
    with keyed.client() as c:
        assert c.get("/", headers={"Host": "metarec.example.com"}).status_code == 200


def test_copying_a_run_keeps_its_name_by_content(service_run: Path, tmp_path: Path) -> None:
    from metarec.service.serving import run_name

    copy = tmp_path / "ml100k-small"
    shutil.copytree(service_run, copy)
    assert run_name(copy) == run_name(service_run)
    # a folder named to forge a log line: its newline and ANSI escape shown as escapes
    forged = tmp_path / "run\n2026-12-07 CRITICAL forged \x1b[31m"
    shutil.copytree(service_run, forged)
    name = run_name(forged)
    assert name.startswith("run\\n2026-12-07 CRITICAL forged \\x1b[31m@"), name
    assert name.isprintable()
    from metarec.service.serving import printable  # the other log lines that name folders

    assert printable(forged) == str(forged).replace("\n", "\\n").replace("\x1b", "\\x1b")


def test_a_runs_folder_others_may_write_to_is_warned_of(
    make_server: Callable[..., LiveServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # as /tmp is, where a run in /tmp is served from
    with caplog.at_level(logging.WARNING, logger="metarec.service"):
        make_server(runs_dir=shared)
    assert f"reloads load runs from {shared}, which every account" in caplog.text
    caplog.clear()
    own = tmp_path / "own"
    own.mkdir(mode=0o755)
    with caplog.at_level(logging.WARNING, logger="metarec.service"):
        make_server(runs_dir=own, db_url=f"sqlite:///{tmp_path / 'own.db'}")
    assert "every account" not in caplog.text


def test_fold_in_learns_new_items_from_feedback_and_survives_restart(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    live = make_server()
    # the same text twice: only how people rated them can tell the two apart
    twins = [{"item_id": i, "title": "Night Train", "year": 2001} for i in ("loved", "hated")]
    pick = {"candidates": "loved,hated", "k": 2}
    with live.client(server_api_key) as c:
        assert c.put("/v1/items", json={"items": twins}).json()["added"] == 2
        for u in range(25):
            ratings = [
                {"item_id": str(1 + (u + j) % 50), "rating": 3 + (u + j) % 3} for j in range(3)
            ]
            ratings += [{"item_id": "loved", "rating": 5}, {"item_id": "hated", "rating": 1}]
            assert (
                c.post("/v1/users", json={"user_id": f"fan{u}", "ratings": ratings}).status_code
                == 201
            )
        c.post(
            "/v1/users", json={"user_id": "newcomer", "ratings": [{"item_id": "1", "rating": 4}]}
        )
        before = c.get("/v1/users/newcomer/recommendations", params=pick).json()["items"]
        assert abs(before[0]["score"] - before[1]["score"]) < 1e-4
        with live.client() as anonymous:  # an admin call needs the key
            assert anonymous.post("/v1/admin/fold-in").status_code == 401
        done = c.post("/v1/admin/fold-in")
        assert done.status_code == 200, done.text
        assert done.json()["items_updated"] == 2 and done.json()["ratings_used"] == 50
        after = c.get("/v1/users/newcomer/recommendations", params=pick).json()["items"]
    assert [it["item_id"] for it in after] == ["loved", "hated"]
    assert after[0]["score"] - after[1]["score"] > 1.0
    live.stop()
    with make_server().client(server_api_key) as c:  # same SQLite file: folds the feedback in again
        again = c.get("/v1/users/newcomer/recommendations", params=pick).json()["items"]
    assert [(it["item_id"], round(it["score"], 4)) for it in again] == [
        (it["item_id"], round(it["score"], 4)) for it in after
    ]


def test_a_damaged_store_row_is_a_500_that_names_it(
    make_server: Callable[..., LiveServer], server_api_key: str, tmp_path: Path
) -> None:
    # a bare 500 internal_error, where the fault (a row the service never wrote) can
    # be named; a 4xx would blame the client
    import sqlite3

    live = make_server()
    with live.client(server_api_key) as c:
        c.post("/v1/users", json={"user_id": "d", "ratings": [{"item_id": "1", "rating": 4}]})
        with sqlite3.connect(tmp_path / "feedback.db") as conn:
            conn.execute("UPDATE users SET features = '{x' WHERE user_id = 'd'")
        conn.close()
        got = c.get("/v1/users/d")
    assert got.status_code == 500
    assert got.json()["error"]["code"] == "store_damaged"
    assert "user 'd': features are not JSON" in got.json()["error"]["message"]
    # a reload folds in from the store: its damage was "422 invalid_run", the run blamed
    with sqlite3.connect(tmp_path / "feedback.db") as conn:
        conn.execute("UPDATE events SET type = 'bogus'")
    conn.close()
    with live.client(server_api_key) as c:
        got = c.post("/v1/admin/reload", json={})
    assert (got.status_code, got.json()["error"]["code"]) == (500, "store_damaged")
    assert "type 'bogus' is not one of" in got.json()["error"]["message"]


def test_a_stored_rating_off_the_runs_scale_is_shown_as_adaptation_reads_it(
    make_server: Callable[..., LiveServer], server_api_key: str, tmp_path: Path
) -> None:
    # a store written for a 1-10 run, served by a 1-5 one: adaptation clips the 9 to 5,
    # and the user's page said "rating": 9.0, the field that says what adaptation used
    import sqlite3

    live = make_server()
    with live.client(server_api_key) as c:
        c.post("/v1/users", json={"user_id": "o", "ratings": [{"item_id": "1", "rating": 4}]})
        with sqlite3.connect(tmp_path / "feedback.db") as conn:
            conn.execute("UPDATE events SET value = 9.0 WHERE user_id = 'o'")
        conn.close()
        got = c.get("/v1/users/o").json()["history"][0]
    assert (got["value"], got["rating"]) == (9.0, 5.0)


def test_a_runs_own_fold_in_offsets_are_served(
    make_server: Callable[..., LiveServer], service_run: Path, tmp_path: Path,
    server_api_key: str,
) -> None:  # fmt: skip
    # folded in in Python and saved with the run, they were set to 0 by the fold-in
    # every load does from the (here empty) store: Python and the service disagreed
    from metarec import Recommender

    rec = Recommender.load(service_run)
    rec.add_items(pd.DataFrame({"item_id": ["loved"], "title": ["Night Train"], "year": [2001]}))
    rows = [(f"u{u}", str(1 + u % 50), 3) for u in range(20)]
    rows += [(f"u{u}", "loved", 5) for u in range(20)]
    rec.fold_in_items(pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]))
    run = rec.save(tmp_path / "folded")
    expected = Recommender.load(run).score(rec.adapt([("1", 4)]), ["loved"])[0]
    live = make_server(run=run)
    with live.client(server_api_key) as c:
        c.post("/v1/users", json={"user_id": "p", "ratings": [{"item_id": "1", "rating": 4}]})
        got = c.get("/v1/users/p/recommendations", params={"candidates": "loved", "k": 1})
    assert got.json()["items"][0]["score"] == pytest.approx(float(expected), abs=1e-4)


def test_a_request_makes_one_trip_to_the_thread_pool(
    make_server: Callable[..., LiveServer], server_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FastAPI sends a plain-def dependency, and a plain-def endpoint's response
    # validation, to the pool: each a queue wait and a thread switch under load (the
    # query guard and the validation were two of three on every request)
    import fastapi.routing
    import starlette.concurrency

    import metarec.service.app

    trips: list[str] = []
    real = starlette.concurrency.run_in_threadpool

    async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    for module in (fastapi.routing, metarec.service.app):
        monkeypatch.setattr(module, "run_in_threadpool", counted)
    live = make_server()
    with live.client(server_api_key) as c:
        user = {"user_id": "trips", "ratings": [{"item_id": "1", "rating": 5}]}
        for method, path, kw in [
            ("POST", "/v1/users", {"json": user}),
            ("GET", "/v1/users/trips/recommendations", {"params": {"k": 3}}),
            ("POST", "/v1/users/trips/events",
             {"json": {"event_id": "t1", "item_id": "2", "type": "click"}}),
            ("GET", "/v1/users/trips", {}),
            ("GET", "/v1/items", {"params": {"q": "star"}}),
        ]:  # fmt: skip
            trips.clear()
            r = c.request(method, path, **kw)
            assert r.status_code in (200, 201), r.text
            assert len(trips) == 1, (path, trips)


def test_a_stored_profile_the_model_cannot_read_still_gets_recommendations(
    make_server: Callable[..., LiveServer], server_api_key: str, tmp_path: Path
) -> None:
    """A profile stored under a model that did not bin age (checked against it then), read
    by one that does: every request of the user failed with a DataError naming a Python
    argument; the value counts as unknown instead, as an unseen category does."""
    from metarec.service.store import FeedbackStore

    db = f"sqlite:///{tmp_path / 'profiles.db'}"
    store = FeedbackStore(db)
    store.create_user("old-profile", {"age": "twenty-something", "gender": "F"})
    store.close()
    live = make_server(db_url=db)
    with live.client(server_api_key) as c:
        got = c.get("/v1/users/old-profile/recommendations", params={"k": 3})
        assert got.status_code == 200, got.text
        assert len(got.json()["items"]) == 3


def test_catalogue_ids_with_a_slash_can_be_looked_up(
    shared_data: Path, tmp_path: Path, make_server: Callable[..., LiveServer]
) -> None:
    """A catalogue's own ids may hold "/" (news/2026/17): they were recommended, but
    GET /v1/items/{id} answered "no endpoint" for them, sent plain or as %2F."""
    from metarec import load_dataset
    from metarec.config import TrainConfig
    from metarec.pipeline import encode_catalogue, fit_recommender

    ds = load_dataset("ml-100k", root=shared_data)
    items = ds.items.assign(item_id="film/" + ds.items["item_id"].astype(str))
    ratings = ds.interactions.assign(item_id="film/" + ds.interactions["item_id"].astype(str))
    catalogue = encode_catalogue(items, "tfidf", cache_dir=tmp_path / "emb", progress=False)
    cfg = TrainConfig(epochs=1, max_train_users=40, inner_steps=1, seed=0, device="cpu")
    rec, _ = fit_recommender(catalogue, ratings, cfg, progress=False)
    rec.save(tmp_path / "run")
    live = make_server(run=tmp_path / "run")
    with live.client() as c:
        for path in ("/v1/items/film/1", "/v1/items/film%2F1"):
            got = c.get(path)
            assert got.status_code == 200, (path, got.text)
            assert got.json()["item_id"] == "film/1" and got.json()["title"].startswith("Toy Story")
        assert c.get("/v1/items/film/").json()["error"]["code"] == "unknown_item"


def _metric(live: LiveServer, prefix: str) -> float:
    with live.client() as c:
        lines = c.get("/metrics").text.splitlines()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix))


def test_metrics_count_what_happened(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    """A client that left mid-body was a server 500 (false alerts) or a 400, a HEAD
    probe an "unmatched" route, out of its route's counts, as was a request refused
    before routing (a 415, a query parameter given twice)."""
    live = make_server()
    host, port = live.url.removeprefix("http://").split(":")
    head = b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for cut_short in (
        *[head + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"use\r\n'] * 3,
        head + b'Content-Length: 100\r\n\r\n{"user',  # was a 400
    ):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(cut_short)
            time.sleep(0.05)
    with live.client() as c:
        for _ in range(2):
            assert c.head("/health").status_code == 200
        plain = {"Content-Type": "text/plain", "X-API-Key": server_api_key}
        assert c.post("/v1/users", content=b"{}", headers=plain).status_code == 415
        assert c.get("/v1/users/u1/recommendations?k=3&k=4", headers=plain).status_code == 422
        assert c.get("/v1/nothing/here").status_code == 404

    def count(route: str, method: str, status: int) -> float:
        labels = f'route="{route}",method="{method}",status="{status}"'
        return _metric(live, "metarec_http_requests_total{" + labels)

    deadline = time.monotonic() + 10  # the server notices the closed sockets
    while count("/v1/users", "POST", 499) < 4:  # left before its body was read
        assert time.monotonic() < deadline, _metric(live, "metarec_http_requests_total")
        time.sleep(0.05)
    for status in (400, 500):
        assert count("unmatched", "POST", status) == count("/v1/users", "POST", status) == 0
    assert count("/health", "HEAD", 200) == 2
    assert count("/v1/users", "POST", 415) == 1
    assert count("/v1/users/{user_id}/recommendations", "GET", 422) == 1
    assert count("unmatched", "GET", 404) == 1  # paths no route has: one label for all


def test_a_deleted_database_file_is_not_ready_and_stores_nothing(
    make_server: Callable[..., LiveServer], server_api_key: str, tmp_path: Path
) -> None:
    # a pooled connection held the deleted file open: "ready", and writes acknowledged
    # into a file no later start would read
    db = tmp_path / "gone.db"
    live = make_server(db_url=f"sqlite:///{db}")
    with live.client(server_api_key) as c:
        assert c.get("/ready").status_code == 200
        for f in tmp_path.glob("gone.db*"):
            f.unlink()
        gone = c.get("/ready")
        assert gone.status_code == 503
        # why, as the writes say it, not only "unreachable" (and no path: /ready is open)
        assert gone.json()["error"]["message"] == (
            "database unreachable: the database file is gone (deleted or moved while serving)"
        )
        r = c.post("/v1/users", json={"user_id": "lost"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
        assert "the database file is gone" in r.json()["error"]["message"]


def _read_only(engine: Any) -> None:
    """Every new connection of ``engine`` refuses writes as a read-only SQLite file does
    ("attempt to write a readonly database")."""
    from sqlalchemy import event

    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA query_only = ON"))
    engine.dispose()


def _fail_after_commit(monkeypatch: pytest.MonkeyPatch, engine: Any, error: str) -> None:
    """The next commit of ``engine`` lands, then raises SQLite's ``error``."""
    import sqlite3

    dialect = engine.dialect
    committed = dialect.do_commit

    def failed_after_commit(connection: Any) -> None:
        committed(connection)
        monkeypatch.setattr(dialect, "do_commit", committed)  # once
        raise sqlite3.OperationalError(error)

    monkeypatch.setattr(dialect, "do_commit", failed_after_commit)


def test_a_store_that_cannot_take_writes_answers_503_in_one_log_line(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store made read-only (or full, or failing) while serving: every write was a 500
    internal_error and forty lines of traceback in the log; and a start that had to
    record its run on such a store died with one (exit 1)."""
    from metarec.service.store import FeedbackStore, StoreUnwritableError

    db = tmp_path / "ro.db"
    live = make_server(db_url=f"sqlite:///{db}")
    _read_only(live.app.state.store.engine)
    with live.client(server_api_key) as c, caplog.at_level("ERROR", logger="metarec.service"):
        r = c.post("/v1/users", json={"user_id": "u1"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
        said = r.json()["error"]["message"]
        assert "cannot be written (it is read-only); nothing was stored" in said, said
        assert (
            c.put("/v1/items", json={"items": [{"item_id": "n1", "title": "N"}]}).status_code == 503
        )
    logged = [rec for rec in caplog.records if rec.name == "metarec.service"]
    assert logged and all(rec.exc_info is None for rec in logged)  # a line each, no trace
    # what a start that records its run meets: the error serve and retrain exit 2 with
    store = FeedbackStore(f"sqlite:///{db}")
    _read_only(store.engine)
    with pytest.raises(StoreUnwritableError, match=r"ro\.db\): cannot be written"):
        store.bump_served_state(run="elsewhere")
    store.close()


def test_a_write_that_failed_as_it_committed_may_have_been_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite may keep a write whose COMMIT met an I/O error: "nothing was stored" was
    said of a user that had been created."""
    from metarec.service.store import FeedbackStore, StoreUnwritableError

    store = FeedbackStore(f"sqlite:///{tmp_path / 'io.db'}")
    _fail_after_commit(monkeypatch, store.engine, "disk I/O error")
    with pytest.raises(StoreUnwritableError) as caught:
        store.create_user("u1", {})
    assert "may have been stored" in str(caught.value)
    assert "nothing was stored" not in str(caught.value)
    assert store.user("u1") is not None  # it had landed
    store.close()


def test_a_connection_lost_at_commit_says_the_write_may_have_landed(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the answer said "nothing was stored, retry"; the user had been created, and the
    # retry got 409 user_exists
    live = make_server(db_url=f"sqlite:///{tmp_path / 'f.db'}")
    engine = live.app.state.store.engine
    _fail_after_commit(monkeypatch, engine, "server closed the connection unexpectedly")
    with live.client(server_api_key) as c:
        r = c.post("/v1/users", json={"user_id": "maybe"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
        said = r.json()["error"]["message"]
        assert "may have been stored" in said and "nothing was stored" not in said, said
        assert c.get("/v1/users/maybe").status_code == 200  # it had landed
        assert c.post("/v1/users", json={"user_id": "maybe"}).status_code == 409


def test_the_start_line_writes_an_ipv6_host_as_a_url_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from metarec.service import ServiceSettings
    from metarec.service.server import _announce

    _announce(ServiceSettings(run=tmp_path, api_key="k"), "m@1", "sqlite", "::1", 8000)
    assert "on http://[::1]:8000/" in capsys.readouterr().err
    # a --page-api-key server checks Host as a keyless one does, and says so at start
    page = ServiceSettings(run=tmp_path, api_key="k", page_api_key=True, allowed_hosts=("vm",))
    _announce(page, "m@1", "sqlite", "127.0.0.1", 8000)
    said = capsys.readouterr().err
    assert "must name this server by IP address or localhost or vm" in said
    assert "WARNING: no API key" not in said


def test_an_unexpected_error_is_a_json_500_logged_once_and_the_connection_kept(
    make_server: Callable[..., LiveServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Starlette answered it, then raised it again for uvicorn, which logged a second
    # traceback and closed the connection: the client's next request on it was reset
    live = make_server()

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a fault of the server's")

    monkeypatch.setattr(Served, "search", broken)
    request = b"GET /v1/items?q=x HTTP/1.1\r\nHost: t\r\n\r\n"
    health = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    host, port = live.url.removeprefix("http://").split(":")
    with (
        caplog.at_level(logging.ERROR, "metarec.service"),
        socket.create_connection((host, int(port)), timeout=10) as conn,
    ):
        conn.sendall(request)
        first = conn.recv(65536).decode()
        conn.sendall(health)  # the same connection
        second = conn.recv(65536).decode()
    assert first.startswith("HTTP/1.1 500") and json.loads(first.split("\r\n\r\n", 1)[1]) == {
        "error": {"code": "internal_error", "message": "internal server error; see the server log"}
    }
    assert second.startswith("HTTP/1.1 200"), second
    traced = [r for r in caplog.records if r.exc_info and "a fault" in str(r.exc_info[1])]
    assert len(traced) == 1


def test_one_put_that_updates_and_adds_shows_the_updated_title(
    live_server: str, server_api_key: str
) -> None:
    # the append indexed its rows alone and kept the updated item's old title in the
    # index and the display list: search, lookup and reasons named the old one
    old, new = uid("i"), uid("i")
    with httpx.Client(base_url=live_server, headers={"X-API-Key": server_api_key}) as c:
        first = {"item_id": old, "title": "Quillfeather Original", "year": 2001}
        assert c.put("/v1/items", json={"items": [first]}).json()["added"] == 1
        renamed = {"item_id": old, "title": "Quillfeather Renamed", "year": 2001}
        added = {"item_id": new, "title": "Quillfeather Sequel", "year": 2003}
        both = c.put("/v1/items", json={"items": [renamed, added]}).json()
        assert (both["added"], both["updated"]) == (1, 1)
        assert c.get(f"/v1/items/{old}").json()["title"] == "Quillfeather Renamed (2001)"
        hits = c.get("/v1/items", params={"q": "quillfeather"}).json()["items"]
    assert sorted(h["title"] for h in hits) == [
        "Quillfeather Renamed (2001)", "Quillfeather Sequel (2003)"
    ]  # fmt: skip


def test_the_openapi_limits_are_the_servers_own(make_server: Callable[..., LiveServer]) -> None:
    # the items' limit was stated as the events' (one setting for another)
    live = make_server(max_items_per_request=50, max_events_per_batch=7)
    models = httpx.get(f"{live.url}/openapi.json").json()["components"]["schemas"]
    assert models["ItemsIn"]["properties"]["items"]["maxItems"] == 50
    assert models["EventsIn"]["properties"]["events"]["maxItems"] == 7
    assert models["UserIn"]["properties"]["ratings"]["maxItems"] == 7


def test_an_ensembles_user_features_are_checked_against_every_member() -> None:
    # checked against the primary member alone, an ensemble whose primary reads no
    # features refused age, which its other member reads
    from types import SimpleNamespace

    from metarec.data.features import UserFeatureEncoder
    from metarec.service.app import features_problem

    none = UserFeatureEncoder()
    ages = UserFeatureEncoder.fit(  # many ages: binned, so text is no age
        pd.DataFrame(
            {
                "user_id": list("abcdefghijklmnopqrstuvwxyz"),
                "age": range(20, 46),
                "gender": ["F", "M"] * 13,
            }
        )
    )
    jobs = UserFeatureEncoder.fit(pd.DataFrame({"user_id": ["a"], "job": ["nurse"]}))

    def ensemble(*encoders: UserFeatureEncoder) -> Any:
        members = [SimpleNamespace(features=e) for e in encoders]
        return SimpleNamespace(metarec_members=lambda: members)

    assert features_problem(ensemble(none, ages), {"age": 20}) is None
    assert features_problem(ensemble(ages, jobs), {"job": "nurse", "gender": "F"}) is None
    assert features_problem(ensemble(ages, jobs), {"agee": 20}) == (
        "agee: not a feature of this model (it reads age, gender, job)"
    )
    # a request's key may be 100,000 characters: the answer names its start
    long = features_problem(ensemble(ages, jobs), {"x" * 100_000: 20}) or ""
    assert long.startswith("x" * 59 + "…: not a feature") and len(long) < 200
    long = features_problem(ensemble(none, none), {"y" * 100_000: 20}) or ""
    assert long.startswith("y" * 59 + "…: this model reads no") and len(long) < 200
    alone = ages.problem({"z" * 100_000: 1}, json_types=True) or ""
    assert alone.startswith("z" * 59 + "…: not a feature") and len(alone) < 200
    assert "age: " in (features_problem(ensemble(none, ages), {"age": "old"}) or "")
    assert features_problem(ensemble(none, none), {"age": 20}) == (
        "age: this model reads no user features (it was trained without them); send none"
    )
    assert features_problem(SimpleNamespace(features=ages), {"age": 30}) is None  # one run
    # what a stored profile still says to each member: a key any member reads is kept
    from metarec.data.features import FeatureReaders

    readers = FeatureReaders((none, ages, jobs))
    profile = {"age": 30, "job": "nurse", "hobby": "chess"}
    assert readers.readable(profile) == {"age": 30, "job": "nurse"}
    assert readers.readable({"age": "old", "job": "nurse"}) == {"job": "nurse"}
    assert readers.problem({"hobby": 1}, json_types=False) is None  # Python warns instead
    assert "age: " in (readers.problem({"age": "old"}, json_types=False) or "")


def test_items_are_refused_when_the_runs_encoder_model_changed(
    make_server: Callable[..., LiveServer], server_api_key: str, service_run: Path, tmp_path: Path
) -> None:
    """A model folder retrained in place since the run was saved: new items' vectors came
    from other weights than every other item's, added with a warning alone (HTTP 200)."""
    from metarec.encoders import SentenceEncoder
    from metarec.errors import EncoderUnavailableError
    from metarec.recommender import Recommender

    run = Path(shutil.copytree(service_run, tmp_path / "run"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # never loaded: its files are its identity
    manifest = json.loads((run / "recommender.json").read_text())
    manifest["encoder"] = {"type": "sentence", "model": str(model), "max_seq_length": 128,
                           "id": "sentence:model@000000000000:max128"}  # fmt: skip
    (run / "recommender.json").write_text(json.dumps(manifest))
    new = {"item_id": "n1", "title": "Toy Story 4", "year": 2019}
    rec = Recommender.load(run)
    with pytest.raises(EncoderUnavailableError, match="its model changed since the run was"):
        rec.add_items(pd.DataFrame([new]))
    assert "n1" not in rec.item_index
    # restored (here: the saved id made the folder's own), the loaded run sees it at once
    rec.encoder_config["id"] = SentenceEncoder(str(model)).id
    with pytest.raises(EncoderUnavailableError):  # not judged again at once: costly
        rec.encoder()
    rec._encoder_judged -= 10  # ten seconds on
    assert rec.encoder().id == rec.encoder_config["id"]
    live = make_server(run=run)
    with live.client(server_api_key) as c:
        r = c.put("/v1/items", json={"items": [new]})
        assert r.status_code == 500, r.text  # the operator's to fix, not the client's
        assert r.json()["error"]["code"] == "encoder_unavailable"
        assert "restore the model the run was trained with" in r.json()["error"]["message"]
        assert c.get("/v1/items/n1").status_code == 404


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_a_transaction_postgresql_rolled_back_whole_is_503_to_retry(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    sqlstate: str,
) -> None:
    # a deadlock (two batches inserting the same event ids in opposite orders) was a
    # retry only because PostgreSQL's English message says "blocked by process": in
    # another lc_messages it was a 500
    from sqlalchemy.exc import OperationalError

    class Localised(Exception):
        def __init__(self) -> None:
            super().__init__("interblocage détecté")
            self.sqlstate = sqlstate

    live = make_server()
    store = live.app.state.store

    def rolled_back(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT INTO events", {}, Localised())

    with live.client(server_api_key) as c:
        assert c.post("/v1/users", json={"user_id": "dl"}).status_code == 201
        monkeypatch.setattr(store, "add_events", rolled_back)
        r = c.post("/v1/users/dl/events", json={"event_id": "e", "item_id": "1", "type": "click"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_busy", r.text


def test_a_head_past_the_limit_is_431_and_a_large_one_within_it_is_served(
    live_server: str,
) -> None:
    # every header line a client sent was kept: one endless request grew the server by
    # whatever it sent (no key needed, as this comes before any route)
    from metarec.service.protocol import MAX_HEAD_BYTES

    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    flood = b"GET /health HTTP/1.1\r\nHost: x\r\n" + pad * (MAX_HEAD_BYTES // len(pad) + 50)
    status, headers, body = _raw_reply(live_server, flood + b"\r\n")
    assert status == "HTTP/1.1 431 Request Header Fields Too Large", body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "headers_too_large" and f"{MAX_HEAD_BYTES:,} bytes" in error["message"]
    # 60 KiB of headers beside a URL at its limit is a request like any other
    within = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + pad * 60 + b"\r\n"
    status, _, _ = _raw_reply(live_server, within)
    assert status == "HTTP/1.1 200 OK"


def test_a_head_that_does_not_arrive_in_time_is_408_and_the_connection_closed(
    make_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a connection that sent nothing, or a header line every few seconds, was held for
    # good, and a few hundred of them left no file descriptor for anyone else
    from metarec.service import protocol

    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.5)
    live = make_server()
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    for sent in (b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"):  # silent; a head cut short
        started = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(sent)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408 Request Timeout"), reply
        assert b'"code":"request_timeout"' in reply.replace(b" ", b"")
        assert time.monotonic() - started < 10
    # a client between requests is left to the keep-alive timeout, and one whose head
    # arrives in time is served, also after the head timeout has passed once
    with live.client() as c:
        assert c.get("/health").status_code == 200
        time.sleep(0.7)
        assert c.get("/health").status_code == 200


def test_a_rating_run_without_cutpoints_still_answers_a_rating(
    make_server: Callable[..., LiveServer], service_run: Path, tmp_path: Path
) -> None:
    """A run whose validation users were too few for cutpoints (a small catalogue's) is
    still a rating model: its rating is the score clipped to the scale, as the README and
    ``median_ratings`` say. The service answered null, as for a ranking model."""
    run = tmp_path / "no-cuts"
    shutil.copytree(service_run, run)
    manifest = json.loads((run / "recommender.json").read_text())
    assert manifest["rating_cutpoints"] is not None
    manifest["rating_cutpoints"] = None
    (run / "recommender.json").write_text(json.dumps(manifest))
    live = make_server(run=run)
    ratings = [{"item_id": i, "rating": 5} for i in ("50", "100", "181")]
    with live.client(live.settings.api_key) as c:
        created = c.post("/v1/users", json={"user_id": "u", "ratings": ratings})
        assert created.status_code == 201, created.text
        items = c.get("/v1/users/u/recommendations", params={"k": 10}).json()["items"]
    got = [(it["rating"], it["score"]) for it in items]
    assert all(rating == min(max(score, 1.0), 5.0) for rating, score in got), got


def test_a_refused_reload_is_logged_with_its_path_quoted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from metarec.service.errors import ApiError
    from metarec.service.reload_paths import check_reloadable

    with caplog.at_level("WARNING", logger="metarec.service"), pytest.raises(ApiError):
        check_reloadable("/etc", tmp_path, tmp_path / "run")
    assert "reload of '/etc' refused" in caplog.text  # was "'/etc'" in double quotes

"""Requests that land while the served model changes in place (items added or
re-encoded, a fold-in): they must answer from one consistent model, never a 500,
and an adaptation made before the change must not be served after it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx

from .conftest import LiveServer


def test_catalogue_reads_wait_for_an_item_being_added(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    live = make_server()
    served = live.app.state.holder.current
    rebuild = served.refresh
    rebuilding, go_on = threading.Event(), threading.Event()

    def slow_refresh() -> None:
        # the new item is in the model's index here; the titles and search lists are not
        # yet rebuilt: what a reader saw between the two was a 500 (IndexError)
        rebuilding.set()
        go_on.wait(30)
        rebuild()

    served.refresh = slow_refresh
    item = {"item_id": "mid-add", "title": "Halfway House", "year": 2003}
    answers: dict[str, httpx.Response] = {}

    def ask(name: str, method: str, path: str, **kw: Any) -> None:
        with live.client(server_api_key) as c:
            answers[name] = c.request(method, path, **kw)

    with live.client(server_api_key) as c:
        user = {"user_id": "reader", "ratings": [{"item_id": "1", "rating": 4}]}
        assert c.post("/v1/users", json=user).status_code == 201
    put = threading.Thread(
        target=ask, args=("put", "PUT", "/v1/items"), kwargs={"json": {"items": [item]}}
    )
    put.start()
    assert rebuilding.wait(30)
    readers = [
        threading.Thread(target=ask, args=("item", "GET", "/v1/items/mid-add")),
        threading.Thread(
            target=ask, args=("search", "GET", "/v1/items"), kwargs={"params": {"q": "halfway"}}
        ),
        threading.Thread(target=ask, args=("user", "GET", "/v1/users/reader")),
        threading.Thread(target=ask, args=("recs", "GET", "/v1/users/reader/recommendations")),
    ]
    for t in readers:
        t.start()
    for t in readers:
        t.join(0.5)
    assert not any(name in answers for name in ("item", "search", "user", "recs")), (
        f"read the catalogue while an item was half added: {answers}"
    )
    go_on.set()
    for t in [put, *readers]:
        t.join(60)
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(
        ("put", "item", "search", "user", "recs"), 200
    ), {name: r.text[:200] for name, r in answers.items()}
    assert answers["item"].json()["title"] == "Halfway House (2003)"
    assert [h["item_id"] for h in answers["search"].json()["items"]] == ["mid-add"]


def test_an_adaptation_finished_after_a_fold_in_is_not_served(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    live = make_server()
    holder = live.app.state.holder
    twins = [{"item_id": i, "title": "Night Train", "year": 2001} for i in ("loved", "hated")]
    with live.client(server_api_key) as c:
        assert c.put("/v1/items", json={"items": twins}).json()["added"] == 2
        for u in range(25):
            ratings = [{"item_id": "loved", "rating": 5}, {"item_id": "hated", "rating": 1}]
            c.post("/v1/users", json={"user_id": f"fan{u}", "ratings": ratings})
        # the newcomer rated a new item: their adaptation reads its folded-in offset
        ratings = [{"item_id": "loved", "rating": 5}, {"item_id": "1", "rating": 4}]
        assert (
            c.post("/v1/users", json={"user_id": "newcomer", "ratings": ratings}).status_code == 201
        )

        adapt = holder.batcher.adapt
        armed = [True]

        def adapt_then_fold_in(*args: Any) -> Any:
            state = adapt(*args)
            if armed.pop() if armed else False:
                # the fold-in lands after this adaptation and before it is cached
                assert holder.fold_in()["items_updated"] == 2
            return state

        holder.batcher.adapt = adapt_then_fold_in
        recs = "/v1/users/newcomer/recommendations"
        assert c.get(recs).status_code == 200  # adapted on the old offsets, then cached
        served_next = c.get(recs).json()["items"]
        holder.cache.clear()
        fresh = c.get(recs).json()["items"]
    assert not armed
    assert [(it["item_id"], round(it["score"], 5)) for it in served_next] == [
        (it["item_id"], round(it["score"], 5)) for it in fresh
    ]

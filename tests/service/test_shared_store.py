"""Server processes sharing one feedback store serve the same state.

Two apps on one SQLite file stand for two workers of ``metarec serve --workers 2``
(or two servers behind a load balancer): a change made through one (items added,
a reload to another run, a fold-in) is served by the other from its next request.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .conftest import LiveServer


def generation(live: LiveServer) -> int:
    with live.client() as c:
        text = c.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("metarec_model_generation "))
    return int(float(line.split()[1]))


def test_items_added_through_one_server_are_served_by_the_other(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    a, b = make_server(), make_server()
    before = generation(b)
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        assert cb.get("/v1/items/fresh").status_code == 404
        item = {"item_id": "fresh", "title": "Night Train", "year": 2001, "genres": ["Drama"]}
        assert ca.put("/v1/items", json={"items": [item]}).json()["added"] == 1
        # the other server's very next request sees it: rating it is not "unknown item"
        assert cb.get("/v1/items/fresh").json()["title"] == "Night Train (2001)"
        user = {"user_id": "u", "ratings": [{"item_id": "fresh", "rating": 5}]}
        assert cb.post("/v1/users", json=user).status_code == 201
        both = {"candidates": "fresh,1", "k": 2, "exclude_seen": False}
        got = cb.get("/v1/users/u/recommendations", params=both)
        assert got.status_code == 200 and len(got.json()["items"]) == 2
    assert generation(b) == before + 1  # one reload to catch up
    assert generation(a) == 1  # the server that made the change already serves it


def test_nothing_changed_means_no_reload(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.post("/v1/users", json={"user_id": "v", "ratings": [{"item_id": "1", "rating": 4}]})
        for _ in range(5):  # events are read from the store per request, not reloaded
            assert cb.get("/v1/users/v/recommendations").status_code == 200
            ca.post("/v1/users/v/events", json={"item_id": "2", "type": "click"})
    assert generation(a) == generation(b) == 1


def test_a_reload_through_one_server_moves_the_other(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    tmp_path: Path,
) -> None:
    other = shutil.copytree(service_run, tmp_path / "retrained")
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client() as cb:
        old = cb.get("/ready").json()["model"]
        moved = ca.post("/v1/admin/reload", json={"run": str(other)}).json()["model"]
        assert moved != old and moved.startswith("retrained@")
        assert cb.get("/ready").json()["model"] == moved


def test_a_fold_in_through_one_server_reaches_the_other(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    a, b = make_server(), make_server()
    twins = [{"item_id": i, "title": "Night Train", "year": 2001} for i in ("loved", "hated")]
    pick = {"candidates": "loved,hated", "k": 2}
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.put("/v1/items", json={"items": twins})
        assert cb.get("/v1/items/loved").status_code == 200  # B has the items, no ratings yet
        for u in range(25):
            ratings = [{"item_id": str(1 + (u + j) % 50), "rating": 3 + (u + j) % 3}
                       for j in range(3)]  # fmt: skip
            ratings += [{"item_id": "loved", "rating": 5}, {"item_id": "hated", "rating": 1}]
            ca.post("/v1/users", json={"user_id": f"fan{u}", "ratings": ratings})
        cb.post("/v1/users", json={"user_id": "new", "ratings": [{"item_id": "1", "rating": 4}]})
        tied = cb.get("/v1/users/new/recommendations", params=pick).json()["items"]
        assert abs(tied[0]["score"] - tied[1]["score"]) < 1e-4
        assert ca.post("/v1/admin/fold-in").json()["items_updated"] == 2
        # B never folded in itself: it serves what A's fold-in made the state
        ranked = cb.get("/v1/users/new/recommendations", params=pick).json()["items"]
        assert [r["item_id"] for r in ranked] == ["loved", "hated"]


def test_a_change_that_cannot_be_loaded_leaves_the_other_serving(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    tmp_path: Path,
) -> None:
    other = shutil.copytree(service_run, tmp_path / "short-lived")
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.post("/v1/admin/reload", json={"run": str(other)})
        shutil.rmtree(other)  # gone before B catches up
        for _ in range(3):  # B logs the failure once and keeps its model
            assert cb.get("/v1/items/1").status_code == 200
        assert generation(b) == 1

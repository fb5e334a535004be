"""Concurrent requests are adapted together, and each user gets their own model."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from metarec.recommender import Recommender, UserState
from metarec.service.serving import AdaptBatcher, Served


def test_concurrent_users_batched_match_one_at_a_time(service_run: Path) -> None:
    rec = Recommender.load(service_run)
    served = Served(rec, service_run, "test", 1, service_run)
    rng = np.random.default_rng(0)
    ids = rec.items["item_id"].to_numpy()
    histories = [
        [(str(i), float(r)) for i, r in zip(
            rng.choice(ids, size=n, replace=False), rng.integers(1, 6, size=n), strict=True
        )]
        for n in [0, 1, 3, 10, 25, 2, 7, 10, 4, 0, 15, 1, 6, 9, 3, 12]
    ]  # fmt: skip
    batcher = AdaptBatcher(max_batch=8)
    states: dict[int, UserState] = {}
    barrier = threading.Barrier(len(histories))

    def worker(n: int) -> None:
        barrier.wait()
        states[n] = batcher.adapt(served, histories[n], {"gender": "F"} if n % 2 else None)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(histories))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(states) == len(histories)
    # scored after the threads end: torch.func calls must not run concurrently
    results = {n: rec.score(state) for n, state in states.items()}
    for n, history in enumerate(histories):
        alone = rec.score(rec.adapt(history, user_features={"gender": "F"} if n % 2 else None))
        np.testing.assert_allclose(results[n], alone, rtol=1e-4, atol=1e-4)
    # different users really got different models
    assert not np.allclose(results[3], results[4])

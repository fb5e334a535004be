"""Peers that cannot tell one item from another on a given data set.

A benchmark judges metarec against its peers; a peer whose inputs hold nothing for
this catalogue scores every item alike for a user, and beating it proves nothing.
Two cases are known:

* MeLU (``melu-1``, ``melu-5``) reads an item only by its year and genres (the
  categorical inputs MovieLens offers, :mod:`metarec.peers.melu_features`). A
  catalogue with neither (books by title and description, products, news) is one
  unknown item to it: on a books catalogue built from ml-100k, its AUC was exactly
  0.5, and the report marked metarec's win over it significant.
* The bias model (``bias``, ``bias-median``) on one-value ratings (clicks read as 1s):
  every item's and user's bias is 0, so its list is the catalogue's tie order, the
  same ten items for everyone.
* MeLU on one-value ratings too, years and genres or not: a regressor fitted to one
  target learns nothing that tells items apart, and its list is what its random
  initial weights leave (on a click log with categories, the same ten items for
  everyone, nDCG@10 0.30 against popularity's 0.72, marked a significant loss).

:func:`run_benchmark <metarec.evaluation.benchmark.run_benchmark>` leaves such a
peer out of its default set, and keeps one named in ``peers`` with a warning; the
report says which and why either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from metarec.data.schema import Dataset

MELU_PEERS = ("melu-1", "melu-5")
BIAS_PEERS = ("bias", "bias-median")


def blind_peers(ds: Dataset, peers: Sequence[str]) -> dict[str, str]:
    """Each of ``peers`` that scores every item alike on ``ds``, with why."""
    from metarec.peers.melu_features import ItemFeatures

    blind: dict[str, str] = {}
    if any(p in MELU_PEERS for p in peers):
        features = ItemFeatures.fit(ds.items)
        if features.n_years == 0 and features.n_genres == 0:
            why = (
                "the catalogue has no year or genres, MeLU's only item inputs, so every "
                "item is the same to it"
            )
            blind.update({p: why for p in peers if p in MELU_PEERS})
    lo, hi = ds.rating_range
    # the data's values, not only its declared scale: clicks of 1 read on a 0-1 scale
    # (--rating-range 0,1) are as blind to it
    values = ds.interactions["rating"].dropna().unique()
    if lo == hi or len(values) == 1:
        one = lo if lo == hi else float(values[0])
        why = f"every rating is {one:g}, so every bias is 0 and its list is the tie order"
        blind.update({p: why for p in peers if p in BIAS_PEERS})
        fitted = (
            f"every rating is {one:g}, so MeLU, a regressor of the rating, learns nothing "
            "that tells one item from another"
        )
        for p in peers:
            if p in MELU_PEERS:
                blind.setdefault(p, fitted)  # no year or genres either: said first, above
    return blind


def blind_note(blind: dict[str, dict[str, object]]) -> str:
    """The report's sentence on the peers :func:`blind_peers` found: left out of the
    default set, or kept because they were named."""
    if not blind:
        return ""
    left = [p for p, b in blind.items() if b.get("left_out")]
    kept = [p for p, b in blind.items() if not b.get("left_out")]
    parts = []
    for names, verb in ((left, "Left out"), (kept, "Kept as named, but blind here")):
        by_why: dict[str, list[str]] = {}
        for p in names:
            by_why.setdefault(str(blind[p].get("why")), []).append(p)
        if by_why:
            said = "; ".join(f"{', '.join(ps)} ({why})" for why, ps in by_why.items())
            parts.append(f"{verb}: {said}.")
    if kept:
        parts.append("A win over a blind peer says nothing of metarec.")
    return " ".join(parts)

"""Peer recommenders that metarec is benchmarked against, by name.

Every peer is a :class:`~metarec.models.base.ScoringModel`, so benchmarks,
ensembles and the conformance tests treat them exactly like metarec's own
network (:class:`~metarec.models.meta_model.MetaModel`)::

    from metarec.peers import make_peer
    model = make_peer("melu-5", seed=0, epochs=20).fit(training_data)
    scores = model.score_catalogue(tasks, users)      # [len(tasks), n_items]

Names: ``popularity``, ``bias``, ``knn`` (content kNN on the items' LM
vectors), ``als`` (implicit ALS with user fold-in), ``melu-1`` and
``melu-5`` (MeLU with 1 or 5 local steps). See each module for what the
model does and how it treats empty support sets and new items.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

from metarec.errors import ConfigError
from metarec.models.base import ScoringModel
from metarec.peers.als import ALS
from metarec.peers.bias import Bias
from metarec.peers.knn import ContentKNN
from metarec.peers.melu import MeLU
from metarec.peers.popularity import Popularity

PeerFactory = Callable[..., ScoringModel]

PEERS: dict[str, PeerFactory] = {
    "popularity": Popularity,
    "bias": Bias,
    "knn": ContentKNN,
    "als": ALS,
    "melu-1": partial(MeLU, local_steps=1, name="melu-1"),
    "melu-5": partial(MeLU, local_steps=5, name="melu-5"),
}


def make_peer(name: str, seed: int = 0, **options: object) -> ScoringModel:
    """An unfitted peer by registry name; ``options`` are its constructor's keywords.

    Unknown names and options raise :class:`ConfigError` listing what is accepted.
    """
    factory = PEERS.get(name) if isinstance(name, str) else None  # a list is unhashable
    if factory is None:
        raise ConfigError(f"unknown peer {name!r}; expected one of {sorted(PEERS)}")
    params = inspect.signature(factory).parameters
    fixed = set(getattr(factory, "keywords", {})) | {"seed", "name"}  # set by the registry
    accepted = sorted(p for p in params if p not in fixed)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"peer {name!r}: unknown option(s) {unknown}; accepted: {accepted}")
    return factory(seed=seed, **options)


__all__ = ["ALS", "PEERS", "Bias", "ContentKNN", "MeLU", "Popularity", "make_peer"]

"""The models the conformance suite checks, and the small real world they are fitted in.

To add a model, append a :class:`ModelSpec` to ``SPECS``: a name, a factory
``seed -> unfitted ScoringModel`` (sized to fit in a few seconds) and whether
the model personalises (its scores depend on the support set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from metarec.config import TrainConfig
from metarec.conformance import World, make_world
from metarec.data import load_dataset
from metarec.models.base import ScoringModel
from metarec.models.ensemble import Ensemble
from metarec.models.episodic import EpisodicLinear
from metarec.models.meta_model import MetaModel
from metarec.models.stacked import StackedRanker
from metarec.peers import make_peer

SEED = 5


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[[int], ScoringModel]
    personalised: bool = True
    seeded: bool = True  # False for closed-form models that have no randomness
    # scores a new item from its text; the others (popularity, bias, ALS, MeLU...)
    # give it a prior of their own or refuse it
    reads_text: bool = False


def _meta(
    algorithm: str, objective: str = "rating", positives: str = "rated"
) -> Callable[[int], ScoringModel]:
    def build(seed: int) -> ScoringModel:
        cfg = TrainConfig(
            algorithm=algorithm,  # type: ignore[arg-type]
            objective=objective,  # type: ignore[arg-type]
            support_positives=positives,
            epochs=2,
            max_train_users=150,
            inner_steps=2,
            seed=seed,
            device="cpu",
        )
        return MetaModel(cfg, name=f"metarec-{algorithm}")

    return build


def _episodic(max_items: int | None = None) -> Callable[[int], ScoringModel]:
    def build(seed: int) -> ScoringModel:
        return EpisodicLinear(seed=seed, feature_sets=("binary+ratings",), max_items=max_items)

    return build


def _stacked(max_items: int | None = None) -> Callable[[int], ScoringModel]:
    def build(seed: int) -> ScoringModel:
        return StackedRanker(
            seed=seed, folds=2, bags=1, max_iter=20, min_samples_leaf=20, n_candidates=100,
            max_items=max_items,
        )  # fmt: skip

    return build


SPECS: list[ModelSpec] = [
    ModelSpec(
        "popularity",
        lambda seed: make_peer("popularity", seed),
        personalised=False,
        seeded=False,
    ),
    ModelSpec("bias", lambda seed: make_peer("bias", seed), seeded=False),
    ModelSpec("knn", lambda seed: make_peer("knn", seed), seeded=False, reads_text=True),
    ModelSpec("als", lambda seed: make_peer("als", seed, factors=16, iterations=5)),
    # a larger global lr than the paper's so that two epochs on 200 users reach the
    # rating scale: the suite checks the contract, not MeLU's published accuracy
    ModelSpec(
        "melu-1",
        lambda seed: make_peer(
            "melu-1", seed, epochs=2, global_lr=5e-3, min_updates=0, device="cpu"
        ),
    ),
    ModelSpec(
        "melu-5",
        lambda seed: make_peer(
            "melu-5", seed, epochs=2, global_lr=5e-3, min_updates=0, device="cpu"
        ),
    ),
    ModelSpec("metarec-fomaml", _meta("fomaml"), reads_text=True),
    ModelSpec("metarec-maml", _meta("maml"), reads_text=True),
    # each with its own path: Reptile's update, Meta-SGD's learned (and saved) step
    # sizes, transfer's fine-tuning on the support at evaluation
    ModelSpec("metarec-reptile", _meta("reptile"), reads_text=True),
    ModelSpec("metarec-metasgd", _meta("metasgd"), reads_text=True),
    ModelSpec("metarec-transfer", _meta("transfer"), reads_text=True),
    # implicit feedback: support sets get seeded sampled negatives at evaluation
    # positives = liked items: with the default (every rated item a positive) opposite
    # opinions on the same items are the same support by design, and the scores once
    # differed only through negatives drawn per batch, not per user
    ModelSpec("metarec-fomaml-bce", _meta("fomaml", "bce", "liked"), reads_text=True),
    # the closed-form episodic ridge (no randomness: time order fixes every episode);
    # the ratings block is forced on, so that opinions, not only items, move the scores
    ModelSpec("metarec-episodic", _episodic(), seeded=False),
    # gradient-boosted trees over few-shot signals, small enough for the suite's data
    ModelSpec("metarec-stacked", _stacked()),
    # both fitted on the 600 most rated items only, the rest ranked by popularity
    # below them: what a catalogue too large for a dense item-by-item fit gets
    ModelSpec("metarec-episodic-capped", _episodic(max_items=600), seeded=False),
    ModelSpec("metarec-stacked-capped", _stacked(max_items=600)),
    # model aggregation: usable wherever a single model is
    ModelSpec(
        "ensemble-ranking",
        lambda seed: Ensemble(
            {"fomaml": _meta("fomaml")(seed), "knn": make_peer("knn", seed)},
            mode="ranking",
            seed=seed,
        ),
    ),
    ModelSpec(
        "ensemble-rating",
        lambda seed: Ensemble(
            {"fomaml": _meta("fomaml")(seed), "bias": make_peer("bias", seed)},
            mode="rating",
            seed=seed,
        ),
    ),
]


@pytest.fixture(scope="session")
def world(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Real ml-100k: 200 users to fit on, 30 to tune on, 12 held-out users' tasks."""
    ds = load_dataset("ml-100k", root=shared_data)
    return make_world(ds, seed=SEED, cache_dir=tmp_path_factory.mktemp("emb"))

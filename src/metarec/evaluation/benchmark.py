"""Benchmarks: every metarec algorithm beside every peer, on the same seeded splits.

All models are fitted on the same :class:`~metarec.models.base.TrainingData`
and scored on the same tasks in one process, so ratios between them hold on
a noisy machine. A run writes ``<out>/<protocol>-<dataset>.json`` (summaries,
significance against each peer, per-fold figures, configs, timings, machine,
seed and the command), a Markdown report and PNG plots beside it, plus the
split files that reproduce it elsewhere.

* ``p1``: the MeLU protocol (four states), rating models and ranking peers.
* ``p2``: few-shot full-catalogue ranking for K in {0, 1, 3, 5, 10, 20}.
* ``folds=n`` (protocol P3): the same over n folds of users; figures are
  mean ± std over folds and the Wilcoxon tests pool the users of all folds.

Each model is evaluated as soon as it is fitted and kept until the report is
written (:mod:`metarec.evaluation.run_store`), so an interrupted run resumes at
the model it was fitting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from metarec.config import TrainConfig
from metarec.data.schema import (
    Dataset,
    check_like_threshold,
    has_timestamps,
    inferred_threshold_said,
)
from metarec.data.tasks import wrote_into_read_only
from metarec.encoders.base import needs_fit, weights_unknown
from metarec.errors import ConfigError, DataError, MetarecError, ModelError, UnsupportedError
from metarec.evaluation.blind_peers import blind_peers
from metarec.evaluation.machine import git_commit, machine_info, uncommitted_digest
from metarec.evaluation.own_models import OwnModel
from metarec.evaluation.own_models import build as build_own
from metarec.evaluation.own_models import check_names as check_own_names
from metarec.evaluation.own_models import fingerprints as own_fingerprints
from metarec.evaluation.p1 import ALL_STATES
from metarec.evaluation.p1 import IN_SAMPLE as P1_IN_SAMPLE
from metarec.evaluation.report import FOLD_PREFIX, dropped_words
from metarec.evaluation.run_store import RunStore
from metarec.evaluation.stats import bootstrap_ci, compare_to_peers
from metarec.io import json_bytes, name_limit, nearest_existing, temp_name
from metarec.locks import exclusive
from metarec.models.base import ScoringModel, TrainingData, check_whole
from metarec.models.cutpoints import MedianView, rating_levels
from metarec.models.ensemble import DEFAULT_BUCKETS, Ensemble
from metarec.models.meta_model import MetaModel
from metarec.models.persist import RANKERS, make_ranker
from metarec.values import is_number, is_whole, safe_name

META_ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd")
# metarec models that are not a TrainConfig algorithm (no network, no inner loop), so
# they stay out of META_ALGORITHMS: the episodic closed-form ridge
# (metarec.models.episodic) and the stacked ranker (metarec.models.stacked), ranking
# models and so P2 only
EXTRA_ALGORITHMS = tuple(RANKERS)  # ("episodic", "stacked"): persist's one registry
# what a benchmark runs when no --algorithms is given: P2 adds the two ranking models
# trained on P2-shaped episodes, which beat popularity where the gradient-trained
# meta-learners do not (README, P2)
P1_ALGORITHMS = META_ALGORITHMS
P2_ALGORITHMS = (*META_ALGORITHMS, *EXTRA_ALGORITHMS)
P1_PEERS = ("bias", "popularity", "knn", "als", "melu-1", "melu-5", "transfer")
P2_PEERS = ("popularity", "bias", "knn", "als", "melu-1", "melu-5", "transfer")
# The ranking protocol trains the same network as P2 uses it: an implicit objective
# ("will the user like it among everything", not "what rating"), and episodes whose
# support is the user's first k <= 20 ratings by time and whose query is what came
# after. On ml-100k (seed 0) that ordering alone lifted first-order MAML's ndcg@10 at
# K = 10 from 0.30 to 0.35 (bce); the softmax over the catalogue to 0.375; the
# amortised support encoder to 0.39. 8 epochs bound the run time.
P2_OVERRIDES = (
    "objective=softmax",
    "epochs=8",
    "episode_order=time",
    "max_support=20",
    "model.support_encoder=true",
)
P1_HEADLINE = (("mae", True), ("ndcg@3", False))
ENSEMBLE = "metarec-ensemble"  # the benchmark's blend of its metarec models and a peer
P2_HEADLINE = (("ndcg@10", False),)


# far past any cross-validation's use; the data's own bound (10 users a fold) comes later
MAX_FOLDS = 1000


def check_model_names(protocol: str, algorithms: Sequence[str], peers: Sequence[str]) -> None:
    """ConfigError naming the peers and algorithms a ``protocol`` run cannot build."""
    from metarec.peers import PEERS

    known_peers = sorted({*PEERS, "transfer"})  # transfer: a MetaModel run as a peer
    unknown = [p for p in peers if p not in known_peers]
    if unknown:
        raise ConfigError(f"peers: unknown peer(s) {unknown}; expected some of {known_peers}")
    known = (*META_ALGORITHMS, *(EXTRA_ALGORITHMS if protocol == "p2" else ()))
    unknown = [a for a in algorithms if a not in known]
    if not unknown:
        return
    if protocol == "p1" and all(a in EXTRA_ALGORITHMS for a in unknown):
        reason = "rank items and predict no ratings: use them with protocol p2"
    else:
        reason = f"not among {protocol}'s algorithms {list(known)}"
    raise ConfigError(f"algorithms: {unknown} {reason}")


def build_models(
    protocol: str,
    *,
    algorithms: Sequence[str],
    peers: Sequence[str],
    seed: int,
    overrides: Sequence[str] = (),
    progress: bool = False,
    peer_options: dict[str, dict[str, Any]] | None = None,
    seeds: int = 1,
    like_threshold: float = 4.0,
    max_items: int | None = None,
    max_episodes: int | None = None,
) -> dict[str, ScoringModel]:
    """Unfitted models by report name: peers first, then metarec's algorithms.

    With ``seeds`` > 1 each meta-learning algorithm is a seed bag: that many fits
    with seeds ``seed``, ``seed + 1``, ... averaged with equal weights (an
    :class:`Ensemble` with ``learn_weights=False``), reported under the
    algorithm's own name. ``like_threshold`` goes to every model that has one,
    so all of them learn "liked" as the metrics count it. ``max_items``: the
    episodic ridge and the stacked ranker are fitted on that many of the most
    rated items (:mod:`metarec.models.universe`); None, every item.
    ``max_episodes``: the stacked ranker's trees learn from that many training
    episodes a bag; None, every one.
    """
    import inspect

    from metarec.peers import PEERS, make_peer

    check_model_names(protocol, algorithms, peers)
    base = TrainConfig(seed=seed)
    if protocol == "p2":
        base = base.with_overrides(list(P2_OVERRIDES))
    base = base.with_overrides([*overrides, f"like_threshold={like_threshold!r}"])
    models: dict[str, ScoringModel] = {}
    for name in peers:
        if name == "transfer":
            cfg = base.with_overrides(["algorithm=transfer"])
            models[name] = MetaModel(cfg, name="transfer", progress=progress)
            continue
        options = dict((peer_options or {}).get(name, {}))
        factory = PEERS.get(name)
        accepts = inspect.signature(factory).parameters if factory is not None else {}
        if "like_threshold" in accepts:
            options.setdefault("like_threshold", like_threshold)
        if "progress" in accepts:  # MeLU: minutes of training
            options.setdefault("progress", progress)
        if "device" in accepts:  # --set device= applies to every model of the run
            options.setdefault("device", base.device)
        models[name] = make_peer(name, seed=seed, **options)
    for algo in algorithms:
        if algo in EXTRA_ALGORITHMS:
            models[f"metarec-{algo}"] = make_ranker(
                algo,
                seed=seed,
                device=base.device,
                name=f"metarec-{algo}",
                like_threshold=like_threshold,
                progress=progress,
                max_items=max_items,
                max_episodes=max_episodes,
            )
            continue
        cfg = base.with_overrides([f"algorithm={algo}"])
        name = f"metarec-{algo}"
        if seeds == 1:
            models[name] = MetaModel(cfg, name=name, progress=progress)
            continue
        bag = {
            f"seed{s}": MetaModel(
                cfg.with_overrides([f"seed={s}"]), name=f"{name}-seed{s}", progress=progress
            )
            for s in range(seed, seed + seeds)
        }
        mode: Literal["rating", "ranking"] = "rating" if protocol == "p1" else "ranking"
        models[name] = Ensemble(
            bag, mode=mode, name=name, seed=seed, learn_weights=False, like_threshold=like_threshold
        )
    return models


def meta_configs(models: dict[str, ScoringModel]) -> dict[str, dict[str, Any]]:
    """The resolved config and best epoch of every meta-learned model (for a seed
    bag: its first member's config, and each member's seed and best epoch)."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in models.items():
        if isinstance(m, MetaModel):
            out[name] = {"config": _config_run(m), "best_epoch": _best_epoch(m)}
        elif isinstance(m, Ensemble) and not m.learn_weights:
            bag = [b for b in m.members.values() if isinstance(b, MetaModel)]
            if bag:
                out[name] = {
                    "config": _config_run(bag[0]),
                    "seeds": [b.cfg.seed for b in bag],
                    "best_epoch": [_best_epoch(b) for b in bag],
                }
    return out


def _config_run(model: MetaModel) -> dict[str, Any]:
    """``model``'s config with what training set from the data (support_positives left
    open is the rule it picked: the record said null where "liked" ran)."""
    data = model.cfg.to_dict()
    if model.recommender is not None:
        data["support_positives"] = model.recommender.cfg.support_positives
    return data


def _best_epoch(model: MetaModel) -> int | None:
    return getattr(model.history, "best_epoch", None)


def add_ensemble(
    models: dict[str, ScoringModel],
    data: TrainingData,
    mode: str,
    members: Sequence[str],
    log: Callable[[str], None],
    like_threshold: float = 4.0,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
) -> dict[str, Any]:
    """Blend already-fitted members with weights learned on the validation users, one
    set per support-size bucket (P2: one per K evaluated)."""
    chosen = {m: models[m] for m in members if m in models}
    if len(chosen) < 2:
        return {}
    t0 = time.perf_counter()
    ens = Ensemble(
        chosen,
        mode=mode,  # type: ignore[arg-type]
        fit_members=False,
        seed=data.seed,
        like_threshold=like_threshold,
        buckets=buckets,
    )
    ens.fit(data)
    models[ENSEMBLE] = ens
    log(f"fitted metarec-ensemble weights in {time.perf_counter() - t0:.1f} s")
    return ens.weight_table()


def significance(
    per_user: dict[str, dict[str, list[float]]],
    reference: str,
    metrics: Sequence[tuple[str, bool]],
    seed: int,
    chosen_from: int = 1,
) -> dict[str, Any]:
    """``{metric: {peer: comparison}}`` of ``reference`` against every other model
    that has the metric (Holm over the peers of one metric, then Bonferroni over the
    ``chosen_from`` models the reference was picked from: ``compare_to_peers``)."""
    out: dict[str, Any] = {}
    for metric, lower in metrics:
        values = {
            m: np.asarray(v[metric], dtype=np.float64)
            for m, v in per_user.items()
            if metric in v and np.isfinite(np.asarray(v[metric], dtype=np.float64)).any()
        }
        if reference not in values:
            continue
        peers = [m for m in values if m != reference]
        if peers:
            out[metric] = compare_to_peers(
                values, reference, peers, lower, seed=seed, chosen_from=chosen_from
            )
    return out


def confidence_intervals(
    per_user: dict[str, dict[str, list[float]]], metrics: Sequence[str], seed: int
) -> dict[str, dict[str, tuple[float, float]]]:
    return {
        model: {
            m: bootstrap_ci(np.asarray(v[m], dtype=np.float64), seed=seed)
            for m in metrics
            if m in v and np.isfinite(np.asarray(v[m], dtype=np.float64)).any()
        }
        for model, v in per_user.items()
    }


def metarec_candidates(summary: dict[str, dict[str, float]], metric: str) -> dict[str, float]:
    """The metarec models (single or ensemble) with a mean on ``metric``: what the
    reference is picked from."""
    return {
        m: v[metric]
        for m, v in summary.items()
        if m.startswith("metarec-") and np.isfinite(v.get(metric, np.nan))
    }


def peer_alone(weights: Sequence[dict[str, dict[str, float]]], protocol: str, group: str) -> bool:
    """Whether the ensemble is a peer alone for every user of ``group`` (a P1 state, a P2
    support size) in every fold: its metarec members weigh nothing in each bucket those
    users' support sizes fall in (P2: the bucket of K; P1: every bucket from
    :data:`~metarec.evaluation.p1.MIN_SUPPORT` ratings up). Such a blend's figures are
    the peer's (its bias model with median cuts, its popularity), and it is no metarec
    model to judge the peers against: a run whose weights put everything on bias was
    reported as metarec significantly beating bias."""
    from metarec.evaluation.p1 import MIN_SUPPORT

    def lower(bucket: str) -> int:
        return int(bucket.removeprefix("K>="))

    if not weights or not all(weights):
        return False
    for table in weights:
        bounds = sorted(lower(b) for b in table)
        if protocol == "p2":
            k = int(group)
            used = [max(b for b in bounds if b <= k)] if bounds and bounds[0] <= k else []
        else:  # a bucket reaches up to the next one's bound
            used = [
                b
                for n, b in enumerate(bounds)
                if n + 1 == len(bounds) or bounds[n + 1] > MIN_SUPPORT
            ]
        for b in used:
            if any(w > 0 for m, w in table[f"K>={b}"].items() if m.startswith("metarec-")):
                return False
    return True


def per_user_bytes(per_user: dict[str, Any], metrics: Sequence[str]) -> bytes:
    """The per-user values the significance tests and bootstrap intervals of a record
    rest on, for its headline ``metrics``: ``{group: {model: {metric: [...]}}}``, the
    users in one order for every model of a group (a user in several folds once, by
    the mean of their folds), null where a user has no value (no relevant item): what
    the record's tests and intervals are computed from, so those can be checked from
    it. On one split the record's means are these values' means too; over folds they
    are the folds' means, which these (a user once) do not give."""
    out = {
        group: {
            model: {
                m: [None if not np.isfinite(x) else float(x) for x in values[m]]
                for m in metrics
                if m in values
            }
            for model, values in by_model.items()
        }
        for group, by_model in per_user.items()
    }
    about = (
        "per-user values of the headline metrics, users in one order within a group; "
        "the record's Wilcoxon tests and bootstrap intervals are computed from these"
    )
    return (json.dumps({"about": about, "groups": out}, separators=(",", ":")) + "\n").encode()


def is_tested(protocol: str, group: str) -> bool:
    """Whether a P1 state or P2 support size gets significance tests: P1's in-sample
    states (warm) get figures only."""
    return not (protocol == "p1" and group in P1_IN_SAMPLE)


def best_metarec(summary: dict[str, dict[str, float]], metric: str, lower: bool) -> str:
    """The metarec model (single or ensemble) with the best mean on ``metric``."""
    ours = metarec_candidates(summary, metric)
    if not ours:
        raise ConfigError("no metarec model in the run")
    return (min if lower else max)(ours, key=lambda m: ours[m])


# -- protocol runs --------------------------------------------------------------
def _fold_run(
    protocol: str,
    ds: Any,
    catalogue: Any,
    *,
    seed: int,
    fold: int | None,
    n_folds: int | None,
    algorithms: Sequence[str],
    peers: Sequence[str],
    overrides: Sequence[str],
    shots: Sequence[int],
    seeds: int,
    splits: Path | None,
    splits_stem: str | None = None,
    split_digest: str | None = None,
    progress: bool,
    log: Callable[[str], None],
    like_threshold: float = 4.0,
    max_items: int | None = None,
    max_episodes: int | None = None,
    store: RunStore,
    own: Mapping[str, OwnModel] | None = None,
) -> dict[str, Any]:
    """Split, fit every model, evaluate: one fold's figures with per-user values.

    Each model is evaluated as soon as it is fitted, and kept in ``store`` (its
    figures, and the model itself where the ensemble or the A/B test needs it), so
    that a run interrupted at any model resumes there with the same figures."""
    from metarec.evaluation.p1 import evaluate_p1
    from metarec.evaluation.p2 import evaluate_p2
    from metarec.evaluation.splits import (
        has_protocol_rule,
        split_file_name,
        split_path,
        split_stem,
        user_rule,
    )

    with warnings.catch_warnings():
        # read or drawn once before any fold (run_benchmark's check of them all), which
        # said what there was to say of it: an unknown key, other ratings, items without
        # a year (said twice, once here, when the split was drawn from the seed)
        warnings.simplefilter("ignore", UserWarning)
        split = _split(
            protocol, ds, seed=seed, fold=fold, n_folds=n_folds, splits=splits, stem=splits_stem
        )
    if splits is not None and split.digest() != split_digest:
        # the run's kept progress is keyed on the split it began with (_run_key)
        raise DataError(
            "changed since this run began, so its folds would not be one split's; "
            "run the command again",
            path=split_path(protocol, splits_stem or ds.name, splits, fold),
        )
    # written beside the report at the end, not here: an interrupted run would leave a
    # split that does not match the report already there
    split_file = split_file_name(protocol, split_stem(ds.name, seed), fold)
    data = TrainingData.from_split(split.frames, catalogue, ds, seed)
    built = build_models(
        protocol,
        algorithms=algorithms,
        peers=peers,
        seed=seed,
        overrides=overrides,
        progress=progress,
        seeds=seeds,
        like_threshold=like_threshold,
        max_items=max_items,
        max_episodes=max_episodes,
    )
    # the report's rows: the peers, then models of one's own, then metarec's
    models = {n: m for n, m in built.items() if not n.startswith("metarec-")}
    models.update({n: build_own(n, given, seed) for n, given in (own or {}).items()})
    models.update({n: m for n, m in built.items() if n.startswith("metarec-")})
    ours = [m for m in models if m.startswith("metarec-")]
    anchor = "bias" if protocol == "p1" else "popularity"
    # the models the ensemble blends; the A/B test's arms (popularity and the best
    # metarec model) are among them. Every other model is dropped once evaluated.
    members = [m for m in (*ours, anchor) if m in models]

    def evaluate(chosen: dict[str, Any]) -> dict[str, Any]:
        if protocol == "p1":
            return evaluate_p1(
                chosen,
                split,
                catalogue.index,
                ds.users,
                states=P1_STATES,
                like_threshold=like_threshold,
                rating_range=ds.rating_range,
            )
        return evaluate_p2(
            chosen,
            split.frames["test"],
            catalogue.index,
            ds.users,
            shots=shots,
            like_threshold=like_threshold,
            seed=seed,
        )

    parts: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    configs: dict[str, Any] = {}
    for index, (name, model) in enumerate(list(models.items())):
        needed = name in members
        kept = store.finished_model(fold, index, name, needed=needed)
        if kept is not None:
            record, loaded = kept
            log(f"{name}: fitted and evaluated by an earlier, stopped run of this command; read")
        else:
            t0 = time.perf_counter()
            mine = name in (own or {})
            with _own_model_named(name, own):
                # a model of one's own fits on a copy: one that centred the ratings (or
                # dropped users) in place changed what every model after it fitted on
                fitted = model.fit(data.copied() if mine else data)
                if mine and fitted is not model:
                    # check-model fails it; the run went on with the object fit changed
                    raise ValueError(
                        f"fit returned {type(fitted).__name__}; fit() must return the "
                        "model itself (return self)"
                    )
                if mine and model.n_items != data.n_items:
                    # scores for fewer items were ranked as if they were the catalogue's
                    raise ValueError(
                        f"n_items is {model.n_items:,} after fit, the catalogue has "
                        f"{data.n_items:,} (score every catalogue item: np.bincount's "
                        "minlength=data.n_items)"
                    )
                fit_s = time.perf_counter() - t0
                record = {
                    "fit_s": fit_s,
                    "config": meta_configs({name: model}).get(name),
                    "result": evaluate({name: model}),
                }
            eval_s = time.perf_counter() - t0 - fit_s
            log(f"fitted {name} in {fit_s:.1f} s, evaluated in {eval_s:.1f} s")
            loaded = model
            try:
                store.save_model(fold, index, name, record, model if needed else None)
            except UnsupportedError as exc:  # a model of one's own: fitted again on resume
                log(f"{name}: not kept for a resumed run ({exc})")
        timings[name] = record["fit_s"]
        if record["config"] is not None:
            configs[name] = record["config"]
        parts.append(record["result"])
        if needed and loaded is not None:
            models[name] = loaded
        else:
            del models[name]

    mode = "rating" if protocol == "p1" else "ranking"
    # P2's buckets are the Ks it evaluates: with --shots 0,1,3 the default buckets
    # warned of too few users at K >= 5, 10 and 20, which no figure used
    buckets: Sequence[int] = sorted({0, *shots}) if protocol == "p2" else DEFAULT_BUCKETS
    weights = add_ensemble(models, data, mode, members, log, like_threshold, buckets)
    late: dict[str, Any] = {m: models[m] for m in (ENSEMBLE,) if m in models}
    if protocol == "p1" and "bias" in models and data.validation_ratings is not None:
        # the bias model with median cuts of its own: the share of metarec's MAE
        # gain that cuts alone would give
        late["bias-median"] = MedianView.fit(
            models["bias"],
            data.validation_ratings,
            data.users,
            levels=rating_levels(data.ratings.ratings),
            seed=seed,
        )
    if late:
        parts.append(evaluate(late))
    result = _merge(parts)
    if protocol == "p2":
        result["abtest"] = _p2_abtest(
            models, split, ds, catalogue.index, result, seed, like_threshold
        )
    return {
        **result,
        "abtest": result.get("abtest"),
        "timings": timings,
        "configs": configs,
        "ensemble_weights": weights,
        "split_file": split_file,
        "split": split.to_json(),  # kept with a finished fold, so a resumed run can write it
        "split_rule": getattr(split, "rule", ""),
        # only where a --splits file drew its users by a rule of its own, which the
        # report then states (the folds keep one: check_partition)
        **({} if has_protocol_rule(split) else {"user_rule": user_rule(split)}),
    }


@contextlib.contextmanager
def _own_model_named(name: str, own: Mapping[str, OwnModel] | None) -> Iterator[None]:
    """A model of one's own that fails is named by its report name, with where to look:
    its traceback ran through metarec's evaluation code and said nothing of which
    ``--model`` it was."""
    if name not in (own or {}):
        yield
        return
    try:
        yield
    except Exception as exc:
        wrote = wrote_into_read_only(exc)
        hint = "(it wrote into a task's arrays, the benchmark's: copy them first) " if wrote else ""
        raise ModelError(
            f"models: {name!r} failed: {type(exc).__name__}: {exc} {hint}"
            "(`metarec check-model MODULE:FACTORY` runs a model through the contract "
            "a benchmark relies on)"
        ) from exc


def _split(
    protocol: str,
    ds: Dataset,
    *,
    seed: int,
    fold: int | None,
    n_folds: int | None,
    splits: Path | None,
    stem: str | None = None,
) -> Any:
    """The split of ``fold``: read from the ``splits`` folder (and checked), from the
    files named by ``stem`` (:func:`~metarec.evaluation.splits.read_stem`), or drawn
    from ``seed``; the same each time for the same data, seed and code."""
    from metarec.evaluation.p1 import make_p1_split
    from metarec.evaluation.p2 import make_p2_split
    from metarec.evaluation.splits import load_split

    if splits is not None:
        return load_split(protocol, ds, splits, fold=fold, n_folds=n_folds, stem=stem)
    if protocol == "p1":
        return make_p1_split(ds, seed=seed, n_folds=n_folds, fold=fold)
    return make_p2_split(ds, seed=seed, n_folds=n_folds, fold=fold)


P1_STATES = ALL_STATES
AB_SUPPORT = 5


def _p2_abtest(
    models: dict[str, ScoringModel],
    split: Any,
    ds: Any,
    index: dict[str, int],
    result: dict[str, Any],
    seed: int,
    like_threshold: float = 4.0,
) -> dict[str, Any] | None:
    """P4 in the same run: popularity (A, what a product shows without a model) against
    the metarec model a product would ship (B), replay and team-draft interleaving on
    the test users. B is chosen before the test, on the validation users
    (:func:`ab_challenger`)."""
    from metarec.evaluation.abtest import run_abtest
    from metarec.evaluation.p4_split import make_p4_split
    from metarec.io import jsonable

    at = result["summary"].get(str(AB_SUPPORT))
    if "popularity" not in models or not at:
        return None
    best, choice = ab_challenger(models, split, ds, index, at, like_threshold)
    p4 = make_p4_split(
        split.frames["test"], split.test_users, support=AB_SUPPORT, seed=seed, dataset=ds.name
    )
    report = run_abtest(
        models["popularity"],
        models[best],
        split.frames["test"],
        p4,
        index,
        users=ds.users,
        threshold=like_threshold,
    )
    return jsonable({"A": "popularity", "B": best, **choice, **report})


def _why_no_abtest(protocol: str, peers: Sequence[str], shots: Sequence[int]) -> str | None:
    """Why a P2 run will hold no A/B test (:func:`_p2_abtest`), or None."""
    if protocol != "p2":
        return None
    if AB_SUPPORT not in shots:
        return f"it is run at K = {AB_SUPPORT}, and the support sizes (shots) leave it out"
    if "popularity" not in peers:
        return "it pits popularity (arm A) against the best model, and the peers leave it out"
    return None


AB_CHOICE_METRIC = "ndcg@10"


def ab_challenger(
    models: Mapping[str, ScoringModel],
    split: Any,
    ds: Any,
    index: dict[str, int],
    test_summary: dict[str, dict[str, float]],
    like_threshold: float = 4.0,
) -> tuple[str, dict[str, Any]]:
    """The A/B test's arm B and how it was chosen: the metarec model with the best
    nDCG@10 at K = 5 on the *validation* users, so that the test users judge a model
    fixed before they were seen (runs before 2026-12-04 chose it on the test users
    themselves, which leans the test toward B).

    The ensemble is not a candidate: its weights were fitted to this very metric on
    those same validation users, so its validation figure is in-sample and would win
    the choice for that reason alone. The networks' early stopping (their validation
    loss) and the episodic ridge's ridge strength (a grid of a few values) read these
    users too, more lightly; the stacked ranker does not. Where the validation users
    give no figure (none, or none with a liked item after their support), B falls
    back to the best on the test users, and the record says so (``chosen_on``); how
    many validation users the choice rests on is recorded (``choice_users``)."""
    from metarec.evaluation.p2 import evaluate_p2

    candidates = {
        m: model
        for m, model in models.items()
        # a seed bag is an Ensemble too, of equal weights that read no user
        if m.startswith("metarec-") and not (isinstance(model, Ensemble) and model.learn_weights)
    }
    if len(candidates) == 1:  # nothing to choose between: fixed before the test
        return next(iter(candidates)), {"chosen_on": "the only candidate"}
    frame = split.frames.get("validation")
    figures: dict[str, float] = {}
    users = 0
    if candidates and frame is not None and len(frame):
        result = evaluate_p2(
            candidates,
            frame,
            index,
            ds.users,
            shots=[AB_SUPPORT],
            like_threshold=like_threshold,
            seed=split.seed,
        )
        scored = result["summary"].get(str(AB_SUPPORT), {})
        users = _n_scored(result["per_user"]).get(str(AB_SUPPORT), 0)
        figures = {
            m: float(v[AB_CHOICE_METRIC])
            for m, v in scored.items()
            if np.isfinite(v.get(AB_CHOICE_METRIC, np.nan))
        }
    if figures:
        best = max(figures, key=lambda m: figures[m])
        return best, {"chosen_on": "validation users", "choice": figures, "choice_users": users}
    # among the same candidates: the ensemble, left out above, won this fallback too
    ours = {m: v for m, v in test_summary.items() if m in candidates}
    best = best_metarec(ours, AB_CHOICE_METRIC, lower=False)
    return best, {"chosen_on": "test users"}


def _finite_stat(stat: Callable[[np.ndarray], Any], values: Sequence[float]) -> float:
    """``stat`` over the values that are not NaN; NaN (without numpy's empty-slice
    warning) for a metric a model does not have, such as a ranking model's MAE."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(stat(v)) if len(v) else float("nan")


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One evaluation's figures from its models' separate ones, in the models' order."""
    out: dict[str, Any] = {"summary": {}, "per_user": {}, "n_users": {}, "user_ids": {}}
    for part in parts:
        for field in ("summary", "per_user"):
            for group, by_model in part[field].items():
                out[field].setdefault(group, {}).update(by_model)
        out["n_users"].update(part["n_users"])
        out["user_ids"].update(part.get("user_ids", {}))
    return out


def _n_scored(per_user: dict[str, Any]) -> dict[str, int]:
    """P2: the test users whose ranking metrics are defined at each K (a liked item
    after the support), which the means and tests rest on; the others are left out
    of both (NaN), and the report said "Test users: 82" over tests of 79."""
    out = {}
    for group, by_model in per_user.items():
        values = next(iter(by_model.values()))[P2_HEADLINE[0][0]]
        out[group] = int(np.isfinite(np.asarray(values, dtype=np.float64)).sum())
    return out


def _pool(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over folds of each summary figure; per-user values of all folds, a
    user evaluated in several folds once, by the mean of their folds' values.

    A held-out user is in one fold only, but P1's warm and item-cold states evaluate
    the existing users, who are existing in all folds but their own: concatenated,
    2,600 users counted as 5,208, as if independent, which made every test's p-value
    and bootstrap interval too narrow. The user stays the unit of every test."""
    summary: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    per_user: dict[str, Any] = {}
    n_users: dict[str, int] = {}
    # a state with no user in the first fold (a small both-cold) is another fold's: read
    # from the first only, it was dropped from the report without a word
    groups = list(dict.fromkeys(g for f in folds for g in f["summary"]))
    for group in groups:
        summary[group], spread[group], per_user[group] = {}, {}, {}
        owners = _owners([f.get("user_ids", {}).get(group) for f in folds if group in f["summary"]])
        first = next(f for f in folds if group in f["summary"])
        for model in first["summary"][group]:
            rows = [f["summary"][group][model] for f in folds if group in f["summary"]]
            summary[group][model] = {
                m: _finite_stat(np.mean, [r[m] for r in rows]) for m in rows[0]
            }
            spread[group][model] = {
                m: _finite_stat(np.std, [r[m] for r in rows]) if len(rows) > 1 else 0.0
                for m in rows[0]
            }
            per_user[group][model] = {
                m: _user_means(
                    [
                        x
                        for f in folds
                        if group in f["per_user"]
                        for x in f["per_user"][group][model][m]
                    ],
                    owners,
                )
                for m in first["per_user"][group][model]
            }
        if owners is not None:
            n_users[group] = int(owners.max()) + 1 if len(owners) else 0
    for g in dict.fromkeys(g for f in folds for g in f["n_users"]):
        n_users.setdefault(g, int(sum(f["n_users"].get(g, 0) for f in folds)))
    return {"summary": summary, "std": spread, "per_user": per_user, "n_users": n_users}


def _owners(ids: list[list[str] | None]) -> np.ndarray | None:
    """For the folds' concatenated per-user values of a group, each value's user as a
    number (0, 1, ... in first-seen order); None where a fold did not record its
    users (P2, whose test users are each in one fold)."""
    if any(i is None for i in ids):
        return None
    number: dict[str, int] = {}
    return np.array(
        [number.setdefault(u, len(number)) for fold in ids for u in fold or []], dtype=np.int64
    )


def _user_means(values: list[float], owners: np.ndarray | None) -> list[float]:
    """Each user's mean over the folds that evaluated them (NaN where every one is
    NaN: a metric undefined for that user), in first-seen order."""
    if owners is None:
        return values
    v = np.asarray(values, dtype=np.float64)
    if len(v) != len(owners):
        raise ValueError(f"{len(v)} per-user values for {len(owners)} recorded users")
    n = int(owners.max()) + 1 if len(owners) else 0
    finite = np.isfinite(v)
    total = np.bincount(owners[finite], weights=v[finite], minlength=n)
    count = np.bincount(owners[finite], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).tolist()


def _check_shots(
    ds: Dataset, shots: Sequence[int], splits: Sequence[tuple[int | None, Any]]
) -> None:
    """Refuse, before any model is fitted, a support size K that no test user of some
    fold's split (``(fold, split)`` pairs) can take: P2 evaluates a user at K only with
    a rating after the first K to rank (:func:`metarec.evaluation.p2.shot_tasks`), and
    such a K was dropped from the results once every model had been fitted (or, with
    no K left, the run failed)."""
    counts = ds.interactions.groupby(ds.interactions["user_id"].astype(str)).size()
    most = {fold: int(counts.reindex(s.test_users).fillna(0).max()) - 1 for fold, s in splits}
    limiting = min(most, key=lambda fold: most[fold])  # the fold whose users rated least
    largest = most[limiting]
    too_many = [k for k in shots if k > largest]
    if too_many:
        folded = limiting is not None
        where = f"fold {limiting}'s" if folded else "this split's"
        which = "every fold's split allows" if folded else "this split allows"
        raise ConfigError(
            f"shots: K = {', '.join(map(str, too_many))}: P2 evaluates a user at K only "
            f"with more than K ratings (what comes after the first K is ranked), and none of "
            f"{where} test users of {ds.name} has that many; the largest K {which} is {largest}"
        )


def _check_model_options(
    algorithms: Sequence[str], seeds: int, max_items: int | None, max_episodes: int | None
) -> None:
    """Refuse options that no model of the run reads: the record and its command would
    carry them (a "-seeds3" report of models fitted once, a --max-episodes that changed
    nothing)."""
    if seeds > 1 and not set(META_ALGORITHMS) & set(algorithms):
        raise ConfigError(
            f"seeds: bags the meta-learning algorithms ({', '.join(META_ALGORITHMS)}), and "
            f"this run fits none of them ({', '.join(algorithms)})"
        )
    if max_items is not None and not set(EXTRA_ALGORITHMS) & set(algorithms):
        raise ConfigError(
            "max_items: applies to the episodic ridge and the stacked ranker (algorithms "
            f"{', '.join(EXTRA_ALGORITHMS)}), which this run does not fit"
        )
    if max_episodes is not None and "stacked" not in algorithms:
        raise ConfigError(
            "max_episodes: applies to the stacked ranker (algorithm stacked), which this "
            "run does not fit"
        )


def _check_split_files(
    out: Path, protocol: str, stem: str, drawn: Sequence[tuple[int | None, Any]], ds: Dataset
) -> None:
    """Refuse a run whose split files would replace other splits in ``out``: a split
    file's name says the protocol, data, seed and fold, not the seed bags nor where
    ``--splits`` read it from, and a run over another report's file left that report
    beside a split it was not run on, without a word. Before any model is fitted."""
    from metarec.evaluation.splits import split_file_name

    for fold, split in drawn:
        path = out / split_file_name(protocol, stem, fold)
        if not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                # the file --splits read, often (its default out is the --splits folder
                # of the README's commands), which has said what there was to say
                warnings.simplefilter("ignore", UserWarning)
                same = type(split).load(path, ds).digest() == split.digest()
        except MetarecError:  # not this data's split at all
            same = False
        if not same:
            raise ConfigError(
                f"{path}: holds another split than this run's, which the report it was "
                "written with was run on; give another --out (or move that file away)"
            )


def _warn_few_users(protocol: str, n_users: Mapping[str, int]) -> None:
    """Say where the test users are too few for the figures to mean much, as `evaluate`
    does: a P2 run on one's own data judged 4 users without a word."""
    where = "K = " if protocol == "p2" else ""
    few = [f"{where}{g} ({n})" for g, n in n_users.items() if is_whole(n) and 0 < n < 20]
    if few:
        warnings.warn(
            f"few test users at {', '.join(few)}: those figures are rough, and a difference "
            "between models there is unlikely to be significant",
            UserWarning,
            stacklevel=3,
        )


def _check_validation_users(
    protocol: str, splits: Sequence[tuple[int | None, Any]], where: Callable[[int | None], str]
) -> None:
    """Refuse a P2 split with no validation users before any model is fitted: the
    meta-learners stop early and the ensemble learns its weights on them, and the run
    failed after every fit, again on each resume. (P1's groups are checked by
    :func:`metarec.evaluation.p1.check_p1_groups`.)"""
    if protocol != "p2":
        return
    for fold, split in splits:
        if not split.validation_users:
            raise DataError(
                f"{where(fold)}: no validation users: the meta-learners stop early and the "
                "ensemble learns its weights on them"
            )


@contextlib.contextmanager
def _noting_warnings(
    into: list[str], where: Callable[[], int | None] = lambda: None
) -> Iterator[None]:
    """Show each UserWarning as before, and add its text to ``into`` (once) for the
    record: "rating cutpoints not fitted" made the median rows the mean rows, and was
    said on stderr alone, which neither the JSON nor the Markdown kept. ``where``: the
    fold being fitted, if any, whose number heads the text ("fold 2: ..."): a
    cross-validation's warning did not say which fold's tables it concerned."""
    shown = warnings.showwarning

    def note(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        fold = where()
        text = str(message) if fold is None else f"{FOLD_PREFIX}{fold}: {message}"  # report
        # another library's own warning (a deprecation said as a UserWarning inside
        # torch or matplotlib) says nothing of the figures: shown, not kept
        ours = not another_librarys(filename)
        if issubclass(category, UserWarning) and ours and text not in into:
            into.append(text)
        shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():  # puts showwarning back however the run ends
        warnings.showwarning = note
        yield


_OWN_PACKAGE = Path(__file__).resolve().parents[1]  # src/metarec, or site-packages/metarec


def another_librarys(filename: str) -> bool:
    """Whether a warning's file is another installed library's (torch's, matplotlib's),
    not metarec's nor the caller's own code. By the package folder a file lies in: a
    checkout in a folder named metarec (its .venv inside) counted every library as
    metarec's, and Debian's dist-packages as the caller's."""
    path = Path(filename)
    parts = path.parts
    found = [i for i, part in enumerate(parts) if part in ("site-packages", "dist-packages")]
    if found:
        return parts[found[-1] + 1 : found[-1] + 2] != ("metarec",)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # "<string>" and the like resolve; a loop does not
        return False
    if resolved.is_relative_to(_OWN_PACKAGE):
        return False
    from metarec.evaluation.own_models import installed_path

    return installed_path(str(resolved))


def _fold_scope() -> contextlib.AbstractContextManager[Any]:
    """Around one fold's fitting: a warning an earlier fold gave is said again, and kept
    naming this fold too. Python's default filter says a line's warning once, so the
    record named the first fold alone; entering ``catch_warnings`` makes the filters
    anew (the caller's own, "error" or "ignore", still hold), which forgets what was
    said."""
    return warnings.catch_warnings()


def _check_outputs(out: Path, paths: Sequence[Path]) -> None:
    """Refuse a result file's place taken by a folder before the run, not after every
    model is fitted, when writing it failed with 'Is a directory'."""
    for path in paths:
        if path.is_dir():
            raise ConfigError(
                f"out: {path} is a folder, where the run writes a result file; move it "
                f"away or give another out folder than {out}"
            )
        longest = name_limit(path.parent)
        if len(os.fsencode(temp_name(path.name))) > longest:
            raise ConfigError(
                f"out: {path.name} is too long a file name for {nearest_existing(out)} "
                f"(it takes names up to {longest} bytes, and the file is first written "
                "under a longer temporary name); give a shorter data file name"
            )


def _check_summary(protocol: str, summary: dict[str, Any], shots: Sequence[int]) -> None:
    """Refuse to save a record without figures, or without a support size it was asked
    for: its report would fail to render, or drop that K while its command names it."""
    if not summary:
        what = "state (P1)" if protocol == "p1" else "support size K"
        raise DataError(f"no {what} had a test user to evaluate; no result written")
    missing = [k for k in shots if str(k) not in summary] if protocol == "p2" else []
    if missing:
        raise ConfigError(
            f"shots: no test user could be evaluated at K = {', '.join(map(str, missing))} "
            "(each needs more than K ratings); no result written"
        )


def default_algorithms(protocol: str) -> tuple[str, ...]:
    return P1_ALGORITHMS if protocol == "p1" else P2_ALGORITHMS


def _command(
    protocol: str,
    dataset: str,
    seed: int,
    folds: int,
    algorithms: Sequence[str],
    peers: Sequence[str],
    shots: Sequence[int],
    seeds: int,
    root: str | None,
    splits: str | Path | None = None,
    overrides: Sequence[str] = (),
    like_threshold: float | None = None,
    data_args: str | None = None,
    max_items: int | None = None,
    max_episodes: int | None = None,
    own: Sequence[str] = (),
    model_args: Sequence[str] | None = None,
    in_memory: bool = False,
    peers_named: bool = False,
) -> str:
    """The CLI line that reproduces a run (non-default options only; ``peers_named``:
    the peers were named, which keeps blind ones the defaults leave out, so --peers is
    written even where they are the default list). ``data_args``:
    how the data was named when it is not a known dataset (``--interactions ...``);
    ``model_args``: the ``--model`` specs of models of one's own (``own``, their names),
    which a run from Python has not: the line then says which models it leaves out."""
    import shlex

    from metarec.evaluation.p2 import SHOTS

    where = data_args if data_args is not None else f"--dataset {dataset}"
    cmd = f"metarec benchmark --protocol {protocol} {where} --seed {seed}"
    if folds > 1:
        cmd += f" --folds {folds}"
    if list(algorithms) != list(default_algorithms(protocol)):
        cmd += f" --algorithms {','.join(algorithms)}"
    if peers_named or list(peers) != list(P1_PEERS if protocol == "p1" else P2_PEERS):
        cmd += f" --peers {shlex.quote(','.join(peers))}"  # "" for none
    if protocol == "p2" and tuple(shots) != tuple(SHOTS):
        cmd += f" --shots {','.join(map(str, shots))}"
    if max_items is not None:
        cmd += f" --max-items {max_items}"
    if max_episodes is not None:
        cmd += f" --max-episodes {max_episodes}"
    if seeds > 1:
        cmd += f" --seeds {seeds}"
    if splits is not None:
        cmd += f" --splits {shlex.quote(str(splits))}"
    if like_threshold is not None:
        cmd += f" --like-threshold {like_threshold:g}"
    for override in overrides:
        cmd += f" --set {shlex.quote(override)}"
    if data_args is None and root:
        cmd += f" --data {shlex.quote(str(root))}"  # the data folder as it was given
    if model_args is not None:
        cmd += "".join(f" --model {shlex.quote(spec)}" for spec in model_args)
    elif own:
        cmd += f"  # plus models given in Python: {', '.join(own)}"
    if in_memory:
        cmd += "  # the data was built in Python: name its files (--interactions, --items)"
    return cmd


FOLD_FORMAT = 3  # raised whenever a kept fold's results gain or change a field the record reads


def _run_key(
    protocol: str, ds: Dataset, *, splits: Sequence[str] | None, **options: Any
) -> dict[str, Any]:
    """What makes two runs' folds interchangeable (:class:`RunStore`): the options,
    the data (its ratings, its items' text and its users' features, hashed), the
    splits read from ``--splits`` (each fold's :meth:`SplitFile.digest`, None when
    drawn from the seed) and the code (commit, versions)."""
    import pandas as pd
    import torch

    from metarec import __version__ as metarec_version

    def digest(frame: pd.DataFrame) -> str:
        try:
            hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        except TypeError:  # unhashable cells (lists, dicts) in a catalogue of one's own
            hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
        # in row order: the tasks no longer follow it (UserRatings sorts each user's
        # ratings), but a fit may (the order of floating-point sums), so the same rows
        # shuffled are another run, not one to resume; a sum of row hashes hid that
        rows = hashlib.blake2b(np.ascontiguousarray(hashed).tobytes(), digest_size=8)
        return f"{len(frame)}:{rows.hexdigest()}"

    return {
        "protocol": protocol,
        "dataset": ds.name,
        "interactions": digest(ds.interactions),
        "items": digest(ds.items),
        # the models read the users' features too: an edited users file is another run
        "users": digest(ds.users) if ds.users is not None else None,
        # the files' contents, not the folder's path: one edited in between would
        # otherwise leave models trained on the old split beside ones on the new
        "splits": list(splits) if splits is not None else None,
        **options,  # tuples and lists compare equal once RunStore has put them through JSON
        # an installed package has no commit: its version and torch's stand for the code
        "git_commit": git_commit(),
        # edits not yet committed are other code: the commit alone reused their folds
        "uncommitted": uncommitted_digest(),
        "metarec": metarec_version,
        "torch": torch.__version__,
        # a fold's models fitted on two threads and the rest on one matched neither
        # uninterrupted run (the softmax objective's training follows the thread count),
        # and the record named one thread count for all
        "threads": torch.get_num_threads(),
        # what a kept fold holds: without a commit, a fold kept before its results named
        # their users (user_ids, 2026-12-04) would pool with newer ones as if it did
        "fold_format": FOLD_FORMAT,
    }


def run_benchmark(
    protocol: str,
    dataset: str | Dataset,
    *,
    root: str | None = None,
    out: str | Path = "benchmarks/results",
    seed: int = 0,
    folds: int = 1,
    algorithms: Sequence[str] | None = None,
    peers: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    shots: Sequence[int] | None = None,
    seeds: int = 1,
    splits: str | Path | None = None,
    progress: bool = True,
    plots: bool = True,
    command: str | None = None,
    like_threshold: float | None = None,
    data_args: str | None = None,
    max_items: int | None = None,
    max_episodes: int | None = None,
    resume: bool = True,
    models: Mapping[str, OwnModel] | None = None,
    model_args: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run protocol ``p1`` or ``p2`` (over ``folds`` folds when > 1) and write the reports.

    ``dataset``: a known dataset's name (found under ``root``, the cache or
    downloaded) or an already loaded and cleaned :class:`Dataset` -- any
    catalogue with text, on any rating scale; ``data_args`` then says how the
    reproduction command names it. ``seeds`` > 1 makes every meta-learning
    algorithm a seed bag (:func:`build_models`). ``splits``: a folder of split
    files an earlier run wrote, read instead of drawing the splits
    (:mod:`metarec.evaluation.splits`). ``like_threshold``: the rating at or above
    which an item counts as liked, for every model and metric (default: from the
    data's rating scale, :func:`metarec.data.like_threshold_for`; 4 on 1-5 stars).
    ``max_items``: fit the episodic ridge and the stacked ranker on that many of the
    most rated items (for catalogues too large for their dense fits);
    ``max_episodes``: the stacked ranker's trees on that many training episodes a bag.
    ``resume``: read what an interrupted run of the same command kept
    (:mod:`metarec.evaluation.run_store`); False starts over. ``models``: models of
    one's own by report name, each an unfitted :class:`ScoringModel` or a factory
    returning one (:mod:`metarec.evaluation.own_models`), fitted and judged beside the
    peers; ``model_args``: how the reproduction command names them (``--model ...``).
    """
    from metarec.data import load_dataset
    from metarec.evaluation.p2 import SHOTS
    from metarec.evaluation.report import write_report
    from metarec.pipeline import encode_catalogue, ready_encoder

    if protocol not in ("p1", "p2"):
        raise ConfigError(f"protocol: {protocol!r} is not one of p1, p2")
    for what, n in (("folds", folds), ("seeds", seeds)):
        if not is_whole(n):
            raise ConfigError(f"{what}: expected a whole number, got {n!r}")
    if like_threshold is not None and not is_number(like_threshold):
        # "4" ran every model and failed formatting the report's command; True was 1.0,
        # every rating liked
        raise ConfigError(f"like_threshold: expected a number or None, got {like_threshold!r:.40}")
    if folds < 1:
        raise ConfigError(f"folds: must be >= 1, got {folds}")
    if folds > MAX_FOLDS:
        # the folds' list was built before the data's own bound (10 users a fold) was
        # checked: 10**20 an OverflowError, 10**9 tens of GB
        raise ConfigError(
            f"folds: at most {MAX_FOLDS:,} (10 users a fold at the least), got {folds}"
        )
    if seeds < 1:
        raise ConfigError(f"seeds: must be >= 1, got {seeds}")
    for what, value in (("max_items", max_items), ("max_episodes", max_episodes)):
        if value is not None:  # 2.5 started a run; "5" was a TypeError
            check_whole(value, what, 1)
    if any(o.split("=", 1)[0].strip() == "like_threshold" for o in overrides):
        raise ConfigError(
            "overrides: like_threshold is the benchmark's own like_threshold "
            "(--like-threshold), which every model and metric of the run share"
        )
    if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
        # it reseeded the metarec networks alone, while the record said seed 0
        raise ConfigError(
            "overrides: seed is the benchmark's own seed (--seed, or seed=), which draws "
            "the splits and seeds every model of the run"
        )
    for what, names in (("peers", peers), ("algorithms", algorithms), ("shots", shots)):
        if isinstance(names, (str, bytes)):  # list("knn") would be three unknown names
            raise ConfigError(
                f"{what}: expected a list, got the string {names!r}; write [{names!r}]"
            )
    peers_named = peers is not None  # a blind peer named is kept; a default one left out
    peers = list(P1_PEERS if protocol == "p1" else P2_PEERS) if peers is None else list(peers)
    command_peers = list(peers)  # the command's --peers: none where the defaults ran
    algorithms = list(default_algorithms(protocol) if algorithms is None else algorithms)
    # before the data is loaded and encoded, not a minute into the run
    check_model_names(protocol, algorithms, peers)
    if models is not None and not isinstance(models, Mapping):
        raise ConfigError(
            f"models: expected a mapping of report name to model, got {type(models).__name__}"
        )
    own = dict(models or {})
    from metarec.peers import PEERS

    check_own_names(own, {*peers, *PEERS, *P1_PEERS, *P2_PEERS})
    own_key = own_fingerprints(own, seed)  # builds each once: a bad factory is refused here
    shots = tuple(SHOTS if shots is None else shots)
    # checked here, not after every model is fitted
    if not algorithms:
        raise ConfigError("algorithms: the run needs at least one metarec model to judge")
    _check_model_options(algorithms, seeds, max_items, max_episodes)
    if protocol == "p2" and (not shots or any(not is_whole(k) or k < 0 for k in shots)):
        raise ConfigError(f"shots: support sizes must be whole numbers >= 0, got {list(shots)}")
    base = TrainConfig(seed=seed).with_overrides(list(overrides))
    encoder = ready_encoder(base.encoder, device=base.device)  # a typo'd model name
    ds = dataset if isinstance(dataset, Dataset) else None
    ds_name = safe_name(ds.name) if ds is not None else str(dataset)
    out = Path(out)

    def log(msg: str) -> None:
        if progress:
            print(f"[{protocol} {ds_name}] {msg}", flush=True)

    fold_ids: list[int | None] = [None] if folds == 1 else list(range(folds))
    from metarec.evaluation.splits import split_stem

    stem = split_stem(ds_name, seed)  # the files' names: a seed but 0's is in them
    splits_stem: str | None = None  # the names of the files --splits reads
    if splits is not None:  # before the data is encoded, not minutes into the run
        from metarec.evaluation.splits import read_stem, split_path

        splits_stem = read_stem(protocol, ds_name, seed, splits, folds)
        for f in fold_ids:
            split_path(protocol, splits_stem, splits, f)
    if folds > 1:
        from metarec.evaluation.splits import check_fold_plan

        check_fold_plan(protocol, stem, out, folds)
    t0 = time.perf_counter()
    if ds is None:
        ds = load_dataset(ds_name, root=root)
    else:
        from metarec.data.cleaning import require_clean

        require_clean(ds)
    ds = replace(ds, name=ds_name)  # split files and reports are named after it
    # what cleaning dropped, said and recorded: a third of a catalogue's ratings (items
    # the items file lacked) went without a word, and the report described other data
    cleaning = ds.report.to_dict() if ds.report is not None and ds.report.dropped else None
    if cleaning is not None:
        warnings.warn(
            f"{ds_name}: cleaning dropped data before the benchmark: {dropped_words(cleaning)}",
            UserWarning,
            stacklevel=2,
        )
    in_memory = False  # data no CLI option names: the command says so
    if data_args is None and isinstance(dataset, Dataset):
        from metarec.data.registry import known_names
        from metarec.data.spec import spec_flags

        # a Dataset from Python: "--dataset books" named no data the CLI could find
        data_args = spec_flags(ds.spec, ds.rating_range)
        in_memory = data_args is None and not (ds.spec is None and ds_name in known_names())
    like = (
        inferred_threshold_said(
            ds.interactions["rating"],
            ds.rating_range,
            ds_name,
            "--like-threshold X, or like_threshold=",
        )
        if like_threshold is None
        else float(like_threshold)
    )
    check_like_threshold(like, ds.rating_range, "like_threshold")
    untimed = protocol == "p2" and not has_timestamps(ds.interactions)
    if untimed:
        # P2's support is a user's first K ratings by time; without times it is K drawn
        # at random (seeded), which the report then says, and so does this warning
        warnings.warn(
            f"{ds_name}: no timestamps, so each test user's support is K of their ratings "
            "drawn at random (seeded), not their first K by time (one time for every "
            "rating counts as none)",
            UserWarning,
            stacklevel=2,
        )
    if folds > 1 and ds.n_users < 10 * folds:
        # a fold of a user or two measures nothing, and the run would fit every model
        # `folds` times for it
        raise ConfigError(
            f"folds: {folds} folds of {ds.n_users:,} users leave fewer than 10 a fold; "
            f"use at most {max(ds.n_users // 10, 1)}"
        )
    if protocol == "p1" and ds.rating_range[0] == ds.rating_range[1]:
        raise ConfigError(
            f"{ds_name}: every rating is {ds.rating_range[0]:g} (implicit feedback); P1 predicts "
            "ratings, so use protocol P2"
        )
    blind = blind_peers(ds, peers)
    for peer, why in blind.items():
        warnings.warn(
            f"{ds_name}: peer {peer} "
            + ("kept as named, but " if peers_named else "left out of the default peers: ")
            + why,
            UserWarning,
            stacklevel=2,
        )
    if not peers_named:
        peers = [p for p in peers if p not in blind]
    blind_record = {p: {"why": why, "left_out": not peers_named} for p, why in blind.items()}
    no_abtest = _why_no_abtest(protocol, peers, shots)
    # Every split read (and so checked) or drawn here, before the run store discards
    # what an interrupted run of another command kept: a refused --splits file, or data
    # too small to split, cost that run's progress when found inside the session.
    n_folds = folds if folds > 1 else None
    split_folder = Path(splits) if splits is not None else None
    drawn = [
        (
            f,
            _split(
                protocol,
                ds,
                seed=seed,
                fold=f,
                n_folds=n_folds,
                splits=split_folder,
                stem=splits_stem,
            ),
        )
        for f in fold_ids
    ]  # user lists only: each fold's frames are made again in its turn
    if protocol == "p1":
        from metarec.evaluation.p1 import check_p1_groups

        for _, split in drawn:  # users too few for P1 failed as 'no training interactions'
            check_p1_groups(
                split, ds.n_users, ds_name, "; P2 (--protocol p2) takes users with 25 or more"
            )
    split_digests: list[str] | None = None
    if split_folder is not None:
        from metarec.evaluation.splits import check_partition

        if folds > 1:
            check_partition(protocol, ds, split_folder, [s for _, s in drawn], splits_stem)
        split_digests = [s.digest() for _, s in drawn]
    if protocol == "p2":
        _check_shots(ds, shots, drawn)
        _check_validation_users(
            protocol,
            drawn,
            lambda f: (
                str(split_path(protocol, splits_stem, split_folder, f))
                if split_folder is not None and splits_stem is not None
                else f"{ds_name}: the P2 split" + (f" of fold {f}" if f is not None else "")
            ),
        )
    _check_split_files(out, protocol, stem, drawn, ds)
    del drawn
    name = (
        f"{protocol}-{stem}"
        + (f"-{folds}fold" if folds > 1 else "")
        + (f"-seeds{seeds}" if seeds > 1 else "")  # beside the single-seed results, not over them
    )
    from metarec.evaluation.report import plot_paths
    from metarec.evaluation.splits import split_file_name

    _check_outputs(out, [
        out / f"{name}.json", out / f"{name}.md", out / f"{name}-per-user.json",
        *(plot_paths(protocol, out / name) if plots else []),
        *(out / split_file_name(protocol, stem, f) for f in fold_ids),
    ])  # fmt: skip
    if no_abtest:  # the report and its -abtest.png were simply missing, without a word
        warnings.warn(f"{ds_name}: no offline A/B test: {no_abtest}", UserWarning, stacklevel=2)
    out.mkdir(parents=True, exist_ok=True)  # only once every option and file checked out
    # what an interrupted run of this same command finished: folds, and models within one
    store = RunStore(out, name, _run_key(
        protocol, ds, seed=seed, folds=folds, algorithms=algorithms, peers=peers,
        overrides=overrides, shots=shots, seeds=seeds, splits=split_digests, like=like,
        max_items=max_items, max_episodes=max_episodes, models=own_key,
        # the weights, where known before encoding: a model folder retrained under the same
        # --set encoder=PATH is another run (a TF-IDF fit follows from the data, hashed above)
        # (a hub model not yet downloaded names no revision until it loads: no key then)
        encoder=None if needs_fit(encoder) or weights_unknown(encoder.id) else encoder.id,
    ))  # fmt: skip
    fitting: int | None = None  # the fold a warning concerns, named in the record
    # one run at a time per report: another would take over this one's kept progress
    with (
        exclusive(out / name, "wait for it to finish, or give another out folder (--out)"),
        store.session(resume=resume, started=t0) as finished,
        _noting_warnings(store.warned, lambda: fitting),
    ):
        catalogue = encode_catalogue(ds.items, encoder, progress=progress)
        encode_s = time.perf_counter() - t0
        runs = []
        for position, fold in enumerate(fold_ids):
            fitting = fold
            if fold in finished:
                log(f"fold {fold}: kept from an earlier, stopped run of this command; not refitted")
                runs.append(finished[fold])
                continue
            log(
                f"fold {fold if fold is not None else '-'}: splitting and fitting "
                f"{len(peers)} peers and {len(algorithms)} metarec algorithms"
            )
            with _fold_scope():
                runs.append(
                    _fold_run(
                        protocol,
                        ds,
                        catalogue,
                        seed=seed,
                        fold=fold,
                        n_folds=n_folds,
                        algorithms=algorithms,
                        peers=peers,
                        overrides=overrides,
                        shots=shots,
                        seeds=seeds,
                        splits=split_folder,
                        splits_stem=splits_stem,
                        split_digest=None if split_digests is None else split_digests[position],
                        progress=progress,
                        log=log,
                        like_threshold=like,
                        max_items=max_items,
                        max_episodes=max_episodes,
                        store=store,
                        own=own,
                    )
                )
            if fold is not None:
                store.save(fold, runs[-1])
        fitting = None  # what follows is the pooled folds'
        pooled = _pool(runs)
        headline = P1_HEADLINE if protocol == "p1" else P2_HEADLINE
        sig: dict[str, Any] = {}
        cis: dict[str, Any] = {}
        reference: dict[str, str] = {}
        chosen_from: dict[str, int] = {}
        excluded: dict[str, list[str]] = {}
        weights = [r["ensemble_weights"] for r in runs]
        for group, by_model in pooled["summary"].items():
            metric, lower = headline[0]
            if ENSEMBLE in by_model and peer_alone(weights, protocol, group):
                excluded[group] = [ENSEMBLE]
            eligible = {m: v for m, v in by_model.items() if m not in excluded.get(group, ())}
            # the reference is the best on these same users, so its tests account for
            # the choice (compare_to_peers)
            reference[group] = best_metarec(eligible, metric, lower)
            chosen_from[group] = len(metarec_candidates(eligible, metric))
            tested = is_tested(protocol, group)
            sig[group] = significance(
                pooled["per_user"][group], reference[group], headline, seed, chosen_from[group]
            ) if tested else {}  # fmt: skip
            cis[group] = confidence_intervals(
                pooled["per_user"][group], [m for m, _ in headline], seed
            )
        _warn_few_users(protocol, pooled["n_users"])
        record = {
            "protocol": protocol,
            "dataset": ds_name,
            "rating_range": list(ds.rating_range),
            "like_threshold": like,
            "seed": seed,
            "seeds": seeds,
            "max_items": max_items,
            "max_episodes": max_episodes,
            "folds": folds,
            "split_rule": runs[0]["split_rule"],
            **({"user_rule": runs[0]["user_rule"]} if "user_rule" in runs[0] else {}),
            "n_users": pooled["n_users"],
            **(
                {
                    "n_scored": _n_scored(pooled["per_user"]),
                    "support_order": "random" if untimed else "time",
                }
                if protocol == "p2"
                else {}
            ),
            "summary": pooled["summary"],
            "std": pooled["std"],
            "ci95": cis,
            "reference": reference,
            "reference_chosen_from": chosen_from,
            "reference_excluded": excluded,
            "significance": sig,
            "ensemble_weights": weights,
            "abtest": runs[0].get("abtest"),
            "per_fold": [r["summary"] for r in runs] if folds > 1 else None,
            "configs": runs[0]["configs"],
            # the encoder by its weights: a model folder's path alone ("encoder=../m1")
            # could be retrained under the same command
            "encoder_id": encoder.id,
            "overrides": list(overrides),
            "timings": {
                "load_and_encode_s": encode_s,
                "fit_s": [r["timings"] for r in runs],
                # every session of a resumed run, not only the last
                "total_s": store.earlier_s + time.perf_counter() - t0,
            },
            "split_files": [r["split_file"] for r in runs],
            **({"blind_peers": blind_record} if blind_record else {}),
            **({"cleaning": cleaning} if cleaning else {}),
            **({"abtest_not_run": no_abtest} if no_abtest else {}),
            **({"warnings": list(store.warned)} if store.warned else {}),
            "machine": machine_info(),
            "command": command
            or _command(
                protocol,
                ds_name,
                seed,
                folds,
                algorithms,
                command_peers,
                shots,
                seeds,
                root,
                splits,
                overrides=overrides,
                like_threshold=None if like_threshold is None else float(like_threshold),
                data_args=data_args,
                max_items=max_items,
                max_episodes=max_episodes,
                own=list(own),
                model_args=model_args,
                in_memory=in_memory,
                # named and blind: without --peers a rerun would leave the blind out
                peers_named=peers_named and bool(blind),
            ),
        }
        if own_key:
            # which code and settings gave the own models' rows: the command alone
            # reruns whatever mymodels.py holds by then, from whichever folder
            record["own_models"] = [{**key, "folder": str(Path.cwd())} for key in own_key]
        _check_summary(protocol, record["summary"], shots)
        # the report rendered whole before any file is written, the split files with it
        # (so they always match; see _fold_run), and the record last
        splits_out = {out / run["split_file"]: json_bytes(run["split"]) for run in runs}
        splits_out[out / f"{name}-per-user.json"] = per_user_bytes(
            pooled["per_user"], [m for m, _ in headline]
        )
        write_report(record, out / name, plots=plots, save_record=True, extra=splits_out)
        store.clear()
        # said even when quiet: without it a quiet run ends without saying where it wrote
        print(
            f"[{protocol} {ds_name}] wrote {out / name}.json, -per-user.json, .md"
            + (", .png" if plots else "")
        )
        return record

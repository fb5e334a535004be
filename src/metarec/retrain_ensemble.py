"""``metarec retrain`` of an ensemble: the feedback loop where the served model is a blend.

A single run's retrain (:mod:`metarec.retrain`) trains one model again on the data plus
the store's feedback and judges it against the old on held-out users. An ensemble is
retrained the same way as a whole: every member, metarec runs and peers alike, is fitted
afresh on the data and the feedback (each metarec member with its own config, under its
own max_train_users, the peers with their own options on every training row), and the
weights are learned again on one draw of validation users, none of whom any member
trained on. The new ensemble is judged against the old on the held-out users, and
written only if it is not worse.

Why not retrain each member run and blend them (``metarec ensemble``)? A retrained run
trained partly on the store's feedback, which no data file holds, so the blend could not
rebuild the rows its peers and weights need; here they are at hand.

The held-out users: the users ``heldout.json`` lists for an ensemble retrained before;
else those of the ensemble's first run (its P1 new users, read from the run folder's
``split.json``, which must still be the split that run was trained with; or, for a run
trained with ``--holdout none``, its early-stopping users, on whom the old ensemble's
weights were also learned, which favours it, as for a single run).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec.errors import ConfigError, ModelError
from metarec.models.base import ScoringModel, TrainingData
from metarec.models.meta_model import MetaModel
from metarec.models.persist import staged_folder
from metarec.retrain import (
    HELD_OUT_FILE,
    MEMBER,
    UNRECORDED_USERS,
    RetrainResult,
    _add_missing_items,
    capped,
    early_stopping_users,
    encoded_catalogue,
    judged,
    judged_rows,
    p1_new_users,
    read_held_out,
    read_inputs,
    records_its_users,
    retrain_checkpoint,
    retrained_config,
    training_rows,
    users_record,
    write_verdict,
)


def retrain_ensemble(
    run: Path,
    db_url: str,
    out: Path,
    *,
    spec: dict[str, Any] | None,
    overrides: Sequence[str],
    tolerance: float,
    force: bool,
    progress: bool,
    cache_dir: str | Path | None,
    t0: float,
) -> RetrainResult:
    """:func:`metarec.retrain.retrain` of the ensemble folder ``run`` (called from it,
    under its lock on ``out``)."""
    from metarec.data.spec import ADDED_ITEMS
    from metarec.ensemble_run import EnsembleRecommender
    from metarec.models.ensemble import Ensemble

    old = EnsembleRecommender.load(run)
    ens = old.ensemble
    configs = {
        name: retrained_config(m.recommender.cfg, overrides, m.recommender.encoder_config)
        for name, m in ens.members.items()
        if isinstance(m, MetaModel) and m.recommender is not None
    }
    seeded = [o for o in overrides if str(o).split("=", 1)[0].strip() == "seed"]
    if seeded and len(configs) > 1:
        # every member would be trained with it: the seeds of a seed bag, one model
        raise ConfigError(
            f"--set {seeded[0]}: an ensemble's metarec members keep their own seeds "
            f"({', '.join(configs)}); one seed for all would make them one model"
        )
    got = read_inputs(run, old, spec, db_url, force)
    from metarec.evaluation.blind_peers import blind_peers

    # as `metarec ensemble` refuses it: a peer scoring every item alike gets weight
    blind = blind_peers(got.ds, [n for n in ens.members if n not in configs])
    for peer, why in blind.items():
        said = f"peer {peer} cannot tell one item from another here: {why}"
        if not force:
            raise ConfigError(f"{said}; rebuild the ensemble without it, or force=True")
        warnings.warn(said, UserWarning, stacklevel=3)
    held, held_rule = _held_out_users(run, got.ds, old)
    inter = got.ds.interactions.assign(user_id=got.ds.interactions["user_id"].astype(str))
    evaluation = judged_rows(inter, held, held_rule, force)
    # one validation draw for every member, so that the weights are learned on users
    # none of them trained on; each metarec member trains under its own
    # max_train_users (every feedback user kept), the peers on all the training rows
    train, validation = training_rows(inter, held, got.feedback, ens.seed, None)
    catalogue = encoded_catalogue(old, got.items, cache_dir, progress)
    grown = _add_missing_items(old, catalogue)
    metadata = {
        "dataset": got.ds.name,
        "data_spec": got.spec,
        "holdout": "retrain",  # `metarec ensemble` and retrain refuse a member alone
        "retrained_from": str(run),
        "feedback_ratings": len(got.feedback),
        ADDED_ITEMS: got.added,
    }
    members: dict[str, ScoringModel] = {}
    # one folder a member, by its place (as members/{i} saves it): names made safe
    # for a path collided ("fomaml-run" and "fomaml-run+")
    checkpoints = retrain_checkpoint(out)
    resumed: dict[str, int] = {}
    for place, (name, m) in enumerate(ens.members.items()):
        if name in configs:
            cfg = configs[name]
            member = MetaModel(
                cfg,
                name=name,
                progress=progress,
                metadata={**metadata, MEMBER: True},
                checkpoint_dir=checkpoints / str(place),
            )
            member.fit(
                TrainingData(
                    capped(train, got.feedback, cfg.max_train_users, cfg.seed),
                    catalogue,
                    got.users,
                    validation,
                    old.rating_range,
                    ens.seed,
                )
            )
            members[name] = member
            after = getattr(member.history, "resumed_from", None)
            if after:
                resumed[name] = int(after)
        else:
            members[name] = _unfitted(name, m, ens.seed)
    data = TrainingData(train, catalogue, got.users, validation, old.rating_range, ens.seed)
    for name in members:
        if name not in configs:
            members[name].fit(data)
    new_ens = Ensemble(
        members,
        mode=ens.mode,
        buckets=ens.buckets,
        name=ens.name,
        seed=ens.seed,
        fit_members=False,
        grid_step=ens.grid_step,
        samples=ens.samples,
        query_size=ens.query_size,
        k=ens.k,
        learn_weights=ens.learn_weights,
        like_threshold=getattr(ens, "like_given", None),
        min_bucket_users=ens.min_bucket_users,
    )
    new_ens.fit(data)  # the weights, on the validation users
    new_ens.metadata = {
        "runs": [],  # its members are its own, trained here: no run folder holds them
        "peers": [n for n in members if n not in configs],
        **metadata,
    }
    new = EnsembleRecommender(new_ens)
    epochs = {
        name: int(getattr(m.history, "best_epoch", 0))
        for name, m in members.items()
        if isinstance(m, MetaModel) and getattr(m, "history", None) is not None
    }
    result = judged(
        old, new, evaluation, got, seed=ens.seed, held_rule=held_rule, grown=grown,
        tolerance=tolerance, force=force, out=out, t0=t0,
        # the smallest: a member that learned nothing is what the CLI warns of
        best_epoch=min(epochs.values()) if epochs else None, best_epochs=epochs,
    )  # fmt: skip
    if result.written:
        from metarec.trained_users import save_trained_users

        trained, record = users_record(train, validation, held, held_rule)
        # staged and moved into place whole, as a run's retrain is: an ensemble without
        # its heldout.json would be judged on other users at the next round
        with staged_folder(out) as folder:
            new_ens.save(folder)
            save_trained_users(folder, trained)
            write_verdict(folder, result, run, record)
        shutil.rmtree(checkpoints, ignore_errors=True)  # written: nothing left to resume
    result.details["resumed_from"] = resumed or None
    return result


def _unfitted(name: str, model: ScoringModel, seed: int) -> ScoringModel:
    """A fresh, unfitted peer of ``model``'s kind and options (as the ensemble saved it)."""
    from metarec.models.persist import RANKERS, _peer_state, make_ranker
    from metarec.peers import make_peer

    kind, options, _, _ = _peer_state(name, model)
    if kind in RANKERS:
        # the seed and name are the ensemble's, as fit_from_runs gives them
        return make_ranker(kind, seed=seed, name=name, **options)
    return make_peer(kind, seed=seed, **options)


def _held_out_users(run: Path, ds: Any, old: Any) -> tuple[set[str], str]:
    """The users neither the old ensemble nor the new one trains or weighs on (see the
    module notes), and how they were chosen: decided by how its first run trained, as
    that run's model in the ensemble records it, whatever its folder holds now."""
    if (run / HELD_OUT_FILE).exists():
        return read_held_out(run)
    if old.metadata.get("holdout") == "retrain":
        raise ModelError(
            f"{run / HELD_OUT_FILE}: missing; a retrained ensemble is judged on the users "
            "its retrain held out, which that file lists (restore it)"
        )
    primary = old.primary
    digest = primary.metadata.get("split_digest")
    if digest is not None or primary.metadata.get("holdout") == "p1":
        # its P1 new users: the weights were learned on the split's validation users
        runs = old.metadata.get("runs")
        first = Path(str(runs[0])) if isinstance(runs, list) and runs else None
        split_file = None if first is None else first / "split.json"
        if split_file is None or not split_file.is_file():
            raise ConfigError(
                f"{run}: its first run was trained on a P1 split, and the ensemble is judged "
                f"on that split's new users; {split_file or 'the run folder'} is not there "
                "(the ensemble records the runs it was built from in ensemble.json)"
            )
        return p1_new_users(split_file, ds, digest)
    if not records_its_users(primary.metadata):  # an ensemble fitted in Python
        return set(), UNRECORDED_USERS
    # drawn from the data by the seed and share the first run recorded: no folder needed
    held = early_stopping_users(ds, primary, run / "ensemble.json")
    if not held:
        return set(), "none: the ensemble's runs were trained on every user"
    return held, "the early-stopping users of its runs"

"""Retrain a served run on its original data plus the feedback the service logged.

``metarec retrain RUN --db URL --out NEW_RUN``:

1. loads RUN (its config, encoder and the data it was trained on, unless
   other data is given) and every event in the feedback store, mapped to
   ratings exactly as the service maps them for adaptation
   (:mod:`metarec.service.feedback`; the latest event per user and item wins);
2. holds out users the old model never trained on — those a retrained RUN
   records in ``heldout.json``, else the P1 split's new users when RUN has
   ``split.json``, else a seeded 10 % of the data's users — and keeps them out
   of the new model's training too (the new run records them in its own
   ``heldout.json``, so the next round is judged on the same unseen users);
3. meta-trains a new model with RUN's config (``--set`` overrides) on the
   remaining users plus every feedback user (items added through the API
   join the catalogue with the text the service encodes them from);
4. compares old and new by per-user MAE on the held-out users' query sets
   (P1-style tasks: 10 query ratings per user, the rest support);
5. writes NEW_RUN only when the new model is not worse (``new <= old +
   tolerance``), unless forced.

An ensemble folder as RUN is retrained as a whole by :mod:`metarec.retrain_ensemble`,
with the steps here that read the data and the store, choose the rows and judge.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from metarec.config import VALIDATION_FRACTION, TrainConfig
from metarec.data.features import user_rows
from metarec.data.tasks import Task
from metarec.data.text import ItemTextConfig
from metarec.errors import ConfigError, ModelError
from metarec.models.persist import staged_folder
from metarec.recommender import Recommender
from metarec.values import counted

if TYPE_CHECKING:
    from metarec.catalogue import Catalogue
    from metarec.service.store import FeedbackStore

FEEDBACK_PREFIX = "feedback:"  # keeps service user ids apart from the dataset's
# the release rule on one-level (implicit) data ranks the catalogue: its depth, and how
# many held-out users are scored over the whole catalogue at once
CATALOGUE_K = 10
CATALOGUE_BATCH = 256


@dataclass
class RetrainResult:
    old_mae: float
    new_mae: float
    n_eval_users: int
    n_feedback_users: int
    n_feedback_ratings: int
    accepted: bool
    written: bool
    out: Path
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    # what old_mae/new_mae hold, a loss either way: "MAE" for a rating run, for an
    # implicit objective, whose scores are not ratings, "1 - nDCG@3", and on one-level
    # data (clicks) CATALOGUE_METRIC (see gate_metric)
    metric: str = "MAE"

    def summary(self) -> str:
        dropped = int(self.details.get("feedback_items_dropped", 0))
        kept = int(self.details.get("run_items_kept", 0))
        clipped = int(self.details.get("feedback_ratings_clipped", 0))
        scale = self.details.get("rating_range")
        from metarec.evaluation.p1 import MIN_STATE_RATINGS

        return (
            f"held-out users: {self.n_eval_users}"
            + (
                f" (none has the {MIN_STATE_RATINGS} ratings a comparison needs)"
                if not self.n_eval_users
                else ""
            )
            + f"; {self.metric} old {self.written_maes()[0]}, "
            f"new {self.written_maes()[1]} ({self.verdict()}); feedback: "
            f"{counted(self.n_feedback_ratings, 'rating')} from "
            f"{counted(self.n_feedback_users, 'user')}"
            + (f" ({dropped} for items outside the catalogue left out)" if dropped else "")
            + (
                f"; {kept} items the run holds beyond the data's items file (added in "
                "Python or through the service) kept in its catalogue"
                if kept
                else ""
            )
            # silent, 6 to 10 became 5: a store written for a run on another scale
            + (
                f" ({clipped} outside the run's scale {scale} clipped to it: a store written "
                "for a run on another scale?)"
                if clipped
                else ""
            )
        )

    def written_maes(self) -> tuple[str, str]:
        """The old and new figures with four decimals, or as many more as they need to
        differ: "old 1.1445, new 1.1445 (worse)" read as a tie the rule had refused."""
        old, new = self.old_mae, self.new_mae
        for places in range(4, 13):
            if f"{old:.{places}f}" != f"{new:.{places}f}":
                return f"{old:.{places}f}", f"{new:.{places}f}"
        if old != new:  # closer still: every digit a float has (repr's shortest form)
            return repr(float(old)), repr(float(new))
        return f"{old:.4f}", f"{new:.4f}"

    def verdict(self) -> str:
        """In words: a negative tolerance asks for a gain, so a model that is better but
        not by that much is "not better by N", not "worse"."""
        tolerance = float(self.details.get("tolerance", 0.0))
        if self.accepted:
            return "not worse" if tolerance >= 0 else f"better by at least {-tolerance:g}"
        if not (np.isfinite(self.old_mae) and np.isfinite(self.new_mae)):
            return "not comparable"
        if self.new_mae == self.old_mae:  # "better" read oddly beside two equal figures
            return f"equal, not better by {-tolerance:g}"
        if self.new_mae < self.old_mae:
            return f"better, but not by {-tolerance:g}"
        return "worse" if tolerance <= 0 else f"worse by more than {tolerance:g}"


def not_worse(old_mae: float, new_mae: float, tolerance: float = 0.0) -> bool:
    """The release rule: the new model may lose at most ``tolerance`` MAE (negative: it
    must gain at least that much). NaN never passes."""
    return bool(np.isfinite(new_mae) and np.isfinite(old_mae) and new_mae <= old_mae + tolerance)


def on_levels(feedback: pd.DataFrame, ratings: np.ndarray) -> pd.DataFrame:
    """Feedback ratings moved to the nearest level of the data's scale: a click stands
    for 7.75 on 1-10, and as a rating of its own it would become a scale level the
    retrained model's median cuts predict (levels 3.25, 5.5, 7.75 among 1 to 10)."""
    from metarec.models.cutpoints import rating_levels

    levels = rating_levels(ratings)
    if levels is None or feedback.empty:  # a continuous scale has no levels to keep
        return feedback
    lv = np.asarray(levels)
    nearest = np.abs(feedback["rating"].to_numpy(dtype=np.float64)[:, None] - lv).argmin(axis=1)
    return feedback.assign(rating=lv[nearest])


def feedback_frame(
    store: Any,
    rating_range: tuple[float, float],
    known_items: set[str],
    *,
    negatives: bool = True,
    upto: int | None = None,
) -> tuple[pd.DataFrame, int]:
    """Ratings from the store's events (user_id prefixed; ``upto``: only events stored
    up to that row id), and how many were dropped because their item is not in the
    catalogue. A rating off ``rating_range`` (a store written for a run of another
    scale: the service checked each against the run it served) is clipped to it, as
    the service reads it; the frame's ``attrs["clipped"]`` counts them."""
    from metarec.service.feedback import history_from_events

    rows: list[tuple[str, str, float, float]] = []
    dropped = clipped = 0
    current: str | None = None
    pending: list[Any] = []

    def flush() -> None:
        nonlocal dropped, clipped
        if current is None:
            return
        latest_ts = {ev.item_id: ev.timestamp for ev in pending}
        lo, hi = rating_range
        history = history_from_events(pending, rating_range, negatives=negatives)
        for item, rating in history.items():
            if rating is None:  # a dislike no rating expresses (see metarec.service.feedback)
                continue
            if item not in known_items:
                dropped += 1
                continue
            clipped += not lo <= rating <= hi
            rows.append(
                (FEEDBACK_PREFIX + current, item, min(max(rating, lo), hi), latest_ts[item])
            )

    for user_id, ev in store.iter_all_events(upto):
        if user_id != current:
            flush()
            current, pending = user_id, []
        pending.append(ev)
    flush()
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame["rating"] = frame["rating"].astype(np.float32)
    frame.attrs["clipped"] = clipped
    return frame, dropped


def _warn_if_served_another(
    store: FeedbackStore, run: Path, scale: tuple[float, float] | None = None, force: bool = False
) -> None:
    """Warn where the store records serving another run than ``run``: its added items
    and feedback are of that run's catalogue, and an item id both share is taken as an
    update of this run's item (a store of an ml-1m service retrained an ml-100k run,
    rewriting Toy Story's text, without a word). A warning, not a refusal: retraining
    an older run of the same service from its store is a use."""
    from metarec.service.serving import ServedRef, recorded_scale

    ref = ServedRef.parse(store.served_state()[1])
    if ref is None:
        return
    here = run.resolve()
    if here not in (Path(ref.folder).resolve(), Path(ref.run).resolve()):
        warnings.warn(
            f"database {store.url}: it records serving {ref.run} (folder {ref.folder}), "
            f"not {run}; its added items and feedback are that run's, and an item id both "
            "hold is read as an update of this run's item",
            UserWarning,
            stacklevel=4,
        )
    # every scale the store served with feedback on it, not only the last run's: a 1-5
    # run served, then a 1-10 one, left 1-5 ratings read as 1-10 ones. A ref recorded
    # before the scales were kept: the folder the server loaded, not the path it was
    # given (a link moved since may name this very run, on the folder's scale)
    ours = None if scale is None else (float(scale[0]), float(scale[1]))
    served = next((s for s in ref.scales if s != ours), None)
    if not ref.scales and Path(ref.folder).resolve() != here:
        served = recorded_scale(ref.folder)
    if ours is not None and served is not None and served != ours:
        # a click run's "chose it" (1) read as the worst rating of a 1-10 run; values
        # past the scale are clipped with a warning, but these are on it
        lo, hi = served
        given_to = ref.folder if not ref.scales else "a run it served"
        message = (
            f"database {store.url}: its feedback was given to {given_to}, on ratings "
            f"[{lo:g}, {hi:g}], and would be read as ratings of {run} on "
            f"[{ours[0]:g}, {ours[1]:g}]"
        )
        # where the store records each scale it served, no run retrains on it cleanly:
        # "retrain the run it served" named this very run when it was served last
        remedy = (
            "retrain the run it served"
            if not ref.scales
            else "its feedback is on more than one scale; use a store that served runs "
            f"on [{ours[0]:g}, {ours[1]:g}] alone"
        )
        if not force:
            raise ConfigError(f"{message}; {remedy}, or force=True")
        warnings.warn(message, UserWarning, stacklevel=4)


def combined_items(
    base: pd.DataFrame,
    added: list[dict[str, Any]],
    store: str = "the store",
    layout: ItemTextConfig | None = None,
) -> pd.DataFrame:
    """The dataset's items with API-added items appended and API-updated ones replaced
    in place (catalogue order of existing items is kept). ``store``: the database the
    added items come from, named where one of them cannot be encoded; ``layout``: the
    data's text layout, which the added items' text follows."""
    from metarec.pipeline import ensure_text
    from metarec.service.items import item_frame, unusable
    from metarec.service.store import DamagedStoreError

    items = ensure_text(base).reset_index(drop=True)[["item_id", "title", "text"]].astype(str)
    if not added:
        return items
    extra = item_frame(added, items["text"], layout)[["item_id", "title", "text"]]
    # the service stores no such item; one written by hand was blamed on a row of the
    # data's items file ("items: row 1682 (item_id 'new1') has no text to encode")
    bad = unusable(extra)
    if bad:
        item_id, why = next(iter(bad.items()))
        raise DamagedStoreError(
            f"database {store}: item {item_id!r}: {why} (damaged or edited by hand?)"
        )
    pos = {item: i for i, item in enumerate(items["item_id"])}
    known = extra["item_id"].isin(pos).to_numpy()
    for _, row in extra[known].iterrows():
        items.loc[pos[row["item_id"]], ["title", "text"]] = [row["title"], row["text"]]
    return pd.concat([items, extra[~known]], ignore_index=True)


def run_only_items(
    data_items: pd.DataFrame, run_items: pd.DataFrame, added: set[str] | None
) -> pd.DataFrame:
    """The run's items that the data's items file lacks and that the run records as
    ``added`` after training (``item_id``, ``title``, ``text``), in the run's order:
    those added in Python (``add_items``, then ``save``), which are kept in the run
    alone. Rebuilt from the data and the store only, the new run lost them, and dropped
    the feedback on them as "for items outside the catalogue". An item trained on but
    since removed from the data stays removed. ``added`` None (a run saved before they
    were recorded): every item beyond the data, as such runs were retrained before."""
    known = set(data_items["item_id"].astype(str))
    extra = run_items[["item_id", "title", "text"]].astype(str)
    keep = ~extra["item_id"].isin(known)
    if added is not None:
        keep &= extra["item_id"].isin(added)
    return extra[keep].reset_index(drop=True)


def with_runs_encoder(
    cfg: TrainConfig, recorded: str, encoder_config: dict[str, Any]
) -> TrainConfig:
    """``cfg`` (the run's config with the retrain's overrides) naming the encoder the
    run's vectors came from, or a ConfigError where the overrides name another:
    ``recorded`` is the run's config's encoder, ``encoder_config`` its saved encoder."""
    from metarec.encoders.base import folder_named

    named = folder_named(cfg.encoder) if cfg.encoder != recorded else None
    saved_folder = encoder_config.get("model")
    if named is not None and named == saved_folder:
        # the run's folder written another way (in full, where it saved ./my-model)
        cfg = replace(cfg, encoder=recorded)
    if (
        cfg.encoder == recorded
        and isinstance(saved_folder, str)
        and Path(saved_folder).is_absolute()
    ):
        # the folder the run's vectors came from: a run saved before folders were
        # recorded absolute says ./my-model, which read from here may be another one
        return replace(cfg, encoder=saved_folder)
    if cfg.encoder != recorded:
        # the items are encoded by the run's own encoder (fitted state and all); another
        # was recorded in the new run's config while its vectors came from the old one
        raise ConfigError(
            f"encoder: retrain keeps the run's encoder ({recorded!r}), got "
            f"{cfg.encoder!r}; train a new run to change it"
        )
    return cfg


HELD_OUT_FILE = "heldout.json"
# in the metadata of a retrained ensemble's metarec members: judged with it, never alone
MEMBER = "member_of_retrained_ensemble"


def read_held_out(folder: Path) -> tuple[set[str], str]:
    """The users a retrain held out, as its ``heldout.json`` in ``folder`` lists them,
    and the rule that chose them."""
    from metarec.io import load_json, reading

    raw = load_json(folder / HELD_OUT_FILE)
    with reading(folder / HELD_OUT_FILE, "retrain held-out users file"):
        missing = [k for k in ("users", "rule") if not isinstance(raw, dict) or k not in raw]
        if missing:  # [] said "list indices must be integers or slices, not str"
            raise TypeError(f"expected an object with users and rule; {missing[0]} missing")
        users, rule = raw["users"], str(raw["rule"])
        if not isinstance(users, list):
            raise TypeError(f"users must be a list of ids, got {type(users).__name__}")
    # not checked against trained-users.json: a run retrained from one trained on every
    # user is judged on its early-stopping users, which that file lists too
    return set(map(str, users)), rule


def _held_out_users(run: Path, ds: Any, old: Recommender) -> tuple[set[str], str]:
    """The users the old run neither fitted nor early-stopped with, and how they were
    chosen: its retrain's held-out users, its P1 split's new users, or the validation
    users it drew (its recorded share, else the CLI's 10 %)."""
    # the old run's own split seed (--split-seed, else its training seed), not a --set
    # seed of the new one: only then are these users the old model never trained on
    retrained = old.metadata.get("holdout") == "retrain"
    if old.metadata.get("holdout") == "p1" and not (run / "split.json").exists():
        # a fresh draw below was half the run's training users, judged on without a word
        raise ModelError(
            f"{run / 'split.json'}: missing; this run was trained on a P1 split and is judged "
            "on its new users, which that file lists (restore it)"
        )
    if retrained and not (run / HELD_OUT_FILE).exists() and old.metadata.get(MEMBER):
        # held-out users are the ensemble's: its members were judged as one
        raise ConfigError(
            f"{run}: a member of an ensemble retrained from {old.metadata.get('retrained_from')}"
            "; it has no held-out users of its own: retrain the ensemble (metarec retrain "
            "ENSEMBLE), or train a run"
        )
    if retrained and not (run / HELD_OUT_FILE).exists():
        # the fallbacks below drew users this run trained on, and judged the old model
        # partly on them (which favours it) without a word
        raise ModelError(
            f"{run / HELD_OUT_FILE}: missing; a retrained run is judged on the users its "
            "retrain held out, which that file lists (restore it, or retrain the run it was "
            "retrained from)"
        )
    if (run / HELD_OUT_FILE).exists():
        # a retrained run: the users its own retrain held out (and trained without)
        return read_held_out(run)
    if (run / "split.json").exists():
        return p1_new_users(run / "split.json", ds, old.metadata.get("split_digest"))
    if not records_its_users(old.metadata):
        return set(), UNRECORDED_USERS
    held = early_stopping_users(ds, old, run / "recommender.json")
    fraction = old.metadata.get("validation_fraction", VALIDATION_FRACTION)
    if not held:
        return set(), "none: the run was trained on every user (validation_fraction 0)"
    return held, f"a seeded {fraction:.0%} of users"


def p1_new_users(path: Path, ds: Any, digest: str | None) -> tuple[set[str], str]:
    """The new users of the P1 split in ``path``, which must be the split the run was
    trained with where it recorded its ``digest``."""
    from metarec.evaluation.p1 import P1Split

    # only its new users matter here, on data that may have grown since the split
    split = P1Split.load(path, ds, check_rule=False)
    if digest is not None and digest != split.digest():
        # an edited split (groups swapped) would judge the old run on its own users
        raise ModelError(
            f"{path}: no longer the split the run was trained with (the run trained "
            "again, or the file edited)"
        )
    return set(map(str, split.new_users)), "the P1 split's new users"


# how a model fitted in Python and saved is judged: not at all, unless forced
UNRECORDED_USERS = (
    "none: the model records no split of its users (fitted in Python and saved, not "
    "trained by metarec train or metarec.train), so which users it learned from is unknown"
)


def records_its_users(metadata: Mapping[str, Any]) -> bool:
    """Whether a model's metadata says how its users were drawn: what the CLI and
    :func:`metarec.train` record (runs before ``holdout`` was recorded drew the 10 %
    :func:`recorded_validation_split` takes). A model fitted in Python records none:
    the users it learned from are the caller's, and a 10 % draw judged the old model
    mostly on them, in a release gate that then favoured it."""
    return any(
        key in metadata
        for key in ("holdout", "validation_fraction", "split_seed", "dataset", "data_spec")
    )


def early_stopping_users(ds: Any, run: Any, where: Path) -> set[str]:
    """The users ``run`` drew for early stopping, as its metadata records the draw
    (``where``: the file named where the record cannot be read)."""
    from metarec.pipeline import recorded_validation_split

    try:
        _, held = recorded_validation_split(ds.interactions, run.metadata, run.cfg.seed)
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None
    return set(map(str, held["user_id"].unique()))


CATALOGUE_METRIC = f"1 - nDCG@{CATALOGUE_K} over the catalogue"


def gate_metric(rec: Any, ratings: np.ndarray | None = None) -> str:
    """The loss the release rule compares: MAE where scores are ratings; otherwise
    1 - nDCG@3 of each held-out user's query items ranked by score (gain 2^r - 1),
    as the MAE of a bce or softmax score against ratings would measure nothing.

    Where every rating is one value (clicks, plays) both measure nothing: any order of
    equal query ratings has nDCG 1, and a constant prediction has MAE 0, so an untrained
    model passed. There each held-out user's query items are found among the whole
    catalogue (but their support items), as P2 does: 1 - binary nDCG@10. One value in
    the run's rating range, or in ``ratings`` (the held-out users' own: a run fitted in
    Python on clicks may keep the default 1-5 range), says so."""
    low, high = rec.rating_range
    if low == high or (ratings is not None and len(np.unique(ratings)) == 1):
        return CATALOGUE_METRIC
    blend = getattr(rec, "ensemble", None)  # a ranking blend's scores are no ratings
    rates = blend.mode == "rating" if blend is not None else rec.cfg.objective == "rating"
    return "MAE" if rates else "1 - nDCG@3"


def _catalogue_loss(rec: Any, tasks: list[Task], rows: Any) -> float:
    """1 - mean binary nDCG@10 of the query items among the catalogue, scored in
    batches: one [users, items] matrix at a time stays small for large catalogues."""
    from metarec.evaluation.metrics import ranking_table
    from metarec.models.base import top_k

    ndcg = []
    for start in range(0, len(tasks), CATALOGUE_BATCH):
        batch = tasks[start : start + CATALOGUE_BATCH]
        part = None if rows is None else rows.iloc[start : start + CATALOGUE_BATCH]
        scores = rec.score_catalogue(batch, part)
        if not np.isfinite(scores).all():  # a diverged model: no loss, never accepted
            return float("nan")
        top = top_k(scores, CATALOGUE_K, exclude=batch)
        table = ranking_table(top, [np.unique(t.query_items) for t in batch], CATALOGUE_K)
        ndcg.append(table[f"ndcg@{CATALOGUE_K}"])
    values = np.concatenate(ndcg)
    return float(1.0 - np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _add_missing_items(old: Any, catalogue: Catalogue) -> int:
    """Give the old run the catalogue's items it lacks, scored from their text as the
    service scores an item added to it, so that both runs are judged on the same
    held-out ratings: data grown by an item a held-out user rated (the loop's normal
    course) failed after training with "unknown item". Returns how many."""
    index = old.item_index
    ids = catalogue.items["item_id"].astype(str)
    missing = np.fromiter((i not in index for i in ids), dtype=bool, count=len(ids))
    if missing.any():
        rows = catalogue.items.loc[missing, ["item_id", "title", "text"]].reset_index(drop=True)
        old.add_items(rows, vectors=catalogue.vectors[missing])
    return int(missing.sum())


def _gate_loss(
    rec: Any, frame: pd.DataFrame, users: pd.DataFrame | None, seed: int, metric: str
) -> tuple[float, int]:
    """``metric`` (:func:`gate_metric` of the old run, so both runs are judged alike)
    over the held-out users in ``frame``, and how many there were."""
    from metarec.evaluation.metrics import per_user_table, summarise
    from metarec.evaluation.p1 import state_tasks

    tasks, user_ids = state_tasks(frame, rec.item_index, seed)
    if not tasks:
        return float("nan"), 0
    rows = user_rows(users, user_ids)
    if metric == CATALOGUE_METRIC:
        return _catalogue_loss(rec, tasks, rows), len(tasks)
    preds = rec.predict_tasks(tasks, rows)
    low, high = (float(end) for end in rec.rating_range)
    try:
        trues = [t.query_ratings for t in tasks]
        # a one-value scale (clicks) has no span to map nDCG's gains onto
        table = per_user_table(preds, trues, low=low, high=high if high > low else None)
        summary = summarise(table)
    except ValueError:  # a diverged model's NaN predictions: no loss, so never accepted
        return float("nan"), len(tasks)
    loss = summary["mae"] if metric == "MAE" else 1.0 - summary["ndcg@3"]
    return loss, len(tasks)


def retrain(
    run: str | Path,
    db_url: str,
    out: str | Path,
    *,
    spec: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    tolerance: float = 0.0,
    force: bool = False,
    progress: bool = False,
    cache_dir: str | Path | None = None,
) -> RetrainResult:
    """Train, compare, and write ``out`` when the new model is not worse (or ``force``)."""
    from metarec.locks import exclusive

    t0 = time.perf_counter()
    run, out = Path(run).resolve(), Path(out).resolve()
    if out == run:
        raise ConfigError(f"out: {out} must differ from the run being retrained")
    if run in out.parents or out in run.parents:
        # a run nested in the served one (or the served one in the new): a copy or
        # removal of either takes the other along
        raise ConfigError(
            f"out: {out} is {'inside' if run in out.parents else 'around'} the run being "
            f"retrained ({run}); give a folder beside it"
        )
    if not np.isfinite(tolerance):
        raise ConfigError(f"tolerance: must be a finite MAE difference, got {tolerance}")
    # a second retrain into the same --out would pass the check below as well, and
    # overwrite this one's run without a word
    with exclusive(out, "wait for it to finish, or retrain into another folder"):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            # saving over another run would leave its split and metrics beside the new model
            raise ConfigError(f"out: {out} exists; retrain writes a new run folder")
        return _retrain(
            run, db_url, out, spec=spec, overrides=overrides, tolerance=tolerance,
            force=force, progress=progress, cache_dir=cache_dir, t0=t0,
        )  # fmt: skip


@dataclass
class RetrainInputs:
    """What a retrain trains and judges on, read from the run's data and the store."""

    ds: Any
    spec: dict[str, Any]
    data_items: pd.DataFrame  # the data's items (item_id, title, text)
    run_only: pd.DataFrame  # the run's items beyond the data's, added after training
    items: pd.DataFrame  # the catalogue: the data's, the run's and the store's items
    feedback: pd.DataFrame  # the store's ratings, on the data's levels
    dropped: int  # feedback ratings of items outside the catalogue
    users: pd.DataFrame | None  # the data's users and the feedback users' features

    @property
    def added(self) -> list[str]:
        """The run's and the service's additions, which its data does not list."""
        return sorted(set(self.items["item_id"]) - set(self.data_items["item_id"]))


def read_inputs(
    run: Path,
    old: Any,
    spec: dict[str, Any] | None,
    db_url: str,
    force: bool,
) -> RetrainInputs:
    """The data ``old`` (a run, or an ensemble) was trained on, read as it recorded it
    (``spec`` wins), and the store's items and feedback; refuses a store with no
    feedback unless ``force``."""
    from metarec.data.spec import (
        added_items,
        load_from_spec,
        recorded_item_text,
        spec_for_run,
    )
    from metarec.pipeline import ensure_text
    from metarec.service.feedback import reads_negatives
    from metarec.service.store import FeedbackStore

    spec = spec_for_run(spec, old.metadata.get("data_spec"), str(run))
    if not spec.get("rating_range"):
        # read on the run's scale, as the new run trains on it: a 9 among 1-5 stars was
        # read as a scale of 1-9, and refused after encoding as "train: row 81600", a
        # place in no file; cleaning drops it and says so (--strict: names file and line)
        spec = {**spec, "rating_range": ",".join(f"{v:g}" for v in old.rating_range)}
    ds = load_from_spec(spec)
    store = FeedbackStore(db_url, create=False)  # a mistyped --db is not "no feedback"
    try:
        _warn_if_served_another(store, run, old.rating_range, force)
        data_items = ensure_text(ds.items)[["item_id", "title", "text"]].astype(str)
        run_only = run_only_items(data_items, old.items, added_items(old.metadata))
        items = combined_items(
            pd.concat([data_items, run_only], ignore_index=True),
            store.added_items(),
            store.url,
            recorded_item_text(spec),
        )
        feedback, dropped = feedback_frame(
            store, old.rating_range, set(items["item_id"]), negatives=reads_negatives(old)
        )
        fb_features = store.all_user_features()
    finally:
        store.close()
    if feedback.empty and not force:
        # the "new" model would differ from the old only by the users it sampled
        raise ConfigError(
            "db_url: no feedback to retrain on (no stored rating of a catalogue item"
            + (f"; {dropped} for items outside it" if dropped else "")
            + "); force=True retrains anyway"
        )
    feedback = on_levels(feedback, ds.interactions["rating"].to_numpy())
    # the features of feedback users who rated something: a category only users with no
    # rating hold got an embedding row training never moved, where "unknown" is trained
    rated = set(feedback["user_id"])
    fb_features = {u: f for u, f in fb_features.items() if FEEDBACK_PREFIX + u in rated}
    users = _users_frame(ds.users, fb_features)
    return RetrainInputs(ds, spec, data_items, run_only, items, feedback, dropped, users)


def judged_rows(inter: pd.DataFrame, held: set[str], held_rule: str, force: bool) -> pd.DataFrame:
    """The held-out users' ratings, which old and new are judged on; refused, before
    any training and unless ``force``, where they cannot judge."""
    from metarec.evaluation.p1 import MIN_STATE_RATINGS, MIN_SUPPORT, QUERY_SIZE

    evaluation = inter[inter["user_id"].isin(held)]
    if not held and not force:
        raise ConfigError(
            f"held-out users ({held_rule}): there is no user neither model trains on to judge "
            "the new run against the old; force=True writes it unjudged"
        )
    if evaluation.empty and not force:
        # found only after minutes of training, as "MAE old nan, new nan"
        raise ConfigError(
            f"held-out users ({held_rule}): none of the {len(held):,} is in the data, so the "
            "new run could not be judged against the old (an edited heldout.json, or other "
            "data?); force=True writes it unjudged"
        )
    most = int(evaluation.groupby("user_id").size().max()) if len(evaluation) else 0
    if 0 < most < MIN_STATE_RATINGS and not force:
        # found only after training, as "held-out users: 0 ... not comparable"
        raise ConfigError(
            f"held-out users ({held_rule}): none of the {evaluation['user_id'].nunique():,} "
            f"has the {MIN_STATE_RATINGS} ratings a comparison needs ({MIN_SUPPORT} to "
            f"adapt on, {QUERY_SIZE} to judge; the most any has is {most}), so the new "
            "run could not be judged against the old; force=True writes it unjudged"
        )
    return evaluation


def training_rows(
    inter: pd.DataFrame,
    held: set[str],
    feedback: pd.DataFrame,
    seed: int,
    cap: int | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows: the data's users but the held-out and validation ones, and every
    feedback rating; validation rows: a seeded share of the data's other users). Where
    ``cap`` (max_train_users) limits the users, the data's users are subsampled here,
    so that every feedback user stays in training."""
    from metarec.pipeline import split_users

    rest, validation = split_users(
        inter[~inter["user_id"].isin(held)], VALIDATION_FRACTION, seed, for_training=True
    )
    train = pd.concat(
        [rest, feedback[rest.columns.intersection(feedback.columns)]], ignore_index=True
    )
    return capped(train, feedback, cap, seed), validation


def capped(train: pd.DataFrame, feedback: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """``train`` with at most ``cap`` users (max_train_users): every feedback user, and
    a seeded draw of the data's users. Drawn here, as fit_recommender's own subsample
    would drop feedback users too, while trained-users.json listed them."""
    if cap is None:
        return train
    fed = set(feedback["user_id"])
    n_feedback = len(fed)
    if n_feedback >= cap:
        # else the data set's users all went
        raise ConfigError(
            f"max_train_users {cap:,} leaves no room for the data "
            f"set's users: the store holds {n_feedback:,} feedback users, who all train; "
            f"raise it (--set max_train_users=N, more than {n_feedback:,}) or lift it "
            "(--set max_train_users=none)"
        )
    data_users = np.sort([u for u in train["user_id"].unique() if u not in fed])
    n_keep = cap - n_feedback
    if len(data_users) <= n_keep:
        return train
    keep = set(np.random.default_rng(seed).choice(data_users, n_keep, replace=False))
    return train[train["user_id"].isin(keep | fed)].reset_index(drop=True)


def encoded_catalogue(
    old: Any, items: pd.DataFrame, cache_dir: str | Path | None, progress: bool
) -> Catalogue:
    """``items`` encoded by ``old``'s encoder as it is now (warned of where it changed
    since the run), and the items ``old`` lacks added to it (see _add_missing_items)."""
    from metarec.pipeline import encode_catalogue

    run = getattr(old, "primary", old)  # an ensemble's encoder is its primary run's
    encoder = run.encoder(changed_ok=True)
    changed = run.encoder_changed
    if changed is not None:
        # every item is encoded anew below, so the new run is of one model throughout
        warnings.warn(
            f"encoder: {changed}; the new run encodes its whole catalogue with "
            "the model as it is now",
            UserWarning,
            stacklevel=3,
        )
    return encode_catalogue(items, encoder, cache_dir=cache_dir, progress=progress)


def retrained_config(
    old_cfg: TrainConfig, overrides: Sequence[str], encoder: dict[str, Any]
) -> TrainConfig:
    """The run's config with the retrain's overrides, which may change neither its
    encoder nor its objective."""
    cfg = old_cfg.with_overrides(list(overrides))
    cfg = with_runs_encoder(cfg, old_cfg.encoder, encoder)
    if cfg.objective != old_cfg.objective:
        # the gate compares old and new on one measure (MAE of ratings, or 1 - nDCG@3 of
        # a ranking): a bce model's scores judged by their MAE as ratings read 3.9 "worse"
        raise ConfigError(
            f"objective: retrain keeps the run's objective ({old_cfg.objective!r}), got "
            f"{cfg.objective!r}, as the new run is judged against the old on one measure; "
            "train a new run to change it"
        )
    return cfg


def _retrain(
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
    from metarec.data.spec import ADDED_ITEMS, spec_problem
    from metarec.models.persist import is_ensemble_dir
    from metarec.pipeline import fit_recommender

    problem = None if spec is None else spec_problem(spec)
    if problem is not None:
        # the new run records it: one it could not read back would be saved unloadable
        raise ConfigError(f"spec: {problem}")
    if is_ensemble_dir(run):
        from metarec.retrain_ensemble import retrain_ensemble

        return retrain_ensemble(
            run, db_url, out, spec=spec, overrides=overrides, tolerance=tolerance,
            force=force, progress=progress, cache_dir=cache_dir, t0=t0,
        )  # fmt: skip
    old = Recommender.load(run)
    cfg = retrained_config(old.cfg, overrides, old.encoder_config)
    got = read_inputs(run, old, spec, db_url, force)
    ds, feedback = got.ds, got.feedback
    held, held_rule = _held_out_users(run, ds, old)
    inter = ds.interactions.assign(user_id=ds.interactions["user_id"].astype(str))
    evaluation = judged_rows(inter, held, held_rule, force)
    train, validation = training_rows(inter, held, feedback, cfg.seed, cfg.max_train_users)
    users = got.users
    catalogue = encoded_catalogue(old, got.items, cache_dir, progress)
    grown = _add_missing_items(old, catalogue)
    checkpoint = retrain_checkpoint(out)
    new, history = fit_recommender(
        catalogue,
        train,
        cfg,
        users=users,
        validation=validation,
        rating_range=old.rating_range,
        progress=progress,
        checkpoint_dir=checkpoint,
        metadata={
            "dataset": ds.name,
            "data_spec": got.spec,
            "holdout": "retrain",
            "retrained_from": str(run),
            "feedback_ratings": len(feedback),
            ADDED_ITEMS: got.added,
        },
    )
    result = judged(
        old, new, evaluation, got, seed=cfg.seed, held_rule=held_rule, grown=grown,
        tolerance=tolerance, force=force, out=out, t0=t0, best_epoch=history.best_epoch,
    )  # fmt: skip
    if result.written:
        # staged and moved into place whole: a run stopped part way (before heldout.json,
        # say) would load, and the next round of the loop would judge it on other users
        with staged_folder(out) as folder:
            trained, record = users_record(train, validation, held, held_rule)
            _write_new_run(folder, new, cfg, result, run, record, trained)
        shutil.rmtree(checkpoint, ignore_errors=True)  # written: nothing left to resume
    result.details["resumed_from"] = history.resumed_from
    return result


def retrain_checkpoint(out: Path) -> Path:
    """Where a retrain into ``out`` keeps its epochs: beside ``out`` (which is written
    whole at the end, or not at all), under the same lock. A rerun of an interrupted
    retrain resumes there, and so does the ``--force`` a refusal suggests (the same
    model, written without training again); a written one removes it. The trainer's
    fingerprint holds the config and the ratings, so a rerun on grown feedback starts
    afresh rather than finishing the other data's model."""
    return out.parent / f".{out.name}.retrain-checkpoint"


def judged(
    old: Any,
    new: Any,
    evaluation: pd.DataFrame,
    got: RetrainInputs,
    *,
    seed: int,
    held_rule: str,
    grown: int,
    tolerance: float,
    force: bool,
    out: Path,
    t0: float,
    **details: Any,
) -> RetrainResult:
    """Old and new judged on the held-out users' ratings by the old one's
    :func:`gate_metric`, and the release rule's verdict; ``details``: what the
    new model's training adds to the record (its best epoch or epochs)."""
    metric = gate_metric(old, evaluation["rating"].to_numpy())
    old_loss, n_eval = _gate_loss(old, evaluation, got.users, seed, metric)
    new_loss, _ = _gate_loss(new, evaluation, got.users, seed, metric)
    accepted = not_worse(old_loss, new_loss, tolerance)
    result = RetrainResult(
        old_loss,
        new_loss,
        n_eval,
        int(got.feedback["user_id"].nunique()),
        len(got.feedback),
        accepted,
        written=accepted or force,
        out=out,
        metric=metric,
        details={
            "held_out": held_rule,
            "feedback_items_dropped": got.dropped,
            "run_items_kept": len(got.run_only),
            "items_new_to_the_run": grown,
            "feedback_ratings_clipped": int(got.feedback.attrs.get("clipped", 0)),
            "rating_range": list(old.rating_range),
            **details,
            "tolerance": tolerance,
        },
    )
    result.seconds = time.perf_counter() - t0
    return result


def users_record(
    train: pd.DataFrame, validation: pd.DataFrame, held: set[str], held_rule: str
) -> tuple[set[str], tuple[str, Collection[str]]]:
    """(the users the new model trained and early-stopped on, what keeps `abtest` from
    testing it on them; the held-out users and their rule, for heldout.json)."""
    trained = {*train["user_id"].astype(str), *validation["user_id"].astype(str)}
    record: tuple[str, Collection[str]] = (held_rule, held)
    if not held:
        # the old run held out no one (it trained on every user); the new one did, its
        # early-stopping users, as a --holdout none run is judged on: the old reason,
        # kept, refused every later retrain of it
        record = (
            f"its early-stopping users (a seeded {VALIDATION_FRACTION:.0%}), as the "
            "run it was retrained from held out none",
            set(validation["user_id"].astype(str)),
        )
    return trained, record


def _write_new_run(
    folder: Path,
    new: Recommender,
    cfg: TrainConfig,
    result: RetrainResult,
    run: Path,
    held_out: tuple[str, Collection[str]],
    trained: set[str],
) -> None:
    """The retrained run's files: the model, its config, the retrain's verdict and the
    users it was judged on, so the next round of the loop is judged on the same ones."""
    from metarec.io import save_json
    from metarec.run_folder import write_run
    from metarec.trained_users import save_trained_users

    save_trained_users(folder, trained)
    write_run(new, folder)  # under retrain's lock on --out
    save_json(folder / "config.json", cfg.to_dict())
    write_verdict(folder, result, run, held_out)


def write_verdict(
    folder: Path, result: RetrainResult, run: Path, held_out: tuple[str, Collection[str]]
) -> None:
    """``retrain.json`` (what the new model was judged on, and how it did) and
    ``heldout.json`` (the users the next round is judged on) in ``folder``."""
    from metarec.io import jsonable, save_json

    save_json(
        folder / "retrain.json",
        jsonable(
            {  # a loss that could not be measured is null, not NaN (strict JSON)
                "retrained_from": str(run),
                "metric": result.metric,  # what old_mae and new_mae hold
                "old_mae": result.old_mae,
                "new_mae": result.new_mae,
                "n_eval_users": result.n_eval_users,
                "accepted": result.accepted,
                "forced": not result.accepted,  # written all the same: --force
                "feedback_users": result.n_feedback_users,
                "feedback_ratings": result.n_feedback_ratings,
                **result.details,
            }
        ),
    )
    rule, users = held_out
    save_json(folder / HELD_OUT_FILE, {"rule": rule, "users": sorted(users)})


def _users_frame(
    users: pd.DataFrame | None, feedback: dict[str, dict[str, Any]]
) -> pd.DataFrame | None:
    """Dataset users plus feedback users (their features under the dataset's columns)."""
    if users is None:
        return None
    users = users.assign(user_id=users["user_id"].astype(str))
    cols = [c for c in users.columns if c != "user_id"]
    extra = pd.DataFrame(
        [
            {"user_id": FEEDBACK_PREFIX + u, **{c: f.get(c) for c in cols}}
            for u, f in feedback.items()
        ],
        columns=["user_id", *cols],
    )
    return pd.concat([users, extra], ignore_index=True) if len(extra) else users

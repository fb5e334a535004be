"""From a dataset to a fitted :class:`Recommender`: encode, meta-train, wrap.

``train`` is the one-call path (``mr.train(ds, cfg)``); ``encode_catalogue``
and ``fit_recommender`` are the steps it is made of, used by the evaluation
protocols to train on a split without re-encoding the catalogue.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from metarec.catalogue import Catalogue
from metarec.config import VALIDATION_FRACTION, TrainConfig
from metarec.data import cleaning
from metarec.data.columns import str_ids
from metarec.data.features import UserFeatureEncoder
from metarec.data.generic import check_rating_range
from metarec.data.schema import (
    Dataset,
    check_like_threshold,
    check_objective,
    has_timestamps,
    inferred_like_threshold,
    inferred_threshold_said,
    support_rule_for,
)
from metarec.data.spec import ADDED_ITEMS
from metarec.data.tasks import UserRatings
from metarec.device import own_random_state
from metarec.encoders import EmbeddingCache, Encoder, cached_encode, default_cache, make_encoder
from metarec.encoders.base import encoder_state_tensors, folder_named
from metarec.errors import ConfigError, DataError, DivergedError, ModelError, outside_metarec
from metarec.inputs import check_rating_frame
from metarec.io import remove_orphan_temps, save_json
from metarec.locks import exclusive
from metarec.meta.trainer import TaskSource, Trainer, TrainHistory
from metarec.models.base import check_seed
from metarec.models.bias import item_baseline
from metarec.models.cutpoints import fit_validation_cutpoints, rating_levels, warn_if_unfitted
from metarec.recommender import Recommender
from metarec.run_folder import build_learner
from metarec.trained_users import clear_for_new_model, save_trained_users
from metarec.values import is_number


def ensure_text(items: pd.DataFrame) -> pd.DataFrame:
    """``items`` with a text for every item: its own where it has one, else one built
    from its title, year and genres (:func:`~metarec.data.text.fill_item_text`)."""
    from metarec.data.text import fill_item_text, ids_for_titles

    items = items.copy()
    if "title" not in items.columns and "item_id" in items.columns:
        # as cleaning reads a frame built in memory: the id stands in for the title. It
        # was left out here, and training ended in a KeyError after its last epoch
        items = ids_for_titles(items, str_ids(items["item_id"]))
    items["text"] = fill_item_text(items)
    return items


def ready_encoder(encoder: Encoder | str, *, device: str | None = None) -> Encoder:
    """The encoder ``encoder`` names, checked to be loadable without loading it (a model
    that is neither bundled, a folder, cached nor reachable is refused at once): for
    commands to call before their data loads."""
    if not isinstance(encoder, str):
        return encoder
    built = make_encoder(encoder, device=device)
    check_source = getattr(built, "check_source", None)
    if check_source is not None:
        check_source()
    return built


def encode_catalogue(
    items: pd.DataFrame,
    encoder: Encoder | str = "minilm",
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device: str | None = None,
) -> Catalogue:
    """Encode every item's text once; vectors are cached on disk by text hash.
    ``device``: where an encoder named by ``encoder`` runs (default: CUDA when present)."""
    if not isinstance(items, pd.DataFrame):
        raise DataError(f"items: expected a DataFrame of items, got {type(items).__name__}")
    if "item_id" not in items.columns:
        raise DataError(f"items: no item_id column (columns: {list(items.columns)})")
    if not isinstance(encoder, str | Encoder) or isinstance(encoder, type):
        # a class passes the protocol check: its properties are there, unbound
        raise ConfigError(f"encoder: expected an encoder or its name, got {encoder!r:.60}")
    # the cache is an optimisation: one that cannot be written warns (EmbeddingCache),
    # but a cache_dir that is no path at all is a slip
    if cache_dir is not None and not isinstance(cache_dir, str | Path):
        raise ConfigError(f"cache_dir: expected a folder path, got {type(cache_dir).__name__}")
    twice = items.columns[items.columns.duplicated()].intersection(["item_id", "title", "text"])
    if len(twice):
        raise DataError(f"items: two columns named {twice[0]!r}; keep one")
    items = ensure_text(items).reset_index(drop=True)
    if pd.api.types.is_float_dtype(items["item_id"].dtype):
        # ids read as floats (a column with a gap): "61", as cleaning writes them, where
        # str() gave "61.0", which no rating's "61" would find
        items["item_id"] = str_ids(items["item_id"])
    ids = items["item_id"].astype(str)
    repeated = ids[ids.duplicated()]
    if len(repeated):  # the first of the copies could never be looked up
        raise DataError(f"items: item id {repeated.iloc[0]!r} appears more than once")
    blank = items["item_id"].isna() | items["text"].astype(str).str.strip().eq("")
    if blank.any():
        row = int(np.flatnonzero(blank.to_numpy())[0])
        raise DataError(
            f"items: row {row} (item_id {items['item_id'].iloc[row]!r}) has "
            + ("no item id" if pd.isna(items["item_id"].iloc[row]) else "no text to encode")
        )
    enc = make_encoder(encoder, device=device) if isinstance(encoder, str) else encoder
    cache = EmbeddingCache(cache_dir) if cache_dir else default_cache()
    vectors = cached_encode(enc, items["text"].astype(str).tolist(), cache, progress=progress)
    return Catalogue(items, vectors, enc)


@own_random_state
def fit_recommender(
    catalogue: Catalogue,
    train: pd.DataFrame,
    cfg: TrainConfig,
    *,
    users: pd.DataFrame | None = None,
    validation: pd.DataFrame | None = None,
    rating_range: tuple[float, float] = (1.0, 5.0),
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> tuple[Recommender, TrainHistory]:
    """Meta-train on ``train`` (user_id, item_id, rating[, timestamp]) rows.

    ``validation`` rows (other users) drive early stopping. Items in ``train``
    become *known* (their id embeddings are learned); every other catalogue
    item is scored from its text alone.

    Training seeds torch's generators from ``cfg.seed`` (the weights' draw, every
    epoch's dropout); the caller's random state is restored afterwards
    (:func:`~metarec.device.own_random_state`: it was left at the last epoch's seed,
    whatever the caller had set).
    """
    _check_fit_args(catalogue, cfg, users, metadata, checkpoint_dir)
    cfg.validate()
    rating_range = check_rating_range(rating_range, "rating_range")
    check_objective(cfg.objective, rating_range, "training data")
    check_rating_frame(train, rating_range, "train")
    if validation is not None:
        check_rating_frame(validation, rating_range, "validation")
    if len(train) == 0:
        raise DataError("no training interactions left (check filters and splits)")
    if cfg.episode_order == "time" and not has_timestamps(train):
        # the episodes fall back to random order: say so, as the P2 benchmark does
        warnings.warn(
            "episode_order=time: the training data has no timestamps, so each episode's "
            "support is a random draw of the user's ratings",
            UserWarning,
            stacklevel=2,
        )
    like = cfg.like_threshold
    if like is None:
        like = inferred_like_threshold(train["rating"], rating_range)
    # saved with the run as the number and the rule they became
    cfg = dataclasses.replace(
        cfg,
        like_threshold=check_like_threshold(like, rating_range, "like_threshold"),
        # a rating model builds no positives: left open, as its fingerprint was
        support_positives=(
            cfg.support_positives
            if cfg.support_positives is not None or cfg.objective == "rating"
            else support_rule_for(train["rating"], like, rating_range)
        ),
        encoder=folder_named(cfg.encoder) or cfg.encoder,  # a folder, as read from here
    )
    torch.manual_seed(cfg.seed)
    index = catalogue.index
    train_ur = UserRatings.from_frame(train, index)
    if cfg.max_train_users is not None and len(train_ur) > cfg.max_train_users:
        keep = np.random.default_rng(cfg.seed).choice(
            len(train_ur), cfg.max_train_users, replace=False
        )
        train = train[train["user_id"].isin(set(train_ur.user_ids[keep]))]
        train_ur = UserRatings.from_frame(train, index)
    _warn_of_softmax_cost(cfg, len(train_ur), len(catalogue.items))
    _check_something_unseen(cfg, train)
    features = (
        UserFeatureEncoder.fit(users)
        if users is not None and cfg.model.use_user_features
        else UserFeatureEncoder()
    )
    offset = float(train_ur.ratings.mean()) if cfg.objective == "rating" else 0.0
    learner = build_learner(torch.as_tensor(catalogue.vectors), cfg, features, offset)
    known = np.unique(train_ur.items)
    tower = learner.model.tower
    tower.id_known[torch.as_tensor(known)] = 1.0
    if cfg.objective == "rating":
        tower.base_bias.copy_(
            torch.as_tensor(item_baseline(train_ur, len(catalogue.items), offset))
        )
    else:
        # implicit objectives start from popularity (log like counts, centred on the
        # known items), as the rating model starts from the bias model: meta-training
        # then only has to learn what a user's support adds to it
        likes = np.bincount(
            train_ur.items[train_ur.ratings >= cfg.like_threshold], minlength=len(catalogue.items)
        )
        logpop = np.log1p(likes.astype(np.float64))
        logpop -= logpop[known].mean()
        tower.base_bias.copy_(torch.as_tensor(logpop, dtype=torch.float32))
    trainer = Trainer(learner, cfg, negative_pool=known, progress=progress)
    train_src = TaskSource(train_ur, features.transform(users, train_ur.user_ids))
    val_src = None
    if validation is not None and len(validation):
        val_ur = UserRatings.from_frame(validation, index)
        val_src = TaskSource(val_ur, features.transform(users, val_ur.user_ids))
    try:
        history = trainer.fit(train_src, val_src, checkpoint_dir=checkpoint_dir)
        _check_not_diverged(history, cfg, rating_range)
    except DivergedError:
        # a finished training refused: resumed, it ends the same way, and kept, every
        # command called its folder an unfinished run to resume (train, retrain, and
        # metarec.train's run_dir alike)
        if checkpoint_dir is not None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        raise
    popularity = np.bincount(train_ur.items, minlength=len(catalogue.items)).astype(np.float64)
    meta = {
        "history": history.epochs,
        "best_epoch": history.best_epoch,
        # where training ended early because it diverged (the kept epoch is before it)
        **({"diverged_at": history.diverged_at} if history.diverged_at is not None else {}),
        # none yet: recorded, so that a run of this version is not read as one saved
        # before additions were recorded (data.spec.added_items)
        ADDED_ITEMS: [],
        **(metadata or {}),
    }
    rec = Recommender(
        learner,
        catalogue.items,
        features=features,
        encoder_config=catalogue.encoder.to_config(),
        encoder_tensors=encoder_state_tensors(catalogue.encoder),
        popularity=popularity,
        rating_range=rating_range,
        metadata=meta,
    )
    if cfg.objective == "rating" and val_src is not None:
        levels = rating_levels(train_ur.ratings)
        rec.cutpoints = fit_validation_cutpoints(
            rec, val_src.ratings, users, levels=levels, seed=cfg.seed, query_size=cfg.query_size
        )
        warn_if_unfitted(rec.cutpoints, levels, "train")
    return rec, history


def _check_not_diverged(
    history: TrainHistory, cfg: TrainConfig, rating_range: tuple[float, float]
) -> None:
    """Refuse a kept model whose validation error is past the rating scale's span, worse
    than predicting any one rating of the scale: adaptation steps that blow up (inner_lr
    near its limit) leave finite weights that score -375,137 and were saved as a model,
    with an MAE that looked ordinary only because it came from the cutpoints."""
    if cfg.objective != "rating" or not math.isfinite(history.best_score):
        return  # no finite epoch at all: the trainer refuses that itself
    # without validation users the epoch was kept by its training loss, the same error
    # on the training users' queries: a first epoch at 4e24 beat the start's infinity
    judged = "validation" if any("val_loss" in row for row in history.epochs) else "training"
    span = float(rating_range[1] - rating_range[0])
    limit = span if cfg.rating_loss == "l1" else span**2
    if span > 0 and history.best_score > limit:
        what = "mean absolute error" if cfg.rating_loss == "l1" else "mean squared error"
        raise DivergedError(
            f"meta-training diverged: the best epoch's {judged} {what} is "
            f"{history.best_score:.4g}, more than any one rating of the scale "
            f"{rating_range[0]:g} to {rating_range[1]:g} would give ({limit:g}); lower "
            f"inner_lr ({cfg.inner_lr}) or outer_lr ({cfg.outer_lr})"
        )


def _check_fit_args(
    catalogue: object,
    cfg: object,
    users: object,
    metadata: object,
    checkpoint_dir: object,
) -> None:
    """:func:`fit_recommender`'s arguments, checked before the work: a metadata list or
    a checkpoint path that is a file was refused only after training."""
    if not isinstance(catalogue, Catalogue):
        raise ConfigError(
            f"catalogue: expected the Catalogue encode_catalogue returns, got "
            f"{type(catalogue).__name__}"
        )
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    if users is not None and (not isinstance(users, pd.DataFrame) or "user_id" not in users):
        raise DataError(
            f"users: expected a DataFrame with a user_id column (and features), got "
            f"{type(users).__name__}"
            + (
                f" with columns {list(users.columns)[:8]}"
                if isinstance(users, pd.DataFrame)
                else ""
            )
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise ConfigError(f"metadata: expected a dict, got {type(metadata).__name__}")
    _check_folder_arg("checkpoint_dir", checkpoint_dir)


def _check_folder_arg(name: str, folder: object) -> None:
    """None, or a path that is not a file: a folder to read or write."""
    if folder is None:
        return
    if not isinstance(folder, str | Path):
        raise ConfigError(f"{name}: expected a folder path, got {type(folder).__name__}")
    if Path(folder).is_file():
        raise ConfigError(f"{name}: {folder} is a file; a folder is needed")


def split_users(
    frame: pd.DataFrame, fraction: float, seed: int, *, for_training: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split of ``frame``'s users: (the rest, ``fraction`` of users).
    ``for_training``: the share is a training's validation users, and where it rounds
    to none that is said (not where an existing run's split is drawn again)."""
    if not is_number(fraction) or not 0 <= fraction < 1:
        raise ConfigError(f"fraction: must be a number in [0, 1), got {fraction!r:.40}")
    check_seed(seed)
    users = np.sort(frame["user_id"].unique())
    rng = np.random.default_rng(seed)
    size = round(len(users) * fraction)
    if for_training and fraction > 0 and size == 0 and len(users):
        # with none, training went on without a word, its epoch chosen by training loss
        warnings.warn(
            f"{fraction:.0%} of {len(users)} user(s) rounds to none held out for validation: "
            "early stopping is off (the epoch is chosen by training loss) and rating "
            "cutpoints are not fitted",
            UserWarning,
            stacklevel=outside_metarec(),
        )
    held = set(rng.choice(users, size=size, replace=False))
    mask = frame["user_id"].isin(held)
    return frame[~mask], frame[mask]


def recorded_validation_split(
    frame: pd.DataFrame, metadata: Mapping[str, Any], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rest, the validation users) a run without a P1 split drew from ``frame``: its
    recorded share (``metarec.train(validation_fraction=...)``; runs before it was
    recorded took the 10 % every run then took) with its split seed (--split-seed, else
    ``seed``, its training seed). Another share drew mostly the run's training users."""
    fraction = metadata.get("validation_fraction", VALIDATION_FRACTION)
    if not is_number(fraction) or not 0 <= fraction < 1:
        raise ModelError(
            f"validation_fraction {fraction!r:.40} is no share of users (damaged or edited "
            "by hand?)"
        )
    return split_users(frame, float(fraction), int(metadata.get("split_seed", seed)))


def _spec_metadata(dataset: Dataset) -> dict[str, Any]:
    """``{"data_spec": ...}``: the column options ``dataset`` was read with (what
    ``add_items`` reads), else {}. Not its files: a data set filtered in Python since
    would be read back whole by ``evaluate`` or ``retrain``, which are told the data."""
    from metarec.data.spec import PATH_KEYS, spec_problem

    spec = dataset.spec
    if spec is None or spec_problem(spec) is not None:
        return {}
    where = (*PATH_KEYS, "dataset")
    return {"data_spec": {k: None if k in where else v for k, v in spec.items()}}


# item scores an epoch past which softmax training is said to be slow: P2's epoch on
# ml-100k scores about 7 million and takes seconds; 18,000 users of a 150,000-item
# catalogue did not finish one in ten minutes
SOFTMAX_SCORES_WARNED = 10**9


def _check_something_unseen(cfg: TrainConfig, train: pd.DataFrame) -> None:
    """bce and bpr contrast a user's liked items with training items they never rated.
    Where every training user rated every one there is none: bpr has no pair to learn
    from (it stopped in a reshape's RuntimeError), and bce, where every rating is a
    like too, learned to score every item alike. (bce beside unliked ratings, such as
    impressions never clicked, still learns where each item starts: from its likes.)"""
    objective = cfg.objective
    if objective not in ("bce", "bpr"):
        return
    n_items = train["item_id"].nunique()
    if not (train.groupby("user_id")["item_id"].nunique() >= n_items).all():
        return
    threshold = cfg.like_threshold if cfg.like_threshold is not None else -np.inf
    if objective == "bpr" or bool((train["rating"] >= threshold).all()):
        raise ConfigError(
            f"objective {objective}: every training user rated all {n_items:,} items, so "
            "no item is left to contrast their likes with (its negatives are items a user "
            "has not rated); train objective=rating on ratings, or softmax"
        )


def _warn_of_softmax_cost(cfg: TrainConfig, n_users: int, n_items: int) -> None:
    if cfg.objective != "softmax":
        return
    scores = n_users * n_items * (cfg.inner_steps + 1)
    if scores > SOFTMAX_SCORES_WARNED:
        warnings.warn(
            f"objective=softmax scores all {n_items:,} items for each of {n_users:,} users "
            f"at every inner step and once more: about {scores / 1e9:.0f} billion item "
            "scores an epoch, hours on a CPU; bce or bpr sample their negatives and cost "
            "what the ratings do",
            UserWarning,
            stacklevel=3,
        )


def train(
    dataset: Dataset,
    cfg: TrainConfig | dict[str, Any] | None = None,
    *,
    encoder: Encoder | str | None = None,
    cache_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    progress: bool = True,
) -> Recommender:
    """Encode ``dataset``'s items and meta-train on its users.

    A seeded ``validation_fraction`` of users is held out for early stopping.
    With ``run_dir`` the run checkpoints there (and resumes if interrupted)
    and the fitted recommender is saved there.
    """
    cleaning.require_dataset(dataset)
    cfg = TrainConfig.given(cfg)
    # NaN fails the interval too
    if not is_number(validation_fraction) or not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(
            f"validation_fraction: must be a number in [0, 1), got {validation_fraction!r:.40}"
        )
    if encoder is not None and not isinstance(encoder, str | Encoder):
        raise ConfigError(f"encoder: expected an encoder or its name, got {encoder!r:.60}")
    if isinstance(encoder, str):
        # the config says what was used: config.json said "minilm" beside a TF-IDF run,
        # and training again from the folder would have used another encoder
        cfg = dataclasses.replace(cfg, encoder=encoder)
    _check_folder_arg("run_dir", run_dir)  # before the encoding, not after it
    cleaning.require_clean(dataset)  # a hand-built or uncleaned Dataset is checked here
    if cfg.like_threshold is None:  # before the encoding; fit_recommender checks its rows
        inferred_threshold_said(dataset.interactions["rating"], dataset.rating_range, dataset.name)
    catalogue = encode_catalogue(
        dataset.items,
        encoder or cfg.encoder,
        cache_dir=cache_dir,
        progress=progress,
        device=cfg.device,  # as the CLI does: "cpu" held for training, not for encoding
    )
    fit_rows, val_rows = split_users(
        dataset.interactions, validation_fraction, cfg.seed, for_training=True
    )
    # a second train into the same run folder would resume from this one's checkpoint
    lock = exclusive(run_dir, "wait for it, or choose another run_dir") if run_dir else None
    with lock or nullcontext():
        rec, _ = fit_recommender(
            catalogue,
            fit_rows,
            cfg,
            users=dataset.users,
            validation=val_rows,
            rating_range=dataset.rating_range,
            checkpoint_dir=Path(run_dir) / "checkpoint" if run_dir else None,
            progress=progress,
            # the data's column options, as `metarec train` records them: new items'
            # text is then built from the same columns
            # validation_fraction: retrain judges on these validation users, the ones
            # the model did not fit; its default 10 % draw was mostly training users
            metadata={
                "dataset": dataset.name,
                "validation_fraction": float(validation_fraction),
                **_spec_metadata(dataset),
            },
        )
        if run_dir is not None:
            from metarec.run_folder import write_run

            clear_for_new_model(run_dir, has_split=False)
            # as `metarec train` writes it: the folder says how to train its model again
            save_json(
                Path(run_dir) / "config.json",
                dataclasses.replace(cfg, encoder=rec.cfg.encoder).to_dict(),
            )
            seen = {*fit_rows["user_id"].unique(), *val_rows["user_id"].unique()}
            save_trained_users(run_dir, seen)
            write_run(rec, run_dir)  # under the lock held here, beside the records just written
            remove_orphan_temps(run_dir)  # a kill during an earlier save; the lock is ours
    return rec

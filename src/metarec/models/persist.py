"""Saving and loading an :class:`~metarec.models.ensemble.Ensemble` as a folder.

Layout::

    ENSEMBLE/
      ensemble.json          manifest: format, mode, buckets, weights, members, z-score items
      members/0/             a metarec member: the Recommender's own run files
      members/1/peer.safetensors   a peer's or ranking model's fitted arrays (its
                                   options, fitted fields and each array's dtype
                                   are in the manifest)

Only safetensors and JSON are written, never pickle. The whole folder is
written into a temporary sibling and renamed into place, so a crash or an
error leaves either the old folder or the new one, never a mix; the manifest
is the last file written, so a folder without one is not an ensemble.

Members that can be saved: metarec models (:class:`MetaModel`, and the
episodic and stacked ranking models, which write their own arrays through
``to_state`` / ``from_state``) and the popularity, bias and content-kNN
peers, whose state is a few arrays. An ensemble needs at least one
:class:`MetaModel` member: it carries the catalogue and encoder. ALS and
MeLU are refused with :class:`UnsupportedError` naming the member: their
state is large and tied to libraries and training code that a run folder
should not depend on.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec import __version__ as metarec_version
from metarec.data.spec import check_recorded
from metarec.errors import ConfigError, ModelError, UnsupportedError
from metarec.io import check_format_version, load_json, load_tensors, save_json, save_tensors
from metarec.models.base import ScoringModel
from metarec.models.cutpoints import RatingCutpoints
from metarec.models.ensemble import Ensemble
from metarec.models.episodic import EpisodicLinear
from metarec.models.members import unlike_member
from metarec.models.meta_model import MetaModel
from metarec.models.stacked import StackedRanker
from metarec.peers.bias import Bias
from metarec.peers.knn import ContentKNN
from metarec.peers.popularity import Popularity
from metarec.recommender import Recommender
from metarec.tempfiles import create_temp_dir, remove_stale, sync_directory
from metarec.values import as_scale, is_finite_number, is_number, is_whole

MANIFEST = "ensemble.json"
FORMAT = "metarec-ensemble"
FORMAT_VERSION = 1
PEER_FILE = "peer.safetensors"
MODEL_MANIFEST = "model.json"
MODEL_FORMAT = "metarec-model"
METAREC = "metarec"
# ranking models that save themselves (to_state / from_state): options, JSON fields, arrays
RANKERS: dict[str, type[EpisodicLinear] | type[StackedRanker]] = {
    "episodic": EpisodicLinear,
    "stacked": StackedRanker,
}
SAVEABLE = (METAREC, "popularity", "bias", "knn", *RANKERS)


def make_ranker(
    kind: str, *, max_episodes: int | None = None, **options: Any
) -> EpisodicLinear | StackedRanker:
    """One of :data:`RANKERS`, unfitted; ``max_episodes`` goes to the stacked ranker
    only (the episodic ridge has no trees to sample episodes for). Unknown kinds and
    options raise :class:`ConfigError` listing what is accepted, as ``make_peer`` does."""
    import inspect

    if kind not in RANKERS:
        raise ConfigError(f"unknown ranker {kind!r}; expected one of {sorted(RANKERS)}")
    accepted = set(inspect.signature(RANKERS[kind]).parameters) - {"self", "max_episodes"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"ranker {kind!r}: unknown option(s) {unknown}; accepted: {sorted(accepted)}"
        )
    if kind == "stacked":
        return StackedRanker(max_episodes=max_episodes, **options)
    return RANKERS[kind](**options)


def is_ensemble_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def check_target(path: str | Path, manifest: str = MANIFEST, what: str = "an ensemble") -> None:
    """Refuse to save over anything but a folder of the same kind (one holding
    ``manifest``) or an empty folder."""
    target = Path(path)
    if target.exists() and not (
        target.is_dir() and ((target / manifest).is_file() or not any(target.iterdir()))
    ):
        raise ModelError(f"{target}: exists and is not {what} folder; not replacing it")


# -- peers: fitted state <-> (options, scalars, arrays) -------------------------
def _peer_state(
    name: str, model: ScoringModel, alone: bool = False
) -> tuple[str, dict[str, Any], dict[str, float], dict[str, np.ndarray]]:
    """(kind, constructor options, fitted scalars, fitted arrays) of a saveable peer;
    ``alone``: saved by itself (``save_model``), not as an ensemble's member."""
    what = f"model {name!r}" if alone else f"ensemble member {name!r}"
    if isinstance(model, Popularity):
        scores = _fitted(what, model.scores)
        return "popularity", {"like_threshold": model.like_threshold}, {}, {"scores": scores}
    if isinstance(model, Bias):
        m = model._model()
        arrays = {"item_bias": np.asarray(m.item_bias)}
        if getattr(m, "popularity", None) is not None:
            arrays["rating_counts"] = np.asarray(m.popularity)
        options = {"item_damping": model.item_damping, "user_damping": model.user_damping}
        return "bias", options, {"mu": float(m.mu)}, arrays
    if isinstance(model, ContentKNN):
        vectors = _fitted(what, model.vectors)
        options = {"damping": model.damping, "like_threshold": model.like_threshold}
        arrays = {"vectors": vectors, "popularity": np.asarray(model.popularity)}
        return "knn", options, {"mu": float(model.mu)}, arrays
    for kind, cls in RANKERS.items():
        if isinstance(model, cls):
            try:
                options, fitted, arrays = model.to_state()
            except ModelError:
                raise ModelError(f"{what}: not fitted; call fit() first") from None
            return kind, options, fitted, arrays
    hint = "" if alone else "; leave it out of the ensemble"
    raise UnsupportedError(
        f"{what} ({type(model).__name__}) cannot be saved: only metarec "
        "models (meta-learners, episodic, stacked) and the popularity, bias and knn peers "
        f"can{hint}"
    )


def _fitted(what: str, value: np.ndarray | None) -> np.ndarray:
    if value is None:  # what: "model 'knn'" or "ensemble member 'knn'"
        raise ModelError(f"{what}: not fitted; call fit() first")
    return np.asarray(value)


def _peer_from_state(
    kind: str,
    seed: int,
    options: dict[str, Any],
    scalars: dict[str, float],
    arrays: dict[str, np.ndarray],
    n_items: int,
    where: str,
) -> ScoringModel:
    from metarec.models.bias import BiasModel
    from metarec.peers import make_peer

    try:
        model = make_peer(kind, seed=seed, **options)
    except ConfigError as exc:
        raise ModelError(f"{where}: field 'options': {exc}") from None
    need = {"popularity": ({"scores"}, set()), "bias": ({"item_bias"}, {"mu"})}.get(
        kind, ({"vectors", "popularity"}, {"mu"})
    )
    missing = sorted(need[0] - set(arrays))
    if missing:
        raise ModelError(f"{where}: {PEER_FILE} lacks arrays {missing}")
    missing = sorted(need[1] - set(scalars))
    if missing:
        raise ModelError(f"{where}: field 'state' lacks {missing}")
    for key, arr in arrays.items():
        if len(arr) != n_items:
            raise ModelError(
                f"{where}: array {key!r} has {len(arr)} rows; field 'n_items' says {n_items}"
            )
        # one value per item, except content kNN's item vectors (a row per item)
        dims = 2 if key == "vectors" else 1
        if arr.ndim != dims:
            raise ModelError(f"{where}: array {key!r} has {arr.ndim} dimensions, expected {dims}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise ModelError(f"{where}: array {key!r} holds NaN or infinite values")
    if isinstance(model, Popularity):
        model.scores = arrays["scores"]
    elif isinstance(model, Bias):
        bias = BiasModel(model.item_damping, model.user_damping)
        bias.mu = float(scalars["mu"])
        bias.item_bias = arrays["item_bias"]
        if "rating_counts" in arrays:
            bias.popularity = arrays["rating_counts"]
        model.model = bias
    elif isinstance(model, ContentKNN):
        model.vectors = arrays["vectors"]
        model.popularity = arrays["popularity"]
        model.mu = float(scalars["mu"])
    return model


# -- one member: its files and its manifest entry ---------------------------------
def _write_member(
    model: ScoringModel,
    folder: Path,
    state: tuple[str, dict[str, Any], dict[str, float], dict[str, np.ndarray]] | None,
) -> dict[str, Any]:
    """Write a member's files into ``folder``; its manifest entry (kind, options, state).
    ``state``: the peer's :func:`_peer_state`, taken before anything was written."""
    if isinstance(model, MetaModel):
        model._rec().save(folder)
        return {"kind": METAREC}
    if state is None:
        raise ModelError(f"{model.name}: no saved state given")  # a caller's slip, not a user's
    kind, options, scalars, arrays = state
    tensors = {k: torch.as_tensor(v) for k, v in arrays.items()}
    save_tensors(folder / PEER_FILE, tensors)
    # the file holds any dtype; the manifest says which one each array was saved as, so
    # that an edited file (scores turned to bool, indices to float) is refused at load
    dtypes = {k: str(t.dtype).removeprefix("torch.") for k, t in sorted(tensors.items())}
    return {"kind": kind, "options": options, "state": scalars, "dtypes": dtypes}


def _read_member(
    man: _Fields,
    field: str,
    name: str,
    entry: dict[str, Any],
    where: Path,
    *,
    seed: int,
    n_items: int,
    device: str | None,
) -> ScoringModel:
    """The model ``entry`` (the manifest's field ``field``; "" for the manifest itself)
    describes, from its files in ``where``."""
    kind = entry.get("kind")
    at = f"{field}." if field else ""
    where_said = f"{man.path}, {field} ({name})" if field else f"{man.path} ({name})"
    if kind not in SAVEABLE:
        raise man.bad(f"{at}kind", f"{kind!r} is not one of {', '.join(SAVEABLE)}")
    if kind == METAREC:
        rec = load_recommender(where, device)
        return MetaModel.from_recommender(rec, name=name)
    options, state = entry.get("options", {}), entry.get("state", {})
    if kind in RANKERS:
        if not isinstance(options, dict) or not isinstance(state, dict):
            raise man.bad(f"{at}options/state", "must be objects")
        arrays = _peer_arrays(where / PEER_FILE, _saved_dtypes(man, at, entry))
        try:
            return RANKERS[kind].from_state(
                options, state, arrays, seed=seed, name=name, device=device or "auto"
            )
        except (ModelError, ConfigError) as exc:
            raise ModelError(f"{where_said}: {exc}") from None
    if not isinstance(options, dict):
        raise man.bad(f"{at}options", "must be an object")
    if not isinstance(state, dict) or not all(isinstance(v, int | float) for v in state.values()):
        raise man.bad(f"{at}state", "must be an object of numbers")
    arrays = _peer_arrays(where / PEER_FILE, _saved_dtypes(man, at, entry))
    return _peer_from_state(kind, seed, options, state, arrays, n_items, where_said)


# what a peer's state is saved as; bfloat16 was numpy's TypeError, a traceback
PEER_DTYPES = (torch.float32, torch.float64, torch.int64, torch.int32, torch.bool)


def _saved_dtypes(man: _Fields, at: str, entry: dict[str, Any]) -> dict[str, str] | None:
    """The entry's field ``dtypes`` (array name -> torch dtype name); None for folders
    saved before it was written, which are checked against :data:`PEER_DTYPES` only."""
    dtypes = entry.get("dtypes")
    if dtypes is None:
        return None
    known = {str(d).removeprefix("torch.") for d in PEER_DTYPES}
    if not isinstance(dtypes, dict) or not all(
        isinstance(k, str) and v in known for k, v in dtypes.items()
    ):
        raise man.bad(f"{at}dtypes", f"expected an object of array name to one of {sorted(known)}")
    return dtypes


def _peer_arrays(path: Path, dtypes: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a peer's file; each must have the dtype ``dtypes`` records for it
    (when the manifest records them) and the file no array the manifest does not name."""
    tensors = load_tensors(path)
    if dtypes is not None and set(tensors) != set(dtypes):
        raise ModelError(
            f"{path}: holds arrays {sorted(tensors)}; the manifest's field 'dtypes' names "
            f"{sorted(dtypes)} (damaged or edited?)"
        )
    for key, value in tensors.items():
        saved = None if dtypes is None else dtypes[key]
        name = str(value.dtype).removeprefix("torch.")
        if value.dtype not in PEER_DTYPES or (saved is not None and name != saved):
            expected = f"saved as {saved}" if saved else "not a dtype a peer saves"
            raise ModelError(f"{path}: tensor {key!r} is {name}, {expected} (damaged or edited?)")
    return {k: v.numpy() for k, v in tensors.items()}


# -- saving ---------------------------------------------------------------------
def save_ensemble(
    ens: Ensemble, directory: str | Path, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``ens`` to ``directory`` atomically (replacing an ensemble folder already there)."""
    target = Path(directory).absolute()
    # everything that can refuse is checked before a byte is written
    peers = {n: _peer_state(n, m) for n, m in ens.members.items() if not isinstance(m, MetaModel)}
    metarec = [m for m in ens.members.values() if isinstance(m, MetaModel)]
    if not metarec:
        raise UnsupportedError(
            f"{ens.name}: saving needs at least one metarec member: it carries the catalogue "
            "(item ids, titles, text) and the encoder that recommend and serve use"
        )
    n_items = ens.n_items
    for name, model in ens.members.items():
        if model.n_items != n_items:
            raise ModelError(
                f"ensemble member {name!r} scores {model.n_items} items, the ensemble {n_items}"
            )
    other = unlike_member(ens.members)
    if other is not None:
        raise ModelError(f"ensemble {other[1]}")
    check_target(target)

    with staged_folder(target) as tmp:
        members = []
        for i, (name, model) in enumerate(ens.members.items()):
            rel = f"members/{i}"
            entry = _write_member(model, tmp / rel, peers.get(name))
            members.append({"name": name, "path": rel, **entry})
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "written_by": f"metarec {metarec_version}",
            "name": ens.name,
            "mode": ens.mode,
            "buckets": list(ens.buckets),
            "members": members,
            # one row per bucket, one weight per member in the order of "members"
            "weights": [[float(w) for w in row] for row in ens.weights],
            "n_items": n_items,
            # z-scores are taken over the first zscore_items items (the catalogue as
            # fitted), so items added later leave existing blended scores unchanged
            "zscore_items": int(ens._n_fit_items),
            "seed": ens.seed,
            "k": ens.k,
            "query_size": ens.query_size,
            "grid_step": ens.grid_step,
            "samples": ens.samples,
            "learn_weights": ens.learn_weights,
            "min_bucket_users": ens.min_bucket_users,
            # the validation users each bucket's weights rest on (null: never fitted)
            "bucket_users": ens.bucket_users,
            # as fitted; an ensemble never fitted keeps its option (None: from the data)
            "like_threshold": ens.like_threshold if ens._n_fit_items else ens.like_given,
            "rating_cutpoints": None if ens.cutpoints is None else ens.cutpoints.to_dict(),
            "metadata": dict(metadata if metadata is not None else ens.metadata),
        }
        save_json(tmp / MANIFEST, manifest)  # last: without it the folder is no ensemble
    return target


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A fresh folder to write ``target``'s files into, moved into place when the block
    ends and removed if it fails, so ``target`` is always whole: old or new.

    A sibling of ``target``, so the final rename stays on one file system."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp_dir(target.parent, f".{target.name}.", ".tmp")
    try:
        yield tmp
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # what a writer of this folder killed before its move (or between its two renames)
    # left beside it, 6.6 MB a time for an ensemble, kept for good: swept once this
    # write is in place, never before (an old-* copy may be the only one until then)
    name = glob.escape(target.name)
    remove_stale(target.parent, f".{name}.*.tmp", f".{name}.old-*")


def _move_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        sync_directory(target.parent)
        return
    # a directory cannot be swapped in one rename: move the old one aside first and
    # back again if the second rename fails, so that one of the two is always in place
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    sync_directory(target.parent)
    shutil.rmtree(old, ignore_errors=True)


# -- loading --------------------------------------------------------------------
def load_ensemble(directory: str | Path, *, device: str | None = None) -> Ensemble:
    """Read an ensemble folder; every problem names the file and field at fault."""
    root = Path(directory)
    path = root / MANIFEST
    if not root.is_dir():
        raise ModelError(f"{root}: not a directory")
    man = _read_manifest(path, FORMAT)
    mode = man.get("mode", str)
    if mode not in ("rating", "ranking"):
        raise man.bad("mode", f"{mode!r} is not one of rating, ranking")
    buckets = man.get("buckets", list)
    if (
        not buckets
        or not all(type(b) is int for b in buckets)
        or buckets[0] != 0
        or sorted(set(buckets)) != buckets
    ):
        raise man.bad("buckets", f"must be increasing integers starting at 0, got {buckets!r}")
    n_items = man.get("n_items", int)
    if n_items <= 0:
        raise man.bad("n_items", f"must be > 0, got {n_items}")
    zscore_items = man.get("zscore_items", int)
    seed = man.get("seed", int, 0)
    entries = man.get("members", list)
    if not entries:
        raise man.bad("members", "empty")
    weights = man.get("weights", list)
    _check_weights(man, weights, len(buckets), len(entries))

    members: dict[str, ScoringModel] = {}
    paths: list[Path] = []
    for i, entry in enumerate(entries):
        field = f"members[{i}]"
        if not isinstance(entry, dict):
            raise man.bad(field, "must be an object")
        name, rel = entry.get("name"), entry.get("path")
        if not isinstance(name, str) or not name:
            raise man.bad(f"{field}.name", f"must be a non-empty string, got {name!r}")
        if name in members:
            raise man.bad(f"{field}.name", f"{name!r} repeats")
        # "" and "." are the ensemble's own folder, read as a run that is not there
        if (
            not isinstance(rel, str)
            or not Path(rel).parts
            or Path(rel).is_absolute()
            or ".." in Path(rel).parts
        ):
            raise man.bad(f"{field}.path", f"must be a relative path inside the folder: {rel!r}")
        where = root / rel
        if not where.is_dir():
            raise man.bad(f"{field}.path", f"{where} is missing")
        # one folder read as two members: a name's weight then scored another's model
        same = next((i for i, p in enumerate(paths) if p == where.resolve()), None)
        if same is not None:
            raise man.bad(f"{field}.path", f"{rel!r} is members[{same}]'s folder too")
        paths.append(where.resolve())
        model = _read_member(
            man, field, name, entry, where, seed=seed, n_items=n_items, device=device
        )
        if model.n_items != n_items:
            raise man.bad(
                "n_items",
                f"says {n_items}; member {name!r} ({where}) has {model.n_items} items",
            )
        members[name] = model
    other = unlike_member(members)
    if other is not None:
        raise man.bad(f"members[{other[0]}]", other[1])
    # against n_items once the members have confirmed it: an edited n_items was reported
    # as zscore_items out of range, the field that was right
    if not 0 <= zscore_items <= n_items:
        raise man.bad("zscore_items", f"must be in [0, {n_items}], got {zscore_items}")

    # ensembles saved before the field learned their weights with 4 (1-5 stars); None:
    # never fitted, so it comes from the data at fit
    like = man.raw.get("like_threshold", 4.0)
    if like is not None:
        like = float(man.get("like_threshold", float))
    # the scale of the runs the ensemble blends, which its thresholds and levels are on
    scale = next(m._rec().rating_range for m in members.values() if isinstance(m, MetaModel))
    _check_like_thresholds(man, members, like, scale)
    try:
        ens = Ensemble(
            members,
            mode=mode,
            buckets=buckets,
            name=man.get("name", str, "ensemble"),
            seed=seed,
            fit_members=False,
            grid_step=float(man.get("grid_step", float, 0.1)),
            samples=man.get("samples", int, 3000),
            query_size=man.get("query_size", int, 10),
            k=man.get("k", int, 10),
            learn_weights=man.get("learn_weights", bool, True),
            like_threshold=like,
            # ensembles saved before the option learned their weights with none: a refit
            # keeps that rule, and a save says so
            min_bucket_users=man.get("min_bucket_users", int, 1),
        )
    except ConfigError as exc:  # e.g. a ranking-only member in rating mode
        raise ModelError(f"{path}: {exc}") from None
    ens.weights = np.asarray(weights, dtype=np.float64)
    ens.bucket_users = _bucket_users(man, len(buckets))
    ens._n_fit_items = zscore_items
    ens.fitted = True
    # the scale its members were fitted on (its runs'): support ratings off it refused
    for model in (ens, *members.values()):
        model.rating_range = scale
    ens.metadata = man.get("metadata", dict, {})
    # an ensemble records the data its runs were trained on, read back as theirs is
    check_recorded(ens.metadata, str(path))
    cuts = man.raw.get("rating_cutpoints")
    if cuts is not None:
        if not isinstance(cuts, dict):
            raise man.bad("rating_cutpoints", f"expected an object or null, got {cuts!r:.80}")
        ens.cutpoints = RatingCutpoints.from_dict(cuts, source=f"{path}: field 'rating_cutpoints'")
        lo, hi = scale
        off = [v for v in ens.cutpoints.levels if not lo - 1e-6 <= v <= hi + 1e-6]
        if off:  # printed as a rating ("50.000" on 1-5 stars)
            raise man.bad(
                "rating_cutpoints.levels", f"{off[0]:g} is off the runs' scale [{lo:g}, {hi:g}]"
            )
    return ens


def _check_like_thresholds(
    man: _Fields,
    members: dict[str, ScoringModel],
    like: float | None,
    scale: tuple[float, float],
) -> None:
    """The ensemble's and its peers' like thresholds on the scale of the runs they were
    fitted beside (a saved ensemble has one): fit refuses one off it, and an edited 99
    liked nothing, so weights learned or relearned from it had no positives."""
    from metarec.data.schema import check_like_threshold

    checks = [("like_threshold", like)] + [
        (f"members[{i}].options.like_threshold", getattr(m, "like_given", None))
        for i, m in enumerate(members.values())
        if not isinstance(m, MetaModel)  # members[i] is read from the manifest's entry i
    ]
    for field, value in checks:
        if value is not None:
            try:
                check_like_threshold(value, scale, field)
            except ConfigError as exc:
                raise man.bad(field, str(exc).removeprefix(f"{field}: ")) from None


# -- one model on its own -------------------------------------------------------
def save_model(model: ScoringModel, directory: str | Path) -> Path:
    """Write one fitted model to ``directory`` atomically: a metarec model, a saveable
    peer or ranking model (``model.json`` beside its files), or an ensemble (its own
    folder layout). A benchmark keeps its finished models this way, so that an
    interrupted run resumes without fitting them again."""
    if isinstance(model, Ensemble):
        return save_ensemble(model, directory)
    target = Path(directory).absolute()
    state = None if isinstance(model, MetaModel) else _peer_state(model.name, model, alone=True)
    check_target(target, MODEL_MANIFEST, "a model")
    with staged_folder(target) as tmp:
        entry = _write_member(model, tmp, state)
        manifest = {
            "format": MODEL_FORMAT,
            "format_version": FORMAT_VERSION,
            "written_by": f"metarec {metarec_version}",
            "name": model.name,
            "seed": int(getattr(model, "seed", 0)),
            "n_items": model.n_items,
            # the scale it was fitted on, off which support ratings are refused: a model
            # loaded without it predicted 27 from a rating of 99 its fitted self refused
            "rating_range": None if model.rating_range is None else list(model.rating_range),
            **entry,
        }
        save_json(tmp / MODEL_MANIFEST, manifest)  # last: without it the folder is no model
    return target


def load_model(directory: str | Path, *, device: str | None = None) -> ScoringModel:
    """Read a folder :func:`save_model` wrote."""
    root = Path(directory)
    if is_ensemble_dir(root):
        return load_ensemble(root, device=device)
    path = root / MODEL_MANIFEST
    man = _read_manifest(path, MODEL_FORMAT)
    raw = man.raw
    n_items = man.get("n_items", int)
    model = _read_member(
        man,
        "",
        man.get("name", str),
        raw,
        root,
        seed=man.get("seed", int, 0),
        n_items=n_items,
        device=device,
    )
    if model.n_items != n_items:
        raise man.bad("n_items", f"says {n_items}; the model's files hold {model.n_items}")
    scale = raw.get("rating_range")  # absent in models saved before it was kept
    if isinstance(model, MetaModel):
        model.rating_range = model._rec().rating_range
    elif scale is not None:
        model.rating_range = as_scale(scale)
        if model.rating_range is None:
            raise man.bad("rating_range", f"expected [low, high] or null, got {scale!r:.60}")
    return model


def _read_manifest(path: Path, kind: str) -> _Fields:
    """A manifest of format ``kind`` at our version, ready for typed reads."""
    raw = load_json(path)
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    man = _Fields(path, raw)
    if raw.get("format") != kind:
        raise man.bad("format", f"expected {kind!r}, got {raw.get('format')!r}")
    check_format_version(raw.get("format_version"), range(1, FORMAT_VERSION + 1), path)
    return man


def load_recommender(where: str | Path, device: str | None = None) -> Recommender:
    """:meth:`Recommender.load`, which reports a damaged run folder as one
    :class:`ModelError`."""
    return Recommender.load(where, device=device)


def _check_weights(man: _Fields, weights: list[Any], n_buckets: int, n_members: int) -> None:
    if len(weights) != n_buckets:
        raise man.bad("weights", f"{len(weights)} rows for {n_buckets} buckets")
    for b, row in enumerate(weights):
        field = f"weights[{b}]"
        if not isinstance(row, list) or len(row) != n_members:
            raise man.bad(field, f"must be a list of {n_members} weights (one per member)")
        if not all(is_finite_number(w) and w >= 0 for w in row):  # no bools
            raise man.bad(field, f"weights must be finite and >= 0, got {row}")
        if abs(sum(row) - 1.0) > 1e-6:
            raise man.bad(field, f"weights must sum to 1, got {sum(row):g}")


def _bucket_users(man: _Fields, n_buckets: int) -> list[int] | None:
    """The manifest's ``bucket_users``: None where it has none (saved before the field,
    or never fitted), else a count >= 0 a bucket."""
    counts = man.raw.get("bucket_users")
    if counts is None:
        return None
    if (
        not isinstance(counts, list)
        or len(counts) != n_buckets
        or not all(is_whole(c) and c >= 0 for c in counts)
    ):
        raise man.bad(
            "bucket_users", f"expected {n_buckets} whole numbers >= 0 or null, got {counts!r:.80}"
        )
    return [int(c) for c in counts]


class _Fields:
    """Typed reads of a manifest's top-level fields; errors name file and field."""

    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw

    def bad(self, field: str, message: str) -> ModelError:
        return ModelError(f"{self.path}: field '{field}': {message}")

    _MISSING = object()

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        if key not in self.raw:
            if default is _Fields._MISSING:
                raise self.bad(key, "missing")
            return default
        value = self.raw[key]
        ok = is_whole(value) if kind is int else isinstance(value, kind)
        if kind is float:
            # Python's json reads NaN and Infinity, which no saved setting holds
            ok = is_number(value)
            if ok and not is_finite_number(value):
                raise self.bad(key, f"expected a finite number, got {value!r}")
        if not ok:
            raise self.bad(key, f"expected {kind.__name__}, got {value!r:.80}")
        return value

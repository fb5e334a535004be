"""A :class:`~metarec.recommender.Recommender`'s run folder: writing and reading it.

Layout::

    RUN/
      recommender.json     manifest: format version, config, user-feature vocabulary,
                           encoder spec, rating range, counts, metadata, cutpoints
      items.json           the catalogue's ids, titles and text, one list each
      model.safetensors    the learner's state, popularity, fold-in offsets, encoder tensors

Other files in the folder (metrics, the split) are left alone. Reading checks the files
against each other: a damaged or hand-edited folder is refused with a ModelError that
names the file and field rather than loaded into a model that misbehaves later.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from metarec import __version__ as metarec_version
from metarec.config import TrainConfig
from metarec.data.features import UserFeatureEncoder
from metarec.data.schema import check_like_threshold
from metarec.data.spec import ADDED_ITEMS, check_recorded
from metarec.device import device_available, resolve_device
from metarec.errors import ConfigError, DataError, MetarecError, ModelError, why_missing
from metarec.io import (
    check_format_version,
    check_tensors_like,
    json_bytes,
    load_json,
    load_tensors,
    nearest_existing,
    require_finite,
    save_tensors,
    write_bytes_atomic,
)
from metarec.locks import exclusive, holder, lock_path
from metarec.meta.learner import MetaLearner
from metarec.models.cutpoints import RatingCutpoints
from metarec.models.preference import PreferenceNet
from metarec.trained_users import SPLIT, TRAINED_USERS
from metarec.values import as_scale, is_whole

if TYPE_CHECKING:
    # only for annotations: the recommender module imports this one
    from metarec.recommender import Recommender

# 2: runs that may hold item_offsets, rating_cutpoints and metadata.added_items, which
# appeared while the version stayed 1; a metarec that reads only 1 refuses such a run
# by its version rather than misreading it. Version 1 runs still load: those fields are
# optional and read as absent there, as they always were. A new config key (or field
# a reader must understand) bumps the version: a run of this version is read as holding
# every key (a missing one is warned of), and tests/test_recommender.py holds the keys
# of version 2 to say when one was added without a bump.
FORMAT_VERSION = 2
READABLE_VERSIONS = range(1, FORMAT_VERSION + 1)


def save_run(rec: Recommender, directory: str | Path) -> Path:
    """:meth:`Recommender.save`: :func:`write_run` under the folder's writer lock (a
    training run writing there refuses it, as it refuses another training run), never
    into an ensemble's folder, and without the records of another model.

    The records of the model a folder held (``split.json``, ``trained-users.json``,
    ``metrics.json``, ``config.json``) stay only where that model is this one: the
    folder's ``recommender.json`` has this model's metadata and training config (a run
    loaded, changed and saved back). Kept beside another model, ``evaluate`` judged it
    on the held-out users of a split it had trained on."""
    from metarec.models.persist import MANIFEST, MODEL_MANIFEST

    out = _save_target(directory)
    for manifest, what in ((MANIFEST, "an ensemble"), (MODEL_MANIFEST, "a saved model")):
        if (out / manifest).is_file():  # loading the folder opens that, never this run
            raise ModelError(f"{out}: holds {what}; not writing a run into it")
    try:
        with exclusive(out, "wait for it to finish, or save into another folder"):
            _drop_other_models_records(rec, out)
            return write_run(rec, out)
    except OSError as exc:
        # the lock's file beside the folder, in a read-only place: a bare OSError that
        # named the hidden lock, where write_run's own failures name the folder
        raise ModelError(f"{out}: not saved: {exc.strerror or exc}") from None


def _drop_other_models_records(rec: Recommender, out: Path) -> None:
    records = ["metrics.json", "config.json", SPLIT, TRAINED_USERS]
    present = [name for name in records if (out / name).is_file()]
    if not present:
        return
    try:
        held = load_json(out / "recommender.json")
        same = (
            _as_trained(held.get("metadata")) == _as_trained(rec.metadata)
            and held.get("config") == rec.cfg.to_dict()
        )
    except (OSError, ValueError, AttributeError, MetarecError):
        same = False
    if same:
        return
    for name in present:
        (out / name).unlink(missing_ok=True)
    warnings.warn(
        f"{out}: removed {', '.join(present)}, the records of the model saved there "
        "before, which do not describe this one",
        UserWarning,
        stacklevel=4,
    )


def _as_trained(metadata: object) -> object:
    """A run's metadata less the items added since it trained: the same model with items
    added (add_items, then save back) keeps its records."""
    if not isinstance(metadata, dict):
        return metadata
    return {k: v for k, v in metadata.items() if k != ADDED_ITEMS}


def _save_target(directory: object) -> Path:
    """``directory`` as the folder a run is saved into, or an error naming what is wrong
    with it (checked before any lock is taken or byte written)."""
    if not isinstance(directory, (str, os.PathLike)) or not str(directory).strip():
        # "" would be the working folder: a run spilled among whatever is there
        raise DataError(f"save: expected a folder path, got {directory!r:.60}")
    if "\x00" in str(directory):  # no path holds one: a bare ValueError from mkdir
        raise DataError(f"save: {str(directory)!r:.80} holds a NUL character; no path can")
    out = Path(directory)
    try:
        is_file = out.exists() and not out.is_dir()
        above = nearest_existing(out.parent)
    except OSError as exc:  # a name too long: a bare OSError before
        detail = exc.strerror or exc
        raise DataError(
            f"save: {str(directory)!r:.80} is no usable folder path ({detail})"
        ) from None
    if is_file:
        raise ModelError(f"{out}: is a file; save needs a run folder")
    if not above.is_dir():
        raise ModelError(f"{out}: {above} is a file; save needs a run folder")
    return out


def write_run(rec: Recommender, directory: str | Path) -> Path:
    """Write the run's files: everything that can refuse is checked before a byte is
    written, and ``recommender.json`` is removed first and written last. For callers
    that hold the folder's lock and wrote its records (training, retraining);
    :func:`save_run` for anyone else."""
    out = _save_target(directory)
    n_items = rec.n_items
    manifest = {
        "format_version": FORMAT_VERSION,
        "written_by": f"metarec {metarec_version}",
        "config": rec.cfg.to_dict(),
        "features": rec.features.to_dict(),
        "encoder": rec.encoder_config,
        "rating_range": list(rec.rating_range),
        "n_items": n_items,
        "item_vector_dim": int(rec.model.tower.item_vectors.shape[1]),
        "metadata": rec.metadata,
        "rating_cutpoints": None if rec.cutpoints is None else rec.cutpoints.to_dict(),
    }
    try:  # everything that can refuse is checked before a byte is written
        manifest_bytes = json_bytes(manifest, strict=True)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"{out}: not saved: metadata must be JSON (strings, numbers, lists, dicts): {exc}"
        ) from None
    items = rec.items  # add_items replaces the frame: this one is what is written
    items_bytes = json_bytes({c: items[c].tolist() for c in ("item_id", "title", "text")})
    tensors = {f"learner.{k}": v for k, v in rec.learner.state_dict().items()}
    tensors["popularity"] = torch.as_tensor(rec.popularity)
    tensors["item_offsets"] = torch.as_tensor(rec.item_offsets)
    # each read above at its own moment: items added meanwhile by another thread (which
    # the README says to lock out) were saved as a folder no load accepts. The sizes
    # of what is written, not read again (those agree once the addition is done)
    rows = {
        "recommender.json": n_items,
        "items.json": len(items),
        "item vectors": int(tensors["learner.model.tower.item_vectors"].shape[0]),
        "popularity": int(tensors["popularity"].shape[0]),
        "item offsets": int(tensors["item_offsets"].shape[0]),
    }
    if len(set(rows.values())) > 1:
        raise ModelError(
            f"{out}: not saved: the catalogue changed while it was being saved ({rows}); "
            "hold one lock around add_items and save (a Recommender is not thread-safe)"
        )
    tensors.update({f"encoder.{k}": v for k, v in rec.encoder_tensors.items()})
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recommender.json").unlink(missing_ok=True)
        save_tensors(out / "model.safetensors", tensors)
        write_bytes_atomic(out / "items.json", items_bytes)
        write_bytes_atomic(out / "recommender.json", manifest_bytes)
    except OSError as exc:  # read-only, full disk: the run is not there, and says where
        raise ModelError(f"{out}: not saved: {exc.strerror or exc} ({exc.filename})") from None
    return out


_READ_TRIES = 5
_FIRST_WAIT_S = 0.05  # doubled at each try: 0.75 s in all, for a writer to finish


def read_run(cls: type[Recommender], path: Path, device: str | None) -> Recommender:
    """The run in ``path`` as a ``cls``. What this checks is a ModelError naming the file
    and field; anything else (a missing key, a tensor of another shape) propagates for
    :meth:`Recommender.load` to word. Call it from there only: the device warning's
    stacklevel points at that frame, as it did when this was a method of the class.

    The folder's files are read one by one, and a ``train`` into the folder meanwhile
    gave a model of one manifest's cutpoints and another's weights, served without a
    word. A writer removes ``recommender.json`` first and writes it last, so a read
    during which it changed (or went) is read again, after a short wait. So is one
    that failed meanwhile: half of a write ("items.json has 1682 items, the model
    1684", a weights file still being written) is not a damaged run, nor is a folder
    without its manifest while its lock is held."""
    manifest = path / "recommender.json"
    for attempt in range(_READ_TRIES):
        if attempt:
            time.sleep(_FIRST_WAIT_S * 2 ** (attempt - 1))
        before = _stamp(manifest)
        try:
            rec, trained_for = _read_run_once(cls, path, device)
        except ModelError:
            now = _stamp(manifest)
            # the run as it stands, no write under way: damaged
            if now == before and not (now is None and _writer_at_work(path)):
                raise
            continue
        if before is not None and _stamp(manifest) == before:
            if trained_for is not None:  # said once, of the read that is kept
                warnings.warn(
                    f"{path}: trained for device {trained_for!r}, which this machine lacks; "
                    "loading it with device 'auto'",
                    RuntimeWarning,
                    stacklevel=3,  # read_run's caller: Recommender.load
                )
            return rec
    if _stamp(manifest) is None:  # what the last read met was half of a write
        raise _no_manifest(path)
    raise ModelError(
        f"{path}: changed while it was read, {_READ_TRIES} times: another process is writing "
        "it; load it once that is done"
    )


def _writer_at_work(path: Path) -> bool:
    """Whether ``path``'s lock is held by a live process, or is being taken (a writer
    empties it before writing its pid). A lock a killed process left names a dead pid:
    no wait for it, since no one will write the manifest."""
    try:
        text = lock_path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return False
    return not text.isdigit() or holder(path) is not None


def _no_manifest(path: Path) -> ModelError:
    writer = holder(path)
    if writer is not None:  # a train removes the manifest first and writes it last
        return ModelError(
            f"{path}: no recommender.json while process {writer} is writing the folder "
            f"(lock {lock_path(path)}): load it once that is done"
        )
    if not path.exists():
        return ModelError(f"{path}: {why_missing(path)}; expected a metarec run's folder")
    return ModelError(f"{path}: not a metarec run (no recommender.json)")


def _stamp(manifest: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(manifest)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_run_once(
    cls: type[Recommender], path: Path, device: str | None
) -> tuple[Recommender, str | None]:
    """The run, and the device it was trained for where this machine lacks it and
    ``auto`` was taken instead (None otherwise)."""
    if not (path / "recommender.json").exists():
        raise _no_manifest(path)
    meta = load_json(path / "recommender.json")
    if not isinstance(meta, dict):
        raise ModelError(f"{path / 'recommender.json'}: not a JSON object")
    version = check_format_version(
        meta.get("format_version"), READABLE_VERSIONS, path / "recommender.json"
    )
    for part in ("config", "features", "encoder", "metadata"):
        if not isinstance(meta.get(part, {} if part == "metadata" else None), dict):
            raise ModelError(
                f"{path / 'recommender.json'}: {part}: expected an object, got "
                f"{meta.get(part)!r:.60} (damaged or edited?)"
            )
    check_recorded(meta.get("metadata", {}), str(path / "recommender.json"))
    try:
        cfg = TrainConfig.from_saved(meta["config"], source=str(path / "recommender.json"))
    except ConfigError as exc:  # the saved values, not the caller's: a damaged run
        raise ModelError(str(exc)) from None
    if version >= 2:
        _warn_missing_keys(meta["config"], cfg.to_dict(), path / "recommender.json")
    rating_range = _rating_range(meta.get("rating_range"), path)
    if cfg.like_threshold is not None:
        # training refuses a threshold off the scale; one edited in afterwards made
        # every item unliked: precision 0 and NaN recall in evaluate, without a word
        try:
            check_like_threshold(cfg.like_threshold, rating_range, "like_threshold")
        except ConfigError as exc:
            raise ModelError(
                f"{path / 'recommender.json'}: config.{exc} (damaged or edited?)"
            ) from None
    trained_for = None
    if device is not None:
        cfg.device = device
    elif not device_available(cfg.device):
        # a run trained on a GPU server stays servable on a CPU machine; a device
        # passed here is taken strictly instead
        trained_for, cfg.device = cfg.device, "auto"
    items = _read_items(path / "items.json")
    tensors = load_tensors(path / "model.safetensors")
    require_finite(tensors, path / "model.safetensors")
    state = {k[len("learner.") :]: v for k, v in tensors.items() if k.startswith("learner.")}
    weights = path / "model.safetensors"
    for key, size in (("model.tower.item_vectors", None), ("model.user.offset", 1)):
        # a KeyError or a ValueError that named neither the file nor the tensor
        if key not in state or (size is not None and state[key].numel() != size):
            got = "missing" if key not in state else f"of shape {tuple(state[key].shape)}"
            raise ModelError(f"{weights}: tensor learner.{key} is {got} (damaged or edited?)")
    vectors = state["model.tower.item_vectors"]
    if len(items) != vectors.shape[0]:
        raise ModelError(f"{path}: items.json has {len(items)} items, the model {vectors.shape[0]}")
    _check_counts(meta, len(items), int(vectors.shape[1]), path / "recommender.json")
    features = UserFeatureEncoder.from_dict(meta["features"], source=str(path / "recommender.json"))
    learner = build_learner(vectors, cfg, features, offset=float(state["model.user.offset"]))
    try:
        check_tensors_like(learner.state_dict(), state, weights, prefix="learner.")
    except ValueError as exc:
        # "expected": the network recommender.json's config builds, so either file
        # may be the edited one
        raise ModelError(
            f"{exc} for the model recommender.json describes (damaged or edited?)"
        ) from None
    learner.load_state_dict(state)
    learner.to(resolve_device(cfg.device))
    enc_tensors = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
    _check_encoder(meta["encoder"], enc_tensors, int(vectors.shape[1]), path)
    rec = cls(
        learner,
        items,
        features=features,
        encoder_config=meta["encoder"],
        encoder_tensors=enc_tensors,
        popularity=_item_array(tensors, "popularity", len(items), path),
        # runs saved before fold-in existed have no offsets: all zero
        item_offsets=(
            _item_array(tensors, "item_offsets", len(items), path)
            if "item_offsets" in tensors
            else None
        ),
        rating_range=rating_range,
        metadata=meta.get("metadata", {}),
        cutpoints=(
            None
            if meta.get("rating_cutpoints") is None
            else RatingCutpoints.from_dict(
                meta["rating_cutpoints"], source=str(path / "recommender.json")
            )
        ),
    )
    return rec, trained_for


def _read_items(path: Path) -> pd.DataFrame:
    """``items.json`` as :meth:`Recommender.save` writes it: columns of text, one entry
    per item in each. A hand-edited or damaged file is a ModelError naming the column
    and entry (pandas said "All arrays must be of the same length", or read a number
    as an id no request could name)."""
    raw = load_json(path)
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: expected an object of columns, got {type(raw).__name__}")
    n = None
    for col in ("item_id", "title", "text"):
        values = raw.get(col)
        if not isinstance(values, list):
            raise ModelError(f"{path}: {col} must be a list, one entry per item (damaged?)")
        if n is not None and len(values) != n:
            raise ModelError(
                f"{path}: {col} has {len(values)} entries, item_id {n} (damaged or edited?)"
            )
        n = len(values)
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ModelError(
                f"{path}: {col}[{bad}] is {values[bad]!r:.40}, not text (damaged or edited?)"
            )
    # no request can name an empty id: it loaded, and the item surfaced later as an
    # "unknown item" nobody asked for
    blank = next((i for i, v in enumerate(raw["item_id"]) if not v.strip()), None)
    if blank is not None:
        raise ModelError(
            f"{path}: item_id[{blank}] is {raw['item_id'][blank]!r}, an empty id "
            "(damaged or edited?)"
        )
    # the three columns a run writes, whatever else an edit added beside them: a list of
    # another length was "All arrays must be of the same length", one of this length a
    # fourth column of the served catalogue
    items = pd.DataFrame({col: raw[col] for col in ("item_id", "title", "text")})
    repeated = items["item_id"][items["item_id"].duplicated()]
    if len(repeated):  # the second of two items with one id no request could reach
        raise ModelError(f"{path}: item_id {repeated.iloc[0]!r} is repeated (damaged or edited?)")
    return items


def _warn_missing_keys(saved: dict, full: dict, source: Path) -> None:
    """Warn of the config keys a run of format 2 or later lacks. Such a run was written
    with every key, so one missing was taken out by hand, and is read at today's
    default, which need not be what the run trained with. (A format 1 run may predate
    a key; its default is the behaviour from before the key, so it loads silently.)"""
    missing = _missing_keys(saved, full, "config")
    if missing:
        warnings.warn(
            f"{source}: {', '.join(missing)} missing (edited by hand?): read at the "
            "default, which may not be what the run trained with",
            stacklevel=3,
        )


def _missing_keys(saved: dict, full: dict, prefix: str) -> list[str]:
    missing = []
    for key, value in full.items():
        if key not in saved:
            missing.append(f"{prefix}.{key}")
        elif isinstance(value, dict) and isinstance(saved[key], dict):
            missing += _missing_keys(saved[key], value, f"{prefix}.{key}")
    return missing


def build_learner(
    vectors: torch.Tensor, cfg: TrainConfig, features: UserFeatureEncoder, offset: float
) -> MetaLearner:
    model = PreferenceNet(vectors, cfg.model, features.cardinalities, offset=offset)
    return MetaLearner(model, cfg)


def _check_counts(meta: dict, n_items: int, dim: int, source: Path) -> None:
    """The manifest's counts agree with the files they describe. They are written for
    readers of the JSON, not read back; one that disagrees or is not a count means the
    manifest was edited or belongs to another run, so it is refused rather than ignored."""
    encoder = meta["encoder"]
    for where, raw, actual in (
        ("n_items", meta.get("n_items", n_items), n_items),
        ("item_vector_dim", meta.get("item_vector_dim", dim), dim),
        ("encoder.dim", encoder.get("dim", 1), None),
    ):
        if not is_whole(raw) or raw < 1:
            raise ModelError(
                f"{source}: {where}: expected a positive whole number, got {raw!r:.60}"
            )
        if actual is not None and raw != actual:
            raise ModelError(f"{source}: {where} says {raw}; the run's files hold {actual}")


def _check_encoder(config: dict, tensors: dict[str, torch.Tensor], dim: int, path: Path) -> None:
    """What the run's encoder is rebuilt from when items are added, checked at load (its
    width; a TF-IDF's state): a damaged one loaded, served, and was met at the first
    added item, whose client was told its request was invalid (422)."""
    source = path / "recommender.json"
    kind = config.get("type")
    # a type of one's own (an Encoder of one's own, metarec.train(encoder=...)) loads and
    # serves; only adding items, which rebuilds the encoder, refuses it, as before
    if config.get("dim", dim) != dim:
        raise ModelError(
            f"{source}: encoder.dim says {config.get('dim')!r:.20}; the item vectors have {dim}"
        )
    if kind == "tfidf":
        from metarec.encoders.tfidf import check_saved_state

        try:
            check_saved_state(config, tensors)
        except ModelError as exc:
            raise ModelError(f"{path}: encoder: {exc} (damaged or edited?)") from None


def _item_array(
    tensors: dict[str, torch.Tensor], name: str, n_items: int, path: Path
) -> np.ndarray:
    """One value per catalogue item from ``model.safetensors``, or a ModelError naming the
    tensor: a popularity cut short was indexed past its end by the explanations
    (IndexError) or, with --no-reasons, served without a word."""
    source = path / "model.safetensors"
    if name not in tensors:
        raise ModelError(f"{source}: no tensor {name!r} (damaged or edited?)")
    values = tensors[name]
    if values.ndim != 1 or len(values) != n_items:
        raise ModelError(
            f"{source}: {name}: expected one value per item ({n_items}), got shape "
            f"{tuple(values.shape)} (damaged or edited?)"
        )
    if values.dtype not in (torch.float32, torch.float64):
        # a bool popularity read every count as 0 or 1 without a word (the "well liked"
        # reasons and the popularity order); the learner's tensors were refused so
        raise ModelError(
            f"{source}: {name}: expected float64 values (float32 in older runs), got "
            f"{str(values.dtype).removeprefix('torch.')} (damaged or edited?)"
        )
    array = values.numpy()  # cast to float64 once, by the constructor
    # popularity is a count of training ratings: a negative one (or a NaN in an integer
    # tensor require_finite does not read) is no run's
    if name == "popularity" and not (np.isfinite(array).all() and (array >= 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(array) & (array >= 0)))[0])
        raise ModelError(
            f"{source}: popularity[{bad}] is {array[bad]:g}; expected a count of ratings, "
            ">= 0 (damaged or edited?)"
        )
    return array


def _rating_range(raw: Any, path: Path) -> tuple[float, float]:
    # float() of "a" or None was a bare ValueError or TypeError naming no field
    scale = as_scale(raw)
    if scale is None:
        raise ModelError(
            f"{path / 'recommender.json'}: rating_range must be [low, high] with low <= high, "
            f"got {raw!r}"
        )
    return scale

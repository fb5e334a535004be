"""On-disk embedding cache keyed by (encoder id, sha256 of the text).

Layout: ``<dir>/<sanitised encoder id>/shard-<n>.safetensors``. Each shard
holds one float32 tensor ``vectors`` [m, dim]; its safetensors metadata holds
the JSON list of the m text hashes and the unsanitised encoder id. Shards are
written to a temporary file and then linked into place, so readers never see a
partial shard and concurrent writers never overwrite each other. A shard that
cannot be read is skipped with a warning; the texts it held are simply encoded
again.

Every store adds a shard, and a service adds one for each PUT of a few items, so
small shards are merged as they pile up (size tiers, as log-structured stores
do): once ``_MERGE_AT`` shards hold rows of the same order of magnitude (base
``_MERGE_AT``), they are written as one shard and then removed. A row is so
rewritten about log(n) times, not at every merge, and a lookup reads a few dozen
headers, not one per PUT since the service began. A reader that listed a shard a
merge has since removed lists the folder again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
from safetensors import safe_open
from safetensors.numpy import save
from tqdm.auto import tqdm

from metarec.encoders.base import (
    Encoder,
    FittableEncoder,
    check_texts,
    needs_fit,
    weights_unknown,
)
from metarec.errors import BusyError, ModelError
from metarec.locks import exclusive
from metarec.tempfiles import create_temp_file, sync_directory

__all__ = ["EmbeddingCache", "cached_encode", "default_cache", "text_hash"]

_FORMAT = "metarec-embeddings-1"
_SHARD_RE = re.compile(r"^shard-(\d+)\.safetensors$")
# Bounds the JSON hash list in a shard header (~65 bytes a row) well below
# safetensors' header size limit.
_MAX_ROWS_PER_SHARD = 100_000
# texts encoded, then stored, at a time: what an interrupted encoding keeps (about 40 s
# of MiniLM on a CPU core); a lookup of 500,000 items then reads the few dozen shards
# the merges leave
ENCODE_CHUNK = 4096
# shards of one size tier merged into one (see the module's docstring)
_MERGE_AT = 16


def text_hash(text: str) -> str:
    """Hex sha256 of the UTF-8 text (lone surrogates kept rather than rejected)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class _ShardIndex:
    hashes: list[str]
    dim: int
    # sha256 of the vector bytes; None in shards written before 2026-12-02, whose
    # bytes are only checked for shape and finiteness
    digest: str | None = None
    # the digest covers the hash list too (shards written since 2026-12-06): two
    # hashes swapped in the header served each text the other's vector
    digest_covers_hashes: bool = False


class EmbeddingCache:
    """Vectors already computed, per encoder id, under ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        # Parsed shard headers, keyed by path and invalidated by size/mtime change.
        self._index: dict[Path, tuple[tuple[int, int], _ShardIndex | None]] = {}

    def encoder_dir(self, encoder_id: str) -> Path:
        """Directory holding the shards for ``encoder_id``."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id).strip("._")[:80] or "encoder"
        # Sanitising can map distinct ids to one name; the hash keeps them apart.
        digest = hashlib.sha256(encoder_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        return self.directory / f"{safe}-{digest}"

    def lookup(self, encoder_id: str, hashes: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """Cached vectors for those of ``hashes`` that are present."""
        wanted = set(hashes)
        found: dict[str, npt.NDArray[np.float32]] = {}
        dim: int | None = None
        seen: set[Path] = set()
        for _ in range(3):  # a merge that removed listed shards: their rows are in a new one
            vanished = False
            for path in self._shards(encoder_id):
                if path in seen or len(found) == len(wanted):
                    continue
                seen.add(path)
                index = self._read_index(path, encoder_id)
                if index is None:
                    vanished |= not path.exists()
                    continue
                if dim is None:
                    dim = index.dim
                elif index.dim != dim:
                    _warn(path, f"holds {index.dim}-dim vectors where other shards hold {dim}")
                    continue
                rows = [i for i, h in enumerate(index.hashes) if h in wanted and h not in found]
                if not rows:
                    continue
                vectors = self._read_vectors(path, index)
                if vectors is None:
                    vanished |= not path.exists()
                    continue
                for i in rows:
                    found[index.hashes[i]] = vectors[i]
            if not vanished or len(found) == len(wanted):
                break
        return found

    def store(
        self, encoder_id: str, hashes: Sequence[str], vectors: npt.NDArray[np.float32]
    ) -> None:
        """Add vectors as new shard(s). Failures warn: the cache is only an optimisation."""
        if len(hashes) != len(vectors):
            raise ValueError(f"{len(hashes)} hashes for {len(vectors)} vectors")
        if not hashes:
            return
        directory = self.encoder_dir(encoder_id)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _remove_orphans(directory)
            self._write_shards(directory, encoder_id, hashes, vectors)
        except OSError as e:
            warnings.warn(
                f"embedding cache: cannot write to {directory}: {e}; vectors were not cached",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        if sys.platform == "win32":
            # no lock to keep two mergers apart, and a shard another process has open
            # cannot be removed there: the shards stay as written
            return
        try:
            self._merge_small_shards(directory, encoder_id)
        except OSError as e:  # the vectors are cached; only the tidying failed
            warnings.warn(
                f"embedding cache: cannot merge small shards in {directory}: {e}",
                RuntimeWarning,
                stacklevel=3,
            )

    def _merge_small_shards(self, directory: Path, encoder_id: str) -> None:
        """Merge the shards of a size tier that holds ``_MERGE_AT`` of them. One merger
        at a time per folder; another process's store skips merging while it runs."""
        if len(self._shards(encoder_id)) < _MERGE_AT:
            return
        with contextlib.suppress(BusyError), exclusive(directory / "merge", "merging"):
            tiers: dict[int, list[tuple[Path, _ShardIndex]]] = {}
            for path in self._shards(encoder_id):  # listed again under the lock
                index = self._read_index(path, encoder_id)
                if index is not None and len(index.hashes) * _MERGE_AT <= _MAX_ROWS_PER_SHARD:
                    tiers.setdefault(_tier(len(index.hashes)), []).append((path, index))
            for shards in tiers.values():
                if len(shards) >= _MERGE_AT:
                    self._merge(directory, encoder_id, shards)

    def _merge(
        self, directory: Path, encoder_id: str, shards: list[tuple[Path, _ShardIndex]]
    ) -> None:
        hashes: list[str] = []
        parts: list[npt.NDArray[np.float32]] = []
        kept: set[str] = set()
        dim = shards[0][1].dim
        merged: list[Path] = []
        for path, index in shards:
            if index.dim != dim:
                continue  # lookup warns about it; merging would hide it in a bigger shard
            vectors = self._read_vectors(path, index)
            if vectors is None:
                continue
            new = [i for i, h in enumerate(index.hashes) if h not in kept]
            hashes += [index.hashes[i] for i in new]
            kept.update(index.hashes)
            parts.append(vectors[new])
            merged.append(path)
        if len(merged) < 2:
            return
        # published before its sources go, so every row stays findable throughout; a
        # tier of more than _MERGE_AT shards (merges skipped while another process held
        # the lock) is cut at the shard size limit as any store is
        self._write_shards(directory, encoder_id, hashes, np.concatenate(parts))
        for path in merged:
            with contextlib.suppress(OSError):  # gone already, or held open elsewhere
                path.unlink()
            self._index.pop(path, None)

    def _shards(self, encoder_id: str) -> list[Path]:
        directory = self.encoder_dir(encoder_id)
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            msg = f"embedding cache: cannot list {directory}: {e}"
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
            return []
        numbered = [(int(m.group(1)), n) for n in names if (m := _SHARD_RE.match(n))]
        return [directory / n for _, n in sorted(numbered)]

    def _read_index(self, path: Path, encoder_id: str) -> _ShardIndex | None:
        try:
            st = path.stat()
        except OSError:
            self._index.pop(path, None)  # merged away (or removed) since listing
            return None
        key = (st.st_size, st.st_mtime_ns)
        cached = self._index.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        index = _parse_header(path, encoder_id)
        self._index[path] = (key, index)
        return index

    def _read_vectors(self, path: Path, index: _ShardIndex) -> npt.NDArray[np.float32] | None:
        rows, dim, digest = len(index.hashes), index.dim, index.digest
        try:
            with safe_open(str(path), framework="np") as f:
                vectors = np.asarray(f.get_tensor("vectors"))
        except FileNotFoundError:
            return None  # merged into another shard since it was listed, not damaged
        except Exception as e:  # safetensors raises its own error types
            _discard(path, f"vectors unreadable ({e})")
            return None
        if vectors.dtype != np.float32 or vectors.shape != (rows, dim):
            _discard(path, f"vectors have dtype {vectors.dtype} shape {vectors.shape}")
            return None
        if not np.isfinite(vectors).all():
            _discard(path, "vectors contain non-finite values")
            return None
        hashes = index.hashes if index.digest_covers_hashes else None
        if digest is not None and _digest(vectors, hashes) != digest:
            # zeroed tail after a crash, swapped rows, a flipped bit: same size, wrong values
            _discard(path, "vectors do not match their checksum")
            return None
        return vectors.astype(np.float32, copy=False)

    def _write_shards(
        self,
        directory: Path,
        encoder_id: str,
        hashes: Sequence[str],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        """As many shards as the rows need, each of at most ``_MAX_ROWS_PER_SHARD``."""
        for start in range(0, len(hashes), _MAX_ROWS_PER_SHARD):
            stop = start + _MAX_ROWS_PER_SHARD
            self._write_shard(directory, encoder_id, hashes[start:stop], vectors[start:stop])

    def _write_shard(
        self,
        directory: Path,
        encoder_id: str,
        hashes: Sequence[str],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        metadata = {
            "format": _FORMAT,
            "encoder_id": encoder_id,
            "hashes": json.dumps(list(hashes)),
            "sha256_rows": _digest(vectors, list(hashes)),
        }
        # written through our own descriptor: safetensors' save_file made the file
        # owner-only (0600) whatever the umask, so another account could not read it
        fd, tmp = create_temp_file(directory, ".shard-", ".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(save({"vectors": vectors}, metadata))
                fh.flush()
                os.fsync(fh.fileno())  # on disk before it gets a shard's name
            _publish(tmp, directory)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


# a live writer holds its temporary shard for seconds; one this old was left by a
# process killed mid-write (SIGKILL, power loss), and nothing else would remove it
_ORPHAN_AGE_S = 3600.0
_TEMP_SHARD = re.compile(r"^\.shard-[0-9a-f]{12}\.tmp$")


def _remove_orphans(directory: Path) -> None:
    now = time.time()
    for entry in os.scandir(directory):
        if _TEMP_SHARD.match(entry.name):
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > _ORPHAN_AGE_S:
                    os.unlink(entry.path)


def _publish(tmp: Path, directory: Path) -> None:
    """Give the complete file ``tmp`` the next free shard name, never overwriting one."""
    numbers = [int(m.group(1)) for n in os.listdir(directory) if (m := _SHARD_RE.match(n))]
    n = max(numbers, default=-1) + 1
    while True:
        final = directory / f"shard-{n}.safetensors"
        try:
            # A hard link fails if the name is taken, unlike os.replace, so a
            # concurrent writer that picked the same number cannot be clobbered.
            os.link(tmp, final)
            sync_directory(directory)
            return
        except FileExistsError:
            n += 1
        except OSError:
            # No hard links on this filesystem: accept the small overwrite race.
            if final.exists():
                n += 1
                continue
            os.replace(tmp, final)
            sync_directory(directory)
            return


def _tier(rows: int) -> int:
    """The shard's size tier: its row count's order of magnitude, base ``_MERGE_AT``."""
    tier = 0
    while rows >= _MERGE_AT:
        rows //= _MERGE_AT
        tier += 1
    return tier


def _parse_header(path: Path, encoder_id: str) -> _ShardIndex | None:
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            keys = list(f.keys())
            shape = f.get_slice("vectors").get_shape() if "vectors" in keys else None
    except FileNotFoundError:
        return None  # merged into another shard since it was listed
    except Exception as e:  # safetensors raises its own error types on bad files
        _discard(path, f"unreadable ({e})")
        return None
    if metadata.get("format") != _FORMAT or shape is None or len(shape) != 2:
        _warn(path, "is not a metarec embedding shard")
        return None
    if metadata.get("encoder_id") != encoder_id:
        _warn(path, f"belongs to encoder {metadata.get('encoder_id')!r}, not {encoder_id!r}")
        return None
    try:
        hashes = json.loads(metadata.get("hashes", ""))
    except json.JSONDecodeError:
        hashes = None
    if (
        not isinstance(hashes, list)
        or not all(isinstance(h, str) for h in hashes)
        or len(hashes) != shape[0]
    ):
        _discard(path, "has a hash list that does not match its vectors")
        return None
    if "sha256_rows" in metadata:
        return _ShardIndex(hashes, int(shape[1]), metadata["sha256_rows"], True)
    return _ShardIndex(hashes=hashes, dim=int(shape[1]), digest=metadata.get("sha256"))


def _digest(vectors: npt.NDArray[np.float32], hashes: list[str] | None = None) -> str:
    """sha256 of the vector bytes, after the texts' hashes in order where given."""
    h = hashlib.sha256()
    for text_hash_ in hashes or ():
        h.update(text_hash_.encode("utf-8", "surrogatepass"))
    h.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return h.hexdigest()


def _warn(path: Path, problem: str) -> None:
    warnings.warn(
        f"embedding cache: ignoring shard {path}: {problem}; its texts will be re-encoded",
        RuntimeWarning,
        stacklevel=4,
    )


def _discard(path: Path, problem: str) -> None:
    """A damaged shard is removed, not only skipped: it stayed beside the shard that
    replaced it and was warned about on every later run. Shards are published whole
    (linked from a finished file), so one that fails here was damaged at rest; a
    shard of another format version is skipped by :func:`_warn` instead."""
    warnings.warn(
        f"embedding cache: removing damaged shard {path}: {problem}; its texts will be re-encoded",
        RuntimeWarning,
        stacklevel=4,
    )
    with contextlib.suppress(OSError):
        path.unlink()


def default_cache() -> EmbeddingCache:
    """The cache training fills by default: ``$METAREC_CACHE/embeddings``, else
    ``~/.cache/metarec/embeddings``. Items added later go there too, so a service
    that re-adds its stored items at every start encodes each text once, not at
    every start."""
    from metarec.encoders.sentence import metarec_cache_dir  # torch-free module split

    return _cache_at(metarec_cache_dir() / "embeddings")


@functools.lru_cache(maxsize=8)
def _cache_at(directory: Path) -> EmbeddingCache:
    # one object per folder and process: its parsed shard headers are reused by every
    # later add, where a new object read each shard's header again
    return EmbeddingCache(directory)


def cached_encode(
    encoder: Encoder,
    texts: Sequence[str],
    cache: EmbeddingCache | None,
    *,
    progress: bool = False,
) -> npt.NDArray[np.float32]:
    """Encode ``texts`` in order, reusing and extending ``cache``.

    Only texts missing from the cache are encoded, each distinct text once.
    An encoder that must be fitted first (TF-IDF) is fitted on ``texts``, as
    its own ``encode`` would do. With ``cache=None`` this still deduplicates.
    """
    items = check_texts(texts)
    if items and needs_fit(encoder):
        cast(FittableEncoder, encoder).fit(items)  # its id, the cache key, depends on the fit
    if not items:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    hashes = [text_hash(t) for t in items]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)

    # a hub model not yet downloaded: which revision the download brings is not known,
    # so nothing is read under its id; once downloaded, its id names the revision
    found = (
        cache.lookup(encoder.id, list(first))
        if cache is not None and not weights_unknown(encoder.id)
        else {}
    )
    # stored a chunk at a time: one store at the end lost a whole interrupted encoding
    # (minutes of a large catalogue's) to Ctrl-C. Chunks are cut from the distinct texts
    # in order, not from the missing ones, so that a rerun encodes the chunk it was
    # stopped in with the same batch neighbours as a run never stopped
    distinct = list(first)
    chunks = [
        [h for h in distinct[i : i + ENCODE_CHUNK] if h not in found]
        for i in range(0, len(distinct), ENCODE_CHUNK)
    ]
    chunks = [c for c in chunks if c]
    several = len(chunks) > 1
    bar = tqdm(
        total=sum(map(len, chunks)),
        desc="encoding item texts",
        unit="text",
        disable=not (progress and several),
    )
    # the cached width, which the first chunk is held to; each later chunk to the first's
    cached = {v.shape[0] for v in found.values()}
    width = cached.pop() if cached else None
    with bar:
        for n, missing in enumerate(chunks):
            # one chunk shows the encoder's own progress, as before; several, this bar
            new = _checked(encoder, [items[first[h]] for h in missing], progress and not several)
            if width is not None and new.shape[1] != width:
                if n == 0 and cache is not None and found:
                    raise ModelError(
                        f"encoder {encoder.id!r} now gives {new.shape[1]}-dim vectors but "
                        f"{cache.encoder_dir(encoder.id)} holds {width}-dim ones; the encoder "
                        "id misses a setting that changes its output — delete that directory"
                    )
                raise ModelError(
                    f"encoder {encoder.id!r} gave {width}-dim vectors for some texts and "
                    f"{new.shape[1]}-dim ones for others in one call; nothing of it was "
                    "cached after that"
                )
            width = new.shape[1]
            if cache is not None and not weights_unknown(encoder.id):
                cache.store(encoder.id, missing, new)
            found.update(zip(missing, new, strict=True))
            bar.update(len(missing))
    return np.stack([found[h] for h in hashes]).astype(np.float32, copy=False)


def _checked(encoder: Encoder, texts: list[str], progress: bool) -> npt.NDArray[np.float32]:
    out = np.asarray(encoder.encode(texts, progress=progress))
    if out.ndim != 2 or out.shape[0] != len(texts):
        raise ModelError(
            f"encoder {encoder.id!r} returned shape {out.shape} for {len(texts)} texts"
        )
    out = np.ascontiguousarray(out, dtype=np.float32)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        # stored, they were read back as a damaged shard (its good rows deleted with
        # them), and training on them ended as "meta-training diverged"
        raise ModelError(
            f"encoder {encoder.id!r} returned NaN or infinite vectors for {int(bad.sum()):,} "
            f"of {len(texts):,} texts (e.g. {texts[int(np.flatnonzero(bad)[0])]!r:.80}): are "
            "its weights damaged? Nothing was cached"
        )
    return out

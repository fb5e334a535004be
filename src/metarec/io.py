"""Atomic artifact I/O: safetensors for tensors, JSON for everything else.

Every write goes to a temporary file in the same directory and is moved into
place with ``os.replace``, so a crash leaves either the old file or the new
one, never half of one. Nothing is pickled. A writer killed outright (SIGKILL,
power loss) leaves its hidden temporary file behind; :func:`remove_orphan_temps`
clears them where a lock says no live writer can own one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from metarec.errors import DataError, MetarecError, ModelError
from metarec.tempfiles import TOKEN_BYTES, create_temp_file, sync_directory


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = create_temp_file(path.parent, *_temp_affixes(path.name))
    except OSError as exc:
        raise _about(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        sync_directory(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _about(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_lines_atomic(path: str | Path, lines: list[str]) -> None:
    """A text file of ``lines`` (a Markdown report), each ended by a newline, atomically."""
    write_bytes_atomic(path, "".join(f"{line}\n" for line in lines).encode())


# what write_bytes_atomic and persist's folders write through: ".NAME.<12 hex>.tmp"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def _temp_affixes(name: str) -> tuple[str, str]:
    """What :func:`write_bytes_atomic` puts around the random part of ``name``'s
    temporary name."""
    return f".{name}.", ".tmp"


def temp_name(name: str) -> str:
    """The temporary name, random part aside, :func:`write_bytes_atomic` writes ``name``
    through: as long as any it makes."""
    prefix, suffix = _temp_affixes(name)
    return f"{prefix}{'0' * 2 * TOKEN_BYTES}{suffix}"


def name_limit(folder: str | Path) -> int:
    """The longest file name, in bytes, that ``folder`` (or where it would be made)
    takes: 255 on most file systems, 143 on eCryptfs."""
    try:
        return int(os.pathconf(nearest_existing(folder), "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or no answer
        return 255


def remove_orphan_temps(folder: str | Path) -> None:
    """Remove the temporary files and folders killed writers left in ``folder``.

    Only while holding the lock of what is written there (a run folder, a
    checkpoint folder): a live writer's file would go too. A kill during a
    checkpoint left megabytes in ``.checkpoint-*.tmp`` that nothing removed."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not _TEMP_NAME.match(entry.name):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove: it harms no reader
            continue


def _about(exc: OSError, path: Path) -> OSError:
    """The error as one about ``path``, the file the caller asked for, not the hidden
    temporary file it was being written through (``.x.md.3f9a.tmp -> x.md``)."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def json_bytes(obj: Any, *, strict: bool = False) -> bytes:
    """``obj`` as the JSON :func:`save_json` writes; TypeError for what JSON cannot hold,
    and with ``strict`` ValueError for NaN or an infinity, which Python's json writes
    but strict readers refuse."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_jsonable, allow_nan=not strict)
    return (text + "\n").encode()


def nearest_existing(path: str | Path) -> Path:
    """``path`` itself or its nearest ancestor that exists: where a folder that is not
    there yet would be made, so what decides whether it can be."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def save_json(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, json_bytes(obj))


def load_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ModelError(f"{path}: not valid JSON ({exc.msg}: {where})") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not UTF-8 text, so not JSON metarec wrote") from None
    except RecursionError:  # [[[[...]]]] past the parser's depth: a traceback, exit 1
        raise ModelError(f"{path}: nested too deeply, so not JSON metarec wrote") from None


@contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Reading the fields of one of our files (a split, a checkpoint, a result): a file
    damaged or edited by hand (a field missing, of another type) is one DataError
    naming the file and what it should be, not a traceback from the line that used it."""
    try:
        yield
    except MetarecError:
        raise
    except KeyError as exc:
        raise DataError(f"not a {what}: missing field {exc.args[0]!r}", path=path) from None
    # OverflowError: a number past what a float holds (a JSON 10**400) met float()
    except (TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise DataError(f"not a {what} (damaged or edited?): {exc}", path=path) from None


def check_format_version(
    found: object, readable: range, path: str | Path, field: str = "format_version"
) -> int:
    """``found`` as an int if this metarec reads that format version (one of
    ``readable``), else a ModelError naming the file, the version and what to do: a
    newer file needs a newer metarec; an older one, a run trained again. A bool or
    1.0 is no version (``True == 1`` let one through)."""
    from metarec import __version__

    newest = readable[-1]
    if found is None:
        raise ModelError(f"{path}: no {field} (not written by metarec, or damaged)")
    if not isinstance(found, int) or isinstance(found, bool):
        raise ModelError(f"{path}: {field} {found!r:.40} is not a whole number (damaged?)")
    if found > newest:
        raise ModelError(
            f"{path}: {field} {found} is newer than this metarec ({__version__}) reads "
            f"(up to {newest}): upgrade metarec to load it"
        )
    if found not in readable:
        raise ModelError(
            f"{path}: {field} {found} is older than this metarec ({__version__}) reads "
            f"({readable[0]} to {newest}): train it again with this version"
        )
    return found


def warn_unknown_keys(
    raw: Mapping[str, Any], known: Collection[str], path: str | Path, what: str
) -> None:
    """Warn, naming ``path``, of the keys of ``raw`` that are none of ``known``. They
    are not refused, so a file a later version wrote (with fields added) still loads;
    but a misspelt key ("test_user") was dropped without a word, its field then read
    as missing or at its default."""
    unknown = sorted(str(key) for key in raw if key not in known)
    if unknown:
        warnings.warn(
            f"{path}: key(s) {', '.join(map(repr, unknown))} not read: not a field of a "
            f"{what}, which has {', '.join(map(repr, sorted(known)))} (misspelt, or from "
            "a later metarec?)",
            stacklevel=3,
        )


# the safetensors metadata key under which save_tensors records its tensors' digest
DIGEST_KEY = "metarec.sha256"


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of each tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # no copy
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write ``tensors`` atomically, with their digest in the file's metadata: a byte
    changed on disk since (a bit flip, a bad copy) loaded with other numbers and no
    word, where safetensors checks only that the header and sizes agree."""
    # safetensors refuses shared or non-contiguous storage; clone makes each tensor its own.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    write_bytes_atomic(path, save(flat, metadata={DIGEST_KEY: tensors_digest(flat)}))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: file not found")
    try:
        with path.open("rb"):  # safetensors reports a permission error as a missing file
            pass
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror or exc}") from None
    try:
        with safe_open(str(path), "pt") as fh:  # what load_file does, and the metadata
            said = (fh.metadata() or {}).get(DIGEST_KEY)  # None: before digests, or elsewhere
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (not a dict: no __iter__)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    if said is not None and said != tensors_digest(tensors):
        raise ModelError(
            f"{path}: its tensors do not match the checksum written with them (the file "
            "changed on disk since it was written: damaged or edited?)"
        )
    return tensors


def check_tensors_like(
    reference: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    source: str | Path,
    *,
    prefix: str = "",
    whole: bool = True,
) -> None:
    """ValueError unless ``given`` has ``reference``'s keys (all of them if ``whole``),
    shapes and dtypes. The message names ``source`` (the file) and the first bad tensor,
    as ``prefix + key`` (its name in the file).

    Checked before ``load_state_dict``, which casts a tensor of another dtype without a
    word (int32 weights cut to whole numbers) and words a shape mismatch over many lines
    naming neither the file nor the first bad tensor."""
    missing = sorted(set(reference) - set(given)) if whole else []
    extra = sorted(set(given) - set(reference))
    if missing or extra:
        raise ValueError(
            f"{source}: tensors missing {[prefix + k for k in missing[:3]]}, "
            f"unknown {[prefix + k for k in extra[:3]]}"
        )
    for key, value in given.items():
        want = reference[key]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise ValueError(
                f"{source}: tensor {prefix}{key} is {value.dtype} of shape "
                f"{tuple(value.shape)}, expected {want.dtype} of shape {tuple(want.shape)}"
            )


def require_finite(tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding a NaN or an infinity: a damaged file or a diverged run,
    which would otherwise rank by garbage (NaN sorts anywhere) and exit 0. Not part of
    :func:`load_tensors`, since some saved arrays hold infinities by design (a tree
    split that sends only missing values one way has threshold +inf)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(
                f"{path}: tensor {name!r} holds {bad} NaN or infinite value(s); "
                "the file is damaged or the run diverged, so retrain or restore it"
            )


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj

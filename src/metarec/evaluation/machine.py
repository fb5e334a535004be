"""What a result was measured on: versions, commit, CPU and the kernels torch picked.

Every benchmark record carries :func:`machine_info`, since float results of
torch's CPU kernels, and so meta-trained networks, can differ between CPUs and
instruction sets; a reader comparing two records needs to know whether they
came from the same kind of machine and the same code.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def _git(*args: str, cwd: Path | None = None, timeout: float = 5) -> bytes | None:
    """``git ARGS`` run in ``cwd`` (default: this module's folder): its output, None
    where it fails."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd or Path(__file__).resolve().parent, capture_output=True,
            timeout=timeout,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _in_own_checkout() -> bool:
    """Whether metarec runs from a git work tree that holds its code: one installed into
    a ``.venv`` inside the user's own repository is in that work tree too, and its
    commit (the user's) was recorded as metarec's, and keyed every resume to it."""
    return _git("ls-files", "--error-unmatch", Path(__file__).name) is not None


def git_commit() -> str | None:
    """The checkout's commit, when metarec runs from a git work tree of its own code
    (else None)."""
    if not _in_own_checkout():
        return None
    out = _git("rev-parse", "HEAD")
    return (out.decode().strip() or None) if out is not None else None


def uncommitted_digest() -> str | None:
    """A digest of the package's uncommitted changes (``git diff HEAD`` of its own
    folder), None where there are none or no git work tree: a benchmark resumed after
    an edit that is not committed yet must not take the earlier code's folds."""
    import hashlib

    here = Path(__file__).resolve().parent.parent  # src/metarec
    if not _in_own_checkout():
        return None
    diff = _git("diff", "HEAD", "--", ".", cwd=here, timeout=10)
    # a new module not yet added is no part of the diff, and is code all the same
    untracked = _git("ls-files", "-z", "--others", "--exclude-standard", "--", ".", cwd=here,
                     timeout=10)  # fmt: skip
    if diff is None or untracked is None:
        return None
    digest = hashlib.blake2b(diff, digest_size=8)
    for name in sorted(n for n in untracked.split(b"\0") if n):
        digest.update(name + b"\0")
        try:
            digest.update((here / name.decode()).read_bytes())
        except OSError:
            continue  # gone since it was listed
    return digest.hexdigest() if diff or untracked else None


def cpu_model() -> str | None:
    """The CPU's model name where the OS says it (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    from metarec import __version__

    return {
        "metarec": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }

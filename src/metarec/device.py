"""Which torch device a model runs on: one rule for every model, with clear refusals.

``"auto"`` takes a CUDA GPU when torch sees one and the CPU otherwise, so the same
config trains on a laptop and on a GPU server. Apple's (``"mps"``) and Intel's
(``"xpu"``) GPUs are taken only when named, as metarec is tested on CUDA and the
CPU only. A named device (``"cpu"``,
``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``) is taken as asked, and refused
with a :class:`~metarec.errors.ConfigError` when the name is not one of these or
this machine does not have it; torch's own errors for these cases are an
``AssertionError`` or a ``RuntimeError`` listing twenty device types.

Two more rules hold on every device. Apple's GPU has no float64, so the few
float64 computations (a ridge's Cholesky solve, a tree walk against float64
thresholds, the catalogue's mean vector) run on the CPU there
(:func:`float64_device`) rather than fail. And on CUDA, training runs with
torch's deterministic kernels (:func:`deterministic_on`), since a float sum by
atomic adds (``index_add_``, ``scatter_add_``) adds in a different order on each
run and the same seed would not give the same numbers. metarec's tests run on
the CPU only; these two rules follow torch's documentation, not a test on that
hardware.

The names are checked without importing torch, so validating a config stays
cheap (the command line checks ``--set device=...`` before loading anything).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from metarec.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_NAME = re.compile(r"auto|cpu|mps|(?:cuda|xpu)(?::\d+)?")


def check_device(name: object, where: str = "device") -> str:
    """``name`` if it is a device name metarec accepts, else ConfigError.

    Availability is not checked here, so a config written on a GPU machine still
    loads on another one; :func:`resolve_device` checks it when the device is used.
    """
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: {name!r} is not a device; use auto, cpu, cuda, cuda:N, mps or xpu"
        )
    return name


def resolve_device(name: str, where: str = "device") -> torch.device:
    """The torch device for ``name`` (see the module notes); refuses a missing one."""
    import torch

    if check_device(name, where) == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif not device_available(name):
        raise ConfigError(
            f"{where}: {name!r} asked for, but torch sees no such device here; "
            "use auto (a GPU when there is one) or cpu"
        )
    else:
        device = torch.device(name)
    if device.type == "cuda":
        # here, where metarec first chooses CUDA: cuBLAS reads it once, when it first
        # runs, and the catalogue's encoding on the GPU comes before any training
        # (set only in deterministic_on, it came too late to count)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return device


def cuda_devices() -> list[int]:
    """Every CUDA device's index, for ``torch.random.fork_rng``: ``torch.manual_seed``
    reseeds them all, whatever device a training runs on (one on the CPU too), and
    fork_rng's default forks them all with a warning past one."""
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


_P = ParamSpec("_P")
_R = TypeVar("_R")


def own_random_state(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` with the caller's torch random state put back after it: a
    ``torch.manual_seed`` inside (a seeded training) left the caller's generators, the
    CPU's and every CUDA device's, at its own seed."""

    @functools.wraps(fn)
    def kept(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        import torch

        with torch.random.fork_rng(devices=cuda_devices()):
            return fn(*args, **kwargs)

    return kept


def device_available(name: str) -> bool:
    """Whether this machine has the device ``name`` names (``auto`` always)."""
    import torch

    if check_device(name) == "auto":
        return True
    device = torch.device(name)
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return bool(torch.backends.mps.is_available())
    if device.type == "xpu":
        return hasattr(torch, "xpu") and bool(torch.xpu.is_available())
    return True


def float64_device(device: torch.device) -> torch.device:
    """``device``, or the CPU where ``device`` has no float64 (Apple's MPS)."""
    import torch

    return torch.device("cpu") if device.type == "mps" else device


# cuBLAS's deterministic workspace size from torch's reproducibility notes; it must
# be in the environment before cuBLAS first runs in the process, and a user's own
# setting is kept
CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def deterministic_on(device: torch.device) -> Iterator[None]:
    """On a CUDA device, torch's deterministic kernels while the block runs, and the
    caller's setting after; elsewhere nothing changes (the CPU's kernels used here add
    in a fixed order already). ``warn_only``: an op with no deterministic kernel
    warns rather than stopping a long fit."""
    import torch

    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    was = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn_only)

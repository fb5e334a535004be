"""Which torch device a model runs on: one rule for every model, with clear refusals.

``"auto"`` takes a CUDA GPU when torch sees one and the CPU otherwise, so the same
config trains on a laptop and on a GPU server. Apple's (``"mps"``) and Intel's
(``"xpu"``) GPUs are taken only when named, as metarec is tested on CUDA and the
CPU only. A named device (``"cpu"``,
``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``) is taken as asked, and refused
with a :class:`~metarec.errors.ConfigError` when the name is not one of these or
this machine does not have it; torch's own errors for these cases are an
``AssertionError`` or a ``RuntimeError`` listing twenty device types.

The names are checked without importing torch, so validating a config stays
cheap (the command line checks ``--set device=...`` before loading anything).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not device_available(name):
        raise ConfigError(
            f"{where}: {name!r} asked for, but torch sees no such device here; "
            "use auto (a GPU when there is one) or cpu"
        )
    return torch.device(name)


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

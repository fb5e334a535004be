"""One device rule for every model: names checked up front, availability when used."""

from __future__ import annotations

import os

import pytest
import torch

from metarec.device import (
    CUBLAS_WORKSPACE,
    check_device,
    deterministic_on,
    float64_device,
    resolve_device,
)
from metarec.errors import ConfigError
from metarec.models.episodic import EpisodicLinear
from metarec.peers.melu import MeLU

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps", "xpu:1"])
def test_accepted_names(name: str) -> None:
    assert check_device(name) == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "", "cpu ", 0, None])
def test_refused_names_say_what_is_accepted(name: object) -> None:
    with pytest.raises(ConfigError, match=r"is not a device; use auto, cpu, cuda, cuda:N"):
        check_device(name, "device")


def test_auto_takes_the_gpu_when_there_is_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@no_cuda
def test_a_missing_gpu_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"melu-5: device: 'cuda' asked for, but torch sees no"):
        resolve_device("cuda", "melu-5: device")


def test_a_cuda_index_past_the_machine_is_refused() -> None:
    with pytest.raises(ConfigError, match="cuda:99"):
        resolve_device("cuda:99")


def test_models_check_the_name_when_built() -> None:
    with pytest.raises(ConfigError, match="metarec-episodic: device: 'gpu'"):
        EpisodicLinear(device="gpu")
    with pytest.raises(ConfigError, match="melu-5: device: 'GPU'"):
        MeLU(local_steps=5, device="GPU")


@pytest.mark.parametrize(
    ("name", "runs_on"), [("mps", "cpu"), ("cuda:1", "cuda:1"), ("cpu", "cpu")]
)
def test_float64_work_leaves_only_a_device_without_float64(name: str, runs_on: str) -> None:
    assert float64_device(torch.device(name)) == torch.device(runs_on)


def test_cuda_work_runs_with_deterministic_kernels_and_restores_the_callers_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # only flags and the environment change: no CUDA device is touched
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_on(torch.device("cpu")):
        assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with deterministic_on(torch.device("cuda", 0)):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    assert not torch.are_deterministic_algorithms_enabled()
    try:  # a caller's strict mode stays strict after, and its workspace setting stays
        torch.use_deterministic_algorithms(True)
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        with pytest.raises(RuntimeError), deterministic_on(torch.device("cuda")):
            raise RuntimeError("the block failed")
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(False)


def test_choosing_cuda_sets_cublas_workspace_before_any_cuda_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cuBLAS reads its workspace size once, when it first runs; the catalogue is
    encoded on the GPU before training starts, so setting it on entering the
    deterministic kernels came too late. It is set where CUDA is chosen, a user's
    own value kept."""
    from metarec import device

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    resolve_device("cpu")
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    monkeypatch.setattr(device, "device_available", lambda name: True)  # a machine with CUDA
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    resolve_device("cuda")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"

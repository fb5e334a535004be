"""Typed configs: TOML files, --set overrides, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metarec.config import TrainConfig
from metarec.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train.toml"


def test_example_config_loads() -> None:
    cfg = TrainConfig.from_toml(EXAMPLE)
    assert cfg.algorithm == "maml" and cfg.model.factors == 32 and cfg.model.hidden == 64


def test_overrides_parse_as_toml_values() -> None:
    cfg = TrainConfig().with_overrides(
        ["inner_steps=3", "model.item_id_dropout=0.5", "algorithm=reptile", "eval_inner_steps=7"]
    )
    assert (cfg.inner_steps, cfg.model.item_id_dropout, cfg.algorithm) == (3, 0.5, "reptile")
    assert cfg.steps_at_eval == 7
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "assignment, needle",
    [
        ("inner_steps=three", "inner_steps: expected int"),
        ("adapt=everything", "adapt"),
        ("model.nope=1", "unknown key(s) nope"),
        ("inner_steps", "expected key=value"),
        ("epochs=0", "epochs: must be > 0"),
        ("inner_steps.x=1", "not a config section"),
    ],
)
def test_bad_overrides(assignment: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        TrainConfig().with_overrides([assignment])


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("algorithm = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        TrainConfig.from_toml(bad)


def test_implicit_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="support_positives"):
        TrainConfig(objective="bce", support_positives="all").validate()
    with pytest.raises(ConfigError, match="softmax"):
        TrainConfig(objective="softmax", adapt="all").validate()
    TrainConfig(objective="softmax", support_positives="liked").validate()

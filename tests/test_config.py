"""Typed configs: TOML files, --set overrides, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metarec.config import ModelConfig, TrainConfig
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


def test_none_resets_an_optional_key_and_is_refused_for_a_required_one() -> None:
    cfg = TrainConfig().with_overrides(["eval_inner_steps=7", "like_threshold=4"])
    cleared = cfg.with_overrides(["eval_inner_steps=none", "like_threshold=None"])
    assert cleared.eval_inner_steps is None and cleared.like_threshold is None
    assert cleared.steps_at_eval == cleared.inner_steps
    with pytest.raises(ConfigError, match="inner_steps: a value is required"):
        cfg.with_overrides(["inner_steps=none"])


@pytest.mark.parametrize(
    "assignment, needle",
    [
        ("inner_steps=three", "inner_steps: expected int"),
        ("adapt=everything", "adapt"),
        ("model.nope=1", "unknown key(s) nope"),
        ("inner_steps", "expected key=value"),
        ("epochs=0", "epochs: must be > 0"),
        ("inner_steps.x=1", "not a config section"),
        # overflowed inside Adam
        ("outer_lr=1e300", "outer_lr: must be <= 10, got 1e+300 (default 0.002)"),
        ("inner_lr=100", "inner_lr: must be <= 10, got 100.0 (default 0.05)"),
        # a traceback, after the data loaded (or out of memory), where the key is named now
        ("inner_lr=" + "1" * 400, "inner_lr: 111111"),
        ("weight_decay=1e300", "weight_decay: must be <= 1000"),
        ("negatives=100000000", "negatives: must be <= 10,000"),
    ],
)
def test_bad_overrides(assignment: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        TrainConfig().with_overrides([assignment])


def test_a_misspelt_keyword_is_a_config_error_that_names_the_field() -> None:
    # the dataclass' own bare TypeError, which is no MetarecError a caller catches
    with pytest.raises(
        ConfigError, match=r"^TrainConfig: unknown key\(s\) epoch \(did you mean epochs\?\)"
    ):
        TrainConfig(epoch=3)  # type: ignore[call-arg]
    with pytest.raises(
        ConfigError, match=r"^ModelConfig: unknown key\(s\) factor \(did you mean factors\?\), zz;"
    ):
        ModelConfig(factor=8, zz=1)  # type: ignore[call-arg]
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) inner_step \(did you mean inner_steps\?\)"
    ):
        TrainConfig().with_overrides(["inner_step=3"])
    assert TrainConfig(epochs=3, model=ModelConfig(factors=8)).model.factors == 8


def test_a_saved_config_names_its_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run\.json: expected a table of options, got \[\]"):
        TrainConfig.from_dict([], source="run.json")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^run\.json: epochs: must be > 0, got 0$"):
        TrainConfig.from_dict({"epochs": 0}, source="run.json")
    # --set values are named by their key alone, as the user typed it
    with pytest.raises(ConfigError, match=r"^epochs: must be > 0, got 0$"):
        TrainConfig().with_overrides(["epochs=0"])


def test_options_beside_the_train_table_are_refused(tmp_path: Path) -> None:
    # [model] beside [train] was read as nothing: hidden stayed 64 without a word
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 2\n[model]\nhidden = 32\n")
    with pytest.raises(ConfigError, match=r"\['model'\] beside the \[train\] table"):
        TrainConfig.from_toml(cfg)
    cfg.write_text("[train]\nepochs = 2\n[train.model]\nhidden = 32\n")
    assert TrainConfig.from_toml(cfg).model.hidden == 32


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


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"inner_steps": "3"}, "inner_steps: expected int, got '3'"),
        ({"inner_steps": 3.5}, "inner_steps: expected int, got 3.5"),
        ({"epochs": True}, "epochs: expected int, got True"),
        ({"model": {"hidden": 8}}, "model must be a ModelConfig"),
        ({"negatives": 0}, "negatives: must be > 0"),
        ({"train_query_size": 0}, "train_query_size: must be > 0"),
        ({"max_train_users": 0}, "max_train_users: must be > 0"),
        ({"patience": -1}, "patience: must be > 0"),
        # 0 stopped after the first epoch whether it improved or not
        ({"patience": 0}, "patience: must be > 0"),
        # Reptile trained with 1 step without a word while evaluation adapted with 0
        ({"algorithm": "reptile", "inner_steps": 0}, "so it needs at least 1 step"),
        # Meta-SGD's step sizes were never applied, so never learned, and then served
        ({"algorithm": "metasgd", "inner_steps": 0}, "so it needs at least 1 step"),
        ({"eval_inner_steps": -1}, "eval_inner_steps: must be >= 0"),
        ({"eval_inner_steps": 1001}, "eval_inner_steps: must be <= 1000, got 1001"),
        ({"inner_steps": 10**6}, "inner_steps: must be <= 1000, got 1000000"),
        ({"weight_decay": -0.1}, "weight_decay: must be >= 0"),
        # 10^11 units asked the allocator for 100 TB: torch's traceback, exit 1
        (
            {"model": ModelConfig(hidden=10**11)},
            "model.hidden: must be <= 16_384, got 100_000_000_000",
        ),
        ({"model": ModelConfig(factors=20_000)}, "model.factors: must be <= 16_384"),
        ({"model": ModelConfig(head_layers=65)}, "model.head_layers: must be <= 64"),
        ({"like_threshold": float("nan")}, "like_threshold: must be a finite rating"),
        ({"device": "gpu"}, "'gpu' is not a device"),
    ],
)
def test_configs_built_in_python_are_refused_where_written(kwargs: dict, needle: str) -> None:
    # TrainConfig(...) skips the parsing that files and --set go through; its own
    # construction checks, so the error points at the line that wrote the value
    with pytest.raises(ConfigError, match=re.escape(needle)):
        TrainConfig(**kwargs)


def test_a_field_changed_after_construction_is_checked_by_validate() -> None:
    cfg = TrainConfig()
    cfg.algorithm = "bogus"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="algorithm: 'bogus' is not one of maml"):
        cfg.validate()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"tower_hidden": 0}, "model.tower_hidden: must be > 0"),
        ({"head_layers": -1}, "model.head_layers: must be >= 0"),
        ({"factors": -1}, "model.factors: must be >= 0"),
        ({"dropout": 1.0}, "model.dropout: must be in [0, 1)"),
        ({"item_id_dropout": 1.5}, "model.item_id_dropout: must be in [0, 1], got 1.5"),
        ({"hidden": "wide"}, "config: model: hidden: expected int"),
    ],
)
def test_bad_model_shapes_are_refused(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        TrainConfig(model=ModelConfig(**kwargs))


def test_a_device_is_checked_by_name_not_by_this_machine() -> None:
    # a config written for a GPU server still loads here; using it is refused later
    assert TrainConfig(device="cuda:1").validate().device == "cuda:1"
    assert TrainConfig().with_overrides(["device=cpu"]).device == "cpu"


def test_numpy_numbers_are_stored_as_python_ones() -> None:
    # a seed from np.arange must still validate, and the saved config must be plain JSON
    seed: Any = np.int64(3)
    outer_lr: Any = np.float32(0.5)
    cfg = TrainConfig(seed=seed, inner_lr=1, outer_lr=outer_lr).validate()
    assert (type(cfg.seed), type(cfg.inner_lr), type(cfg.outer_lr)) == (int, float, float)
    assert json.loads(json.dumps(cfg.to_dict()))["seed"] == 3


def test_a_seed_torch_cannot_take_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match=r"seed: must be below 2\*\*32"):
        TrainConfig(seed=2**48).validate()


def test_a_meta_model_takes_the_configs_train_takes() -> None:
    # MetaModel({"epochs": 1}) was an AttributeError ('dict' has no 'validate')
    from metarec.models.meta_model import MetaModel

    assert MetaModel({"epochs": 1, "algorithm": "reptile"}).cfg.epochs == 1
    assert MetaModel(None).cfg == TrainConfig().validate()
    with pytest.raises(ConfigError, match="MetaModel: cfg: expected a TrainConfig or a dict"):
        MetaModel("maml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="epoch"):
        MetaModel({"epoch": 3})


def test_a_table_merges_into_its_section() -> None:
    # model={hidden=128} replaced the whole model table: dropout went back to 0.0
    cfg = TrainConfig().with_overrides(["model.dropout=0.2", "model={hidden=128, factors=8}"])
    assert (cfg.model.hidden, cfg.model.factors, cfg.model.dropout) == (128, 8, 0.2)
    with pytest.raises(ConfigError, match="hiden"):
        TrainConfig().with_overrides(["model={hiden=128}"])


def test_a_key_given_again_overrides_the_earlier_value() -> None:
    # a --set added to a command line wins over one already in it
    assert TrainConfig().with_overrides(["epochs=1", "epochs=2"]).epochs == 2


def test_keys_that_are_no_names_are_refused() -> None:
    # difflib's bare TypeError
    with pytest.raises(ConfigError, match="keys must be option names"):
        TrainConfig.from_dict({1: 2})  # type: ignore[dict-item]


def test_a_runs_config_json_is_a_config_file(tmp_path: Path) -> None:
    # --config read TOML only: a run could not be trained again from its own folder
    cfg = TrainConfig(epochs=3, inner_lr=0.1, like_threshold=None, seed=7)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_toml(tmp_path / "config.json") == cfg
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"bad\.json: expected an object of options"):
        TrainConfig.from_toml(tmp_path / "bad.json")
    # another of the run's files, picked by mistake: a list of "did you mean" guesses
    for name, content, kind in [
        ("recommender.json", {"format_version": 3, "config": {}, "metadata": {}},
         "a run's recommender.json"),
        ("split.json", {"protocol": "p1", "new_users": []}, "a split or results file"),
        ("ensemble.json", {"members": []}, "an ensemble's manifest"),
    ]:  # fmt: skip
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(ConfigError, match=rf"{name}: {kind}, not a training config"):
            TrainConfig.from_toml(tmp_path / name)


@pytest.mark.parametrize(
    ("assignments", "key"),
    [
        (["objective=bpr", "rating_loss=mse"], "rating_loss"),
        (["support_positives=liked"], "support_positives"),
        (["objective=softmax", "negatives=8"], "negatives"),
        (["algorithm=transfer", "model.support_encoder=true"], "model.support_encoder"),
    ],
)
def test_a_setting_the_rest_of_the_config_ignores_is_warned_about(
    assignments: list[str], key: str
) -> None:
    # taken, and changing it restarted a checkpointed run for no effect
    with pytest.warns(UserWarning, match=rf"--set {re.escape(key)}: has no effect with"):
        TrainConfig().with_overrides(assignments)


def test_settings_that_are_read_are_not_warned_about() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig().with_overrides(["objective=bce", "negatives=8", "support_positives=liked"])
        TrainConfig().with_overrides(["rating_loss=mse", "like_threshold=4"])
        TrainConfig().with_overrides(["model.support_encoder=true"])


def test_a_saved_meta_sgd_run_of_no_inner_steps_still_loads_serving_its_start() -> None:
    # accepted before it was refused: such a run trained without adapting, and served so
    saved = TrainConfig.from_saved({"algorithm": "metasgd", "inner_steps": 0}, source="run")
    assert (saved.inner_steps, saved.steps_at_eval) == (1, 0)
    kept = TrainConfig.from_saved(
        {"algorithm": "metasgd", "inner_steps": 0, "eval_inner_steps": 2}, source="run"
    )
    assert kept.steps_at_eval == 2

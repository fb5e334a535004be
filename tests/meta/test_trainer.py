"""Training is seeded, stops early, and resumes from its checkpoint to the same numbers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.config import ModelConfig, TrainConfig
from metarec.data.tasks import UserRatings, fixed_tasks
from metarec.meta.learner import MetaLearner
from metarec.meta.trainer import TaskSource, Trainer, TrainHistory
from metarec.models.preference import PreferenceNet


def _source(seed: int, n_users: int = 60, per_user: int = 15) -> tuple[torch.Tensor, TaskSource]:
    rng = np.random.default_rng(seed)
    vectors = torch.nn.functional.normalize(
        torch.as_tensor(rng.normal(size=(40, 8)), dtype=torch.float32), dim=-1
    )
    rows = [
        (f"u{u}", str(i), float(rng.integers(1, 6)))
        for u in range(n_users)
        for i in rng.choice(40, per_user, replace=False)
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    ur = UserRatings.from_frame(frame, {str(i): i for i in range(40)})
    return vectors, TaskSource(ur, np.zeros((len(ur), 0), dtype=np.int64))


def _trainer(
    vectors: torch.Tensor,
    epochs: int,
    objective: str = "rating",
    algorithm: str = "fomaml",
    dropout: float = 0.0,
    adapt: str = "context",
    patience: int = 100,
    device: str = "cpu",
) -> Trainer:
    mc = ModelConfig(hidden=8, tower_hidden=16, factors=4, dropout=dropout)
    cfg = TrainConfig(
        algorithm=algorithm,  # type: ignore[arg-type]
        objective=objective,  # type: ignore[arg-type]
        adapt=adapt,  # type: ignore[arg-type]
        negatives=2,
        like_threshold=4.0,
        epochs=epochs,
        patience=patience,
        meta_batch_size=16,
        inner_steps=1,
        seed=5,
        device=device,
        model=mc,
    )
    torch.manual_seed(cfg.seed)
    net = PreferenceNet(vectors, mc, [], offset=3.0 if objective == "rating" else 0.0)
    net.tower.id_known[:] = 1
    pool = np.arange(len(vectors))
    return Trainer(MetaLearner(net, cfg), cfg, negative_pool=pool, progress=False)


def test_same_seed_same_numbers() -> None:
    vectors, src = _source(0)
    a = _trainer(vectors, 2).fit(src, src)
    b = _trainer(vectors, 2).fit(src, src)
    assert a.epochs == b.epochs


@pytest.mark.parametrize(
    "algorithm, adapt, inside",
    [
        ("maml", "context", 1),
        ("fomaml", "all", 1),
        ("fomaml", "context", 2),
        ("reptile", "head", 2),
    ],
)
def test_second_order_maml_trains_on_one_cpu_thread(
    algorithm: str, adapt: str, inside: int
) -> None:
    # two threads made second-order MAML, and first-order adapting every weight,
    # differ from run to run (see Trainer.reproducible_threads); the thread count the
    # caller set comes back afterwards, even after an error
    vectors, src = _source(0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        _trainer(vectors, 1, algorithm=algorithm, adapt=adapt).fit(
            src, src, on_epoch=lambda _: seen.append(torch.get_num_threads())
        )
        assert seen == [inside] and torch.get_num_threads() == 2

        def fail(_: dict[str, float]) -> None:
            raise RuntimeError("interrupted")

        with pytest.raises(RuntimeError, match="interrupted"):
            _trainer(vectors, 1, algorithm=algorithm, adapt=adapt).fit(src, src, on_epoch=fail)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_resume_matches_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vectors, src = _source(1)
    full = _trainer(vectors, 4)
    full_hist = full.fit(src, src)
    part = _trainer(vectors, 2)
    part.fit(src, src, checkpoint_dir=tmp_path)  # "interrupted" after two epochs
    resumed = _trainer(vectors, 4)
    resumed.progress = True  # as the command line runs it: the resume said at its start
    hist = resumed.fit(src, src, checkpoint_dir=tmp_path)
    assert hist.resumed_from == 2
    assert f"resuming from {tmp_path} after epoch 2\n" in capsys.readouterr().err
    assert [round(e["val_loss"], 6) for e in hist.epochs] == [
        round(e["val_loss"], 6) for e in full_hist.epochs
    ]
    for (k, v), w in zip(
        full.learner.state_dict().items(), resumed.learner.state_dict().values(), strict=True
    ):
        assert torch.allclose(v, w, atol=1e-6), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the CPU is one device")
def test_a_resume_on_cuda_keeps_its_best_state_on_the_gpu(tmp_path: Path) -> None:
    """A checkpoint's tensors load on the CPU: the best state it restores must move to
    the learner's device, or the next epoch without a better validation loss failed in
    _save (torch.equal of a CPU and a CUDA tensor) and the end loaded CPU weights."""
    vectors, src = _source(1)
    _trainer(vectors, 2, device="cuda").fit(src, src, checkpoint_dir=tmp_path)
    resumed = _trainer(vectors, 4, device="cuda")
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    _, _, best = resumed._restore(tmp_path, meta, TrainHistory())
    assert best is not None
    assert {v.device.type for v in best.values()} == {"cuda"}
    # a plateau after the resume: every later epoch writes the restored best state
    hist = _trainer(vectors, 6, device="cuda").fit(src, src, checkpoint_dir=tmp_path)
    assert hist.resumed_from == 2


def test_a_checkpoint_keeps_the_frozen_item_vectors_once(tmp_path: Path) -> None:
    """The best state's buffers equal the model's (training leaves them alone): written
    twice they doubled a 150,000-item checkpoint; the resumed run takes them back."""
    from metarec.io import load_tensors

    vectors, src = _source(1)
    full = _trainer(vectors, 4)
    full.fit(src, src)
    _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    saved = load_tensors(tmp_path / meta["tensors"])
    assert "model.model.tower.item_vectors" in saved
    assert any(k.startswith("best.") for k in saved)
    assert not [k for k in saved if k.startswith("best.") and "item_vectors" in k]
    resumed = _trainer(vectors, 4)
    resumed.fit(src, src, checkpoint_dir=tmp_path)
    for (k, v), w in zip(
        full.learner.state_dict().items(), resumed.learner.state_dict().values(), strict=True
    ):
        assert torch.allclose(v, w, atol=1e-6), k


def test_an_interruption_between_the_checkpoints_two_writes_resumes_the_earlier_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epoch 2's tensors written, its checkpoint.json not: the resumed run must not mix
    them with epoch 1's state (with one fixed file name it did, and ended elsewhere)."""
    import metarec.meta.trainer as trainer_module

    vectors, src = _source(1)
    full = _trainer(vectors, 3)
    full.fit(src, src)
    real_save_json = trainer_module.save_json
    calls = {"n": 0}

    def interrupted_second_time(path: Path, obj: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C right after epoch 2's tensors
        real_save_json(path, obj)

    monkeypatch.setattr(trainer_module, "save_json", interrupted_second_time)
    with pytest.raises(KeyboardInterrupt):
        _trainer(vectors, 3).fit(src, src, checkpoint_dir=tmp_path)
    monkeypatch.setattr(trainer_module, "save_json", real_save_json)
    assert len(list(tmp_path.glob("checkpoint*.safetensors"))) == 2  # epoch 1's and 2's
    resumed = _trainer(vectors, 3)
    hist = resumed.fit(src, src, checkpoint_dir=tmp_path)
    assert hist.resumed_from == 1
    for (k, v), w in zip(
        full.learner.state_dict().items(), resumed.learner.state_dict().values(), strict=True
    ):
        assert torch.allclose(v, w, atol=1e-6), k
    assert len(list(tmp_path.glob("checkpoint*.safetensors"))) == 1  # the stray one is gone


def test_a_checkpoint_written_before_item_vectors_were_fingerprinted_resumes(
    tmp_path: Path,
) -> None:
    """One tensors file named checkpoint.safetensors and a config-ratings fingerprint:
    the format before 2026-12-02, resumed rather than silently trained afresh."""
    vectors, src = _source(1)
    full = _trainer(vectors, 4)
    full.fit(src, src)
    _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    (tmp_path / meta.pop("tensors")).rename(tmp_path / "checkpoint.safetensors")
    meta["fingerprint"] = meta["fingerprint"].rsplit("-", 1)[0]  # config-ratings only
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    resumed = _trainer(vectors, 4)
    assert resumed.fit(src, src, checkpoint_dir=tmp_path).resumed_from == 2
    for (k, v), w in zip(
        full.learner.state_dict().items(), resumed.learner.state_dict().values(), strict=True
    ):
        assert torch.allclose(v, w, atol=1e-6), k


def test_an_option_added_later_leaves_the_fingerprints_of_earlier_configs() -> None:
    # model.implicit_fold_in changed every config's fingerprint, so a checkpoint written
    # the day before was thrown away as "another config"; these are the fingerprints
    # before it. A new option changes them again unless it joins LATER_OPTIONS.
    from metarec.meta.trainer import config_fingerprint

    assert config_fingerprint(TrainConfig()) == "bfd0266a7c76fcd9"
    assert config_fingerprint(TrainConfig(objective="bce")) == "a4e31cfe2c611377"
    on = TrainConfig(objective="bce", model=ModelConfig(implicit_fold_in=True))
    assert config_fingerprint(on) != "a4e31cfe2c611377"


def test_fewer_epochs_than_the_checkpoint_trained_start_afresh(tmp_path: Path) -> None:
    """A finished 3-epoch checkpoint asked for 2 epochs: resuming kept the 3-epoch
    model (best epoch 3) under a config that says 2; a fresh 2-epoch run is what the
    config asks for."""
    vectors, src = _source(1)
    _trainer(vectors, 3).fit(src, src, checkpoint_dir=tmp_path)
    fresh = _trainer(vectors, 2)
    fresh_hist = fresh.fit(src, src)
    again = _trainer(vectors, 2)
    with pytest.warns(UserWarning, match="trained 3 epochs, more than epochs=2; training"):
        hist = again.fit(src, src, checkpoint_dir=tmp_path)
    assert not hist.resumed_from and hist.epochs == fresh_hist.epochs
    assert max(e["epoch"] for e in hist.epochs) == 2
    for (k, v), w in zip(
        fresh.learner.state_dict().items(), again.learner.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), k


def test_less_patience_than_the_checkpoint_ran_with_starts_afresh(tmp_path: Path) -> None:
    # seed 13's validation loss stops improving after epoch 2: patience 1 stops at 3
    vectors, src = _source(13)
    _trainer(vectors, 8).fit(src, src, checkpoint_dir=tmp_path)  # patience 100: 8 epochs
    fresh = _trainer(vectors, 8, patience=1).fit(src, src)
    assert fresh.epochs[-1]["epoch"] == 3
    with pytest.warns(UserWarning, match="trained past epoch 3, where patience=1 stops"):
        hist = _trainer(vectors, 8, patience=1).fit(src, src, checkpoint_dir=tmp_path)
    assert not hist.resumed_from and hist.epochs == fresh.epochs


def test_more_patience_trains_on_from_a_checkpoint_that_stopped_early(tmp_path: Path) -> None:
    vectors, src = _source(13)
    _trainer(vectors, 8, patience=1).fit(src, src, checkpoint_dir=tmp_path)  # stops at 3
    fresh = _trainer(vectors, 8, patience=2).fit(src, src)
    hist = _trainer(vectors, 8, patience=2).fit(src, src, checkpoint_dir=tmp_path)
    # it stopped there for patience 1, which patience 2 would not have: one epoch more
    assert hist.resumed_from == 3 and hist.epochs[-1]["epoch"] == 4
    assert [round(e["val_loss"], 6) for e in hist.epochs] == [
        round(e["val_loss"], 6) for e in fresh.epochs
    ]


@pytest.mark.parametrize("changed", ["ratings", "item vectors"])
def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path: Path, changed: str) -> None:
    """Other ratings, or items whose text changed (the checkpoint holds the old LM
    vectors, which resuming would keep whatever the new catalogue says): the same
    shapes and config, trained afresh."""
    vectors, src = _source(1)
    other_vectors, other = _source(6)
    if changed == "ratings":
        other_vectors = vectors
    else:
        other = src
    _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)
    fresh = _trainer(other_vectors, 2).fit(other, other)
    with pytest.warns(UserWarning, match="other data; training from the start"):
        hist = _trainer(other_vectors, 2).fit(other, other, checkpoint_dir=tmp_path)
    assert not hist.resumed_from
    assert hist.epochs == fresh.epochs


def test_a_damaged_checkpoint_says_how_to_start_over(tmp_path: Path) -> None:
    from metarec.errors import ModelError

    vectors, src = _source(1)
    _trainer(vectors, 1).fit(src, src, checkpoint_dir=tmp_path)
    named = json.loads((tmp_path / "checkpoint.json").read_text())["tensors"]
    # one bit of one weight flipped on disk: readable, of the right shapes, and it
    # resumed with another number, ending unlike the run that never stopped
    kept = (tmp_path / named).read_bytes()
    flipped = bytearray(kept)
    flipped[-2] ^= 0x40
    (tmp_path / named).write_bytes(bytes(flipped))
    with pytest.raises(ModelError, match=r"do not match the checksum .*delete that folder"):
        _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)
    (tmp_path / named).write_bytes(b"cut short")
    with pytest.raises(ModelError, match=r"cannot be resumed .*delete that folder"):
        _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)
    (tmp_path / "checkpoint.json").write_text("{")
    with pytest.raises(ModelError, match=r"not valid JSON.*delete that folder"):
        _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)


def _edit_checkpoint(folder: Path, fields: dict, tensors: Callable[[dict], None]) -> None:
    from metarec.io import load_tensors, save_tensors

    meta = json.loads((folder / "checkpoint.json").read_text())
    values = load_tensors(folder / meta["tensors"])
    tensors(values)
    save_tensors(folder / meta["tensors"], values)
    (folder / "checkpoint.json").write_text(json.dumps(meta | fields))


@pytest.mark.parametrize(
    "fields, tensors, needle",
    [
        # 1.7 resumed "after epoch 1" with epoch 2's weights; -3 failed inside numpy
        ({"epoch": 1.7}, None, r"epoch: expected a whole number >= 0, got 1\.7"),
        ({"epoch": -3}, None, "epoch: expected a whole number"),
        ({"bad_epochs": "x"}, None, "bad_epochs: expected"),
        ({"best_score": None}, None, "best_score: expected a number, got None"),  # float(None)
        # saved as three epochs into the run, which `metarec report` then refused
        ({"history": "abc"}, None, "history: expected a list of epoch rows"),
        # int()'s "invalid literal for int() with base 10: 'x'"
        ({"epoch": "x"}, None, "epoch: expected a whole number >= 0, got 'x'"),
        # torch's KeyError: "cannot be resumed ('params')"
        ({"param_groups": [{"lr": "x"}]}, None,
         r"param_groups\[0\]: expected an optimiser group with its params"),
        # Adam loads any shape and failed in its first step, outside the check
        ({}, lambda t: t.update({"opt.0.exp_avg": torch.zeros(3)}), r"opt\.0\.exp_avg: shape"),
        # resumed with fresh moments, not where it stopped
        ({}, lambda t: [t.pop(k) for k in [k for k in t if k.startswith("opt.")]],
         "moments .* are missing"),
        # cast without a word
        ({}, lambda t: t.update({k: t[k].double() for k in t if k.startswith("model.")}),
         "float64 of shape"),
        # resumed without a word, and failed when loaded after the training
        ({}, lambda t: t.pop(next(k for k in t if k.startswith("best."))),
         r"tensors missing \['best\."),
        # failed after training, outside the check
        ({}, lambda t: t.update({k: torch.zeros(2) for k in t if k.startswith("best.")}),
         "best.* of shape"),
    ],
)  # fmt: skip
def test_a_checkpoint_edited_by_hand_is_refused_before_it_is_resumed(
    tmp_path: Path, fields: dict, tensors: Callable[[dict], None] | None, needle: str
) -> None:
    from metarec.errors import ModelError

    vectors, src = _source(1)
    _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)
    _edit_checkpoint(tmp_path, fields, tensors or (lambda t: None))
    with pytest.raises(ModelError, match=rf"cannot be resumed \(.*{needle}.*delete that folder"):
        _trainer(vectors, 3).fit(src, src, checkpoint_dir=tmp_path)


@pytest.mark.parametrize(
    "edit, needle",
    [
        # each loaded, and failed in the first step with a traceback (exit 1)
        (lambda m: m["param_groups"][0].update(eps="x"), r"\.eps: expected a number"),
        (lambda m: m["param_groups"][0].update(betas="x"), r"param_groups\[0\]\.betas: expected 2"),
        (lambda m: m["param_groups"][0].update(weight_decay=None), r"decay: expected a number"),
        (lambda m: m["param_groups"][0].update(amsgrad=True), r"amsgrad: expected False"),
        # resumed, and saved with the run as a loss its report printed
        (lambda m: m["history"][1].update(val_loss="x"), r"\[1\]\.val_loss: expected a number"),
    ],
)  # fmt: skip
def test_a_checkpoints_optimiser_options_and_losses_are_checked_before_it_is_resumed(
    tmp_path: Path, edit: Callable[[dict], None], needle: str
) -> None:
    from metarec.errors import ModelError

    vectors, src = _source(1)
    _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    edit(meta)
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=rf"cannot be resumed \(.*{needle}.*delete that folder"):
        _trainer(vectors, 3).fit(src, src, checkpoint_dir=tmp_path)


@pytest.mark.parametrize("step", [torch.zeros(2), torch.tensor(-5.0)])
def test_a_checkpoints_step_count_is_one_count(tmp_path: Path, step: torch.Tensor) -> None:
    from metarec.errors import ModelError

    vectors, src = _source(1)
    _trainer(vectors, 2).fit(src, src, checkpoint_dir=tmp_path)
    _edit_checkpoint(tmp_path, {}, lambda t: t.update({"opt.0.step": step}))
    with pytest.raises(ModelError, match=r"opt\.0\.step: expected one count >= 0"):
        _trainer(vectors, 3).fit(src, src, checkpoint_dir=tmp_path)


def test_a_diverged_training_is_an_error_not_a_model_of_nans() -> None:
    from metarec.errors import ModelError

    vectors, src = _source(2)
    trainer = _trainer(vectors, 2)
    with torch.no_grad():  # what an exploding step leaves; no validation to fall back on
        next(trainer.learner.parameters()).fill_(float("nan"))
    with pytest.raises(ModelError, match=r"meta-training diverged .*lower inner_lr \(0.05\)"):
        trainer.fit(src, None)


def test_an_epoch_that_diverges_ends_training_on_the_best_epoch_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN epoch went into the run's history, whose JSON then refused to save, so a
    good earlier epoch was lost with 'metadata must be JSON'; training went on, NaN."""
    vectors, src = _source(2)
    trainer = _trainer(vectors, 4)
    real = trainer.train_epoch

    def exploding(source: TaskSource, epoch: int) -> float:
        loss = real(source, epoch)
        if epoch == 1:  # the second epoch's step blows up
            with torch.no_grad():
                for p in trainer.learner.parameters():
                    p.fill_(float("nan"))
            return float("nan")
        return loss

    monkeypatch.setattr(trainer, "train_epoch", exploding)
    with pytest.warns(UserWarning, match=r"diverged at epoch 2 .*kept epoch [01], the best"):
        hist = trainer.fit(src, src, checkpoint_dir=tmp_path)
    assert [e["epoch"] for e in hist.epochs] == [0, 1, 2]  # no epoch 3 or 4 trained on NaN
    assert hist.epochs[-1] == {"epoch": 2, "train_loss": None, "val_loss": None}
    json.dumps(hist.epochs, allow_nan=False)  # what a run folder writes
    assert all(bool(torch.isfinite(p).all()) for p in trainer.learner.parameters())
    tasks = fixed_tasks(src.ratings, query_size=10, seed=5, max_support=100)
    assert trainer.validation_loss(tasks, src) == pytest.approx(hist.best_score, abs=1e-6)
    # the checkpoint holds the kept epoch, finished: a rerun does not train on from NaN
    # (nor refuses the checkpoint for the optimiser's NaN moments, as it did)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["diverged"] and saved["best_epoch"] == hist.best_epoch
    again = _trainer(vectors, 4)
    trained: list[int] = []
    monkeypatch.setattr(again, "train_epoch", lambda source, epoch: trained.append(epoch) or 0.0)
    with pytest.warns(UserWarning, match=r"diverged at epoch 2 "):  # said again, not lost
        rerun = again.fit(src, src, checkpoint_dir=tmp_path)
    assert trained == [] and rerun.best_epoch == hist.best_epoch and rerun.diverged_at == 2
    # a checkpoint of the day before recorded only that it diverged: its last epoch
    saved["diverged"] = True
    (tmp_path / "checkpoint.json").write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match=r"diverged at epoch 2 "):
        assert _trainer(vectors, 4).fit(src, src, checkpoint_dir=tmp_path).diverged_at == 2
    for p, q in zip(again.learner.parameters(), trainer.learner.parameters(), strict=True):
        assert torch.equal(p, q)


def test_an_optimiser_state_blown_up_under_finite_losses_is_a_divergence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loss of 6e22 stayed finite while Adam's moments overflowed: the checkpoint then
    held infinities, and a rerun refused it as damaged."""
    vectors, src = _source(2)
    trainer = _trainer(vectors, 3)
    real = trainer.train_epoch

    def overflowing(source: TaskSource, epoch: int) -> float:
        loss = real(source, epoch)
        if epoch == 1:
            for state in trainer.optimizer.state.values():
                state["exp_avg_sq"].fill_(float("inf"))
        return loss

    monkeypatch.setattr(trainer, "train_epoch", overflowing)
    with pytest.warns(UserWarning, match=r"diverged at epoch 2 \(its ") as said:
        hist = trainer.fit(src, src, checkpoint_dir=tmp_path)
    # the epoch whose moments overflowed is judged as any other (its weights are finite)
    losses = [e["val_loss"] for e in hist.epochs]
    assert hist.diverged_at == 2 and len(losses) == 3
    text = str(said[0].message)
    assert hist.best_epoch != 2 and "(its loss or optimiser state is not finite)" in text
    # kept, it is not said to have a loss that is not finite ("diverged at epoch 2 ...
    # kept epoch 2" read as a contradiction): validation losses that fall make it best
    trainer = _trainer(vectors, 3)
    real = trainer.train_epoch
    monkeypatch.setattr(trainer, "train_epoch", overflowing)
    falling = iter([5.0, 4.0, 3.0, 2.0])
    monkeypatch.setattr(trainer, "validation_loss", lambda *a: next(falling))
    with pytest.warns(UserWarning, match="diverged at epoch 2") as said:
        kept = trainer.fit(src, src)
    assert kept.best_epoch == kept.diverged_at == 2
    assert "(its optimiser state is not finite, though its loss is); kept epoch 2" in str(
        said[0].message
    )
    assert hist.best_epoch == int(np.argmin(losses)) or losses[0] - min(losses) <= 1e-5
    with pytest.warns(UserWarning, match="diverged at epoch 2"):
        _trainer(vectors, 3).fit(src, src, checkpoint_dir=tmp_path)  # resumed, not refused


def test_an_untrained_model_whose_loss_is_not_finite_does_not_block_every_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NaN as the best score: no later loss compared below it, so no epoch was ever kept
    vectors, src = _source(2)
    trainer = _trainer(vectors, 2)
    real = trainer.validation_loss
    calls = iter([float("nan")])
    monkeypatch.setattr(trainer, "validation_loss", lambda *a: next(calls, None) or real(*a))
    hist = trainer.fit(src, src)
    assert hist.epochs[0] == {"epoch": 0, "val_loss": None}
    assert hist.best_epoch >= 1 and np.isfinite(hist.best_score)


def test_training_keeps_the_best_state() -> None:
    vectors, src = _source(2)
    trainer = _trainer(vectors, 3)
    hist = trainer.fit(src, src)
    scores = [e["val_loss"] for e in hist.epochs]
    assert hist.best_score == min(scores)
    tasks = fixed_tasks(src.ratings, query_size=10, seed=5, max_support=100)
    assert trainer.validation_loss(tasks, src) == pytest.approx(hist.best_score, abs=1e-6)


def test_validation_adapts_with_the_evaluation_steps() -> None:
    # adapting with inner_steps whatever eval_inner_steps says, early stopping would watch
    # another model than the one served: 0 and 3 steps would give one loss
    vectors, src = _source(0)
    trainer = _trainer(vectors, 1)  # inner_steps=1
    tasks = fixed_tasks(src.ratings, query_size=5, seed=5, max_support=100)
    losses = []
    for steps in (0, 3):
        trainer.cfg = trainer.cfg.with_overrides([f"eval_inner_steps={steps}"])
        losses.append(trainer.validation_loss(tasks, src))
    assert losses[0] != losses[1]


def test_metasgd_training_learns_its_step_sizes() -> None:
    # an optimiser over the network's parameters only would leave Meta-SGD's step sizes
    # at inner_lr, gradients and all
    vectors, src = _source(0)
    trainer = _trainer(vectors, 1, algorithm="metasgd")
    before = {k: v.detach().clone() for k, v in trainer.learner.step_sizes.items()}
    assert before
    trainer.fit(src, src)
    after = trainer.learner.step_sizes
    assert any(not torch.equal(before[k], v.detach()) for k, v in after.items())


@pytest.mark.parametrize("objective", ["bce", "bpr", "softmax"])
def test_implicit_objectives_train(objective: str) -> None:
    vectors, src = _source(3)
    hist = _trainer(vectors, 3, objective).fit(src, src)
    losses = [e["val_loss"] for e in hist.epochs]
    assert all(np.isfinite(losses)) and min(losses[1:]) < losses[0]


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "metasgd"])
def test_dropout_in_the_head_trains_and_repeats(algorithm: str) -> None:
    # dropout draws inside the vmapped per-task adaptation: each task its own mask
    vectors, src = _source(4, n_users=30)
    a = _trainer(vectors, 2, algorithm=algorithm, dropout=0.2).fit(src, src)
    b = _trainer(vectors, 2, algorithm=algorithm, dropout=0.2).fit(src, src)
    assert all(np.isfinite(e["val_loss"]) for e in a.epochs)
    assert a.epochs == b.epochs


def test_a_checkpoint_write_cut_by_a_kill_leaves_no_file(tmp_path: Path) -> None:
    # a SIGKILL mid-checkpoint left megabytes in a hidden .tmp that nothing removed
    vectors, src = _source(1)
    orphan = tmp_path / ".checkpoint-d0edbe0f.safetensors.4a09af91b9d0.tmp"
    orphan.write_bytes(b"\0" * 1024)
    _trainer(vectors, 1).fit(src, src, checkpoint_dir=tmp_path)
    assert not orphan.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # a rerun that resumes the finished checkpoint saves no epoch, and kept it
    orphan.write_bytes(b"\0" * 1024)
    _trainer(vectors, 1).fit(src, src, checkpoint_dir=tmp_path)
    assert not orphan.exists()


@pytest.mark.parametrize(
    "loss, best, diverged",
    [("l1", 4.2, True), ("l1", 3.9, False), ("mse", 16.5, True), ("mse", 15.9, False)],
)
def test_a_kept_model_worse_than_any_rating_of_the_scale_is_refused(
    loss: str, best: float, diverged: bool
) -> None:
    """Adaptation steps that blow up leave finite weights: a validation MAE of 16 on 1-5
    ratings was saved as a model, which recommended at scores of -375,137."""
    from metarec.errors import ModelError
    from metarec.meta.trainer import TrainHistory
    from metarec.pipeline import _check_not_diverged

    cfg = TrainConfig(rating_loss=loss, inner_lr=2.0)  # type: ignore[arg-type]
    history = TrainHistory(epochs=[{"epoch": 0, "val_loss": best}], best_score=best)
    if diverged:
        with pytest.raises(ModelError, match=r"diverged: the best epoch's validation mean"):
            _check_not_diverged(history, cfg, (1.0, 5.0))
    else:
        _check_not_diverged(history, cfg, (1.0, 5.0))
    _check_not_diverged(history, TrainConfig(objective="bce"), (1.0, 5.0))  # no such scale
    # without validation users the epoch is kept by its training loss: a first epoch
    # at 4e24 beat the start's infinity, and was saved with exit 0
    trained = TrainHistory(epochs=[{"epoch": 1, "train_loss": 4e24}], best_epoch=1, best_score=4e24)
    with pytest.raises(ModelError, match=r"diverged: the best epoch's training mean absolute"):
        _check_not_diverged(trained, TrainConfig(inner_lr=2.0), (1.0, 5.0))


def test_validation_users_too_short_for_any_task_are_said_not_passed_over() -> None:
    """query_size past every validation user's ratings skipped them all: patience and
    the untrained candidate went with them, the epoch chosen by training loss."""
    import dataclasses

    vectors, src = _source(0)  # 15 ratings a user
    trainer = _trainer(vectors, 1)
    trainer.cfg = dataclasses.replace(trainer.cfg, query_size=15)
    with pytest.warns(
        UserWarning,
        match=r"no validation user has query_size \(15\) ratings and "
        r"one more \(the most any of the 60 has is 15\): early stopping is off",
    ):
        trainer.fit(src, src)
    # time-ordered episodes are judged on min_support, which is then what to lower
    _, short = _source(1, per_user=10)
    trainer = _trainer(vectors, 1)
    trainer.cfg = dataclasses.replace(trainer.cfg, episode_order="time", min_support=12)
    with pytest.warns(UserWarning, match=r"has min_support \(12\) .*; lower min_support$"):
        trainer.fit(src, short)

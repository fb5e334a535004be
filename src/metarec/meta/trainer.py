"""Meta-training loop: episodes, early stopping, resumable checkpoints.

Randomness is derived from ``(seed, epoch)`` at the start of every epoch, so a
run resumed from its checkpoint after epoch ``e`` produces the same numbers
as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from metarec.config import TrainConfig
from metarec.data.tasks import Task, TaskBatch, UserRatings, collate, fixed_tasks, sample_episodes
from metarec.device import deterministic_on, resolve_device
from metarec.errors import ConfigError, DivergedError, MetarecError, ModelError
from metarec.io import (
    check_tensors_like,
    load_json,
    load_tensors,
    remove_orphan_temps,
    require_finite,
    save_json,
    save_tensors,
)
from metarec.meta.inner import task_loss
from metarec.meta.learner import MetaLearner
from metarec.values import is_number, is_whole


@dataclass
class TaskSource:
    """Users whose ratings become tasks, with their feature codes."""

    ratings: UserRatings
    user_features: np.ndarray  # [n_users, F]


@dataclass
class TrainHistory:
    epochs: list[dict[str, float | None]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = math.inf
    resumed_from: int | None = None
    # the epoch whose loss (or optimiser state) was not finite, training having ended
    # on the best epoch before it; kept in the checkpoint, so a rerun says it again
    diverged_at: int | None = None


class Trainer:
    def __init__(
        self,
        learner: MetaLearner,
        cfg: TrainConfig,
        *,
        negative_pool: np.ndarray | None = None,
        progress: bool = True,
    ) -> None:
        if cfg.objective != "rating" and cfg.like_threshold is None:
            raise ConfigError(
                f"like_threshold: the {cfg.objective} objective needs it; set it, or train "
                "through metarec.pipeline.fit_recommender, which takes it from the rating scale"
            )
        self.learner = learner
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.learner.to(self.device)
        self.negative_pool = negative_pool
        self.progress = progress
        self.optimizer = torch.optim.Adam(
            self.learner.parameters(), lr=cfg.outer_lr, weight_decay=cfg.weight_decay
        )

    # -- batching -----------------------------------------------------------
    def batches(
        self, tasks: list[Task], source: TaskSource, rng: np.random.Generator
    ) -> list[TaskBatch]:
        size = self.cfg.meta_batch_size
        return [
            collate(
                tasks[i : i + size],
                user_features=source.user_features,
                objective=self.cfg.objective,
                negatives=self.cfg.negatives,
                like_threshold=self.cfg.like_threshold,
                negative_pool=self.negative_pool,
                rng=rng,
                support_positives=self.cfg.support_rule(),
            ).to(self.device)
            for i in range(0, len(tasks), size)
        ]

    def _id_keep(self) -> torch.Tensor | None:
        p = self.cfg.model.item_id_dropout
        if not self.cfg.model.use_item_ids or p <= 0:
            return None
        n = self.learner.model.tower.n_items
        return (torch.rand(n, device=self.device) >= p).float()

    # -- one epoch ----------------------------------------------------------
    def train_epoch(self, source: TaskSource, epoch: int) -> float:
        rng = np.random.default_rng([self.cfg.seed, epoch])
        torch.manual_seed(self.cfg.seed * 100_003 + epoch)
        tasks = sample_episodes(
            source.ratings,
            rng,
            min_support=self.cfg.min_support,
            max_support=self.cfg.max_support,
            query_size=self.cfg.train_query_size,
            order=self.cfg.episode_order,
        )
        order = rng.permutation(len(tasks))
        tasks = [tasks[i] for i in order]
        self.learner.train()
        total, count = 0.0, 0
        bar = tqdm(
            self.batches(tasks, source, rng),
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            unit="batch",
            disable=not self.progress,
            leave=False,
        )
        for batch in bar:
            self.optimizer.zero_grad(set_to_none=True)
            keep = self._id_keep()
            if self.cfg.algorithm == "reptile":
                loss = self.learner.reptile_grads(batch, keep)
            else:
                loss = self.learner.outer_loss(batch, keep)
                loss.backward()
            self.optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        return total / max(count, 1)

    @torch.no_grad()
    def validation_loss(self, tasks: list[Task], source: TaskSource) -> float:
        """Mean query loss after adaptation (what early stopping watches)."""
        self.learner.eval()
        if self.cfg.objective == "softmax":
            self.learner.set_catalogue()  # the current parameters, no id dropout
        rng = np.random.default_rng([self.cfg.seed, 7])
        total, count = 0.0, 0
        for batch in self.batches(tasks, source, rng):
            fast = self.learner.adapt(batch, steps=self.cfg.steps_at_eval)
            if self.cfg.objective == "softmax":
                per_task = self.learner.softmax_task_losses(batch, fast)
            else:
                pred = self.learner.query_scores(batch, fast)
                per_task = task_loss(
                    pred, batch.query_y, batch.query_mask, self.learner.outer_objective
                )
            total += float(per_task.sum())
            count += len(batch)
        return total / max(count, 1)

    def _validation_tasks(self, validation: TaskSource | None) -> list[Task]:
        """Fixed tasks early stopping judges; time-ordered training is judged the same way
        it trains (first k ratings → what came after, k seeded per user) so that the
        epoch kept is the one best at the deployed few-shot task."""
        cfg = self.cfg
        if validation is None:
            return []
        if cfg.episode_order == "time":
            return sample_episodes(
                validation.ratings,
                np.random.default_rng([cfg.seed, 11]),
                min_support=cfg.min_support,
                max_support=cfg.max_support,
                query_size=cfg.train_query_size,
                order="time",
            )
        return fixed_tasks(
            validation.ratings,
            query_size=cfg.query_size,
            seed=cfg.seed,
            max_support=cfg.max_support,
        )

    # -- the loop -----------------------------------------------------------
    def fit(
        self,
        train: TaskSource,
        validation: TaskSource | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> TrainHistory:
        device = next(self.learner.parameters()).device
        with self.reproducible_threads(), deterministic_on(device):
            return self._fit(train, validation, checkpoint_dir=checkpoint_dir, on_epoch=on_epoch)

    @contextmanager
    def reproducible_threads(self) -> Iterator[None]:
        """Second-order MAML, and any algorithm adapting every per-user weight
        (``adapt = "all"``), train on one thread on a multi-threaded CPU.

        With two threads MKL's threaded kernels returned results differing in
        the ninth digit from run to run in the second-order pass; training
        amplified that, and two ml-1m runs with the same seed parted after eight
        epochs (user-cold MAE 0.6980 vs 0.6986). One thread gives the same
        numbers every time, at about 1.25x the fit time there. Adapting every
        weight per user does the same in first order: two ml-100k runs with the
        same seed parted at the third epoch, and item-cold MAE moved by 0.002
        (an audit on 2026-12-03). The default scopes (context, head) were
        reproducible with two threads and keep them. (Setting
        ``MKL_CBWR=COMPATIBLE`` also fixed it, but made every matrix product
        four times slower, the text encoder included.)
        """
        threads = torch.get_num_threads()
        device = next(self.learner.parameters()).device
        single = self.cfg.algorithm == "maml" or self.cfg.adapt == "all"
        if not single or device.type != "cpu" or threads == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def _fit(
        self,
        train: TaskSource,
        validation: TaskSource | None,
        *,
        checkpoint_dir: str | Path | None,
        on_epoch: Callable[[dict[str, float]], None] | None,
    ) -> TrainHistory:
        cfg = self.cfg
        history = TrainHistory()
        best_state = None
        start = 0
        bad = 0
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        # the data too: the same config on other ratings would otherwise resume, and
        # finish, the earlier data's model
        ratings_part = config_fingerprint(cfg) + "-" + data_fingerprint(train, validation)
        fingerprint = ratings_part + "-" + inputs_fingerprint(self.learner)
        if ckpt is not None:
            # as each save does: a rerun that trains no further epoch (resuming a finished
            # checkpoint) saves none, and left a killed write's file there for good
            remove_orphan_temps(ckpt)
        if ckpt is not None and (ckpt / "checkpoint.json").exists():
            try:
                meta = load_json(ckpt / "checkpoint.json")
                # a checkpoint written before 2026-12-02 (one tensors file, no item
                # vectors in its fingerprint) resumes on its config and ratings alone
                legacy = isinstance(meta, dict) and "tensors" not in meta
                wanted = ratings_part if legacy else fingerprint
                same = isinstance(meta, dict) and meta.get("fingerprint") == wanted
                # more epochs or patience continue a checkpoint; fewer cannot: its model
                # may be from an epoch past where a fresh run would have stopped
                if same:  # read below as numbers: "x" was int()'s words
                    _check_numbers(meta, None)
                stop = _stop_epoch(meta["history"], cfg.patience) if same else None
                past = same and (int(meta["epoch"]) > cfg.epochs or stop is not None)
                if same and not past:
                    start, bad, best_state = self._restore(ckpt, meta, history)
                    if self.progress:  # else only the bar's "3/12" said so, until the end
                        print(f"resuming from {ckpt} after epoch {start}", file=sys.stderr)
                else:
                    what = "of another config or other data"
                    if past and stop is not None:
                        what = f"trained past epoch {stop}, where patience={cfg.patience} stops"
                    elif past:
                        what = f"trained {int(meta['epoch'])} epochs, more than epochs={cfg.epochs}"
                    warnings.warn(
                        f"{ckpt}: the checkpoint there is {what}; training from the start "
                        "(it will be replaced)",
                        stacklevel=3,
                    )
            except (MetarecError, KeyError, TypeError, ValueError, RuntimeError) as exc:
                # left as it is, every rerun would stop here again
                detail = " ".join(str(exc).split())[:200]
                raise ModelError(
                    f"{ckpt}: the checkpoint cannot be resumed ({detail}); delete that "
                    "folder to train from the start"
                ) from None
        self._check_episodes(train.ratings)
        val_tasks = self._validation_tasks(validation)
        if validation is not None and len(validation.ratings) and not val_tasks:
            # every validation user skipped: patience and the untrained candidate went
            # with them, and the epoch was chosen by training loss without a word
            most = int(np.diff(validation.ratings.offsets).max())
            # time-ordered episodes are judged on min_support; shuffled ones on query_size
            knob = "min_support" if cfg.episode_order == "time" else "query_size"
            warnings.warn(
                f"no validation user has {knob} ({getattr(cfg, knob)}) ratings and one more "
                f"(the most any of the {len(validation.ratings):,} has is {most}): early "
                f"stopping is off and the epoch is chosen by training loss; lower {knob}",
                stacklevel=3,
            )
        if val_tasks and validation is not None and start == 0:
            # the untrained model is a real candidate: training must beat it to be kept
            # (unless its loss is not finite, which no later epoch could then beat)
            score = self.validation_loss(val_tasks, validation)
            history.epochs.append({"epoch": 0, "val_loss": _finite_or_none(score)})
            if math.isfinite(score):
                history.best_score, history.best_epoch = score, 0
                best_state = self._snapshot()
        # counted by hand, not by iterating the bar: an early stop's break left tqdm's own
        # count an epoch short ("6/30" after 7)
        bar = tqdm(
            desc=f"meta-training ({cfg.algorithm})",
            unit="epoch",
            disable=not self.progress,
            initial=start,
            total=cfg.epochs,
        )
        diverged: int | None = None
        try:
            for epoch in range(start, cfg.epochs):
                train_loss = self.train_epoch(train, epoch)
                row = {"epoch": epoch + 1, "train_loss": train_loss}
                score = train_loss
                if val_tasks and validation is not None:
                    score = self.validation_loss(val_tasks, validation)
                    row["val_loss"] = score
                bar.update(1)
                if not (math.isfinite(train_loss) and math.isfinite(score)):
                    # the weights are NaN or infinite now, and every later epoch with them; the
                    # row keeps null for what is not finite (JSON has no NaN), the best stands
                    history.epochs.append({k: _finite_or_none(v) for k, v in row.items()})
                    diverged = epoch + 1
                    break
                history.epochs.append(dict(row))
                if score < history.best_score - 1e-5:
                    history.best_score, history.best_epoch, bad = score, epoch + 1, 0
                    best_state = self._snapshot()
                else:
                    bad += 1
                if not self._optimiser_finite():
                    # finite weights and losses, but moments the next step spreads to the
                    # weights: this epoch is judged as any other, and training ends here
                    diverged = epoch + 1
                    break
                bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k != "epoch"})
                if on_epoch is not None:
                    on_epoch(row)
                stop = bool(val_tasks) and bad >= cfg.patience
                if ckpt is not None:
                    self._save(ckpt, epoch + 1, bad, best_state, history, fingerprint, done=stop)
                if stop:
                    break
        finally:
            bar.close()
        lower = f"lower inner_lr ({cfg.inner_lr}) or outer_lr ({cfg.outer_lr})"
        if best_state is not None:
            self.learner.load_state_dict(best_state)
        if not all(bool(torch.isfinite(p).all()) for p in self.learner.parameters()) or (
            diverged is not None and best_state is None
        ):
            # no finite epoch to fall back on (no validation, or none finite): a model
            # of NaN weights would be saved and score everything NaN
            losses = [row.get("val_loss", row.get("train_loss")) for row in history.epochs]
            raise DivergedError(f"meta-training diverged (losses by epoch: {losses[-5:]}); {lower}")
        if diverged is not None:
            history.diverged_at = diverged
            if ckpt is not None:
                # the kept epoch's weights, without the optimiser's moments (NaN now); a
                # rerun of this config finishes here, as training on would diverge again
                self._save(
                    ckpt, diverged, bad, best_state, history, fingerprint, done=True,
                    diverged=True,
                )  # fmt: skip
        if history.diverged_at is not None:  # this run's, or the resumed checkpoint's
            kept = history.best_epoch
            # the same epoch where its losses were finite and the optimiser's moments,
            # which the next step would spread to the weights, were not
            why = (
                "its optimiser state is not finite, though its loss is"
                if kept == history.diverged_at
                else "its loss or optimiser state is not finite"
            )
            warnings.warn(
                f"meta-training diverged at epoch {history.diverged_at} ({why}); kept "
                f"epoch {kept}, the best up to it"
                + (" (the untrained model)" if kept == 0 else "")
                + ". To train further, "
                + lower,
                UserWarning,
                stacklevel=3,
            )
        return history

    def _optimiser_finite(self) -> bool:
        return all(
            bool(torch.isfinite(value).all())
            for state in self.optimizer.state.values()
            for value in state.values()
            if torch.is_tensor(value) and value.is_floating_point()
        )

    def _check_episodes(self, ratings: UserRatings) -> None:
        """Refuse a support floor no training user can meet: every epoch would be
        empty and the untrained model would be saved as if it had been trained."""
        lo = max(self.cfg.min_support, 1)
        counts = np.diff(ratings.offsets)
        if len(counts) and counts.max() > lo:
            able = int((counts > lo).sum())
            if self.cfg.min_support > 1 and able < len(counts) / 2:
                # the others make no episode: a run "on 419 users" trained on 2 of them
                warnings.warn(
                    f"min_support={self.cfg.min_support}: only {able:,} of {len(counts):,} "
                    f"training users have more than {lo} ratings; the others make no "
                    "episode and are not trained on (lower min_support to use them)",
                    UserWarning,
                    stacklevel=3,
                )
            return
        most = int(counts.max()) if len(counts) else 0
        if self.cfg.min_support <= 1:  # lowering it helps no one
            raise ConfigError(
                f"no training user has more than {most} rating(s): an episode needs at least "
                "one support and one query rating, so there is nothing to meta-train on "
                "(a training user needs two ratings or more)"
            )
        raise ConfigError(
            f"min_support={self.cfg.min_support}: an episode needs {lo} support ratings "
            f"and at least one query rating, but no training user has more than {lo} "
            f"ratings (the most is {most}); lower min_support"
        )

    def _buffer_names(self) -> set[str]:
        """The learner's buffers: state training leaves alone (the frozen item vectors),
        which a checkpoint writes once, not again for the best epoch."""
        return {k for k, _ in self.learner.named_buffers()}

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.learner.state_dict().items()}

    # -- checkpoints --------------------------------------------------------
    def _save(
        self,
        ckpt: Path,
        epoch: int,
        bad: int,
        best_state: dict[str, torch.Tensor] | None,
        history: TrainHistory,
        fingerprint: str,
        *,
        done: bool,
        diverged: bool = False,
    ) -> None:
        model = self.learner.state_dict()
        tensors = {f"model.{k}": v for k, v in model.items()}
        if best_state is not None:
            # Buffers training leaves alone (the frozen item vectors: 230 MB at 150,000
            # items) are written once, under model.; _restore takes them from there.
            frozen = self._buffer_names()
            tensors.update(
                {
                    f"best.{k}": v
                    for k, v in best_state.items()
                    if k not in frozen or not torch.equal(v, model[k])
                }
            )
        opt = self.optimizer.state_dict()
        for idx, state in opt["state"].items() if not diverged else ():
            for key, value in state.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value)
        # The tensors go to a file of their own name and checkpoint.json, written last,
        # names it: an interruption between the two writes leaves the previous pair
        # whole (one fixed name had epoch-2 tensors resumed with epoch-1 state).
        name = f"checkpoint-{secrets.token_hex(4)}.safetensors"
        save_tensors(ckpt / name, tensors)
        save_json(
            ckpt / "checkpoint.json",
            {
                "tensors": name,
                "fingerprint": fingerprint,
                "epoch": epoch,
                "bad_epochs": bad,
                "done": done,
                "history": history.epochs,
                "best_epoch": history.best_epoch,
                "best_score": history.best_score,
                "param_groups": opt["param_groups"],
                **({"diverged": epoch} if diverged else {}),
            },
        )
        for old in ckpt.glob("checkpoint*.safetensors"):
            if old.name != name:  # earlier epochs', and one an interruption left unnamed
                old.unlink(missing_ok=True)
        remove_orphan_temps(ckpt)  # a kill mid-write; a run's lock keeps other writers out

    def _check_moments(
        self, state: dict[int, dict[str, torch.Tensor]], meta: dict, name: str
    ) -> None:
        """ValueError unless the optimiser's saved moments fit its parameters: Adam
        loads any shape and failed in its first step, outside the resume check, and a
        checkpoint that lost them resumed with fresh moments, not where it stopped."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if meta.get("epoch", 0) > 0 and not meta.get("diverged") and not state:
            raise ValueError(f"{name}: the optimiser's moments (opt.*) are missing")
        for idx, values in state.items():
            if not 0 <= idx < len(params):
                raise ValueError(f"{name}: opt.{idx}: no such parameter ({len(params)} of them)")
            for key, value in values.items():
                # Adam's step count: one whole number >= 0 (a shape [2] or a -5 failed in
                # the first step, outside the resume check)
                if key == "step" and (value.numel() != 1 or not float(value.flatten()[0]) >= 0):
                    raise ValueError(
                        f"{name}: opt.{idx}.step: expected one count >= 0, got "
                        f"{value.flatten()[:3].tolist()} of shape {tuple(value.shape)}"
                    )
                if key != "step" and value.shape != params[idx].shape:
                    raise ValueError(
                        f"{name}: opt.{idx}.{key}: shape {tuple(value.shape)}, expected "
                        f"{tuple(params[idx].shape)}"
                    )

    def _check_options(self, groups: list[dict[str, object]]) -> None:
        """ValueError unless each saved optimiser group's options are of the kinds this
        run's optimiser holds: an eps of "x" or null betas loaded, and failed in the
        first step outside the resume check; amsgrad switched on wanted moments the
        checkpoint never had. A switch (a bool, a str, None) must be this run's own;
        a number must be one (>= 0); betas two numbers in [0, 1)."""
        current = self.optimizer.param_groups
        if len(groups) != len(current):
            raise ValueError(f"param_groups: {len(groups)} groups, expected {len(current)}")
        for n, (saved, ours) in enumerate(zip(groups, current, strict=True)):
            for key, value in saved.items():
                if key in ("params", "lr") or key not in ours:
                    continue  # params and lr: _check_numbers; a key of another torch
                mine = ours[key]
                where = f"param_groups[{n}].{key}"
                if isinstance(mine, bool | str) or mine is None:
                    if value != mine or type(value) is not type(mine):
                        raise ValueError(
                            f"{where}: expected {mine!r} (this run's), got {value!r:.40}"
                        )
                elif isinstance(mine, int | float):
                    if not (is_number(value) and value >= 0):
                        raise ValueError(f"{where}: expected a number >= 0, got {value!r:.40}")
                elif isinstance(mine, tuple | list) and not (
                    isinstance(value, list | tuple)
                    and len(value) == len(mine)
                    and all(is_number(v) and 0 <= v < 1 for v in value)
                ):
                    raise ValueError(
                        f"{where}: expected {len(mine)} numbers in [0, 1), got {value!r:.40}"
                    )

    def _restore(
        self, ckpt: Path, meta: dict, history: TrainHistory
    ) -> tuple[int, int, dict[str, torch.Tensor] | None]:
        name = meta.get("tensors", "checkpoint.safetensors")  # the fixed name before 2026-12-02
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(f"tensors: expected a file name in {ckpt}, got {name!r}")
        tensors = load_tensors(ckpt / name)
        require_finite(tensors, ckpt / name)  # resuming from a diverged epoch only diverges
        _check_numbers(meta, self.cfg.epochs)
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        if best is not None:  # buffers unchanged since the best epoch are kept once
            frozen = self._buffer_names()
            best = {**{k: model[k] for k in frozen if k in model and k not in best}, **best}
        # load_state_dict casts another dtype without a word, and a best state of the
        # wrong shape failed after training, outside this check
        kept = self.learner.state_dict()
        # whole, the best state too: one missing a tensor resumed without a word and
        # failed when it was loaded, after the training
        for part, values in (("model", model), ("best", best)):
            if values is not None:
                check_tensors_like(kept, values, name, prefix=f"{part}.", whole=True)
        self.learner.load_state_dict(model)
        if best is not None:
            # a file's tensors load on the CPU; the best state is compared with the
            # learner's (torch.equal in _save refuses two devices) and loaded back
            # into it, so it lives where the learner does (a resume on CUDA failed at
            # its first epoch without a better validation loss)
            best = {k: v.to(kept[k].device) for k, v in best.items()}
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        self._check_moments(state, meta, name)
        self._check_options(meta["param_groups"])
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        history.epochs = list(meta["history"])
        history.best_epoch = int(meta["best_epoch"])
        history.best_score = float(meta["best_score"])
        history.resumed_from = int(meta["epoch"])
        if meta.get("diverged"):  # its epoch; True in checkpoints of the day before
            diverged = meta["diverged"]
            history.diverged_at = int(meta["epoch"]) if diverged is True else int(diverged)
        epoch, bad = int(meta["epoch"]), int(meta["bad_epochs"])
        validated = bool(history.epochs) and "val_loss" in history.epochs[-1]
        if (validated and bad >= self.cfg.patience) or meta.get("diverged"):
            epoch = self.cfg.epochs  # stopped early, or would stop here: nothing to run
        # stopped early under a lower patience: more patience trains on from there, as a
        # fresh run with it would have (it never met this patience before)
        return epoch, bad, best


def _check_numbers(meta: dict, epochs: int | None) -> None:
    """ValueError unless a checkpoint's counters and history are what ``_save`` writes:
    epoch 1.7 resumed "after epoch 1" with epoch 2's weights, -3 failed in numpy, and a
    history of "abc" was saved as three epochs a report then refused."""
    # best_epoch -1: no epoch kept yet (no validation)
    for key, low, top in (("epoch", 0, epochs), ("bad_epochs", 0, None), ("best_epoch", -1, None)):
        value = meta.get(key)
        if not is_whole(value) or value < low or (top is not None and value > top):
            raise ValueError(f"{key}: expected a whole number >= {low}, got {value!r:.40}")
    if not is_number(meta.get("best_score")):  # inf is written as Infinity, never null
        raise ValueError(f"best_score: expected a number, got {meta.get('best_score')!r:.40}")
    rows = meta.get("history")
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and is_whole(r.get("epoch")) for r in rows
    ):
        raise ValueError(f"history: expected a list of epoch rows, got {rows!r:.60}")
    for n, row in enumerate(rows):
        # a loss of "x" was resumed and saved with the run, whose report printed it
        for key in ("train_loss", "val_loss"):
            if key in row and row[key] is not None and not is_number(row[key]):
                raise ValueError(
                    f"history[{n}].{key}: expected a number or null, got {row[key]!r:.40}"
                )
    groups = meta.get("param_groups")
    if not isinstance(groups, list):
        raise ValueError(f"param_groups: expected a list, got {groups!r:.40}")
    for n, group in enumerate(groups):
        # torch's load_state_dict said only "('params')" of a group without its indices
        ok = (
            isinstance(group, dict)
            and isinstance(group.get("params"), list)
            and all(is_whole(i) and i >= 0 for i in group["params"])
            and is_number(group.get("lr"))
            and group["lr"] >= 0
        )
        if not ok:
            raise ValueError(
                f"param_groups[{n}]: expected an optimiser group with its params (indices) "
                f"and lr (a number >= 0), got {group!r:.60}"
            )


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _stop_epoch(rows: object, patience: int) -> int | None:
    """The epoch before the last of a checkpoint's history at which a run with this
    ``patience`` would have stopped early, or None: replays the early-stopping rule of
    ``_fit`` on the recorded validation losses (no validation: no early stop)."""
    if not isinstance(rows, list) or not rows or "val_loss" not in rows[-1]:
        return None
    best, bad = math.inf, 0
    for row in rows[:-1]:
        score = math.nan if row["val_loss"] is None else float(row["val_loss"])
        if score < best - 1e-5:  # the untrained start (epoch 0) always is
            best, bad = score, 0
        else:
            bad += 1
        if int(row["epoch"]) > 0 and bad >= patience:  # no stop before training
            return int(row["epoch"])
    return None


def data_fingerprint(train: TaskSource, validation: TaskSource | None) -> str:
    """What the ratings a checkpoint was trained on hash to (users, items, ratings,
    feature codes, training and validation both)."""
    digest = hashlib.sha256()
    for source in (train, validation):
        if source is None:
            digest.update(b"none")
            continue
        ur = source.ratings
        digest.update("\x1f".join(map(str, ur.user_ids)).encode())
        for array in (ur.offsets, ur.items, ur.ratings, source.user_features):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def inputs_fingerprint(module: torch.nn.Module) -> str:
    """What the model's buffers hash to before training: the catalogue's LM vectors
    and whatever else it was built from. A checkpoint restores them, so an items
    file whose text changed would otherwise resume, and keep, the old vectors."""
    digest = hashlib.sha256()
    for name, buffer in sorted(module.named_buffers()):
        digest.update(name.encode())
        # as bytes, whatever the dtype (numpy has no bfloat16)
        raw = buffer.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()[:16]


# options added after checkpoints were first written, each with the value every run
# before it had: left out of the fingerprint while they hold it, so that a checkpoint
# written before the option existed still resumes (each new one changed every
# fingerprint, and an unchanged config trained from the start)
LATER_OPTIONS: dict[tuple[str, ...], object] = {("model", "implicit_fold_in"): False}


def config_fingerprint(cfg: TrainConfig) -> str:
    """What a checkpoint must match to be resumed; more epochs or patience may be asked
    for (``_fit`` trains afresh where fewer would have stopped earlier)."""
    data = {k: v for k, v in cfg.to_dict().items() if k not in ("epochs", "patience", "device")}
    data["support_positives"] = cfg.support_rule()  # the rule the support sets were built by
    for path, before in LATER_OPTIONS.items():
        *sections, key = path
        section = data
        for name in sections:
            section = section[name]
        if section.get(key) == before:
            del section[key]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

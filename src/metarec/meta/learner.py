"""Outer loops: MAML, first-order MAML, Reptile, Meta-SGD and the transfer control.

All share one shape: item representations for the batch come from the item
tower (ordinary autograd), the per-user inner loop runs through
:class:`metarec.meta.inner.Scorer` under ``vmap``, and the outer update is a
standard optimiser step on the model's parameters.

* ``maml``: query loss after adaptation, differentiated through the inner steps.
* ``fomaml``: the same without second-order terms.
* ``metasgd``: like fomaml, plus a learned step size per adapted parameter
  entry: first-order Meta-SGD (Li et al. differentiate through the steps; here
  the step sizes' gradient is exact for one inner step only).
* ``reptile``: adapt on the task's support and query, then move the shared
  initial values toward the mean adapted values (fed to the optimiser as the
  gradient ``(init - mean(adapted)) / (inner_lr * inner_steps)``: for parameters
  moved by gradient steps alone, the mean inner-loop gradient, whose scale does not
  depend on the inner settings. The user bias and taste vector start each task at
  their closed-form solves, so their jump is mostly the solve's and this "gradient"
  grows as 1 / (inner_lr * inner_steps); the outer Adam divides that scale out, and
  they move toward the mean solved-then-stepped values, not where Reptile with
  gradient steps alone would take them).
  Parameters that are not adapted (the item tower, the solve's damping and
  ridge) get first-order MAML's query gradient, since Reptile has no update
  rule for them.
* ``transfer``: no inner loop in training; one global model is trained on
  every rating of the training users and fine-tuned on the support set only
  at evaluation. It is the control that shows what meta-learning adds.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec.config import TrainConfig
from metarec.data.tasks import TaskBatch
from metarec.meta.inner import TOWER, Params, Scorer, task_loss
from metarec.models.preference import PreferenceNet


class MetaLearner(nn.Module):
    def __init__(self, model: PreferenceNet, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.scorer = Scorer(model, cfg.objective)
        self.fast_names = model.adapted_names(cfg.adapt)
        self.step_sizes = nn.ParameterDict()
        if cfg.algorithm == "metasgd":
            for name, p in self.fast_init().items():
                key = name.replace(".", "__")
                self.step_sizes[key] = nn.Parameter(torch.full_like(p, cfg.inner_lr))

    # -- parameters ---------------------------------------------------------
    def fast_init(self) -> Params:
        """The shared initial values of the adapted parameters (live tensors)."""
        user, tower = self.model.user, self.model.tower
        return {
            name: (
                tower.get_parameter(name[len(TOWER) :])
                if name.startswith(TOWER)
                else user.get_parameter(name)
            )
            for name in self.fast_names
        }

    def inner_lr(self) -> float | dict[str, torch.Tensor]:
        if self.step_sizes:
            return {k.replace("__", "."): v for k, v in self.step_sizes.items()}
        return self.cfg.inner_lr

    # -- adaptation ---------------------------------------------------------
    def adapt(
        self,
        batch: TaskBatch,
        *,
        steps: int,
        first_order: bool = True,
        id_keep: torch.Tensor | None = None,
        fast: Params | None = None,
        reps: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Params:
        """Adapt to each task's support set. The softmax objective reads the
        catalogue representations set by the caller: once per training step
        (``outer_loss``, ``reptile_grads``), once per validation pass, once per
        catalogue change when serving — never once per adaptation.

        ``reps``: the support items' tower outputs when the caller already has
        them (a served model's cached catalogue); ignored when the tower is adapted.
        """
        tower_adapted = any(k.startswith(TOWER) for k in self.fast_names)
        if reps is None or tower_adapted:
            reps = self.scorer.item_reps(batch.support_items, id_keep)
        h, b = reps
        return self.scorer.adapt(
            self.fast_init() if fast is None else fast,
            batch.support_items,
            h,
            b,
            batch.support_y,
            batch.support_mask,
            batch.user_features,
            steps=steps,
            lr=self.inner_lr(),
            first_order=first_order,
            id_keep=id_keep,
        )

    def set_catalogue(self, id_keep: torch.Tensor | None = None) -> None:
        """Catalogue representations for the softmax objective (one tower pass)."""
        items = torch.arange(self.model.tower.n_items, device=self.model.tower.item_vectors.device)
        self.scorer.catalogue = self.scorer.item_reps(items, id_keep)

    def softmax_task_losses(
        self, batch: TaskBatch, fast: Params, id_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-task softmax NLL of the query positives over the catalogue → [B].

        The items of a task's support set are left out of its softmax (unless they are
        query items too; not for the transfer control, see below): the user already
        has them, so they are not what comes next, and ranking (``exclude_seen``) never
        shows them again. Left in, they took the probability mass a personalised model
        gives the support's neighbourhood, so the loss rewarded scoring the user's own
        kind of item low; on 400 users of clicks over 300 items (a user had up to a
        fifth of the catalogue) no epoch improved on popularity until they were left out.
        Every support item is left out, liked or not (``TaskBatch.seen_items``): under
        ``support_positives = "liked"`` a rated item below the threshold is not a
        target, but the user has it all the same.
        """
        if self.scorer.catalogue is None:
            self.set_catalogue(id_keep)
        logits = self.scorer.scores_over_catalogue(fast, batch.user_features)
        if self.cfg.algorithm == "transfer":
            # the control trains on its joined batch, where nothing is left out; judged
            # (early stopping) by a loss that left its support out, it stopped epochs
            # sooner: over P2's 5 folds 0.3545 -> 0.3157 at K = 10. A peer stays as it was
            return self._softmax_nll(logits, batch)
        seen = torch.zeros_like(logits).scatter_add_(1, batch.seen_items, batch.seen_mask)
        wanted = torch.zeros_like(logits).scatter_add_(1, batch.query_items, batch.query_mask)
        # the lowest finite value, not -inf: a padded query entry that gathers a left-out
        # item is then 0 once masked, where -inf * 0 was NaN
        logits = logits.masked_fill((seen > 0) & (wanted == 0), torch.finfo(logits.dtype).min)
        return self._softmax_nll(logits, batch)

    @staticmethod
    def _softmax_nll(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        logp = torch.log_softmax(logits, -1).gather(1, batch.query_items)
        mask = batch.query_mask
        return -(logp * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)

    def query_scores(
        self, batch: TaskBatch, fast: Params, id_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores [B, Q] of the query items (padding: 0 on the direct path)."""
        if self.scorer.direct(fast):
            return self.scorer.masked_scores(
                fast, batch.query_items, batch.query_mask, batch.user_features, id_keep
            )
        h, b = self.scorer.item_reps(batch.query_items, id_keep)
        return self.scorer.batch_scores(fast, batch.query_items, h, b, batch.user_features, id_keep)

    def query_loss(
        self, batch: TaskBatch, fast: Params, id_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.cfg.objective == "softmax":
            return self.softmax_task_losses(batch, fast, id_keep).mean()
        pred = self.query_scores(batch, fast, id_keep)
        return task_loss(pred, batch.query_y, batch.query_mask, self.outer_objective).mean()

    @property
    def outer_objective(self) -> str:
        """The loss the meta-objective scores queries with.

        For ratings it may differ from the inner loop's MSE: ``rating_loss="l1"``
        trains the meta-objective on absolute error (the headline P1 metric),
        while adaptation keeps smooth squared-error gradients.
        """
        if self.cfg.objective == "rating" and self.cfg.rating_loss == "l1":
            return "rating_l1"
        return self.cfg.objective

    # -- one outer step -----------------------------------------------------
    def outer_loss(self, batch: TaskBatch, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Loss whose backward gives the meta-gradient (Reptile: see ``reptile_step``)."""
        algo = self.cfg.algorithm
        if self.cfg.objective == "softmax":
            self.set_catalogue(id_keep)  # fresh for this step's parameters and id dropout
        if algo == "transfer":
            fast = {
                k: v.unsqueeze(0).expand(len(batch), *v.shape) for k, v in self.fast_init().items()
            }
            both = _support_and_query(batch, self.cfg.objective)
            return self.query_loss(both, fast, id_keep)
        first_order = algo != "maml"
        if self.cfg.objective != "softmax" and self.scorer.direct(self.fast_init()):
            # one tower pass for the support and the query items together
            query, sel = batch.query_items, batch.query_mask > 0
            support_reps, query_reps = self.scorer.item_reps_many(
                [batch.support_items, query[sel]], id_keep
            )
            fast = self.adapt(
                batch, steps=self.cfg.inner_steps, first_order=first_order, reps=support_reps
            )
            pred = self.scorer.masked_scores(
                fast, query, batch.query_mask, batch.user_features, reps=query_reps
            )
            return task_loss(pred, batch.query_y, batch.query_mask, self.outer_objective).mean()
        fast = self.adapt(
            batch, steps=self.cfg.inner_steps, first_order=first_order, id_keep=id_keep
        )
        return self.query_loss(batch, fast, id_keep)

    def reptile_grads(self, batch: TaskBatch, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Set ``.grad`` for a Reptile step; returns the query loss for logging.

        Reptile's rule moves the shared initial values of the adapted parameters toward
        their mean adapted values. Every other parameter gets first-order MAML's query
        gradient (adapted on the support alone), which Reptile has no rule for. It used
        to be the query loss at values adapted on support *and* query: the closed-form
        solve then fits the query itself, nothing anchored the network's overall level
        against the user bias's initial value, and the two drifted apart until training
        diverged (P1 ml-1m: validation loss 0.89 to 1e7 in one epoch, early stopping
        keeping the untrained start); and the solve's damping and ridge strength, which
        the loss at detached values never reaches, kept their starting values."""
        if self.cfg.objective == "softmax":
            self.set_catalogue(id_keep)
        init = self.fast_init()
        shared = {id(p) for p in init.values()}
        rest = [p for p in self.model.parameters() if p.requires_grad and id(p) not in shared]
        fast = self.adapt(batch, steps=self.cfg.inner_steps, first_order=True, id_keep=id_keep)
        loss = self.query_loss(batch, fast, id_keep)
        grads = torch.autograd.grad(loss, rest, allow_unused=True)
        for param, g in zip(rest, grads, strict=True):
            if g is not None:
                param.grad = g
        both = _support_and_query(batch, self.cfg.objective)
        adapted = self.adapt(
            both,
            steps=self.cfg.inner_steps,  # >= 1: TrainConfig refuses 0 for Reptile
            first_order=True,
            id_keep=id_keep,
            fast={k: v.detach() for k, v in init.items()},
        )
        for name, p in init.items():
            p.grad = (p.detach() - adapted[name].detach().mean(0)) / (
                self.cfg.inner_lr * self.cfg.inner_steps
            )
        return loss.detach()


def _support_and_query(batch: TaskBatch, objective: str) -> TaskBatch:
    """A batch whose both sides hold the task's support and query together.

    For ``bpr`` each side is ``[positives | negatives]``, so the halves are
    joined separately to keep every positive paired with its negative.
    """

    def join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if objective != "bpr":
            return torch.cat([a, b], 1)
        ha, hb = a.shape[1] // 2, b.shape[1] // 2
        return torch.cat([a[:, :ha], b[:, :hb], a[:, ha:], b[:, hb:]], 1)

    items = join(batch.support_items, batch.query_items)
    y = join(batch.support_y, batch.query_y)
    mask = join(batch.support_mask, batch.query_mask)
    return TaskBatch(batch.users, batch.user_features, items, y, mask, items, y, mask)

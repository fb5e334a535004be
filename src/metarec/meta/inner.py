"""The inner loop: per-user adaptation with torch.func, vectorised over users.

Parameters are plain dicts of tensors. ``adapt`` takes the shared initial
values of the adapted parameters (``fast``) and returns, for every user in
the batch, that user's adapted values (leading batch dimension). It is one
``vmap`` over a Python loop of ``grad`` steps, so a batch of 1,000 users costs
one set of batched matrix products per step, not 1,000 small ones.

``first_order=True`` stops the gradient through the inner gradients (FOMAML;
Meta-SGD's step sizes still get their gradient, which needs only first
order). With ``first_order=False`` an outer ``backward`` differentiates
through every inner step (MAML).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from metarec.models.preference import PreferenceNet

Params = dict[str, torch.Tensor]
TOWER = "tower."


def task_loss(
    pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, objective: str
) -> torch.Tensor:
    """Masked mean loss of one task (shapes [n]); padding contributes nothing."""
    if objective == "rating":
        per = (pred - y) ** 2
    elif objective == "rating_l1":
        per = (pred - y).abs()
    elif objective == "bce":
        per = F.binary_cross_entropy_with_logits(pred, y, reduction="none")
    elif objective == "bpr":
        half = pred.shape[-1] // 2
        per = -F.logsigmoid(pred[..., :half] - pred[..., half:])
        mask = mask[..., :half]
    else:  # pragma: no cover - validated in config
        raise ValueError(objective)
    return (per * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


class Scorer:
    """Scores items for users given (possibly per-user) fast parameters.

    Holds the functional view of a :class:`PreferenceNet`: the user head is
    called with ``functional_call`` so the fast parameters may carry a batch
    dimension under ``vmap``; the item tower is only re-run per user when the
    adaptation scope includes it.
    """

    def __init__(self, model: PreferenceNet, objective: str) -> None:
        self.model = model
        self.objective = objective
        # softmax objective: the catalogue's representations (h [N, H], b [N]) for
        # this batch, set by the learner before adapting (one tower pass per batch)
        self.catalogue: tuple[torch.Tensor, torch.Tensor] | None = None

    def item_reps(
        self, items: torch.Tensor, id_keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tower outputs for an index tensor of any shape.

        A batch of users rates the same popular items over and over (64 users ×
        110 ratings touch at most a few hundred distinct items), so the tower —
        most of meta-training's arithmetic — runs once per distinct item and the
        results are gathered back.
        """
        unique, inverse = torch.unique(items, return_inverse=True)
        if unique.numel() * 2 > items.numel():  # few repeats: gathering would not pay
            return self.model.tower(items, id_keep)
        h, b = self.model.tower(unique, id_keep)
        return h[inverse], b[inverse]

    def scores(
        self,
        fast: Mapping[str, torch.Tensor],
        items: torch.Tensor,
        h: torch.Tensor,
        b: torch.Tensor,
        user_features: torch.Tensor,
        id_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One user's scores; ``h``/``b`` are ignored when the tower is adapted."""
        tower_fast = {k[len(TOWER) :]: v for k, v in fast.items() if k.startswith(TOWER)}
        if tower_fast:
            h, b = functional_call(self.model.tower, tower_fast, (items, id_keep), strict=False)
        user_fast = {k: v for k, v in fast.items() if not k.startswith(TOWER)}
        return functional_call(self.model.user, user_fast, (h, b, user_features), strict=False)

    def loss(
        self,
        fast: Mapping[str, torch.Tensor],
        items: torch.Tensor,
        h: torch.Tensor,
        b: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        user_features: torch.Tensor,
        id_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.objective == "softmax":
            return self.softmax_loss(fast, items, mask, user_features)
        pred = self.scores(fast, items, h, b, user_features, id_keep)
        return task_loss(pred, y, mask, self.objective)

    def softmax_loss(
        self,
        fast: Mapping[str, torch.Tensor],
        items: torch.Tensor,
        mask: torch.Tensor,
        user_features: torch.Tensor,
    ) -> torch.Tensor:
        """Mean negative log-likelihood of one user's positive ``items`` under a
        softmax over the whole catalogue (the multinomial likelihood of Mult-VAE):
        it ranks every item against every other, which is what a top-k list needs."""
        if self.catalogue is None:
            raise RuntimeError("softmax objective: catalogue representations not set")
        h_all, b_all = self.catalogue
        logits = self.scores(fast, items, h_all, b_all, user_features)  # all N items
        per = torch.logsumexp(logits, -1) - logits[items]
        return (per * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)

    def adapt(
        self,
        fast: Params,
        items: torch.Tensor,
        h: torch.Tensor,
        b: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        user_features: torch.Tensor,
        *,
        steps: int,
        lr: float | Mapping[str, torch.Tensor],
        first_order: bool,
        id_keep: torch.Tensor | None = None,
    ) -> Params:
        """Adapt ``fast`` to each task of a batch ([B, S] inputs) → batched params.

        For the rating objective two closed-form steps come first, each fitted
        to the residual of the current model on the support set: the user's
        bias jumps to the damped mean residual (Koren's baseline), then the
        user's factor vector to the ridge solution over the items' projected
        representations (ALS fold-in). Damping and ridge strength are
        meta-learned. Gradient steps then refine everything adapted. Without
        the closed-form start, a few small steps leave the user under-fitted
        and the plain bias model wins.
        """
        closed_form = self.objective == "rating" and "user_bias" in fast
        fold_in = (
            closed_form
            and "user_factor" in fast
            and self.model.user.factor is not None
            and self.model.cfg.fold_in
        )
        step_grad = grad(self.loss)
        user = self.model.user

        def one_task(items, h, b, y, mask, uf):  # type: ignore[no-untyped-def]
            params = dict(fast)
            if user.encoder is not None:
                # ratings pool as deviations from the global mean; implicit targets are
                # 1 for positives and 0 for sampled negatives, so only positives pool
                weight = mask * (y - user.offset if self.objective == "rating" else y)
                for name, shift in user.encode_support(h, weight).items():
                    if name in params:
                        params[name] = params[name] + shift
            if closed_form:
                resid = (y - self.scores(params, items, h, b, uf, id_keep)) * mask
                shift = resid.sum() / (mask.sum() + user.bias_damping())
                params["user_bias"] = params["user_bias"] + shift
                if fold_in:
                    resid = (resid - shift) * mask
                    p = user.factor(h) * mask.unsqueeze(-1)  # type: ignore[misc]
                    eye = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
                    gram = p.T @ p + user.factor_ridge() * eye
                    solved = torch.linalg.solve(gram, p.T @ resid)
                    params["user_factor"] = params["user_factor"] + solved
            for _ in range(steps):
                g = step_grad(params, items, h, b, y, mask, uf, id_keep)
                if first_order:
                    g = {k: v.detach() for k, v in g.items()}
                if isinstance(lr, Mapping):
                    params = {k: params[k] - lr[k] * g[k] for k in params}
                else:
                    params = {k: params[k] - lr * g[k] for k in params}
            return params

        return vmap(one_task)(items, h, b, y, mask, user_features)

    def batch_scores(
        self,
        fast: Params,
        items: torch.Tensor,
        h: torch.Tensor,
        b: torch.Tensor,
        user_features: torch.Tensor,
    ) -> torch.Tensor:
        """Scores of [B, n] items under batched ``fast`` params → [B, n]."""
        return vmap(self.scores, in_dims=(0, 0, 0, 0, 0))(fast, items, h, b, user_features)

    def catalogue_scores(
        self, fast: Params, user_features: torch.Tensor, h: torch.Tensor, b: torch.Tensor
    ) -> torch.Tensor:
        """Scores of every catalogue item for batched users: → [B, N].

        ``h``/``b`` are the cached catalogue representations [N, H], [N]; they
        are shared across users (``in_dims=None``), so no copy per user is made.
        """
        items = torch.arange(h.shape[0], device=h.device)
        if user_features.shape[0] == 1:  # one user (a served request): no vmap dispatch
            one = {k: v[0] for k, v in fast.items()}
            return self.scores(one, items, h, b, user_features[0])[None]
        return vmap(self.scores, in_dims=(0, None, None, None, 0))(fast, items, h, b, user_features)

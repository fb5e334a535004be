"""The inner loop: per-user adaptation with torch.func, vectorised over users.

Parameters are plain dicts of tensors. ``adapt`` takes the shared initial
values of the adapted parameters (``fast``) and returns, for every user in
the batch, that user's adapted values (leading batch dimension). It is one
``vmap`` over a Python loop of ``grad`` steps, so a batch of 1,000 users costs
one set of batched matrix products per step, not 1,000 small ones.

``first_order=True`` stops the gradient through the inner gradients (FOMAML, and
Meta-SGD as metarec trains it: its step sizes still get a gradient, the exact one
for a single inner step; with more, it leaves out how a step size moves the later
steps' gradients, which Li et al.'s second-order Meta-SGD keeps). With
``first_order=False`` an outer ``backward`` differentiates through every inner
step (MAML).

The direct path. For the default scope (``context``: the context vector, the
user bias and the taste vector) and the rating objective, the inner loss's
gradient is a handful of batched matrix products, written out in
:class:`_Head` — the same function ``grad`` differentiates, with the same
ReLU convention, so the numbers agree to float rounding (tests check it
against the ``torch.func`` path, and MAML's meta-gradient against finite
differences). It needs no ``vmap``/``grad`` dispatch, which at one user costs
far more than the arithmetic, and under first order it builds no graph for
the inner gradients. Query scoring for that scope runs on the real (unpadded)
query entries only.

The softmax objective and catalogue-wide scoring have a direct path of their
own for the same scope: every user scores the same N items, so activations
are laid out [N, B, H] and each layer is one large matrix product for the
whole batch (``h (diag(z_u) W_hz^T)`` for all users at once, and
``∂loss/∂z`` from one ``[B·H, N] × [N, H]`` product) instead of B products
of N rows under ``vmap``. Every other scope and objective takes the generic path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from contextlib import nullcontext

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from metarec.models.preference import PreferenceNet, UserHead

Params = dict[str, torch.Tensor]
TOWER = "tower."
# the per-user parameters the direct path adapts (``adapt="context"``)
DIRECT_NAMES = frozenset({"context", "user_bias", "user_factor"})


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


class _Rows:
    """The real (unpadded) entries of a padded [B, n] batch, row-major, and their users.

    ``take`` gathers per-user values to the entries, ``total`` sums entries per
    user. One user needs neither an index nor a scatter: values broadcast and
    sums run over all entries.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        self.n_users = mask.shape[0]
        self.sel = mask > 0
        self.owner = None if self.n_users == 1 else self.sel.nonzero()[:, 0]

    def pick(self, x: torch.Tensor) -> torch.Tensor:
        """Entries of a padded [B, n, ...] tensor → [N, ...]."""
        return x[self.sel]

    def take(self, t: torch.Tensor, dims: int) -> torch.Tensor:
        """Per-user values [B, ...] at each entry; ``dims``: the dimensions of one
        user's value, so a shared (unbatched) value just broadcasts."""
        return t if self.owner is None or t.dim() == dims else t.index_select(0, self.owner)

    def total(self, x: torch.Tensor) -> torch.Tensor:
        """Per-user sums [B, ...] of entry values [N, ...]."""
        if self.owner is None:
            return x.sum(0, keepdim=True)
        return x.new_zeros(self.n_users, *x.shape[1:]).index_add_(0, self.owner, x)


def _direct_pred(
    fixed: torch.Tensor,
    out: torch.Tensor,
    fh: torch.Tensor | None,
    ub: torch.Tensor,
    uf: torch.Tensor,
    rows: _Rows,
) -> torch.Tensor:
    """:meth:`UserHead.forward`'s sum at each entry: offset + item bias (``fixed``),
    user bias, MLP output and the taste term ``factor(h) · user_factor``."""
    pred = fixed + rows.take(ub, 0) + out
    if fh is not None:
        pred = pred + (fh @ uf if uf.dim() == 1 else (fh * rows.take(uf, 1)).sum(-1))
    return pred


def _descend(
    params: Params,
    g: Mapping[str, torch.Tensor],
    lr: float | Mapping[str, torch.Tensor],
    adapted: Mapping[str, torch.Tensor],
) -> None:
    """One gradient step, in ``params``, on the adapted names that have a gradient."""
    for k in adapted:
        if k not in g:
            continue
        if isinstance(lr, Mapping):
            params[k] = params[k] - lr[k] * g[k]
        else:
            params[k] = torch.sub(params[k], g[k], alpha=lr)


def _user_params(fast: Mapping[str, torch.Tensor], user: UserHead, n_users: int) -> Params:
    """Context, bias and taste vector with a leading user dimension: values from ``fast``
    (shared ones expanded, without a copy), the head's own where ``fast`` lacks them."""
    out = {}
    for name, shape in (
        ("context", user.context.shape),
        ("user_bias", torch.Size()),
        ("user_factor", user.user_factor.shape),
    ):
        value = fast.get(name, user.get_parameter(name))
        out[name] = value if value.dim() > len(shape) else value.expand(n_users, *shape)
    return out


# users per chunk of the catalogue layout on a CPU: [N, users, H1] activations of about
# this many elements (4 MB in float32) stay in cache through the elementwise passes; a
# 64-user batch over ml-100k's 1,682 items in one piece ran a gradient step 1.5-2x slower
_CHUNK_ELEMENTS = 1 << 20
# a GPU takes far larger pieces at once, but not unbounded ones: the activations of
# every user in a batch over a large catalogue would not fit (2^27 float32: 512 MB)
_GPU_CHUNK_ELEMENTS = 1 << 27


def _user_chunks(n_users: int, n_items: int, width: int, device: torch.device) -> list[slice]:
    """Slices of the batch's users to run one after another."""
    budget = _CHUNK_ELEMENTS if device.type == "cpu" else _GPU_CHUNK_ELEMENTS
    size = max(1, budget // max(1, n_items * width))
    return [slice(i, i + size) for i in range(0, n_users, size)]


class _Head:
    """The user head's MLP, taken apart for the direct path.

    The first layer's weight is split by input block (``[h, h ⊙ z, z, u]``), so
    the parts that do not move during adaptation (``h``, user features) are
    multiplied once per adaptation, and ``∂loss/∂z`` is two products with the
    ``h ⊙ z`` and ``z`` blocks of the first layer's input gradient.
    """

    def __init__(self, user: UserHead) -> None:
        mods = [m for m in user.mlp if not isinstance(m, nn.Dropout)]
        self.w_h, self.w_hz, self.w_z, self.w_u, self.b1 = user.first_layer()
        self.rest = mods[1:]
        self.user = user

    @staticmethod
    def supports(user: UserHead) -> bool:
        """Linear/ReLU stacks (dropout only while inactive), first layer a Linear."""
        mods = list(user.mlp)
        if not mods or not isinstance(mods[0], nn.Linear):
            return False
        for m in mods:
            if isinstance(m, nn.Dropout):
                if m.p > 0 and m.training:
                    return False
            elif not isinstance(m, (nn.Linear, nn.ReLU)) or getattr(m, "inplace", False):
                return False
        return True

    def user_part(self, user_features: torch.Tensor) -> torch.Tensor:
        """First-layer bias plus the user-feature block: [B, F] codes → [B, H1]."""
        feats = self.user.features
        if not len(feats):
            return self.b1.expand(user_features.shape[0], -1)
        u = torch.cat([emb(user_features[:, j]) for j, emb in enumerate(feats)], -1)
        return torch.addmm(self.b1, u, self.w_u.T)

    def forward(
        self, base: torch.Tensor, h: torch.Tensor, z: torch.Tensor, rows: _Rows
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """MLP output [N] at context ``z`` ([B, H] or shared [H]) and the ReLU outputs.

        ``base`` [N, H1]: the first layer's output from ``h`` and the user features.
        """
        a = torch.addmm(base, h * rows.take(z, 1), self.w_hz.T) + rows.take(z @ self.w_z.T, 1)
        return self._rest(a)

    def grad_context(
        self, r: torch.Tensor, h: torch.Tensor, acts: list[torch.Tensor], rows: _Rows
    ) -> torch.Tensor:
        """``∂loss/∂z`` [B, H] from ``r = ∂loss/∂out`` [N] (ReLU'(0) = 0, as autograd's)."""
        g = self._back(r, acts)
        return rows.total(h * (g @ self.w_hz)) + rows.total(g) @ self.w_z

    def _rest(self, a: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The layers after the first on pre-activations ``a`` [..., H1] → output [...]."""
        acts = []
        for m in self.rest:
            if isinstance(m, nn.ReLU):
                a = torch.relu_(a)  # ``a`` is always this method's own temporary
                acts.append(a)
            else:
                a = F.linear(a, m.weight, m.bias)  # type: ignore[arg-type]
        return a.squeeze(-1), acts

    def _back(self, r: torch.Tensor, acts: list[torch.Tensor]) -> torch.Tensor:
        """``∂loss/∂(first-layer output)`` [..., H1] from ``r = ∂loss/∂out`` [...]."""
        g = r.unsqueeze(-1)
        relus = iter(reversed(acts))
        for m in reversed(self.rest):
            if isinstance(m, nn.ReLU):
                g = torch.ops.aten.threshold_backward(g, next(relus), 0)
            elif g.shape[-1] == 1:
                g = g * m.weight  # type: ignore[operator]  # the output layer: an outer product
            else:
                g = g @ m.weight  # type: ignore[operator]
        return g

    def catalogue_forward(
        self, hw: torch.Tensor, h: torch.Tensor, z: torch.Tensor, per_user: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """MLP outputs [N, B] of B users over the same N items, and the ReLU outputs
        ([N, B, H1]: each later layer is one product over all N·B rows).

        ``hw`` = ``h W_h^T`` [N, H1], the same for every user; ``z`` [B, H];
        ``per_user`` [B, H1]: the first layer's bias and its ``z`` and user blocks.
        """
        n, hd = h.shape
        # (h ⊙ z_u) W_hz^T = h (diag(z_u) W_hz^T): one [N, H] x [H, B·H1] product
        weights = (z.unsqueeze(-1) * self.w_hz.T).permute(1, 0, 2).reshape(hd, -1)
        # in place: each [N, B, H1] temporary is tens of MB whose first touch costs page faults
        a = (h @ weights).view(n, z.shape[0], -1).add_(hw.unsqueeze(1)).add_(per_user)
        return self._rest(a)

    def catalogue_grad_context(
        self, r: torch.Tensor, h: torch.Tensor, acts: list[torch.Tensor]
    ) -> torch.Tensor:
        """``∂loss/∂z`` [B, H] from ``r = ∂loss/∂out`` [N, B] (the catalogue layout).

        ``Σ_n h_n ⊙ (g_nu W_hz)`` is ``Σ_k W_hz[k] ⊙ (Σ_n g_nuk h_n)``: one
        [B·H1, N] x [N, H] product for every user at once.
        """
        g = self._back(r, acts)
        n, b, h1 = g.shape
        outer = (g.reshape(n, b * h1).T @ h).view(b, h1, -1)
        return (outer * self.w_hz).sum(1) + g.sum(0) @ self.w_z


class CatalogueSide:
    """The item side of direct-path catalogue scoring: the head's first layer taken
    apart, ``h W_h^T``, the factor projection and the fixed offsets. It depends on the
    catalogue and the weights, not on the users, so a served model builds it once per
    catalogue change (a third of one user's scoring time was spent rebuilding it)."""

    def __init__(self, user: UserHead, h: torch.Tensor, b: torch.Tensor) -> None:
        self.grad = torch.is_grad_enabled()  # whether gradients can flow through it
        self.head = _Head(user)
        self.h = h
        self.hw = h @ self.head.w_h.T
        self.fh = user.factor(h) if user.factor is not None else None
        self.fixed = user.offset + b

    def rows(self, items: torch.Tensor) -> CatalogueSide:
        """This side for the catalogue rows ``items`` only, taken from what is built
        (scoring a few items of a large catalogue computed all of them)."""
        part = copy.copy(self)
        part.h, part.hw, part.fixed = self.h[items], self.hw[items], self.fixed[items]
        part.fh = None if self.fh is None else self.fh[items]
        return part


class _Catalogue:
    """A batch's view of the catalogue all its users score, for the direct path: what
    does not depend on the users' adapted values, computed once for every chunk of
    users and every step."""

    def __init__(self, side: CatalogueSide, user_features: torch.Tensor) -> None:
        self.head = side.head
        self.h = side.h
        self.hw = side.hw
        self.fh = side.fh
        self.fixed = side.fixed
        self.user_part = self.head.user_part(user_features)

    def chunks(self, n_users: int) -> list[slice]:
        return _user_chunks(n_users, self.h.shape[0], self.hw.shape[-1], self.hw.device)

    def logits(
        self, part: Mapping[str, torch.Tensor], users: slice
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`UserHead.forward`'s sum [b, N] for the users ``users`` whose adapted
        values ``part`` holds (a leading dimension of b), and the MLP's ReLU outputs."""
        z = part["context"]
        per_user = self.user_part[users] + z @ self.head.w_z.T
        out, acts = self.head.catalogue_forward(self.hw, self.h, z, per_user)
        pred = out.T + self.fixed + part["user_bias"].unsqueeze(-1)
        if self.fh is not None:
            pred = pred + part["user_factor"] @ self.fh.T
        return pred, acts

    def gradients(self, r: torch.Tensor, acts: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gradients of the adapted values from ``r = ∂loss/∂logits`` [b, N]."""
        g = {
            "context": self.head.catalogue_grad_context(r.T, self.h, acts),
            "user_bias": r.sum(-1),
        }
        if self.fh is not None:
            g["user_factor"] = r @ self.fh
        return g


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
        self._catalogue: tuple[torch.Tensor, torch.Tensor] | None = None
        self._side: CatalogueSide | None = None
        # False sends every scope through the generic vmap/grad path (tests, benchmarks)
        self.direct_path = True
        # per catalogue item, added to every item bias the tower computes here: a served
        # model's fold-in offsets (None in training). The cached catalogue has them
        # already; an adapted tower's outputs did not, so adapt="all" ignored fold-in
        self.item_offsets: torch.Tensor | None = None

    @property
    def catalogue(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._catalogue

    @catalogue.setter
    def catalogue(self, reps: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        self._catalogue = reps
        self._side = None  # rebuilt from these representations when next needed

    def catalogue_side(self) -> CatalogueSide:
        """:class:`CatalogueSide` of :attr:`catalogue`, built once per setting: one per
        training step (the learner sets fresh representations), one per validation pass
        or catalogue change."""
        assert self._catalogue is not None
        # one built without gradients (a validation pass) must not serve a training loss
        if self._side is None or self._side.grad != torch.is_grad_enabled():
            self._side = CatalogueSide(self.model.user, *self._catalogue)
        return self._side

    def direct(self, fast: Mapping[str, torch.Tensor]) -> bool:
        """Whether ``fast`` can be scored (and, for ratings, adapted) on the direct path."""
        return (
            self.direct_path
            and "context" in fast
            and set(fast) <= DIRECT_NAMES
            and _Head.supports(self.model.user)
        )

    def item_reps(
        self, items: torch.Tensor, id_keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tower outputs for an index tensor of any shape.

        A batch of users rates the same popular items over and over (64 users ×
        110 ratings touch at most a few hundred distinct items), so the tower —
        most of meta-training's arithmetic — runs once per distinct item and the
        results are gathered back.
        """
        return self.item_reps_many([items], id_keep)[0]

    def item_reps_many(
        self, parts: list[torch.Tensor], id_keep: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`item_reps` for several index tensors with one tower pass."""
        flat = [p.flatten() for p in parts]
        items = torch.cat(flat) if len(flat) > 1 else flat[0]
        unique, inverse = torch.unique(items, return_inverse=True)
        if unique.numel() * 2 > items.numel():  # few repeats: gathering would not pay
            if len(parts) == 1:
                return [self.tower_out(parts[0], id_keep)]
            unique, inverse = items, torch.arange(len(items), device=items.device)
        h, b = self.tower_out(unique, id_keep)
        out, start = [], 0
        for part in parts:
            # index_select: a faster gather than indexing, with index_add as its backward
            idx = inverse[start : start + part.numel()]
            start += part.numel()
            out.append(
                (
                    h.index_select(0, idx).view(*part.shape, h.shape[-1]),
                    b.index_select(0, idx).view(part.shape),
                )
            )
        return out

    def tower_out(
        self,
        items: torch.Tensor,
        id_keep: torch.Tensor | None = None,
        params: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tower's (h, b) for ``items`` (under adapted ``params`` when given), with
        :attr:`item_offsets` added to b."""
        if params:
            h, b = functional_call(self.model.tower, dict(params), (items, id_keep), strict=False)
        else:
            h, b = self.model.tower(items, id_keep)
        if self.item_offsets is not None:
            b = b + self.item_offsets[items]
        return h, b

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
            h, b = self.tower_out(items, id_keep, tower_fast)
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
        and the plain bias model wins. ``bce`` and ``bpr`` take the logistic
        counterpart where ``model.implicit_fold_in`` asks for it
        (:meth:`_newton_start`).
        """
        closed_form = self.objective == "rating" and "user_bias" in fast
        fold_in = (
            closed_form
            and "user_factor" in fast
            and self.model.user.factor is not None
            and self.model.cfg.fold_in
        )
        if self.objective == "softmax" and self.catalogue is not None and self.direct(fast):
            return self._adapt_softmax_direct(
                fast, items, h, y, mask, user_features, steps=steps, lr=lr,
                first_order=first_order,
            )  # fmt: skip
        # the rating path's amortised start (support encoder) is written for torch.func only
        if self.objective == "rating" and self.model.user.encoder is None and self.direct(fast):
            return self._adapt_direct(
                fast, h, b, y, mask, user_features, steps=steps, lr=lr,
                first_order=first_order, closed_form=closed_form, fold_in=fold_in,
            )  # fmt: skip
        newton = (
            self.objective in ("bce", "bpr")
            and "user_factor" in fast
            and self.model.user.factor is not None
            and self.model.cfg.implicit_fold_in
        )
        step_grad = grad(self.loss)
        user = self.model.user

        def one_task(
            items: torch.Tensor,
            h: torch.Tensor,
            b: torch.Tensor,
            y: torch.Tensor,
            mask: torch.Tensor,
            uf: torch.Tensor,
        ) -> dict[str, torch.Tensor]:
            params = dict(fast)
            if user.encoder is not None:
                # ratings pool as deviations from the global mean; implicit targets are
                # 1 for positives and 0 for sampled negatives, so only positives pool
                pooling = mask if self.objective == "rating" else mask * y
                weight = mask * (y - user.offset) if self.objective == "rating" else pooling
                shifts = user.encode_support(h, weight, pooling.sum())
                for name, shift in shifts.items():
                    if name in params:
                        params[name] = params[name] + shift
            if closed_form:
                resid = (y - self.scores(params, items, h, b, uf, id_keep)) * mask
                shift = resid.sum() / (mask.sum() + user.bias_damping())
                params["user_bias"] = params["user_bias"] + shift
                if fold_in and user.factor is not None:  # fold_in implies a factor
                    resid = (resid - shift) * mask
                    p = user.factor(h) * mask.unsqueeze(-1)
                    eye = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
                    gram = p.T @ p + user.factor_ridge() * eye
                    solved = torch.linalg.solve(gram, p.T @ resid)
                    params["user_factor"] = params["user_factor"] + solved
            if newton:
                params = self._newton_start(params, items, h, b, y, mask, uf, id_keep)
            for _ in range(steps):
                g = step_grad(params, items, h, b, y, mask, uf, id_keep)
                if first_order:
                    g = {k: v.detach() for k, v in g.items()}
                if isinstance(lr, Mapping):
                    params = {k: params[k] - lr[k] * g[k] for k in params}
                else:
                    params = {k: params[k] - lr * g[k] for k in params}
            return params

        if items.shape[0] == 1:  # one user: the same function without vmap's dispatch
            one = one_task(items[0], h[0], b[0], y[0], mask[0], user_features[0])
            return {k: v.unsqueeze(0) for k, v in one.items()}
        # "different": a head with dropout draws its own mask for each task, as a loop
        # over tasks would (the default refuses any random operation under vmap)
        return vmap(one_task, randomness="different")(items, h, b, y, mask, user_features)

    def _newton_start(
        self,
        params: Params,
        items: torch.Tensor,
        h: torch.Tensor,
        b: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        user_features: torch.Tensor,
        id_keep: torch.Tensor | None,
    ) -> Params:
        """One user's implicit fold-in: one Newton (IRLS) step of the support's logistic
        loss, first in the user bias (bce only: a pair's two scores share it, so bpr
        has no bias to fit), then in the taste vector. The bias step's curvature takes
        the meta-learned damping and the taste vector's Hessian the meta-learned ridge,
        as the rating path's two solves do.

        Why: the projection starts near zero, so gradient steps on a logistic loss
        barely move the taste vector, and bce and bpr users stayed close to the
        population. The Newton step's size does not depend on the projection's
        scale. Where a taste is cheap to read from a few items it personalises
        far more; where popularity rules, a small ridge over-fits the support
        (numbers in ModelConfig.implicit_fold_in's comment).
        """
        user = self.model.user
        assert user.factor is not None
        params = dict(params)
        s = self.scores(params, items, h, b, user_features, id_keep)
        p = user.factor(h)
        if self.objective == "bpr":
            half = s.shape[-1] // 2
            s = s[:half] - s[half:]
            p = p[:half] - p[half:]
            mask = mask[:half]
            y = torch.ones_like(s)
        elif "user_bias" in params:
            prob = torch.sigmoid(s)
            shift = ((y - prob) * mask).sum() / (
                (prob * (1 - prob) * mask).sum() + user.bias_damping()
            )
            params["user_bias"] = params["user_bias"] + shift
            s = s + shift
        prob = torch.sigmoid(s)
        weight = prob * (1 - prob) * mask
        eye = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
        hessian = p.T @ (p * weight.unsqueeze(-1)) + user.factor_ridge() * eye
        step = torch.linalg.solve(hessian, p.T @ ((y - prob) * mask))
        params["user_factor"] = params["user_factor"] + step
        return params

    def _adapt_direct(
        self,
        fast: Params,
        h: torch.Tensor,
        b: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        user_features: torch.Tensor,
        *,
        steps: int,
        lr: float | Mapping[str, torch.Tensor],
        first_order: bool,
        closed_form: bool,
        fold_in: bool,
    ) -> Params:
        """:meth:`adapt` for the ``context`` scope and the rating objective, batched
        by hand over the support's real entries: the same closed-form start and
        the same MSE gradient steps."""
        user = self.model.user
        head = _Head(user)
        rows = _Rows(mask)
        n_users = mask.shape[0]
        h_rows, y_rows = rows.pick(h), rows.pick(y)
        base = torch.addmm(rows.take(head.user_part(user_features), 1), h_rows, head.w_h.T)
        fh = user.factor(h_rows) if user.factor is not None else None  # [N, K]
        z = fast["context"]
        ub = fast.get("user_bias", user.user_bias)
        uf = fast.get("user_factor", user.user_factor)
        fixed = user.offset + rows.pick(b)

        def predict(out: torch.Tensor, ub: torch.Tensor, uf: torch.Tensor) -> torch.Tensor:
            return _direct_pred(fixed, out, fh, ub, uf, rows)

        out, acts = head.forward(base, h_rows, z, rows)
        msum = mask.sum(-1)
        if closed_form:
            resid = y_rows - predict(out, ub, uf)
            shift = rows.total(resid) / (msum + user.bias_damping())
            ub = ub + shift
            if fold_in and fh is not None:
                resid = resid - rows.take(shift, 0)
                eye = torch.eye(fh.shape[-1], dtype=fh.dtype, device=fh.device)
                if rows.owner is None:
                    gram = (fh.T @ fh).unsqueeze(0)
                else:
                    p = fh.new_zeros(*mask.shape, fh.shape[-1]).index_put((rows.sel,), fh)
                    gram = p.transpose(-1, -2) @ p
                gram = gram + user.factor_ridge() * eye
                rhs = rows.total(fh * resid.unsqueeze(-1))
                uf = uf + torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)
        params = {"context": z, "user_bias": ub, "user_factor": uf}
        scale = rows.take(2.0 / msum.clamp_min(1.0), 0)
        inner = torch.no_grad() if first_order else nullcontext()
        for step in range(steps):
            with inner:
                if step:
                    out, acts = head.forward(base, h_rows, params["context"], rows)
                pred = predict(out, params["user_bias"], params["user_factor"])
                r = (pred - y_rows) * scale  # ∂(masked mean squared error)/∂pred
                g = {
                    "context": head.grad_context(r, h_rows, acts, rows),
                    "user_bias": rows.total(r),
                }
                if fh is not None and "user_factor" in fast:
                    g["user_factor"] = rows.total(fh * r.unsqueeze(-1))
            _descend(params, g, lr, fast)
        shapes = {k: v.shape for k, v in fast.items()}
        return {
            k: (
                params[k]
                if params[k].dim() > len(shapes[k])
                else params[k].expand(n_users, *shapes[k])
            )
            for k in fast
        }

    def _adapt_softmax_direct(
        self,
        fast: Params,
        items: torch.Tensor,
        h: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        user_features: torch.Tensor,
        *,
        steps: int,
        lr: float | Mapping[str, torch.Tensor],
        first_order: bool,
    ) -> Params:
        """:meth:`adapt` for the ``context`` scope and the softmax objective: the same
        amortised start and the same gradient steps on each user's mean negative
        log-likelihood of the support items over the catalogue, written out in the
        catalogue layout (:meth:`_Head.catalogue_forward`)."""
        assert self.catalogue is not None
        user = self.model.user
        n_users = mask.shape[0]
        params = _user_params(fast, user, n_users)
        if user.encoder is not None:
            # implicit targets: only positives pool (as on the torch.func path)
            weight = mask * y
            for name, shift in user.encode_support(h, weight, weight.sum(-1)).items():
                if name in fast:
                    params[name] = params[name] + shift
        catalogue = _Catalogue(self.catalogue_side(), user_features)
        msum = mask.sum(-1, keepdim=True)
        # ∂(mean NLL)/∂logits = (M softmax - counts) / max(M, 1), M the user's positives
        counts = mask.new_zeros(n_users, catalogue.h.shape[0]).scatter_add_(1, items, mask)
        denom = msum.clamp_min(1.0)
        inner = torch.no_grad() if first_order else nullcontext()
        chunks = []
        for users in catalogue.chunks(n_users):
            part = {k: v[users] for k, v in params.items()}
            for _ in range(steps):
                with inner:
                    logits, acts = catalogue.logits(part, users)
                    r = (torch.softmax(logits, -1) * msum[users] - counts[users]) / denom[users]
                    g = catalogue.gradients(r, acts)
                _descend(part, g, lr, fast)
            chunks.append(part)
        if len(chunks) == 1:
            return {k: chunks[0][k] for k in fast}
        return {k: torch.cat([c[k] for c in chunks]) for k in fast}

    def _catalogue_direct(
        self,
        fast: Params,
        user_features: torch.Tensor,
        side: CatalogueSide,
    ) -> torch.Tensor:
        """:meth:`catalogue_scores` for the ``context`` scope, in the catalogue layout."""
        catalogue = _Catalogue(side, user_features)
        n_users = user_features.shape[0]
        params = _user_params(fast, self.model.user, n_users)
        scores = [
            catalogue.logits({k: v[users] for k, v in params.items()}, users)[0]
            for users in catalogue.chunks(n_users)
        ]
        return scores[0] if len(scores) == 1 else torch.cat(scores)

    def masked_scores(
        self,
        fast: Params,
        items: torch.Tensor,
        mask: torch.Tensor,
        user_features: torch.Tensor,
        id_keep: torch.Tensor | None = None,
        reps: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Scores of [B, n] items under batched direct-path ``fast`` params, computed
        for the real entries (``mask`` > 0) only; padding scores 0. One head call
        over the entries, each with its user's parameters gathered to it.
        ``reps``: the tower outputs of those entries, when the caller has them."""
        user = self.model.user
        head = _Head(user)
        rows = _Rows(mask)
        h, b = self.item_reps(rows.pick(items), id_keep) if reps is None else reps
        base = torch.addmm(rows.take(head.user_part(user_features), 1), h, head.w_h.T)
        out, _ = head.forward(base, h, fast["context"], rows)
        fh = user.factor(h) if user.factor is not None else None
        pred = _direct_pred(
            user.offset + b, out, fh,
            fast.get("user_bias", user.user_bias), fast.get("user_factor", user.user_factor),
            rows,
        )  # fmt: skip
        return pred.new_zeros(mask.shape).masked_scatter(rows.sel, pred)

    def batch_scores(
        self,
        fast: Params,
        items: torch.Tensor,
        h: torch.Tensor,
        b: torch.Tensor,
        user_features: torch.Tensor,
        id_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of [B, n] items under batched ``fast`` params → [B, n]; ``id_keep``: the
        [n_items] id-dropout draw, for an adapted tower, which makes its own ``h``/``b``
        (the query side kept every id while the support side dropped them)."""
        return vmap(self.scores, in_dims=(0, 0, 0, 0, 0, None), randomness="different")(
            fast, items, h, b, user_features, id_keep
        )

    def scores_over_catalogue(
        self, fast: Params, user_features: torch.Tensor, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`catalogue_scores` over :attr:`catalogue`, reusing its item side;
        ``items``: the catalogue rows to score, all by default → [B, len(items)]."""
        assert self._catalogue is not None
        if self.direct(fast):
            side = self.catalogue_side()
            side = side if items is None else side.rows(items)
            return self._catalogue_direct(fast, user_features, side)
        return self.catalogue_scores(fast, user_features, *self._catalogue, items=items)

    def catalogue_scores(
        self,
        fast: Params,
        user_features: torch.Tensor,
        h: torch.Tensor,
        b: torch.Tensor,
        items: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of every catalogue item for batched users: → [B, N], or of the rows
        ``items`` only → [B, len(items)].

        ``h``/``b`` are the cached catalogue representations [N, H], [N]; they
        are shared across users (``in_dims=None``), so no copy per user is made.
        """
        if items is None:
            items = torch.arange(h.shape[0], device=h.device)
        else:  # an adapted tower recomputes the rows from their indices, not from h
            h, b = h[items], b[items]
        if self.direct(fast):
            side = CatalogueSide(self.model.user, h, b)
            return self._catalogue_direct(fast, user_features, side)
        if user_features.shape[0] == 1:  # one user (a served request): no vmap dispatch
            one = {k: v[0] for k, v in fast.items()}
            return self.scores(one, items, h, b, user_features[0])[None]
        return vmap(self.scores, in_dims=(0, None, None, None, 0), randomness="different")(
            fast, items, h, b, user_features
        )

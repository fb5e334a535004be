"""The preference network: frozen LM item vectors → item tower → user head.

Two modules, because they play different parts in meta-learning:

* :class:`ItemTower` maps an item's frozen sentence-encoder vector (plus an
  optional item-id embedding, dropped out in training so that items lean on
  their text) to ``h_i`` and an item bias ``b_i``. It is meta-learned but, by
  default, not adapted per user, so ``h`` for the whole catalogue is computed
  once per model and reused for every user.
* :class:`UserHead` holds everything a user's few ratings may change: a
  context vector ``z`` and bias (CAVIA-style, the cheapest thing to adapt),
  and the scoring MLP over ``[h, h ⊙ z, z, user features]`` (MeLU adapts
  this part).

Item-id embeddings start at zero and an item's row is used only while
``id_known`` marks it; items the model never trained on (new items, items
added later) are therefore scored from text alone, exactly like a dropped-out
known item during training.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from metarec.config import ModelConfig


class ItemTower(nn.Module):
    # buffers (register_buffer): declared so type checkers know them as tensors
    item_vectors: torch.Tensor
    id_known: torch.Tensor
    base_bias: torch.Tensor

    def __init__(self, item_vectors: torch.Tensor, cfg: ModelConfig) -> None:
        super().__init__()
        n, d = item_vectors.shape
        self.register_buffer("item_vectors", item_vectors.float().clone())
        self.register_buffer("id_known", torch.zeros(n))
        # Damped mean rating offset of each known item (Koren's baseline), set at fit
        # time; the tower learns what text and id add on top of it.
        self.register_buffer("base_bias", torch.zeros(n))
        # A learned shift of the LM space (UniSRec's whitening) before the MLP:
        # sentence vectors share a large common component that carries no preference.
        self.center = nn.Parameter(item_vectors.float().mean(0).clone())
        self.proj = nn.Linear(d, cfg.tower_hidden)
        self.out = nn.Linear(cfg.tower_hidden, cfg.hidden)
        self.id_emb = nn.Parameter(torch.zeros(n, cfg.hidden)) if cfg.use_item_ids else None
        self.bias = nn.Linear(cfg.hidden, 1)
        nn.init.zeros_(self.bias.weight)
        nn.init.zeros_(self.bias.bias)

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    def forward(
        self, items: torch.Tensor, id_keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``items``: any-shaped index tensor → (h [..., H], b [...]).

        ``id_keep``: optional [n_items] 0/1 tensor, the id-dropout draw.
        """
        # proj(x - center) as proj(x) shifted by W @ center: the same sum, but autograd
        # then never forms the gradient with respect to the [n, d] input rows (the
        # vectors are frozen), only a matrix-vector product for the center, which
        # saves a third of the tower's largest product in training
        shift = self.proj.bias - self.proj.weight @ self.center
        h = self.out(F.gelu(F.linear(self.item_vectors[items], self.proj.weight, shift)))
        gate = (self.id_known if id_keep is None else self.id_known * id_keep)[items]
        if self.id_emb is not None:
            # embedding, not id_emb[items]: indexing's backward sums a repeated item's
            # rows in an order that varies between runs on several CPU threads (each of
            # 30 identical backward passes differed), and Reptile's support-and-query
            # batches repeat items, so the same seed gave other figures in each run
            h = h + F.embedding(items, self.id_emb) * gate.unsqueeze(-1)
        # a dropped-out item loses its rating history too, so text alone must carry it
        return h, self.bias(h).squeeze(-1) + self.base_bias[items] * gate

    @torch.no_grad()
    def extend(self, vectors: torch.Tensor) -> None:
        """Append new items (text vectors only; their id rows stay unknown)."""
        dev = self.item_vectors.device
        self.item_vectors = torch.cat([self.item_vectors, vectors.float().to(dev)])
        self.id_known = torch.cat([self.id_known, torch.zeros(len(vectors), device=dev)])
        self.base_bias = torch.cat([self.base_bias, torch.zeros(len(vectors), device=dev)])
        if self.id_emb is not None:
            grown = torch.cat(
                [self.id_emb.data, self.id_emb.new_zeros(len(vectors), self.id_emb.shape[1])]
            )
            self.id_emb = nn.Parameter(grown)


class UserHead(nn.Module):
    offset: torch.Tensor  # a buffer: the rating scale's offset

    def __init__(self, cfg: ModelConfig, user_cardinalities: Sequence[int], offset: float) -> None:
        super().__init__()
        hdim = cfg.hidden
        self.context = nn.Parameter(torch.zeros(hdim))
        self.user_bias = nn.Parameter(torch.zeros(()))
        # softplus(raw) = pseudo-count shrinking a user's closed-form bias toward 0; starts at 3
        self.bias_damping_raw = nn.Parameter(torch.tensor(2.95))
        # Taste by ridge fold-in: items are projected to `factors` dims and a user's
        # factor vector is solved in closed form from the support residuals (ALS
        # fold-in, with the projection and the ridge strength meta-learned).
        self.factors = cfg.factors
        self.user_factor = nn.Parameter(torch.zeros(cfg.factors))
        self.factor = nn.Linear(hdim, cfg.factors, bias=False) if cfg.factors else None
        if self.factor is not None:  # ~0 at first: the untrained model stays the bias model
            nn.init.normal_(self.factor.weight, std=0.01)
        self.factor_ridge_raw = nn.Parameter(torch.tensor(1.0))
        # Amortised start: a learned linear read-out of the user's pooled support items,
        # added to context and taste vector before any gradient step. Through the taste
        # vector it is a bilinear item-to-item model (FISM/EASE-like, low rank) that the
        # gradient steps alone would need many steps to reach. Zero at first, so enabling
        # it leaves the untrained model unchanged.
        self.encoder: nn.Linear | None = None
        self.factor_encoder: nn.Linear | None = None
        if cfg.support_encoder:
            self.encoder = nn.Linear(hdim, hdim)
            nn.init.zeros_(self.encoder.weight)
            nn.init.zeros_(self.encoder.bias)
            if cfg.factors:
                self.factor_encoder = nn.Linear(hdim, cfg.factors, bias=False)
                nn.init.zeros_(self.factor_encoder.weight)
        self.features = nn.ModuleList(
            nn.Embedding(c + 1, cfg.user_embedding_dim) for c in user_cardinalities
        )
        width = 3 * hdim + cfg.user_embedding_dim * len(user_cardinalities)
        layers: list[nn.Module] = []
        for _ in range(cfg.head_layers):
            layers += [nn.Linear(width, hdim), nn.ReLU()]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = hdim
        last = nn.Linear(width, 1)
        # Zero output at the start: the untrained model after the closed-form steps is
        # the bias model (offset + item bias + closed-form user bias), and training adds
        # to it (the inner gradient steps then refit the user bias, less shrunk).
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("offset", torch.tensor(float(offset)))

    def first_layer(
        self,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The MLP's first layer split by the input blocks it reads, ``[h, h ⊙ z, z, u]``:
        the weights ``(W_h, W_hz, W_z, W_u)`` and the bias (views, so gradients flow)."""
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)
        hd = self.context.shape[-1]
        w = first.weight
        return w[:, :hd], w[:, hd : 2 * hd], w[:, 2 * hd : 3 * hd], w[:, 3 * hd :], first.bias

    def bias_damping(self) -> torch.Tensor:
        return F.softplus(self.bias_damping_raw)

    def factor_ridge(self) -> torch.Tensor:
        return F.softplus(self.factor_ridge_raw) + 1e-3

    def encode_support(
        self, h: torch.Tensor, weight: torch.Tensor, count: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Shifts of ``context``/``user_factor`` from one user's support items.

        ``h`` [S, H] support representations, ``weight`` [S] (0 for padding),
        ``count``: how many items pool. The pooled vector is the weighted sum over
        sqrt(count), so it grows with evidence but slower than linearly (FISM's
        normalisation). Leading batch dimensions pass through ([B, S, H], [B, S], [B]).
        """
        if self.encoder is None:
            return {}
        pooled = (h * weight.unsqueeze(-1)).sum(-2) / count.clamp_min(1.0).sqrt().unsqueeze(-1)
        shifts = {"context": self.encoder(pooled)}
        if self.factor_encoder is not None:
            shifts["user_factor"] = self.factor_encoder(pooled)
        return shifts

    def forward(
        self, h: torch.Tensor, b: torch.Tensor, user_features: torch.Tensor
    ) -> torch.Tensor:
        """Scores for one user: ``h`` [n, H], ``b`` [n], ``user_features`` [F] → [n].

        The first layer reads ``[h, h ⊙ z, z, u]`` and is applied block by block: the
        same sum without building that [n, 3H + U] input. The ``z`` and ``u`` blocks are
        one vector per user instead of one row per item, and the ``h`` block does not
        depend on the user, so under ``vmap`` over users who share item
        representations (a catalogue) it is computed once for all of them. That about
        halves the arithmetic of catalogue-wide scoring and of the softmax
        objective's gradient steps, which score the whole catalogue.
        """
        z = self.context
        w_h, w_hz, w_z, w_u, b1 = self.first_layer()
        per_user = F.linear(z, w_z, b1)
        if len(self.features):
            u = torch.cat([emb(user_features[j]) for j, emb in enumerate(self.features)], -1)
            per_user = per_user + F.linear(u, w_u)
        # merging W_h + W_hz diag(z) into one weight per user measured no faster under
        # vmap: the shared h is copied once per user for the batched product
        a = F.linear(h, w_h) + F.linear(h * z, w_hz) + per_user
        for layer in itertools.islice(self.mlp, 1, None):
            a = layer(a)
        out = a.squeeze(-1)
        if self.factor is not None:
            out = out + self.factor(h) @ self.user_factor
        return self.offset + b + self.user_bias + out


class PreferenceNet(nn.Module):
    def __init__(
        self,
        item_vectors: torch.Tensor,
        cfg: ModelConfig,
        user_cardinalities: Sequence[int] = (),
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.tower = ItemTower(item_vectors, cfg)
        self.user = UserHead(cfg, list(user_cardinalities) if cfg.use_user_features else [], offset)
        self.cfg = cfg

    def adapted_names(self, scope: str) -> list[str]:
        """Names (within ``self.user`` or prefixed ``tower.``) adapted per user."""
        user = ["context", "user_bias"] + (["user_factor"] if self.cfg.factors else [])
        if scope in ("head", "all"):
            user += [n for n, _ in self.user.named_parameters() if n.startswith("mlp.")]
        if scope == "all":
            user += [n for n, _ in self.user.named_parameters() if n.startswith("features.")]
            user += ["tower." + n for n, _ in self.tower.named_parameters() if n != "id_emb"]
        return user

"""The item tower's gradients are the same in every run, on any number of threads."""

from __future__ import annotations

import torch

from metarec.config import ModelConfig
from metarec.models.preference import ItemTower


def test_the_item_ids_gradient_is_the_same_in_every_backward_pass_on_two_threads() -> None:
    # id_emb[items]'s backward summed a repeated item's rows in an order that varied
    # with the threads' timing: 30 identical passes gave 30 different gradients, and
    # Reptile (whose support-and-query batches repeat items) other figures in each run
    cfg = ModelConfig()
    torch.manual_seed(0)
    tower = ItemTower(torch.randn(1700, 16), cfg)
    tower.id_known.fill_(1.0)
    assert tower.id_emb is not None
    items = torch.randint(0, 1700, (64, 120))  # many repeats, as a meta-batch has
    upstream = torch.randn(64, 120, cfg.hidden)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = set()
        for _ in range(20):
            h, _ = tower(items)
            (grad,) = torch.autograd.grad((h * upstream).sum(), tower.id_emb)
            grads.add(grad.numpy().tobytes())
    finally:
        torch.set_num_threads(threads)
    assert len(grads) == 1
    assert grad.abs().sum() > 0

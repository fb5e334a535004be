"""The catalogue: items in index order with their frozen LM vectors."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from metarec.encoders import Encoder


@dataclass
class Catalogue:
    """Items with their frozen LM vectors, in catalogue order.

    Row ``i`` of ``items`` and of ``vectors`` is catalogue index ``i``: every
    model, task and metric refers to items by that index.
    """

    items: pd.DataFrame
    vectors: np.ndarray  # float32 [n_items, dim]
    encoder: Encoder

    @cached_property
    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items["item_id"].astype(str).tolist())}

    def __len__(self) -> int:
        return len(self.items)

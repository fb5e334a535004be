"""Items added through the API: their encoder text and how they enter a model.

An added item's encoder text is built exactly like a catalogue item's
(``"Title (year). Genres: a, b."``, or the run's ``--text-template``) with the
client's free ``text`` appended,
so the encoder sees new items in the form it saw in training and the display
title ("Title (year)") is the text's head as for every other item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from metarec.data.spec import recorded_item_text
from metarec.data.text import ItemTextConfig, build_item_text, dated_catalogue, title_and_year
from metarec.encoders import cached_encode, default_cache
from metarec.ensemble_run import EnsembleRecommender, ServedModel


def item_frame(
    rows: Sequence[dict[str, Any]],
    catalogue: pd.Series | None = None,
    layout: ItemTextConfig | None = None,
) -> pd.DataFrame:
    """item_id, title, text (the encoder text) for rows as the API and store hold them;
    ``catalogue``: the encoder texts of the catalogue they join, whose items say whether
    a title's "(1999)" is a year (:func:`dated_catalogue`); ``layout``: how the
    catalogue's text was laid out (:func:`~metarec.data.spec.recorded_item_text`; its
    extra columns, which the API does not take, are left empty)."""
    frame = pd.DataFrame(
        {
            "item_id": [str(r["item_id"]) for r in rows],
            "title": [str(r["title"]) for r in rows],
            "year": [np.nan if r.get("year") is None else float(r["year"]) for r in rows],
            "genres": [_genres(r.get("genres")) for r in rows],
        }
    )
    if len(frame):
        # "Matrix Redux (1999)" beside year 1999 is read once, as a file's row and
        # add_items read it: its text was "Matrix Redux (1999) (1999)", and an updated
        # item kept the year in its title where an added one did not. A year that
        # differs is warned about by add_items (an update keeps it as it is); not here,
        # where catching the warning would silence every other thread of the server
        dated = dated_catalogue(catalogue) if catalogue is not None else None
        frame["title"], frame["year"] = title_and_year(
            frame["title"], frame["year"], None, dated=dated
        )
    layout = layout or ItemTextConfig()
    parts = frame.assign(**{c: "" for c in layout.extra if c not in frame.columns})
    base = build_item_text(parts, layout) if len(frame) else pd.Series([], dtype=object)
    extra = [str(r.get("text") or "").strip() for r in rows]
    frame["text"] = [f"{b} {e}".strip() for b, e in zip(base, extra, strict=True)]
    return frame[["item_id", "title", "text", "year", "genres"]]


def layout_of(rec: ServedModel) -> ItemTextConfig:
    """How ``rec``'s catalogue text is laid out, as its run recorded it."""
    return recorded_item_text(rec.metadata.get("data_spec"))


def unusable(frame: pd.DataFrame) -> dict[str, str]:
    """The rows of an :func:`item_frame` a model cannot take, by item id: why each is
    refused. Checked before anything is stored, so the store only holds items that
    every later load can apply. (Ids are unique already: ``PUT /v1/items`` refuses a
    repeated one, and the store keys items by id.)"""
    return {
        item_id: "no text to encode (title, genres and text are empty)"
        for item_id, text in zip(frame["item_id"], frame["text"], strict=True)
        if not str(text).strip()
    }


def _genres(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "|".join(str(v) for v in value)
    return str(value)


def encode(rec: ServedModel, frame: pd.DataFrame) -> np.ndarray:
    """LM vectors of the items' text with the run's own encoder."""
    if len(frame) == 0:
        return np.zeros((0, int(rec.model.tower.item_vectors.shape[1])), dtype=np.float32)
    return cached_encode(rec.encoder(), frame["text"].tolist(), default_cache(), progress=False)


def unchanged(rec: ServedModel, frame: pd.DataFrame) -> np.ndarray:
    """Which rows of an :func:`item_frame` the model holds already, title and encoder
    text alike: sent again (a client's retry after a timeout), such an item is left as
    it is. Re-encoding it anyway bumped the served revision, so every user's cached
    adaptation was dropped and, under several workers, every other process reloaded."""
    index, items = rec.item_index, rec.items
    same = np.zeros(len(frame), dtype=bool)
    for n, (item_id, title, text) in enumerate(
        zip(frame["item_id"], frame["title"], frame["text"], strict=True)
    ):
        i = index.get(item_id)
        same[n] = i is not None and items.at[i, "title"] == title and items.at[i, "text"] == text
    return same


def apply_items(rec: ServedModel, frame: pd.DataFrame, vectors: np.ndarray) -> tuple[int, int]:
    """Add new ids and re-encode existing ones in place; → (added, updated).

    The caller holds the model's write lock: the catalogue and the cached item
    representations change together. An ensemble refuses (:class:`UnsupportedError`)
    before any member changes when one of its members cannot take items.
    """
    if isinstance(rec, EnsembleRecommender):
        rec.check_items()
    # a lookup per new id: Series.isin(dict) ran a Python loop over the whole catalogue's
    # keys (pandas' Arrow strings), 0.6 s at 150,000 items, under the write lock
    index = rec.item_index
    known = np.fromiter((i in index for i in frame["item_id"]), dtype=bool, count=len(frame))
    idx = [rec.item_index[i] for i in frame.loc[known, "item_id"]]  # appending keeps them
    if (~known).any():
        # each indexes its own rows alone (the append its new ones, the update its
        # changed ones) on top of the other's, so either order leaves every title as it
        # now is in the index and the display list
        rec.add_items(frame.loc[~known].reset_index(drop=True), vectors=vectors[~known])
    if known.any():
        _update_items(rec, idx, frame.loc[known], vectors[known])
    return int((~known).sum()), int(known.sum())


def _update_items(
    rec: ServedModel, idx: list[int], rows: pd.DataFrame, vectors: np.ndarray
) -> None:
    """New text and LM vectors for catalogue items ``idx`` (every member of an ensemble:
    its catalogues are aligned, so the indices hold for each)."""
    if isinstance(rec, EnsembleRecommender):
        for member in rec.metarec_members():
            _update_items(member, idx, rows, vectors)
        rec.update_peer_vectors(idx, vectors)
        return
    with torch.no_grad():
        tower = rec.model.tower
        tower.item_vectors[torch.as_tensor(idx)] = torch.as_tensor(
            vectors, dtype=tower.item_vectors.dtype, device=tower.item_vectors.device
        )
    # Recommender has no public "update item": its title keys and cached (h, b) anew
    rec._retitle(idx, rows["title"].tolist(), rows["text"].tolist())

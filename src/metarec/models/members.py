"""What an ensemble's metarec members must share: one catalogue, item for item, and
one encoder (an item added later is encoded once, by the first member's encoder, for
every member). Checked where an ensemble is fitted, saved and loaded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from metarec.models.base import ScoringModel
from metarec.models.meta_model import MetaModel


def same_encoder(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two runs' saved encoders are one model (an id saved before 2026-12-02
    names a model without its weights, and matches any weights of that name)."""
    from metarec.encoders.base import same_model

    x, y = str(a.get("id")), str(b.get("id"))
    return same_model(x, y) or same_model(y, x) or _one_folder_fingerprinted_twice(a, b)


def _one_folder_fingerprinted_twice(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether ``a`` and ``b`` name one model folder, one by the fingerprint runs saved
    before 2026-12-06 took (over its hidden files too) and one by today's: two runs of
    one model were refused as two encoders. Read only where the ids differ."""
    from metarec.encoders.base import same_model
    from metarec.encoders.sentence import SentenceEncoder
    from metarec.errors import MetarecError

    keys = ("type", "model", "max_seq_length")
    if a.get("type") != "sentence" or any(a.get(k) != b.get(k) for k in keys):
        return False
    try:
        encoder = SentenceEncoder.from_config(a)
        former = encoder.former_ids()  # none but for a folder holding such files
        known = (encoder.id, *former)
    except (MetarecError, OSError):
        return False
    if not former:
        return False
    return all(any(same_model(str(c.get("id")), k) for k in known) for c in (a, b))


def unlike_member(
    members: Mapping[str, ScoringModel], catalogue: Sequence[str] | None = None
) -> tuple[int, str] | None:
    """The position of the first metarec member that holds another catalogue (item for
    item) than the first one's, or than ``catalogue`` (the data's item ids) where given,
    or another encoder, and what differs; None when they all agree. Scores are blended
    by position: a member of another catalogue of the same size had its score of index
    i, another item's, blended without a word."""
    runs = [(i, name, m) for i, (name, m) in enumerate(members.items()) if isinstance(m, MetaModel)]
    if not runs:
        return None
    _, first_name, first = runs[0]
    ids = first._rec().items["item_id"].astype(str).tolist()
    if catalogue is not None:
        differs = _first_difference(ids, [str(i) for i in catalogue])
        if differs is not None:
            return runs[0][0], (
                f"member {first_name!r} holds another catalogue than the data's ({differs}); "
                "blend runs trained on this data"
            )
    for i, name, model in runs[1:]:
        rec = model._rec()
        differs = _first_difference(rec.items["item_id"].astype(str).tolist(), ids)
        if differs is not None:
            return i, (
                f"member {name!r} holds another catalogue than {first_name!r} ({differs}); "
                "the ensemble blends one catalogue"
            )
        theirs, mine = rec.encoder_config, first._rec().encoder_config
        if not same_encoder(theirs, mine):
            return i, (
                f"member {name!r} encodes items with another encoder than {first_name!r} "
                f"({theirs.get('id')!r}, {mine.get('id')!r}); an ensemble's runs share one"
            )
    return None


def _first_difference(theirs: list[str], ours: list[str]) -> str | None:
    if len(theirs) != len(ours):
        return f"{len(theirs):,} items against {len(ours):,}"
    at = next((j for j, (a, b) in enumerate(zip(theirs, ours, strict=True)) if a != b), None)
    return None if at is None else f"item {at}: {theirs[at]!r} against {ours[at]!r}"

"""Which users a run folder's model learned from, so that an A/B test never measures it
on them (that measures memory, not cold start).

A run trained on a P1 split records them in its ``split.json`` (training and
validation users). A run trained on every user (``metarec train --holdout none``,
:func:`metarec.train` with a ``run_dir``), or by ``metarec retrain`` (whose
held-out users are in ``heldout.json``), has no P1 split: it records them in
``trained-users.json``, written with the model. A folder with neither was saved
by other code (``Recommender.save``) or before the file existed; its users are
unknown, and a caller that must not test on them refuses rather than guess "none".
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from metarec.errors import ModelError
from metarec.io import load_json, save_json

TRAINED_USERS = "trained-users.json"
SPLIT = "split.json"


def clear_for_new_model(folder: str | Path, *, has_split: bool) -> None:
    """Before a newly trained model is written into ``folder`` (an earlier run's, say),
    remove what would describe the old one: ``recommender.json`` first (it makes the
    folder a loadable run, so an interrupted write leaves no run rather than the old
    model beside the new files), ``metrics.json`` (its figures), ``config.json`` (the
    old model's settings, beside a model trained with others), and the record of
    training users the new run does not write (``split.json``, whose new users
    `evaluate` would judge a model trained on every user on; or ``trained-users.json``),
    and a retrain's records (``heldout.json``: the next retrain judged the new model on
    users it had trained on; ``retrain.json``: ``report`` told of a retrain that made
    another model). ``has_split``: the new run records a P1 split."""
    stale = ("recommender.json", "metrics.json", "config.json", "heldout.json", "retrain.json")
    for name in (*stale, TRAINED_USERS if has_split else SPLIT):
        (Path(folder) / name).unlink(missing_ok=True)


def save_trained_users(folder: str | Path, users: Iterable[object]) -> None:
    """Record ``users`` (ids, as text, sorted) as the users ``folder``'s model saw."""
    save_json(Path(folder) / TRAINED_USERS, {"users": sorted({str(u) for u in users})})


def recorded_training_users(folder: str | Path) -> tuple[set[str], str] | None:
    """The users ``folder``'s model trained and early-stopped on, and the file that says
    so; None where nothing records them."""
    folder = Path(folder)
    split = folder / SPLIT
    if split.is_file():
        raw = load_json(split)
        if not isinstance(raw, dict):
            raise ModelError(f"{split}: expected a JSON object (a P1 split)")
        ids = [*_ids(raw, "train_users", split), *_ids(raw, "validation_users", split)]
        return {str(u) for u in ids}, str(split)
    listed = folder / TRAINED_USERS
    if listed.is_file():
        raw = load_json(listed)
        if not isinstance(raw, dict):
            raise ModelError(f'{listed}: expected a JSON object {{"users": [...]}}')
        return {str(u) for u in _ids(raw, "users", listed)}, str(listed)
    return None


def _ids(raw: dict[str, object], key: str, path: Path) -> list[object]:
    # a missing key is a damaged file, not "nobody": read as none, it let a test run on
    # every user the run learned from
    if key not in raw:
        raise ModelError(f"{path}: no {key} (damaged or edited?)")
    ids = raw[key]
    if not isinstance(ids, list) or not all(isinstance(u, str | int) for u in ids):
        raise ModelError(f"{path}: {key}: expected a list of user ids (damaged or edited?)")
    return ids

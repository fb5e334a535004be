"""What a run folder records of the users it trained on (metarec.trained_users)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarec.errors import ModelError
from metarec.trained_users import recorded_training_users, save_trained_users


def test_each_record_and_none(tmp_path: Path) -> None:
    assert recorded_training_users(tmp_path) is None  # nothing says: unknown, not "nobody"
    save_trained_users(tmp_path, [3, "1", "3"])
    assert json.loads((tmp_path / "trained-users.json").read_text()) == {"users": ["1", "3"]}
    assert recorded_training_users(tmp_path) == ({"1", "3"}, str(tmp_path / "trained-users.json"))
    # a P1 split, where there is one, is what the run trained (and early-stopped) on
    split = {"train_users": ["7"], "validation_users": [8], "new_users": ["9"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    assert recorded_training_users(tmp_path) == ({"7", "8"}, str(tmp_path / "split.json"))


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"seed": 0}', "no train_users"),  # read as nobody, it let any users through
        ('{"train_users": ["1"]}', "no validation_users"),
        ('{"train_users": "1", "validation_users": []}', "train_users: expected a list"),
        ('{"train_users": [[1]], "validation_users": []}', "train_users: expected a list"),
        ("[]", "expected a JSON object"),
    ],
)
def test_a_damaged_split_is_an_error_not_nobody(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "split.json").write_text(content)
    with pytest.raises(ModelError, match=needle):
        recorded_training_users(tmp_path)
    (tmp_path / "split.json").unlink()
    (tmp_path / "trained-users.json").write_text('{"people": []}')
    with pytest.raises(ModelError, match="no users"):
        recorded_training_users(tmp_path)

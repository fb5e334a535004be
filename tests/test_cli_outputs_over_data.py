"""No command writes over the data it reads: a report named as the ratings file, or a
run folder that holds the data files (a run writes ``items.json``, the name of a JSON
Lines items file), was a silent loss of the user's data, exit 0."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from metarec.cli import main
from metarec.data.spec import check_not_overwriting, spec_files
from metarec.errors import ConfigError


def _own_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(exist_ok=True)
    ratings, items = folder / "ratings.csv", folder / "items.json"
    ratings.write_text("user_id,item_id,rating\n1,a,4\n1,b,3\n2,a,5\n2,c,2\n")
    items.write_text('{"item_id": "a", "title": "A"}\n{"item_id": "b", "title": "B"}\n'
                     '{"item_id": "c", "title": "C"}\n')  # fmt: skip
    return ratings, items


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("command", ["train", "benchmark"])
def test_a_run_or_report_folder_that_holds_the_data_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ratings, items = _own_files(tmp_path / "shop")
    before = _digests(tmp_path / "shop")
    extra = ["--protocol", "p2"] if command == "benchmark" else ["--set", "encoder=tfidf"]
    code = main([command, "--interactions", str(ratings), "--items", str(items),
                 "--out", str(tmp_path / "shop"), *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--out" in err and "holds the data file" in err and "ratings.csv" in err
    assert "Traceback" not in err
    assert _digests(tmp_path / "shop") == before  # nothing written, nothing replaced


def test_spec_files_of_each_kind_of_spec(shared_data: Path, tmp_path: Path) -> None:
    ratings, items = _own_files(tmp_path)
    assert spec_files({"interactions": str(ratings), "items": str(items)}) == [
        ratings.resolve(),
        items.resolve(),
    ]
    atomic = sorted((shared_data / "ml-100k").resolve().glob("ml-100k.*"))
    assert len(atomic) == 3
    assert spec_files({"dataset": "ml-100k", "data": str(shared_data)}) == atomic
    assert spec_files({"data": str(shared_data / "ml-100k" / "ml-100k")}) == atomic
    assert spec_files({"data": str(shared_data / "ml-100k")}) == atomic
    # the .inter file itself, which load_path takes too
    assert spec_files({"data": str(shared_data / "ml-100k" / "ml-100k.inter")}) == atomic
    # nothing findable (and nothing downloaded to find out): the loading says what is wrong
    assert spec_files({"data": str(tmp_path / "none")}) == []
    assert spec_files({"dataset": "ml-100k", "data": str(tmp_path / "none")}) == []


def test_only_what_would_be_replaced_is_refused(tmp_path: Path) -> None:
    ratings, items = _own_files(tmp_path / "shop")
    spec = {"interactions": str(ratings), "items": str(items)}
    with pytest.raises(ConfigError, match=r"--out .*: is the data file .*items\.json"):
        check_not_overwriting(spec, "--out", tmp_path / "shop" / ".." / "shop" / "items.json",
                              folder=False)  # fmt: skip
    # a new report beside the data, and a run folder that only holds the data's folder
    # deeper down, replace nothing
    check_not_overwriting(spec, "--out", tmp_path / "shop" / "report.json", folder=False)
    check_not_overwriting(spec, "--out", tmp_path, folder=True)

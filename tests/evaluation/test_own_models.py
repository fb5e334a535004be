"""A model of one's own in ``metarec benchmark``: fitted and judged beside the peers on
the same split, from Python (``models=``) and at the shell (``--model``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from metarec.errors import ConfigError, ModelError
from metarec.evaluation.benchmark import run_benchmark
from metarec.evaluation.own_models import build, check_names, fingerprint, load_factory
from metarec.peers.popularity import Popularity

# the quickest run that still fits a metarec model, an ensemble and a peer
QUICK: dict[str, Any] = dict(
    peers=["popularity"],
    algorithms=["episodic"],
    shots=[3],
    overrides=["encoder=tfidf"],
    plots=False,
    progress=False,
)

# a module of one's own, as a researcher would write it beside the command
MODULE = '''
import numpy as np

from metarec.models.base import ScoringModel
from metarec.peers.popularity import Popularity

SEEDS = []


class Shuffled(ScoringModel):
    """Popularity with seeded noise: its figures depend on the seed it is given."""

    name = "shuffled"

    def __init__(self, seed=0):
        self.seed = seed
        SEEDS.append(seed)

    def fit(self, data):
        self.pop = Popularity().fit(data)
        self.noise = np.random.default_rng(self.seed).random(self.pop.n_items)
        return self

    @property
    def n_items(self):
        return self.pop.n_items

    def score_catalogue(self, tasks, users=None):
        scores = self.pop.score_catalogue(tasks, users)
        return scores + {scale} * scores.std() * self.noise


def popularity():
    return Popularity()


NOT_A_MODEL = 3


def broken():
    return "a string"
'''


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))


def test_a_copy_of_a_peer_given_as_ones_own_model_gets_the_peers_figures(
    shared_data: Path, tmp_path: Path
) -> None:
    record = run_benchmark(
        "p2", "ml-100k", root=str(shared_data), out=tmp_path, models={"mine": Popularity()}, **QUICK
    )
    at3 = record["summary"]["3"]
    assert list(at3)[:2] == ["popularity", "mine"]  # beside the peers, before metarec's rows
    assert at3["mine"] == at3["popularity"]
    # judged like a peer: metarec's best model is the reference, and "mine" is compared
    assert record["reference"]["3"].startswith("metarec-")
    assert "mine" in record["significance"]["3"]["ndcg@10"]
    assert "mine" in record["ci95"]["3"]
    # never blended: the ensemble takes metarec's models and the anchor only
    assert "mine" not in json.dumps(record["ensemble_weights"])
    assert record["command"].endswith("# plus models given in Python: mine")
    assert "| mine |" in (tmp_path / "p2-ml-100k.md").read_text()
    # the record says which code and settings gave that row
    (kept,) = record["own_models"]
    assert kept["name"] == "mine" and kept["code"] == ["metarec.peers.popularity:Popularity"]
    assert set(kept) == {"name", "code", "source", "settings", "folder"}


def test_the_shell_imports_a_model_from_the_current_folder(
    shared_data: Path, tmp_path: Path
) -> None:
    (tmp_path / "mymodels.py").write_text(MODULE.replace("{scale}", "0.5"))
    env = {**os.environ, "METAREC_CACHE": str(tmp_path / "cache")}
    args = [
        sys.executable, "-m", "metarec.cli", "benchmark", "--protocol", "p2",
        "--dataset", "ml-100k", "--data", str(shared_data), "--peers", "popularity",
        "--algorithms", "episodic", "--shots", "3", "--set", "encoder=tfidf", "--no-plots",
        "--quiet", "--seed", "7", "--out", "out",
        "--model", "shuffled=mymodels:Shuffled", "--model", "pop=mymodels:popularity",
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # a seed but 0 is in the report's name
    record = json.loads((tmp_path / "out" / "p2-ml-100k-seed7.json").read_text())
    at3 = record["summary"]["3"]
    assert at3["pop"] == at3["popularity"]
    # seeded noise moved the list: a different figure from popularity's
    assert at3["shuffled"]["ndcg@10"] != at3["popularity"]["ndcg@10"]
    assert (
        "--model shuffled=mymodels:Shuffled --model pop=mymodels:popularity" in (record["command"])
    )


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("mymodels:Shuffled", "expected NAME=MODULE:FACTORY"),
        ("x=mymodels", "expected NAME=MODULE:FACTORY"),
        ("x=no_such_module_here:f", "no module 'no_such_module_here'"),
        ("x=mymodels:Missing", "mymodels has no 'Missing'"),
        ("x=mymodels:Shufled", "mymodels has no 'Shufled' (did you mean 'Shuffled'?)"),
        (
            "x=mymodels.py:Shuffled",
            "'mymodels.py' is a path (a file), not a module name; "
            "give the module's name (mymodels:",
        ),
        # "is a file" was said of a path to nothing
        ("x=nothere/abc:Y", "'nothere/abc' is a path (no such file), not a module name"),
        ("x=mymodels:NOT_A_MODEL", "mymodels:NOT_A_MODEL is of type int, not a ScoringModel"),
        ("x=mymodels:broken", "'x' gave an object of type str; expected a ScoringModel"),
        ("metarec-x=mymodels:popularity", "name 'metarec-x' is metarec's own"),
        ("popularity=mymodels:popularity", "name 'popularity' is a peer's"),
        # not a peer of this run (only popularity is): still the anchor's name
        ("bias=mymodels:popularity", "name 'bias' is a peer's"),
        ("a b=mymodels:popularity", "name 'a b' must start with a letter"),
    ],
)
def test_a_bad_model_flag_is_one_line_exit_2_before_the_data_loads(
    spec: str,
    needle: str,
    tmp_path: Path,
    shared_data: Path,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in this process, as the shell's import from the current folder has its own test
    # above: the folder it adds to sys.path, and the module, go when the test does
    (tmp_path / "mymodels.py").write_text(MODULE.replace("{scale}", "1e-3"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    try:
        res = cli(
            "benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--data",
            str(shared_data), "--peers", "popularity", "--out", "out", "--model", spec,
        )  # fmt: skip
    finally:
        sys.modules.pop("mymodels", None)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_each_fold_fits_its_own_model_built_with_the_runs_seed(tmp_path: Path) -> None:
    given = Popularity()
    first, second = build("mine", given, 0), build("mine", given, 0)
    assert first is not given and second is not first  # a fold never refits another's
    (tmp_path / "seeded.py").write_text(MODULE.replace("{scale}", "1e-3"))
    sys.path.insert(0, str(tmp_path))
    try:
        _, factory = load_factory("s=seeded:Shuffled")
        assert build("s", factory, 11).seed == 11  # type: ignore[attr-defined]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("seeded", None)


def test_kept_progress_is_keyed_on_the_text_of_the_models_code(tmp_path: Path) -> None:
    """A resumed run reads back only figures of the same code: an edited model file is
    another run (its fingerprint is in the run store's key)."""
    path = tmp_path / "keyed.py"
    path.write_text(MODULE.replace("{scale}", "1e-3"))
    sys.path.insert(0, str(tmp_path))
    try:
        _, factory = load_factory("s=keyed:Shuffled")
        before = fingerprint("s", factory, 0)
        assert before["code"] == ["keyed:Shuffled"]  # the class is its own factory
        assert fingerprint("s", factory, 0) == before
        path.write_text(MODULE.replace("{scale}", "1.0"))
        assert fingerprint("s", factory, 0)["source"] != before["source"]
        assert fingerprint("p", Popularity(), 0)["code"] == ["metarec.peers.popularity:Popularity"]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("keyed", None)


def test_python_models_are_checked_before_anything_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models: expected a mapping"):
        run_benchmark("p2", "no-such-data", out=tmp_path, models=[Popularity()], **QUICK)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'x' is of type int; expected an unfitted ScoringModel"):
        run_benchmark("p2", "no-such-data", out=tmp_path, models={"x": 3}, **QUICK)  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="building 'x' failed: ZeroDivisionError"):
        run_benchmark("p2", "no-such-data", out=tmp_path, models={"x": lambda: 1 / 0}, **QUICK)
    with pytest.raises(ConfigError, match="is a peer's"):
        check_names(["knn"], ["popularity", "knn"])
    assert not any(tmp_path.iterdir())


def test_kept_progress_is_keyed_on_the_models_settings_too() -> None:
    """One class, two settings: ``partial`` factories and instances with other
    hyperparameters share their code, not their figures."""
    from functools import partial

    from metarec.peers import make_peer

    small, large = partial(make_peer, "als", factors=8), partial(make_peer, "als", factors=64)
    assert fingerprint("a", small, 0)["code"] == fingerprint("a", large, 0)["code"]
    assert fingerprint("a", small, 0)["settings"] != fingerprint("a", large, 0)["settings"]
    assert fingerprint("a", small, 0) == fingerprint("a", partial(make_peer, "als", factors=8), 0)
    # the seed a factory is built with is a setting: another seed, another run
    assert fingerprint("a", small, 0)["settings"] != fingerprint("a", small, 1)["settings"]


def _one_output_in_every_process(expression: str) -> bool:
    """Whether ``expression`` (of pd and _settings) prints the same under four string
    hash seeds, each in a process of its own (a set's order follows the seed)."""
    code = (
        "import pandas as pd; from metarec.evaluation.own_models import _settings; "
        f"print({expression})"
    )
    seen = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": str(n)}, check=True).stdout
        for n in range(4)
    }  # fmt: skip
    return len(seen) == 1


def test_settings_of_sets_and_frames_are_digested_by_what_they_hold() -> None:
    # a set's repr changes order from process to process (string hashing is salted):
    # such a model never resumed; a frame's attributes end in reprs that frames of
    # other values share: a factory reading an edited prior.csv resumed the old figures
    from metarec.evaluation.own_models import _settings

    # both in one process a seed: each process imports metarec (and torch), 2 s
    assert _one_output_in_every_process(
        "_settings({'Drama', 'War', 'Comedy', 'Sci-Fi'}), "
        "_settings(pd.DataFrame({'s': [{'alpha', 'beta', 'gamma', 'delta'}, {'x'}]},"
        " index=[frozenset({'alpha', 'beta', 'gamma'}), frozenset({'y'})]))"
    )
    values = pd.Series(np.arange(1000.0))
    edited = values.copy()
    edited[500] = -1.0
    assert _settings(values) == _settings(values.copy()) != _settings(edited)
    frame = pd.DataFrame({"w": values})
    assert _settings(frame) != _settings(pd.DataFrame({"w": edited}))
    assert _settings(frame) != _settings(frame.rename(columns={"w": "v"}))
    # cells pandas cannot hash: the fingerprint failed, and with it the benchmark
    tags = pd.DataFrame({"tags": [["a", "b"], ["c"]]})
    assert _settings(tags) == _settings(tags.copy()) != _settings(tags.assign(tags=[["a"], ["c"]]))
    # each cell exactly (JSON kept ten digits); a set in a cell: checked above
    close = pd.DataFrame({"w": [[0.123456789012], [1.0]]})
    assert _settings(close) != _settings(pd.DataFrame({"w": [[0.123456789019], [1.0]]}))
    # two columns of one name (a frame then, not a column): the fingerprint raised
    twice = pd.DataFrame([[["a"], ["b"]]], columns=["tags", "tags"])
    other = pd.DataFrame([[["a"], ["c"]]], columns=["tags", "tags"])
    assert _settings(twice) != _settings(other)


def test_a_model_without_a_source_file_is_warned_about() -> None:
    namespace: dict[str, Any] = {}
    exec(  # as a notebook cell defines it: no file to digest
        "from metarec.peers import Popularity\nclass Cell(Popularity):\n    name = 'cell'\n",
        namespace,
    )
    with pytest.warns(UserWarning, match=r"'cell': no source file for .*Cell"):
        fingerprint("cell", namespace["Cell"](), 0)
    # `python -c` (and a prompt): __main__ without a file, where inspect raises OSError
    # on Python 3.10+, which crashed the run the warning was promised for
    code = (
        "import warnings\nfrom metarec.peers import Popularity\n"
        "from metarec.evaluation.own_models import fingerprint\n"
        "class Cell(Popularity):\n    name = 'cell'\n"
        "with warnings.catch_warnings(record=True) as said:\n"
        "    warnings.simplefilter('always')\n"
        "    fingerprint('cell', Cell(), 0)\n"
        "print([str(w.message)[:60] for w in said])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'cell': no source file for" in proc.stdout


def test_an_edit_to_a_base_class_in_another_file_is_seen(tmp_path: Path) -> None:
    """``class Tuned(Shuffled)`` in one file, ``Shuffled`` in another: an edit to the
    base class is an edit to the model (a resumed run read the old figures)."""
    (tmp_path / "basefile.py").write_text(MODULE.replace("{scale}", "1e-3"))
    (tmp_path / "childfile.py").write_text(
        "from basefile import Shuffled\n\nclass Tuned(Shuffled):\n    name = 'tuned'\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        _, factory = load_factory("t=childfile:Tuned")
        before = fingerprint("t", factory, 0)
        assert before["code"] == ["childfile:Tuned", "basefile:Shuffled"]
        (tmp_path / "basefile.py").write_text(MODULE.replace("{scale}", "1.0"))
        assert fingerprint("t", factory, 0)["source"] != before["source"]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("basefile", None)
        sys.modules.pop("childfile", None)


def test_an_edit_to_a_helper_module_the_model_imports_is_seen(tmp_path: Path) -> None:
    """The model's file imports a function of another file of one's own (and that file
    a module of its own in turn): an edit to either is an edit to the model; an edit to
    an unrelated file is not."""
    (tmp_path / "deep.py").write_text("SCALE = 1e-3\n")
    (tmp_path / "helpers.py").write_text("import deep\n\ndef scale():\n    return deep.SCALE\n")
    (tmp_path / "unrelated.py").write_text("X = 1\n")
    (tmp_path / "usesfile.py").write_text(
        "from basefile2 import Shuffled\nfrom helpers import scale\n\n"
        "class Helped(Shuffled):\n    name = 'helped'\n"
    )
    (tmp_path / "basefile2.py").write_text(MODULE.replace("{scale}", "1e-3"))
    sys.path.insert(0, str(tmp_path))
    try:
        _, factory = load_factory("h=usesfile:Helped")
        import unrelated  # noqa: F401  (imported, but not by the model's code)

        before = fingerprint("h", factory, 0)
        (tmp_path / "unrelated.py").write_text("X = 2\n")
        assert fingerprint("h", factory, 0) == before
        (tmp_path / "deep.py").write_text("SCALE = 1.0\n")
        after_deep = fingerprint("h", factory, 0)
        assert after_deep["source"] != before["source"]
        (tmp_path / "helpers.py").write_text("import deep\n\ndef scale():\n    return 2.0\n")
        assert fingerprint("h", factory, 0)["source"] != after_deep["source"]
        assert before["code"] == ["usesfile:Helped", "basefile2:Shuffled"]
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("deep", "helpers", "unrelated", "usesfile", "basefile2"):
            sys.modules.pop(name, None)


class Transposed(Popularity):
    """Scores laid out item x task: the commonest shape mistake."""

    def score_catalogue(self, tasks: Any, users: Any = None) -> np.ndarray:
        return super().score_catalogue(tasks, users).T.copy()


def test_a_model_that_fails_in_a_benchmark_is_named_with_where_to_look(
    shared_data: Path, tmp_path: Path
) -> None:
    # its traceback ran through metarec's evaluation, naming neither the model nor
    # the mistake (an IndexError deep in top_k)
    with pytest.raises(ModelError) as caught:
        run_benchmark(
            "p2", "ml-100k", root=str(shared_data), out=tmp_path, models={"mine": Transposed()},
            **QUICK,
        )  # fmt: skip
    message = str(caught.value)
    assert message.startswith("models: 'mine' failed: ModelError: popularity: score_catalogue")
    assert "returned shape (1682, " in message and "expected (" in message
    assert "metarec check-model" in message


class WritesTheAnswers(Popularity):
    """Writes its own predictions into the query ratings it is judged against."""

    def score_catalogue(self, tasks: Any, users: Any = None) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        for row, task in enumerate(tasks):
            task.query_ratings[:] = out[row, task.query_items]
        return out


class DropsUsersInPlace(Popularity):
    """Keeps only active users, in the data it was given."""

    def fit(self, data: Any) -> DropsUsersInPlace:
        rows = data.interactions
        few = rows.groupby("user_id")["item_id"].transform("size") < 50
        rows.drop(index=rows.index[few.to_numpy()], inplace=True)
        return super().fit(data)


def test_a_model_cannot_change_what_the_others_are_judged_on(
    shared_data: Path, tmp_path: Path
) -> None:
    # one that wrote its predictions into the query ratings scored MAE 0 and a
    # significant win over metarec; one that dropped users from fit's data changed
    # the rows metarec's models were fitted on, with no word
    with pytest.raises(ModelError) as caught:
        run_benchmark(
            "p2", "ml-100k", root=str(shared_data), out=tmp_path / "a",
            models={"qw": WritesTheAnswers()}, **QUICK,
        )  # fmt: skip
    message = str(caught.value)
    assert message.startswith("models: 'qw' failed: ValueError: ")
    assert "read-only" in message and "it wrote into a task's arrays" in message
    plain = run_benchmark(
        "p2", "ml-100k", root=str(shared_data), out=tmp_path / "b", models={"p": Popularity()},
        **QUICK,
    )  # fmt: skip
    dropped = run_benchmark(
        "p2", "ml-100k", root=str(shared_data), out=tmp_path / "c",
        models={"d": DropsUsersInPlace()}, **QUICK,
    )  # fmt: skip
    for model in ("popularity", "metarec-episodic"):
        assert dropped["summary"]["3"][model] == plain["summary"]["3"][model]
    assert dropped["summary"]["3"]["d"] != plain["summary"]["3"]["p"]  # its own copy, dropped


class TooFewItems(Popularity):
    """Scores only the items up to the highest one rated in training."""

    def fit(self, data: Any) -> TooFewItems:
        super().fit(data)
        self.cut = int(data.interactions["item_id"].map(data.catalogue.index).max()) - 5
        return self

    @property
    def n_items(self) -> int:
        return self.cut

    def score_catalogue(self, tasks: Any, users: Any = None) -> np.ndarray:
        return super().score_catalogue(tasks, users)[:, : self.cut]


def test_a_model_of_fewer_items_than_the_catalogue_is_named(
    shared_data: Path, tmp_path: Path
) -> None:
    # scores for 1,674 of 1,682 items ran with exit 0, or failed naming a task's item
    with pytest.raises(ModelError, match=r"models: 'few' failed: .*n_items is 1,6\d\d after fit, "
                       r"the catalogue has 1,682"):  # fmt: skip
        run_benchmark(
            "p2", "ml-100k", root=str(shared_data), out=tmp_path, models={"few": TooFewItems()},
            **QUICK,
        )  # fmt: skip


class ReturnsNothing(Popularity):
    """Fits, but forgets ``return self``."""

    def fit(self, data: Any) -> Any:
        super().fit(data)


def test_a_fit_that_returns_no_model_is_refused_as_check_model_refuses_it(
    shared_data: Path, tmp_path: Path
) -> None:
    # check-model failed it ("fit returned NoneType"), the benchmark gave it a row
    with pytest.raises(ModelError, match=r"models: 'lazy' failed: .*fit returned NoneType; "
                       r"fit\(\) must return the model itself"):  # fmt: skip
        run_benchmark(
            "p2", "ml-100k", root=str(shared_data), out=tmp_path, models={"lazy": ReturnsNothing()},
            **QUICK,
        )  # fmt: skip

"""What a user's program writes against metarec's types, checked by `mypy --strict` in CI
(`.ci/run`): py.typed promises types a user's mypy can use, and integer ids in a history
and a frame's column of items ran, but were type errors (Mapping[str, float] only).
Checked, never run: it needs a trained run. In CI rather than the test suite, where a
cold strict mypy over metarec, torch and pandas took a twentieth of the suite's time."""

import numpy as np
import pandas as pd

import metarec as mr
from metarec.conformance import World, check_model
from metarec.explain import explain, recommend_with_reasons
from metarec.models.base import ScoringModel


class MostLiked(ScoringModel):
    name = "most-liked"


def use(rec: mr.Recommender) -> np.ndarray:
    u1 = rec.adapt({50: 5.0})  # ml-100k's ids are whole numbers
    u2 = rec.adapt([(50, 5), ("Heat (1995)", 2.0)])
    u3 = rec.adapt({"50": 4})
    top: pd.DataFrame = rec.recommend(u1, k=10)
    rec.score(u2, top["item_id"])  # a frame's column, its values, a list
    rec.score(u3, top["item_id"].to_numpy())
    rec.score(u3, ["1", 2])
    rec.recommend(u1, k=3, candidates=top["item_id"])
    explain(rec, u1, top["item_id"])
    # numpy's numbers, as a frame's values come: np.float32 and np.int64 are no float
    # or int to mypy, and rejected these calls that run
    u4 = rec.adapt([(np.int64(50), np.float32(4.0)), ("1", np.int64(3))])
    rec.adapt({"50": np.float32(4.0)})
    rec.recommend(u4, k=np.int64(5))
    recommend_with_reasons(rec, u4, k=np.int64(5))
    rec.median_ratings([3.2, 4.1])
    return rec.score(u1)


def misuse(rec: mr.Recommender) -> None:
    # type errors a user's mypy must report (strict mypy fails on an ignore that
    # silences nothing): a user is the UserState adapt returns, not an id; recommend
    # and top took Any, and "196" was found only when run
    rec.recommend("196", k=10)  # type: ignore[arg-type]
    rec.top("196")  # type: ignore[arg-type]
    rec.score("196")  # type: ignore[arg-type]


def conform(world: World) -> list[str]:
    # the options spelt out: a misspelt one (personalized=) is a type error here
    return check_model(MostLiked, world, personalised=False, seeded=False, skip=["same_seed"])


def load(root: str) -> None:
    # the README's first lines: `ds.report.summary()` was a union-attr error there
    ds = mr.load_dataset("ml-100k", root=root)
    print(ds.report)

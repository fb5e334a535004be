"""Event → rating mapping and the explanations, on the real trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.errors import ConfigError, DataError
from metarec.explain import (
    FROM_RATINGS,
    FROM_TEXT,
    LESS_LIKED,
    NEW_ITEM,
    POPULAR,
    display_title,
    explain,
    explain_indices,
    liked_weights,
    pulls,
    recommend_with_reasons,
    similar_floor,
)
from metarec.recommender import Recommender
from metarec.service.feedback import StoredEvent, event_rating, history_from_events


@pytest.fixture()
def all_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item counted as raised by the user's ratings, for the tests of which liked
    item a reason names: this small run's ratings move every score by one amount, so
    it raises none, and its reasons are the prior's (see the test of ``lifted``)."""
    import metarec.explain as explain_module

    def every(
        rec: object, user: object, items: np.ndarray, mine: object
    ) -> tuple[np.ndarray, list[str]]:
        return np.ones(len(items), dtype=bool), [POPULAR] * len(items)

    monkeypatch.setattr(explain_module, "_lifted", every)  # what explain_indices calls
    # and every liked item its pull names as one whose rating raised it (the test of
    # held_up_by checks that on a run whose ratings do move items)
    monkeypatch.setattr(
        explain_module, "held_up_by", lambda rec, user, items, pull, *a, **k: pull > 0
    )


@pytest.fixture(scope="module")
def rec(service_run: Path) -> Recommender:
    return Recommender.load(service_run)


@pytest.mark.parametrize(
    "kind, value, lo_hi, expected",
    [
        ("rating", 3.5, (1, 5), 3.5),
        ("like", None, (1, 5), 5.0),
        ("dislike", None, (1, 5), 1.0),
        ("click", None, (1, 5), 4.0),
        ("skip", None, (1, 5), 2.0),
        ("click", 1.0, (0, 10), 7.5),  # value ignored for implicit events
        ("skip", None, (0, 10), 2.5),
        ("click", None, (0, 1), 0.75),  # at 0/1's like threshold: a positive
        # all-1s implicit data: a like or click is the one value; a dislike or skip is no
        # rating at all (read as that value it would be a positive)
        ("like", None, (1, 1), 1.0),
        ("click", None, (1, 1), 1.0),
        ("dislike", None, (1, 1), None),
        ("skip", None, (1, 1), None),
    ],
)
def test_event_rating(kind: str, value: float | None, lo_hi: tuple, expected: float | None) -> None:
    assert event_rating(kind, value, lo_hi) == expected


def test_a_model_that_reads_every_rated_item_as_positive_gets_no_dislike() -> None:
    from types import SimpleNamespace

    from metarec.config import TrainConfig
    from metarec.service.feedback import reads_negatives

    def run(objective: str, positives: str | None = "rated") -> object:
        return SimpleNamespace(cfg=TrainConfig(objective=objective, support_positives=positives))

    # bce on 1-5 ratings, support positives "rated": a dislike sent as a 1 would be a
    # positive like any other interaction, so it stands for no rating
    assert not reads_negatives(run("bce"))
    assert not reads_negatives(run("bce", None))  # left open, as a config used directly: rated
    assert reads_negatives(run("rating")) and reads_negatives(run("bce", "liked"))
    assert event_rating("dislike", None, (1, 5), negatives=False) is None
    assert event_rating("skip", None, (1, 5), negatives=False) is None
    assert event_rating("like", None, (1, 5), negatives=False) == 5.0
    assert event_rating("rating", 1.0, (1, 5), negatives=False) == 1.0  # the user's own rating
    events = [StoredEvent("a", "x", "like", None, 1.0), StoredEvent("b", "x", "dislike", None, 2.0)]
    assert history_from_events(events, (1.0, 5.0), negatives=False) == {"x": None}


def test_what_you_did_quotes_no_rating_on_a_one_value_run() -> None:
    # clicks read as 1s: "You rated it 1" named a scale the page never shows
    from metarec.explain import ALREADY_CHOSEN
    from metarec.service.feedback import what_you_did

    rated = StoredEvent("a", "x", "rating", 1.0, 1.0)
    assert what_you_did(rated, (1.0, 1.0)) == ALREADY_CHOSEN
    assert what_you_did(rated, (1.0, 5.0)) == "You rated it 1"
    assert what_you_did(StoredEvent("b", "x", "click", None, 1.0), (1.0, 1.0)) == "You clicked it"


def test_the_pages_stars_post_only_what_the_model_reads() -> None:
    # five stars on a 0/1 run of bce posted 0, 0.25 and 0.5: three ways to say "no"
    from types import SimpleNamespace

    from metarec.config import TrainConfig
    from metarec.models.cutpoints import RatingCutpoints
    from metarec.service.feedback import star_values

    def run(
        scale: tuple[float, float],
        objective: str,
        positives: str | None = None,
        levels: tuple[float, ...] | None = None,
    ) -> object:
        cfg = TrainConfig(objective=objective, support_positives=positives)
        cuts = None if levels is None else RatingCutpoints(levels, levels[:-1])
        return SimpleNamespace(rating_range=scale, cfg=cfg, cutpoints=cuts)

    assert star_values(run((1, 5), "rating")) == [1, 2, 3, 4, 5]
    assert star_values(run((1, 10), "rating")) == [1, 3.25, 5.5, 7.75, 10]  # no levels kept
    # the scale's levels where the run keeps them: 3.25 was posted, a rating no one gives
    whole = tuple(float(v) for v in range(1, 11))
    assert star_values(run((1, 10), "rating", levels=whole)) == [1, 3, 5, 8, 10]
    halves = tuple(v / 2 for v in range(1, 11))
    assert star_values(run((0.5, 5), "rating", levels=halves)) == [0.5, 1.5, 2.5, 4, 5]
    assert star_values(run((1, 3), "rating", levels=(1.0, 2.0, 3.0))) == [1, 2, 3]
    assert star_values(run((0, 1), "bce", "liked")) == [0, 1]  # no, yes
    assert star_values(run((1, 5), "softmax", "rated")) == [5]  # every rated item a positive
    assert star_values(run((1, 1), "bce")) == [1]  # clicks read as 1s
    ensemble = SimpleNamespace(rating_range=(0, 1), cfg=None, primary=run((0, 1), "bpr", "liked"))
    assert star_values(ensemble) == [0, 1]


def test_a_history_moves_a_liked_run_from_the_threshold_its_support_used() -> None:
    # an ensemble's own like threshold (the scale's 4) said a user who rated 3s on a run
    # trained with like_threshold=3 had not moved, and explained their list as the prior's
    from types import SimpleNamespace

    from metarec.config import TrainConfig
    from metarec.explain import moves_user

    cfg = TrainConfig(objective="bce", support_positives="liked", like_threshold=3.0)
    ens = SimpleNamespace(cfg=cfg, rating_range=(1.0, 5.0),
                          ensemble=SimpleNamespace(like_threshold=4.0))  # fmt: skip
    assert moves_user(ens, [(0, 3.0)]) and not moves_user(ens, [(0, 2.0)])
    assert not moves_user(ens, [])
    rated = SimpleNamespace(cfg=TrainConfig(objective="bce", support_positives="rated"),
                            rating_range=(1.0, 5.0))  # fmt: skip
    assert moves_user(rated, [(0, 1.0)])  # every rated item a positive


def test_event_rating_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="needs a value"):
        event_rating("rating", None, (1, 5))
    with pytest.raises(ValueError, match="unknown event type 'poke'"):
        event_rating("poke", None, (1, 5))


def test_history_latest_wins_by_time_then_arrival() -> None:
    events = [
        StoredEvent("a", "x", "rating", 2.0, 10.0),
        StoredEvent("b", "y", "like", None, 5.0),
        StoredEvent("c", "x", "dislike", None, 5.0),  # arrived later but happened earlier
        StoredEvent("d", "y", "skip", None, 5.0),  # same time: arrival order decides
    ]
    assert history_from_events(events, (1.0, 5.0)) == {"x": 2.0, "y": 2.0}
    # on a one-value range the same events leave x rated and y disliked (no rating)
    assert history_from_events(events, (1.0, 1.0)) == {"x": 2.0, "y": None}


def test_liked_weights_are_relative_to_the_users_mean() -> None:
    # half a star (an eighth of the scale) for any liked item, plus its rise over the mean
    np.testing.assert_allclose(liked_weights(np.array([5, 3, 1]), (1, 5)), [2.5, 0, 0])
    np.testing.assert_allclose(liked_weights(np.array([5, 5]), (1, 5)), [2.5, 2.5])  # no spread
    np.testing.assert_allclose(liked_weights(np.array([1, 1]), (1, 5)), [0, 0])
    # above the user's own mean is not liked: a 2 among 1s (a skip is stored as a 2) and
    # a 3 were "because you liked"; liked starts at the like threshold, 4 on 1-5
    np.testing.assert_allclose(liked_weights(np.array([1, 1, 2]), (1, 5)), [0, 0, 0])
    np.testing.assert_allclose(liked_weights(np.array([1, 3, 5]), (1, 5)), [0, 0, 2.5])
    np.testing.assert_allclose(liked_weights(np.array([1, 3, 5]), (1, 5), 3.0), [0, 0.5, 2.5])
    np.testing.assert_allclose(liked_weights(np.array([1, 2, 3]), (1, 5), 2.0), [0, 0.5, 1.5])
    # and a liked 4 below the mean of a user's 5s still counts: it weighed 0, and a film
    # like the 4 alone "fitted the pattern of your ratings"
    np.testing.assert_allclose(
        liked_weights(np.array([4, 5, 5]), (1, 5)), [0.5, 0.5 + 1 / 3, 0.5 + 1 / 3]
    )


def test_rated_items_are_explained_by_their_rating_and_low_ones_never_as_liked(
    rec: Recommender,
) -> None:
    # a user who disliked Star Wars and skipped Empire was told "because you liked The
    # Empire Strikes Back"; listed with exclude_seen off, Star Wars explained itself
    user = rec.adapt([("Star Wars (1977)", 1), ("Empire Strikes Back, The (1980)", 2)])
    frame = recommend_with_reasons(rec, user, k=20)
    assert not frame["reason"].str.startswith("Because you liked").any()
    user = rec.adapt([("Star Wars (1977)", 5), ("Schindler's List (1993)", 1)])
    [star, schindler] = explain(rec, user, ["Star Wars (1977)", "Schindler's List (1993)"])
    assert (star.reason, star.because) == ("You rated it 5", [])
    assert (schindler.reason, schindler.because) == ("You rated it 1", [])


@pytest.mark.parametrize(
    "title, text, shown",
    [
        ("Mr. Holland's Opus", "Mr. Holland's Opus (1995). Genres: Drama.", "Mr. Holland's Opus (1995)"),  # noqa: E501
        ("Lion King, The", "The Lion King (1994). Genres: Animation.", "The Lion King (1994)"),
        ("Matrix, The", "A film about a simulation. Directed by ...", "The Matrix"),
        ("", "Untitled. Something", "Untitled"),
        # another film's year in an undated item's text: all up to it was the title
        ("Night Bus", "Night Bus. Genres: Mystery. A sequel to Heat (1995). On a bus.", "Night Bus"),  # noqa: E501
        ("Heat (1995)", "Heat (1995) (2030). Genres: Crime.", "Heat (1995) (2030)"),
    ],
)  # fmt: skip
def test_display_title(title: str, text: str, shown: str) -> None:
    assert display_title(title, text) == shown


def test_a_bad_top_or_index_is_named(rec: Recommender, all_raised: None) -> None:
    # top=-1 dropped the last reason, 0 said "fits the pattern", 2.5 was a TypeError;
    # index -1 explained the last item, 10**6 was an IndexError
    user = rec.adapt([("Toy Story (1995)", 5), ("Heat (1995)", 4)])
    for top in (-1, 0, 2.5, "2"):
        with pytest.raises(ConfigError, match="top"):
            explain(rec, user, ["Aladdin (1992)"], top=top)  # type: ignore[arg-type]
    for idx in (-1, rec.n_items, 10**6):
        with pytest.raises(DataError, match=rf"{idx} is not a catalogue index"):
            explain_indices(rec, user, [idx])
    # 1.7 was item 1; a number or a nested list a TypeError
    for items in ([1.7], 3, [[1, 2]], [True]):
        with pytest.raises(DataError, match="explain: items: expected a list of catalogue"):
            explain_indices(rec, user, items)  # type: ignore[arg-type]
    # "12" was explained as items "1" and "2"; None an AttributeError
    with pytest.raises(DataError, match="explain: items: expected a list of item ids"):
        explain(rec, user, "12")
    for state in (None, {}):
        with pytest.raises(DataError, match="user: expected the UserState"):
            explain(rec, state, ["Aladdin (1992)"])  # type: ignore[arg-type]
    assert len(explain(rec, user, ["Aladdin (1992)"], top=1)[0].because) == 1


def test_reasons_name_liked_similar_items(rec: Recommender, all_raised: None) -> None:
    user = rec.adapt([("Toy Story (1995)", 5), ("Scream (1996)", 1), ("Heat (1995)", 3)])
    [why] = explain(rec, user, ["Aladdin (1992)"])
    names = [t for _, t, _ in why.because]
    assert names == ["Toy Story (1995)"]  # Scream was disliked, Heat rated at the mean
    assert why.reason == "Because you liked Toy Story (1995)"


def test_a_liked_item_unlike_the_recommendation_does_not_explain_it(
    rec: Recommender, all_raised: None
) -> None:
    """Every text of a catalogue shares a direction, so uncentred every liked item had a
    pull on every recommendation: a war drama was "because you liked Toy Story"."""
    user = rec.adapt([("Toy Story (1995)", 5), ("Scream (1996)", 1)])
    toy, war = rec.resolve("Toy Story (1995)"), rec.resolve("Schindler's List (1993)")
    v = rec.model.tower.item_vectors.double().numpy()
    assert v[toy] @ v[war] > 0  # uncentred, they looked alike
    [why] = explain(rec, user, ["Schindler's List (1993)"])
    assert why.because == [] and why.reason == FROM_RATINGS
    [why] = explain(rec, user, ["Aladdin (1992)"])
    assert why.reason == "Because you liked Toy Story (1995)"


def test_a_one_value_run_says_chose_not_liked(
    rec: Recommender, monkeypatch: pytest.MonkeyPatch, all_raised: None
) -> None:
    """On clicks read as 1s the user rated nothing: "Because you liked" and "your
    ratings" said what they never did."""
    from metarec.explain import FROM_CHOICES

    user = rec.adapt([("Toy Story (1995)", 5), ("Heat (1995)", 5)])
    monkeypatch.setattr(rec, "rating_range", (1.0, 1.0))  # every rating one value
    [near, far] = explain(rec, user, ["Aladdin (1992)", "Schindler's List (1993)"])
    assert near.reason == "Because you chose Toy Story (1995)"
    assert far.reason == FROM_CHOICES == "Fits the pattern of what you chose"


def test_an_implicit_runs_reasons_speak_of_feedback_not_ratings(
    rec: Recommender, monkeypatch: pytest.MonkeyPatch, all_raised: None
) -> None:
    """On 0/1 clicks and skips (an implicit objective over two values) the reason for an
    item no liked one explains was "Fits the pattern of your ratings"."""
    import dataclasses

    from metarec.explain import FROM_FEEDBACK

    user = rec.adapt([("Toy Story (1995)", 5), ("Heat (1995)", 5)])
    [far] = explain(rec, user, ["Schindler's List (1993)"])
    assert far.reason == FROM_RATINGS
    monkeypatch.setattr(rec, "cfg", dataclasses.replace(rec.cfg, objective="softmax"))
    [near, far] = explain(rec, user, ["Aladdin (1992)", "Schindler's List (1993)"])
    assert near.reason == "Because you liked Toy Story (1995)"  # a 1 is a liked item
    assert far.reason == FROM_FEEDBACK == "Fits the pattern of your feedback"


def test_pulls_are_centred_cosine_times_liking(rec: Recommender) -> None:
    history = [(rec.resolve("Toy Story (1995)"), 5.0), (rec.resolve("Heat (1995)"), 4.0),
               (rec.resolve("Scream (1996)"), 1.0)]  # fmt: skip
    items = np.array([rec.resolve("Aladdin (1992)"), rec.resolve("Casino (1995)")])
    got = pulls(rec, history, items)
    v = rec.model.tower.item_vectors.double().numpy()
    v = v - v.mean(0)  # centred on the catalogue: what every text shares explains nothing
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    weights = 0.5 + np.array([5.0, 4.0, 1.0]) - 10.0 / 3  # half a star + the rise
    # the floor: the 90th percentile of the centred cosine over every pair of distinct
    # items (ml-100k's 1,682 are under the sample size, so all pairs count)
    floor = np.quantile((v @ v.T)[np.triu_indices(len(v), 1)], 0.9)
    assert floor == pytest.approx(similar_floor(rec.model.tower.item_vectors), abs=1e-9)
    kept = 0
    for r, i in enumerate(items):
        for c, (j, _) in enumerate(history):
            cos = v[i] @ v[j]
            expected = cos * (cos >= floor) * max(weights[c], 0.0)
            kept += bool(expected)
            assert got[r, c] == pytest.approx(expected, abs=1e-9)
    assert kept  # the pair of Aladdin and Toy Story is past the floor
    assert got[:, 2].max() == 0.0  # a disliked item never explains anything


def test_an_item_barely_closer_than_average_explains_nothing(rec: Recommender) -> None:
    """Any positive centred cosine counted: half the items cited in quickstart's run
    were under 0.08, where half of all pairs are over -0.01."""
    v = rec.model.tower.item_vectors.double().numpy()
    v = v - v.mean(0)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    toy = rec.resolve("Toy Story (1995)")
    floor = similar_floor(rec.model.tower.item_vectors)
    cos = v @ v[toy]
    weak = int(np.flatnonzero((cos > 0) & (cos < floor / 2))[0])  # closer than average
    got = pulls(rec, [(toy, 5.0), (rec.resolve("Scream (1996)"), 1.0)], np.array([weak]))
    assert got[0, 0] == 0.0


def test_zero_shot_reasons(rec: Recommender, tmp_path: Path) -> None:
    fresh = rec.adapt([])
    frame = recommend_with_reasons(rec, fresh, k=5)
    assert list(frame.columns) == ["rank", "item_id", "title", "score", "reason"]
    assert set(frame["reason"]) == {POPULAR}
    # a requested candidate the prior ranks last was "well liked" too: popularity > 0
    # said only that people had rated it
    prior = rec.score(fresh)
    last, first = rec.items["item_id"].iloc[[int(prior.argmin()), int(prior.argmax())]]
    ranked = recommend_with_reasons(rec, fresh, k=2, candidates=[last, first])
    said = dict(zip(ranked["item_id"], ranked["reason"], strict=True))
    assert said == {first: POPULAR, last: LESS_LIKED}
    copy = Recommender.load(rec.save(tmp_path / "copy"))
    copy.add_items(pd.DataFrame({"item_id": ["n"], "title": ["Brand New"], "year": [2020]}))
    [why] = explain(copy, copy.adapt([]), ["n"])
    assert why.reason == NEW_ITEM
    # an item of the catalogue the run learned no rating of (a P1 new item, or one only
    # users outside training rated) was "new in the catalogue" too: Casino (1995) was
    unrated = np.flatnonzero(np.asarray(copy.popularity) == 0)
    old = [i for i in copy.items["item_id"].to_numpy()[unrated] if i != "n"]
    assert old, "the run holds every catalogue item rated in training"
    said = {e.item_id: e.reason for e in explain(copy, copy.adapt([]), [old[0], "n"])}
    assert said == {old[0]: FROM_TEXT, "n": NEW_ITEM}
    # a run saved before additions were recorded cannot tell them apart: both are new
    copy.metadata.pop("added_items")
    said = {e.item_id: e.reason for e in explain(copy, copy.adapt([]), [old[0], "n"])}
    assert said == {old[0]: NEW_ITEM, "n": NEW_ITEM}


def test_an_added_titles_year_is_read_once(rec: Recommender, tmp_path: Path) -> None:
    # "Matrix Redux (1999)" beside year 1999 was "Matrix Redux (1999) (1999)" in the text
    # and in every reason that named it, where a file's row is read once
    copy = Recommender.load(rec.save(tmp_path / "copy"))
    new = pd.DataFrame({"item_id": ["m", "h"], "title": ["Matrix Redux (1999)", "Heat (1995)"],
                        "year": [1999, 2030]})  # fmt: skip
    with pytest.warns(UserWarning, match=r"add_items: 1 title\(s\) end in a year other than"):
        copy.add_items(new)
    added = copy.items.set_index("item_id").loc[["m", "h"]]
    assert added["title"].tolist() == ["Matrix Redux", "Heat (1995)"]
    assert added["text"].iloc[0].startswith("Matrix Redux (1999).")
    user = copy.adapt([("m", 5), ("Toy Story (1995)", 1)])
    assert explain(copy, user, ["m"])[0].reason == "You rated it 5"
    assert display_title(added["title"].iloc[0], added["text"].iloc[0]) == "Matrix Redux (1999)"


def test_a_title_with_direction_marks_is_isolated_in_a_reason() -> None:
    # an unclosed right-to-left override in a title reversed the reason's own words
    from metarec.explain import reason_text

    because = [("a", "Alpha \u202e", 5.0), ("b", "Toy Story (1995)", 4.0)]
    assert reason_text(because) == "Because you liked \u2068Alpha \u2069 and Toy Story (1995)"
    assert reason_text([("b", "Toy Story (1995)", 4.0)]) == "Because you liked Toy Story (1995)"
    # a mark of its own that would close the isolate early is dropped
    escape = [("a", "Alpha\u2069\u202e", 5.0), ("b", "Beta", 4.0)]
    assert reason_text(escape) == "Because you liked \u2068Alpha\u2069 and Beta"


class _Shifted:
    """A run whose scores for a user are the prior's plus ``lift`` (per item): enough of
    a model for :func:`metarec.explain.lifted`."""

    def __init__(self, lift: np.ndarray, rated: np.ndarray) -> None:
        self.n_items = len(lift)
        self.items = pd.DataFrame({"item_id": [str(i) for i in range(len(lift))]})
        self.popularity = rated.astype(float)
        self.metadata = {"added_items": []}
        self._prior = np.linspace(1.0, 5.0, len(lift))
        self._lift = lift

    def adapt(self, history: list[object]) -> str:
        return "prior"

    def score(self, user: str, keys: list[str] | None = None) -> np.ndarray:
        rows = np.arange(self.n_items) if keys is None else np.array([int(k) for k in keys])
        return self._prior[rows] + (0.0 if user == "prior" else self._lift[rows])


def test_reasons_are_the_users_only_where_their_ratings_raised_the_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run whose ratings move every score by one amount (a bias model in all but
    level, as quickstart's is on ml-100k) gave the prior's list with "Fits the pattern
    of your ratings", and "Because you liked" a film whose rating had pulled the item
    down against the rest. Raised means past the catalogue's median move by 5 % of the
    prior's spread."""
    import metarec.explain as explain_module
    from metarec.explain import lifted

    monkeypatch.setattr(explain_module, "prior_catalogue_scores", lambda rec, user: rec._prior)
    n = 2000
    rated = np.ones(n, dtype=bool)
    rated[-1] = False  # no training user rated it
    items = np.array([0, 1, n - 2, n - 1])
    shift = np.full(n, 0.3)  # every score up by one amount: nothing is the user's
    raised, why = lifted(_Shifted(shift, rated), "user", items)  # type: ignore[arg-type]
    assert not raised.any()
    # the prior's words: its lower half less liked, its upper half well liked
    assert why[:3] == [LESS_LIKED, LESS_LIKED, POPULAR] and why[3] in (NEW_ITEM, FROM_TEXT)
    shift[1] += 0.2  # the prior's spread is 1.15: 0.2 is past 5 % of it
    shift[n - 2] += 0.01  # within it
    raised, _ = lifted(_Shifted(shift, rated), "user", items)  # type: ignore[arg-type]
    assert raised.tolist() == [False, True, False, False]
    shift[0] -= 0.2  # pulled down: not the user's either
    assert not lifted(_Shifted(shift, rated), "user", items)[0][0]  # type: ignore[arg-type]


def test_the_priors_scores_are_kept_until_the_run_changes(service_run: Path) -> None:
    """Kept for every user's explanation, and scored anew once an item's vector (an
    update through the service), its offsets (a fold-in, which remakes the catalogue's
    cached side, twice where it re-folds: the second's tensors took the freed first's
    ids) or the catalogue (an addition) changes; per user features, which are not
    ratings (a user's features read as their ratings' lift)."""
    import torch

    from metarec.explain import lifted, prior_catalogue_scores

    rec = Recommender.load(service_run)  # its own copy: changed below
    # the service's scores, passed through, judge as scoring here does
    fan = rec.adapt([("Toy Story (1995)", 5), ("Heat (1995)", 2)])
    some = np.arange(0, rec.n_items, 97)
    given, said = lifted(rec, fan, some, rec.score(fan))
    alone, said_alone = lifted(rec, fan, some)
    np.testing.assert_array_equal(given, alone)
    assert said == said_alone
    nobody = rec.adapt([])
    first = prior_catalogue_scores(rec, nobody)
    assert prior_catalogue_scores(rec, nobody) is first  # kept
    np.testing.assert_allclose(first, rec.score(nobody), rtol=1e-6)
    with torch.no_grad():
        rec.model.tower.item_vectors[0] += 1.0  # in place, as an updated item's text
    rec._refresh_cache()  # as the update does (_retitle)
    again = prior_catalogue_scores(rec, nobody)
    assert again is not first and again[0] != first[0]
    for shift in (0.5, 0.7):  # two refreshes in a row, as a fold-in's re-fold makes
        rec.item_offsets = rec.item_offsets.copy()
        rec.item_offsets[1] = shift
        rec._refresh_cache()
        rec._refresh_cache()
        got = prior_catalogue_scores(rec, nobody)[1]
        assert got == pytest.approx(again[1] + shift, abs=1e-5)  # item 1 had no offset
    rec.add_items(pd.DataFrame({"item_id": ["zz"], "title": ["Zed"], "text": ["Zed. A film."]}))
    assert len(prior_catalogue_scores(rec, nobody)) == rec.n_items == len(first) + 1
    # a user with features: the prior of those features, not of none
    if rec.features.columns:
        older = rec.adapt([], user_features={"age": 60})
        np.testing.assert_allclose(prior_catalogue_scores(rec, older), rec.score(older), rtol=1e-6)


@pytest.fixture(scope="module")
def moving_rec(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    """A run whose ratings move items against each other (softmax, its head adapted):
    the service's small run moves every score by one amount, and names nothing."""
    from metarec.config import TrainConfig
    from metarec.data import load_dataset
    from metarec.pipeline import encode_catalogue, fit_recommender, split_users

    ds = load_dataset("ml-100k", root=shared_data)
    cache = tmp_path_factory.mktemp("emb")
    catalogue = encode_catalogue(ds.items, "tfidf", cache_dir=cache, progress=False)
    cfg = TrainConfig(objective="softmax", adapt="head", epochs=2, seed=0, device="cpu")
    train, val = split_users(ds.interactions, 0.1, seed=0)
    rec, _ = fit_recommender(catalogue, train, cfg, users=ds.users, validation=val, progress=False)
    return rec


@pytest.mark.slow
def test_a_named_liked_item_is_one_whose_rating_raised_the_item(moving_rec: Recommender) -> None:
    """The pull reads text alone: it named items whose rating had lowered the item
    against the catalogue (45 % of a click run's), and the list without them ranked
    it higher. Each named one must raise it: the user adapted without it scores the
    item lower, against the catalogue's median move, than with it."""
    from metarec.explain import lift_sample

    rec = moving_rec
    sample = lift_sample(rec.n_items)
    # the first seven ratings of users 712, 119 and 276: each was told of a liked item
    # that had lowered the item it explained
    histories = [
        [("220", 5), ("1040", 4), ("510", 2), ("50", 4), ("731", 5), ("417", 4), ("623", 4)],
        [("286", 5), ("300", 5), ("322", 4), ("323", 4), ("275", 5), ("458", 5), ("100", 5)],
        [("258", 5), ("300", 4), ("328", 4), ("294", 4), ("322", 3), ("288", 4), ("323", 3)],
    ]
    named = 0
    # a user adapted with steps of their own is left out of with those: the run's
    # default read the steps' difference as a rating's effect
    for history, steps in [(h, None) for h in histories] + [(histories[0], 20)]:
        user = rec.adapt(history, steps=steps)
        top, _ = rec.top(user, 10)
        mine = np.asarray(rec.score(user), dtype=np.float64)
        for i, e in zip(top, explain_indices(rec, user, top), strict=True):
            for item_id, _, _ in e.because:
                without = rec.adapt([(a, r) for a, r in history if a != item_id], steps=steps)
                effect = mine - np.asarray(rec.score(without), dtype=np.float64)
                assert effect[i] > np.median(effect[sample]), (e.reason, item_id)
                named += 1
    assert named, "no reason named a liked item: the test checks nothing"

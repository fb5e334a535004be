"""Why an item is recommended: the user's rated items that pulled it up most.

For a recommended item c and each item j the user rated, the pull is

    pull(c, j) = cos(e_c − ē, e_j − ē) · [cos ≥ q₉₀] · (b + max(r_j − r̄, 0)) · [r_j ≥ τ]

with e the frozen LM vectors of the items (``rec.model.tower.item_vectors``,
the space the model reads items from), ē their mean over the catalogue, q₉₀ the
90th percentile of the centred cosine over pairs of catalogue items
(:func:`similar_floor`), r̄ the user's mean rating, τ the run's like threshold
(4 on 1-5 stars) and b an eighth of the scale's span (half a star): an item explains
a recommendation when it is closer to it in text space than 9 in 10 pairs of the
catalogue's items are *and* the user liked it, the more so the more they liked it
than they usually like things. Only an item the user's ratings raised against the
catalogue (:func:`lifted`) gets such a reason; the others get the prior's. Any
positive cosine ("closer than average") was taken before: in quickstart's run half
the items cited had a cosine under 0.08, where half of all pairs are over −0.01 ("Because you liked
Kazaam" for Phantoms); at q₉₀ (0.15 there) pairs read as kin (two romantic
comedies), and a recommendation no liked item is that close to fits the ratings'
pattern. Above their own mean alone, a user who gave 1s and a 2 was told "because
you liked" the 2 (a skip is stored as one). Uncentred, any two texts of a catalogue share a
direction (every book blurb is about a book), so every liked item "explained"
every recommendation, a cooking book as well as the mystery it was next to; a
recommendation no liked item is close to is said to fit the ratings' pattern.
A user whose ratings are all equal has no spread, so r̄ falls back to the middle
of the rating range (all 5s still count as liked, all 1s do not). The whole list is one
matrix product ``[k, d] @ [d, m]``.

A user with no ratings gets the meta-learned prior, so the reason says so:
"Well liked by users overall" for items people rated in training that the prior
ranks in the top half of them (it ranks by how users in general take an item, not
by how many rated it), "Less liked by users overall" for the other half (a
requested candidate the prior ranks last was called well liked), "New in the
catalogue" for items added since training, and "Judged from its description alone"
for the other items no training user rated (a P1 run's held-out new items, and items
only users outside its training rated), which the run scores from their text.

An item the user rated (listed when ``exclude_seen`` is off) is explained by that
rating, "You rated it 4": it was its own strongest reason ("because you liked"
the item itself), or a 1 was explained by liked items near it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from metarec.data.schema import like_threshold_for
from metarec.data.spec import added_items
from metarec.device import float64_device
from metarec.errors import DataError
from metarec.models.base import check_whole
from metarec.ranking import item_keys
from metarec.recommender import Recommender, UserState

if TYPE_CHECKING:
    from metarec.ensemble_run import EnsembleRecommender, ServedModel
    from metarec.inputs import ItemKeys

POPULAR = "Well liked by users overall"
LESS_LIKED = "Less liked by users overall"
NEW_ITEM = "New in the catalogue"
# an item of the training catalogue no training user rated: a P1 run's held-out new
# items, and old films only its validation, held-out or heavy raters rated (Casino,
# 91 ratings in ml-100k, was "new in the catalogue"); the run scores it from its text
FROM_TEXT = "Judged from its description alone"
FROM_RATINGS = "Fits the pattern of your ratings"
# a one-value run (clicks, purchases read as 1s): its users chose, and rated nothing
FROM_CHOICES = "Fits the pattern of what you chose"
# a run of an implicit objective over two or more values: its users say yes or no (the
# service's stars post the scale's ends), click or skip, which no one calls ratings
FROM_FEEDBACK = "Fits the pattern of your feedback"
ALREADY_CHOSEN = "Already in your history"

# "Mr. Holland's Opus (1995). Genres: Drama." → "Mr. Holland's Opus (1995)": up to the year,
# not up to the first ". " (titles have their own full stops)
_TITLE_YEAR = re.compile(r"^(.+?\(\d{4}\))(?:\.\s|\.?$)")
_YEAR_AT_END = re.compile(r"\s*\(\d{4}\)$")


@dataclass(frozen=True)
class Explanation:
    """Why an item is listed: its ``reason`` in words, and ``because`` the rated items
    behind it as (item id, display title, pull), strongest first (empty where the
    reason names none)."""

    item_id: str
    reason: str
    # (item_id, display title, pull) of the rated items behind it, strongest first
    because: list[tuple[str, str, float]] = field(default_factory=list)


def display_title(title: str, text: str) -> str:
    """How people write an item's name: the text's "Title (year)" head where it is the
    title and its year, else the title."""
    from metarec.data.text import fix_title_articles

    m = _TITLE_YEAR.match(text)
    name = title.strip()
    if m and (not name or _names(m.group(1), name, fix_title_articles(name))):
        return m.group(1)
    if name:
        return fix_title_articles(name)
    return text.split(". ", 1)[0].rstrip(".")


def _names(head: str, *titles: str) -> bool:
    """Whether ``head`` is one of ``titles``, or one with its year: the year of an item
    without one can be another film's in its text ("Night Bus. Genres: Mystery. A sequel
    to Heat (1995). ..."), and everything up to it was taken for the title."""
    return head in titles or _YEAR_AT_END.sub("", head) in titles


def display_titles(rec: ServedModel, items: Sequence[int] | None = None) -> list[str]:
    """Display titles of catalogue indices ``items`` (all items when None)."""
    titles, texts = rec.items["title"].to_numpy(), rec.items["text"].to_numpy()
    idx = range(rec.n_items) if items is None else items
    return [display_title(str(titles[i]), str(texts[i])) for i in idx]


def liked_weights(
    ratings: np.ndarray, rating_range: tuple[float, float], threshold: float | None = None
) -> np.ndarray:
    """How strongly each rated item counts as liked: 0 under ``threshold`` (default:
    the scale's like threshold); from it, :data:`LIKED_BASE` of the scale's span plus
    how far the rating is above the user's mean. Above the mean alone, a user whose 5s
    outnumbered their 4s liked none of the 4s: "Return of the Jedi" fitted "the pattern
    of your ratings" beside a 4 for Star Wars."""
    ratings = np.asarray(ratings, dtype=np.float64)
    if len(ratings) == 0:
        return ratings
    lo, hi = rating_range
    if hi == lo:  # implicit feedback read as 1s: every interaction is a like
        return np.ones_like(ratings)
    centre = float(ratings.mean())
    if np.ptp(ratings) == 0:
        centre = (lo + hi) / 2.0
    floor = like_threshold_for(rating_range) if threshold is None else threshold
    base = LIKED_BASE * (hi - lo)
    return np.where(ratings >= floor, base + np.clip(ratings - centre, 0.0, None), 0.0)


LIKED_BASE = 0.125  # of the scale's span: half a star on 1-5, what any liked item weighs


def like_floor(rec: ServedModel) -> float:
    """The rating from which the run counts an item as liked: an ensemble's own (what it
    was fitted with), else the training's threshold (set by training, or given), else
    the scale's."""
    ensemble = getattr(rec, "ensemble", None)
    given = getattr(ensemble, "like_threshold", None) if ensemble is not None else None
    return support_floor(rec) if given is None else float(given)


def pulls(rec: ServedModel, history: Sequence[tuple[int, float]], items: np.ndarray) -> np.ndarray:
    """[len(items), len(history)] pull of each rated item on each candidate (catalogue indices)."""
    if len(history) == 0 or len(items) == 0:
        return np.zeros((len(items), len(history)))
    rated = np.fromiter((i for i, _ in history), dtype=np.int64, count=len(history))
    weights = liked_weights(np.array([r for _, r in history]), rec.rating_range, like_floor(rec))
    vectors = rec.model.tower.item_vectors
    # one gather of the candidates' and the rated items' rows, then numpy: a dozen small
    # torch calls cost more than the arithmetic (this runs on every served list)
    picked = centred_units(vectors, np.concatenate([np.asarray(items, dtype=np.int64), rated]))
    sim = picked[: len(items)] @ picked[len(items) :].T
    sim[sim < similar_floor(vectors)] = 0.0
    return np.clip(sim, 0.0, None) * weights[None, :]


def centred_units(vectors: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    """Catalogue ``rows`` of ``vectors`` in float64, centred on the catalogue's mean and
    scaled to unit length (as F.normalize): the space both the pulls and their floor
    measure cosines in. One gather, then numpy: a dozen small torch calls cost more than
    the arithmetic (this runs on every served list)."""
    with torch.no_grad():
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64)).to(vectors.device)
        picked = vectors[index].cpu().numpy().astype(np.float64)
    picked -= catalogue_centre(vectors)
    picked /= np.maximum(np.linalg.norm(picked, axis=1, keepdims=True), 1e-12)
    return picked


SIMILAR_QUANTILE = 0.9
# items whose pairs set the floor: all of a catalogue up to this many, else this many
# drawn with a fixed seed (a [2,000, 2,000] product; the quantile moves by about 0.002)
_FLOOR_SAMPLE = 2000


def similar_floor(vectors: torch.Tensor) -> float:
    """The centred cosine that 90 % of pairs of distinct catalogue items stay under
    (:data:`SIMILAR_QUANTILE`): an item explains another only from there. Kept on the
    catalogue's tensor with its version, as :func:`catalogue_centre` is."""
    version = vectors._version
    kept = getattr(vectors, "_metarec_floor", None)
    if kept is not None and kept[0] == version:
        return float(kept[1])
    n = int(vectors.shape[0])
    rows = np.arange(n)
    if n > _FLOOR_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(n, _FLOOR_SAMPLE, replace=False))
    picked = centred_units(vectors, rows)
    cos = (picked @ picked.T)[np.triu_indices(len(rows), 1)]
    floor = float(np.quantile(cos, SIMILAR_QUANTILE)) if len(cos) else 0.0
    vectors._metarec_floor = (version, floor)  # type: ignore[attr-defined]
    return floor


def catalogue_centre(vectors: torch.Tensor) -> np.ndarray:
    """The mean item vector, kept on the catalogue's tensor with the version count
    that an in-place change moves (``extend`` makes a new tensor): every served list
    needs it, and a whole catalogue's mean is the costly part of a short list."""
    version = vectors._version  # before the mean: a change during it is not stamped as seen
    kept = getattr(vectors, "_metarec_centre", None)
    if kept is not None and kept[0] == version:
        return kept[1]
    with torch.no_grad():
        on = vectors.to(float64_device(vectors.device))
        centre = on.mean(0, dtype=torch.float64).cpu().numpy()
    vectors._metarec_centre = (version, centre)  # type: ignore[attr-defined]
    return centre


def explain_indices(
    rec: ServedModel,
    user: UserState,
    items: Sequence[int],
    *,
    top: int = 2,
    titles: Sequence[str] | None = None,
    ids: Sequence[str] | Mapping[int, str] | None = None,
    history_said: Mapping[int, str] | None = None,
    scores: np.ndarray | None = None,
) -> list[Explanation]:
    """Explanations for catalogue indices ``items`` (e.g. a recommended list);
    ``titles``/``ids``: display titles and item ids (as text) of the whole catalogue,
    when the caller has them (the service does: reading the id column costs more than
    the explanation). ``history_said``: what to say of an item the user already acted
    on, by index, where the caller knows what they did (the service knows a click from
    a rating; ``user.history`` holds only the rating it stands for, and not at all a
    dislike that no rating expresses). ``scores``: the user's catalogue scores, where the
    caller has them (a user with no ratings is explained by them, else scored here)."""
    top = check_whole(top, "explain: top", 1)  # -1 dropped the last reason, 2.5 a TypeError
    rec._check_user(user)  # None was an AttributeError, another run's state an IndexError
    idx = _indices(items)
    bad = idx[(idx < 0) | (idx >= rec.n_items)]
    if len(bad):  # -1 explained the last item
        raise DataError(
            f"explain: items: {int(bad[0])} is not a catalogue index in [0, {rec.n_items})"
        )
    if ids is None:
        # the rows needed, not the whole column: at 100,000 items converting it cost more
        # than the explanation
        column = rec.items["item_id"]
        ids = {int(i): str(column.iat[i]) for i in [*idx, *(j for j, _ in user.history)]}
    said = history_said or {}
    rated = {j: r for j, r in user.history}  # the latest rating of an item rated twice
    lo, hi = rec.rating_range  # one level (clicks): no rating to quote
    implicit = getattr(getattr(rec, "cfg", None), "objective", "rating") != "rating"

    def you(i: int) -> str:  # what the user did with an item of their own history
        if i in said:
            return said[i]
        return f"You rated it {rated[i]:g}" if hi > lo else ALREADY_CHOSEN

    if not moves_user(rec, user.history):
        prior = zip(idx, _prior_reasons(rec, user, idx, scores), strict=True)
        return [
            Explanation(str(ids[i]), you(int(i)) if int(i) in said or int(i) in rated else why)
            for i, why in prior
        ]
    # the user's scores of the items and the lift's sample, once: the lift and each
    # rating's own effect both read them
    mine = row_scores(rec, user, lift_rows(rec, idx), scores)
    pull = pulls(rec, user.history, idx)
    raised, prior_why = _lifted(rec, user, idx, mine)
    own = np.array([int(i) in said or int(i) in rated for i in idx], dtype=bool)
    pull[~raised | own] = 0.0  # only a raised item of no history of theirs names one
    pull[~held_up_by(rec, user, idx, pull, ids, mine)] = 0.0
    order = np.argsort(-pull, axis=1, kind="stable")[:, :top]
    out = []
    for row, i in enumerate(idx):
        if int(i) in said or int(i) in rated:
            out.append(Explanation(str(ids[i]), you(int(i))))
            continue
        if not raised[row]:  # where it would be without the ratings: the prior's reason
            out.append(Explanation(str(ids[i]), prior_why[row]))
            continue
        because = []
        for col in order[row]:
            if pull[row, col] <= 0:
                break
            j = user.history[col][0]
            # the model's own cached titles: display_titles(rec, [j]) read both whole
            # columns for each name, 0.4 s for ten reasons at 100,000 items
            name = titles[j] if titles is not None else rec._display(j)
            because.append((str(ids[j]), name, float(pull[row, col])))
        words = reason_text(because, chose=hi == lo, feedback=implicit)
        out.append(Explanation(str(ids[i]), words, because))
    return out


# the most of a user's rated items that are checked (each left out in turn) before
# one is named: the strongest pulls first; those past it are not named
NAMED_CHECKED = 16


def held_up_by(
    rec: ServedModel,
    user: UserState,
    items: np.ndarray,
    pull: np.ndarray,
    ids: Sequence[str] | Mapping[int, str],
    mine: np.ndarray,
) -> np.ndarray:
    """[len(items), len(history)]: whether the user's rating of each rated item raised
    each item against the catalogue, where ``pull`` would name it (> 0): the user is
    adapted once more without that rating (all of them in one batch), and the item's
    score with it, less without, must pass the median of the same difference over the
    lift's sample (:func:`lift_sample`). The pull reads text alone: 45 % of the items a
    click run named ("Because you chose A Thousand Acres") had lowered the item they
    explained, and the list without them ranked it higher. ``mine``: the user's scores
    of :func:`lift_rows`."""
    held = np.zeros(pull.shape, dtype=bool)
    strength = pull.max(axis=0, initial=0.0)
    cols = [int(c) for c in np.argsort(-strength, kind="stable") if strength[c] > 0]
    cols = sorted(cols[:NAMED_CHECKED])
    if not cols:
        return held
    k = len(items)
    rows = lift_rows(rec, items)
    for col, without in zip(cols, _scores_without_each(rec, user, cols, rows, ids), strict=True):
        effect = mine - without
        held[:, col] = effect[:k] - float(np.median(effect[k:])) > 0
    return held & (pull > 0)


def _scores_without_each(
    rec: ServedModel,
    user: UserState,
    cols: Sequence[int],
    rows: np.ndarray,
    ids: Sequence[str] | Mapping[int, str],
) -> list[np.ndarray]:
    """The scores of catalogue ``rows`` for ``user`` adapted without each of the
    history's entries ``cols`` in turn (one batch): their features kept."""
    from metarec.ensemble_run import EnsembleRecommender

    histories = [[p for n, p in enumerate(user.history) if n != c] for c in cols]
    if isinstance(rec, EnsembleRecommender):
        features = getattr(user, "features", None)
        states: Sequence[UserState] = rec.adapt_many(
            [[(str(ids[j]), r) for j, r in h] for h in histories], [features] * len(histories)
        )
    else:
        codes = user.user_features.to(rec.device)[None].expand(len(histories), -1)
        # with the user's own steps: the run's default, against a user adapted with
        # adapt(steps=20), read the steps' difference as the rating's effect
        states = rec._states(histories, codes, user.steps)
    return [row_scores(rec, state, rows) for state in states]


def lift_rows(rec: ServedModel, items: np.ndarray) -> np.ndarray:
    """``items`` then the lift's fixed sample of the catalogue (:func:`lift_sample`)."""
    return np.concatenate([np.asarray(items, dtype=np.int64), lift_sample(rec.n_items)])


def row_scores(
    rec: ServedModel, user: UserState, rows: np.ndarray, scores: np.ndarray | None = None
) -> np.ndarray:
    """``user``'s scores of catalogue ``rows`` (float64): from ``scores`` (the whole
    catalogue's) where given, else the catalogue scored whole up to
    :data:`SCORED_WHOLE` items (one head call, cheaper than by id), else the rows alone
    by id (one take of the column, not one lookup a row)."""
    if scores is not None:
        return np.asarray(scores, dtype=np.float64)[rows]
    if rec.n_items <= SCORED_WHOLE:
        return np.asarray(rec.score(user), dtype=np.float64)[rows]
    keys = rec.items["item_id"].take(rows).astype(str).tolist()
    return np.asarray(rec.score(user, keys), dtype=np.float64)


# items scored to learn how the user's ratings moved the catalogue as a whole, and the
# share of the prior's spread of scores an item must rise by past that to be theirs
LIFT_SAMPLE = 512
LIFT_SHARE = 0.05
SCORED_WHOLE = 20_000  # catalogues up to this size are scored whole (under 1 ms at 1,682)


def lifted(
    rec: ServedModel, user: UserState, items: np.ndarray, scores: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Which ``items`` the user's ratings raised against the catalogue, and the prior's
    reason for each (used for the others). An item's lift is its score for the user less
    its score with no ratings (and the user's own features, which are not ratings), taken
    past the median lift of a fixed sample of the catalogue: raised when that passes
    :data:`LIFT_SHARE` of the prior's spread of scores over the sample. A run whose
    ratings move every score by one amount (a bias model in all but level) raised
    nothing, and its list, the prior's, was said to "fit the pattern of your ratings",
    or to be there "because you liked" a film whose rating had pulled it down against
    the rest. An ensemble's prior is its members' with no ratings, blended with the
    weights of the user's number of ratings (:func:`ensemble_prior`): its weights change
    with that number, so from the blend at no ratings every item of a list a peer alone
    shaped (weight 1 on the bias model) counted as raised, and "Because you liked" was
    said of the bias model's list. ``scores``: the user's over the catalogue, where the
    caller has them (the service scores a user once for the list and its reasons)."""
    return _lifted(rec, user, items, row_scores(rec, user, lift_rows(rec, items), scores))


def _lifted(
    rec: ServedModel, user: UserState, items: np.ndarray, mine: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """:func:`lifted`, from ``mine``: the user's scores of :func:`lift_rows`."""
    from metarec.ensemble_run import EnsembleRecommender

    k = len(items)
    if isinstance(rec, EnsembleRecommender):
        prior = ensemble_prior(rec, len(user.history), getattr(user, "features", None))
    else:
        prior = prior_catalogue_scores(rec, user)
    sample = lift_sample(rec.n_items)
    rows = lift_rows(rec, items)
    lift = mine - prior[rows]
    spread = float(np.std(prior[sample])) or 1.0
    raised = lift[:k] - float(np.median(lift[k:])) > LIFT_SHARE * spread
    return raised, _prior_words(rec, items, prior)


def prepare(rec: ServedModel) -> None:
    """Do now what the first explained list after a load or a change of the catalogue
    would: the catalogue's centre and similarity floor, and the lift's sample. On
    150,000 items that list took 200 to 280 ms where the next took 40 to 70; 70 ms of
    it was this, which the change (holding the catalogue's write lock) pays instead."""
    with torch.no_grad():
        vectors = rec.model.tower.item_vectors  # as pulls reads them
        catalogue_centre(vectors)
        similar_floor(vectors)
    lift_sample(rec.n_items)


@functools.lru_cache(maxsize=8)
def lift_sample(n: int) -> np.ndarray:
    """The fixed catalogue rows whose lifts are the reference (all of a catalogue up to
    :data:`LIFT_SAMPLE`): drawn once per catalogue size, not on every served list."""
    if n <= LIFT_SAMPLE:
        rows = np.arange(n)
    else:
        rows = np.sort(np.random.default_rng(0).choice(n, LIFT_SAMPLE, replace=False))
    rows.flags.writeable = False  # shared by every caller
    return rows


def _prior_words(rec: ServedModel, items: np.ndarray, prior: np.ndarray) -> list[str]:
    """What the prior says of ``items``, from its catalogue scores ``prior``: how it ranks
    each among the items rated in training ("well liked" in the top half, by the median
    over all of them: a sample's moved 15 of 941 labels), or why no training user rated
    it."""
    popular = np.asarray(rec.popularity) > 0
    median = float(np.median(prior[popular])) if popular.any() else 0.0
    unrated = _unrated_reasons(rec, items[~popular[items]])
    return [
        unrated[int(i)] if not popular[i] else POPULAR if prior[i] >= median else LESS_LIKED
        for i in items
    ]


# users' feature codes whose no-ratings scores are kept, per run: a new set replaces them
_PRIORS_KEPT = 64


def _kept_while_unchanged(
    owner: object, runs: Sequence[Recommender], stamp: tuple[object, ...] = ()
) -> dict[Any, np.ndarray]:
    """A dict kept on ``owner`` while the ``runs``' weights, their catalogues' cached side
    (remade by any change of items, their vectors or their offsets: a fold-in) and
    ``stamp`` stay the same tensors at the same versions, compared by identity: ids
    alone were reused by the next refresh's tensors, and a fold-in's new offsets went
    unseen. An empty one otherwise."""
    tensors = tuple(
        t
        for rec in runs
        for t in (*rec.model.parameters(), *rec.model.buffers(),
                  *(rec.learner.scorer.catalogue or ()))
    )  # fmt: skip
    versions = tuple(t._version for t in tensors)
    kept = getattr(owner, "_metarec_priors", None)
    fresh = (
        kept is not None
        and kept[0] == stamp
        and len(kept[1]) == len(tensors)
        and all(a is b for a, b in zip(kept[1], tensors, strict=True))
        and kept[2] == versions
    )
    if not fresh:
        kept = (stamp, tensors, versions, {})
        owner._metarec_priors = kept  # type: ignore[attr-defined]
    return kept[3]  # type: ignore[index]


def ensemble_prior(
    rec: EnsembleRecommender, n_ratings: int = 0, features: Mapping[str, Any] | None = None
) -> np.ndarray:
    """An ensemble's catalogue scores for a user with no ratings and ``features`` (which
    are not ratings: the lift measures what the ratings did from there), its members'
    blended with the weights of ``n_ratings`` ratings (float64). The members' are kept
    per features while the ensemble and its metarec members stay as they were
    (:func:`_kept_while_unchanged`, and the ensemble's count of changes to its peers):
    every explained list scored them anew, the work of a cold request to every member."""
    from metarec.data.tasks import Task

    kept = _kept_while_unchanged(rec, rec.metarec_members(), (rec.n_items, rec.changes))
    key = tuple(sorted((str(k), repr(v)) for k, v in (features or {}).items()))
    members = kept.get(key)
    if members is None:
        none = Task.support_only([], np.zeros(0, dtype=np.float32))
        # a synthetic id, as the ensemble's own scoring names its users
        users = pd.DataFrame([{**dict(features), "user_id": "_u0"}]) if features else None
        if len(kept) >= _PRIORS_KEPT:
            kept.clear()
        scored = rec.ensemble.member_scores([none], users)[:, 0]
        members = kept[key] = scored.astype(np.float64)
    return rec.ensemble.weights_for(n_ratings) @ members


def prior_catalogue_scores(rec: Recommender, user: UserState) -> np.ndarray:
    """The catalogue's scores for ``user``'s features with no ratings (float64), kept on
    the run (by feature codes) while it stays as it was (:func:`_kept_while_unchanged`)."""
    by_codes = _kept_while_unchanged(rec, [rec], (rec.n_items,))
    codes = tuple(int(c) for c in user.user_features.flatten().tolist())
    scores = by_codes.get(codes)
    if scores is None:
        scores = np.asarray(rec.score(rec.without_ratings(user)), dtype=np.float64)
        if len(by_codes) >= _PRIORS_KEPT:
            by_codes.clear()
        by_codes[codes] = scores
    return scores


def moves_user(rec: ServedModel, history: Sequence[tuple[int, float]]) -> bool:
    """Whether ``history`` moves the user off the prior at all. A run of an implicit
    objective that takes only liked items as its support (support_positives "liked",
    binary feedback) adapts to no rating under the like threshold: a user with nothing
    but 0s of 0/1 impressions gets the prior's list, which "Fits the pattern of your
    ratings" explained as theirs."""
    if not history:
        return False
    cfg = rec.cfg
    if cfg.objective == "rating" or cfg.support_rule() != "liked":
        return True
    return any(r >= support_floor(rec) for _, r in history)


def support_floor(rec: ServedModel) -> float:
    """The rating from which the run's support counts an item as a positive: its
    training's threshold (an ensemble's primary's), where :func:`like_floor` takes an
    ensemble's own, which ``metarec ensemble`` leaves at the scale's."""
    given = getattr(rec.cfg, "like_threshold", None)
    return like_threshold_for(rec.rating_range) if given is None else float(given)


def _prior_reasons(
    rec: ServedModel, user: UserState, items: np.ndarray, scores: np.ndarray | None
) -> list[str]:
    """What the prior says of ``items`` for a user with no ratings (:func:`_prior_words`
    of ``scores``, the user's over the catalogue, or of one catalogue scoring here; none
    where no item is one training users rated)."""
    if not (np.asarray(rec.popularity)[items] > 0).any():
        return _prior_words(rec, items, np.zeros(rec.n_items))
    prior = np.asarray(rec.score(user) if scores is None else scores, dtype=np.float64)
    return _prior_words(rec, items, prior)


def _unrated_reasons(rec: ServedModel, items: np.ndarray) -> dict[int, str]:
    """ "New in the catalogue" for the items added since training, "Judged from its
    description alone" for the other items no training user rated; every one new for a
    run saved before additions were recorded, which cannot tell them apart."""
    if not len(items):
        return {}
    model = getattr(rec, "primary", rec)  # an ensemble's items are its primary run's
    added = added_items(getattr(model, "metadata", None) or {})
    ids = rec.items["item_id"].to_numpy()[items].astype(str)
    return {
        int(i): NEW_ITEM if added is None or item in added else FROM_TEXT
        for i, item in zip(items, ids, strict=True)
    }


def _indices(items: object) -> np.ndarray:
    """``items`` as a 1-D int64 array of catalogue indices, or a DataError: 1.7 was read
    as item 1 without a word, a number or a nested list a bare TypeError."""
    try:
        raw = np.asarray(items)
    except (TypeError, ValueError):
        raw = np.asarray(None)
    if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu"):
        raise DataError(f"explain: items: expected a list of catalogue indices, got {items!r:.60}")
    return raw.astype(np.int64)


# explicit direction marks: a title's unclosed right-to-left override ran on into the
# reason's own words ("Because you liked Alpha dna (5991) yrotS yoT")
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _isolated(title: str) -> str:
    """``title`` without its direction marks and set apart (FSI ... PDI) where it held
    any (a mark of its own could close the isolate early); any other title as it is."""
    if not _BIDI_CONTROLS.intersection(title):
        return title
    return "\u2068" + "".join(c for c in title if c not in _BIDI_CONTROLS) + "\u2069"


def reason_text(
    because: Sequence[tuple[str, str, float]], *, chose: bool = False, feedback: bool = False
) -> str:
    """The reason's words; ``chose``: a one-value run, whose users chose items and
    rated none ("Because you liked" and "your ratings" said what they never did);
    ``feedback``: a run of an implicit objective, whose users' yes is a liked item but
    whose clicks and skips are not "ratings"."""
    titles = [_isolated(t) for _, t, _ in because]
    if not titles:
        return FROM_CHOICES if chose else FROM_FEEDBACK if feedback else FROM_RATINGS
    verb = "chose" if chose else "liked"
    if len(titles) == 1:
        return f"Because you {verb} {titles[0]}"
    return f"Because you {verb} {', '.join(titles[:-1])} and {titles[-1]}"


def explain(
    rec: ServedModel, user: UserState, items: ItemKeys, *, top: int = 2
) -> list[Explanation]:
    """Explanations for items given by id or exact title."""
    keys = item_keys(items, "explain: items")  # "12" was explained as items 1 and 2
    return explain_indices(rec, user, [rec.resolve(i) for i in keys or []], top=top)


def recommend_with_reasons(
    rec: ServedModel,
    user: UserState,
    k: int | np.integer[Any] = 10,
    *,
    exclude_seen: bool = True,
    candidates: ItemKeys | None = None,
    top: int = 2,
) -> pd.DataFrame:
    """``rec.recommend`` plus a ``reason`` column."""
    frame = rec.recommend(user, k, exclude_seen=exclude_seen, candidates=candidates)
    reasons = explain_indices(rec, user, [rec.item_index[i] for i in frame["item_id"]], top=top)
    return frame.assign(reason=[e.reason for e in reasons])

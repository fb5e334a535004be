"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI docs).

Length limits on ids and text are declared here so that a request breaking
them fails validation (422) naming the field before any work is done.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from metarec.data.timestamps import MAX_EPOCH_S
from metarec.service.feedback import EventType
from metarec.service.store import FUTURE_SLACK_S, ID_LENGTH

ID = Annotated[str, Field(min_length=1, max_length=ID_LENGTH)]
# epoch seconds of 0001-01-01 and 9999-12-31T23:59:59 UTC: what a date-time can hold
EPOCH_RANGE = (-62_135_596_800, MAX_EPOCH_S)
_NUMERIC = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _a_number_in_text(value: str) -> bool:
    """Read as a number by pydantic or by Python's float(): "1_700_000_000", "nan" and
    "Infinity" reached the epoch-seconds branch, which float() takes them by."""
    try:
        float(value)
    except ValueError:
        return bool(_NUMERIC.fullmatch(value))
    return True


# a JSON integer a double (and so every JSON reader) holds exactly
INT_RANGE = 2**53


def _some_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must have a character other than spaces")
    return value


def no_control(value: str, *, allowed: str = "\t\n\r") -> str:
    """No control character (a NUL, an escape) but ``allowed``: invisible in every
    listing, and a NUL ends the string for C readers of the store; in text, tabs and
    newlines are text."""
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c not in allowed), None)
    if bad is not None:
        raise ValueError(f"must not contain the control character U+{ord(bad):04X}")
    return value


def _a_number(value: Any) -> Any:
    # pydantic reads true as 1.0 and "5" as 5: a client's boolean or string is a bug to
    # report, not a rating (timestamps refuse a number in a string alike)
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, str):
        raise ValueError("must be a JSON number, not a string")
    return value


Text = Annotated[str, Field(max_length=10_000), AfterValidator(no_control)]


def _addressable(value: str) -> str:
    """A new user or item id: it appears in URL paths (so no '/'), and is compared as
    sent (so no surrounding spaces, which the candidates list strips); no control
    characters, not even tabs, which no one types into a path."""
    if "/" in value:
        raise ValueError("must not contain '/': ids appear in URL paths")
    if value != value.strip():
        raise ValueError("must not start or end with a space")
    # "ab" and "a\u200bb", or "café" composed and decomposed, look the same in every
    # listing and log, yet would be two users. Joiners (U+200C, U+200D) stay: Persian
    # and Indic words and emoji sequences need them.
    if value in (".", ".."):
        raise ValueError(
            "must not be '.' or '..': clients resolve those path segments away, so the id "
            "could never be reached in a URL"
        )
    hidden = next((c for c in value if _invisible(c)), None)
    if hidden is not None:
        raise ValueError(f"must not contain the invisible character U+{ord(hidden):04X}")
    stray = _stray_variation_selector(value)
    if stray is not None:
        raise ValueError(
            f"must not contain the variation selector U+{ord(stray):04X} after a character "
            "that takes none: it draws nothing there"
        )
    spaced = next((c for c in value if c != " " and unicodedata.category(c) == "Zs"), None)
    if spaced is not None:
        raise ValueError(
            f"must not contain U+{ord(spaced):04X} ({unicodedata.name(spaced, 'a space')}), "
            "which looks like a plain space: use ' '"
        )
    if unicodedata.normalize("NFC", value) != value:
        raise ValueError(
            "must be in Unicode NFC form (an accent composed with its letter), as it "
            "would otherwise look like another id: send unicodedata.normalize('NFC', id)"
        )
    return no_control(value, allowed="")


# the combining grapheme joiner, the Hangul and Khmer fillers and the Braille blank:
# letters, marks or symbols that draw nothing, outside the format characters
# _invisible finds by category
_INVISIBLE = frozenset("\u034f\u115f\u1160\u3164\uffa0\u17b4\u17b5\u2800")


# emoji that take U+FE0F but are not symbols by category: double exclamation and
# exclamation question marks, information source, wavy dash, part alternation mark
_EMOJI_OF_OTHER_CATEGORIES = frozenset("\u203c\u2049\u2139\u3030\u303d")


def _is_variation_selector(c: str) -> bool:
    return "\ufe00" <= c <= "\ufe0f" or "\U000e0100" <= c <= "\U000e01ef"


def _stray_variation_selector(value: str) -> str | None:
    """A variation selector where it draws nothing: first, or after a character that
    takes none ("a\ufe0fb" looks like "ab"). It stays after a symbol ("\u2764\ufe0f", a
    red heart), an ideograph or other letter without case (CJK ideographic variation
    sequences), and in a keycap ("1\ufe0f\u20e3")."""
    for i, c in enumerate(value):
        if not _is_variation_selector(c):
            continue
        before = unicodedata.category(value[i - 1]) if i else ""
        keycap = i and value[i - 1] in "0123456789#*" and value[i + 1 : i + 2] == "\u20e3"
        emoji = i and value[i - 1] in _EMOJI_OF_OTHER_CATEGORIES
        if before not in ("So", "Sm", "Lo") and not keycap and not emoji:
            return c
    return None


def _invisible(c: str) -> bool:
    """Draws nothing: a format character (the zero-width space, word joiner, BOM, soft
    hyphen, every direction mark, embedding, override and isolate, the tag characters
    U+E0020-E007F) but the joiners U+200C and U+200D, which Persian, Indic words and
    emoji sequences need; a line or paragraph separator; or one of the set above."""
    if c in _INVISIBLE:
        return True
    kind = unicodedata.category(c)
    return (kind == "Cf" and c not in "\u200c\u200d") or kind in ("Zl", "Zp")


def _no_comma(value: str) -> str:
    if "," in value:
        raise ValueError("must not contain ',': candidates lists are comma-separated")
    return value


Title = Annotated[
    str,
    Field(min_length=1, max_length=500),
    AfterValidator(_some_text),
    AfterValidator(no_control),
]
NewUserId = Annotated[ID, AfterValidator(_addressable)]
NewItemId = Annotated[ID, AfterValidator(_addressable), AfterValidator(_no_comma)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: str
    # the model's rating scale: [low, high]
    rating_range: tuple[float, float]
    # the rating each of a client's stars posts, lowest first (five over the scale; one
    # or two where the model reads no more: see metarec.service.feedback.star_values)
    stars: list[float]
    # the rating from which the model counts an item as liked
    like_threshold: float


class ItemOut(BaseModel):
    item_id: str
    title: str


class ItemList(BaseModel):
    items: list[ItemOut]


class ItemDetail(ItemOut):
    text: str
    n_ratings: int = Field(
        description="ratings of the item by the model's training users (0 for items none of "
        "them rated: items added since it was trained, and a P1 run's held-out new items)"
    )


def _a_genre(value: str) -> str:
    """One genre of a list: '|' separates genres in the item's stored text, so one
    holding it would come back as two."""
    if "|" in value:
        raise ValueError("must not contain '|': give each genre as its own list entry")
    return value


# as a title, shorter, and without the separator of the stored "A|B" form (Field's
# length comes before the checks: after them, pydantic words it as a count of "items")
Genre = Annotated[
    str,
    Field(min_length=1, max_length=100),
    AfterValidator(_some_text),
    AfterValidator(no_control),
    AfterValidator(_a_genre),
]
Genres = Annotated[str, Field(max_length=1000), AfterValidator(no_control)]  # "A|B"


def _joined_within_genres_limit(genres: list[str]) -> list[str]:
    # a list is stored as the "A|B" string, which has its limit: 2,000 one-letter
    # genres passed as a list where their string was refused
    joined = len("|".join(genres))
    if joined > 1000:
        raise ValueError(f"joined with '|' these genres are {joined:,} characters; at most 1,000")
    return genres


GenreList = Annotated[
    list[Genre], Field(max_length=100), AfterValidator(_joined_within_genres_limit)
]


class ItemIn(_Strict):
    item_id: NewItemId
    title: Title
    text: Text | None = Field(None, description="free description, appended to the encoder text")
    genres: GenreList | Genres | None = None
    year: Annotated[int, Field(ge=1, le=9999)] | None = None  # 0 is no year to the data layer

    _year_a_number = field_validator("year", mode="before")(_a_number)


class ItemsIn(_Strict):
    # fail_fast: a long list of bad entries stops at the first (each one's errors were
    # built and described on the event loop)
    items: list[ItemIn] = Field(min_length=1, fail_fast=True)


class ItemsOut(BaseModel):
    added: int
    updated: int
    unchanged: int  # sent again as the model holds them: left as they were
    n_items: int


class RatingIn(_Strict):
    item_id: ID
    rating: float

    _no_boolean = field_validator("rating", mode="before")(_a_number)


def _plain_feature(value: Any) -> Any:
    """A feature value as JSON and the feature encoder both hold it: NaN, infinities and
    integers past a double's would survive neither. Checked per value, so an error's
    location names the key (``features.age``), as the model's own check does."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > 200:
            raise ValueError("longer than 200 characters")
        # a lone surrogate never gets here: json_body refuses it with the body
    elif isinstance(value, int):
        if abs(value) > INT_RANGE:
            raise ValueError("integers must lie within ±2^53")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"must be finite (got {value})")
    else:
        raise ValueError("must be a string, a number, a boolean or null")
    return value


# Any, so that the check above words the refusal; the schema says what it takes, where
# "additionalProperties: true" had Swagger's "Try it out" send {} and be refused
FeatureValue = Annotated[
    Any,
    AfterValidator(_plain_feature),
    WithJsonSchema({"type": ["string", "number", "boolean", "null"]}),
]


class UserIn(_Strict):
    user_id: NewUserId
    features: dict[Annotated[str, Field(max_length=100)], FeatureValue] = Field(
        default_factory=dict,
        # {} where an example is drawn: a run without user features refuses any, and
        # Swagger's "Try it out" sent {"additionalProp1": {}}, which every run refuses
        examples=[{}],
        description="the user-file columns the served run was trained with, e.g. "
        '{"age": 25, "gender": "F"} for ml-100k; a run trained without them takes none',
    )
    ratings: list[RatingIn] = Field(default_factory=list, fail_fast=True)

    @field_validator("ratings")
    @classmethod
    def _each_item_once(cls, ratings: list[RatingIn]) -> list[RatingIn]:
        # two first ratings of one item: which counts would depend on storage order
        seen: dict[str, int] = {}
        for n, r in enumerate(ratings):
            if r.item_id in seen:
                raise ValueError(
                    f"item {r.item_id!r} is rated twice, at ratings[{seen[r.item_id]}] and "
                    f"ratings[{n}]; give each item once"
                )
            seen[r.item_id] = n
        return ratings


class UserCreated(BaseModel):
    user_id: str
    n_events: int


class UserErased(BaseModel):
    user_id: str
    events_erased: int = Field(description="the user's stored events deleted with them")
    fold_in: Literal["unaffected", "redone", "pending", "none"] = Field(
        description="what the served model learned from their ratings: 'unaffected' (they "
        "had no events), 'redone' (the run was reloaded here to fold in without them, and "
        "every other server process reloads at its next request), 'pending' (announced to "
        "every process, but this one could not reload yet: it tries again, as after any "
        "change it cannot load), 'none' (the served model never folds in feedback: an "
        "ensemble, or a run whose scores are not ratings)"
    )


class HistoryEntry(BaseModel):
    # the client's idempotency key, so a client can match what it sent to what is stored
    event_id: str
    item_id: str
    title: str | None
    type: str
    value: float | None
    rating: float | None = Field(
        description="the rating this event stands for in adaptation (null: a dislike or "
        "skip on a run whose ratings are all one value, which leaves the item out)"
    )
    timestamp: float


class UserOut(BaseModel):
    user_id: str
    features: dict[str, Any]
    n_events: int
    history: list[HistoryEntry] = Field(description="the latest events, oldest first")


# the ids the server gives a new user's initial ratings (POST /v1/users): a client's
# own event under this prefix read as one of them in the user's history
INITIAL_EVENT_PREFIX = "init-"


def _not_reserved(event_id: str) -> str:
    if event_id.startswith(INITIAL_EVENT_PREFIX):
        raise ValueError(
            f"ids starting {INITIAL_EVENT_PREFIX!r} are the server's, for the ratings a "
            "user is created with; choose another"
        )
    return event_id


EventId = Annotated[
    ID, AfterValidator(lambda v: no_control(v, allowed="")), AfterValidator(_not_reserved)
]


class EventIn(_Strict):
    event_id: EventId = Field(description="client idempotency key: a retried id is stored once")
    item_id: ID
    type: EventType
    value: float | None = Field(None, description="required for type=rating")
    timestamp: datetime | float | None = Field(
        None, description="ISO 8601 (UTC if no zone) or epoch seconds; default: arrival time"
    )

    _no_boolean_value = field_validator("value", mode="before")(_a_number)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a date-time or epoch seconds, not a boolean")
        if isinstance(value, str) and _a_number_in_text(value):
            # pydantic reads "1700000000000" as milliseconds and 1700000000000 not at all:
            # one number, two meanings; epoch seconds come as a JSON number
            raise ValueError(
                "a number in a string: send epoch seconds as a JSON number, or an ISO 8601 "
                "date-time"
            )
        return value

    @field_validator("timestamp")
    @classmethod
    def _a_real_time(cls, value: datetime | float | None) -> datetime | float | None:
        # NaN or an infinity would be stored and then sort before or after every other
        # event for good, pinning the item's rating; "latest wins" needs real times
        if value is None:
            return value
        if isinstance(value, datetime):
            # 9999-12-31T23:59:59-14:00 is in year 10000 in UTC, where times are kept
            try:
                seconds = _utc(value).timestamp()
            except (OverflowError, ValueError):
                seconds = math.inf
            if not EPOCH_RANGE[0] <= seconds <= EPOCH_RANGE[1]:
                raise ValueError("must lie within years 1 to 9999 in UTC")
        else:
            try:
                seconds = float(value)
            except OverflowError:  # an integer past a double's range
                seconds = math.inf
            if not (math.isfinite(seconds) and EPOCH_RANGE[0] <= seconds <= EPOCH_RANGE[1]):
                raise ValueError("epoch seconds must be a finite number within years 1 to 9999")
        now = time.time()
        if seconds > now + FUTURE_SLACK_S:
            clock = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
            naive = isinstance(value, datetime) and value.tzinfo is None
            raise ValueError(
                f"lies {seconds - now:,.0f} s ahead of the server's clock ({clock}); "
                f"at most {FUTURE_SLACK_S:g} s is taken, as the latest event per item "
                "wins (leave it out to use the arrival time)"
                + ("; a date-time without a zone is read as UTC: add its offset (+09:00, say)"
                   if naive else "")
            )  # fmt: skip
        return value

    @model_validator(mode="after")
    def _rating_has_value(self) -> EventIn:
        if self.type == "rating" and self.value is None:
            raise ValueError("value: required for a rating event")
        if self.type != "rating" and self.value is not None:
            # it would be stored and shown, yet the event stands for its type's rating
            raise ValueError(
                f"value: only a rating event takes one; a {self.type} stands for a "
                "rating of its own (see the feedback table)"
            )
        return self

    def epoch(self) -> float | None:
        """Seconds since the epoch; a date-time without a zone is read as UTC."""
        ts = self.timestamp
        if ts is None or isinstance(ts, float | int):
            return None if ts is None else float(ts)
        return _utc(ts).timestamp()


def _utc(moment: datetime) -> datetime:
    """A date-time without a zone is read as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class EventsIn(_Strict):
    """``{"events": [...]}``; a single event object is accepted as well."""

    events: list[EventIn] = Field(min_length=1, fail_fast=True)
    # sent as one bare event: its fields are named as sent ("value"), not "events[0].value"
    _bare: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _single(cls, data: Any, handler: ModelWrapValidatorHandler[EventsIn]) -> EventsIn:
        bare = isinstance(data, dict) and "events" not in data
        model = handler({"events": [data]} if bare else data)
        model._bare = bare
        return model

    def where(self, n: int) -> str:
        """How the client names the ``n``-th event's fields: ``events[2].`` or nothing."""
        return "" if self._bare else f"events[{n}]."


class EventsOut(BaseModel):
    accepted: int
    duplicates: int


class Recommendation(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float
    # the rating the user most plausibly gives (a scale level); null for ranking models,
    # and always sent (required, so generated clients do not type it as absent)
    rating: float | None
    # null where the request asked for none (reasons=false); required, as rating is
    reason: str | None


class Recommendations(BaseModel):
    user_id: str
    model: str
    n_events: int
    items: list[Recommendation]


class NoFields(_Strict):
    """A body that may be sent (``{}``) but holds nothing: a field is refused rather
    than ignored."""


class ReloadIn(_Strict):
    run: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="run folder; default (null or left out): the one being served"
    )


class ReloadOut(BaseModel):
    model: str
    n_items: int


class FoldInOut(BaseModel):
    model: str
    items_updated: int
    ratings_used: int
    shrinkage: float | None = Field(
        description="the pseudo-count that pulled the items' offsets toward 0, chosen by "
        "leave-one-rating-out; null where no rating of such an item was stored"
    )

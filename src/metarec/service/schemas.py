"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI docs).

Length limits on ids and text are declared here so that a request breaking
them fails validation (422) naming the field before any work is done.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from metarec.service.feedback import EventType
from metarec.service.store import ID_LENGTH

ID = Annotated[str, Field(min_length=1, max_length=ID_LENGTH)]
Title = Annotated[str, Field(min_length=1, max_length=500)]
Text = Annotated[str, Field(max_length=10_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str


class ItemOut(BaseModel):
    item_id: str
    title: str


class ItemList(BaseModel):
    items: list[ItemOut]


class ItemDetail(ItemOut):
    text: str
    n_ratings: int = Field(description="ratings the model was trained on (0 for added items)")


class ItemIn(_Strict):
    item_id: ID
    title: Title
    text: Text | None = Field(None, description="free description, appended to the encoder text")
    genres: (
        list[Annotated[str, Field(max_length=100)]] | Annotated[str, Field(max_length=1000)] | None
    ) = None
    year: Annotated[int, Field(ge=0, le=9999)] | None = None


class ItemsIn(_Strict):
    items: list[ItemIn] = Field(min_length=1)


class ItemsOut(BaseModel):
    added: int
    updated: int
    n_items: int


class RatingIn(_Strict):
    item_id: ID
    rating: float


class UserIn(_Strict):
    user_id: ID
    features: dict[Annotated[str, Field(max_length=100)], Any] = Field(default_factory=dict)
    ratings: list[RatingIn] = Field(default_factory=list)


class UserCreated(BaseModel):
    user_id: str
    n_events: int


class HistoryEntry(BaseModel):
    item_id: str
    title: str | None
    type: str
    value: float | None
    rating: float = Field(description="the rating this event stands for in adaptation")
    timestamp: float


class UserOut(BaseModel):
    user_id: str
    features: dict[str, Any]
    n_events: int
    history: list[HistoryEntry] = Field(description="the latest events, oldest first")


class EventIn(_Strict):
    event_id: ID = Field(description="client idempotency key: a retried id is stored once")
    item_id: ID
    type: EventType
    value: float | None = Field(None, description="required for type=rating")
    timestamp: datetime | float | None = Field(
        None, description="ISO 8601 (UTC if no zone) or epoch seconds; default: arrival time"
    )

    @model_validator(mode="after")
    def _rating_has_value(self) -> EventIn:
        if self.type == "rating" and self.value is None:
            raise ValueError("value: required for a rating event")
        return self

    def epoch(self) -> float | None:
        """Seconds since the epoch; a date-time without a zone is read as UTC."""
        ts = self.timestamp
        if ts is None or isinstance(ts, float | int):
            return None if ts is None else float(ts)
        return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()


class EventsIn(_Strict):
    """``{"events": [...]}``; a single event object is accepted as well."""

    events: list[EventIn] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _single(cls, data: Any) -> Any:
        if isinstance(data, dict) and "events" not in data:
            return {"events": [data]}
        return data


class EventsOut(BaseModel):
    accepted: int
    duplicates: int


class Recommendation(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float
    # the rating the user most plausibly gives (a scale level); null for ranking models
    rating: float | None = None
    reason: str


class Recommendations(BaseModel):
    user_id: str
    model: str
    n_events: int
    items: list[Recommendation]


class ReloadIn(_Strict):
    run: str | None = Field(None, description="run folder; default: the one being served")


class ReloadOut(BaseModel):
    model: str
    n_items: int


class FoldInOut(BaseModel):
    model: str
    items_updated: int
    ratings_used: int
    shrinkage: float

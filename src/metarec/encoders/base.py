"""The encoder contract, and building encoders by name or from a saved spec.

An encoder maps item texts to L2-normalised float32 vectors. Its ``id`` names
everything that changes its output (model, version, settings, fitted state),
because :mod:`metarec.encoders.cache` keys stored vectors by it.

Concrete encoders are imported lazily here: loading sentence-transformers takes
seconds, and a TF-IDF user should not pay for it.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from metarec.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Encoder",
    "FittableEncoder",
    "StatefulEncoder",
    "check_texts",
    "encoder_from_config",
    "encoder_state_tensors",
    "make_encoder",
    "needs_fit",
]


@runtime_checkable
class Encoder(Protocol):
    """Item text → vector. Rows returned by :meth:`encode` have unit L2 norm."""

    # Properties rather than plain attributes so read-only implementations conform.
    @property
    def id(self) -> str:
        """Stable identifier of everything that affects the output; a cache key."""
        ...

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        """Return a float32 array of shape ``[len(texts), dim]``."""
        ...

    def to_config(self) -> dict[str, Any]:
        """JSON-able spec from which :func:`encoder_from_config` rebuilds the encoder."""
        ...


@runtime_checkable
class StatefulEncoder(Encoder, Protocol):
    """An encoder whose spec needs tensors beside its JSON config to be rebuilt."""

    def state_tensors(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class FittableEncoder(Encoder, Protocol):
    """An encoder that must see a corpus before its ``id`` is defined."""

    @property
    def is_fitted(self) -> bool: ...

    def fit(self, texts: Sequence[str]) -> Any: ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, refusing a bare string or non-string items."""
    # A bare str is a Sequence[str] too; encoding it per character is never intended.
    if isinstance(texts, (str, bytes)):
        raise DataError("texts: expected a list of strings, got a single string")
    try:
        out = list(texts)
    except TypeError:
        raise DataError(f"texts: expected a list of strings, got {texts!r:.60}") from None
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise DataError(f"texts[{i}]: expected a string, got {type(t).__name__} {t!r:.40}")
    return out


# isinstance() against these protocols reads every property on Python < 3.12,
# and SentenceEncoder.dim may load a model, so the helpers below look up
# only the one attribute they need.


def encoder_state_tensors(encoder: Encoder) -> dict[str, torch.Tensor]:
    """Tensors needed with ``encoder.to_config()`` to rebuild it ({} if stateless)."""
    method = getattr(encoder, "state_tensors", None)
    return dict(method()) if callable(method) else {}


def needs_fit(encoder: Encoder) -> bool:
    """Whether ``encoder`` must be fitted on a corpus before it has a usable id."""
    return getattr(encoder, "is_fitted", True) is False and callable(getattr(encoder, "fit", None))


def _sentence_builder() -> Callable[..., Encoder]:
    from metarec.encoders.sentence import SentenceEncoder

    return SentenceEncoder


def _tfidf_builder() -> Callable[..., Encoder]:
    from metarec.encoders.tfidf import TfidfSvdEncoder

    return TfidfSvdEncoder


_DEFAULT_SENTENCE_ALIASES = frozenset({"minilm", "sentence"})


def make_encoder(name: str, *, device: str | None = None, **kw: Any) -> Encoder:
    """Build an encoder by name.

    ``"minilm"`` / ``"sentence"`` give the default sentence encoder
    (all-MiniLM-L6-v2, offline copy), ``"tfidf"`` a :class:`TfidfSvdEncoder`;
    any other name is a sentence-transformers model name or local path. ``kw``
    go to the encoder's constructor; ``device`` (a training run's, say) goes to a
    sentence encoder only, as TF-IDF runs in numpy.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"encoder name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    builtin = {"tfidf", *_DEFAULT_SENTENCE_ALIASES}
    given = name.strip()
    # a path is read as a path before the built-in names and the typo check:
    # "./minilm" and "minilm2/" are folders, not misspellings of "minilm"
    written_as_path = given.startswith(("/", ".", "~")) or "/" in given or "\\" in given
    folder_here = Path(given).expanduser().is_dir()
    if key in builtin and folder_here and not written_as_path:
        # the built-in wins (a run folder named tfidf must not change what tfidf means),
        # but a user who meant the folder hears how to name it
        warnings.warn(
            f"encoder {name!r} is the built-in {key!r}, not the folder {given!r} here; "
            f"write ./{given} for the folder",
            stacklevel=2,
        )
    if written_as_path or (folder_here and key not in builtin):
        if "model" in kw:
            raise ConfigError(f"encoder {name!r} names the model already; do not also pass model=")
        kw = {"device": device, **kw} if device is not None else kw
        return _construct(_sentence_builder(), name, {"model": given, **kw})
    if key == "tfidf":
        return _construct(_tfidf_builder(), "tfidf", kw)
    near = difflib.get_close_matches(key, ["tfidf", *sorted(_DEFAULT_SENTENCE_ALIASES)], 1, 0.85)
    if near and near[0] != key:
        # read as a model name, a typo would fail minutes later, in a model hub lookup
        raise ConfigError(
            f"encoder {name!r}: did you mean {near[0]!r}? (other names are read as "
            "sentence-transformers models: a hub name or a local folder)"
        )
    builder = _sentence_builder()
    if device is not None:
        kw = {"device": device, **kw}
    if key in _DEFAULT_SENTENCE_ALIASES:
        return _construct(builder, name, kw)
    if "model" in kw:
        raise ConfigError(f"encoder {name!r} names the model already; do not also pass model=")
    return _construct(builder, name, {"model": name.strip(), **kw})


def _construct(builder: Callable[..., Encoder], name: str, kw: dict[str, Any]) -> Encoder:
    # Turn a misspelt option into a ConfigError listing the valid ones, rather
    # than a TypeError from deep inside the call.
    params = inspect.signature(builder).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown:
        valid = ", ".join(p for p in params if p != "self")
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for encoder {name!r}; valid: {valid}"
        )
    return builder(**kw)


def folder_named(name: str) -> str | None:
    """The absolute folder an encoder name given here reads (``./my-model``), or None
    for a model name: what a run's config records, so that training it again from
    another working directory, or ``retrain --set encoder=`` with the folder written
    in full, names the same model."""
    given = name.strip()
    if given.lower() in {"tfidf", *_DEFAULT_SENTENCE_ALIASES}:
        written_as_path = given.startswith(("/", ".", "~")) or "/" in given or "\\" in given
        if not written_as_path:  # the built-in wins over a folder of that name here
            return None
    folder = Path(given).expanduser()
    return str(folder.resolve()) if folder.is_dir() else None


def _id_parts(encoder_id: str) -> tuple[str, str, str | None, str]:
    """``kind:name@weights:limit`` as (kind, name, weights or None, limit)."""
    kind, _, rest = encoder_id.partition(":")
    label, _, limit = rest.rpartition(":")
    name, at, weights = label.rpartition("@")  # a folder's own name may hold an @
    return (kind, name, weights, limit) if at else (kind, label, None, limit)


def same_model(saved: str, current: str) -> bool:
    """Whether a saved encoder id names the model the rebuilt one is: the same weights
    (the hash after ``@``) and input limit, whatever the folder is called now (a model
    folder moved or renamed is the same model). Runs saved before 2026-12-02 named the
    bundled or a hub model without its weights (``sentence:all-MiniLM-L6-v2:max128``);
    those match any weights of that name."""
    if saved == current:
        return True
    kind, name, weights, limit = _id_parts(saved)
    now_kind, now_name, now_weights, now_limit = _id_parts(current)
    if (kind, limit) != (now_kind, now_limit):
        return False
    return name == now_name if weights is None else weights == now_weights


def _unknown_weights(saved: str, current: str) -> bool:
    """Whether ``current`` names ``saved``'s model without its weights (no ``@``): a hub
    model not yet in this machine's cache, whose revision is known once it downloads.
    Unknown is not changed; another name, kind or input limit is."""
    kind, name, _, limit = _id_parts(saved)
    return _id_parts(current) == (kind, name, None, limit)


def weights_unknown(encoder_id: str) -> bool:
    """Whether ``encoder_id`` names a hub model without its revision (one not yet
    downloaded): the encoding cache neither reads nor keeps vectors under it, as the
    revision the download brings may not be the one an earlier download did."""
    kind, _, weights, _ = _id_parts(encoder_id)
    return kind == "sentence" and weights is None


def changed_model(
    saved: object, current: str, former: Callable[[], Sequence[str]] | None = None
) -> str | None:
    """Why an encoder rebuilt from a run's saved config is not the model the run saved
    (None: it is): its weights changed since, so new items' vectors would not be the
    run's kind. ``former``: the ids earlier versions gave the current model (an
    encoder's ``former_ids``), asked for only when ``saved`` is not ``current``."""
    if saved is None or same_model(str(saved), current) or _unknown_weights(str(saved), current):
        return None
    if former is not None and any(same_model(str(saved), old) for old in former()):
        return None
    return (
        f"its model changed since the run was saved (saved {str(saved)!r}, now {current!r}), "
        "so new items would be encoded by other weights than the run's catalogue was"
    )


def encoder_from_config(
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor] | None = None,
    *,
    device: str | None = None,
) -> Encoder:
    """Rebuild an encoder from ``encoder.to_config()`` (and its state tensors);
    ``device`` is where a sentence encoder runs (saved configs leave it out).

    Warns when the rebuilt encoder's ``id`` differs from the saved one: the
    underlying model changed, so new vectors will not match saved ones (a run refuses
    to add items then: :meth:`metarec.recommender.Recommender.encoder`).
    """
    if not isinstance(config, Mapping):
        raise ModelError(f"encoder config must be a mapping, got {type(config).__name__}")
    kind = config.get("type")
    encoder: Encoder
    if kind == "sentence":
        from metarec.encoders.sentence import SentenceEncoder

        encoder = SentenceEncoder.from_config(config, device=device)
    elif kind == "tfidf":
        from metarec.encoders.tfidf import TfidfSvdEncoder

        encoder = TfidfSvdEncoder.from_state(config, tensors or {})
    else:
        raise ModelError(
            f"unknown encoder type {kind!r} in saved config; expected 'sentence' or 'tfidf'"
        )
    changed = changed_model(config.get("id"), encoder.id, getattr(encoder, "former_ids", None))
    if changed is not None:
        warnings.warn(f"encoder: {changed}", RuntimeWarning, stacklevel=2)
    return encoder

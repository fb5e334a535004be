"""TF-IDF + truncated-SVD item encoder: a fast baseline that needs no model download.

The fitted state (vocabulary, idf weights, SVD components) is kept as plain
JSON and one tensor so a saved recommender never needs pickle. Transforming is
done here rather than by the fitted sklearn objects, so an encoder rebuilt
from saved state computes exactly what the original did.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from metarec.encoders.base import check_texts
from metarec.errors import ConfigError, DataError, ModelError
from metarec.values import is_whole

if TYPE_CHECKING:
    import torch
    from sklearn.feature_extraction.text import CountVectorizer

__all__ = ["TfidfSvdEncoder"]

_FORMAT = 1
# sklearn's default, pinned so a saved encoder tokenises the same way even if
# the default ever changes.
_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
# the most frequent terms kept: unbounded, a catalogue's ids, SKUs and names grew the
# vocabulary with it (1.5 million terms, a 600 MB run at 500,000 items). MovieLens'
# texts have far fewer, so what they fit is unchanged
MAX_FEATURES = 2**18


class TfidfSvdEncoder:
    """TF-IDF over word n-grams, reduced to ``dim`` dimensions by truncated SVD.

    Fits on the first corpus it sees (:meth:`fit`, or implicitly on the first
    :meth:`encode`). A small corpus allows fewer than ``dim`` SVD components;
    the rest are zero-padded so ``dim`` never changes. Rows are unit-norm,
    except all-zero rows for texts sharing no term with the fitted vocabulary.
    """

    def __init__(
        self,
        dim: int = 64,
        *,
        seed: int = 0,
        min_df: int | float = 1,
        ngram_range: tuple[int, int] = (1, 2),
        max_features: int | None = MAX_FEATURES,
    ) -> None:
        if not is_whole(dim) or dim < 1:
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        if not is_whole(seed) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        if not (
            (is_whole(min_df) and min_df >= 1)
            or (isinstance(min_df, float | np.floating) and 0.0 <= min_df <= 1.0)
        ):
            raise ConfigError(
                f"min_df must be an integer >= 1 (documents) or a float in [0, 1] "
                f"(fraction), got {min_df!r}"
            )
        try:
            lo, hi = (int(n) for n in ngram_range)
        except (TypeError, ValueError):
            raise ConfigError(f"ngram_range must be two integers, got {ngram_range!r}") from None
        if not 1 <= lo <= hi:
            raise ConfigError(f"ngram_range must satisfy 1 <= low <= high, got {ngram_range!r}")
        if max_features is not None and (not is_whole(max_features) or max_features < 1):
            raise ConfigError(
                f"max_features must be a positive integer or None, got {max_features!r}"
            )
        self._dim = int(dim)
        self.seed = int(seed)
        self.min_df: int | float = int(min_df) if is_whole(min_df) else float(min_df)
        self.ngram_range = (lo, hi)
        self.max_features = None if max_features is None else int(max_features)
        self._vocab: dict[str, int] | None = None
        self._idf: npt.NDArray[np.float64] | None = None
        self._components: npt.NDArray[np.float32] | None = None
        self._counter: CountVectorizer | None = None
        self._state_hash: str | None = None

    # -- contract -----------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def is_fitted(self) -> bool:
        return self._state_hash is not None

    @property
    def id(self) -> str:
        """``tfidf-svd:d<dim>:<hash of fitted state>``; ends in ``unfitted`` before fitting.

        An unfitted id does not identify an output (that depends on the corpus
        fitted later), so it must not be used as a cache key; cached_encode
        fits first. It is not an error, because runtime protocol checks read
        ``id`` on Python < 3.12.
        """
        return f"tfidf-svd:d{self._dim}:{self._state_hash or 'unfitted'}"

    def fit(self, texts: Sequence[str]) -> TfidfSvdEncoder:
        """Learn vocabulary, idf weights and SVD components from ``texts``."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        items = check_texts(texts)
        vectorizer = TfidfVectorizer(
            lowercase=True,
            token_pattern=_TOKEN_PATTERN,
            ngram_range=self.ngram_range,
            min_df=self.min_df,
            max_features=self.max_features,
            dtype=np.float64,
        )
        try:
            vectorizer.fit(items)
        except ValueError as e:  # empty vocabulary, or min_df prunes every term
            raise DataError(
                f"cannot fit TF-IDF on {len(items)} text(s) with min_df={self.min_df!r}: {e}"
            ) from e
        vocab = {str(term): int(i) for term, i in vectorizer.vocabulary_.items()}
        idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        counter = self._make_counter(vocab)
        weighted = self._weigh(counter, idf, items)
        self._set_state(vocab, idf, self._fit_components(weighted), counter)
        return self

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        items = check_texts(texts)
        if not self.is_fitted:
            if not items:
                return np.zeros((0, self._dim), dtype=np.float32)
            self.fit(items)
        assert self._counter is not None and self._idf is not None  # set together by fit
        assert self._components is not None
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        weighted = self._weigh(self._counter, self._idf, items)
        # the columns of the texts' terms alone: the whole of the components in float64
        # is 134 MB at the 2**18-term cap, made for one added item at a time (0.1 s)
        used = np.unique(weighted.indices)
        terms = self._components[:, used].T.astype(np.float64)
        reduced = np.asarray(weighted[:, used] @ terms)
        out = np.zeros((len(items), self._dim), dtype=np.float64)
        out[:, : reduced.shape[1]] = reduced
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)
        return out.astype(np.float32)

    def to_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"type": "tfidf", "format": _FORMAT, **self._settings()}
        config["fitted"] = self.is_fitted
        if self.is_fitted:
            assert self._vocab is not None and self._idf is not None
            config["vocabulary"] = dict(self._vocab)
            config["idf"] = [float(x) for x in self._idf]
            config["id"] = self.id
        return config

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The SVD components, shape ``[k, vocabulary size]`` with ``k <= dim``."""
        if self._components is None:
            return {}
        import torch

        return {"components": torch.from_numpy(self._components.copy())}

    @classmethod
    def from_state(
        cls, config: Mapping[str, Any], tensors: Mapping[str, Any] | None = None
    ) -> TfidfSvdEncoder:
        """Rebuild from :meth:`to_config` and :meth:`state_tensors` output."""
        if config.get("type") != "tfidf":
            raise ModelError(f"not a TF-IDF encoder config: type={config.get('type')!r}")
        _check_format(config)
        enc = _unfitted(config)
        if not config.get("fitted", False):
            return enc
        vocab, idf, components = _read_state(config, tensors or {}, enc.dim)
        try:
            counter = enc._make_counter(vocab)
            counter.transform([""])  # validates that indices are exactly 0..V-1
        except ValueError as e:
            raise ModelError(f"saved TF-IDF vocabulary is inconsistent: {e}") from e
        enc._set_state(vocab, idf, components, counter)
        saved_id = config.get("id")
        if saved_id is not None and saved_id != enc.id:
            raise ModelError(
                f"saved TF-IDF state does not match its id {saved_id!r} (got {enc.id!r}); "
                "the config and tensor files are corrupt or come from different fits"
            )
        return enc

    def __repr__(self) -> str:
        state = self._state_hash or "unfitted"
        return f"TfidfSvdEncoder(dim={self._dim}, seed={self.seed}, state={state})"

    # -- internals ----------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            "dim": self._dim,
            "seed": self.seed,
            "min_df": self.min_df,
            "ngram_range": list(self.ngram_range),
            "max_features": self.max_features,
            "lowercase": True,
            "token_pattern": _TOKEN_PATTERN,
        }

    def _make_counter(self, vocab: Mapping[str, int]) -> CountVectorizer:
        from sklearn.feature_extraction.text import CountVectorizer

        return CountVectorizer(
            lowercase=True,
            token_pattern=_TOKEN_PATTERN,
            ngram_range=self.ngram_range,
            vocabulary=dict(vocab),
            dtype=np.float64,
        )

    @staticmethod
    def _weigh(
        counter: CountVectorizer, idf: npt.NDArray[np.float64], items: list[str]
    ) -> sp.csr_matrix:
        from sklearn.preprocessing import normalize

        # Same as TfidfTransformer(norm="l2", sublinear_tf=False) on these counts.
        counts = sp.csr_matrix(counter.transform(items), dtype=np.float64)
        return sp.csr_matrix(normalize(counts @ sp.diags(idf), norm="l2"))

    def _fit_components(self, weighted: sp.csr_matrix) -> npt.NDArray[np.float32]:
        n_docs, n_terms = weighted.shape
        k = min(self._dim, n_docs, n_terms)
        if n_terms < 2:
            # TruncatedSVD needs two features; with one, the identity is the SVD.
            return np.eye(k, n_terms, dtype=np.float32)
        from sklearn.decomposition import TruncatedSVD

        svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=self.seed)
        # A one-document corpus has zero variance; only the unused
        # explained_variance_ratio_ divides by it.
        with np.errstate(invalid="ignore", divide="ignore"):
            svd.fit(weighted)
        return np.ascontiguousarray(svd.components_, dtype=np.float32)

    def _set_state(
        self,
        vocab: dict[str, int],
        idf: npt.NDArray[np.float64],
        components: npt.NDArray[np.float32],
        counter: CountVectorizer,
    ) -> None:
        self._vocab, self._idf, self._components, self._counter = vocab, idf, components, counter
        h = hashlib.sha256()
        payload = {
            **self._settings(),
            "vocabulary": sorted(vocab.items(), key=lambda kv: kv[1]),
            "idf": [float(x) for x in idf],
        }
        h.update(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode())
        h.update(repr(components.shape).encode())
        h.update(components.astype("<f4").tobytes())
        self._state_hash = h.hexdigest()[:16]


def _unfitted(config: Mapping[str, Any]) -> TfidfSvdEncoder:
    """The encoder a saved config's settings make, before its fitted state is read."""
    try:
        return TfidfSvdEncoder(
            config.get("dim", 64),
            seed=config.get("seed", 0),
            min_df=config.get("min_df", 1),
            ngram_range=config.get("ngram_range", (1, 2)),
            max_features=config.get("max_features"),
        )
    except ConfigError as e:
        raise ModelError(f"saved TF-IDF encoder settings are invalid: {e}") from e


def _check_format(config: Mapping[str, Any]) -> None:
    # a config without "format" predates the field, and is this format
    if config.get("format", _FORMAT) != _FORMAT:
        raise ModelError(
            f"unsupported TF-IDF encoder format {config.get('format')!r} (this metarec "
            f"reads format {_FORMAT})"
        )


def check_saved_state(config: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
    """A ModelError unless a saved TF-IDF config's settings are valid and its state has
    its parts (what a run's load checks before any item is added, and the rebuild
    reads): cheap, no array is built. A bad ``ngram_range`` loaded and was met, as a
    bare TypeError, at the first added item."""
    _check_format(config)
    _unfitted(config)
    if not isinstance(config.get("vocabulary"), Mapping) or not isinstance(
        config.get("idf"), Sequence
    ):
        raise ModelError("saved TF-IDF config lacks 'vocabulary' (mapping) or 'idf' (list)")
    if "components" not in tensors:
        raise ModelError("saved TF-IDF state lacks the 'components' tensor")


def _read_state(
    config: Mapping[str, Any], tensors: Mapping[str, Any], dim: int
) -> tuple[dict[str, int], npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    check_saved_state(config, tensors)
    vocab_raw, idf_raw = config["vocabulary"], config["idf"]
    if not all(isinstance(k, str) and is_whole(v) for k, v in vocab_raw.items()):
        raise ModelError("saved TF-IDF vocabulary must map strings to integers")
    vocab = {str(k): int(v) for k, v in vocab_raw.items()}
    try:
        idf = np.asarray([float(x) for x in idf_raw], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ModelError(f"saved TF-IDF idf list is not numeric: {e}") from e
    raw = tensors["components"]
    if hasattr(raw, "detach"):  # a torch tensor; numpy arrays are accepted as well
        raw = raw.detach().cpu().numpy()
    try:
        components = np.ascontiguousarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ModelError(f"saved TF-IDF components are not numeric: {e}") from e
    n_terms = len(vocab)
    if idf.shape != (n_terms,) or not np.isfinite(idf).all():
        raise ModelError(f"saved TF-IDF idf: {idf.size} values for {n_terms} terms, or non-finite")
    k = components.shape[0] if components.ndim == 2 else 0
    if components.ndim != 2 or components.shape[1] != n_terms or not 1 <= k <= dim:
        raise ModelError(
            f"saved TF-IDF components have shape {tuple(components.shape)}; expected "
            f"[1..{dim}, {n_terms}]"
        )
    if not np.isfinite(components).all():
        raise ModelError("saved TF-IDF components contain non-finite values")
    return vocab, idf, components

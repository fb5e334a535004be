"""Item encoders: item text → L2-normalised float32 vectors, with an on-disk cache."""

from metarec.encoders.base import Encoder, encoder_from_config, make_encoder
from metarec.encoders.cache import EmbeddingCache, cached_encode, default_cache
from metarec.encoders.sentence import SentenceEncoder
from metarec.encoders.tfidf import TfidfSvdEncoder

__all__ = [
    "EmbeddingCache",
    "Encoder",
    "SentenceEncoder",
    "TfidfSvdEncoder",
    "cached_encode",
    "default_cache",
    "encoder_from_config",
    "make_encoder",
]

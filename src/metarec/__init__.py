"""metarec: cold-start recommendation from the first few interactions.

Items are encoded from their text by a frozen sentence encoder; a preference
network is meta-trained with users as tasks so that a few steps on a user's
ratings give that user's model. See the README for the tour.
"""

from metarec.config import ModelConfig, TrainConfig
from metarec.data import (
    CleaningReport,
    Dataset,
    ItemTextConfig,
    clean,
    load_atomic,
    load_dataset,
    load_movielens_raw,
    load_path,
    load_table,
    validate,
)
from metarec.encoders import (
    EmbeddingCache,
    Encoder,
    SentenceEncoder,
    TfidfSvdEncoder,
    make_encoder,
)
from metarec.errors import (
    ConfigError,
    DataError,
    DatasetNotFoundError,
    MetarecError,
    ModelError,
    UnknownItemError,
)
from metarec.models.bias import BiasModel
from metarec.pipeline import encode_catalogue, fit_recommender, train
from metarec.recommender import Recommender, UserState

__version__ = "0.1.0"

__all__ = [
    "BiasModel",
    "CleaningReport",
    "ConfigError",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "EmbeddingCache",
    "Encoder",
    "ItemTextConfig",
    "MetarecError",
    "ModelConfig",
    "ModelError",
    "Recommender",
    "SentenceEncoder",
    "TfidfSvdEncoder",
    "TrainConfig",
    "UnknownItemError",
    "UserState",
    "clean",
    "encode_catalogue",
    "fit_recommender",
    "load_atomic",
    "load_dataset",
    "load_movielens_raw",
    "load_path",
    "load_table",
    "make_encoder",
    "train",
    "validate",
]

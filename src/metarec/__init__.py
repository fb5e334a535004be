"""metarec: cold-start recommendation from the first few interactions.

Items are encoded from their text by a frozen sentence encoder; a preference
network is meta-trained with users as tasks so that a few steps on a user's
ratings give that user's model. See the README for the tour.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

# The public names load on first use (PEP 562): `import metarec` and the CLI's
# argument checks then cost milliseconds, not the seconds torch and pandas take
# to import, so `metarec --help` and a mistyped option answer at once.
_HOME = {
    "ModelConfig": "metarec.config",
    "TrainConfig": "metarec.config",
    "keep_freed_memory": "metarec.allocator",
    **dict.fromkeys(
        (
            "CleaningReport",
            "Dataset",
            "ItemTextConfig",
            "clean",
            "load_atomic",
            "load_dataset",
            "load_movielens_raw",
            "load_path",
            "load_table",
            "validate",
        ),
        "metarec.data",
    ),
    **dict.fromkeys(
        ("EmbeddingCache", "Encoder", "SentenceEncoder", "TfidfSvdEncoder", "make_encoder"),
        "metarec.encoders",
    ),
    **dict.fromkeys(
        (
            "BusyError",
            "ConfigError",
            "DataError",
            "DatasetNotFoundError",
            "InputError",
            "MetarecError",
            "ModelError",
            "UnknownItemError",
            "UnsupportedError",
        ),
        "metarec.errors",
    ),
    **dict.fromkeys(("encode_catalogue", "fit_recommender", "train"), "metarec.pipeline"),
    **dict.fromkeys(("Recommender", "UserState"), "metarec.recommender"),
}

if TYPE_CHECKING:
    from metarec.allocator import keep_freed_memory
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
        BusyError,
        ConfigError,
        DataError,
        DatasetNotFoundError,
        InputError,
        MetarecError,
        ModelError,
        UnknownItemError,
        UnsupportedError,
    )
    from metarec.pipeline import encode_catalogue, fit_recommender, train
    from metarec.recommender import Recommender, UserState

__version__ = "0.1.0"

__all__ = [
    "BusyError",
    "CleaningReport",
    "ConfigError",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "EmbeddingCache",
    "Encoder",
    "InputError",
    "ItemTextConfig",
    "MetarecError",
    "ModelConfig",
    "ModelError",
    "Recommender",
    "SentenceEncoder",
    "TfidfSvdEncoder",
    "TrainConfig",
    "UnknownItemError",
    "UnsupportedError",
    "UserState",
    "clean",
    "encode_catalogue",
    "fit_recommender",
    "keep_freed_memory",
    "load_atomic",
    "load_dataset",
    "load_movielens_raw",
    "load_path",
    "load_table",
    "make_encoder",
    "train",
    "validate",
]


# hidden from type checkers: a module __getattr__ returning Any would let any
# misspelt name (`mr.TrainConifg`) type-check as Any; the names above are typed
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        home = _HOME.get(name)
        if home is not None:
            value = getattr(importlib.import_module(home), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"metarec.{name}") is not None:
            # a subpackage by attribute (`metarec.models.ensemble`), as when everything
            # was imported eagerly
            value = importlib.import_module(f"{__name__}.{name}")
        else:
            raise AttributeError(f"module 'metarec' has no attribute {name!r}")
        globals()[name] = value  # later lookups skip this hook
        return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

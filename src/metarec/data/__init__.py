"""Loading, cleaning and describing rating data sets.

Every loader returns a :class:`Dataset` following the column conventions in
:mod:`metarec.data.schema`; :func:`clean` then drops bad values and reports why.
"""

from metarec.data.atomic import load_atomic
from metarec.data.cleaning import clean, validate
from metarec.data.generic import load_table
from metarec.data.movielens import detect_layout, load_movielens_raw
from metarec.data.registry import (
    KNOWN_DATASETS,
    cache_root,
    known_names,
    load_dataset,
    load_path,
    locate,
)
from metarec.data.schema import CleaningReport, Dataset, like_threshold_for
from metarec.data.text import ItemTextConfig, build_item_text, fix_title_articles

__all__ = [
    "KNOWN_DATASETS",
    "CleaningReport",
    "Dataset",
    "ItemTextConfig",
    "build_item_text",
    "cache_root",
    "clean",
    "detect_layout",
    "fix_title_articles",
    "known_names",
    "like_threshold_for",
    "load_atomic",
    "load_dataset",
    "load_movielens_raw",
    "load_path",
    "load_table",
    "locate",
    "validate",
]

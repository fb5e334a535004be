from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from metarec.data.schema import Dataset
from metarec.data.text import (
    ItemTextConfig,
    build_item_text,
    fix_title_articles,
    format_year,
    normalise_genres,
    split_title_year,
)
from metarec.errors import ConfigError


def items(**cols: list[object]) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base: dict[str, list[object]] = {"item_id": [str(i) for i in range(n)]}
    return pd.DataFrame({**base, **cols})


def test_default_template_with_all_parts() -> None:
    df = items(title=["Toy Story"], year=[1995.0], genres=["Animation|Children's|Comedy"])
    assert build_item_text(df).tolist() == [
        "Toy Story (1995). Genres: Animation, Children's, Comedy."
    ]


@pytest.mark.parametrize(
    ("year", "genres", "expected"),
    [
        (np.nan, "Drama", "Heat. Genres: Drama."),
        (1995.0, "", "Heat (1995)."),
        (np.nan, "", "Heat."),
    ],
)
def test_missing_parts_are_dropped_cleanly(year: float, genres: str, expected: str) -> None:
    df = items(title=["Heat"], year=[year], genres=[genres])
    assert build_item_text(df).tolist() == [expected]


def test_an_untitled_item_does_not_start_with_a_bracketed_year() -> None:
    df = items(title=["", ""], year=[2011.0, 2011.0], genres=["Drama", ""])
    assert build_item_text(df).tolist() == ["2011. Genres: Drama.", "2011."]
    # a title's own bracket stays
    assert build_item_text(items(title=["(500) Days of Summer"], year=[2009.0])).tolist() == [
        "(500) Days of Summer (2009)."
    ]


def test_missing_columns_count_as_missing_parts() -> None:
    assert build_item_text(pd.DataFrame({"item_id": ["1"], "title": ["Heat"]})).tolist() == [
        "Heat."
    ]


def test_values_with_their_own_punctuation_are_untouched() -> None:
    df = items(title=["Seven (Se7en)", "And Now... Ladies"], year=[np.nan, np.nan], genres=["", ""])
    assert build_item_text(df).tolist() == ["Seven (Se7en).", "And Now... Ladies."]


def test_parts_can_be_switched_off() -> None:
    df = items(title=["Heat"], year=[1995.0], genres=["Action|Crime"])
    assert build_item_text(df, ItemTextConfig(year=False)).tolist() == [
        "Heat. Genres: Action, Crime."
    ]
    assert build_item_text(df, ItemTextConfig(genres=False)).tolist() == ["Heat (1995)."]


def test_extra_columns_are_appended_or_templated() -> None:
    df = items(title=["Heat"], year=[1995.0], genres=[""], plot=["Cops and robbers."])
    assert build_item_text(df, ItemTextConfig(extra=["plot"])).tolist() == [
        "Heat (1995). Cops and robbers."
    ]
    cfg = ItemTextConfig(extra=["plot"], template="{title}: {plot}")
    assert build_item_text(df, cfg).tolist() == ["Heat: Cops and robbers."]
    df.loc[0, "plot"] = ""
    assert build_item_text(df, cfg).tolist() == ["Heat"]
    # two appended columns are two sentences: the authors ran into the plot after them
    df = items(title=["Heat"], year=[1995.0], genres=[""], by=["Michael Mann"], plot=["Cops"])
    assert build_item_text(df, ItemTextConfig(extra=["by", "plot"])).tolist() == [
        "Heat (1995). Michael Mann. Cops"
    ]


def test_template_errors_name_the_problem() -> None:
    df = items(title=["Heat"])
    with pytest.raises(ConfigError, match="plot"):
        build_item_text(df, ItemTextConfig(template="{title} {plot}"))
    with pytest.raises(ConfigError, match="not in the items table"):
        build_item_text(df, ItemTextConfig(extra=["plot"]))


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("Matrix, The", "The Matrix"),
        ("Shawshank Redemption, The (1994)", "The Shawshank Redemption (1994)"),
        ("Fish Called Wanda, A", "A Fish Called Wanda"),
        ("American in Paris, An", "An American in Paris"),
        ("Misérables, Les", "Les Misérables"),
        ("Promesse, La", "La Promesse"),
        ("Postino, Il (The Postman)", "Il Postino (The Postman)"),
        ("Boot, Das", "Das Boot"),
        ("Himmel über Berlin, Der", "Der Himmel über Berlin"),
        ("Blechtrommel, Die", "Die Blechtrommel"),
        ("Mariachi, El", "El Mariachi"),
        ("Enfer, L'", "L'Enfer"),
        (
            "Umbrellas of Cherbourg, The (Parapluies de Cherbourg, Les)",
            "The Umbrellas of Cherbourg (Les Parapluies de Cherbourg)",
        ),
        # Not displaced articles: left alone.
        ("Hello, Dolly!", "Hello, Dolly!"),
        ("I, Robot", "I, Robot"),
        ("Sex, Lies, and Videotape", "Sex, Lies, and Videotape"),
        ("Toy Story", "Toy Story"),
    ],
)
def test_fix_title_articles(raw: str, fixed: str) -> None:
    assert fix_title_articles(raw) == fixed


def test_articles_fixed_in_text_not_in_title_unless_switched_off() -> None:
    df = items(title=["Matrix, The"], year=[1999.0], genres=["Sci-Fi"])
    assert build_item_text(df).tolist() == ["The Matrix (1999). Genres: Sci-Fi."]
    off = ItemTextConfig(fix_articles=False)
    assert build_item_text(df, off).tolist() == ["Matrix, The (1999). Genres: Sci-Fi."]


def test_split_title_year() -> None:
    titles, years = split_title_year(
        pd.Series(["Toy Story (1995)", "Seven (Se7en)", "Show (2005-2007)", None])
    )
    assert titles.tolist() == ["Toy Story", "Seven (Se7en)", "Show", ""]
    assert years.iloc[0] == 1995.0 and np.isnan(years.iloc[1]) and years.iloc[2] == 2005.0
    assert np.isnan(years.iloc[3])
    # a quoted CSV title may hold a line break: its year was lost, and with it the item's
    # place among P1's new items
    titles, years = split_title_year(pd.Series(["Matrix, The\nReloaded (1996)"]))
    assert titles.tolist() == ["Matrix, The\nReloaded"] and years.tolist() == [1996.0]


def test_normalise_genres_drops_placeholders() -> None:
    out = normalise_genres(pd.Series(["Action|unknown", "(no genres listed)", "a, b", None]))
    assert out.tolist() == ["Action", "", "a|b", ""]
    # split on spaces (RecBole's token_seq), the placeholder was three genres
    spaced = normalise_genres(pd.Series(["(no genres listed)", "Drama Comedy"]), r"\s+")
    assert spaced.tolist() == ["", "Drama|Comedy"]


def test_a_year_past_four_digits_is_unknown() -> None:
    # 1e20 overflowed int64 and the item text read "Red Shoe (-9223372036854775808)."
    years = pd.Series([1995.0, 1e20, -1e20, np.inf, np.nan, 9999.4])
    assert format_year(years).tolist() == ["1995", "", "", "", "", "9999"]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        # string.Formatter's TypeError, in load_dataset and in add_items
        ({"template": 5}, "item text template: expected text, got 5"),
        # read as the columns g, e, n, r, e, s (add_items added them empty)
        ({"extra": "plot"}, "item text extra: expected a list of column names"),
        ({"extra": ["plot", 3]}, "item text extra: expected a list of column names"),
        ({"title": "no"}, "item text title: expected True or False, got 'no'"),
        ({"template": "{title!r}"}, "use plain named fields"),
    ],
)
def test_an_item_text_config_that_could_not_work_is_refused(
    options: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        ItemTextConfig(**options)  # type: ignore[arg-type]


def test_items_with_neither_title_nor_text_are_warned_about() -> None:
    # the ids stood in as the whole text ("1.") without a word, and TF-IDF's "empty
    # vocabulary" was the first sign of it
    from metarec.data import clean
    from metarec.pipeline import ensure_text

    bare = pd.DataFrame({"item_id": ["1", "2"]})
    message = r"neither a title nor a text column \(has: item_id\): each item's id stands in"
    with pytest.warns(UserWarning, match=message):
        assert ensure_text(bare)["text"].tolist() == ["1.", "2."]
    ratings = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"], "rating": [4, 5]})
    with pytest.warns(UserWarning, match=message):
        clean(Dataset("bare", ratings, bare, users=None, rating_range=(1.0, 5.0)))
    # a text of its own, or a title, is enough: nothing said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_text(bare.assign(text=["a heist film", "a comedy"]))
        ensure_text(bare.assign(title=["Heat", "Fargo"]))
        ensure_text(bare.iloc[:0])  # no items: no id stood in for anything

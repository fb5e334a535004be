"""User features: the per-request path gives the same codes as the batch path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metarec import load_dataset
from metarec.data.features import UserFeatureEncoder


def test_encode_one_matches_transform_on_real_users(shared_data: Path) -> None:
    users = load_dataset("ml-100k", root=shared_data).users
    enc = UserFeatureEncoder.fit(users)
    assert "age" in enc.bins  # exact ages are binned
    for row in users.sample(200, random_state=0).to_dict("records"):
        batch = enc.transform(pd.DataFrame([row]), np.array([row["user_id"]], dtype=object))[0]
        np.testing.assert_array_equal(enc.encode_one(row), batch)
    # unknown values and missing keys map to 0, never raise
    assert enc.encode_one({"age": "n/a", "gender": "X"}).tolist() == [0, 0, 0]
    assert enc.encode_one({"age": 10**400}).tolist() == [0, 0, 0]  # past a float: unknown
    # not age 1, not the top bin (adapt and the users-table check refuse both first)
    # "25_0" is 250 to Python's float, and b"25" 25: training's to_numeric reads neither
    for odd in (True, float("inf"), "-inf", "25_0", b"25"):
        assert enc.encode_one({"age": odd}).tolist() == [0, 0, 0]
        assert enc.problem({"age": odd}, json_types=False) is not None
    assert enc.encode_one({}).tolist() == [0] * len(enc.columns)


def test_a_saved_encoder_is_read_back_or_refused_by_field() -> None:
    import pytest

    from metarec.errors import ModelError

    saved = {"columns": ["age", "gender"], "vocab": {"age": {"bin1": 1}, "gender": {"F": 1}},
             "bins": {"age": [18.0, 25.5]}}  # fmt: skip
    enc = UserFeatureEncoder.from_dict(saved, source="run/recommender.json")
    assert enc.encode_one({"age": 20, "gender": "F"}).tolist() == [1, 1]
    assert UserFeatureEncoder.from_dict({"columns": [], "vocab": {}}).columns == []
    for damaged, needle in [
        ({**saved, "bins": {"age": ["x"]}}, "features.bins: expected"),
        ({**saved, "vocab": {"age": {"bin1": 1}}}, "features.vocab.gender: expected"),
        (
            {**saved, "vocab": {**saved["vocab"], "gender": {"F": -1}}},
            "features.vocab.gender: .*code >= 0",
        ),
        ([], "features: expected an object"),
    ]:
        with pytest.raises(ModelError, match=r"run/recommender\.json: " + needle):
            UserFeatureEncoder.from_dict(damaged, source="run/recommender.json")


def test_a_users_file_with_gaps_still_bins_its_numbers_and_reads_whole_floats() -> None:
    """A CSV pandas wrote from an age column with gaps says "34.0", and its blanks are
    empty text: one blank made the column categories "34.0" that a request's 34
    never matched, and the blank a category of its own."""
    ages = [str(float(18 + i)) if i % 7 else "" for i in range(60)]  # "19.0", ..., ""
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(60)],
            "age": ages,
            "job": [f"{i % 5}.0" if i % 9 else " " for i in range(60)],  # "3.0", " "
        }
    )
    enc = UserFeatureEncoder.fit(users)
    assert "age" in enc.bins and "job" not in enc.bins  # 51 ages binned, 5 jobs not
    assert set(enc.vocab["job"]) == {"0", "1", "2", "3", "4"}  # no "" level: unknown is 0
    assert (
        enc.encode_one({"age": 34, "job": 3}).tolist()
        == enc.encode_one({"age": "34.0", "job": "3.0"}).tolist()
    )
    assert 0 not in enc.encode_one({"age": 34, "job": 3})
    # a blank is unknown in training as for a served user who does not say
    ids = np.array(["u0", "u7", "u9"], dtype=object)  # both blank; age blank; job blank
    age27, job2 = enc.encode_one({"age": 27})[0], enc.encode_one({"job": 2})[1]
    assert enc.transform(users, ids).tolist() == [[0, 0], [0, job2], [age27, 0]]
    # "007" is a code, not the number 7
    codes = UserFeatureEncoder.fit(pd.DataFrame({"user_id": ["a", "b"], "zip": ["007", "7"]}))
    assert len(codes.vocab["zip"]) == 2


def test_a_gap_written_as_na_leaves_exact_ages_binned() -> None:
    """R's write.csv writes a gap as "NA": one such cell made 40 exact ages categories,
    "NA" one of them, and a served user of an age training lacked unknown; a text
    column keeps "NA" as the category it may be (Namibia)."""
    gaps = ["NA", "NaN", " null ", "N/A", "None"]
    ages = [str(18 + i) for i in range(40)] + gaps
    country = ["NA" if i % 2 else "DE" for i in range(len(ages))]
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(len(ages))], "age": ages,
                          "country": country})  # fmt: skip
    enc = UserFeatureEncoder.fit(users)
    assert "age" in enc.bins and not any(k in enc.vocab["age"] for k in gaps)
    assert set(enc.vocab["country"]) == {"DE", "NA"}
    assert enc.encode_one({"age": 37})[0] != 0  # an age training lacked, binned
    gap_rows = enc.transform(users, users["user_id"].to_numpy()[-len(gaps) :])
    assert gap_rows[:, 0].tolist() == [0] * len(gaps)  # unknown, as a blank is
    # the table it was fitted on passes the check every scored users table goes through
    assert enc.frame_problem(users) is None
    assert enc.problem({"age": "NA"}, json_types=False) is None
    assert enc.problem({"age": "NA"}) is not None  # JSON has null for "no value"
    assert enc.problem({"age": "old"}, json_types=False) is not None


def test_a_run_saved_with_float_categories_reads_a_requests_whole_number() -> None:
    saved = {"columns": ["job"], "vocab": {"job": {"3.0": 1, "4.0": 2, "x": 3}}, "bins": {}}
    enc = UserFeatureEncoder.from_dict(saved)
    assert enc.encode_one({"job": 3}).tolist() == [1]
    assert enc.encode_one({"job": 4.0}).tolist() == [2]
    assert enc.encode_one({"job": "x"}).tolist() == [3]
    # two keys that would read alike are left as they were saved
    both = {"columns": ["job"], "vocab": {"job": {"3.0": 1, "3": 2}}, "bins": {}}
    assert UserFeatureEncoder.from_dict(both).vocab["job"] == {"3.0": 1, "3": 2}


def test_the_rankers_user_groups_read_categories_as_the_encoder_does() -> None:
    from metarec.models.support_signals import UserGroups

    users = pd.DataFrame({"user_id": ["a", "b", "c"], "job": ["3.0", "", "4.0"]})
    groups = UserGroups.fit(users)
    served = pd.DataFrame({"job": [3, 3.0, "3.0", None, " "]})
    assert groups.keys(served, 5) == [["3", "3", "3", None, None]]
    assert groups.keys(users, 3) == [["3", None, "4"]]  # a blank is no group of its own


def test_the_rankers_user_groups_cut_numbers_given_as_text_into_quintiles() -> None:
    from metarec.models.support_signals import UserGroups

    # as every file gives them: text; 61 exact ages were 61 groups, not quintiles
    ages = [str(18 + i % 50) for i in range(100)] + [""]
    groups = UserGroups.fit(pd.DataFrame({"user_id": range(101), "age": ages, "g": "M"}))
    assert "age" in groups.edges and "g" not in groups.edges
    (age, _) = groups.keys(pd.DataFrame({"age": [18, "67", None], "g": "M"}), 3)
    assert age == ["q0", "q4", None]


def test_a_table_with_gaps_passes_the_input_check_it_was_fitted_on() -> None:
    """Fitting reads a blank as missing; the check every scored users table goes
    through refused the same blank as 'not a number' once the column was binned, so a
    benchmark with such a users file failed after every model was fitted."""
    ages = [str(18 + i) if i % 7 else "" for i in range(60)]
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(60)], "age": ages})
    enc = UserFeatureEncoder.fit(users)
    assert "age" in enc.bins
    assert enc.frame_problem(users) is None
    assert enc.problem({"age": " "}, json_types=False) is None
    assert enc.readable({"age": ""}) == {"age": ""}
    assert enc.problem({"age": ""}) is not None  # JSON has null for "no value"


def test_category_reads_whole_decimals_by_their_digits() -> None:
    from metarec.data.features import category, rekeyed

    assert category("12345678901234567890.0") == "12345678901234567890"  # not via a float
    assert category("007.0") == "007" and category("-0.0") == "0" and category("+5.") == "5"
    assert category(np.float32(3.0)) == "3" and category("3.5") == "3.5"
    assert rekeyed({"3.0": 1, "x": 2}) == {"3": 1, "x": 2}
    assert rekeyed({"3.0": 1, "3": 2}) == {"3.0": 1, "3": 2}  # which one was meant?


def test_user_rows_match_ids_as_the_loaders_write_them() -> None:
    # str() made 1.0 "1.0", which no id "1" matched: every user's features went unknown
    import pytest

    from metarec.data.features import user_rows
    from metarec.errors import DataError

    floats = pd.DataFrame({"user_id": [1.0, 2.0], "age": [20, 30]})
    assert user_rows(floats, ["1", 2, np.int64(2)])["age"].tolist() == [20, 30, 30]
    ints = pd.DataFrame({"user_id": [1, 2], "age": [20, 30]})
    rows = user_rows(ints, ["2", 1.0, "7"])
    assert rows["user_id"].tolist() == ["2", "1", "7"]
    assert rows["age"].tolist()[:2] == [30, 20] and np.isnan(rows["age"].iloc[2])
    with pytest.raises(DataError, match="expected a DataFrame with a user_id column, got list"):
        user_rows([1], ["1"])  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"got columns \['age'\]"):
        user_rows(ints.drop(columns="user_id"), ["1"])
    # a string of ids was one id per character: users "1", "9" and "6" for "196"
    for ids in ("196", None, 5):
        with pytest.raises(DataError, match="user_rows: ids: expected a list of user ids"):
            user_rows(ints, ids)  # type: ignore[arg-type]
    assert user_rows(ints, pd.Series(["1"]))["age"].tolist() == [20]
    # what people pass: a column's unique() (an ArrowStringArray), a dict's keys
    text = pd.Series(["2", "1"], dtype="string")
    assert user_rows(ints, text.unique())["age"].tolist() == [30, 20]
    assert user_rows(ints, {"1": 0}.keys())["age"].tolist() == [20]


def test_a_missing_time_is_an_unknown_age_in_a_table_as_in_one_user() -> None:
    # NaT became int64's minimum in a users table: the youngest age bin, where adapt()'s
    # NaT is unknown (code 0)
    users = pd.DataFrame({"user_id": [str(i) for i in range(30)], "age": list(range(20, 50))})
    enc = UserFeatureEncoder.fit(users)
    frame = pd.DataFrame({"user_id": ["x"], "age": pd.Series([pd.NaT], dtype=object)})
    assert enc.transform(frame, np.array(["x"], dtype=object))[0].tolist() == [0]
    assert enc.encode_one({"age": pd.NaT}).tolist() == [0]


def test_metarecs_own_columns_are_no_user_feature() -> None:
    # load_table keeps each row's file line ("_line") for messages: it was binned as a
    # feature, and every served user, who has no line, read as unknown in it
    users = pd.DataFrame({"user_id": ["a", "b", "c"], "age": [20, 30, 40], "_line": [2, 3, 4]})
    assert UserFeatureEncoder.fit(users).columns == ["age"]
    from metarec.models.support_signals import UserGroups

    assert UserGroups.fit(users).columns == ["age"]  # the stacked ranker's groups too


def test_a_model_without_user_features_refuses_them_over_json_only() -> None:
    enc = UserFeatureEncoder.fit(pd.DataFrame({"user_id": ["a"]}))
    assert enc.columns == []
    assert enc.problem({}) is None
    # the HTTP API says what the model reads: another key is a 422 there
    assert enc.problem({"age": 25}) == (
        "age: this model reads no user features (it was trained without them); send none"
    )
    assert enc.problem({"age": 25}, json_types=False) is None  # Python warns instead


def test_a_truth_value_finds_its_category_in_any_usual_spelling() -> None:
    from metarec.data.features import UserFeatureEncoder

    # a users file writing "true"/"false": JSON's true (Python's True) was unknown
    written = pd.DataFrame({"user_id": ["a", "b", "c"], "premium": ["true", "false", "true"]})
    enc = UserFeatureEncoder.fit(written)
    as_text = enc.encode_one({"premium": "true"})
    assert as_text[0] != 0
    assert enc.encode_one({"premium": True}).tolist() == as_text.tolist()
    assert enc.encode_one({"premium": False})[0] not in (0, as_text[0])
    frame = pd.DataFrame({"user_id": ["x"], "premium": [True]})
    assert enc.transform(frame, np.array(["x"])).tolist() == [as_text.tolist()]
    # a file pandas read as booleans: "true" in a request is the same category
    read = pd.DataFrame({"user_id": ["a", "b"], "premium": [True, False]})
    enc = UserFeatureEncoder.fit(read)
    assert (
        enc.encode_one({"premium": "true"}).tolist() == enc.encode_one({"premium": True}).tolist()
    )
    assert enc.encode_one({"premium": "maybe"})[0] == 0  # an unseen category stays unknown

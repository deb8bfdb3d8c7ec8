"""Data that does not fit the config gives a lamina.DataError naming the column, row and value;
and the good paths of reading, splitting and missing values work."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import DataError, features
from lamina.data import read_table, split_rows
from lamina.features.common import MISSING, UNKNOWN

from helpers_data import config, people, write_table


def error_of(call) -> str:
    with pytest.raises(DataError) as caught:
        call()
    return str(caught.value)


def fit(frame: pd.DataFrame, **kwargs) -> lamina.Model:
    return lamina.Model(config(**kwargs)).fit(frame, quiet=True)


@pytest.fixture(scope="module")
def binary_model() -> lamina.Model:
    return fit(people())


@pytest.fixture(scope="module")
def category_model() -> lamina.Model:
    return fit(people(), outputs=[{"name": "segment", "type": "category"}])


# --- errors ---------------------------------------------------------------------------------

def test_column_missing_from_data_suggests_a_close_column():
    frame = people(50).rename(columns={"age": "agee"})
    message = error_of(lambda: fit(frame))
    assert "column 'age' named in the config is not in the DataFrame" in message
    assert "did you mean 'agee'?" in message


def test_column_missing_at_predict_time(binary_model):
    message = error_of(lambda: binary_model.predict(people(5).drop(columns="city")))
    assert "column 'city'" in message


@pytest.mark.parametrize("empty", [pd.DataFrame(), [], "frame"], ids=["no columns", "empty list", "no rows"])
def test_nothing_to_predict(binary_model, empty):
    data = people(5).head(0) if isinstance(empty, str) else empty
    assert "has no rows; nothing to predict" in error_of(lambda: binary_model.predict(data))


def test_nothing_to_evaluate(binary_model):
    frame = people(5)
    frame["income"] = None
    assert "no rows with the outputs filled in" in error_of(lambda: binary_model.evaluate(frame))


def test_non_number_in_number_column_names_column_row_and_value():
    frame = people(60)
    frame["age"] = frame["age"].astype(object)
    frame.loc[17, "age"] = "abc"
    message = error_of(lambda: fit(frame))
    assert "column 'age' row 17: 'abc' is not a number" in message
    assert "type: category" in message


def test_non_number_at_predict_time(binary_model):
    frame = people(5)
    frame["age"] = frame["age"].astype(object)
    frame.loc[3, "age"] = "n/a"
    assert "column 'age' row 3: 'n/a' is not a number" in error_of(lambda: binary_model.predict(frame))


def test_binary_column_with_three_values():
    frame = people(60)
    frame.loc[4, "member"] = "maybe"
    message = error_of(lambda: fit(frame))
    assert "column 'member' has 3 distinct values" in message and "use type: category" in message


def test_missing_error_strategy_names_the_row():
    frame = people(60)
    frame.loc[9, "age"] = np.nan
    inputs = [{"name": "age", "type": "number", "missing": "error"}]
    message = error_of(lambda: fit(frame, inputs=inputs))
    assert "column 'age' row 9: missing value" in message and "missing: drop" in message


@pytest.mark.parametrize("kind", ["category", "binary"])
def test_unseen_output_label_at_evaluate(kind, binary_model, category_model):
    model, column = (binary_model, "income") if kind == "binary" else (category_model, "segment")
    frame = people(20, seed=1)
    frame.loc[6, column] = "unheard"
    message = error_of(lambda: model.evaluate(frame))
    assert f"column '{column}' row 6: label 'unheard'" in message
    assert "training" in message


def test_data_file_that_does_not_exist(tmp_path):
    message = error_of(lambda: read_table(tmp_path / "nope.csv"))
    assert "nope.csv' does not exist" in message and "CSV, Parquet or JSONL" in message


def test_unknown_data_set_name():
    assert "adutl" in error_of(lambda: read_table("adutl"))


def test_unsupported_file_suffix(tmp_path):
    path = tmp_path / "people.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a spreadsheet")
    message = error_of(lambda: read_table(path))
    assert "people.xlsx" in message and ".csv" in message and ".parquet" in message


def test_a_folder_without_class_sub_folders_of_images(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    message = error_of(lambda: read_table(tmp_path))
    assert str(tmp_path) in message and "<class>/<image file>" in message


def test_a_folder_of_class_sub_folders_is_a_table(tmp_path):
    for split, label, name in [("train", "cat", "a.png"), ("train", "dog", "b.jpg"), ("test", "cat", "c.PNG")]:
        (tmp_path / split / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / split / label / name).write_bytes(b"")
    (tmp_path / "train" / "dog" / "readme.txt").write_text("skipped: not an image")
    frame, source = read_table(tmp_path)
    assert source == f"folder '{tmp_path}'"
    assert sorted(zip(frame["label"], frame["split"])) == [("cat", "test"), ("cat", "train"), ("dog", "train")]


@pytest.mark.parametrize("name, content", [
    ("broken.parquet", b"not parquet at all"),
    ("broken.jsonl", b"{not json\n"),
    ("broken.csv", bytes(range(256)) * 4),
])
def test_unreadable_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    message = error_of(lambda: read_table(path))
    assert f"cannot read '{path}'" in message


@pytest.mark.parametrize("text", ["", "age,city\n"], ids=["no bytes", "header only"])
def test_empty_csv(tmp_path, text):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    assert "empty.csv" in error_of(lambda: read_table(path))


def test_data_of_the_wrong_kind():
    assert "got int" in error_of(lambda: read_table(42))


@pytest.mark.parametrize("output", [
    {"name": "income", "type": "binary", "class_weights": {"hihg": 2.0}},
    {"name": "segment", "type": "category", "class_weights": {"old": 2.0}},
])
def test_class_weights_naming_an_unknown_label(output):
    message = error_of(lambda: fit(people(80), outputs=[output]))
    assert f"class_weights of '{output['name']}'" in message
    assert str(list(output["class_weights"])) in message


def split_column(rows: int) -> np.ndarray:
    return np.array(["train", "train", "train", "validation", "test"] * (rows // 5))


@pytest.mark.parametrize("bad", ["foo", None], ids=["unknown word", "missing"])
def test_split_column_with_bad_values(bad):
    frame = people(50)
    frame["part"] = split_column(50)
    frame.loc[12, "part"] = bad
    message = error_of(lambda: fit(frame, split={"method": "column", "column": "part"}))
    assert "split column 'part' row 12" in message and "train, validation or test" in message


def test_split_column_not_in_data():
    message = error_of(lambda: fit(people(50), split={"method": "column", "column": "prat"}))
    assert "column 'prat' named in split.column" in message


def test_no_rows_left_after_drop():
    frame = people(30)
    frame["age"] = np.nan
    inputs = [{"name": "age", "type": "number", "missing": "drop"}, {"name": "city", "type": "category"}]
    assert "no rows" in error_of(lambda: fit(frame, inputs=inputs))


@pytest.mark.parametrize("rows", [1, 3, 5])
def test_too_few_rows_to_split(rows):
    message = error_of(lambda: fit(people(rows)))
    assert f"{rows} rows are too few to split" in message and "split.ratios" in message


def test_stratify_on_a_rare_class():
    frame = people(60)
    frame.loc[[0, 1], "income"] = "rare"
    outputs = [{"name": "income", "type": "category"}]
    message = error_of(lambda: fit(frame, outputs=outputs, split={"method": "stratified"}))
    assert "cannot stratify on 'income': a class has 2 rows" in message and "split method: random" in message


# --- good paths -----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_files_load(tmp_path, suffix):
    frame = people(30)
    loaded, source = read_table(write_table(frame, tmp_path / f"people{suffix}"))
    assert source == f"'{tmp_path / f'people{suffix}'}'"
    pd.testing.assert_frame_equal(loaded.reset_index(drop=True), frame, check_dtype=False)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_list_cells_load_as_sets(tmp_path, suffix):
    frame = people(30)
    frame["tags"] = frame["tags"].str.split("|")
    loaded, _ = read_table(write_table(frame, tmp_path / f"people{suffix}"))
    tags = feature({"name": "tags", "type": "set"}, loaded["tags"])
    assert sorted(tags.stats["labels"]) == ["a", "b", "c"]
    assert tags.transform(loaded["tags"]).sum().item() == sum(len(cell) for cell in frame["tags"])


def test_dataframe_loads_as_is():
    frame = people(30)
    loaded, source = read_table(frame)
    assert loaded is frame and source == "the DataFrame"


def test_dataframe_with_number_column_names():
    frame = people(60)
    frame.columns = range(frame.shape[1])  # as pd.read_csv(header=None) gives
    model = fit(frame, inputs=[{"name": "0", "type": "number"}], outputs=[{"name": "4", "type": "binary"}])
    assert list(model.predict(frame.head(3)).columns) == ["4", "4_probability"]


def test_every_row_trains_with_train_ratio_one():
    model = fit(people(6), split={"ratios": [1.0, 0.0, 0.0]})
    assert model.training_["rows"] == {"train": 6, "validation": 0, "test": 0}


def test_fit_and_predict_from_a_file(tmp_path):
    path = write_table(people(120), tmp_path / "people.parquet")
    model = lamina.Model(config()).fit(path, quiet=True)
    assert len(model.predict(str(path))) == 120


def test_unseen_values_at_predict_time_map_to_unknown(binary_model):
    new = pd.DataFrame({"age": [30.0], "city": ["tokyo"], "member": ["yes"], "tags": ["zzz|a"]})
    predictions = binary_model.predict(new)
    assert predictions["income"].iloc[0] in ("high", "low")
    assert np.isfinite(predictions["income_probability"]).all()
    city = binary_model.inputs_[1]
    assert city.transform(new["city"]).tolist() == [city.stats["vocabulary"].index(UNKNOWN)]


def test_missing_values_at_predict_time_do_not_crash(binary_model):
    new = pd.DataFrame({"age": [np.nan, 40.0], "city": [None, " "], "member": [np.nan, None], "tags": [None, ""]})
    predictions = binary_model.predict(new)
    assert np.isfinite(predictions["income_probability"]).all()


def feature(options: dict, column: pd.Series):
    """A fitted feature object for one input config."""
    built = features.build(lamina.load_config(config(inputs=[options])).inputs[0])
    built.fit(column)
    return built


AGES = pd.Series([10.0, 20.0, np.nan, 60.0, None])


@pytest.mark.parametrize("missing, fill", [("mean", 30.0), ("median", 20.0), ("constant", -7.0)])
def test_number_missing_strategies(missing, fill):
    age = feature({"name": "age", "type": "number", "missing": missing, "fill_value": -7.0,
                   "encoding": "plain", "normalize": "none"}, AGES)
    assert age.stats["fill"] == pytest.approx(fill)
    encoded = age.encoder()(age.transform(AGES))  # (N, 1 value + 1 missing flag)
    assert encoded[:, 0].tolist() == pytest.approx([10.0, 20.0, fill, 60.0, fill])
    assert encoded[:, 1].tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]


def test_number_missing_drop_removes_rows_during_fit():
    frame = people(100)
    frame.loc[[3, 30, 60], "age"] = np.nan
    frame.loc[50, "income"] = None  # a missing target is always dropped
    inputs = [{"name": "age", "type": "number", "missing": "drop"}, {"name": "city", "type": "category"}]
    model = fit(frame, inputs=inputs)
    assert model.training_["dropped_rows"] == 4
    assert sum(model.training_["rows"].values()) == 96


CITY = pd.Series(["rome", "rome", "paris", None, "  ", "oslo", "rome"])


def test_category_missing_as_its_own_value():
    city = feature({"name": "city", "type": "category", "missing": "category"}, CITY)
    codes = city.transform(CITY).tolist()
    vocabulary = city.stats["vocabulary"]
    assert codes[3] == codes[4] == vocabulary.index(MISSING)
    assert vocabulary[codes[0]] == "rome"


def test_category_missing_as_most_frequent():
    city = feature({"name": "city", "type": "category", "missing": "most_frequent"}, CITY)
    codes = city.transform(CITY).tolist()
    assert MISSING not in city.stats["vocabulary"]
    assert codes[3] == codes[4] == codes[0] == city.stats["vocabulary"].index("rome")


def test_set_missing_is_the_empty_set():
    column = pd.Series(["a|b", None, "", "c"])
    tags = feature({"name": "tags", "type": "set", "delimiter": "|"}, column)
    encoded = tags.transform(column)  # (N, labels)
    assert encoded.sum(dim=1).tolist() == [2.0, 0.0, 0.0, 1.0]


def split_of(frame: pd.DataFrame, **split) -> dict[str, np.ndarray]:
    return split_rows(frame, lamina.load_config(config(split=split)))


def test_stratified_split_keeps_class_proportions():
    frame = people(500)
    frame["income"] = np.where(np.arange(500) % 5 == 0, "high", "low")  # 20% high
    parts = split_of(frame, method="stratified", ratios=[0.6, 0.2, 0.2])
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(500))
    for rows in parts.values():
        assert (frame["income"].iloc[rows] == "high").mean() == pytest.approx(0.2, abs=0.01)


def test_split_is_reproducible_with_a_seed():
    frame = people(200)
    first, again = split_of(frame, method="random", seed=1), split_of(frame, method="random", seed=1)
    other = split_of(frame, method="random", seed=2)
    for part in ("train", "validation", "test"):
        np.testing.assert_array_equal(first[part], again[part])
    assert not np.array_equal(first["test"], other["test"])
    assert [len(rows) for rows in first.values()] == [160, 20, 20]


def test_split_method_column_uses_the_column():
    frame = people(50)
    frame["part"] = split_column(50)
    frame.loc[0, "part"], frame.loc[3, "part"] = " Train", "val"  # case, spaces and short names work
    parts = split_of(frame, method="column", column="part")
    assert parts["train"].tolist() == [i for i in range(50) if i % 5 < 3]
    assert parts["validation"].tolist() == [i for i in range(50) if i % 5 == 3]
    assert parts["test"].tolist() == [i for i in range(50) if i % 5 == 4]


def test_fit_with_split_column_trains_on_its_rows():
    frame = people(100)
    frame["part"] = split_column(100)
    model = fit(frame, split={"method": "column", "column": "part"})
    assert model.training_["rows"] == {"train": 60, "validation": 20, "test": 20}
    assert torch.isfinite(torch.tensor(model.metrics_["test"]["loss"]))


def test_cells_are_strings_one_by_one_whatever_the_dtype():
    from lamina.features.common import as_strings

    mixed = pd.Series([1.0, 7.5, np.nan, 3.0])
    assert as_strings(mixed).tolist()[:2] == ["1", "7.5"] and as_strings(mixed.iloc[[0]]).tolist() == ["1"]
    assert as_strings(pd.Series([7, "a", 2.0, True], dtype=object)).tolist() == ["7", "a", "2", "True"]
    assert as_strings(pd.Series([" 007 ", "12", "3.0", "3.50", None])).tolist()[:4] == ["007", "12", "3", "3.50"]


def test_cells_in_messages_are_short_and_never_a_memory_address():
    import io

    from lamina.features.common import describe_cell

    assert describe_cell(io.BytesIO(b"\x89PNG1234")) == "an in-memory file (8 bytes)"
    assert describe_cell(b"abc") == "in-memory bytes (3 bytes)"
    assert describe_cell(np.zeros((2, 3))) == "an array of shape (2, 3)"
    assert describe_cell(np.str_("maybe")) == "'maybe'" and describe_cell(True) == "True"
    assert " at 0x" not in describe_cell(object()) and len(describe_cell("x" * 500)) < 210

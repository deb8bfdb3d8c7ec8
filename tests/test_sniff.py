"""init-config asks every registered type whether it recognises a column (its `sniff`): each rule on
real tables and made-up columns, the near-misses (numeric ids, dates written as numbers, short labels,
few-valued numbers), a new type taking part without any change to init_config.py, and the command's
account of each column on a bounded sample of the file."""
from __future__ import annotations

import contextlib
import io
import types

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import lamina
from lamina import datasets, features
from lamina.cli import main
from lamina.data import read_sample
from lamina.features import base
from lamina.init_config import infer_config, sniff_column

ROWS = 300


def chosen(values, name: str = "column", target: bool = False):
    """The Choice for one column of made-up values."""
    return sniff_column(pd.Series(values, name=name, dtype=object if isinstance(values, list) else None), target)


def kinds(frame: pd.DataFrame, target: str) -> dict:
    config, _ = infer_config(frame, [target])
    return {feature["name"]: feature for feature in config["inputs"] + config["outputs"]}


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---- real tables ----

def test_movielens_ids_timestamps_and_genres():
    frame = datasets.load("movielens_100k").head(3000)
    found = kinds(frame, "rating")
    assert found["user_id"]["type"] == "id" and found["movie_id"]["type"] == "id"
    assert found["timestamp"] == {"name": "timestamp", "type": "date", "unit": "s"}
    assert found["genres"] == {"name": "genres", "type": "set", "delimiter": "|"}
    assert found["gender"]["type"] == "binary" and found["occupation"]["type"] == "category"
    assert found["age"]["type"] == "number"
    assert found["rating"]["type"] == "category", "a target of 5 whole-number values is classes"


def test_card_transactions_and_adult():
    frame = datasets.load("card_transactions").head(2000)
    config, notes = infer_config(frame, ["is_fraud"])
    found = {feature["name"]: feature["type"] for feature in config["inputs"] + config["outputs"]}
    assert "transaction_id" not in found and any("'transaction_id': left out" in note for note in notes)
    assert found["timestamp"] == "date" and found["card_id"] == "id" and found["merchant_id"] == "id"
    assert found["merchant_category"] == "category" and found["is_fraud"] == "binary"
    assert found["hour"] == "number", "a number with few distinct values stays a number as an input"
    assert len(notes) == frame.shape[1], "one line per column"
    found = kinds(datasets.load("adult").head(2000), "income")
    assert {name: found[name]["type"] for name in ("age", "workclass", "income")} == \
        {"age": "number", "workclass": "category", "income": "binary"}
    assert found["capital_gain"].get("normalize") == "log"


def test_basic_motions_sequences_are_timeseries_with_their_layout():
    frame = datasets.load("basic_motions")
    motion = sniff_column(frame["motion"], False)
    assert (motion.type, motion.options) == ("timeseries", {"layout": "steps"})  # (100 steps, 6 channels)
    turned = sniff_column(frame["motion"].map(lambda array: array.T), False)
    assert turned.options == {"layout": "channels"}


# ---- made-up columns, rule by rule ----

def test_timeseries_strings_as_the_readme_writes_them(rng):
    steps = [";".join(",".join(str(value) for value in step) for step in rng.normal(size=(int(length), 3)).round(2))
             for length in rng.integers(3, 9, ROWS)]
    assert (chosen(steps).type, chosen(steps).options) == ("timeseries", {"layout": "steps"})
    channels = [";".join(",".join(str(value) for value in channel) for channel in rng.normal(size=(2, int(size))).round(2))
                for size in rng.integers(3, 9, ROWS)]
    assert chosen(channels).options == {"layout": "channels"}
    one = [",".join(str(value) for value in rng.normal(size=int(size)).round(2)) for size in rng.integers(5, 30, ROWS)]
    assert chosen(one).type == "timeseries"


def test_fixed_length_lists_are_vectors_unless_long(rng):
    short = [list(rng.normal(size=4).round(3)) for _ in range(ROWS)]
    choice = chosen(short)
    assert choice.type == "vector" and choice.runner_up is None
    assert chosen([",".join(map(str, row)) for row in short]).type == "vector"
    long = [list(rng.normal(size=64)) for _ in range(ROWS)]
    choice = chosen(long)
    assert choice.type == "timeseries" and choice.runner_up[0] == "vector", "close: the runner-up is named"


def test_sound_files_exist_or_are_named_missing(tmp_path, rng):
    soundfile = pytest.importorskip("soundfile")
    paths = []
    for number in range(6):
        path = tmp_path / f"clip{number}.wav"
        soundfile.write(path, rng.normal(0, 0.1, 8000 + 400 * number).astype(np.float32), 8000)
        paths.append(str(path))
    choice = chosen(paths * 10)
    assert choice.type == "audio" and choice.options["sample_rate"] == 8000
    assert 1.0 <= choice.options["duration"] <= 1.4
    missing = chosen([f"/nowhere/clip{number}.wav" for number in range(60)])
    assert missing.type == "audio" and "root" in missing.reason


def test_image_files_and_arrays_with_size_and_channels(tmp_path, rng):
    paths = []
    for number in range(5):
        path = tmp_path / f"scan{number}.png"
        Image.fromarray(rng.integers(0, 255, (20, 30)).astype(np.uint8), "L").save(path)
        paths.append(str(path))
    choice = chosen(paths * 8)
    assert choice.type == "image" and choice.options["channels"] == 1 and "size" in choice.options
    arrays = pd.Series([rng.integers(0, 255, (12, 10, 3)).astype(np.uint8) for _ in range(40)], name="photo")
    choice = sniff_column(arrays, False)
    assert (choice.type, choice.options) == ("image", {"size": [12, 10], "channels": 3})


def test_ids_near_misses(rng):
    users = rng.integers(0, 400, 3000)
    assert chosen(users, "user_id").type == "id", "whole numbers with repeats under an id's name"
    assert chosen(users, "userId").type == "id" and chosen(users, "UserID").type == "id"
    assert chosen(users, "amount").type == "number", "the same numbers under another name are numbers"
    merchants = [f"M{value:05d}" for value in rng.integers(0, 3000, 10000)]
    assert chosen(merchants, "merchant").type == "id", "thousands of one-word values that repeat"
    assert chosen([f"row{i}" for i in range(100)], "key").type is None, "every value different: a row's key"
    assert chosen(np.arange(100), "id").type is None, "a row number under an id's name"
    assert chosen(rng.choice(["a1", "b2", "c3"], 100), "shop_id").type == "category", "few values: classes"
    assert chosen(users, "paid").type == "number", "'paid' only ends in 'id'"


def test_dates_as_text_and_as_numbers():
    stamps = 1.7e9 + np.arange(ROWS) * 5000.0
    text = [str(pd.Timestamp(stamp, unit="s"))[:16] for stamp in stamps]  # '2023-11-14 22:13'
    assert (chosen(text, "when").type, chosen(text, "when").options) == ("date", {})
    zoned = [pd.Timestamp(stamp, unit="s").strftime("%Y-%m-%dT%H:%M:%S+02:00") for stamp in stamps]
    assert chosen(zoned).type == "date"
    european = [pd.Timestamp(stamp, unit="s").strftime("%d/%m/%Y") for stamp in stamps]
    assert chosen(european).options == {"dayfirst": True}, "a first part above 12 is a day"
    american = [pd.Timestamp(stamp, unit="s").strftime("%m/%d/%Y") for stamp in stamps]
    assert chosen(american).options == {}
    days = [int(pd.Timestamp(stamp, unit="s").strftime("%Y%m%d")) for stamp in stamps]
    assert chosen(days, "order_date").options == {"format": "%Y%m%d"}
    plain = chosen(days, "code")
    assert plain.type == "number" and plain.runner_up[0] == "date", "without a date's name: a number, date close"
    assert chosen(stamps.astype(np.int64), "created_at").options == {"unit": "s"}
    assert chosen((stamps * 1000).astype(np.int64), "event_time").options == {"unit": "ms"}
    assert chosen(stamps.astype(np.int64), "amount").type == "number"


def test_labels_text_sets_and_numbers(rng):
    labels = rng.choice(["very good", "not bad", "poor fit"], ROWS)
    assert chosen(labels, "verdict").type == "category", "short labels that repeat"
    words = ["soft", "fits", "nice", "too", "small", "love", "it", "runs", "large", "fabric"]
    reviews = [" ".join(rng.choice(words, int(rng.integers(4, 15)))) for _ in range(ROWS)]
    choice = chosen(reviews, "review")
    assert choice.type == "text" and choice.options == {"encoder": "tfidf"}, "an input: TF-IDF n-grams"
    assert 16 <= chosen(reviews, "review", target=True).options["max_length"] <= 512, "a generated text's length"
    replies = [" ".join(rng.choice(words, int(rng.integers(3, 9)))) for _ in range(ROWS)]
    config, _ = infer_config(pd.DataFrame({"review": reviews, "reply": replies}), ["reply"])
    assert config["outputs"][0]["type"] == "text" and config["inputs"][0]["encoder"] == "tfidf", \
        "a generated text from free text: a text output, its input read as TF-IDF n-grams"
    tags = [";".join(rng.choice(["red", "blue", "green", "dark"], int(rng.integers(1, 3)), replace=False))
            for _ in range(ROWS)]
    assert chosen(tags).options == {"delimiter": ";"}
    assert chosen([", ".join(tag.split(";")) for tag in tags]).options == {"delimiter": ","}
    assert chosen([list(tag.split(";")) for tag in tags]).type == "set"
    prose = [f"{' '.join(rng.choice(words, 4))}, {' '.join(rng.choice(words, 3))}" for _ in range(ROWS)]
    assert chosen(prose).type == "text", "prose with commas is not a set"
    stars = rng.integers(1, 6, ROWS)
    assert chosen(stars).type == "number" and chosen(stars, target=True).type == "category"
    assert chosen(rng.lognormal(3, 2, ROWS)).options == {"normalize": "log"}
    assert chosen(["yes", "no"] * 50).type == "binary"
    assert chosen([None] * 5).reason == "empty" and chosen(["x"] * 30).reason == "constant"


# ---- a new type takes part, with no change to init_config.py ----

class Colour(base.Feature):
    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        if column.all_text and column.strings.str.fullmatch(r"#[0-9a-f]{6}").all():
            return base.Sniff(0.99, "colours written '#rrggbb'", {"space": "rgb"})
        return None


def test_a_new_registered_type_is_asked(monkeypatch, rng):
    module = types.SimpleNamespace(Feature=Colour, CAN_BE_INPUT=True, CAN_BE_OUTPUT=False, READ_AS="string")
    monkeypatch.setitem(features.REGISTRY, "colour", module)
    frame = pd.DataFrame({"paint": [f"#{value:06x}" for value in rng.integers(0, 16 ** 6, 50)],
                          "price": rng.normal(10, 2, 50)})
    config, notes = infer_config(frame, ["price"])
    assert config["inputs"] == [{"name": "paint", "type": "colour", "space": "rgb"}]
    assert any("'paint': colour 0.99 (colours written '#rrggbb')" in note for note in notes)


# ---- the command ----

def test_init_config_prints_a_line_per_column_from_the_first_rows(tmp_path, rng):
    rows = 60
    frame = pd.DataFrame({"user_id": np.arange(rows) % 25,
                          "when": [f"2024-03-{day:02d} 14:22" for day in rng.integers(1, 29, rows)],
                          "amount": rng.lognormal(3, 1, rows), "label": rng.choice(["a", "b"], rows)})
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    sample, _ = read_sample(path, 25)
    assert len(sample) == 25 and list(sample.columns) == list(frame.columns)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(["init-config", "--data", str(path), "--target", "label"]) == 0
    text = output.getvalue()
    assert "# 'when': date 0.92 (dates like '2024-03-" in text and "# 'label': binary 0.95" in text
    assert "# 'user_id': id 0.90" in text and "(its first 60 rows)" in text
    config = lamina.load_config(yaml.safe_load(text))
    assert [feature.type for feature in config.inputs] == ["id", "date", "number"]


def test_the_inferred_config_trains_and_learns_from_the_date(rng):
    """The zero-config path: a config from init-config alone beats the majority class by a wide margin
    on a label that only the hour of the inferred date column tells."""
    rows = 900
    stamps = 1.7e9 + rng.integers(0, 200 * 86400, rows)
    hours = (stamps % 86400) // 3600
    frame = pd.DataFrame({"created_at": [str(pd.Timestamp(int(stamp), unit="s")) for stamp in stamps],
                          "noise": rng.normal(size=rows),
                          "shift": np.where((hours >= 22) | (hours < 6), "night", "day")})
    config, _ = infer_config(frame, ["shift"])
    assert [feature["type"] for feature in config["inputs"]] == ["date", "number"]
    config["training"].update(epochs=20, batch_size=32)
    config["hidden"] = {"layers": 1, "size": 32}
    model = lamina.Model(config).fit(frame.iloc[:600], quiet=True)
    test = frame.iloc[600:]
    accuracy = float((model.predict(test)["shift"].to_numpy() == test["shift"].to_numpy()).mean())
    majority = float((test["shift"] == "day").mean())
    assert accuracy > majority + 0.15, (accuracy, majority)


def test_labels_holding_a_comma_stay_categories(rng):
    jobs = rng.choice(["Sales, retail", "Tech, support", "Admin", "Care, home"], ROWS)
    assert chosen(jobs, "occupation").type == "category"
    amounts = [f"{value:,}" for value in rng.integers(100, 5_000_000, ROWS)]  # '1,250', '3,400,000'
    choice = chosen(amounts, "amount")
    assert choice.type is None and "between thousands" in choice.reason

"""The date data type: parsing each format (ISO 8601 with and without time and zone, day/month/year,
epoch seconds and milliseconds, a strftime format), errors naming the row, the cyclical encoding, a
train/predict/save/load round trip with a signal in the hour, and the time split on a date column."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import DataError, features
from lamina.config import INPUT_MODELS, load_config
from lamina.data import split_rows
from lamina.features import classic
from lamina.features.base import Unsupported
from lamina.features.date import classic_parts, iso, seconds


def date_feature(**options):
    return features.build(INPUT_MODELS["date"](name="when", type="date", **options))


def as_iso(column, **options) -> list:
    return [None if np.isnan(value) else iso(value) for value in seconds(pd.Series(column, dtype=object), "when",
                                                                         **options)]


def test_each_format_parses_to_the_same_instant():
    cells = ["2024-03-01T14:22:00", "2024-03-01 14:22", "2024-03-01T15:22:00+01:00", "2024-03-01T14:22:00Z",
             1709302920, "1709302920", 1709302920000, 1709302920.0, pd.Timestamp("2024-03-01 14:22")]
    assert as_iso(cells) == ["2024-03-01 14:22:00"] * len(cells)
    assert as_iso(["2024-03-01", "2024-12-31"]) == ["2024-03-01 00:00:00", "2024-12-31 00:00:00"]
    assert as_iso(["01/03/2024 14:22"], dayfirst=True) == ["2024-03-01 14:22:00"]
    assert as_iso(["01/03/2024"]) == ["2024-01-03 00:00:00"]  # month first unless dayfirst
    assert as_iso(["01.03.2024 14:22"], format="%d.%m.%Y %H:%M") == ["2024-03-01 14:22:00"]
    assert as_iso([20240301, "20240302"], format="%Y%m%d") == ["2024-03-01 00:00:00", "2024-03-02 00:00:00"]
    assert as_iso([1709302920], unit="ms")[0].startswith("1970-01-20")
    assert as_iso([None, "", np.nan, "2024-03-01"])[:3] == [None, None, None]


def test_unreadable_dates_and_missing_ones_are_errors_naming_the_row():
    column = pd.Series(["2024-03-01", "2024-03-02", "yesterday"], index=[10, 11, 12])
    with pytest.raises(DataError, match=r"column 'when' row 12: 'yesterday'.*ISO 8601"):
        date_feature().fit(column)
    with pytest.raises(DataError, match=r"row 1: '2024-03-02'.*does not match format '%d\.%m\.%Y'"):
        date_feature(format="%d.%m.%Y").fit(pd.Series(["01.03.2024", "2024-03-02"]))
    with pytest.raises(DataError, match="row 1"):
        seconds(pd.Series([1.7e9, 1e30]), "when")  # a number no calendar holds
    strict = date_feature(missing="error")
    strict.fit(pd.Series(["2024-03-01", "2024-03-02"]))
    with pytest.raises(DataError, match=r"column 'when' row 1: missing value"):
        strict.transform(pd.Series(["2024-03-01", None]))
    assert date_feature(missing="drop").drops_missing()
    with pytest.raises(lamina.ConfigError):
        load_config({"inputs": [{"name": "when", "type": "date", "unit": "days"}],
                     "outputs": [{"name": "y", "type": "number"}]})


def test_cyclical_parts_put_midnight_neighbours_and_new_year_close():
    feature = date_feature(embedding_size=0)
    times = pd.Series(["2024-03-01 23:59", "2024-03-02 00:01", "2024-03-02 12:00", "2024-12-31 12:00",
                       "2025-01-01 12:00", "2024-07-01 12:00", None])
    feature.fit(times)
    encoded = feature.encoder()(feature.transform(times))  # (7, 8 sin/cos + year + days + missing flag)
    assert encoded.shape == (7, 11) and torch.isfinite(encoded).all()
    day = encoded[:, [0, 4]]  # sin and cos of the time of day
    assert torch.dist(day[0], day[1]) < 0.02 and torch.dist(day[1], day[2]) > 1.5
    month = encoded[:, [3, 7]]  # sin and cos of the month
    assert torch.dist(month[3], month[4]) < 0.6 and torch.dist(month[4], month[5]) > 1.5
    assert encoded[6, -1] == 1 and encoded[:6, -1].eq(0).all(), "a missing date is flagged"
    weekday = feature.transform(pd.Series(["2024-03-04"]))[0, 1]  # a Monday
    assert float(weekday) == 0.0


def test_classic_parts_serving_and_export():
    feature = date_feature()
    column = pd.Series(["2024-03-01 14:22", "2024-06-01", None, 1709302920])
    feature.fit(column)
    numbers = classic.Numbers("when", classic.LINEAR, feature.classic_encoder(classic.LINEAR, 0).function, "")
    table = pickle.loads(pickle.dumps(numbers.fit(column))).transform(column)
    assert table.shape == (4, 11) and np.isfinite(table).all()  # 10 parts and a missing flag
    assert classic_parts(column, "when").shape == (4, 10)
    field = feature.request_field()
    assert field.read("2024-03-01") == "2024-03-01" and field.read(1709302920) == "1709302920"
    with pytest.raises(ValueError, match="not a date"):
        field.read("soon")
    with pytest.raises(Unsupported, match="'when' has type 'date'"):
        feature.export_entry()


def hourly_frame(rows: int, seed: int) -> pd.DataFrame:
    """A label that is 'night' between 22:00 and 06:00 (wrapping midnight), else 'day'."""
    rng = np.random.default_rng(seed)
    stamps = 1.7e9 + rng.integers(0, 200 * 86400, rows)
    hours = (stamps % 86400) // 3600
    return pd.DataFrame({"when": [iso(stamp) for stamp in stamps],
                         "label": np.where((hours >= 22) | (hours < 6), "night", "day")})


def test_a_model_learns_the_hour_and_round_trips(tmp_path):
    frame = hourly_frame(600, 0)
    config = {"inputs": [{"name": "when", "type": "date"}], "outputs": [{"name": "label", "type": "binary"}],
              "hidden": {"layers": 1, "size": 32}, "training": {"epochs": 25, "batch_size": 32,
                                                                 "learning_rate": 0.01, "seed": 0}}
    model = lamina.Model(config).fit(frame, quiet=True)
    test = hourly_frame(300, 1)
    predicted = model.predict(test)
    accuracy = float((predicted["label"].to_numpy() == test["label"].to_numpy()).mean())
    assert accuracy > 0.85, accuracy  # the majority class is right 2/3 of the time
    model.save(tmp_path / "model")
    again = lamina.load(tmp_path / "model").predict(test)
    np.testing.assert_allclose(again["label_probability"], predicted["label_probability"], rtol=1e-5, atol=1e-6)


def test_time_split_reads_the_date_column_as_its_type_does():
    # day first: pandas' own guess (month first) would put 02/01 (2 January) before 01/02 (1 February)
    frame = pd.DataFrame({"when": ["05/01/2024", "01/02/2024", "02/01/2024", "20/03/2024", "03/01/2024"] * 4,
                          "y": np.arange(20.0)})
    config = load_config({"inputs": [{"name": "when", "type": "date", "dayfirst": True}],
                          "outputs": [{"name": "y", "type": "number"}],
                          "split": {"method": "time", "column": "when", "ratios": [0.6, 0.2, 0.2]}})
    parts = split_rows(frame, config)
    assert set(frame["when"].iloc[parts["test"]]) == {"20/03/2024"}
    assert set(frame["when"].iloc[parts["validation"]]) == {"01/02/2024"}
    frame.loc[7, "when"] = "not a date"
    with pytest.raises(DataError, match="row 7"):
        split_rows(frame, config)

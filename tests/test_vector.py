"""The `vector` data type: a known linear map between vectors is learned, cells read alike from lists
and strings, bad cells are refused naming the column and row, save/load and serving agree."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import features
from lamina.config import INPUT_MODELS

MAP = np.array([[1.0, -2.0, 0.5, 0.3], [0.0, 1.5, -1.0, 2.0]])  # y = MAP x + offset + noise


def linear_map(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """4-component inputs on different scales and offsets -> 2-component outputs far from 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 5.0, -2.0, 10.0]
    y = x @ MAP.T + [100.0, -50.0] + rng.normal(scale=0.1, size=(rows, 2))
    return pd.DataFrame({"x": [list(row) for row in x], "y": [list(row) for row in y]})


CONFIG = {"inputs": [{"name": "x", "type": "vector"}], "outputs": [{"name": "y", "type": "vector"}],
          "hidden": {"layers": 1, "size": 64},
          "training": {"epochs": 10, "learning_rate": 0.003, "batch_size": 64}}


@pytest.fixture(scope="module")
def trained():
    frame = linear_map()
    return lamina.Model(CONFIG).fit(frame, quiet=True), frame


def test_learns_a_linear_map_between_vectors(trained):
    model, frame = trained
    test = model.metrics_["test"]["y"]
    assert test["r2"] > 0.95, test  # measured 0.997; predicting the mean scores 0
    predicted = model.predict(frame.head(5))["y"]
    assert all(isinstance(row, list) and len(row) == 2 and all(isinstance(value, float) for value in row)
               for row in predicted)
    truth = np.array(frame["y"].head(5).tolist())
    np.testing.assert_allclose(np.array(predicted.tolist()), truth, atol=2.0)  # the user's units: ~100 and ~-50


def _fitted(**options):
    feature = features.build(INPUT_MODELS["vector"](name="pose", type="vector", **options))
    feature.fit(pd.Series([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5], None]))
    return feature


def test_string_and_list_cells_give_identical_tensors():
    feature = _fitted()
    lists = pd.Series([[1, 2, 3], [0.5, -2.0, 1e3], np.array([7.0, 8.0, 9.0])])
    strings = pd.Series(["1,2,3", " 0.5, -2.0 ,1e3", "[7.0, 8.0, 9.0]"])
    numpy_printed = pd.Series(["[1. 2. 3.]", "[ 0.5 -2. 1000.]", "[7. 8. 9.]"])  # a DataFrame of arrays to CSV
    want = feature.transform(lists)
    assert want.shape == (3, 3) and want.dtype == torch.float32
    assert torch.equal(feature.transform(strings), want)
    assert torch.equal(feature.transform(numpy_printed), want)
    assert torch.isnan(feature.transform(pd.Series([None, "", float("nan")]))).all()  # missing cells


@pytest.mark.parametrize("cell, words", [("1,2", "2 components"), ("1,x,3", "not a list of numbers"),
                                         ([1.0, float("nan"), 3.0], "NaN"), ([True, False, True], "true/false")])
def test_bad_cells_name_the_column_and_the_row(cell, words):
    feature = _fitted()
    with pytest.raises(lamina.DataError, match=r"column 'pose' row 17: .*" + words):
        feature.transform(pd.Series([[1, 2, 3], cell], index=[16, 17]))


def test_missing_cell_with_missing_error_names_the_row():
    feature = features.build(INPUT_MODELS["vector"](name="pose", type="vector", missing="error"))
    feature.fit(pd.Series([[1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(lamina.DataError, match="column 'pose' row b: missing value"):
        feature.transform(pd.Series([[1.0, 2.0], None], index=["a", "b"]))


def test_training_cells_of_two_lengths_are_refused_naming_both_rows():
    frame = linear_map(40)
    frame.loc[7, "x"] = [1.0, 2.0, 3.0]
    with pytest.raises(lamina.DataError, match=r"column 'x' row 7: 3 components.* 4, as row \d+ has"):
        lamina.Model(CONFIG).fit(frame, quiet=True)


def test_missing_cells_are_filled_with_the_training_means():
    feature = _fitted()
    encoded = feature.encoder()(feature.transform(pd.Series([None, [2.5, 3.5, 4.75]])))
    assert torch.equal(encoded[0, :3], encoded[1, :3])  # both at the mean: 0 in normalised units
    assert encoded[0, 3] == 1.0 and encoded[1, 3] == 0.0  # the missing flag


def test_save_and_load_give_identical_predictions(trained, tmp_path):
    model, frame = trained
    model.save(tmp_path / "model")
    restored = lamina.load(tmp_path / "model")
    pd.testing.assert_frame_equal(model.predict(frame.head(50)), restored.predict(frame.head(50)))


def test_served_model_answers_a_list_and_refuses_an_over_long_one(trained):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lamina.serving.app import create_app

    model, frame = trained
    cell = frame["x"].iloc[0]
    with TestClient(create_app(model, "vector")) as client:
        answer = client.post("/predict", json={"rows": [{"x": cell}, {"x": ",".join(map(str, cell))}]})
        assert answer.status_code == 200, answer.text
        first, second = (row["y"] for row in answer.json()["predictions"])
        want = model.predict(frame.head(1))["y"].iloc[0]
        np.testing.assert_allclose(first, want, rtol=1e-5)
        np.testing.assert_allclose(second, want, rtol=1e-5)
        refused = client.post("/predict", json={"rows": [{"x": cell + [1.0]}]})
        assert refused.status_code == 422 and "rows[0].x" in refused.text and "5 numbers" in refused.text, \
            refused.text
        assert client.post("/predict", json={"rows": [{"x": [1.0, "a", 2.0, 3.0]}]}).status_code == 422


def test_an_onnx_export_fed_from_a_table_agrees_with_predict(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from lamina import export

    model, frame = trained
    export.export(model, tmp_path, "onnx")
    got = export.run_onnx(tmp_path, frame.head(20)[["x"]])["y"]
    np.testing.assert_allclose(got, np.array(model.predict(frame.head(20))["y"].tolist()), rtol=1e-4, atol=1e-3)

"""The prediction fast path: a few rows (dicts) are encoded by each input's encode_rows, without a
DataFrame, and must give what the DataFrame path gives, bit for bit, for every registered input type;
the same errors for bad cells; and serving a tabular model imports none of the heavy stacks."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import features
from lamina.config import INPUT_MODELS
from lamina.errors import DataError
from conformance_types import columns, make, sample, trained


def plain(cells) -> list:
    """Cells as a row dict holds them: numpy scalars as Python values, arrays as they are."""
    return [cell.item() if isinstance(cell, np.generic) else cell for cell in cells]


def as_json(cells: list) -> list | None:
    """The cells after a trip through JSON (lists for arrays), or None when they do not go into JSON."""
    try:
        return json.loads(json.dumps([cell.tolist() if isinstance(cell, np.ndarray) else cell for cell in cells]))
    except (TypeError, ValueError):
        return None


def through_frame(feature, cells: list):
    """What the DataFrame path gives: transform of the column of a DataFrame built from row dicts."""
    return feature.transform(pd.DataFrame([{"column": cell} for cell in cells])["column"])


def assert_same_tensor(fast, reference) -> None:
    assert isinstance(fast, torch.Tensor) and isinstance(reference, torch.Tensor)
    assert fast.dtype == reference.dtype and fast.shape == reference.shape
    # bit for bit (NaN where missing included): the same encoding of the same cells
    assert fast.contiguous().numpy().tobytes() == reference.contiguous().numpy().tobytes()


@pytest.mark.parametrize("type_name", features.input_types())
def test_encode_rows_gives_what_transform_gives(type_name):
    feature = make(type_name, "input")
    feature.fit(columns(feature, sample(type_name)))
    cells = plain(sample(type_name, rows=24, seed=1))
    variants = [cells] + ([as_json(cells)] if as_json(cells) is not None else [])
    for values in variants:
        for part in (values[:1], values[3:4], values[:16], values):  # one row, the missing one, a batch
            assert_same_tensor(feature.encode_rows(part), through_frame(feature, part))


@pytest.mark.parametrize("type_name", features.input_types())
def test_predict_of_a_few_dicts_equals_the_dataframe_path(type_name):
    model, frame = trained(type_name, "input")
    rows = [dict(zip(frame.columns, plain(values))) for values in frame.head(12).itertuples(index=False)]
    assert model._few_rows(rows) is not None  # the fast path is taken
    fast = model.predict(rows)
    reference = model.predict(pd.DataFrame(rows))
    pd.testing.assert_frame_equal(fast, reference, check_exact=True)
    # one row against one row: a matrix product of 1 row may round differently from one of 12
    pd.testing.assert_frame_equal(model.predict(rows[3]), model.predict(pd.DataFrame([rows[3]])), check_exact=True)
    records = model.predict_rows(rows)
    expected = json.loads(reference.to_json(orient="records", double_precision=15))
    assert len(records) == len(expected)
    for got, want in zip(records, expected):
        assert got.keys() == want.keys()
        for key in got:
            if isinstance(want[key], float):  # to_json keeps 15 digits; predict_rows all of a double
                assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15)
            else:
                assert got[key] == want[key]


BAD = [  # (type, options, cells): a bad cell or a gap refused under missing: error
    ("number", {}, [1.0, "abc"]),
    ("number", {}, [1.0, float("inf")]),
    ("number", {}, [2.0, True]),
    ("number", {"missing": "error"}, [1.0, None]),
    ("binary", {}, ["yes", "maybe"]),
    ("binary", {"missing": "error"}, ["yes", " "]),
    ("category", {"missing": "error"}, ["red", None]),
    ("id", {"missing": "error", "min_count": 1}, ["user1", None]),
    ("set", {"delimiter": "|", "missing": "error"}, ["a|b", None]),
    ("vector", {}, [[1.0, 2.0, 3.0], [1.0, 2.0]]),
]


@pytest.mark.parametrize("type_name, options, cells", BAD)
def test_bad_cells_give_the_same_error_as_the_dataframe_path(type_name, options, cells):
    config = {"name": "column", "type": type_name, **options}
    feature = features.build(INPUT_MODELS[type_name](**config))
    clean = sample(type_name)
    feature.fit(clean.dropna() if options.get("missing") == "error" else clean)
    with pytest.raises(DataError) as reference:
        through_frame(feature, cells)
    with pytest.raises(DataError) as fast:
        feature.encode_rows(cells)
    assert str(fast.value) == str(reference.value)
    assert "column 'column' row 1" in str(fast.value)


def test_unseen_and_missing_cells_are_filled_as_transform_fills_them():
    feature = make("category", "input")
    feature.fit(sample("category"))
    cells = ["purple", None, "", "  red ", 3, 2.0, True]
    assert_same_tensor(feature.encode_rows(cells), through_frame(feature, cells))
    number = make("number", "input")
    number.fit(sample("number"))
    cells = [1, None, float("nan"), 2 ** 60, "4.5", -0.0]
    assert_same_tensor(number.encode_rows(cells), through_frame(number, cells))


def test_a_model_refuses_a_bad_row_with_the_dataframe_paths_message():
    model, _ = trained("number", "input")
    rows = [{"x": 0.5, "column": 3.0}, {"x": "high", "column": 1.0}]
    with pytest.raises(DataError) as reference:
        model.predict(pd.DataFrame(rows))
    with pytest.raises(DataError) as fast:
        model.predict(rows)
    assert str(fast.value) == str(reference.value)
    with pytest.raises(DataError, match="column 'column' named in the config is not in"):
        model.predict([{"x": 0.5}])  # a column no row names: the DataFrame path's error


# stacks a tabular model never needs: images, sound and text models, explanations, plots, export, tracking,
# simulation, and scikit-learn / SciPy (metrics and the classic baseline: training and comparing only)
HEAVY = ["torchvision", "torchaudio", "soundfile", "transformers", "tokenizers", "captum", "matplotlib", "onnx",
         "onnxruntime", "onnxscript", "mlflow", "tensorboard", "torch.utils.tensorboard", "pybullet", "sklearn",
         "scipy", "lightgbm", "xgboost", "lamina.explain", "lamina.export", "lamina.compare", "lamina.baseline"]


def test_serving_a_tabular_model_imports_no_heavy_stack(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(40, 10, 200), "kind": rng.choice(["a", "b", "c"], 200),
                          "flag": rng.choice(["yes", "no"], 200)})
    frame["y"] = (frame["age"] > 40).map({True: "high", False: "low"})
    config = {"inputs": [{"name": "age", "type": "number"}, {"name": "kind", "type": "category"},
                         {"name": "flag", "type": "binary"}],
              "outputs": [{"name": "y", "type": "binary"}], "hidden": {"layers": 1, "size": 8},
              "training": {"epochs": 1, "batch_size": 64}}
    lamina.Model(config).fit(frame, output_dir=tmp_path / "model", quiet=True)
    script = textwrap.dedent(f"""
        import json, sys
        from fastapi.testclient import TestClient
        import lamina
        from lamina.serving.app import create_app
        model = lamina.load({str(tmp_path / 'model')!r})
        with TestClient(create_app(model, "model")) as client:
            import time
            for _ in range(100):
                if client.get("/health").status_code == 200:
                    break
                time.sleep(0.05)
            answer = client.post("/predict", json={{"rows": [{{"age": 50, "kind": "a", "flag": "yes"}}]}})
            assert answer.status_code == 200, answer.text
            print(json.dumps(answer.json()))
        print(json.dumps(sorted(sys.modules)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    answer, modules = [json.loads(line) for line in result.stdout.strip().splitlines()[-2:]]
    assert answer["predictions"][0]["y"] in ("high", "low")
    loaded = [name for name in HEAVY if name in modules]
    assert not loaded, f"serving a tabular model imported {loaded}"


def test_more_rows_than_the_fast_path_takes_go_through_a_dataframe(monkeypatch):
    model, frame = trained("category", "input")
    rows = [dict(zip(frame.columns, plain(values))) for values in frame.head(12).itertuples(index=False)]
    fast = model.predict_rows(rows)
    monkeypatch.setattr(lamina.api, "FAST_ROWS", 8)
    assert model._few_rows(rows) is None
    through_frame_rows = model.predict_rows(rows)
    assert [row.keys() for row in fast] == [row.keys() for row in through_frame_rows]
    for got, want in zip(fast, through_frame_rows):
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value)


def mixed_model(tmp_path=None):
    """Numbers of every encoding (log, missing values, different bin counts), categories and a binary,
    interleaved as in adult, so that the number and category blocks take members that are not adjacent."""
    rng = np.random.default_rng(0)
    rows = 240
    frame = pd.DataFrame({"age": rng.normal(40, 10, rows), "kind": rng.choice(["a", "b", "c"], rows),
                          "income": rng.lognormal(10, 1, rows), "colour": rng.choice(["red", "blue"], rows),
                          "hours": rng.normal(40, 5, rows), "flag": rng.choice(["yes", "no"], rows),
                          "few": rng.integers(0, 3, rows).astype(float), "level": rng.normal(0, 1, rows),
                          "weight": rng.normal(70, 9, rows), "gain": rng.lognormal(5, 2, rows)})
    frame.loc[::17, "hours"] = np.nan  # a missing flag on one periodic number
    frame.loc[::13, "weight"] = np.nan  # and on one binned number
    frame["y"] = np.where(frame["age"] + rng.normal(0, 5, rows) > 40, "high", "low")
    periodic = {"encoding": "periodic", "frequencies": 8, "sigma": 1.0, "embedding_size": 6}
    config = {"inputs": [{"name": "age", "type": "number", **periodic},
                         {"name": "kind", "type": "category"},
                         {"name": "income", "type": "number", "normalize": "log", **periodic},
                         {"name": "colour", "type": "category"},
                         {"name": "hours", "type": "number", **periodic},
                         {"name": "flag", "type": "binary"},
                         {"name": "few", "type": "number", "bins": 8},  # fewer edges than bins: its own shape
                         {"name": "level", "type": "number", "bins": 8},
                         {"name": "weight", "type": "number", "bins": 8},
                         {"name": "gain", "type": "number", "encoding": "plain", "normalize": "log"}],
              "outputs": [{"name": "y", "type": "binary"}], "hidden": {"layers": 2, "size": 16},
              "training": {"epochs": 2, "batch_size": 64}}
    model = lamina.Model(config).fit(frame, output_dir=tmp_path, quiet=True)
    return model, frame


def grouped_and_alone(network, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits with same-kind encoders computed together, and with every encoder alone."""
    with torch.inference_mode():
        grouped = network.group_encoders(True)(inputs)["y"]
        alone = network.group_encoders(False)(inputs)["y"]
    network.group_encoders(True)
    return grouped, alone


def test_grouped_encoders_give_the_outputs_of_the_encoders_alone():
    from lamina.data import tensors
    from lamina.features import number_block

    model, frame = mixed_model()
    network = model.network_.eval()
    kinds = {positions: block for positions, block in network.runs}
    assert kinds[(0, 2, 4, 6, 7, 8, 9)] is not None, "the numbers, apart in the config, form one block"
    assert kinds[(1, 3)] is not None and kinds[(5,)] is None, "the categories too; a lone binary runs alone"
    assert network.order is not None  # grouped columns go back to the inputs' order
    assert not any(key.startswith("blocks.") for key in network.state_dict())
    unseen = frame.head(64).copy()
    unseen.loc[[1, 5], ["age", "income", "level", "gain"]] = np.nan  # gaps at prediction time: the fills
    inputs = tensors(unseen, model.inputs_)["inputs"]
    grouped, alone = grouped_and_alone(network, inputs)
    # the same float32 operations on the same values, batched: only the order of the sums in a batched
    # matrix product and vectorised sin/cos/log1p of another length may round differently, by a few ulps
    torch.testing.assert_close(grouped, alone, rtol=1e-5, atol=1e-5)
    one_row = {name: values[:1] for name, values in inputs.items()}
    torch.testing.assert_close(*grouped_and_alone(network, one_row), rtol=1e-5, atol=1e-5)
    many = tensors(pd.concat([unseen] * 5, ignore_index=True), model.inputs_)["inputs"]
    assert len(many["age"]) > number_block.GROUPED_ROWS  # above it, wide encodings run member by member
    torch.testing.assert_close(*grouped_and_alone(network, many), rtol=1e-5, atol=1e-5)
    # gradients reach the members' weights through a block: the same as through the encoders (eval mode:
    # no dropout draws)
    gradients = []
    for enabled in (True, False):
        network.zero_grad()
        network.group_encoders(enabled)(inputs)["y"].sum().backward()
        gradients.append(torch.cat([parameter.grad.flatten() for parameter in network.encoders.parameters()]))
    network.group_encoders(True)
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-4, atol=1e-5)


def test_weights_saved_by_encoders_alone_load_into_the_grouped_network(tmp_path):
    """The saved weights keep one key per encoder (blocks hold no saved state): a model saved from a network
    computing every encoder alone, as models were saved before encoders were grouped, loads into the
    grouped network and predicts the same."""
    from safetensors.torch import load_file

    model, frame = mixed_model()
    network = model.network_.eval()
    grouped_keys = set(network.state_dict())
    network.group_encoders(False)
    assert set(network.state_dict()) == grouped_keys
    inputs = frame.drop(columns="y").head(20)
    rows = [dict(zip(inputs.columns, plain(values))) for values in inputs.itertuples(index=False)]
    before = model.predict(pd.DataFrame(rows))
    folder = model.save(tmp_path / "alone")
    saved = load_file(str(folder / "weights.safetensors"))
    assert set(saved) == grouped_keys and all(key.split(".")[0] in ("encoders", "trunk", "heads") for key in saved)
    loaded = lamina.load(folder)
    assert any(block is not None for _, block in loaded.network_.runs)  # grouped once loaded
    after = loaded.predict(pd.DataFrame(rows))
    assert (after["y"] == before["y"]).all()
    np.testing.assert_allclose(after["y_probability"], before["y_probability"], rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(loaded.predict(rows), after, check_exact=True)  # the fast path, the same network

"""`lamina export`: ONNX Runtime and torch.export give Model.predict's numbers (within float32
rounding: 1e-5 relative) from tensors built with preprocessing.json alone; types that cannot export
are refused clearly."""
from __future__ import annotations

import contextlib
import io
import json
import types

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import export, features
from lamina.cli import main
from lamina.config import INPUT_MODELS, OUTPUT_MODELS
from lamina.errors import ConfigError

from helpers_data import config, people

pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra: pip install 'lamina[export]'")

OUTPUTS = [{"name": "income", "type": "binary"}, {"name": "segment", "type": "category"},
           {"name": "spend", "type": "number"}, {"name": "tags_out", "type": "set", "delimiter": "|"}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    frame = people(200)
    frame["tags_out"] = frame["tags"]
    path = tmp_path_factory.mktemp("export") / "model"
    lamina.Model(config(outputs=OUTPUTS)).fit(frame, output_dir=path, quiet=True)
    return path


def fresh_rows() -> pd.DataFrame:
    """Rows the model never saw, with a missing number, an unseen city, a missing binary and set."""
    frame = people(60, seed=7)
    frame.loc[1, "age"] = np.nan
    frame.loc[2, "city"] = "tokyo"
    frame.loc[3, "member"] = None
    frame.loc[4, "tags"] = None
    frame.loc[5, "tags"] = "a|zzz"
    return frame


def compare(outputs: dict, predictions: pd.DataFrame) -> None:
    def columns(prefix):
        return predictions[[column for column in predictions if column.startswith(prefix)]].to_numpy()

    pairs = [(outputs["income_probability"], predictions["income_probability"].to_numpy()),
             (outputs["segment_probabilities"], columns("segment_probability_")),
             (outputs["spend"], predictions["spend"].to_numpy()),
             (outputs["tags_out_probabilities"], columns("tags_out_probability_"))]
    for got, want in pairs:
        assert got.shape == want.shape
        close(got, want)


def close(got: np.ndarray, want: np.ndarray) -> None:
    """Another runtime's kernels add up in another order: float32 rounding, relative to the values'
    scale (spend is in data units, about 40 to 160; probabilities are at most 1)."""
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_onnx_matches_pytorch(folder, tmp_path):
    model = lamina.load(folder)
    target = export.export(model, tmp_path / "onnx", "onnx")
    assert target.name == "model.onnx"
    rows = fresh_rows()
    compare(export.run_onnx(tmp_path / "onnx", rows), model.predict(rows))


def test_torch_export_matches_pytorch(folder, tmp_path):
    model = lamina.load(folder)
    target = export.export(model, tmp_path / "pt2", "torch-export")
    description = json.loads((tmp_path / "pt2" / "preprocessing.json").read_text())
    rows = fresh_rows()
    feeds = export.feeds(description, rows)
    program = torch.export.load(target).module()
    with torch.no_grad():
        results = program(*[torch.from_numpy(feeds[entry["tensor"]["name"]]) for entry in description["inputs"]])
    names = [entry["tensor"]["name"] for entry in description["outputs"]]
    compare({name: result.numpy() for name, result in zip(names, results)}, model.predict(rows))


def test_manifest_holds_the_learned_preprocessing(folder, tmp_path):
    model = lamina.load(folder)
    export.export(model, tmp_path / "onnx", "onnx")
    description = json.loads((tmp_path / "onnx" / "preprocessing.json").read_text())
    inputs = {entry["name"]: entry for entry in description["inputs"]}
    assert description["model_file"] == "model.onnx" and description["lamina_version"] == lamina.__version__
    city = model.inputs_[1].stats
    assert inputs["city"]["preprocess"]["vocabulary"] == city["vocabulary"]
    assert inputs["city"]["preprocess"]["missing_index"] == city["vocabulary"].index("<missing>")
    assert inputs["city"]["tensor"] == {"name": "city", "dtype": "int64", "shape": ["rows"]}
    assert inputs["age"]["preprocess"]["stats"] == model.inputs_[0].stats
    assert inputs["member"]["preprocess"]["labels"] == ["no", "yes"]
    assert inputs["tags"]["tensor"]["shape"] == ["rows", 3]
    outputs = {entry["name"]: entry for entry in description["outputs"]}
    assert outputs["income"]["labels"] == ["high", "low"] and outputs["income"]["threshold"] == 0.5


def test_image_inputs_export(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, 60)
    frame = pd.DataFrame({"photo": [np.full((10, 10, 3), level, dtype=np.uint8) for level in levels],
                          "size": rng.uniform(0, 1, 60), "label": np.where(levels > 127, "bright", "dark")})
    settings = {"inputs": [{"name": "photo", "type": "image", "size": 8, "width": 4, "stages": 2,
                            "embedding_size": 4}, {"name": "size", "type": "number"}],
                "outputs": [{"name": "label", "type": "category"}]}
    model = lamina.Model(config(**settings)).fit(frame, quiet=True)
    export.export(model, tmp_path / "onnx", "onnx")
    table = lamina.data.tensors(frame, model.inputs_)["inputs"]
    got = export.run_onnx(tmp_path / "onnx", {name: tensor.numpy() for name, tensor in table.items()})
    want = model.predict(frame)[["label_probability_bright", "label_probability_dark"]].to_numpy()
    close(got["label_probabilities"], want)


def test_text_and_unknown_formats_are_refused_clearly(folder, tmp_path):
    model = lamina.load(folder)
    with pytest.raises(ConfigError, match="unknown export format 'tflite'; expected one of: onnx, torch-export"):
        export.export(model, tmp_path / "x", "tflite")
    reply = features.build(OUTPUT_MODELS["text"](name="reply", type="text"))
    chatbot = types.SimpleNamespace(inputs_=model.inputs_, outputs_=[reply])
    with pytest.raises(ConfigError, match="output 'reply' has type 'text'.*search loop.*lamina serve"):
        export.check_exportable(chatbot)
    question = features.build(INPUT_MODELS["text"](name="question", type="text"))
    with pytest.raises(ConfigError, match="input 'question' has type 'text'.*longest text.*cannot trace"):
        export.export(types.SimpleNamespace(inputs_=[question], outputs_=model.outputs_), tmp_path / "refused")
    assert not (tmp_path / "refused").exists(), "a refused export writes nothing"


def test_cli_export(folder, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["export", str(folder), "--format", "onnx", "--output", str(tmp_path / "cli")])
        bad = main(["export", str(tmp_path / "missing")])
    assert code == 0 and "exported" in out.getvalue()
    assert (tmp_path / "cli" / "model.onnx").is_file() and (tmp_path / "cli" / "preprocessing.json").is_file()
    assert bad == 2 and "does not exist" in err.getvalue()

"""`lamina export`: a trained network as ONNX (onnxruntime, any language) or as a torch.export
program, beside `preprocessing.json`, which says for each input how raw values become its tensor
(vocabularies, label order, image size) and for each output how to read the result.

Each data type says itself whether and how it exports (export_entry, export_examples, export_output
and export_output_entry in lamina/features/): today inputs of type number, binary, category, set and
image and outputs of type number, binary, category and set. Normalisation and missing-value filling
of numbers and the scaling of pixels run inside the graph (the features' own torch code), so the
manifest only maps values to positions. Text does not export yet: text encoders trim each batch to
its longest text and text outputs generate with a search loop, neither of which the exporters can trace.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lamina.config import nesting_problem
from lamina.data import tensors
from lamina.errors import ConfigError, DataError
from lamina.features.base import Unsupported
from lamina.features.common import as_strings, missing_mask
from lamina.version import __version__

FORMATS = {"onnx": "model.onnx", "torch-export": "model.pt2"}
MANIFEST = "preprocessing.json"
OPSET = 17
TOLERANCE = 1e-4  # the exported graph must agree with PyTorch this closely on the example rows


def _asked(question, features: list) -> list:
    """question(feature) for each feature; a type that does not export is refused as a ConfigError."""
    try:
        return [question(feature) for feature in features]
    except Unsupported as error:
        raise ConfigError(str(error)) from None


class Exported(nn.Module):
    """The network with user-facing outputs: numbers in the user's units, probabilities for classes."""

    def __init__(self, model):
        super().__init__()
        self.network = model.network_.cpu()  # an export is traced on the CPU, whatever trained the model
        self.input_names = self.network.input_names
        # each output's last step (inverse normalisation, calibrated softmax or sigmoid) is its type's own
        self.finals = nn.ModuleList(_asked(lambda feature: feature.export_output(), model.outputs_))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = self.network(dict(zip(self.input_names, inputs)))
        return tuple(final(raw[name]) for name, final in zip(self.network.output_names, self.finals))


def check_exportable(model) -> None:
    """Refuse a model with an input or output whose type does not export (a ConfigError naming it)."""
    manifest(model, "onnx")


def _example_frame(model) -> pd.DataFrame:
    """Two plausible rows (two, so no exporter mistakes the batch size for a constant 1)."""
    columns = _asked(lambda feature: feature.export_examples(), model.inputs_)
    return pd.DataFrame({feature.config.name: column for feature, column in zip(model.inputs_, columns)})


def manifest(model, format_name: str) -> dict:
    inputs = _asked(lambda feature: {"name": feature.config.name, "type": feature.config.type,
                                     **feature.export_entry()}, model.inputs_)
    outputs = _asked(lambda feature: {"name": feature.config.name, "type": feature.config.type,
                                      **feature.export_output_entry()}, model.outputs_)
    return {"format": "lamina-export", "format_version": 2, "lamina_version": __version__,
            "exporter": format_name, "model_file": FORMATS[format_name],
            **({"opset": OPSET} if format_name == "onnx" else {}), "inputs": inputs, "outputs": outputs}


def export(model, folder: str | Path, format_name: str = "onnx") -> Path:
    """Write the exported network and preprocessing.json into `folder`; returns the model file."""
    if format_name not in FORMATS:
        raise ConfigError(f"unknown export format '{format_name}'; expected one of: {', '.join(FORMATS)}")
    description = manifest(model, format_name)  # refuses a type that does not export before any file is written
    wrapper = Exported(model).eval()
    table = tensors(_example_frame(model), model.inputs_)["inputs"]
    example = tuple(table[name] for name in wrapper.input_names)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FORMATS[format_name]
    with torch.no_grad():
        expected = wrapper(*example)
        if format_name == "onnx":
            _onnx(wrapper, example, description, target)
        else:
            rows = {0: torch.export.Dim.AUTO}  # any number of rows
            program = torch.export.export(wrapper, example, dynamic_shapes={"inputs": tuple(rows for _ in example)})
            with warnings.catch_warnings():  # buffers that are views of one tensor (bin edges) are saved whole
                warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
                torch.export.save(program, target)
    (folder / MANIFEST).write_text(json.dumps(description, indent=1), "utf-8")
    if format_name == "onnx" and _has_onnxruntime():
        got = run_onnx(folder, {name: tensor.numpy() for name, tensor in zip(wrapper.input_names, example)})
        _check_close(expected, list(got.values()), target)
    return target


def _onnx(wrapper: nn.Module, example: tuple, description: dict, target: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise ConfigError("export --format onnx needs the onnx package: pip install 'lamina[export]'") from None
    input_names = [entry["tensor"]["name"] for entry in description["inputs"]]
    output_names = [entry["tensor"]["name"] for entry in description["outputs"]]
    axes = {name: {0: "rows"} for name in input_names + output_names}
    with warnings.catch_warnings():
        # the TorchScript-based exporter: deprecated, but it needs no onnxscript and traces these
        # networks (no data-dependent control flow) exactly
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(wrapper, example, str(target), dynamo=False, input_names=input_names,
                          output_names=output_names, dynamic_axes=axes, opset_version=OPSET)
    onnx.checker.check_model(str(target))


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _check_close(expected: tuple, got: list, target: Path) -> None:
    for want, have in zip(expected, got):
        gap = float(np.max(np.abs(want.numpy() - have))) if want.numel() else 0.0
        if not gap <= TOLERANCE:
            raise DataError(f"the exported '{target}' differs from PyTorch by {gap:.2g} (more than {TOLERANCE}); "
                            f"please report this model's config")


# --- running an export (the reference for other languages) ---------------------------------------

def feeds(description: dict, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The input tensors for a table, built from preprocessing.json alone (no lamina feature
    objects): a reference for writing the same in another language. It switches on each entry's
    "encoding", one of the file format's few ways to turn cells into a tensor, which every exportable
    type picks from (so a new type needs no change here unless it needs a new encoding). Images are
    not decoded here: give their column as uint8 (C, H, W) arrays already sized as the manifest says."""
    result = {}
    for entry in description["inputs"]:
        column, rules, tensor = frame[entry["name"]], entry["preprocess"], entry["tensor"]
        encoding = rules.get("encoding")
        if encoding not in ENCODINGS:
            raise DataError(f"input '{entry['name']}' of the export has encoding {encoding!r}, which this reader "
                            f"does not know (an export written by another lamina version?); export the model "
                            f"again with lamina export")
        result[tensor["name"]] = ENCODINGS[encoding](column, missing_mask(column), rules)
    return result


def _number(column: pd.Series, gone: np.ndarray, rules: dict) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)


def _label_pair(column: pd.Series, gone: np.ndarray, rules: dict) -> np.ndarray:
    lookup = {rules["labels"][0]: 0.0, rules["labels"][1]: 1.0}
    values = as_strings(column).map(lookup).to_numpy(dtype=np.float32, na_value=np.nan)
    values[gone] = np.nan
    return values


def _vocabulary_index(column: pd.Series, gone: np.ndarray, rules: dict) -> np.ndarray:
    values = pd.Index(rules["vocabulary"]).get_indexer(as_strings(column)).astype(np.int64)
    values[values < 0] = rules["unknown_index"]
    values[gone] = rules["missing_index"]
    return values


def _multi_hot(column: pd.Series, gone: np.ndarray, rules: dict) -> np.ndarray:
    position = {label: index for index, label in enumerate(rules["labels"])}
    values = np.zeros((len(column), len(position)), dtype=np.float32)
    for row, (cell, empty) in enumerate(zip(column, gone)):
        labels = [] if empty else cell if isinstance(cell, (list, tuple, np.ndarray)) \
            else str(cell).split(rules["delimiter"])
        for label in (str(label).strip() for label in labels):
            if label in position:
                values[row, position[label]] = 1.0
    return values


def _numbers(column: pd.Series, gone: np.ndarray, rules: dict) -> np.ndarray:
    """A list of numbers per cell, or a string of them separated by ',' (brackets allowed); NaN rows
    where missing."""
    length = int(rules["stats"]["length"])
    values = np.full((len(column), length), np.nan, dtype=np.float32)
    for row, (cell, empty) in enumerate(zip(column, gone)):
        if not empty:
            parts = cell if isinstance(cell, (list, tuple, np.ndarray)) \
                else str(cell).strip().strip("[]").replace(",", " ").split()
            values[row] = np.asarray(parts, dtype=np.float32)
    return values


def _pixels(column: pd.Series, gone: np.ndarray, rules: dict) -> np.ndarray:
    return np.stack([np.asarray(cell, dtype=np.uint8) for cell in column])


ENCODINGS = {"number": _number, "label_pair": _label_pair, "vocabulary_index": _vocabulary_index,
             "multi_hot": _multi_hot, "numbers": _numbers, "pixels": _pixels}


def read_description(folder: Path) -> dict:
    """An export's preprocessing.json, refused cleanly when it is not what `lamina export` writes
    (too deeply nested to walk, or naming a model file outside the export's folder)."""
    path = folder / MANIFEST
    try:
        description = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error).strip().splitlines()[0]
        raise DataError(f"cannot read '{path}' ({reason}); export the model again with lamina export") from None
    problem = nesting_problem(description)
    model_file = description.get("model_file") if isinstance(description, dict) else None
    if problem is None and (not isinstance(model_file, str) or model_file in ("", ".", "..")
                            or Path(model_file).name != model_file):
        problem = "names no model file of the export's folder (model_file)"
    if problem:
        raise DataError(f"'{path}' is not an export description: it {problem}; export the "
                        f"model again with lamina export")
    return description


def run_onnx(folder: str | Path, inputs: dict[str, np.ndarray] | pd.DataFrame, session=None) -> dict[str, np.ndarray]:
    """The outputs of an ONNX export for a table (preprocessed with `feeds`) or for ready tensors."""
    import onnxruntime

    folder = Path(folder)
    description = read_description(folder)
    if isinstance(inputs, pd.DataFrame):
        inputs = feeds(description, inputs)
    session = session or onnxruntime.InferenceSession(str(folder / description["model_file"]),
                                                      providers=["CPUExecutionProvider"])
    names = [entry["tensor"]["name"] for entry in description["outputs"]]
    return dict(zip(names, session.run(names, inputs)))

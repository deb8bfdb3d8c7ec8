"""`lamina export`: a trained network as ONNX (onnxruntime, any language) or as a torch.export
program, beside `preprocessing.json`, which says for each input how raw values become its tensor
(vocabularies, label order, image size) and for each output how to read the result.

What exports: inputs of type number, binary, category, set and image; outputs of type number,
binary, category and set. Normalisation and missing-value filling of numbers and the scaling of
pixels run inside the graph (the features' own torch code), so the manifest only maps values to
positions. Text does not export yet: text encoders trim each batch to its longest text and text
outputs generate with a search loop, neither of which the exporters can trace.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import lamina
from lamina.config import nesting_problem
from lamina.data import tensors
from lamina.errors import ConfigError, DataError
from lamina.features.common import MISSING, as_strings, missing_mask
from lamina.features.number import Normalize

FORMATS = {"onnx": "model.onnx", "torch-export": "model.pt2"}
INPUT_TYPES = {"number", "binary", "category", "set", "image"}
OUTPUT_TYPES = {"number", "binary", "category", "set"}
MANIFEST = "preprocessing.json"
OPSET = 17
TOLERANCE = 1e-4  # the exported graph must agree with PyTorch this closely on the example rows


class Exported(nn.Module):
    """The network with user-facing outputs: numbers in the user's units, probabilities for classes."""

    def __init__(self, model):
        super().__init__()
        self.network = model.network_
        self.input_names = self.network.input_names
        self.kinds = [feature.config.type for feature in model.outputs_]
        self.inverses = nn.ModuleList(Normalize(feature.stats, feature.config.normalize)
                                      if feature.config.type == "number" else nn.Identity()
                                      for feature in model.outputs_)
        # calibration (temperature scaling) of binary and category outputs runs inside the graph
        self.temperatures = [float(getattr(feature, "temperature", 1.0)) for feature in model.outputs_]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = self.network(dict(zip(self.input_names, inputs)))
        results = []
        for name, kind, inverse, temperature in zip(self.network.output_names, self.kinds, self.inverses,
                                                    self.temperatures):
            logits = raw[name] / temperature if temperature != 1.0 else raw[name]
            if kind == "number":
                results.append(inverse.inverse(raw[name]))  # (B,)
            elif kind == "category":
                results.append(torch.softmax(logits, dim=1))  # (B, K)
            else:
                results.append(torch.sigmoid(logits))  # (B,) binary or (B, L) set
        return tuple(results)


def check_exportable(model) -> None:
    for role, features, allowed in (("input", model.inputs_, INPUT_TYPES), ("output", model.outputs_, OUTPUT_TYPES)):
        for feature in features:
            if feature.config.type not in allowed:
                why = ("text encoders trim each batch to its longest text" if role == "input"
                       else "a generated sentence comes from a search loop (greedy or beam search)")
                raise ConfigError(f"{role} '{feature.config.name}' has type '{feature.config.type}', which does not "
                                  f"export yet ({why}, which the exporters cannot trace); exportable {role}s are "
                                  f"{', '.join(sorted(allowed))}. Serve this model with `lamina serve` instead")


def _example_frame(model) -> pd.DataFrame:
    """Two plausible rows (two, so no exporter mistakes the batch size for a constant 1)."""
    columns = {}
    for feature in model.inputs_:
        kind, stats = feature.config.type, feature.stats
        if kind == "number":
            columns[feature.config.name] = [stats["mean"], stats["min"]]
        elif kind in ("binary", "category"):
            columns[feature.config.name] = list(stats["labels"][:2]) * (2 // len(stats["labels"][:2]))
        elif kind == "set":
            columns[feature.config.name] = [stats["labels"][:1], stats["labels"][-1:]]
        elif kind == "image":
            height, width = feature.config.size
            pixel = np.clip(np.round(stats["mean"]), 0, 255).astype(np.uint8)
            columns[feature.config.name] = [np.tile(pixel, (height, width, 1))] * 2
    return pd.DataFrame(columns)


def _tensor(name: str, dtype: str, shape: list) -> dict:
    return {"name": name, "dtype": dtype, "shape": shape}


def _input_entry(feature) -> dict:
    name, kind, stats, options = feature.config.name, feature.config.type, feature.stats, feature.config
    same_as_training = "values compared as stripped strings; whole numbers written without '.0'"
    if kind == "number":
        return {"tensor": _tensor(name, "float32", ["rows"]),
                "preprocess": {"value": "the number; NaN where missing", "inside_the_model": "missing-value filling "
                               f"and '{options.normalize}' normalisation", "stats": stats}}
    if kind == "binary":
        return {"tensor": _tensor(name, "float32", ["rows"]),
                "preprocess": {"labels": stats["labels"], "value": "0.0 for labels[0], 1.0 for labels[1], NaN "
                               "where missing or another value", "compare": same_as_training}}
    if kind == "category":
        vocabulary = stats["vocabulary"]
        missing = vocabulary.index(MISSING) if options.missing == "category" else \
            (vocabulary.index(stats["labels"][0]) if stats["labels"][0] in vocabulary else 0)
        return {"tensor": _tensor(name, "int64", ["rows"]),
                "preprocess": {"vocabulary": vocabulary, "value": "the position of the value in vocabulary",
                               "unknown_index": 0, "missing_index": missing, "compare": same_as_training}}
    if kind == "set":
        return {"tensor": _tensor(name, "float32", ["rows", len(stats["labels"])]),
                "preprocess": {"labels": stats["labels"], "delimiter": options.delimiter,
                               "value": "multi-hot: 1.0 at the position of each label present (a cell is a list "
                                        "or a delimited string); unknown labels are ignored"}}
    height, width = options.size
    return {"tensor": _tensor(name, "uint8", ["rows", options.channels, height, width]),
            "preprocess": {"size": [height, width], "channels": options.channels, "layout": "NCHW",
                           "value": "the decoded image converted to grey (L, ITU-R 601-2) or RGB, resized bilinearly "
                                    "to size; missing images: every pixel the training mean colour",
                           "inside_the_model": "scaling by the training mean and std", "stats": stats}}


def _output_entry(feature) -> dict:
    name, kind, stats = feature.config.name, feature.config.type, feature.stats
    if kind == "number":
        return {"tensor": _tensor(name, "float32", ["rows"]), "read": "the predicted value in the data's units"}
    if kind == "binary":
        return {"tensor": _tensor(f"{name}_probability", "float32", ["rows"]), "labels": stats["labels"],
                "threshold": feature.threshold, "temperature": feature.temperature,
                "read": "the (calibrated: the graph divides the logit by temperature) probability of labels[1]; "
                        "predict labels[1] when it is at least threshold"}
    if kind == "category":
        return {"tensor": _tensor(f"{name}_probabilities", "float32", ["rows", len(stats["labels"])]),
                "labels": stats["labels"], "temperature": feature.temperature,
                "read": "one (calibrated) probability per label; predict the largest"}
    return {"tensor": _tensor(f"{name}_probabilities", "float32", ["rows", len(stats["labels"])]),
            "labels": stats["labels"], "threshold": feature.config.threshold,
            "delimiter": feature.config.delimiter, "read": "one probability per label; predict those >= threshold"}


def manifest(model, format_name: str) -> dict:
    inputs = [{"name": f.config.name, "type": f.config.type, **_input_entry(f)} for f in model.inputs_]
    outputs = [{"name": f.config.name, "type": f.config.type, **_output_entry(f)} for f in model.outputs_]
    return {"format": "lamina-export", "format_version": 1, "lamina_version": lamina.__version__,
            "exporter": format_name, "model_file": FORMATS[format_name],
            **({"opset": OPSET} if format_name == "onnx" else {}), "inputs": inputs, "outputs": outputs}


def export(model, folder: str | Path, format_name: str = "onnx") -> Path:
    """Write the exported network and preprocessing.json into `folder`; returns the model file."""
    if format_name not in FORMATS:
        raise ConfigError(f"unknown export format '{format_name}'; expected one of: {', '.join(FORMATS)}")
    check_exportable(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    description = manifest(model, format_name)
    wrapper = Exported(model).eval()
    table = tensors(_example_frame(model), model.inputs_)["inputs"]
    example = tuple(table[name] for name in wrapper.input_names)
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
    objects): a reference for writing the same in another language. Images are not decoded here:
    give their column as uint8 (C, H, W) arrays already sized as the manifest says."""
    result = {}
    for entry in description["inputs"]:
        column, rules, tensor = frame[entry["name"]], entry["preprocess"], entry["tensor"]
        gone = missing_mask(column)
        if entry["type"] == "number":
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
        elif entry["type"] == "binary":
            lookup = {rules["labels"][0]: 0.0, rules["labels"][1]: 1.0}
            values = as_strings(column).map(lookup).to_numpy(dtype=np.float32, na_value=np.nan)
            values[gone] = np.nan
        elif entry["type"] == "category":
            values = pd.Index(rules["vocabulary"]).get_indexer(as_strings(column)).astype(np.int64)
            values[values < 0] = rules["unknown_index"]
            values[gone] = rules["missing_index"]
        elif entry["type"] == "set":
            position = {label: index for index, label in enumerate(rules["labels"])}
            values = np.zeros((len(column), len(position)), dtype=np.float32)
            for row, (cell, empty) in enumerate(zip(column, gone)):
                labels = [] if empty else cell if isinstance(cell, (list, tuple, np.ndarray)) \
                    else str(cell).split(rules["delimiter"])
                for label in (str(label).strip() for label in labels):
                    if label in position:
                        values[row, position[label]] = 1.0
        else:
            values = np.stack([np.asarray(cell, dtype=np.uint8) for cell in column])
        result[tensor["name"]] = values
    return result


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

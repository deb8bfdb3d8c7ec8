"""One conformance suite run over every registered data type: stats round-trip through JSON,
tensor shapes, encoder widths, heads and losses finite and differentiable, decoding gives
user-facing values, and save/load gives identical predictions."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch

import lamina
from lamina import features
from lamina.config import INPUT_MODELS, OUTPUT_MODELS
from lamina.features.base import HeadContext, Trunk, Unsupported

ROWS = 64


def sample(type_name: str, rows: int = ROWS, seed: int = 0) -> pd.Series:
    """A column of each data type, with a missing value in it."""
    rng = np.random.default_rng(seed)
    if type_name == "number":
        values = rng.normal(10, 3, rows).astype(object)
    elif type_name == "binary":
        values = rng.choice(["yes", "no"], rows).astype(object)
    elif type_name == "category":
        values = rng.choice(["red", "green", "blue", "grey"], rows).astype(object)
    elif type_name == "set":
        values = np.array(["|".join(sorted(set(rng.choice(["a", "b", "c", "d"], rng.integers(0, 3)))))
                           for _ in range(rows)], dtype=object)
    elif type_name == "image":  # in-memory arrays of varied sizes, grey and colour
        values = np.empty(rows, dtype=object)
        values[:] = [rng.integers(0, 256, (int(rng.integers(6, 12)), 8) + ((3,) if row % 2 else ())).astype(np.uint8)
                     for row in range(rows)]
    elif type_name == "text":
        words = ["good", "bad", "fine", "dress", "fits", "small", "large", "love", "it", "not"]
        values = np.array([" ".join(rng.choice(words, int(rng.integers(1, 8)))) for _ in range(rows)], dtype=object)
    elif type_name == "audio":  # in-memory mono and stereo arrays of varied lengths at 8 kHz
        values = np.empty(rows, dtype=object)
        values[:] = [rng.normal(0, 0.3, (int(rng.integers(1000, 3000)),) + ((2,) if row % 2 else ())).astype(np.float32)
                     for row in range(rows)]
    elif type_name == "timeseries":  # nested lists and delimited strings of 3 channels, varied lengths
        values = np.empty(rows, dtype=object)
        values[:] = [rng.normal(size=(int(rng.integers(3, 9)), 3)).round(3).tolist() if row % 2 else
                     ";".join(",".join(str(value) for value in step) for step in rng.normal(size=(4, 3)).round(3))
                     for row in range(rows)]
    elif type_name == "id":  # many ids, most seen once or twice
        values = np.array([f"user{int(number)}" for number in rng.zipf(1.5, rows) % 500], dtype=object)
    elif type_name == "ranking":  # the items users chose (the user column is added by `columns`)
        values = rng.choice([f"item{number}" for number in range(12)], rows).astype(object)
    elif type_name == "anomaly":  # labels: mostly normal
        values = rng.choice(["normal", "attack"], rows, p=[0.8, 0.2]).astype(object)
    elif type_name == "vector":  # 3 components per cell: lists, and every third cell a ','-separated string
        values = np.empty(rows, dtype=object)
        values[:] = [rng.normal(size=3).round(3).tolist() if row % 3 else
                     ",".join(map(str, rng.normal(size=3).round(3))) for row in range(rows)]
    else:
        raise AssertionError(f"add a sample column for the new data type '{type_name}' to the conformance suite")
    values[3] = None
    return pd.Series(values, name="column")


def options(type_name: str) -> dict:
    return {"set": {"delimiter": "|"}, "image": {"size": 8, "width": 4, "stages": 2, "embedding_size": 8},
            "text": {"max_length": 8, "width": 16, "layers": 1, "heads": 2, "min_count": 1},
            "audio": {"sample_rate": 8000, "duration": 0.25, "mels": 16, "width": 4, "stages": 2, "embedding_size": 8},
            "timeseries": {"width": 8, "layers": 1, "embedding_size": 8},
            "ranking": {"user": "user", "negatives": 4, "k": 3,
                        "item_inputs": [{"name": "kind", "type": "category"}]}}.get(type_name, {})


def columns(feature, column: pd.Series):
    """What fit/target read: the column, or a frame with the other columns a feature `reads`
    (a ranking: the user, and an item side feature that follows the item)."""
    if not feature.reads():
        return column
    users = [f"u{position % 7}" for position in range(len(column))]
    return pd.DataFrame({"column": column, "user": users, "kind": column.astype(str).str[-1]}, index=column.index)


def make(type_name: str, role: str):
    models = INPUT_MODELS if role == "input" else OUTPUT_MODELS
    return features.build(models[type_name](name="column", type=type_name, **options(type_name)))


NUMBERS = pd.Series(np.random.default_rng(3).normal(size=ROWS), name="x")  # what a head that reads inputs rebuilds


def make_head(feature, width: int):
    """Every head is built from a Trunk; its inputs are one number input `x` (what a head that reads
    the inputs, an anomaly score, rebuilds)."""
    number = features.build(INPUT_MODELS["number"](name="x", type="number"))
    number.fit(NUMBERS)
    return feature.head(Trunk(size=width, inputs=[number]))


def run_head(feature, head, hidden, target=None):
    """Every head is called the same way: head(hidden, HeadContext)."""
    inputs = {"x": torch.tensor(NUMBERS.to_numpy()[:len(hidden)], dtype=torch.float32)}
    return head(hidden, HeadContext(inputs=inputs, target=target))


def test_every_type_has_a_sample():
    for type_name in features.REGISTRY:
        sample(type_name)


def test_every_type_says_how_a_file_column_is_read():
    for type_name, module in features.REGISTRY.items():
        assert module.READ_AS in ("string", "number"), type_name


@pytest.mark.parametrize("type_name", features.input_types())
def test_stats_round_trip_through_json(type_name):
    column = sample(type_name)
    feature = make(type_name, "input")
    feature.fit(column)
    restored = features.build(feature.config, json.loads(json.dumps(feature.stats)))
    assert restored.stats == feature.stats
    assert torch.equal(torch.nan_to_num(restored.transform(column)), torch.nan_to_num(feature.transform(column)))


@pytest.mark.parametrize("type_name", features.input_types())
def test_encoder_shape_width_and_finite(type_name):
    column = sample(type_name)
    feature = make(type_name, "input")
    feature.fit(column)
    tensor = feature.transform(column)
    assert tensor.shape[0] == ROWS
    encoder = feature.encoder()
    encoded = encoder(tensor)
    assert encoded.shape == (ROWS, encoder.output_size)
    assert torch.isfinite(encoded).all(), "missing values must be filled before they reach the network"


@pytest.mark.parametrize("type_name", features.input_types())
def test_encoder_accepts_values_never_seen_in_training(type_name):
    feature = make(type_name, "input")
    feature.fit(sample(type_name))
    strange = {"number": [1e6, -5.0], "binary": [" ", None], "category": ["purple", ""],
               "set": ["z|y", None], "image": [np.full((20, 12), 1e3), None],
               "text": ["zebra quokka " * 20, None], "audio": [np.full(40000, 0.9), None],
               "timeseries": [[[1e6, -1e6, 0.0]] * 50, None], "id": ["user-never-seen", None],
               "vector": [[1e6, -1e6, 0.0], None]}[type_name]
    encoded = feature.encoder()(feature.transform(pd.Series(strange, dtype=object)))
    assert torch.isfinite(encoded).all()


@pytest.mark.parametrize("type_name", features.output_types())
def test_head_loss_finite_and_differentiable(type_name):
    column = sample(type_name)
    feature = make(type_name, "output")
    feature.fit(columns(feature, column))
    present = column[column.notna()]
    target = feature.target(columns(feature, present))
    head = make_head(feature, 8)
    hidden = torch.randn(len(present), 8, requires_grad=True)
    output = run_head(feature, head, hidden, target)
    loss = feature.loss(output, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
    assert all(parameter.grad is not None for parameter in head.parameters())


@pytest.mark.parametrize("type_name", features.output_types())
def test_decode_gives_user_facing_values_and_metrics_are_floats(type_name):
    column = sample(type_name)
    feature = make(type_name, "output")
    feature.fit(columns(feature, column))
    present = column[column.notna()]
    output = run_head(feature, make_head(feature, 4), torch.randn(len(present), 4))  # generating: token ids
    decoded = feature.decode(output)
    predicted = decoded["column"]
    assert len(predicted) == len(present)
    if type_name in ("binary", "category", "anomaly"):
        assert set(predicted) <= set(present.astype(str))
    elif type_name == "set":
        assert all(label in {"a", "b", "c", "d"} for row in predicted for label in row.split("|") if label)
    elif type_name == "text":
        assert all(isinstance(text, str) for text in predicted)
    elif type_name == "ranking":  # k item ids per row, best first, with falling scores
        assert all(len(row) == 3 and set(row) <= set(present) for row in predicted)
        assert all(list(scores) == sorted(scores, reverse=True) for scores in decoded["column_scores"])
    else:
        assert np.issubdtype(np.asarray(predicted).dtype, np.floating)
    if feature.generates:  # metrics from teacher-forced logits and from generated ids
        target = feature.target(present)
        logits = run_head(feature, make_head(feature, 4), torch.randn(len(present), 4), target)
        metrics = {**feature.metrics(target, logits), **feature.generation_metrics(target, output)}
    else:  # as while training: a per-batch summary (the identity unless the type keeps less)
        target = feature.target(columns(feature, present))
        metrics = feature.metrics(target, feature.summary(output, target))
    for name, value in metrics.items():
        assert isinstance(value, float) and np.isfinite(value), name


def _table(type_name: str, role: str, rows: int = 120) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "column": sample(type_name, rows, seed=2)})
    if role == "input":
        frame["y"] = rng.normal(size=rows)
        config = {"inputs": [{"name": "x", "type": "number"},
                             {"name": "column", "type": type_name, **options(type_name)}],
                  "outputs": [{"name": "y", "type": "number"}]}
    else:
        config = {"inputs": [{"name": "x", "type": "number"}],
                  "outputs": [{"name": "column", "type": type_name, **options(type_name)}]}
        if type_name == "ranking":
            extra = columns(make(type_name, "output"), frame["column"])
            frame[["user", "kind"]] = extra[["user", "kind"]]
            config["inputs"].append({"name": "user", "type": "id", "min_count": 1})
    config.update(hidden={"layers": 1, "size": 8},
                  training={"epochs": 2, "batch_size": 32, "learning_rate": 0.01})
    return frame, config


@pytest.mark.parametrize("role", ["input", "output"])
@pytest.mark.parametrize("type_name", list(features.REGISTRY))
def test_save_load_gives_identical_predictions(type_name, role, tmp_path):
    if role == "output" and type_name not in features.output_types():
        pytest.skip(f"{type_name} cannot be an output")
    if role == "input" and type_name not in features.input_types():
        pytest.skip(f"{type_name} cannot be an input")
    frame, config = _table(type_name, role)
    model = lamina.Model(config).fit(frame, quiet=True)
    before = model.predict(frame)
    model.save(tmp_path / "model")
    after = lamina.load(tmp_path / "model").predict(frame)
    pd.testing.assert_frame_equal(before, after)


# ---- export ----
EXPORT_ROLES = [(name, "input") for name in features.input_types()] + \
    [(name, "output") for name in features.output_types()]


def _export_entry(type_name: str, role: str):
    """The fitted feature and its preprocessing.json entry as `role`, or None where the type refuses
    clearly: Unsupported naming the feature and its type."""
    feature = make(type_name, role)
    feature.fit(columns(feature, sample(type_name)))
    try:
        return feature, feature.export_entry() if role == "input" else feature.export_output_entry()
    except Unsupported as error:
        assert "'column'" in str(error) and f"'{type_name}'" in str(error), str(error)
        return feature, None


@pytest.mark.parametrize("type_name, role", EXPORT_ROLES)
def test_export_entry_is_json_and_true_or_a_clear_refusal(type_name, role):
    feature, entry = _export_entry(type_name, role)
    if entry is None:
        return
    json.dumps(entry)
    tensor = entry["tensor"]
    assert set(tensor) == {"name", "dtype", "shape"} and tensor["shape"][0] == "rows", tensor
    if role == "output":
        assert isinstance(entry["read"], str) and isinstance(feature.export_output(), torch.nn.Module)
        return
    assert tensor["name"] == "column" and isinstance(entry["preprocess"], dict)
    examples = feature.export_examples()
    made = feature.transform(pd.DataFrame({"column": examples})["column"])  # as export traces the graph
    assert len(examples) == 2 and list(made.shape[1:]) == tensor["shape"][1:]
    assert str(made.dtype) == f"torch.{tensor['dtype']}", (made.dtype, tensor["dtype"])


@pytest.mark.parametrize("type_name, role", EXPORT_ROLES)
def test_exportable_types_export_to_onnx_and_agree_with_pytorch(type_name, role, tmp_path):
    pytest.importorskip("onnxruntime")
    from lamina import export

    if _export_entry(type_name, role)[1] is None:
        pytest.skip(f"{type_name} does not export as an {role}")
    frame, config = _table(type_name, role)
    model = lamina.Model(config).fit(frame, quiet=True)
    export.export(model, tmp_path, "onnx")  # itself checks the graph against PyTorch on the example rows
    table = lamina.data.tensors(frame, model.inputs_)["inputs"]  # every row, a missing value among them
    wrapper = export.Exported(model).eval()
    with torch.no_grad():
        want = wrapper(*[table[name] for name in wrapper.input_names])
    got = export.run_onnx(tmp_path, {name: table[name].numpy() for name in wrapper.input_names})
    description = json.loads((tmp_path / export.MANIFEST).read_text())
    for entry, expected, have in zip(description["outputs"], want, got.values(), strict=True):
        assert list(have.shape[1:]) == entry["tensor"]["shape"][1:] and str(have.dtype) == entry["tensor"]["dtype"]
        scale = max(1.0, float(np.abs(expected.numpy()).max()))  # outputs in data units: relative tolerance
        np.testing.assert_allclose(have, expected.numpy(), rtol=1e-5, atol=1e-5 * scale)


# ---- serving ----
@pytest.mark.parametrize("type_name", list(features.REGISTRY))
def test_every_input_says_how_a_request_sends_it(type_name):
    """An input type gives a request field the schema builds and its example passes; a type that only
    predicts (or forgot the method) refuses with Unsupported naming the feature and its type."""
    import types

    from lamina.features.request import RequestField, Widget
    from lamina.serving import schema

    role = "input" if type_name in features.input_types() else "output"
    feature = make(type_name, role)
    feature.fit(columns(feature, sample(type_name)))
    if role == "output":
        with pytest.raises(Unsupported, match=f"'column' of type '{type_name}' cannot be served"):
            feature.request_field()
        return
    field = feature.request_field()
    assert isinstance(field, RequestField) and isinstance(field.widget, Widget) and field.about
    assert field.widget.control in ("select", "number", "line", "file", "textarea")
    served = types.SimpleNamespace(inputs_=[feature])  # what the schema reads of a model
    row = schema.row_model(served, [field])
    json.dumps(row.model_json_schema())
    example = schema.example_row(served, [field])
    assert json.loads(json.dumps(example)) == example  # the OpenAPI example is plain JSON
    validated = row.model_validate(example)
    schema.decode([validated], ["column"])
    table = schema.frame([validated], served, [field])
    assert len(table) == 1 and list(table.columns) == ["column"]
    json.dumps(feature.served_metadata())


@pytest.mark.parametrize("type_name", features.input_types())
def test_served_model_answers_its_example_and_its_page_has_a_control(type_name):
    pytest.importorskip("fastapi")
    import re

    from fastapi.testclient import TestClient

    from lamina.serving.app import create_app

    frame, config = _table(type_name, "input", rows=40)
    config["training"]["epochs"] = 1
    model = lamina.Model(config).fit(frame, quiet=True)
    row = {feature.name: feature.request_field().example for feature in model.inputs_}
    with TestClient(create_app(model, "conformance")) as client:
        answer = client.post("/predict", json={"rows": [row]})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 1 and isinstance(predictions[0]["y"], float)
        page = client.get("/").text
        assert re.search(r'<(select|input|textarea) id="column"', page), page
        described = {item["name"]: item for item in client.get("/metadata").json()["inputs"]}
        assert described["column"]["type"] == type_name


# ---- classic baseline and comparison ----
@pytest.mark.parametrize("type_name", features.input_types())
def test_every_input_gives_classic_features(type_name):
    """Its classic_encoder (or the base default's summary statistics) gives one row per cell: finite for
    linear models, NaN only where a missing cell leaves it to the trees; described, and it pickles."""
    import pickle

    from scipy import sparse

    from lamina.features import classic

    column = sample(type_name)
    for style in (classic.TREE, classic.LINEAR):
        encoder = make(type_name, "input").classic_encoder(style, seed=0)
        assert isinstance(encoder.description, str) and encoder.description
        assert isinstance(encoder.categorical, bool)
        matrix = encoder.fit(column).transform(column)
        matrix = np.asarray(matrix.toarray() if sparse.issparse(matrix) else matrix, dtype=np.float64)
        assert matrix.ndim == 2 and matrix.shape[0] == ROWS and matrix.shape[1] >= 1
        assert np.isfinite(matrix).all() if style == classic.LINEAR else not np.isinf(matrix).any()
        present = np.delete(matrix, 3, axis=0)  # sample() leaves row 3 missing
        assert not np.isnan(present).all(axis=1).any(), "a present cell gave no classic features"
        pickle.dumps(encoder)  # compare measures the fitted baseline's size


@pytest.mark.parametrize("type_name", features.output_types())
def test_every_output_compares_with_classic_ml_or_says_why_not(type_name):
    """Each output type decides its classic task itself; a tiny trained model then gives a comparison
    with the main metric on both sides, or a skipped one whose reason names the output."""
    from lamina.features.base import OutputFeature

    frame, config = _table(type_name, "output")
    model = lamina.Model(config).fit(frame, quiet=True)
    output = model.outputs_[0]
    assert type(output).classic_task is not OutputFeature.classic_task, \
        f"{type_name}: define classic_task (a classic.Task, or raise Unsupported saying why there is no baseline)"
    try:
        output.classic_task()
    except Unsupported as error:
        refusal = str(error)
        assert "'column'" in refusal
    else:
        refusal = None
    result = model.compare(frame, resamples=20)
    json.dumps(result)
    if refusal:
        assert result["skipped"] == result["verdict"] == refusal and result["classic"] is None
        return
    assert result["skipped"] is None and result["type"] == type_name
    for side in ("deep", "classic"):
        assert isinstance(result[side]["test"][result["metric"]], float)
    assert result["verdict"] and result["difference"]["resamples"] >= 0


# ---- data reading ----
FEATURES_FOLDER = Path(features.__file__).parent


def _top_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of the lamina imports that run when the file is imported: module and class
    bodies, not function bodies (a lazy import there is fine) nor `if TYPE_CHECKING:` blocks."""
    found, pending = [], list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}" if node.module == "lamina" else node.module)
                      for alias in node.names]
        pending.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))
    return [(line, name) for line, name in found if name == "lamina" or name.startswith("lamina.")]


def _allowed_at_the_top(name: str) -> bool:
    """What a type file may import when it is imported: lamina.features.*, or a lamina module that
    imports no lamina module itself (lamina.errors), so no import circle can form."""
    if name.startswith("lamina.features"):
        return True
    path = FEATURES_FOLDER.parent.joinpath(*name.split(".")[1:])
    path = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    return path.is_file() and not _top_level_imports(path)


@pytest.mark.parametrize("path", sorted({Path(module.__file__) for module in features.REGISTRY.values()} |
                                        set(FEATURES_FOLDER.glob("*.py"))), ids=lambda path: path.name)
def test_feature_files_import_no_lamina_module_outside_features_at_the_top(path):
    """lamina.data, .config, .api ... import the types: a type file importing them at the top makes an
    import circle. It imports them lazily inside the function that needs them, or the small generic
    piece moves into lamina/features/ (common.py, columns.py, files.py)."""
    wrong = [f"line {line}: {name}" for line, name in _top_level_imports(path) if not _allowed_at_the_top(name)]
    assert not wrong, f"{path.name} imports outside lamina/features/ at the top: {wrong}"


def test_importing_the_types_loads_no_other_lamina_module():
    """Every registered type (and the protocol, columns and files modules) imports without lamina's
    other modules: lamina/__init__ is bypassed (it imports the API), then the features are imported."""
    script = ("import sys, types\n"
              f"package = types.ModuleType('lamina'); package.__path__ = [{str(FEATURES_FOLDER.parent)!r}]\n"
              "sys.modules['lamina'] = package\n"
              "import lamina.features, lamina.features.base, lamina.features.columns, lamina.features.files\n"
              f"for name in {sorted(module.__name__ for module in features.REGISTRY.values())!r}:\n"
              "    __import__(name)\n"
              "print(' '.join(sorted(name for name in sys.modules if name.startswith('lamina.'))))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = result.stdout.split()
    assert "lamina.features.number" in loaded
    assert not {"lamina.data", "lamina.config", "lamina.api"} & set(loaded)
    assert all(_allowed_at_the_top(name) for name in loaded), f"importing the types loaded {loaded}"


def _with_option(type_name: str, role: str, **extra):
    """The feature with these options, or None when its type has no such option (or not that value)."""
    models = INPUT_MODELS if role == "input" else OUTPUT_MODELS
    try:
        return features.build(models[type_name](name="column", type=type_name, **{**options(type_name), **extra}))
    except pydantic.ValidationError:
        return None


@pytest.mark.parametrize("type_name", features.input_types())
def test_inputs_say_which_rows_and_columns_they_read(type_name):
    """reads() names other columns (strings); drops_missing() follows `missing: drop` where the type
    has it; bad_rows(column) is None or a mask of the rows; transform gives a tensor or a LazyColumn."""
    from lamina.features.columns import LazyColumn

    column = sample(type_name)
    feature = make(type_name, "input")
    assert all(isinstance(name, str) for name in feature.reads())
    assert feature.drops_missing() is False or feature.config.missing == "drop"
    dropping = _with_option(type_name, "input", missing="drop")
    assert dropping is None or dropping.drops_missing() is True
    feature.fit(columns(feature, column))
    bad = feature.bad_rows(column)
    assert bad is None or (isinstance(bad, np.ndarray) and bad.dtype == bool and bad.shape == (ROWS,))
    assert isinstance(feature.transform(column), (torch.Tensor, LazyColumn))


@pytest.mark.parametrize("type_name", features.output_types())
def test_outputs_say_how_the_data_reads_and_splits_them(type_name):
    """absent_label() (None: the column is required) fills a column the data lacks, which fit and
    target then accept; stratifies() is a bool, true only for a few classes; resampling() follows
    `sampling` where the type has it; training_rows(column) is None or a mask of the rows."""
    feature = make(type_name, "output")
    assert isinstance(feature.stratifies(), bool) and isinstance(feature.reads(), list)
    label = feature.absent_label()
    if label is not None:
        absent = make(type_name, "output")
        absent.fit(columns(absent, pd.Series([label] * ROWS, name="column")))
        assert len(absent.target(columns(absent, pd.Series([label] * ROWS, name="column")))) == ROWS
    assert feature.resampling() is None
    resampling = _with_option(type_name, "output", sampling="over", sampling_ratio=0.5)
    assert resampling is None or resampling.resampling() == ("over", 0.5)
    column = sample(type_name)
    feature.fit(columns(feature, column))
    if feature.stratifies():
        codes = feature.target(columns(feature, column.dropna())).numpy()
        assert len(np.unique(codes[~np.isnan(codes)] if np.issubdtype(codes.dtype, np.floating) else codes)) <= 50
    chosen = feature.training_rows(column)
    assert chosen is None or (isinstance(chosen, np.ndarray) and chosen.dtype == bool and chosen.shape == (ROWS,))


# ---- explanation, evaluation plots and report ----
_TRAINED: dict = {}


def _trained(type_name: str, role: str):
    """One tiny model per type and role (see _table), trained once for the tests of this section."""
    if (type_name, role) not in _TRAINED:
        frame, config = _table(type_name, role)
        _TRAINED[type_name, role] = lamina.Model(config).fit(frame, quiet=True), frame
    return _TRAINED[type_name, role]


@pytest.mark.parametrize("type_name", features.input_types())
def test_every_input_is_explained_against_a_described_baseline(type_name):
    """Its attribution_point gives the input a finite score per row that, with Integrated Gradients,
    adds up with the other input's to output - baseline; its baseline is described in words; the
    report draws the explained rows (a heat map over its heat_map_background where it gives one)."""
    pytest.importorskip("captum")
    from lamina import report

    model, frame = _trained(type_name, "input")
    result = json.loads(json.dumps(model.explain(frame.head(3), steps=100)))
    assert result["baselines"]["column"], f"{type_name}: define baseline_description"
    for row in result["rows"]:
        assert np.isfinite(row["scores"]["column"])
        gap = row["output_value"] - row["baseline_value"]  # 100 steps close it to 0.0003-0.015 (image) here
        assert abs(sum(row["scores"].values()) - gap) <= 0.05 * max(1.0, abs(gap)), row["scores"]
    assert "<h2>Explained examples</h2>" in report.examples_section(model, result)


@pytest.mark.parametrize("type_name", features.output_types())
def test_every_output_is_explained_or_refuses_naming_itself(type_name):
    """Each output type says what explain() attributes (explained_score) or refuses with Unsupported
    naming the output; an explained one gives a row per row, and target= picks one of its
    explained_labels where it has them."""
    pytest.importorskip("captum")
    from lamina.features.base import OutputFeature

    model, frame = _trained(type_name, "output")
    output = model.outputs_[0]
    assert type(output).explained_score is not OutputFeature.explained_score, \
        f"{type_name}: define explained_score (words for the explained score, or raise Unsupported saying why not)"
    try:
        explained = output.explained_score(None)
    except Unsupported as error:
        assert "'column'" in str(error)
        with pytest.raises(lamina.ConfigError, match="'column'"):
            model.explain(frame.head(2))
        return
    assert isinstance(explained, str) and "column" in explained
    result = json.loads(json.dumps(model.explain(frame.head(3), steps=16)))
    assert result["output"] == "column" and result["explained"] and len(result["rows"]) == 3
    assert all(np.isfinite(list(row["scores"].values())).all() and row["scores"] for row in result["rows"])
    labels = output.explained_labels()
    if labels is not None:
        picked = model.explain(frame.head(2), target=labels[-1], steps=16)
        assert {row["label"] for row in picked["rows"]} == {labels[-1]}


@pytest.mark.parametrize("type_name", features.output_types())
def test_every_output_draws_its_report_section_from_its_saved_evaluation_data(type_name):
    """evaluation_data is JSON-able (evaluation.json keeps it) and names its type, or is None (nothing
    to plot); report_plots draws it as read back, in the report's section of test predictions."""
    from lamina import report

    model, frame = _trained(type_name, "output")
    output, rows = model.outputs_[0], frame.tail(20)
    data = output.evaluation_data(rows, model.predict(rows), model.inputs_)
    if data is None:
        assert "column" not in (model.evaluation_ or {})
        return
    data = json.loads(json.dumps(data))
    assert data["type"] == type_name
    drawn = output.report_plots(data)
    assert drawn and all(isinstance(piece, str) and piece.startswith("<") for piece in drawn)
    assert "column" in model.evaluation_, "fit keeps the test rows' evaluation_data for the report"
    section = report.plots_section(model)
    assert f"<h3>column ({type_name}, " in section and section.count("<img") + section.count("<table") >= 1

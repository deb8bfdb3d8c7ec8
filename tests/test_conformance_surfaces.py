"""The conformance suite, continued: every registered type through the classic baseline and the
comparison, data reading (and the import rules of lamina/features/), explanation and the report."""
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
from lamina.features.base import Unsupported
from conformance_types import ROWS, columns, make, options, sample, table, trained


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

    frame, config = table(type_name, "output")
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

@pytest.mark.parametrize("type_name", features.input_types())
def test_every_input_is_explained_against_a_described_baseline(type_name):
    """Its attribution_point gives the input a finite score per row that, with Integrated Gradients,
    adds up with the other input's to output - baseline; its baseline is described in words; the
    report draws the explained rows (a heat map over its heat_map_background where it gives one)."""
    pytest.importorskip("captum")
    from lamina import report

    model, frame = trained(type_name, "input")
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

    model, frame = trained(type_name, "output")
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

    model, frame = trained(type_name, "output")
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


# ---- what an anomaly score rebuilds ----
@pytest.mark.parametrize("type_name", features.input_types())
def test_an_input_an_anomaly_score_rebuilds_gives_a_finite_error_per_row(type_name):
    feature = make(type_name, "input")
    column = sample(type_name)
    feature.fit(columns(feature, column))
    part = feature.reconstruction()
    if part is None:
        return  # not rebuilt: the anomaly output leaves such inputs out of its score
    values = feature.transform(column)
    piece = torch.randn(len(column), part.width, requires_grad=True)
    error = part.error(piece, part.normalizer(values))
    assert error.shape == (len(column),) and torch.isfinite(error).all()
    error.sum().backward()
    assert torch.isfinite(piece.grad).all()

"""The conformance suite, run over every registered data type: stats round-trip through JSON, tensor
shapes, encoder widths, heads and losses finite and differentiable, decoding gives user-facing values,
save/load gives identical predictions, export (or its clear refusal) and serving. Continued in
test_conformance_surfaces.py; the samples and tiny models are in conformance_types.py."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import features
from lamina.features.base import Unsupported
from conformance_types import ROWS, columns, make, make_head, run_head, sample, table


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
               "vector": [[1e6, -1e6, 0.0], None], "date": ["1900-01-01", "2999-12-31 23:59"]}[type_name]
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
    elif type_name == "boxes":  # per row a list of found boxes, each a box, a known label and a score
        assert all(isinstance(row, list) for row in predicted)
        assert all(len(item["box"]) == 4 and item["label"] in ("car", "duck") and 0 <= item["score"] <= 1
                   for row in predicted for item in row)
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



@pytest.mark.parametrize("role", ["input", "output"])
@pytest.mark.parametrize("type_name", list(features.REGISTRY))
def test_save_load_gives_identical_predictions(type_name, role, tmp_path):
    if role == "output" and type_name not in features.output_types():
        pytest.skip(f"{type_name} cannot be an output")
    if role == "input" and type_name not in features.input_types():
        pytest.skip(f"{type_name} cannot be an input")
    frame, config = table(type_name, role)
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
    frame, config = table(type_name, role)
    model = lamina.Model(config).fit(frame, quiet=True)
    export.export(model, tmp_path, "onnx")  # itself checks the graph against PyTorch on the example rows
    tensors = lamina.data.tensors(frame, model.inputs_)["inputs"]  # every row, a missing value among them
    wrapper = export.Exported(model).eval()
    with torch.no_grad():
        want = wrapper(*[tensors[name] for name in wrapper.input_names])
    got = export.run_onnx(tmp_path, {name: tensors[name].numpy() for name in wrapper.input_names})
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

    frame, config = table(type_name, "input", rows=40)
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



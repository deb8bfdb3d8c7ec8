"""One conformance suite run over every registered data type: stats round-trip through JSON,
tensor shapes, encoder widths, heads and losses finite and differentiable, decoding gives
user-facing values, and save/load gives identical predictions."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import features
from lamina.config import INPUT_MODELS, OUTPUT_MODELS

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
    if not getattr(feature, "reads", None):
        return column
    users = [f"u{position % 7}" for position in range(len(column))]
    return pd.DataFrame({"column": column, "user": users, "kind": column.astype(str).str[-1]}, index=column.index)


def make(type_name: str, role: str):
    models = INPUT_MODELS if role == "input" else OUTPUT_MODELS
    return features.build(models[type_name](name="column", type=type_name, **options(type_name)))


NUMBERS = pd.Series(np.random.default_rng(3).normal(size=ROWS), name="x")  # what a head that reads inputs rebuilds


def make_head(feature, width: int):
    """The head; one that reads the inputs (an anomaly score) is built over a number input `x`."""
    if not getattr(feature, "reads_inputs", False):
        return feature.head(width)
    number = features.build(INPUT_MODELS["number"](name="x", type="number"))
    number.fit(NUMBERS)
    return feature.head(width, [number])


def run_head(feature, head, hidden, target=None):
    if getattr(feature, "generates", False):
        return head(hidden, (), target)
    if getattr(feature, "reads_inputs", False):
        return head(hidden, {"x": torch.tensor(NUMBERS.to_numpy()[:len(hidden)], dtype=torch.float32)})
    if getattr(head, "takes_targets", False):
        return head(hidden, target)
    return head(hidden)


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
               "timeseries": [[[1e6, -1e6, 0.0]] * 50, None], "id": ["user-never-seen", None]}[type_name]
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
    if getattr(feature, "generates", False):  # metrics from teacher-forced logits and from generated ids
        target = feature.target(present)
        logits = feature.head(4)(torch.randn(len(present), 4), (), target)
        metrics = {**feature.metrics(target, logits), **feature.generation_metrics(target, output)}
    else:  # as while training: a per-batch summary where the type has one
        target = feature.target(columns(feature, present))
        summary = getattr(feature, "summary", None)
        metrics = feature.metrics(target, summary(output, target) if summary else output)
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

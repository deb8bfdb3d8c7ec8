"""Every bad config gives one lamina.ConfigError line that names the key and suggests the fix;
good configs round-trip losslessly and the JSON schema carries each type's options."""
from __future__ import annotations

import json

import pytest
import yaml

import lamina
from lamina import ConfigError
from lamina.config import Config, _explain
from lamina.features import REGISTRY

from helpers_data import config, people


def small(**sections) -> dict:
    """A minimal valid config with one number input and one binary output."""
    base = {"inputs": [{"name": "age", "type": "number"}], "outputs": [{"name": "income", "type": "binary"}]}
    return {**base, **sections}


def error_of(source) -> str:
    with pytest.raises(ConfigError) as caught:
        lamina.load_config(source)
    return str(caught.value)


BAD_CONFIGS = {
    "unknown top-level key": (
        small(hiden={"layers": 2}),
        ["unknown key 'hiden'", "did you mean 'hidden'?"]),
    "unknown feature key": (
        small(inputs=[{"name": "age", "type": "number", "normalise": "zscore"}]),
        ["unknown key 'normalise' for number feature inputs[0] ('age'); did you mean 'normalize'?"]),
    "unknown output feature key": (
        small(outputs=[{"name": "income", "type": "binary", "treshold": 0.3}]),
        ["unknown key 'treshold' for binary feature outputs[0] ('income'); did you mean 'threshold'?"]),
    "unknown nested key": (
        small(training={"epoch": 3}),
        ["unknown key 'epoch' in training", "did you mean 'epochs'?"]),
    "unknown key in early_stopping": (
        small(training={"early_stopping": {"metrik": "loss"}}),
        ["unknown key 'metrik' in training.early_stopping", "did you mean 'metric'?"]),
    "unknown input type": (
        small(inputs=[{"name": "age", "type": "nmber"}]),
        ["inputs[0] ('age')", "unknown type 'nmber'", "did you mean 'number'?"]),
    "unknown output type": (
        small(outputs=[{"name": "income", "type": "binry"}]),
        ["outputs[0] ('income')", "unknown type 'binry'", "did you mean 'binary'?"]),
    "unknown type, nothing close": (
        small(inputs=[{"name": "age", "type": "xyzzy"}]),
        ["unknown type 'xyzzy'", "expected one of: number, binary, category, set"]),
    "missing type": (
        small(inputs=[{"name": "age"}]),
        ["inputs[0] ('age')", "missing 'type'", "set one of: number"]),
    "missing name": (
        small(inputs=[{"type": "number"}]),
        ["inputs[0]", "missing required key 'name'"]),
    "missing inputs": (
        {"outputs": [{"name": "income", "type": "binary"}]},
        ["inputs", "missing required key"]),
    "empty inputs": (
        small(inputs=[]),
        ["inputs", "at least 1 item"]),
    "hidden.layers not a number": (
        small(hidden={"layers": "three"}),
        ["hidden.layers", "valid integer", "'three'"]),
    "learning_rate not a number": (
        small(training={"learning_rate": "fast"}),
        ["training.learning_rate", "a valid number or 'auto'", "'fast'"]),
    "dropout out of range": (
        small(hidden={"dropout": 1.5}),
        ["hidden.dropout", "less than 1", "1.5"]),
    "negative epochs": (
        small(training={"epochs": 0}),
        ["training.epochs", "greater than or equal to 1", "0"]),
    "bad enum in a feature": (
        small(inputs=[{"name": "age", "type": "number", "normalize": "zscor"}]),
        ["inputs[0] ('age').normalize", "'zscore'", "'zscor'"]),
    "bad union value in a feature": (
        small(outputs=[{"name": "income", "type": "binary", "class_weights": "balance"}]),
        ["outputs[0] ('income').class_weights", "'balanced'", "'balance'"]),
    "output weight not positive": (
        small(outputs=[{"name": "income", "type": "binary", "weight": -1}]),
        ["outputs[0] ('income').weight", "greater than 0"]),
    "duplicate input names": (
        small(inputs=[{"name": "age", "type": "number"}, {"name": "age", "type": "category"}]),
        ["duplicate feature name 'age' at inputs[1] (also at inputs[0])", "each column may appear once"]),
    "input and output share a name": (
        small(inputs=[{"name": "income", "type": "number"}]),
        ["duplicate feature name 'income' at outputs[0] (also at inputs[0])"]),
    "split ratios do not sum to 1": (
        small(split={"ratios": [0.5, 0.3, 0.1]}),
        ["split", "sum to 1", "[0.5, 0.3, 0.1]"]),
    "split column without a column": (
        small(split={"method": "column"}),
        ["split method 'column' needs 'column: <name of the split column>'"]),
    "hidden is not a mapping": (
        small(hidden=None),
        ["hidden", "valid dictionary", "None"]),
    "a feature that is not a mapping": (
        small(inputs=["age"]),
        ["inputs[0]", "valid dictionary", "'age'"]),
}


@pytest.mark.parametrize("raw, expected", list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
def test_bad_config_gives_one_line_naming_the_key(raw, expected):
    message = error_of(raw)
    assert "\n" not in message, message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_union_member_tags_never_reach_the_message():
    # pydantic reports a union per member ('training.learning_rate.float', '...literal['auto']')
    message = error_of(small(training={"learning_rate": "fast"}))
    assert "float" not in message and "literal" not in message
    message = error_of(small(outputs=[{"name": "income", "type": "binary", "class_weights": {"high": "x"}}]))
    assert message.startswith("outputs[0] ('income').class_weights:"), message


def test_several_mistakes_give_one_line_each():
    message = error_of(small(hiden={}, training={"epochs": "many"}))
    lines = message.splitlines()
    assert len(lines) == 2
    assert any("'hiden'" in line for line in lines) and any("training.epochs" in line for line in lines)


def test_output_type_that_cannot_be_an_output_is_explained():
    # Feed _explain the error pydantic would give, as if 'number' were input-only (a real
    # input-only type, image, is checked end to end in tests/test_image.py).
    item = {"loc": ("outputs", 0), "type": "union_tag_invalid", "msg": "",
            "input": {"name": "price", "type": "number"}}
    message = _explain(item, {"outputs": [{"name": "price", "type": "number"}]})
    assert message.startswith("outputs[0] ('price'): type 'number' cannot be an output")
    assert "output types are: " in message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("inputs:\n  - name: age\n    type: number\noutputs:\n  - name: y\n   type: binary\n")
    message = error_of(path)
    assert str(path) in message and "line 6" in message and "not valid YAML" in message


def test_error_in_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(small(hiden={"layers": 2})))
    message = error_of(str(path))
    assert message.startswith(f"{path}: unknown key 'hiden'")


def test_config_file_that_does_not_exist(tmp_path):
    message = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "does not exist" in message


@pytest.mark.parametrize("text, got", [("- a\n- b\n", "got list"), ("", "empty file"), ("42\n", "got int")])
def test_config_that_is_not_a_mapping(tmp_path, text, got):
    path = tmp_path / "model.yaml"
    path.write_text(text)
    message = error_of(path)
    assert "a config must be a mapping with keys inputs, outputs" in message and got in message


def test_config_object_that_is_not_a_mapping():
    assert "got list" in error_of([1, 2])


def test_bad_early_stopping_metric_is_raised_at_fit():
    bad = config(training={"early_stopping": {"metric": "income.auc"}})
    model = lamina.Model(bad)  # a metric name can only be checked against the outputs' metrics
    with pytest.raises(ConfigError) as caught:
        model.fit(people(100), quiet=True)
    message = str(caught.value)
    assert "training.early_stopping.metric" in message and "'income.auc'" in message
    assert "income.roc_auc" in message


def test_early_stopping_metric_of_an_output_with_a_dot_in_its_name():
    frame = people(100).rename(columns={"income": "income.level"})
    dotted = config(outputs=[{"name": "income.level", "type": "binary"}],
                    training={"early_stopping": {"metric": "income.level.roc_auc"}})
    model = lamina.Model(dotted).fit(frame, quiet=True)
    assert model.training_["monitored"] == "income.level.roc_auc"


def full_config() -> dict:
    """A config that sets something in every section and every type."""
    return {
        "inputs": [
            {"name": "age", "type": "number", "normalize": "log", "encoding": "plain", "missing": "constant",
             "fill_value": -1.0},
            {"name": "city", "type": "category", "max_size": 10, "min_count": 2, "embedding_size": 4},
            {"name": "member", "type": "binary", "positive": "yes", "missing": "false"},
            {"name": "tags", "type": "set", "delimiter": "|", "missing": "drop"},
        ],
        "hidden": {"layers": 2, "size": 16, "dropout": 0.2, "activation": "gelu", "normalization": "layer",
                   "residual": True},
        "outputs": [
            {"name": "income", "type": "binary", "class_weights": {"high": 2.0}, "weight": 2.0},
            {"name": "spend", "type": "number", "loss": "huber"},
            {"name": "segment", "type": "category", "label_smoothing": 0.1, "class_weights": "balanced"},
        ],
        "training": {"epochs": 3, "batch_size": 32, "learning_rate": 0.003, "schedule": "cosine",
                     "gradient_clip": None, "early_stopping": None, "seed": 7},
        "split": {"method": "column", "column": "part", "ratios": [0.7, 0.2, 0.1], "seed": 3},
    }


def test_round_trip_through_to_dict_is_lossless():
    original = lamina.load_config(full_config())
    again = lamina.load_config(original.to_dict())
    assert again == original
    assert again.to_dict() == original.to_dict()
    assert lamina.load_config(again) is again


def test_round_trip_through_a_yaml_file_is_lossless(tmp_path):
    original = lamina.load_config(full_config())
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(original.to_dict(), sort_keys=False))
    assert lamina.load_config(path) == original


def test_defaults_fill_in():
    filled = lamina.load_config(small())
    assert filled.training.learning_rate == "auto" and filled.training.early_stopping.metric == "loss"
    assert filled.inputs[0].normalize == "zscore"
    assert lamina.load_config(filled.to_dict()) == filled


def test_json_schema_has_per_type_options():
    schema = Config.model_json_schema()
    json.dumps(schema)  # serialisable as is
    definitions = schema["$defs"]
    assert definitions["NumberInput"]["properties"]["normalize"]["enum"] == ["zscore", "minmax", "log", "none"]
    assert "delimiter" in definitions["SetInput"]["properties"]
    assert "weight" in definitions["BinaryOutput"]["properties"]
    assert "weight" not in definitions["BinaryInput"]["properties"]
    mapping = schema["properties"]["inputs"]["items"]["discriminator"]["mapping"]
    assert set(mapping) == {name for name in REGISTRY if getattr(REGISTRY[name], "CAN_BE_INPUT", True)}
    assert "ranking" not in mapping  # output-only types are not offered as inputs
    assert definitions["NumberInput"]["additionalProperties"] is False

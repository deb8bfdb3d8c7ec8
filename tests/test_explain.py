"""Explanations: Integrated Gradients is complete (scores add up to output - baseline) for tabular,
text and image inputs; a planted signal ranks first; text gets a score per token and images a heat
map; every method gives the same structure; bad requests are one-line errors; the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import ConfigError, DataError
from lamina.data import tensors
from lamina.explain import METHODS
from lamina.explain_render import heat_map_png, heat_map_rgb, summary

from helpers_data import people, write_table
from test_cli import run
from test_image import stripes
from test_text import NEGATIVE, POSITIVE, classifier, reviews

pytest.importorskip("captum")

# Integration steps. The integrand, the network's gradient, jumps wherever a ReLU switches on or off
# along the path, so the sum of n steps closes only to about 1/n: with 200 steps the sums miss
# output - baseline by 0.001 to 0.009 (relative to max(1, |gap|)) over seeds 0-4, on every input type
# here; a broken attribution (a lost input, a wrong baseline) misses by far more than the 0.03 allowed.
STEPS = 200


def tabular_config(outputs: list | None = None, epochs: int = 4) -> dict:
    return {"inputs": [{"name": "age", "type": "number"}, {"name": "city", "type": "category"},
                       {"name": "member", "type": "binary"}, {"name": "tags", "type": "set", "delimiter": "|"}],
            "hidden": {"layers": 2, "size": 16},
            "outputs": outputs or [{"name": "income", "type": "binary"}, {"name": "segment", "type": "category"},
                                   {"name": "spend", "type": "number"}],
            "training": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.01}}


@pytest.fixture(scope="module")
def tabular():
    frame = people(300)
    return lamina.Model(tabular_config()).fit(frame, quiet=True), frame


def assert_complete(result: dict, tolerance: float = 0.03) -> None:
    for row in result["rows"]:
        gap = row["output_value"] - row["baseline_value"]
        assert abs(sum(row["scores"].values()) - gap) <= tolerance * max(1.0, abs(gap)), row


def raw_outputs(model, frame) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model.network_.eval()(tensors(frame, model.inputs_)["inputs"])


@pytest.mark.parametrize("output", ["income", "segment", "spend"])
def test_integrated_gradients_add_up_for_tabular_inputs(tabular, output):
    model, frame = tabular
    rows = frame.head(20)
    result = model.explain(rows, output=output, steps=STEPS)
    assert result["output"] == output and result["complete"]
    assert_complete(result)
    raw = raw_outputs(model, rows)[output]
    explained = raw if raw.ndim == 1 else raw.gather(1, raw.argmax(1, keepdim=True)).squeeze(1)
    np.testing.assert_allclose([row["output_value"] for row in result["rows"]], explained.numpy(), rtol=1e-5,
                               atol=1e-5)
    assert set(result["rows"][0]["scores"]) == {"age", "city", "member", "tags"}
    assert json.loads(json.dumps(result)) == result  # JSON-able as it is


def test_the_baseline_is_the_documented_input(tabular):
    """The baseline output is the network on the training mean age, the unknown city, a binary
    halfway between its values and the empty set."""
    model, frame = tabular
    network, (age, city, member, tags) = model.network_.eval(), model.network_.encoders
    with torch.no_grad():
        vectors = [age(torch.tensor([model.inputs_[0].stats["mean"]])), city(torch.tensor([0])),
                   member(torch.tensor([0.5])), tags(torch.zeros(1, len(model.inputs_[3].stats["labels"])))]
        expected = float(network.heads[0](network.trunk(torch.cat(vectors, dim=1))))
    result = model.explain(frame.head(3))
    # computed for one row here and for three there: float32 rounding may differ
    assert all(row["baseline_value"] == pytest.approx(expected, rel=1e-5, abs=1e-5) for row in result["rows"])


def test_category_target_picks_the_class_explained(tabular):
    model, frame = tabular
    result = model.explain(frame.head(5), output="segment", target="senior", steps=STEPS)
    assert {row["label"] for row in result["rows"]} == {"senior"}
    assert "'senior'" in result["explained"]
    assert_complete(result)
    raw = raw_outputs(model, frame.head(5))["segment"]
    senior = model.outputs_[1].stats["labels"].index("senior")
    np.testing.assert_allclose([row["output_value"] for row in result["rows"]], raw[:, senior].numpy(), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_the_same_structure(tabular, method):
    model, frame = tabular
    result = model.explain(frame.head(4), method=method, output="segment")
    assert result["method"] == method and len(result["rows"]) == 4
    assert all(np.isfinite(list(row["scores"].values())).all() for row in result["rows"])
    if method == "deeplift":  # exact for networks of linear layers and ReLUs
        assert_complete(result, tolerance=1e-4)


def test_feature_ablation_scores_are_the_output_change_when_one_input_is_reset(tabular):
    model, frame = tabular
    rows = frame.head(3)
    result = model.explain(rows, method="feature_ablation")
    network, inputs = model.network_.eval(), tensors(rows, model.inputs_)["inputs"]
    with torch.no_grad():
        vectors = [encoder(inputs[name]) for name, encoder in zip(network.input_names, network.encoders)]
        full = network.heads[0](network.trunk(torch.cat(vectors, dim=1)))
        vectors[2] = network.encoders[2](torch.full((3,), 0.5))  # member at its baseline, the rest kept
        reset = network.heads[0](network.trunk(torch.cat(vectors, dim=1)))
    np.testing.assert_allclose([row["scores"]["member"] for row in result["rows"]], (full - reset).numpy(),
                               atol=1e-5)


# --- a planted signal -----------------------------------------------------------------------------

def planted(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """The label follows `signal` alone; the other columns are noise of every tabular type."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 1, rows)
    return pd.DataFrame({
        "noise_number": rng.normal(0, 1, rows), "signal": signal,
        "noise_category": rng.choice(list("abcde"), rows), "noise_binary": rng.choice(["yes", "no"], rows),
        "colour": rng.choice(["red", "green", "blue"], rows),
        "label": np.where(signal > 0, "up", "down")})


@pytest.mark.parametrize("signal_type", ["number", "category"])
def test_the_planted_feature_ranks_first(signal_type):
    frame = planted()
    if signal_type == "category":  # the same signal, binned into five named values
        frame["signal"] = pd.cut(frame["signal"], [-np.inf, -1, -0.3, 0, 0.3, np.inf],
                                 labels=["vlow", "low", "mid", "high", "vhigh"]).astype(str)
    config = {"inputs": [{"name": "noise_number", "type": "number"}, {"name": "signal", "type": signal_type},
                         {"name": "noise_category", "type": "category"}, {"name": "noise_binary", "type": "binary"},
                         {"name": "colour", "type": "category"}],
              "hidden": {"layers": 1, "size": 16}, "outputs": [{"name": "label", "type": "binary"}],
              "training": {"epochs": 8, "batch_size": 32, "learning_rate": 0.01}}
    model = lamina.Model(config).fit(frame, quiet=True)
    result = model.importance(frame.tail(200), rows=100, repeats=2)
    assert json.loads(json.dumps(result)) == result
    assert list(result["mean_absolute_attribution"])[0] == "signal", result["mean_absolute_attribution"]
    permutation = result["permutation"]
    assert permutation["metric"] == "roc_auc" and permutation["direction"] == "max"
    assert list(permutation["features"])[0] == "signal", permutation["features"]
    assert permutation["features"]["signal"]["mean"] > 0.2  # shuffling it ruins the ranking


# --- text and images ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_model():
    return lamina.Model(classifier("bag")).fit(reviews(), quiet=True)


def test_text_gets_a_score_per_token_and_the_sentiment_word_leads(text_model):
    frame = reviews(30, seed=1)
    result = text_model.explain(frame, steps=STEPS)
    assert_complete(result)
    tokenizer = text_model.inputs_[0]._tokenizers["plain"]
    leads = 0
    for row, text in zip(result["rows"], frame["review"]):
        tokens = row["tokens"]["review"]
        assert [token for token, _ in tokens] == tokenizer.encode(text).tokens  # every word token, no markers
        # the score is the float32 sum of the same token scores (markers score exactly 0): equal up to rounding
        scores = [score for _, score in tokens]
        assert abs(row["scores"]["review"] - sum(scores)) <= 1e-5 * sum(map(abs, scores))
        top = max(tokens, key=lambda item: abs(item[1]))[0].lstrip("▁")
        leads += top in POSITIVE + NEGATIVE
    assert leads >= 0.9 * len(frame), f"the sentiment word led in only {leads} of {len(frame)} rows"


@pytest.mark.parametrize("encoder", ["cnn", "gru", "transformer"])
def test_integrated_gradients_add_up_for_every_text_encoder(encoder):
    config = classifier(encoder)
    config["training"]["epochs"] = 1
    model = lamina.Model(config).fit(reviews(200), quiet=True)
    result = model.explain(reviews(6, seed=2), steps=STEPS)
    assert_complete(result)
    assert all(len(row["tokens"]["review"]) >= 4 for row in result["rows"])


@pytest.fixture(scope="module")
def image_model():
    images, labels = stripes(120)
    frame = pd.DataFrame({"photo": pd.Series(images, dtype=object), "label": labels})
    config = {"inputs": [{"name": "photo", "type": "image", "size": 16, "width": 8, "stages": 2,
                          "embedding_size": 16, "channels": 1}],
              "hidden": {"layers": 1, "size": 16}, "outputs": [{"name": "label", "type": "category"}],
              "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01}}
    return lamina.Model(config).fit(frame, quiet=True), frame


def test_images_get_a_heat_map_of_their_size_and_add_up(image_model):
    model, frame = image_model
    result = model.explain(frame.head(4), steps=STEPS)
    assert_complete(result)
    for row in result["rows"]:
        heat_map = np.asarray(row["heat_maps"]["photo"])
        assert heat_map.shape == (16, 16)
        # the score is the float32 sum of the same 256 cells: equal up to the rounding of that sum
        assert abs(row["scores"]["photo"] - heat_map.sum()) <= 1e-4 * np.abs(heat_map).sum()
        assert "photo" not in row["values"]  # pixels are not repeated in the report


def test_heat_map_renders_over_the_image(image_model):
    model, frame = image_model
    heat_map = model.explain(frame.head(1))["rows"][0]["heat_maps"]["photo"]
    picture = heat_map_rgb(frame["photo"].iloc[0], heat_map)
    assert picture.shape == (16, 16, 3) and picture.dtype == np.uint8
    larger = heat_map_rgb(np.zeros((3, 32, 48), np.uint8), heat_map)  # resized to the image given
    assert larger.shape == (32, 48, 3)
    assert heat_map_png(frame["photo"].iloc[0], heat_map).startswith(b"\x89PNG")
    with pytest.raises(DataError, match="array"):
        heat_map_rgb(np.zeros(5), heat_map)


# --- errors and the command line -----------------------------------------------------------------

def test_bad_requests_are_one_line_errors(tabular):
    model, frame = tabular
    cases = [({"method": "shap"}, ConfigError, "unknown explanation method 'shap'"),
             ({"output": "incme"}, ConfigError, "did you mean 'income'"),
             ({"output": "income", "target": "high"}, ConfigError, "category or set output"),
             ({"output": "segment", "target": "elderly"}, ConfigError, "not a label of output 'segment'")]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            model.explain(frame.head(2), **options)
    with pytest.raises(DataError, match="column 'city'"):
        model.explain(frame.head(2).drop(columns="city"))
    with pytest.raises(DataError, match="column 'income'"):
        model.importance(frame.drop(columns="income"))


def test_a_text_output_cannot_be_explained():
    frame = pd.DataFrame({"source": ["ab", "cd", "ef", "ba"] * 10, "target": ["ba", "dc", "fe", "ab"] * 10})
    text = {"type": "text", "tokenizer": "characters", "max_length": 4, "width": 8, "layers": 1, "heads": 2,
            "min_count": 1}
    config = {"inputs": [{"name": "source", **text}], "outputs": [{"name": "target", **text}],
              "hidden": {"layers": 1, "size": 8}, "training": {"epochs": 1, "learning_rate": 0.01}}
    model = lamina.Model(config).fit(frame, quiet=True)
    with pytest.raises(ConfigError, match="output 'target' is generated text"):
        model.explain(frame.head(2))


def test_cli_explains_rows_and_writes_json(tabular, tmp_path):
    model, frame = tabular
    model.save(tmp_path / "model")
    data = write_table(frame.head(60), tmp_path / "rows.csv")
    code, out, err = run(["explain", "--model", tmp_path / "model", "--data", data, "--rows", "3",
                          "--importance", "--output", tmp_path / "explanations.json"])
    assert code == 0, err
    assert out.count("top inputs:") == 3 and "permutation importance over 60 rows" in out
    written = json.loads((tmp_path / "explanations.json").read_text())
    assert len(written["explanations"]["rows"]) == 3
    assert set(written["importance"]["mean_absolute_attribution"]) == {"age", "city", "member", "tags"}
    code, out, err = run(["explain", "--model", tmp_path / "model", "--data", data, "--method", "lime"])
    assert code == 2 and err.startswith("lamina: error: unknown explanation method 'lime'") and not out
    assert err.count("\n") == 1


def test_summary_names_the_quantity_and_the_top_inputs(tabular):
    model, frame = tabular
    text = summary(model.explain(frame.head(2), output="spend"))
    assert text.startswith("explaining spend in normalised units")
    assert text.count("top inputs:") == 2 and "age=" in text

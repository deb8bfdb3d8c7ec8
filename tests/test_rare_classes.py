"""Rare classes: over/under-sampling of the training rows, threshold rules (minimum recall, costs),
temperature scaling, the added metrics (checked against scikit-learn), and the errors for
settings and data that cannot work."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

import lamina
from lamina import calibration, features, report, sampling
from lamina.config import OUTPUT_MODELS
from lamina.data import split_rows
from lamina.features.columns import LazyColumn
from lamina.features import binary


def output_feature(kind: str, column: pd.Series, **options):
    feature = features.build(OUTPUT_MODELS[kind](name="label", type=kind, **options))
    feature.fit(column)
    return feature


def rare_frame(rows: int = 1200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    return pd.DataFrame({"x": x, "fraud": np.where(x + rng.normal(0, 0.3, rows) > 1.6, "yes", "no")})


def small_config(**output) -> dict:
    return {"inputs": [{"name": "x", "type": "number"}],
            "outputs": [{"name": "fraud", "type": "binary", **output}],
            "hidden": {"layers": 1, "size": 8}, "training": {"epochs": 2, "learning_rate": 0.01}}


# --- sampling ----------------------------------------------------------------------------------

def test_sampling_positions_reach_the_ratio_and_are_seeded():
    labels = np.array([0] * 90 + [1] * 10)
    over = sampling.positions(labels, "over", 0.5, seed=3)
    assert np.bincount(labels[over]).tolist() == [90, 45]
    assert set(range(100)) <= set(over.tolist()), "over-sampling keeps every original row"
    under = sampling.positions(labels, "under", 0.5, seed=3)
    assert np.bincount(labels[under]).tolist() == [20, 10] and len(set(under.tolist())) == 30
    assert np.array_equal(over, sampling.positions(labels, "over", 0.5, seed=3))
    assert not np.array_equal(under, sampling.positions(labels, "under", 0.5, seed=4))
    three = np.array([0] * 60 + [1] * 30 + [2] * 10)  # category: every class to at least ratio x the largest
    assert np.bincount(three[sampling.positions(three, "over", 1.0, seed=0)]).tolist() == [60, 60, 60]
    assert np.bincount(three[sampling.positions(three, "under", 1.0, seed=0)]).tolist() == [10, 10, 10]


def test_sampling_keeps_lazy_columns_lazy():
    column = LazyColumn([f"cell {i}" for i in range(5)], lambda cells: torch.tensor([int(c[5:]) for c in cells]))
    table = {"inputs": {"image": column, "x": torch.arange(5.0)}, "targets": {"y": torch.tensor([0, 0, 0, 0, 1])}}
    taken = sampling.take(table, np.array([0, 4, 4]))
    assert isinstance(taken["inputs"]["image"], LazyColumn)
    assert taken["inputs"]["image"][np.arange(3)].tolist() == [0, 4, 4]
    assert taken["inputs"]["x"].tolist() == [0.0, 4.0, 4.0] and taken["targets"]["y"].tolist() == [0, 1, 1]


def test_sampling_resamples_only_the_training_rows():
    frame = rare_frame()
    model = lamina.Model(small_config(sampling="under", sampling_ratio=0.5)).fit(frame, quiet=True)
    parts = split_rows(frame, model.config)
    training = frame.iloc[parts["train"]]
    positives = int((training["fraud"] == "yes").sum())
    record = model.training_["sampling"]
    assert record["rows_before"] == len(training) and record["rows_after"] == 3 * positives
    assert record["classes_before"] == {"no": len(training) - positives, "yes": positives}
    assert record["classes_after"] == {"no": 2 * positives, "yes": positives}
    assert model.training_["rows"] == {part: len(rows) for part, rows in parts.items()}
    assert model.outputs_[0].stats["counts"] == [len(training) - positives, positives], "stats: original rows"
    assert model.inputs_[0].stats["mean"] == pytest.approx(training["x"].mean())
    trained = model.metrics_["train"]["fraud"]  # measured on the training rows as they are, not resampled
    assert trained["true_positives"] + trained["false_negatives"] == positives
    assert sum(trained[key] for key in ("true_positives", "false_positives", "false_negatives",
                                        "true_negatives")) == len(training)
    summary = report.data_section(model)  # the report says what was done to the training rows
    assert f"under-sampled for 'fraud': {len(training):,} to {3 * positives:,}" in summary
    evaluated = model.evaluate(frame.iloc[parts["test"]])["fraud"]
    assert evaluated["true_positives"] + evaluated["false_negatives"] == (frame.iloc[parts["test"]]["fraud"]
                                                                          == "yes").sum()


def test_sampling_with_class_weights_warns_of_the_double_boost():
    with pytest.warns(UserWarning, match="boosted twice"):
        lamina.Model(small_config(sampling="over", sampling_ratio=0.5, class_weights="balanced")).fit(
            rare_frame(), quiet=True)


@pytest.mark.parametrize("config, message", [
    ({"inputs": [{"name": "x", "type": "number"}],
      "outputs": [{"name": "a", "type": "binary", "sampling": "over"},
                  {"name": "b", "type": "category", "sampling": "under"}]}, "for one output only"),
    ({"inputs": [{"name": "x", "type": "binary", "sampling": "over"}],
      "outputs": [{"name": "a", "type": "binary"}]}, "move it to the binary or category output"),
    (small_config(sampling_ratio=0.5), "sampling_ratio needs sampling"),
    (small_config(sampling="over", sampling_ratio=1.5), "sampling_ratio"),
    (small_config(sampling="sideways"), "sampling"),
])
def test_sampling_config_errors(config, message):
    with pytest.raises(lamina.ConfigError, match=message):
        lamina.Model(config)


# --- threshold rules ---------------------------------------------------------------------------

PROBABILITY = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
TRUTH = np.array([0, 0, 1, 0, 1, 0, 1, 1])


def chosen(**rule) -> float:
    return binary.choose_threshold(TRUTH, PROBABILITY, OUTPUT_MODELS["binary"](name="y", type="binary", **rule))


def test_minimum_recall_takes_the_highest_threshold_reaching_it():
    assert chosen(minimum_recall=0.75) == 0.5  # flags 0.5, 0.7, 0.8: 3 of 4 positives; 0.6 flags only 2
    assert chosen(minimum_recall=1.0) == 0.3
    assert chosen(minimum_recall=0.25) == 0.8


@pytest.mark.parametrize("false_positive, false_negative, expected", [
    (1, 10, 0.3),  # alarms are cheap: flag from 0.3 (2 false alarms, nothing missed)
    (10, 1, 0.7),  # alarms are dear: flag only 0.7 and 0.8 (2 missed)
])
def test_costs_take_the_cheapest_threshold(false_positive, false_negative, expected):
    threshold = chosen(costs={"false_positive": false_positive, "false_negative": false_negative})
    assert threshold == expected

    def cost(t: float) -> float:
        flagged = PROBABILITY >= t
        return false_positive * np.sum(flagged & (TRUTH == 0)) + false_negative * np.sum(~flagged & (TRUTH == 1))

    assert cost(threshold) == min(cost(t) for t in list(PROBABILITY) + [0.9])


def test_costs_may_flag_nothing():
    options = OUTPUT_MODELS["binary"](name="y", type="binary", costs={"false_positive": 100, "false_negative": 1})
    probability = np.array([0.2, 0.9, 0.6])
    threshold = binary.choose_threshold(np.array([1, 0, 0]), probability, options)
    assert threshold > probability.max() and not (probability >= threshold).any()


@pytest.mark.parametrize("output, message", [
    ({"threshold": 0.3, "minimum_recall": 0.9}, "threshold and minimum_recall"),
    ({"threshold": "f1", "costs": {"false_positive": 1, "false_negative": 2}}, "keep only one"),
    ({"minimum_precision": 0.9, "minimum_recall": 0.9}, "minimum_precision and minimum_recall"),
    ({"costs": {"false_positive": -1, "false_negative": 2}}, "costs.false_positive.*greater than or equal to 0"),
    ({"costs": {"false_positive": 0, "false_negative": 0}}, "at least one"),
    ({"costs": {"false_positive": 1, "false_negatives": 2}}, "unknown key 'false_negatives'"),
    ({"minimum_recall": 1.5}, "minimum_recall"),
])
def test_threshold_rule_errors(output, message):
    with pytest.raises(lamina.ConfigError, match=message):
        lamina.Model(small_config(**output))


# --- temperature scaling -----------------------------------------------------------------------

@pytest.mark.parametrize("classes", [1, 4])
def test_temperature_scaling_recovers_a_known_temperature(classes):
    generator = torch.Generator().manual_seed(0)
    if classes == 1:
        true_logits = torch.randn(20000, generator=generator) * 2
        target = torch.bernoulli(torch.sigmoid(true_logits), generator=generator)
    else:
        true_logits = torch.randn(20000, classes, generator=generator) * 2
        target = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)
    assert calibration.fit_temperature(true_logits * 3.0, target) == pytest.approx(3.0, rel=0.08)
    assert calibration.fit_temperature(true_logits / 2.0, target) == pytest.approx(0.5, rel=0.08)


def test_calibration_is_saved_and_used_everywhere(tmp_path):
    frame = rare_frame(seed=2)
    model = lamina.Model(small_config(calibration="temperature", minimum_recall=0.8)).fit(frame, quiet=True)
    feature = model.outputs_[0]
    assert feature.temperature != 1.0 and "threshold" in feature.stats
    predicted = model.predict(frame.head(50))
    raw = lamina.train.predict_raw(model.network_, lamina.data.tensors(frame.head(50), model.inputs_))["fraud"]
    assert np.allclose(predicted["fraud_probability"], torch.sigmoid(raw / feature.temperature).numpy(), atol=1e-6)
    model.save(tmp_path / "model")
    loaded = lamina.load(tmp_path / "model")
    assert np.array_equal(loaded.predict(frame.head(50))["fraud_probability"], predicted["fraud_probability"])
    assert loaded.outputs_[0].temperature == feature.temperature
    parts = split_rows(frame, model.config)  # the threshold was chosen on calibrated validation probabilities
    rows = frame.iloc[parts["validation"]]
    flagged = model.predict(rows)["fraud"] == "yes"
    assert flagged[rows["fraud"] == "yes"].mean() >= 0.8


def test_export_divides_by_the_temperature(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lamina import export

    frame = rare_frame(seed=3)
    model = lamina.Model(small_config(calibration="temperature")).fit(frame, quiet=True)
    export.export(model, tmp_path / "exported")
    got = export.run_onnx(tmp_path / "exported", frame[["x"]].head(20))["fraud_probability"]
    assert np.allclose(got, model.predict(frame.head(20))["fraud_probability"], atol=1e-5)


def test_no_validation_rows_warns_and_leaves_probabilities_alone():
    config = small_config(calibration="temperature") | {"split": {"ratios": [0.9, 0.0, 0.1]}}
    config["training"]["early_stopping"] = None
    with pytest.warns(UserWarning, match="no validation rows to fit the calibration temperature"):
        model = lamina.Model(config).fit(rare_frame(), quiet=True)
    assert model.outputs_[0].temperature == 1.0


def test_category_calibration_and_sampling():
    rng = np.random.default_rng(4)
    x = rng.normal(size=900)
    frame = pd.DataFrame({"x": x, "kind": np.select([x < -0.5, x < 0.8], ["a", "b"], "c")})
    config = {"inputs": [{"name": "x", "type": "number"}],
              "outputs": [{"name": "kind", "type": "category", "calibration": "temperature", "sampling": "over"}],
              "hidden": {"layers": 1, "size": 8}, "training": {"epochs": 2, "learning_rate": 0.01}}
    model = lamina.Model(config).fit(frame, quiet=True)
    feature = model.outputs_[0]
    raw = lamina.train.predict_raw(model.network_, lamina.data.tensors(frame.head(10), model.inputs_))["kind"]
    expected = torch.softmax(raw / feature.temperature, 1).numpy()
    assert feature.temperature != 1.0
    after = model.training_["sampling"]["classes_after"]
    assert set(after) == {"a", "b", "c"} and len(set(after.values())) == 1  # every class as large as the largest
    position = feature.stats["labels"].index("b")
    assert np.allclose(model.predict(frame.head(10))["kind_probability_b"], expected[:, position], atol=1e-6)


# --- metrics -----------------------------------------------------------------------------------

def test_binary_metrics_agree_with_sklearn():
    rng = np.random.default_rng(5)
    truth = (rng.random(400) < 0.2).astype(int)
    logits = torch.tensor(rng.normal(truth * 1.5 - 0.5, 1.0), dtype=torch.float32)
    feature = output_feature("binary", pd.Series(np.where(truth, "yes", "no")), threshold=0.4)
    result = feature.metrics(torch.tensor(truth, dtype=torch.float32), logits)
    probability = torch.sigmoid(logits.double()).numpy()
    predicted = (probability >= 0.4).astype(int)
    negatives, false_positives, false_negatives, positives = skm.confusion_matrix(truth, predicted).ravel()
    assert (result["true_positives"], result["false_positives"], result["false_negatives"],
            result["true_negatives"]) == (positives, false_positives, false_negatives, negatives)
    assert result["precision"] == pytest.approx(skm.precision_score(truth, predicted))
    assert result["recall"] == pytest.approx(skm.recall_score(truth, predicted))
    assert result["brier_score"] == pytest.approx(skm.brier_score_loss(truth, probability))
    flagged = probability[None, :] >= probability[:, None]  # row i: flag at threshold probability[i]
    hits = (flagged & (truth[None, :] == 1)).sum(1)
    reaching = hits / flagged.sum(1) >= 0.9
    best = max((hits / truth.sum())[reaching].max(initial=0.0), 0.0)
    assert result["recall_at_precision_90"] == pytest.approx(best)


def test_expected_calibration_error_by_hand():
    confidence = np.array([0.05, 0.1, 0.95, 0.9])  # bins 0, 1, 14, 13 of 15
    hit = np.array([0.0, 1.0, 1.0, 1.0])
    expected = (0.05 + 0.9 + 0.05 + 0.1) / 4
    assert calibration.expected_calibration_error(hit, confidence) == pytest.approx(expected)
    assert calibration.expected_calibration_error(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == 0.0


def test_category_brier_score_and_pr_auc():
    truth = np.array([0, 1, 2, 1, 0, 2])
    logits = torch.tensor([[2.0, 0, 0], [0, 1, 0], [0, 0, 3], [1, 0, 0], [0, 0, 1], [0, 2, 1]])
    feature = output_feature("category", pd.Series(["a", "b", "c", "b", "a", "c"]))
    result = feature.metrics(torch.tensor(truth), logits)
    probabilities = torch.softmax(logits.double(), 1).numpy()
    onehot = np.eye(3)[truth]
    assert result["brier_score"] == pytest.approx(np.mean(np.sum((probabilities - onehot) ** 2, 1)))
    assert result["pr_auc"] == pytest.approx(np.mean([skm.average_precision_score(onehot[:, k], probabilities[:, k])
                                                      for k in range(3)]))


# --- data that cannot work ---------------------------------------------------------------------

def test_one_class_only_in_training_is_a_clear_error():
    frame = rare_frame(300)
    frame["split"] = np.where(frame["fraud"] == "yes", "test", "train")
    frame.loc[frame.index[:20], "split"] = "validation"
    config = small_config() | {"split": {"method": "column", "column": "split"}}
    with pytest.raises(lamina.DataError, match=r"column 'fraud' row \d+: label 'yes' never occurs in the "
                                               r"training split, which holds only 'no'"):
        lamina.Model(config).fit(frame, quiet=True)
    only_no = frame[frame["fraud"] == "no"]  # no 'yes' anywhere: the network cannot be built
    with pytest.raises(lamina.DataError, match="output 'fraud': the training split holds only the label 'no'"):
        lamina.Model(small_config()).fit(only_no, quiet=True)


def test_a_category_label_never_seen_in_training_names_the_row():
    frame = pd.DataFrame({"x": np.arange(60.0), "kind": ["a", "b"] * 30, "split": ["train"] * 50 + ["test"] * 10})
    frame.loc[55, "kind"] = "zebra"
    config = {"inputs": [{"name": "x", "type": "number"}], "outputs": [{"name": "kind", "type": "category"}],
              "split": {"method": "column", "column": "split"}, "training": {"epochs": 1}}
    with pytest.raises(lamina.DataError, match="column 'kind' row 55: label 'zebra' never occurs in the training"):
        lamina.Model(config).fit(frame, quiet=True)

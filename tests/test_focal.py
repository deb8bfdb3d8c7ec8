"""Focal loss for rare classes (binary and category outputs): gamma 0 is plain cross-entropy,
a positive gamma shrinks the loss of rows already predicted well, and a model still learns."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import features
from lamina.config import OUTPUT_MODELS


def output_feature(kind: str, column: pd.Series, **options):
    feature = features.build(OUTPUT_MODELS[kind](name="label", type=kind, **options))
    feature.fit(column)
    return feature


@pytest.mark.parametrize("kind", ["binary", "category"])
def test_gamma_zero_is_cross_entropy_and_gamma_shrinks_easy_rows(kind):
    column = pd.Series(["yes", "no", "yes", "no"])
    target = output_feature(kind, column).target(column)
    logits = torch.tensor([4.0, -4.0, 0.1, 0.2]) if kind == "binary" else torch.tensor(
        [[-2.0, 2.0], [2.0, -2.0], [0.0, 0.1], [0.1, 0.0]])  # labels sorted: no, yes
    plain = output_feature(kind, column).loss(logits, target)
    same = output_feature(kind, column, focal_gamma=0.0).loss(logits, target)
    focal = output_feature(kind, column, focal_gamma=2.0).loss(logits, target)
    assert torch.allclose(plain, same)
    assert focal < plain
    easy, hard = logits[:2], logits[2:]
    ratio_easy = output_feature(kind, column, focal_gamma=2.0).loss(easy, target[:2]) / \
        output_feature(kind, column).loss(easy, target[:2])
    ratio_hard = output_feature(kind, column, focal_gamma=2.0).loss(hard, target[2:]) / \
        output_feature(kind, column).loss(hard, target[2:])
    assert ratio_easy < ratio_hard, "confident, correct rows lose most of their weight"


def test_a_rare_positive_class_is_learned_with_focal_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=3000)
    frame = pd.DataFrame({"x": x, "fraud": np.where(x > 1.9, "yes", "no")})  # about 3% positive
    config = {"inputs": [{"name": "x", "type": "number"}],
              "outputs": [{"name": "fraud", "type": "binary", "focal_gamma": 2.0}],
              "hidden": {"layers": 1, "size": 16}, "training": {"epochs": 10, "learning_rate": 0.01}}
    model = lamina.Model(config).fit(frame, quiet=True)
    assert model.metrics_["test"]["fraud"]["roc_auc"] >= 0.95


@pytest.mark.parametrize("setting, check", [
    ({"threshold": "f1"}, lambda model, threshold: 0.0 < threshold < 1.0),
    ({"minimum_precision": 0.9}, lambda model, threshold: True),
])
def test_threshold_tuned_on_validation_is_saved_and_used(setting, check, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=2000)
    frame = pd.DataFrame({"x": x, "fraud": np.where(x + rng.normal(0, 0.5, 2000) > 1.5, "yes", "no")})
    config = {"inputs": [{"name": "x", "type": "number"}],
              "outputs": [{"name": "fraud", "type": "binary", **setting}],
              "hidden": {"layers": 1, "size": 8}, "training": {"epochs": 5, "learning_rate": 0.01}}
    model = lamina.Model(config).fit(frame, quiet=True)
    threshold = model.outputs_[0].stats["threshold"]
    assert check(model, threshold) and threshold != 0.5
    predicted = model.predict(frame.head(200))
    assert ((predicted["fraud_probability"] >= threshold) == (predicted["fraud"] == "yes")).all()
    model.save(tmp_path / "model")
    assert lamina.load(tmp_path / "model").outputs_[0].threshold == threshold
    if "minimum_precision" in setting:  # precision on the validation rows reaches the target
        from lamina.data import split_rows
        parts = split_rows(frame, model.config)
        rows = frame.iloc[parts["validation"]]
        predicted = model.predict(rows)  # all validation rows at once: the scores the threshold was chosen on
        chosen = predicted["fraud"] == "yes"
        truth = rows["fraud"] == "yes"
        probability = predicted["fraud_probability"]
        if any(truth[probability >= cut].mean() >= 0.9 for cut in probability):
            assert (truth[chosen]).mean() >= 0.9
        else:  # the label noise put negatives at the top of this split: no threshold can reach 0.9
            assert threshold == probability.max()  # the highest one is used (with a warning)


def test_threshold_setting_errors():
    with pytest.raises(lamina.ConfigError, match="threshold"):
        lamina.Model({"inputs": [{"name": "x", "type": "number"}],
                      "outputs": [{"name": "y", "type": "binary", "threshold": 1.5}]})

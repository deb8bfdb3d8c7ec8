"""End to end on generated data with a known signal: each model must beat a trivial baseline."""
import numpy as np
import pandas as pd
import pytest

import lamina

SMALL = {"layers": 2, "size": 32, "dropout": 0.0}


def tabular(rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "a": rng.normal(size=rows),
        "b": rng.normal(size=rows),
        "noise": rng.normal(size=rows),
        "colour": rng.choice(["red", "green", "blue"], rows),
        "flag": rng.choice(["yes", "no"], rows),
    })
    shift = frame["colour"].map({"red": 1.5, "green": 0.0, "blue": -1.5})
    frame["score"] = 2 * frame["a"] - frame["b"] + shift + 0.1 * rng.normal(size=rows)
    frame["label"] = np.where(frame["a"] + frame["b"] + shift > 0, "high", "low")
    frame["kind"] = np.select([frame["a"] > 0.5, frame["a"] < -0.5], ["up", "down"], "flat")
    frame["tags"] = [",".join(tag for tag, on in (("pos_a", a > 0), ("pos_b", b > 0), ("yes", f == "yes")) if on)
                     for a, b, f in zip(frame["a"], frame["b"], frame["flag"])]
    return frame


INPUTS = [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}, {"name": "noise", "type": "number"},
          {"name": "colour", "type": "category"}, {"name": "flag", "type": "binary"}]


def config(outputs, epochs: int = 15, **training) -> dict:
    return {"inputs": INPUTS, "hidden": SMALL, "outputs": outputs,
            "training": {"epochs": epochs, "batch_size": 64, "learning_rate": 0.01, **training}}


def test_binary_beats_majority_class():
    model = lamina.Model(config([{"name": "label", "type": "binary"}])).fit(tabular(), quiet=True)
    test = model.metrics_["test"]["label"]
    assert test["accuracy"] > 0.88  # the majority class is about 0.5; seeds 0-5 reach 0.94 to 0.99
    assert test["roc_auc"] > 0.95


def test_regression_beats_predicting_the_mean():
    frame = tabular()
    model = lamina.Model(config([{"name": "score", "type": "number"}])).fit(frame, quiet=True)
    assert model.metrics_["test"]["score"]["rmse"] < 0.35 * frame["score"].std()
    assert model.metrics_["test"]["score"]["r2"] > 0.85


def test_category_output_beats_majority_class():
    model = lamina.Model(config([{"name": "kind", "type": "category"}])).fit(tabular(), quiet=True)
    assert model.metrics_["test"]["kind"]["accuracy"] > 0.85  # the majority class is about 0.38


def test_set_output_beats_predicting_nothing():
    model = lamina.Model(config([{"name": "tags", "type": "set"}])).fit(tabular(), quiet=True)
    test = model.metrics_["test"]["tags"]
    assert test["f1_micro"] > 0.9
    assert test["subset_accuracy"] > 0.7  # the commonest label set covers about a quarter of rows


def test_multi_task_learns_every_output():
    outputs = [{"name": "label", "type": "binary"}, {"name": "score", "type": "number"},
               {"name": "kind", "type": "category"}]
    model = lamina.Model(config(outputs)).fit(tabular(), quiet=True)
    test = model.metrics_["test"]
    assert test["label"]["accuracy"] > 0.88 and test["score"]["r2"] > 0.8 and test["kind"]["accuracy"] > 0.8
    predictions = model.predict(tabular(20, seed=5))
    assert {"label", "label_probability", "score", "kind", "kind_probability_up"} <= set(predictions.columns)


def test_set_as_input_carries_signal():
    frame = tabular()
    inputs = [{"name": "tags", "type": "set"}, {"name": "noise", "type": "number"}]
    cfg = {"inputs": inputs, "hidden": SMALL, "outputs": [{"name": "flag", "type": "binary"}],
           "training": {"epochs": 10, "batch_size": 64, "learning_rate": 0.01}}
    model = lamina.Model(cfg).fit(frame, quiet=True)
    assert model.metrics_["test"]["flag"]["accuracy"] > 0.95  # 'yes' in tags is the flag


def test_same_seed_same_predictions_other_seed_differs():
    frame = tabular(600)
    first = lamina.Model(config([{"name": "score", "type": "number"}], epochs=3)).fit(frame, quiet=True)
    second = lamina.Model(config([{"name": "score", "type": "number"}], epochs=3)).fit(frame, quiet=True)
    other = lamina.Model(config([{"name": "score", "type": "number"}], epochs=3, seed=7)).fit(frame, quiet=True)
    pd.testing.assert_frame_equal(first.predict(frame), second.predict(frame))
    assert not np.allclose(first.predict(frame)["score"], other.predict(frame)["score"])


def test_learning_rate_auto_runs_a_range_test():
    cfg = config([{"name": "label", "type": "binary"}], epochs=5)
    cfg["training"]["learning_rate"] = "auto"
    model = lamina.Model(cfg).fit(tabular(), quiet=True)
    finder = model.training_["finder"]
    assert len(finder["rates"]) >= 20 and finder["rates"] == sorted(finder["rates"])
    assert 1e-5 <= model.training_["learning_rate"] <= 0.1
    assert model.metrics_["test"]["label"]["accuracy"] > 0.8  # majority class 0.5; seeds 0-7 reach 0.93 to 0.98


def test_early_stopping_restores_the_best_epoch():
    cfg = config([{"name": "score", "type": "number"}], epochs=40,
                 early_stopping={"patience": 2, "metric": "score.rmse"})
    model = lamina.Model(cfg).fit(tabular(400), quiet=True)
    history = model.training_["history"]
    rmse = [record["validation"]["score"]["rmse"] for record in history]
    best = model.training_["best_epoch"]
    assert rmse[best - 1] == min(rmse)
    if model.training_["stopped_early"]:
        assert len(history) == best + 2
    assert model.metrics_["validation"]["score"]["rmse"] == pytest.approx(min(rmse), rel=1e-5)


@pytest.mark.parametrize("schedule", ["one_cycle", "cosine", "constant"])
def test_each_schedule_trains(schedule):
    model = lamina.Model(config([{"name": "label", "type": "binary"}], epochs=5, schedule=schedule))
    # 80 test rows, majority class about 0.5; seeds 0-5 (one and two threads) reach 0.91 to 0.99
    assert model.fit(tabular(800), quiet=True).metrics_["test"]["label"]["accuracy"] > 0.8


@pytest.mark.parametrize("hidden", [{"layers": 0}, {"layers": 3, "size": 32, "residual": True,
                                                   "normalization": "layer", "activation": "gelu"}])
def test_hidden_variants_train(hidden):
    cfg = config([{"name": "label", "type": "binary"}], epochs=15)
    cfg["hidden"] = hidden
    assert lamina.Model(cfg).fit(tabular(800), quiet=True).metrics_["test"]["label"]["accuracy"] > 0.8


def test_class_weights_balanced_raise_minority_recall():
    rng = np.random.default_rng(3)
    rows = 3000
    frame = pd.DataFrame({"x": rng.normal(size=rows), "z": rng.normal(size=rows)})
    frame["rare"] = np.where(frame["x"] + 0.8 * rng.normal(size=rows) > 1.9, "yes", "no")  # about 5%
    base = {"inputs": [{"name": "x", "type": "number"}, {"name": "z", "type": "number"}], "hidden": SMALL,
            "training": {"epochs": 8, "batch_size": 64, "learning_rate": 0.01}}
    plain = lamina.Model({**base, "outputs": [{"name": "rare", "type": "binary"}]}).fit(frame, quiet=True)
    weighted = lamina.Model({**base, "outputs": [{"name": "rare", "type": "binary", "class_weights": "balanced"}]})
    weighted.fit(frame, quiet=True)
    assert (weighted.metrics_["test"]["rare"]["balanced_accuracy"]
            > plain.metrics_["test"]["rare"]["balanced_accuracy"])


def test_history_and_progress_output(tmp_path, capsys):
    cfg = config([{"name": "label", "type": "binary"}], epochs=2)
    lamina.Model(cfg).fit(tabular(300), output_dir=tmp_path / "run")
    printed = capsys.readouterr()
    assert "epoch   1/2" in printed.out + printed.err
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history["epoch"]) == [1, 2] and "validation_label_accuracy" in history.columns
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # removed once the model is saved


def test_runs_of_plain_numbers_computed_as_one_block_match_the_encoders():
    """Network computes consecutive plain number columns as one (B, K) block; the result must be
    what the per-column encoders give, missing values included, and the saved keys stay per encoder."""
    import torch

    from lamina.data import tensors

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=200) for i in range(4)})
    frame["colour"] = rng.choice(["red", "blue"], 200)
    frame["y"] = np.where(frame["x0"] > 0, "yes", "no")
    config = {"inputs": [{"name": f"x{i}", "type": "number", "encoding": "plain"} for i in range(4)]
              + [{"name": "colour", "type": "category"}],
              "outputs": [{"name": "y", "type": "binary"}], "training": {"epochs": 1}}
    model = lamina.Model(config).fit(frame, quiet=True)
    network = model.network_.eval()
    assert network.runs[0] == ((0, 1, 2, 3), 0), "the four plain numbers form one block"
    assert not any(key.startswith("blocks.") for key in network.state_dict())
    unseen = frame.copy()
    unseen.loc[[3, 7], "x1"] = np.nan  # missing at prediction time: filled with the training mean
    inputs = tensors(unseen, model.inputs_)["inputs"]
    with torch.no_grad():
        by_block = network(inputs)["y"]
        vectors = [encoder(inputs[name]) for name, encoder in zip(network.input_names, network.encoders)]
        by_encoder = network.heads[0](network.trunk(torch.cat(vectors, dim=1)))
    assert torch.allclose(by_block, by_encoder, atol=1e-6)

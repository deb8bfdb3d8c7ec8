"""The anomaly output: anomalies score higher, the threshold realises its false-positive rate, labelled
(normal-only) and unlabelled training, save/load, compare against an isolation forest, bad input;
and the network_flows and phishing data sets."""
from __future__ import annotations

import contextlib
import importlib.util
import io

import numpy as np
import pandas as pd
import pytest
import yaml

import lamina
from lamina import ConfigError, DataError
from lamina.cli import main
from lamina.data import add_absent_labels, split_rows
from lamina.datasets import flows

INPUTS = [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}, {"name": "side", "type": "category"},
          {"name": "flag", "type": "binary"}]


def table(rows: int = 1500, share: float = 0.06, seed: int = 0) -> pd.DataFrame:
    """Normal rows keep b = 2a, side = sign of a and flag = yes; anomalies break the relations."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    b = 2 * a + rng.normal(scale=0.1, size=rows)
    side = np.where(a > 0, "up", "down").astype(object)
    flag = np.full(rows, "yes", dtype=object)
    label = np.full(rows, "normal", dtype=object)
    bad = rng.choice(rows, int(rows * share), replace=False)
    b[bad[::2]] = -b[bad[::2]]
    side[bad[1::2]] = np.where(a[bad[1::2]] > 0, "down", "up")
    flag[bad[1::2]] = "no"
    label[bad] = "attack"
    return pd.DataFrame({"a": a, "b": b, "side": side, "flag": flag, "label": label})


def config(**output) -> dict:
    return {"inputs": INPUTS, "hidden": {"layers": 2, "size": 8, "dropout": 0.0},
            "outputs": [{"name": "label", "type": "anomaly", **output}],
            "training": {"epochs": 8, "batch_size": 64, "learning_rate": 0.01}}


@pytest.fixture(scope="module")
def labelled():
    frame = table()
    return frame, lamina.Model(config(false_positive_rate=0.05)).fit(frame, quiet=True)


def test_anomalies_score_higher_and_metrics_are_reported(labelled):
    _, model = labelled
    test = model.metrics_["test"]["label"]
    # random scores give 0.5 and the anomaly share, 0.06; seeds 0-5 reach at least 0.985 and 0.92
    assert test["roc_auc"] > 0.9 and test["pr_auc"] > 0.5
    assert {"detection_rate", "false_positive_rate", "detection_at_target_fpr", "score_median", "flagged"} <= set(test)
    assert model.outputs_[0].stats["labels"] == ["normal", "attack"]


def test_threshold_realises_the_false_positive_rate_on_validation_rows(labelled):
    frame, model = labelled
    parts = split_rows(frame, model.config)
    validation = frame.iloc[parts["validation"]]
    normal = validation["label"] == "normal"
    # every validation row at once, as the threshold was chosen: the very same scores, so the row at
    # the threshold stays unflagged (scored in another batch it could round to just above it)
    flagged = (model.predict(validation)["label"] == "attack")[normal].mean()
    assert 0.05 - 2 / normal.sum() <= flagged <= 0.05
    assert model.metrics_["validation"]["label"]["false_positive_rate"] == pytest.approx(flagged)


def test_training_learns_from_normal_rows_only(labelled):
    frame, model = labelled
    parts = split_rows(frame, model.config)
    training = frame.iloc[parts["train"]]
    normal = training[training["label"] == "normal"]
    assert model.inputs_[0].stats["mean"] == pytest.approx(normal["a"].mean())  # the inputs' statistics too
    assert model.training_["learned_rows"] == len(normal) < model.training_["rows"]["train"]
    history = model.training_["history"]
    assert all("validation" in record for record in history) and model.training_["monitored"] == "loss"
    assert model.training_["best_epoch"] >= 1


def test_save_load_gives_identical_scores_and_threshold(labelled, tmp_path):
    frame, model = labelled
    model.save(tmp_path / "model")
    loaded = lamina.load(tmp_path / "model")
    pd.testing.assert_frame_equal(model.predict(frame), loaded.predict(frame))
    assert loaded.outputs_[0].stats["threshold"] == model.outputs_[0].stats["threshold"]


def test_compare_uses_an_isolation_forest_at_the_same_false_positive_rate(labelled):
    frame, model = labelled
    result = model.compare(frame, resamples=50)
    assert result["classic"]["model"] == "isolation_forest" and result["metric"] == "roc_auc"
    assert {"roc_auc", "detection_rate", "false_positive_rate"} <= set(result["classic"]["test"])
    assert result["difference"]["resamples"] > 0 and "model is better" in result["verdict"] or \
        "no significant" in result["verdict"]


def test_unlabelled_training_uses_every_row():
    frame = table(800).drop(columns="label")
    model = lamina.Model(config()).fit(frame, quiet=True)
    assert model.outputs_[0].stats["labelled"] is False
    metrics = model.metrics_["test"]["label"]
    assert "roc_auc" not in metrics and {"score_median", "score_p99", "flagged"} <= set(metrics)
    predicted = model.predict(frame.head(5))
    assert set(predicted.columns) == {"label", "label_score"} and set(predicted["label"]) <= {"normal", "anomalous"}
    validation = frame.iloc[split_rows(add_absent_labels(frame, model.config.outputs), model.config)["validation"]]
    flagged = (model.predict(validation)["label"] == "anomalous").mean()  # the rows the threshold was chosen on
    assert 0.01 - 2 / len(validation) <= flagged <= 0.01
    # the threshold is about the top score of 80 validation rows: about 1% of other rows score above
    # it, and the spread of that order statistic rarely takes it past 5% (0.0 to 0.04 over 8 seeds)
    assert model.evaluate(frame)["label"]["flagged"] <= 0.08
    result = model.compare(frame, resamples=10)
    assert result["skipped"] and "without labels" in result["verdict"]
    importance = model.importance(frame.head(200))  # shares of the score; no labels: no permutation
    assert importance["permutation"] is None and set(importance["mean_absolute_attribution"]) == {"a", "b", "side", "flag"}
    with pytest.raises(ConfigError, match="explained by its reconstruction errors"):
        model.explain(frame.head(2), method="saliency")


def test_explanations_split_the_score_into_each_inputs_reconstruction_error(labelled):
    frame, model = labelled
    broken = frame[frame["label"] == "attack"]
    flipped = broken[(broken["side"] == np.where(broken["a"] > 0, "up", "down"))]  # b = -2a broke these rows
    explanation = model.explain(flipped)
    assert explanation["method"] == "reconstruction_error" and explanation["complete"]
    scores = model.predict(flipped)["label_score"].to_numpy()
    for row, score in zip(explanation["rows"], scores):  # errors are >= 0: float32 sums agree to a relative 1e-5
        assert sum(row["scores"].values()) == pytest.approx(score, rel=1e-5)
        assert abs(row["delta"]) <= 1e-5 * max(score, 1.0)
        assert set(row["values"]) == {"a", "b", "side", "flag"}
    # the broken relation, not side or flag, leads in most rows (78% to 100% over 8 seeds; an encoder
    # misled by b also rebuilds side wrong, so side can lead in some; by chance: half of the rows)
    leads = [max(row["scores"], key=row["scores"].get) for row in explanation["rows"]]
    assert sum(lead in ("a", "b") for lead in leads) >= 2 / 3 * len(leads), leads
    with pytest.raises(ConfigError, match="explains anomaly scores only"):
        lamina.Model({"inputs": INPUTS[:1], "outputs": [{"name": "b", "type": "number"}],
                      "training": {"epochs": 1}}).fit(frame, quiet=True).explain(frame.head(1),
                                                                                   method="reconstruction_error")


def test_missing_values_in_inputs_are_filled_and_missing_labels_dropped():
    frame = table(600)
    frame.loc[::7, "a"] = np.nan
    frame.loc[::11, "side"] = None
    frame.loc[::13, "label"] = None
    model = lamina.Model(config()).fit(frame, quiet=True)
    assert model.training_["dropped_rows"] == frame["label"].isna().sum()
    assert np.isfinite(model.predict(frame)["label_score"]).all()


@pytest.mark.parametrize("labels, options, message", [
    (["normal", "attack"], {"normal": "benign"}, "normal: 'benign' never occurs"),
    (["attack", "scan"], {}, "cannot tell which label means normal"),
    (["0", "normal", "attack"], {}, "several"),
])
def test_which_label_is_normal_errors(labels, options, message):
    frame = table(300)
    frame["label"] = np.resize(labels, len(frame))
    with pytest.raises(DataError, match=message):
        lamina.Model(config(**options)).fit(frame, quiet=True)


def test_normal_label_written_differently_is_an_error(labelled):
    frame, model = labelled
    rows = frame.head(4).copy()
    rows.loc[rows.index[2], "label"] = "Normal"
    with pytest.raises(DataError, match="row 2: label 'Normal' differs from the normal label 'normal'"):
        model.evaluate(rows)


def test_bad_configs():
    frame = table(200)
    frame["user"] = [f"u{row % 9}" for row in range(len(frame))]
    only_ids = {**config(), "inputs": [{"name": "user", "type": "id"}]}
    with pytest.raises(ConfigError, match="no inputs to reconstruct"):
        lamina.Model(only_ids).fit(frame, quiet=True)
    with pytest.raises(ConfigError, match="can only be an output"):
        lamina.Model({**config(), "inputs": [{"name": "label", "type": "anomaly"}]})
    with pytest.raises(ConfigError, match="false_positive_rate"):
        lamina.Model(config(false_positive_rate=0.7))
    two_outputs = {**config(), "outputs": config()["outputs"] + [{"name": "side", "type": "category"}],
                   "inputs": INPUTS[:2]}
    with pytest.raises(ConfigError, match="must be the model's only output"):
        lamina.Model(two_outputs).fit(frame, quiet=True)
    with pytest.raises(DataError, match="no labels"):
        lamina.Model(config(normal="normal")).fit(frame.drop(columns="label"), quiet=True)


def run(argv: list) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("labels", [True, False])
def test_lamina_train_on_the_intrusion_example(tmp_path, labels):
    settings = yaml.safe_load(open("examples/intrusion_anomaly.yaml"))
    settings["training"].update(epochs=2)
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(settings))
    frame = flows.network_flows(rows=1500, seed=3)
    frame.drop(columns=[] if labels else ["label"]).to_csv(tmp_path / "flows.csv", index=False)
    code, out, err = run(["train", "--config", tmp_path / "model.yaml", "--data", tmp_path / "flows.csv",
                          "--output", tmp_path / "model", "--quiet"])
    assert code == 0, err
    assert ("deep vs classic (isolation_forest)" in out) == labels
    assert ("normal ones" in out) == labels
    assert ("no classic baseline" in out) == (not labels)
    report = (tmp_path / "model" / "report.html").read_text()
    assert "label (anomaly, " in report and "Explained examples" in report and "reconstruction error" in report


# --- the data sets ------------------------------------------------------------------------------------

def test_network_flows_is_deterministic_per_seed_and_mixes_the_attacks():
    first = flows.network_flows(rows=4000, seed=5)
    pd.testing.assert_frame_equal(first, flows.network_flows(rows=4000, seed=5))
    assert not first.equals(flows.network_flows(rows=4000, seed=6))
    counts = first["label"].value_counts()
    assert len(first) == 4000 and counts["normal"] == 4000 - 160
    assert {kind: counts[kind] for kind in flows.ATTACKS} == {"port_scan": 56, "syn_flood": 48, "brute_force": 32,
                                                               "exfiltration": 24}
    assert first["time"].is_monotonic_increasing
    median = first.groupby("label").median(numeric_only=True)
    assert median.loc["port_scan", "source_ports_60s"] > 2 * median.loc["normal", "source_ports_60s"]
    assert median.loc["exfiltration", "bytes_sent"] > 1000 * median.loc["normal", "bytes_sent"]
    assert (first.loc[first["label"] == "syn_flood", "ack_count"] == 0).all()
    assert median.loc["brute_force", "source_flows_60s"] > median.loc["normal", "source_flows_60s"]
    with pytest.raises(DataError, match="attack_share"):
        flows.network_flows(rows=1000, attack_share=0.9)


def test_new_data_sets_are_listed():
    assert {"network_flows", "phishing"} <= set(lamina.datasets.names())
    assert lamina.datasets.info("network_flows").target == "label"


@pytest.mark.skipif(importlib.util.find_spec("river") is None, reason="river (the local copy) is not installed")
def test_phishing_loads_from_rivers_copy():
    frame = lamina.datasets.load("phishing")
    assert frame.shape == (1250, 10) and set(frame["is_phishing"]) == {0, 1}


def test_served_scores_match_predict_and_explanations_add_up(labelled, tmp_path):
    pytest.importorskip("fastapi", reason="lamina serve needs the serve extra: pip install 'lamina[serve]'")
    from fastapi.testclient import TestClient

    from lamina.serving.app import create_app

    frame, model = labelled
    model.save(tmp_path / "model")
    rows = frame.drop(columns="label").head(3).to_dict(orient="records")
    with TestClient(create_app(lamina.load(tmp_path / "model"), str(tmp_path / "model"))) as client:
        served = client.post("/predict", json={"rows": rows})
        explained = client.post("/explain", json={"rows": rows[:1]})
        metadata = client.get("/metadata").json()
    want = model.predict(pd.DataFrame(rows))
    assert served.status_code == 200, served.text
    got = served.json()["predictions"]
    assert [row["label"] for row in got] == list(want["label"])
    assert [row["label_score"] for row in got] == pytest.approx(list(want["label_score"]), rel=1e-5)
    assert explained.status_code == 200, explained.text
    shares = explained.json()["explanations"]["rows"][0]["scores"]
    assert sum(shares.values()) == pytest.approx(got[0]["label_score"], rel=1e-5)
    assert [output["type"] for output in metadata["outputs"]] == ["anomaly"]

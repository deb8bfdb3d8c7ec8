"""Intrusion detection on the network_flows data set: detection rate at a 1% false-positive rate on
the same test rows for (a) lamina's anomaly output trained on normal flows only
(examples/intrusion_anomaly.yaml), (b) an isolation forest on the same normal rows and features,
(c) lamina's supervised attack-type classifier (examples/intrusion_supervised.yaml) and
(d) gradient boosting on the same labelled rows. Every method's threshold is the score quantile of
the normal validation rows at 1 - 1%; the realised test false-positive rate is printed beside it,
with ROC AUC and the detection rate per attack type.

    python benchmarks/intrusion.py                # 60,000 flows, the example configs as they are
    python benchmarks/intrusion.py --quick        # smoke test: 6,000 flows, 2 epochs
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

import lamina
from lamina import baseline
from lamina.data import split_rows
from lamina.datasets import flows
from lamina.features.anomaly import threshold_at
from common import lamina_source, machine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RATE = 0.01


def configs(quick: bool) -> tuple[lamina.Config, lamina.Config]:
    anomaly = lamina.config.load_config(EXAMPLES / "intrusion_anomaly.yaml")
    supervised = lamina.config.load_config(EXAMPLES / "intrusion_supervised.yaml")
    if quick:
        anomaly.training.epochs = supervised.training.epochs = 2
    return anomaly, supervised


def not_normal(frame: pd.DataFrame) -> np.ndarray:
    return (frame["label"] != "normal").to_numpy()


def lamina_scores(config: lamina.Config, frame: pd.DataFrame, parts: dict) -> tuple[dict, float]:
    """Anomaly score (or 1 - P(normal) for the classifier) on the validation and test rows."""
    began = time.perf_counter()
    model = lamina.Model(config).fit(frame, quiet=True)
    seconds = time.perf_counter() - began
    scores = {}
    for part in ("validation", "test"):
        predicted = model.predict(frame.iloc[parts[part]])
        scores[part] = predicted["label_score"].to_numpy() if "label_score" in predicted \
            else 1.0 - predicted["label_probability_normal"].to_numpy()
    return scores, seconds


def isolation_forest(config: lamina.Config, frame: pd.DataFrame, parts: dict, seed: int) -> tuple[dict, float]:
    training = frame.iloc[parts["train"]]
    began = time.perf_counter()
    forest = baseline.fit_isolation_forest(config.inputs, training[~not_normal(training)], seed)
    seconds = time.perf_counter() - began
    return {part: forest.scores(frame.iloc[parts[part]]) for part in ("validation", "test")}, seconds


def boosting(config: lamina.Config, frame: pd.DataFrame, parts: dict, seed: int) -> tuple[dict, float]:
    """scikit-learn's HistGradientBoostingClassifier on the attack type; score = 1 - P(normal)."""
    training = frame.iloc[parts["train"]]
    began = time.perf_counter()
    with threadpool_limits(limits=torch.get_num_threads()):
        features = baseline.ClassicFeatures(config.inputs, baseline.TREE, seed).fit(training)
        model = HistGradientBoostingClassifier(max_iter=500, early_stopping=True, random_state=seed,
                                               categorical_features=features.categorical)
        model.fit(features.transform(training), training["label"].to_numpy())
    seconds = time.perf_counter() - began
    normal = list(model.classes_).index("normal")
    return {part: 1.0 - model.predict_proba(features.transform(frame.iloc[parts[part]]))[:, normal]
            for part in ("validation", "test")}, seconds


def measure(scores: dict, frame: pd.DataFrame, parts: dict) -> dict:
    validation, test = frame.iloc[parts["validation"]], frame.iloc[parts["test"]]
    threshold = threshold_at(scores["validation"][~not_normal(validation)], RATE)
    flagged, attack = scores["test"] > threshold, not_normal(test)
    result = {"roc_auc": skm.roc_auc_score(attack, scores["test"]), "detection": flagged[attack].mean(),
              "false_positives": flagged[~attack].mean()}
    for kind in flows.ATTACKS:
        rows = (test["label"] == kind).to_numpy()
        result[kind] = flagged[rows].mean() if rows.any() else float("nan")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated flows")
    parser.add_argument("--quick", action="store_true", help="6,000 flows and 2 epochs: a smoke test")
    args = parser.parse_args()
    rows = 6_000 if args.quick else args.rows
    anomaly, supervised = configs(args.quick)
    frame = flows.network_flows(rows=rows, seed=args.seed)
    parts = split_rows(frame, anomaly)
    assert all(np.array_equal(parts[part], split_rows(frame, supervised)[part]) for part in parts), \
        "both configs must split the flows the same way"
    print(lamina_source())
    print(f"{machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    test = frame.iloc[parts["test"]]
    print(f"network_flows: {rows:,} flows (seed {args.seed}); test {len(test):,} rows, attacks: "
          + ", ".join(f"{kind} {int((test['label'] == kind).sum())}" for kind in flows.ATTACKS))
    methods = {
        "lamina anomaly (normal rows only)": lambda: lamina_scores(anomaly, frame, parts),
        "isolation forest (normal rows only)": lambda: isolation_forest(anomaly, frame, parts, args.seed),
        "lamina classifier (labelled)": lambda: lamina_scores(supervised, frame, parts),
        "gradient boosting (labelled)": lambda: boosting(supervised, frame, parts, args.seed),
    }
    header = f"{'method':<38}{'ROC AUC':>8}{'detect@1%':>10}{'test FPR':>9}" + \
        "".join(f"{kind:>13}" for kind in flows.ATTACKS) + f"{'seconds':>9}"
    print(header)
    for name, run in methods.items():
        scores, seconds = run()
        result = measure(scores, frame, parts)
        print(f"{name:<38}{result['roc_auc']:>8.4f}{result['detection']:>10.3f}{result['false_positives']:>9.4f}"
              + "".join(f"{result[kind]:>13.3f}" for kind in flows.ATTACKS) + f"{seconds:>9.1f}")
    print(f"detect@1%: share of test attacks above the threshold set at {RATE:.0%} of the normal validation rows; "
          f"per attack type the same threshold")


if __name__ == "__main__":
    main()

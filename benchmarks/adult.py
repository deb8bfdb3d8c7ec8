"""Accuracy on the adult data set: lamina with the example config (examples/adult.yaml) against
scikit-learn's HistGradientBoostingClassifier on exactly the same train / validation / test rows.
Prints test accuracy, ROC AUC and wall time of each, and the accuracy gap in points
(goal: lamina within 1 point of the GBM).

    python benchmarks/adult.py                # the example config as it is (30 epochs)
    python benchmarks/adult.py --seeds 3      # also vary lamina's training seed (split fixed)
    python benchmarks/adult.py --quick        # CI smoke test: 1 epoch, well under 30 s
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

import lamina
from lamina import datasets, features
from lamina.data import rows_to_keep, split_rows
from common import lamina_source, machine

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "adult.yaml"


def lamina_rows(frame: pd.DataFrame, config: lamina.Config) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The rows lamina's Model.fit keeps and its train / validation / test positions (as in api.py)."""
    inputs = [features.build(feature) for feature in config.inputs]
    outputs = [features.build(feature) for feature in config.outputs]
    kept = frame[rows_to_keep(frame, inputs, outputs)]
    return kept, split_rows(kept, config)


def run_lamina(frame: pd.DataFrame, config: lamina.Config, test_rows: pd.DataFrame) -> dict:
    began = time.perf_counter()
    model = lamina.Model(config).fit(frame, quiet=True)
    seconds = time.perf_counter() - began
    target = config.outputs[0].name
    test = model.metrics_["test"][target]
    # cross-check lamina's own test metrics with scikit-learn on its predictions
    predicted = model.predict(test_rows)
    positive = model.outputs_[0].stats["labels"][1]
    truth = (test_rows[target].astype(str) == positive).to_numpy()
    accuracy = skm.accuracy_score(truth, predicted[target].astype(str) == positive)
    auc = skm.roc_auc_score(truth, predicted[f"{target}_probability"])
    if abs(accuracy - test["accuracy"]) > 1e-9 or abs(auc - test["roc_auc"]) > 1e-6:
        print(f"WARNING: lamina's test metrics {test['accuracy']:.6f}/{test['roc_auc']:.6f} differ from "
              f"scikit-learn's on its predictions {accuracy:.6f}/{auc:.6f}")
    history = model.training_["history"]
    return {"accuracy": test["accuracy"], "roc_auc": test["roc_auc"], "seconds": seconds,
            "epochs": len(history), "best_epoch": model.training_["best_epoch"],
            "learning_rate": model.training_["learning_rate"], "rows": model.training_["rows"]}


def run_gbm(frame: pd.DataFrame, config: lamina.Config, parts: dict[str, np.ndarray], seed: int) -> dict:
    """HGB with native categorical support; lamina's validation rows drive its early stopping."""
    began = time.perf_counter()
    table = frame[[feature.name for feature in config.inputs]].copy()
    for feature in config.inputs:
        if feature.type in ("category", "binary"):
            table[feature.name] = table[feature.name].astype("category")
    target = config.outputs[0].name
    labels = sorted(frame[target].astype(str).unique())
    truth = (frame[target].astype(str) == labels[-1]).to_numpy().astype(int)  # '>50K' is positive, as in lamina
    gbm = HistGradientBoostingClassifier(categorical_features="from_dtype", early_stopping=True, random_state=seed)
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    gbm.fit(table.iloc[train], truth[train], X_val=table.iloc[validation], y_val=truth[validation])
    probability = gbm.predict_proba(table.iloc[test])[:, 1]
    seconds = time.perf_counter() - began
    return {"accuracy": skm.accuracy_score(truth[test], probability >= 0.5),
            "roc_auc": skm.roc_auc_score(truth[test], probability), "seconds": seconds,
            "iterations": gbm.n_iter_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 epoch, for a CI smoke test (< 30 s)")
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--seeds", type=int, default=1,
                        help="lamina training seeds 42, 43, ...; the split stays the one of seed 42")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch (and OpenMP) threads; 1 keeps timings stable on a shared, busy machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):  # the GBM's OpenMP threads too
        compare(args)


def compare(args: argparse.Namespace) -> None:
    base = lamina.load_config(args.config).to_dict()
    base["split"]["seed"] = base["split"]["seed"] if base["split"]["seed"] is not None else base["training"]["seed"]
    if args.quick:
        base["training"]["epochs"] = 1
    config = lamina.load_config(base)
    frame = datasets.load("adult")
    kept, parts = lamina_rows(frame, config)
    test_rows = kept.iloc[parts["test"]]
    print(f"adult: {len(frame):,} rows, {len(kept):,} kept; train {len(parts['train']):,}, validation "
          f"{len(parts['validation']):,}, test {len(parts['test']):,}; torch {torch.__version__}, "
          f"{args.threads} threads" + ("; QUICK MODE (1 epoch): figures are not meaningful" if args.quick else "")
          + f"\n  {machine()}\n  {lamina_source()}")

    gbm = run_gbm(kept, config, parts, seed=config.training.seed)
    print(f"  GBM: accuracy {gbm['accuracy']:.4f}, ROC AUC {gbm['roc_auc']:.4f}, {gbm['seconds']:.1f} s, "
          f"{gbm['iterations']} iterations")
    runs = []
    for offset in range(args.seeds):
        seeded = base | {"training": base["training"] | {"seed": base["training"]["seed"] + offset}}
        run = run_lamina(frame, lamina.load_config(seeded), test_rows)
        if run["rows"] != {part: len(rows) for part, rows in parts.items()}:
            print(f"WARNING: lamina used other row counts {run['rows']} than this script's split")
        runs.append(run)
        print(f"  lamina seed {seeded['training']['seed']}: accuracy {run['accuracy']:.4f}, ROC AUC "
              f"{run['roc_auc']:.4f}, {run['seconds']:.1f} s, {run['epochs']} epochs (best {run['best_epoch']}), "
              f"learning rate {run['learning_rate']:.2e}")

    mean = {key: statistics.mean(run[key] for run in runs) for key in ("accuracy", "roc_auc", "seconds")}
    label = "lamina" if len(runs) == 1 else f"lamina (mean of {len(runs)} seeds)"
    print()
    print("| model | test accuracy | test ROC AUC | wall seconds |")
    print("|---|---:|---:|---:|")
    print(f"| {label} | {mean['accuracy']:.4f} | {mean['roc_auc']:.4f} | {mean['seconds']:.1f} |")
    print(f"| HistGradientBoosting | {gbm['accuracy']:.4f} | {gbm['roc_auc']:.4f} | {gbm['seconds']:.1f} |")
    gap = 100 * (mean["accuracy"] - gbm["accuracy"])
    print(f"\naccuracy lamina - GBM: {gap:+.2f} points (goal >= -1.00: {'met' if gap >= -1.0 else 'NOT met'}); "
          f"ROC AUC lamina - GBM: {mean['roc_auc'] - gbm['roc_auc']:+.4f}; "
          f"time lamina / GBM: {mean['seconds'] / gbm['seconds']:.1f}x")


if __name__ == "__main__":
    main()

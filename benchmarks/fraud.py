"""Rare positives: lamina with the example configs (examples/fraud_cards.yaml on the synthetic
card_transactions, examples/bio_train.yaml on KDD Cup 2004 protein homology) against scikit-learn's
HistGradientBoostingClassifier on exactly the same train / validation / test rows. Prints test
PR AUC and recall at 90% precision of each, and their ratios lamina / GBM.

    python benchmarks/fraud.py              # both data sets, the example configs as they are
    python benchmarks/fraud.py --only bio_train
    python benchmarks/fraud.py --quick      # CI smoke test: small slices, 1 epoch, well under a minute
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
from lamina import datasets, features
from lamina.data import rows_to_keep, split_rows
from lamina.datasets import fraud
from lamina.features.binary import recall_at_precision
from common import lamina_source, machine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = {"card_transactions": EXAMPLES / "fraud_cards.yaml", "bio_train": EXAMPLES / "bio_train.yaml"}


def load(name: str, quick: bool) -> pd.DataFrame:
    if name == "card_transactions":
        return fraud.card_transactions(rows=20_000, seed=0) if quick else datasets.load(name)
    frame = datasets.load(name)
    if quick:  # a seeded fifth of the blocks, whole
        blocks = np.random.default_rng(0).permutation(frame["block"].unique())[: len(frame["block"].unique()) // 5]
        frame = frame[frame["block"].isin(blocks)].reset_index(drop=True)
    return frame


def split(frame: pd.DataFrame, config: lamina.Config) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The rows lamina's Model.fit keeps and its train / validation / test positions (as in api.py)."""
    inputs = [features.build(feature) for feature in config.inputs]
    outputs = [features.build(feature) for feature in config.outputs]
    kept = frame[rows_to_keep(frame, inputs, outputs)]
    return kept, split_rows(kept, config)


def scores(truth: np.ndarray, probability: np.ndarray) -> dict:
    return {"pr_auc": skm.average_precision_score(truth, probability),
            "recall_at_precision_90": recall_at_precision(truth, probability, 0.9)}


def run_lamina(frame: pd.DataFrame, config: lamina.Config, test_rows: pd.DataFrame, truth: np.ndarray) -> dict:
    began = time.perf_counter()
    model = lamina.Model(config).fit(frame, quiet=True)
    seconds = time.perf_counter() - began
    name = config.outputs[0].name
    measured = model.metrics_["test"][name]
    probability = model.predict(test_rows)[f"{name}_probability"].to_numpy(dtype=np.float64)
    checked = scores(truth, probability)  # lamina's own test metrics, recomputed with scikit-learn
    if abs(checked["pr_auc"] - measured["pr_auc"]) > 1e-4:
        print(f"WARNING: lamina's test PR AUC {measured['pr_auc']:.6f} differs from scikit-learn's on its "
              f"predictions {checked['pr_auc']:.6f}")
    feature = model.outputs_[0]
    return {**checked, "seconds": seconds, "epochs": len(model.training_["history"]),
            "best_epoch": model.training_["best_epoch"], "threshold": feature.threshold,
            "temperature": feature.temperature, "sampling": model.training_.get("sampling"),
            "at_threshold": {key: measured[key] for key in ("precision", "recall", "true_positives",
                                                             "false_positives", "false_negatives")},
            "calibration": {key: measured[key] for key in ("brier_score", "expected_calibration_error")}}


def run_gbm(frame: pd.DataFrame, config: lamina.Config, parts: dict, truth: np.ndarray, seed: int) -> dict:
    """HGB with native categorical support; lamina's validation rows drive its early stopping, on
    average precision (PR AUC) as lamina's example configs stop on PR AUC."""
    began = time.perf_counter()
    table = frame[[feature.name for feature in config.inputs]].copy()
    for feature in config.inputs:
        if feature.type in ("category", "binary"):
            table[feature.name] = table[feature.name].astype(str).astype("category")
    gbm = HistGradientBoostingClassifier(categorical_features="from_dtype", early_stopping=True,
                                         scoring="average_precision", n_iter_no_change=20, random_state=seed,
                                         max_iter=500)
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    gbm.fit(table.iloc[train], truth[train], X_val=table.iloc[validation], y_val=truth[validation])
    probability = gbm.predict_proba(table.iloc[test])[:, 1]
    return {**scores(truth[test], probability), "seconds": time.perf_counter() - began, "iterations": gbm.n_iter_}


def compare(name: str, quick: bool) -> dict:
    base = lamina.load_config(CONFIGS[name]).to_dict()
    if quick:
        base["training"]["epochs"] = 1
    config = lamina.load_config(base)
    frame = load(name, quick)
    kept, parts = split(frame, config)
    output = features.build(config.outputs[0])  # 0/1 truth with lamina's choice of the positive label
    output.fit(kept.iloc[parts["train"]][config.outputs[0].name])
    truth = output.target(kept[config.outputs[0].name]).numpy().astype(int)
    counts = {part: f"{len(rows):,} ({truth[rows].mean():.2%} positive)" for part, rows in parts.items()}
    print(f"\n{name}: {len(kept):,} rows; " + ", ".join(f"{part} {text}" for part, text in counts.items()))
    gbm = run_gbm(kept, config, parts, truth, seed=config.training.seed)
    print(f"  GBM: PR AUC {gbm['pr_auc']:.4f}, recall at 90% precision {gbm['recall_at_precision_90']:.4f}, "
          f"{gbm['seconds']:.1f} s, {gbm['iterations']} iterations")
    deep = run_lamina(kept, config, kept.iloc[parts["test"]], truth[parts["test"]])
    print(f"  lamina: PR AUC {deep['pr_auc']:.4f}, recall at 90% precision {deep['recall_at_precision_90']:.4f}, "
          f"{deep['seconds']:.1f} s, {deep['epochs']} epochs (best {deep['best_epoch']}); temperature "
          f"{deep['temperature']:.3f}, threshold {deep['threshold']:.4f}; at the threshold {deep['at_threshold']}; "
          f"calibration {deep['calibration']}; sampling {deep['sampling']}")
    return {"name": name, "gbm": gbm, "lamina": deep}


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small slices, 1 epoch: a CI smoke test")
    parser.add_argument("--only", choices=list(CONFIGS), help="one data set")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch (and OpenMP) threads; 1 keeps timings stable on a shared, busy machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads"
          + ("; QUICK MODE (slices, 1 epoch): figures are not meaningful" if args.quick else "")
          + f"\n  {machine()}\n  {lamina_source()}")
    with threadpool_limits(limits=args.threads):  # the GBM's OpenMP threads too
        results = [compare(name, args.quick) for name in ([args.only] if args.only else CONFIGS)]
    print("\n| data set | model | test PR AUC | recall at 90% precision | wall seconds |")
    print("|---|---|---:|---:|---:|")
    for result in results:
        for label, key in (("lamina", "lamina"), ("HistGradientBoosting", "gbm")):
            run = result[key]
            print(f"| {result['name']} | {label} | {run['pr_auc']:.4f} | {run['recall_at_precision_90']:.4f} | "
                  f"{run['seconds']:.1f} |")
    for result in results:
        deep, gbm = result["lamina"], result["gbm"]
        print(f"{result['name']}: lamina / GBM  PR AUC {ratio(deep['pr_auc'], gbm['pr_auc'])}, recall at 90% "
              f"precision {ratio(deep['recall_at_precision_90'], gbm['recall_at_precision_90'])}")
    print(f"  {machine()}")


if __name__ == "__main__":
    main()

"""Sentiment on the women's clothing reviews: does the reviewer recommend the item? Each lamina
text encoder (bag, cnn, gru, transformer, pretrained all-MiniLM-L6-v2) reads title + review;
TF-IDF (word 1-2 grams) + logistic regression is the classic baseline, on exactly the same
train / validation / test rows. Prints test accuracy, macro F1 and wall time of each.

    python benchmarks/text_sentiment.py                      # every encoder (pretrained: ~10 min on 2 cores)
    python benchmarks/text_sentiment.py --encoders bag cnn   # some of them
    python benchmarks/text_sentiment.py --rows 6000          # a seeded sample of the reviews
    python benchmarks/text_sentiment.py --quick              # CI smoke test: 2,000 rows, 1 epoch
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from sklearn import metrics as skm
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

import lamina
from lamina import datasets, features
from lamina.data import rows_to_keep, split_rows
from common import lamina_source, machine

ENCODERS = ["bag", "cnn", "gru", "transformer", "pretrained"]
TARGET = "recommended"


def config(encoder: str, epochs: int) -> dict:
    text = {"type": "text", "encoder": encoder}
    if encoder in ("cnn", "gru", "transformer"):
        text |= {"width": 128, "layers": 2, "heads": 4}
    return {"inputs": [{"name": "title", **text, "max_length": 16}, {"name": "review", **text, "max_length": 128}],
            "hidden": {"layers": 2, "size": 128, "dropout": 0.2},
            "outputs": [{"name": TARGET, "type": "binary"}],
            "training": {"epochs": epochs, "batch_size": 128, "learning_rate": 0.003 if encoder != "pretrained"
                         else 0.001}}


def joined(frame: pd.DataFrame) -> pd.Series:
    return frame["title"].fillna("") + " . " + frame["review"].fillna("")


def run_baseline(frame: pd.DataFrame, parts: dict) -> dict:
    """TF-IDF + logistic regression; C chosen on the validation rows."""
    began = time.perf_counter()
    text, truth = joined(frame), frame[TARGET].astype(str).to_numpy()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train = vectorizer.fit_transform(text.iloc[parts["train"]])
    validation, test = vectorizer.transform(text.iloc[parts["validation"]]), vectorizer.transform(text.iloc[parts["test"]])
    best = max((skm.accuracy_score(truth[parts["validation"]],
                                   LogisticRegression(C=c, max_iter=2000).fit(train, truth[parts["train"]])
                                   .predict(validation)), c) for c in (0.3, 1.0, 3.0, 10.0))
    model = LogisticRegression(C=best[1], max_iter=2000).fit(train, truth[parts["train"]])
    predicted = model.predict(test)
    return {"accuracy": skm.accuracy_score(truth[parts["test"]], predicted),
            "f1_macro": skm.f1_score(truth[parts["test"]], predicted, average="macro"),
            "seconds": time.perf_counter() - began, "note": f"C={best[1]}"}


def run_lamina(frame: pd.DataFrame, encoder: str, epochs: int, test_rows: pd.DataFrame) -> dict:
    began = time.perf_counter()
    model = lamina.Model(config(encoder, epochs)).fit(frame, quiet=True)
    seconds = time.perf_counter() - began
    test = model.metrics_["test"][TARGET]
    predicted = model.predict(test_rows)[TARGET].astype(str)  # cross-check with scikit-learn
    accuracy = skm.accuracy_score(test_rows[TARGET].astype(str), predicted)
    if abs(accuracy - test["accuracy"]) > 1e-9:
        print(f"WARNING: lamina's test accuracy {test['accuracy']:.6f} differs from scikit-learn's {accuracy:.6f}")
    return {"accuracy": test["accuracy"], "f1_macro": test["f1_macro"], "seconds": seconds,
            "note": f"{len(model.training_['history'])} epochs (best {model.training_['best_epoch']})"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=ENCODERS, choices=ENCODERS)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rows", type=int, help="a seeded sample of this many reviews (the slow encoders on a "
                                                 "small machine); every model uses the same sample and split")
    parser.add_argument("--quick", action="store_true", help="2,000 rows and 1 epoch: a smoke test, not figures")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        compare(args)


def compare(args: argparse.Namespace) -> None:
    frame = datasets.load("clothing_reviews")
    if args.quick:
        args.rows, args.epochs = 2000, 1
    if args.rows:
        frame = frame.sample(args.rows, random_state=0)
    probe = lamina.load_config(config("bag", args.epochs))
    inputs = [features.build(feature) for feature in probe.inputs]
    outputs = [features.build(feature) for feature in probe.outputs]
    kept = frame[rows_to_keep(frame, inputs, outputs)]
    parts = split_rows(kept, probe)  # the split Model.fit makes (same config seed and method)
    print(f"clothing_reviews: {len(frame):,} rows; train {len(parts['train']):,}, validation "
          f"{len(parts['validation']):,}, test {len(parts['test']):,}; {TARGET} = yes in "
          f"{(kept[TARGET].astype(str) == 'yes').mean():.1%}; torch {torch.__version__}, {args.threads} threads"
          + ("; QUICK MODE: figures are not meaningful" if args.quick else "")
          + f"\n  {machine()}\n  {lamina_source()}")
    results = {"TF-IDF + logistic regression": run_baseline(kept, parts)}
    print(f"  baseline: {results['TF-IDF + logistic regression']}", flush=True)
    test_rows = kept.iloc[parts["test"]]
    for encoder in args.encoders:
        results[f"lamina {encoder}"] = run_lamina(kept, encoder, args.epochs, test_rows)
        print(f"  {encoder}: {results[f'lamina {encoder}']}", flush=True)
    majority = kept[TARGET].iloc[parts["test"]].astype(str).value_counts(normalize=True).max()
    print("\n| model | test accuracy | test macro F1 | wall seconds | notes |\n|---|---:|---:|---:|---|")
    for name, result in results.items():
        print(f"| {name} | {result['accuracy']:.4f} | {result['f1_macro']:.4f} | {result['seconds']:.0f} | "
              f"{result['note']} |")
    print(f"| always the majority class | {majority:.4f} | | | |")


if __name__ == "__main__":
    main()

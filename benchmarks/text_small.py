"""Small text sets with a rare class: does zero config (`lamina init-config` + `lamina train`, no
hand edits) reach TF-IDF + logistic regression? On `jeans_reviews` (1,600 training reviews, 7% of
them of jeans) it runs, on the data set's own split:

  - zero config: the config init-config writes (now: text encoder tfidf, threshold tuned on
    validation F1 for the rare positive), trained as written;
  - the old zero config: the same with the text read by `encoder: bag` and the threshold at 0.5
    (what init-config wrote before);
  - the same config with each text encoder in turn (tfidf, pretrained all-MiniLM-L6-v2, bag), and
    tfidf with class_weights: balanced;
  - TF-IDF (word 1-2 and character 2-5 grams, as encoder: tfidf cuts them) + logistic regression,
    C and class weighting chosen on the validation rows' F1 and the threshold tuned on them, and
    the same at scikit-learn's defaults (C = 1, threshold 0.5).

Each lamina model is trained with several seeds (--seeds); the table gives the mean and every run.
With --clothing ROWS it also compares the encoders on a seeded sample of clothing_reviews (title +
review -> recommended, whose 'no' is 18% of the rows), a larger text set.

    python benchmarks/text_small.py                         # jeans_reviews, 3 seeds
    python benchmarks/text_small.py --clothing 6000         # and 6,000 clothing reviews
    python benchmarks/text_small.py --quick                 # smoke test: 1 seed, 3 epochs, no pretrained
"""
from __future__ import annotations

import argparse
import copy
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn import metrics as skm
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

import lamina
from lamina import datasets
from lamina.features import text_tfidf
from lamina.init_config import infer_config
from common import lamina_source, machine


def f1_threshold(truth: np.ndarray, probability: np.ndarray) -> float:
    precision, recall, thresholds = skm.precision_recall_curve(truth, probability)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def scores(truth: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    predicted = (probability >= threshold).astype(int)
    return {"f1": skm.f1_score(truth, predicted, zero_division=0), "accuracy": skm.accuracy_score(truth, predicted),
            "precision": skm.precision_score(truth, predicted, zero_division=0),
            "recall": skm.recall_score(truth, predicted), "pr_auc": skm.average_precision_score(truth, probability)}


def baselines(texts: pd.Series, truth: np.ndarray, parts: dict) -> dict:
    """TF-IDF + logistic regression: tuned on the validation rows' F1, and at scikit-learn's defaults."""
    began = time.perf_counter()
    vectorizers = [TfidfVectorizer(**settings, min_df=2, max_features=8000, sublinear_tf=True)
                   for settings in text_tfidf.KINDS.values()]
    train = sparse.hstack([vectorizer.fit_transform(texts.iloc[parts["train"]]) for vectorizer in vectorizers]).tocsr()
    matrices = {part: sparse.hstack([vectorizer.transform(texts.iloc[rows]) for vectorizer in vectorizers]).tocsr()
                for part, rows in parts.items() if part != "train"}
    y = {part: truth[rows] for part, rows in parts.items()}
    best = None
    for c in (0.3, 1.0, 3.0, 10.0, 30.0):
        for weights in (None, "balanced"):
            model = LogisticRegression(C=c, class_weight=weights, max_iter=3000).fit(train, y["train"])
            validation = model.predict_proba(matrices["validation"])[:, 1]
            threshold = f1_threshold(y["validation"], validation)
            f1 = skm.f1_score(y["validation"], validation >= threshold)
            if best is None or f1 > best[0]:
                best = (f1, model, threshold, f"C={c}, class_weight={weights}, threshold {threshold:.3f}")
    _, model, threshold, note = best
    tuned = scores(y["test"], model.predict_proba(matrices["test"])[:, 1], threshold)
    tuned |= {"seconds": time.perf_counter() - began, "note": note}
    plain = LogisticRegression(max_iter=3000).fit(train, y["train"])
    default = scores(y["test"], plain.predict_proba(matrices["test"])[:, 1], 0.5) | {"note": "C=1, threshold 0.5"}
    return {"TF-IDF + logistic regression, tuned on validation F1": tuned,
            "TF-IDF + logistic regression, scikit-learn defaults": default}


def token_length(texts: pd.Series) -> int:
    """max_length as init-config chose it for token encoders: 1.5 times the 95th percentile of the
    words per text, 16 to 512."""
    return int(min(512, max(16, np.percentile(texts.iloc[:2000].str.split().str.len(), 95) * 1.5)))


def variant(config: dict, length: int, encoder: str | None = None, old: bool = False, **output) -> dict:
    """The inferred config with its text inputs read by `encoder` (old: bag and the output as
    init-config wrote it before: no threshold rule); token encoders read `length` tokens."""
    config = copy.deepcopy(config)
    for feature in config["inputs"]:
        if feature["type"] == "text" and (encoder or old):
            feature["encoder"] = "bag" if old else encoder
            if feature["encoder"] != "tfidf":
                feature["max_length"] = length
    for feature in config["outputs"]:
        if old:  # `positive` stays the rare class, so `f1` is its F1 (at 0.5 the labels are the same either way)
            feature.pop("threshold", None)
        feature.update(output)
    return config


def run_lamina(frame: pd.DataFrame, config: dict, seeds: list[int], target: str) -> dict:
    runs = []
    for seed in seeds:
        config = copy.deepcopy(config)
        config["training"]["seed"] = seed
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lamina.Model(config).fit(frame, quiet=True)
        test = model.metrics_["test"][target]
        runs.append({key: test[key] for key in ("f1", "accuracy", "precision", "recall", "pr_auc")}
                    | {"seconds": time.perf_counter() - began, "epochs": f"{len(model.training_['history'])} "
                       f"(best {model.training_['best_epoch']})", "threshold": model.outputs_[0].threshold})
        print(f"    seed {seed}: {runs[-1]}", flush=True)
    mean = {key: float(np.mean([run[key] for run in runs])) for key in ("f1", "accuracy", "precision", "recall",
                                                                        "pr_auc", "seconds")}
    return mean | {"note": "F1 per seed " + ", ".join(f"{run['f1']:.3f}" for run in runs)
                   + f"; epochs {runs[0]['epochs']}"}


def table(title: str, results: dict) -> None:
    print(f"\n{title}\n\n| model | test F1 (rare class) | accuracy | precision | recall | PR AUC | wall s | notes |\n"
          f"|---|---:|---:|---:|---:|---:|---:|---|")
    for name, result in results.items():
        print(f"| {name} | {result['f1']:.3f} | {result['accuracy']:.4f} | {result['precision']:.3f} | "
              f"{result['recall']:.3f} | {result['pr_auc']:.3f} | {result.get('seconds', 0):.0f} | "
              f"{result['note']} |")


def compare(name: str, frame: pd.DataFrame, target: str, texts: pd.Series, args) -> None:
    config, notes = infer_config(frame, [target])
    config["training"]["epochs"] = args.epochs
    output = config["outputs"][0]
    positive = output.get("positive", "yes")
    truth = (frame[target].astype(str) == positive).to_numpy().astype(int)
    split = frame["split"].to_numpy()
    parts = {part: np.flatnonzero(split == part) for part in ("train", "validation", "test")}
    print(f"\n{name}: {len(frame):,} rows; train {len(parts['train']):,}, validation {len(parts['validation']):,}, "
          f"test {len(parts['test']):,}; {target} = {positive!r} (the rare class) in {truth.mean():.1%}; "
          f"seeds {args.seeds}; {args.threads} thread(s)\n  init-config: " + "\n  init-config: ".join(notes))
    results = baselines(texts, truth, parts)
    for label, result in results.items():
        print(f"  {label}: {result}", flush=True)
    length = token_length(texts)
    runs = {"zero config (now)": variant(config, length),
            "old zero config (bag, threshold 0.5)": variant(config, length, old=True),
            "zero config + class_weights: balanced": variant(config, length, class_weights="balanced")}
    for encoder in args.encoders:
        runs[f"zero config with encoder: {encoder}"] = variant(config, length, encoder)
    for label, settings in runs.items():
        print(f"  {label}:", flush=True)
        results[label] = run_lamina(frame, settings, args.seeds, target)
    table(f"{name} (test rows; lamina: mean of {len(args.seeds)} seeds)", results)


def clothing(rows: int) -> tuple[pd.DataFrame, pd.Series]:
    """A seeded sample of clothing_reviews: title + review as one text, `recommended`, a stratified
    80/10/10 split column."""
    from sklearn.model_selection import train_test_split

    reviews = datasets.load("clothing_reviews").sample(rows, random_state=0).reset_index(drop=True)
    text = (reviews["title"].fillna("") + " . " + reviews["review"].fillna("")).str.strip(" .")
    frame = pd.DataFrame({"text": text, "recommended": reviews["recommended"]})
    train, rest = train_test_split(np.arange(rows), test_size=0.2, random_state=0, stratify=frame["recommended"])
    validation, _ = train_test_split(rest, test_size=0.5, random_state=0, stratify=frame["recommended"].iloc[rest])
    split = np.full(rows, "test", dtype=object)
    split[train], split[validation] = "train", "validation"
    frame["split"] = split
    return frame, frame["text"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30, help="as init-config writes (early stopping ends sooner)")
    parser.add_argument("--encoders", nargs="*", default=["pretrained", "bag"], help="other text encoders to try "
                                                                                  "in the zero config (none: none)")
    parser.add_argument("--clothing", type=int, help="also a seeded sample of this many clothing reviews")
    parser.add_argument("--skip-jeans", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, no pretrained: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.encoders = [0], 3, ["bag"]
    torch.set_num_threads(args.threads)
    print(f"{machine()}\n{lamina_source()}\ntorch {torch.__version__}" + ("\nQUICK MODE: figures are not meaningful"
                                                                         if args.quick else ""))
    with threadpool_limits(limits=args.threads):
        if not args.skip_jeans:
            frame = datasets.load("jeans_reviews")
            compare("jeans_reviews", frame, "about_jeans", frame["review"], args)
        if args.clothing:
            frame, texts = clothing(args.clothing)
            compare(f"clothing_reviews, {args.clothing:,} sampled", frame, "recommended", texts, args)
    print(f"\nload average at the end: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()

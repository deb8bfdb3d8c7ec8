"""Transfer learning on small image sets: `encoder: pretrained` (EfficientNet-Lite0 with ImageNet
weights; frozen, and fine-tuned) against the from-scratch CNN that the zero-config default trains,
on the same train / validation / test rows, measured in one run: test accuracy, wall time, ratios.

Data: `faces` (200 grey 25x25 face / non-face images; a seeded stratified 60/20/20 split, several
seeds since 40 test images are few) and Fashion-MNIST (a seeded `--per-class` images of each class
from the official training part to train on, 20 more a class to validate on, and a seeded 2,000 of
the official test images).

    python benchmarks/pretrained_images.py                     # faces (3 seeds) and Fashion-MNIST 100/class
    python benchmarks/pretrained_images.py --models cnn frozen  # no fine-tuning (faster)
    python benchmarks/pretrained_images.py --data digits        # the 5,000 MNIST digits (split 400/50/50 a class)
    python benchmarks/pretrained_images.py --quick             # smoke test: faces, one seed, few epochs
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import lamina
from lamina import datasets
from lamina.features.image import CNN_DEFAULT, FOLDER_OUTPUT, FOLDER_TRAINING
from common import lamina_source, machine


def faces(seed: int) -> pd.DataFrame:
    """The 200 faces with a seeded split column: 60 / 20 / 20 of each class."""
    frame = datasets.load("faces")
    generator = np.random.default_rng(seed)
    split = np.empty(len(frame), dtype=object)
    for label in frame["label"].unique():
        rows = generator.permutation(np.flatnonzero(frame["label"].to_numpy() == label))
        cut = [int(len(rows) * 0.6), int(len(rows) * 0.8)]
        split[rows[:cut[0]]], split[rows[cut[0]:cut[1]]], split[rows[cut[1]:]] = "train", "validation", "test"
    return frame.assign(split=split)


def fashion(per_class: int, test_rows: int, seed: int) -> pd.DataFrame:
    """`per_class` training and 20 validation images a class from the official training part (seeded),
    and `test_rows` of the official test images."""
    frame = datasets.load("fashion_mnist")
    official = frame[frame["split"] != "test"]
    chosen = official.groupby("label").sample(per_class + 20, random_state=seed)
    chosen = chosen.assign(split=np.where(chosen.groupby("label").cumcount() < per_class, "train", "validation"))
    test = frame[frame["split"] == "test"].sample(test_rows, random_state=seed)
    return pd.concat([chosen, test])[["image", "label", "split"]].reset_index(drop=True)


def digits(seed: int) -> pd.DataFrame:
    """mnist_5k (500 digits a class) split 400 / 50 / 50 a class, seeded: the zero-config folder's shares."""
    frame = datasets.load("mnist_5k")
    order = frame.sample(frac=1.0, random_state=seed)
    rank = order.groupby("label").cumcount()
    return order.assign(split=np.select([rank < 400, rank < 450], ["train", "validation"], "test"))


def run(name: str, frame: pd.DataFrame, image: dict, training: dict) -> tuple[float, float]:
    """Train as a folder with no config would (its output and training defaults), with these image options."""
    config = {"inputs": [{"name": "image", "type": "image", "size": list(frame["image"].iloc[0].shape[:2]),
                          "channels": 1, **image}],
              "outputs": [{"name": "label", "type": "category", **FOLDER_OUTPUT}],
              "split": {"method": "column", "column": "split"}, "training": {**FOLDER_TRAINING, **training}}
    began = time.perf_counter()
    model = lamina.Model(config).fit(frame, quiet=True)
    seconds = time.perf_counter() - began
    accuracy = model.metrics_["test"]["label"]["accuracy"]
    print(f"  {name:<22} test accuracy {accuracy:.4f}  epochs {len(model.training_['history']):>2}  "
          f"learning rate {model.training_['learning_rate']:.1e}  {seconds:6.1f} s", flush=True)
    return accuracy, seconds


def compare(label: str, frame: pd.DataFrame, args) -> dict:
    rows = frame["split"].value_counts().to_dict()
    print(f"{label}: {rows}")
    epochs = {"epochs": 5} if args.quick else {}
    results = {}
    if "cnn" in args.models:
        results["cnn"] = run("CNN from scratch", frame, dict(CNN_DEFAULT), dict(epochs))
    if "frozen" in args.models:
        results["frozen"] = run("pretrained, frozen", frame, {"encoder": "pretrained"}, dict(epochs))
    if "fine_tuned" in args.models:  # a range test (100 steps through the whole backbone) would cost more than this
        results["fine_tuned"] = run("pretrained, fine-tuned", frame, {"encoder": "pretrained", "fine_tune": True},
                                    {"learning_rate": args.fine_tune_rate, "batch_size": 32,
                                     "epochs": 2 if args.quick else args.fine_tune_epochs})
    base_accuracy, base_seconds = results.get("cnn", (float("nan"), float("nan")))
    for kind, (accuracy, seconds) in results.items():
        if kind != "cnn" and "cnn" in results:
            errors = f"{(1 - accuracy) / (1 - base_accuracy):.2f}" if base_accuracy < 1 else "n/a (the CNN made none)"
            print(f"  {kind} / CNN: accuracy ratio {accuracy / base_accuracy:.3f}, error ratio {errors}, "
                  f"time ratio {seconds / base_seconds:.2f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="faces splits to average over")
    parser.add_argument("--per-class", type=int, default=100, help="Fashion-MNIST training images per class")
    parser.add_argument("--test-rows", type=int, default=2000, help="Fashion-MNIST test images")
    parser.add_argument("--models", nargs="+", default=["cnn", "frozen", "fine_tuned"],
                        choices=["cnn", "frozen", "fine_tuned"], help="which models to train")
    parser.add_argument("--fine-tune-epochs", type=int, default=10)
    parser.add_argument("--fine-tune-rate", type=float, default=1e-3, help="fixed learning rate of fine-tuning")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--data", nargs="+", default=["faces", "fashion"], choices=["faces", "fashion", "digits"],
                        help="data sets (digits: the 5,000 MNIST digits of the zero-config benchmark)")
    parser.add_argument("--quick", action="store_true", help="faces only, one seed, few epochs: a smoke test")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(lamina_source())
    print(f"{machine()}; torch {torch.__version__}, {args.threads} thread(s)")
    if "faces" in args.data:
        seeds = range(1 if args.quick else args.seeds)
        summary = [compare(f"faces, split seed {seed}", faces(seed), args) for seed in seeds]
        print("faces, mean over seeds: " + "; ".join(
            f"{kind} accuracy {np.mean([result[kind][0] for result in summary]):.4f}, "
            f"{np.mean([result[kind][1] for result in summary]):.1f} s" for kind in summary[0]))
    if "fashion" in args.data and not args.quick:
        compare(f"Fashion-MNIST, {args.per_class} per class", fashion(args.per_class, args.test_rows, 0), args)
    if "digits" in args.data and not args.quick:
        compare("mnist_5k digits, 400 per class", digits(0), args)


if __name__ == "__main__":
    main()

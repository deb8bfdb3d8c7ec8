"""The zero-config image path: a folder of class sub-folders of PNG files, `lamina train --data
folder --output run` with no config, against the classic baseline that `lamina train` fits on the
same train / validation / test files (logistic regression or gradient boosting on 16x16 grey pixels).

The folder is written from a real data set: mnist_5k (all 5,000 MNIST digits that ship offline,
28x28 grey) by default, or Fashion-MNIST (`--source fashion_mnist --per-class 800`: 8,000 clothing
photos). Prints the inferred default, the test accuracy of both models, their ratio and wall times.

    python benchmarks/zero_config_images.py                       # 5,000 digits (10 to 55 min on 2 busy cores)
    python benchmarks/zero_config_images.py --per-class 150       # 1,500 digits
    python benchmarks/zero_config_images.py --source fashion_mnist --per-class 800
    python benchmarks/zero_config_images.py --quick               # smoke test: 300 digits
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import lamina
from lamina import datasets
from lamina.cli import main
from common import lamina_source, machine


def write_folder(source: str, per_class: int, folder: Path) -> int:
    """The first `per_class` images of each class of a data set, as grey PNG files in class sub-folders."""
    frame = datasets.load(source)
    written = 0
    for label, rows in frame.groupby("label", sort=True):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        for position, image in enumerate(rows["image"].iloc[:per_class]):
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(folder / str(label) / f"{position}.png")
            written += 1
    return written


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="mnist_5k", choices=["mnist_5k", "fashion_mnist"])
    parser.add_argument("--per-class", type=int, default=500, help="images per class (mnist_5k holds 500)")
    parser.add_argument("--quick", action="store_true", help="30 images per class: a smoke test")
    args = parser.parse_args()
    per_class = 30 if args.quick else args.per_class
    print(lamina_source())
    print(machine())
    with tempfile.TemporaryDirectory() as work:
        folder, run = Path(work) / "images", Path(work) / "run"
        count = write_folder(args.source, per_class, folder)
        print(f"{args.source}: {count} PNG files in {folder}")
        began, cpu = time.perf_counter(), time.process_time()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main(["train", "--data", str(folder), "--output", str(run), "--quiet", "--no-report"])
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        text = printed.getvalue()
        print(text[:text.find("outputs:")].rstrip())  # the inferred default input
        if code != 0:
            raise SystemExit(f"lamina train exited {code}:\n{text}")
        model = lamina.load(run)
        deep = model.metrics_["test"]["label"]["accuracy"]
        comparison = model.comparison_ or {}
        classic = (comparison.get("classic") or {}).get("test", {}).get("accuracy")
        rows = model.training_["rows"]
        print(f"split: {rows}; epochs run: {len(model.training_['history'])}; learning rate {model.training_['learning_rate']:.2e}")
        print(f"lamina zero config: test accuracy {deep:.4f}  (train + compare + save: {seconds:.0f} s wall, "
              f"{cpu:.0f} s of CPU in all threads; load average now {os.getloadavg()[0]:.1f})")
        if classic is not None:
            print(f"classic baseline ({comparison['classic'].get('model', '?')}): test accuracy {classic:.4f}; "
                  f"ratio lamina / classic {deep / classic:.3f}")
            print(f"verdict: {comparison.get('verdict')}")


if __name__ == "__main__":
    main_benchmark()

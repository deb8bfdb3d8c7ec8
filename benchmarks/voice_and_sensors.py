"""Voice and sensors: the three sequence examples against a classic baseline on the same split.

    voice_digits   audio input, trained on espeak-ng speech, tested on 10 real human recordings
    fsdd_mfcc      timeseries input (MFCC frames), tested on a speaker never heard in training
    basic_motions  timeseries input (smart-watch accelerometer + gyroscope)

The baseline is lamina's `Model.compare`: classic features of the type (audio: mean/std of 20
MFCCs and of their deltas; timeseries: per-channel summary statistics) fed to LightGBM (or
HistGradientBoosting) and logistic regression, the better on validation kept. Prints test
accuracy of both, training time and clips per second in training (rows x epochs / fit time,
including decoding and stats).

    python benchmarks/voice_and_sensors.py            # the example configs as they are (~8 min on 2 cores)
    python benchmarks/voice_and_sensors.py --quick    # smoke test: few epochs (~2 min)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

import lamina
from lamina import datasets
from common import lamina_source, machine

EXAMPLES = {"voice_digits": "spoken_digits_synthetic", "fsdd_mfcc": "fsdd_mfcc", "basic_motions": "basic_motions"}
ROOT = Path(__file__).resolve().parent.parent


def run(example: str, data_set: str, quick: bool) -> dict:
    config = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    if quick:
        config["training"]["epochs"] = 3
    frame = datasets.load(data_set)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = lamina.Model(config).fit(frame, quiet=True)
    seconds = time.perf_counter() - start
    epochs = len(model.training_["history"])
    train_rows = model.training_["rows"]["train"]
    comparison = model.compare(frame, resamples=1000)
    classic = comparison["classic"]
    return {"example": example, "train": train_rows, "test": model.training_["rows"]["test"], "epochs": epochs,
            "deep": model.metrics_["test"][config["outputs"][0]["name"]]["accuracy"],
            "classic": classic["test"]["accuracy"], "classic_model": classic["model"],
            "seconds": seconds, "clips_per_second": train_rows * epochs / seconds, "verdict": comparison["verdict"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs each (a smoke test)")
    parser.add_argument("--examples", nargs="*", default=list(EXAMPLES), choices=list(EXAMPLES))
    args = parser.parse_args()
    print(lamina_source())
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = [run(example, EXAMPLES[example], args.quick) for example in args.examples]
    print("\n| example | train / test rows | epochs | deep test accuracy | classic test accuracy (model) | "
          "training time | clips/s in training |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        print(f"| {result['example']} | {result['train']} / {result['test']} | {result['epochs']} | "
              f"{result['deep']:.3f} | {result['classic']:.3f} ({result['classic_model']}) | "
              f"{result['seconds']:.0f} s | {result['clips_per_second']:.0f} |")
    for result in results:
        print(f"{result['example']}: {result['verdict']}")
    print(f"load average at the end: {machine().rsplit('load average ', 1)[1]}")


if __name__ == "__main__":
    main()

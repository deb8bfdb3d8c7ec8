"""Zero config against hand-written examples and classic baselines: for each named data set lamina
ships, the config `lamina init-config` infers (no hand edits) is trained, and so is the data set's
example config from examples/, on the same split; the classic baseline of `lamina compare` (gradient
boosting or a linear model, chosen on the validation rows) is fitted on that split too. Prints one
row per data set: the test metric (the output's main metric) and wall time of each, and the two gaps.

A data set's split is the example's `split:` (a column split, a ratio), given to the zero config too
(init-config itself takes a column named split as the split). Sets whose task init-config cannot set up
(object detection, ranking: they need options only a person knows) are skipped with the reason.

    python benchmarks/zero_config.py --sets japanese_vowels,basic_motions --threads 1
    python benchmarks/zero_config.py --sets card_transactions --max-rows 50000   # a sample of the rows
    python benchmarks/zero_config.py                                             # every set (hours)
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SKIPPED = {  # task -> why init-config + train does not apply
    "object detection": "boxes need the image's size and classes; init-config does not infer a boxes output",
    "recommendation (ranking)": "a ranking needs the user and item roles and a time split, which only a person knows",
}
TRAINED = re.compile(r"^#.*?lamina train --config examples/(\S+\.yaml) --data (\S+)", re.MULTILINE)


def examples_of(name: str) -> list[Path]:
    """The example configs whose header trains on the named data set (`lamina train --config ... --data NAME`)."""
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        found += [EXAMPLES / file for file, data in TRAINED.findall(path.read_text(encoding="utf-8"))
                  if data == name and file == path.name]
    return found


def pick_example(name: str, target: str, output_type: str) -> dict | None:
    """The example config for the data set: one that predicts `target`, of the zero config's output type when
    there is such an example (network_flows has a classifier and an anomaly detector), else the first."""
    import yaml

    candidates = []
    for path in examples_of(name):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if config.get("outputs") and config["outputs"][0].get("name") == target and "tune" not in config:
            candidates.append((path, config))
    same = [item for item in candidates if item[1]["outputs"][0].get("type") == output_type]
    chosen = (same or candidates or [None])[0]
    return None if chosen is None else {"file": chosen[0].name, "config": chosen[1]}


def sample_rows(frame: pd.DataFrame, max_rows: int | None, seed: int) -> tuple[pd.DataFrame, str]:
    """At most max_rows rows, drawn at random (seeded) and kept in their order, so a time or column split
    keeps its proportions; and a note saying so."""
    if not max_rows or len(frame) <= max_rows:
        return frame, ""
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
    return frame.iloc[keep].reset_index(drop=True), f"{max_rows:,} of {len(frame):,} rows (--max-rows)"


def zero_config(frame: pd.DataFrame, target: str, split: dict | None) -> tuple[dict, list[str]]:
    """What `lamina init-config` writes for the table (it takes a column named split as the split), with
    the example's split when the example states one, so that both are measured on the same rows."""
    from lamina.init_config import infer_config

    config, notes = infer_config(frame, [target])
    if split:
        config["split"] = copy.deepcopy(split)
    return config, notes


def train(config: dict, frame: pd.DataFrame, seed: int, epochs: int | None = None):
    """(fitted model, wall seconds); `epochs` caps the config's epochs (a smoke test)."""
    import lamina

    config = copy.deepcopy(config)
    config.setdefault("training", {})["seed"] = seed
    if epochs:
        config["training"]["epochs"] = min(epochs, config["training"].get("epochs", epochs))
    began = time.perf_counter()
    model = lamina.Model(config).fit(frame, quiet=True)
    return model, time.perf_counter() - began


def run_set(name: str, frame: pd.DataFrame | None = None, *, max_rows: int | None = None, seed: int = 0,
            resamples: int = 200, epochs: int | None = None) -> dict:
    """One data set (its rows: `frame`, default the whole set): zero config, its example and the classic
    baseline on one split. Returns a row for `table` (metric values, seconds, notes); `skipped` holds the
    reason when the set does not apply. `epochs` caps both configs' epochs (a smoke test only)."""
    from lamina import datasets
    from lamina.metrics import direction

    info = datasets.info(name)
    row = {"set": name, "task": info.task, "skipped": SKIPPED.get(info.task), "notes": []}
    if row["skipped"]:
        return row
    frame = datasets.load(name) if frame is None else frame
    frame, note = sample_rows(frame, max_rows, seed)
    row["rows"] = len(frame)
    if note:
        row["notes"].append(note)
    first = pick_example(name, info.target, "")  # the split comes from an example, when there is one
    split = (first or {}).get("config", {}).get("split")
    config, row["inferred"] = zero_config(frame, info.target, split)
    example = pick_example(name, info.target, config["outputs"][0]["type"])
    zero, row["zero_seconds"] = train(config, frame, seed, epochs)
    measured = {"zero": zero.metrics_["test"][info.target]}
    began = time.perf_counter()
    comparison = zero.compare(frame, resamples=resamples, seed=seed)
    row["classic_seconds"] = time.perf_counter() - began
    if comparison["classic"]:
        measured["classic"] = comparison["classic"]["test"]
        row["classic_model"] = comparison["classic"]["model"]
        row["classic_seconds"] = comparison["classic"]["training_seconds"]
    else:
        row["notes"].append(f"no classic baseline: {comparison['verdict']}")
    if example is None:
        row["notes"].append("no example config in examples/")
    else:
        row["example_file"] = example["file"]
        if example["config"].get("split") != split:
            row["notes"].append(f"{example['file']} splits differently from the first example")
        model, row["example_seconds"] = train(example["config"], frame, seed, epochs)
        measured["example"] = model.metrics_["test"][info.target]
    # the zero config's main metric, or (when the example predicts another type, e.g. category for binary)
    # the first metric that every model reports
    metric = zero.outputs_[0].main_metric()[0]
    shared = [name for name in (metric, "accuracy", "roc_auc") if all(name in values for values in measured.values())]
    if not shared:
        row["notes"].append(f"no metric that {', '.join(measured)} all report")
    elif shared[0] != metric:
        row["notes"].append(f"{example['file']} predicts a {example['config']['outputs'][0]['type']}: compared on "
                            f"{shared[0]}, not the zero config's {metric}")
    row["metric"] = shared[0] if shared else metric
    row["direction"] = direction(row["metric"])
    row.update({name: values.get(row["metric"]) for name, values in measured.items()})
    return row


def gap(row: dict, other: str) -> str:
    """zero config minus `other` in the metric's units (x100, 'points', for metrics on a 0..1 scale); a
    positive gap is zero config doing better whichever way the metric goes."""
    if row.get(other) is None or row.get("zero") is None:
        return "-"
    difference = (row["zero"] - row[other]) * (1 if row["direction"] == "max" else -1)
    return f"{difference * 100:+.2f}" if row["metric"] not in ("rmse", "mae") else f"{difference:+.4f}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(rows: list[dict]) -> str:
    """A markdown table of the measured rows, then the skipped sets and notes."""
    header = "| data set | rows | metric | zero config | s | example | s | classic | s | zero - example | zero - classic |"
    lines = [header, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row["skipped"]:
            continue
        classic = number(row.get("classic")) + (f" ({row['classic_model']})" if row.get("classic_model") else "")
        lines.append(f"| {row['set']} | {row['rows']:,} | {row['metric']} | {number(row.get('zero'))} | "
                     f"{seconds(row.get('zero_seconds'))} | {number(row.get('example'))} | "
                     f"{seconds(row.get('example_seconds'))} | {classic} | {seconds(row.get('classic_seconds'))} | "
                     f"{gap(row, 'example')} | {gap(row, 'classic')} |")
    lines.append("\nGaps: points (x100) for metrics on a 0..1 scale, data units for rmse; positive = zero config better.")
    lines += [f"- {row['set']}: skipped ({row['task']}): {row['skipped']}" for row in rows if row["skipped"]]
    lines += [f"- {row['set']}: {note}" for row in rows for note in row["notes"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", help="comma-separated data set names (default: every one `lamina datasets list` shows)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMP threads (default 1)")
    parser.add_argument("--max-rows", type=int, help="train on a seeded random sample of this many rows of a larger set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-inferred", action="store_true", help="print init-config's line for each column")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before scikit-learn's OpenMP pool starts
    import torch

    torch.set_num_threads(args.threads)
    from common import lamina_source, machine

    from lamina import datasets

    names = args.sets.split(",") if args.sets else datasets.names()
    print(lamina_source())
    print(machine(), f"(threads {args.threads})")
    rows = []
    for name in names:
        began = time.perf_counter()
        row = run_set(name, max_rows=args.max_rows, seed=args.seed)
        rows.append(row)
        if row["skipped"]:
            print(f"{name}: skipped: {row['skipped']}", flush=True)
            continue
        if args.show_inferred:
            print("\n".join(f"  {line}" for line in row["inferred"]))
        print(f"{name}: {row['metric']} zero config {row.get('zero')}, example {row.get('example')}, classic "
              f"{row.get('classic')} ({time.perf_counter() - began:.0f} s in all; {machine()})", flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()

"""Read + preprocessing throughput of lamina on a generated CSV (numbers, categories, a binary and a
set column), against plain pandas.read_csv of the same file measured in the same run.

Stages, as Model.fit runs them (lamina/api.py): read_table, rows_to_keep + split_rows, fitting every
feature's statistics on the training rows, and lamina.data.tensors on all rows. Each measurement runs
in a fresh process so its peak resident memory (VmHWM) is its own.

    python benchmarks/csv_throughput.py            # 1,000,000 rows
    python benchmarks/csv_throughput.py --quick    # 50,000 rows, CI smoke test (< 30 s)
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SET_LABELS = [f"tag{i:02d}" for i in range(30)]


def config() -> dict:
    return {
        "inputs": [
            {"name": "age", "type": "number"},
            {"name": "income", "type": "number", "normalize": "log"},
            {"name": "score", "type": "number"},
            {"name": "visits", "type": "number"},
            {"name": "city", "type": "category"},
            {"name": "device", "type": "category"},
            {"name": "plan", "type": "category"},
            {"name": "member", "type": "binary"},
            {"name": "tags", "type": "set", "delimiter": "|"},
        ],
        "outputs": [{"name": "churned", "type": "binary"}],
    }


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A seeded table with a few missing values in most columns."""
    generator = np.random.default_rng(seed)

    def with_missing(values: np.ndarray, share: float) -> np.ndarray:
        values = values.astype(object)
        values[generator.random(rows) < share] = None
        return values

    counts = generator.integers(0, 5, rows)
    chosen = generator.integers(0, len(SET_LABELS), (rows, 4))
    tags = ["|".join(sorted({SET_LABELS[j] for j in row[:count]})) for row, count in zip(chosen, counts)]
    frame = pd.DataFrame({
        "age": generator.integers(18, 91, rows),
        "income": with_missing(np.round(generator.lognormal(10, 1, rows), 2), 0.05),
        "score": np.round(generator.standard_normal(rows), 4),
        "visits": generator.poisson(3, rows),
        "city": with_missing(np.char.add("city_", generator.integers(0, 1000, rows).astype(str)), 0.01),
        "device": generator.choice(["phone", "tablet", "desktop", "tv", "watch"], rows),
        "plan": np.char.add("plan_", generator.integers(0, 50, rows).astype(str)),
        "member": generator.choice(["yes", "no"], rows),
        "tags": tags,
        "churned": generator.integers(0, 2, rows),
    })
    frame.to_csv(path, index=False)


def peak_megabytes() -> float:
    """Peak resident memory of this process. On Linux, VmHWM: ru_maxrss would be no good here, as it
    carries the parent's peak over into a child started by fork + exec (multiprocessing's spawn)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if os.uname().sysname == "Linux" else 2**20)


def measure_pandas(path: str, options: dict) -> dict:
    """Child process: pandas.read_csv alone."""
    baseline = peak_megabytes()
    began = time.perf_counter()
    frame = pd.read_csv(path, **options)
    seconds = time.perf_counter() - began
    return {"stages": {"read_csv": seconds}, "rows": len(frame), "peak": peak_megabytes(), "baseline": baseline}


def measure_lamina(path: str) -> dict:
    """Child process: what Model.fit does before training (lamina/api.py), one stage at a time."""
    import torch  # noqa: F401  imported before the baseline, as lamina imports it anyway

    from lamina import features
    from lamina.config import load_config
    from lamina.data import check_columns, read_table, rows_to_keep, split_rows, tensors

    baseline = peak_megabytes()
    stages, fit_seconds = {}, {}
    began = time.perf_counter()
    frame, source = read_table(path)
    stages["read_table"] = time.perf_counter() - began

    began = time.perf_counter()
    settings = load_config(config())
    check_columns(frame, [f.name for f in settings.inputs + settings.outputs], source)
    inputs = [features.build(feature) for feature in settings.inputs]
    outputs = [features.build(feature) for feature in settings.outputs]
    keep = rows_to_keep(frame, inputs, outputs)
    frame = frame[keep]
    parts = split_rows(frame, settings)
    stages["rows_to_keep + split_rows"] = time.perf_counter() - began

    began = time.perf_counter()
    training_rows = frame.iloc[parts["train"]]
    for feature in inputs + outputs:
        started = time.perf_counter()
        feature.fit(training_rows[feature.config.name])
        fit_seconds[feature.config.name] = time.perf_counter() - started
    stages["fit stats (train rows)"] = time.perf_counter() - began

    began = time.perf_counter()
    table = tensors(frame, inputs, outputs)
    stages["tensors (all rows)"] = time.perf_counter() - began
    tensor_bytes = sum(t.element_size() * t.nelement() for part in table.values() for t in part.values())
    return {"stages": stages, "rows": len(frame), "peak": peak_megabytes(), "baseline": baseline,
            "fit_seconds": fit_seconds, "frame_megabytes": frame.memory_usage(deep=True).sum() / 2**20,
            "tensor_megabytes": tensor_bytes / 2**20}


def measure_transforms(path: str) -> dict:
    """Child process: seconds of each feature's transform on all rows (the tensors stage, split up)."""
    from lamina import features
    from lamina.config import load_config
    from lamina.data import read_table, split_rows

    frame, _ = read_table(path)
    settings = load_config(config())
    built = [features.build(feature) for feature in settings.inputs + settings.outputs]
    training_rows = frame.iloc[split_rows(frame, settings)["train"]]
    seconds = {}
    for position, feature in enumerate(built):
        feature.fit(training_rows[feature.config.name])
        began = time.perf_counter()
        if position >= len(settings.inputs):  # the output
            feature.target(frame[feature.config.name])
        else:
            feature.transform(frame[feature.config.name])
        seconds[feature.config.name] = time.perf_counter() - began
    return seconds


def in_child(function, *args):
    """Run in a fresh interpreter so each peak-memory figure belongs to one measurement."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50,000 rows, for a CI smoke test (< 30 s)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--folder", help="where to write the CSV (default: a temporary folder, removed after)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-feature transform timings")
    args = parser.parse_args()
    rows = 50_000 if args.quick else args.rows

    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = Path(folder) / "table.csv"
        began = time.perf_counter()
        write_csv(path, rows)
        import torch

        from common import lamina_source, machine  # here: it imports lamina, which the pandas children must not

        print(f"csv_throughput: {rows:,} rows x {len(config()['inputs']) + 1} columns, "
              f"{path.stat().st_size / 2**20:.1f} MiB CSV written in {time.perf_counter() - began:.1f} s; "
              f"pandas {pd.__version__}, torch {torch.__version__}\n  {machine()}\n  {lamina_source()}")
        plain = in_child(measure_pandas, str(path), {})
        like_lamina = in_child(measure_pandas, str(path), {"skipinitialspace": True})
        result = in_child(measure_lamina, str(path))
        breakdown = None if args.no_breakdown else in_child(measure_transforms, str(path))

    print()
    print("| measurement | seconds | rows/s | peak RSS MiB (imports alone) |")
    print("|---|---:|---:|---:|")
    for label, measured in (("pandas.read_csv", plain), ("pandas.read_csv(skipinitialspace=True)", like_lamina)):
        seconds = measured["stages"]["read_csv"]
        print(f"| {label} | {seconds:.2f} | {rows / seconds:,.0f} | {measured['peak']:.0f} "
              f"({measured['baseline']:.0f}) |")
    for stage, seconds in result["stages"].items():
        print(f"| lamina: {stage} | {seconds:.2f} | {rows / seconds:,.0f} | |")
    total = sum(result["stages"].values())
    print(f"| **lamina total** | {total:.2f} | {rows / total:,.0f} | {result['peak']:.0f} ({result['baseline']:.0f}) |")
    print(f"\nratio lamina total / pandas.read_csv: {total / plain['stages']['read_csv']:.1f}x; "
          f"DataFrame {result['frame_megabytes']:.0f} MiB in memory, tensors {result['tensor_megabytes']:.0f} MiB")
    print("fit seconds per feature: " + ", ".join(f"{name} {s:.2f}" for name, s in result["fit_seconds"].items()))
    if breakdown:
        print("transform seconds per feature (all rows): "
              + ", ".join(f"{name} {s:.2f}" for name, s in breakdown.items()))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

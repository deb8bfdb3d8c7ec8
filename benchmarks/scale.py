"""Scale: DistributedDataParallel processes against one process, streaming a Parquet file against
reading it into memory, and `lamina tune` against the hand-tuned adult config and LightGBM.
Each part prints its figures and ratios measured in the same run.

    python benchmarks/scale.py --part ddp                  # 2 gloo processes x 1 thread vs 1 x 1 thread
    python benchmarks/scale.py --part stream --rows 5000000
    python benchmarks/scale.py --part tune --trials 40     # adult; long (each trial trains a model)
    python benchmarks/scale.py --part gpu                  # where CUDA is: AMP images/s vs a hand-written loop

ddp: a compute-bound MLP (20 numbers -> 3 x 1024, batches of 1,024 rows: each step's compute outweighs the
all-reduce of its 2.1 M gradients) on 60,000 rows, a fixed learning rate, 4 epochs;
examples/s = training rows / median seconds of epochs 2-4 from the model's own history (training,
batch-norm statistics and validation scoring). Goal: 2 processes >= 1.7x one.
stream: the same small model trained one epoch from a Parquet file with `training.streaming` on and
off, each in its own process; rows/s over Model.fit's wall time and the process's peak resident memory.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from common import lamina_source, machine

ROOT = Path(__file__).resolve().parent.parent


def numbers_frame(rows: int, columns: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((rows, columns)).astype(np.float32)
    frame = pd.DataFrame(values, columns=[f"x{i}" for i in range(columns)])
    signal = values[:, 0] * values[:, 1] + np.sin(values[:, 2]) - values[:, 3] ** 2 + 0.3 * values[:, 4:].sum(1)
    frame["y"] = np.where(signal + 0.3 * rng.standard_normal(rows) > np.median(signal), "yes", "no")
    return frame


def numbers_config(columns: int, size: int, layers: int, epochs: int, batch_size: int, **training) -> dict:
    return {"inputs": [{"name": f"x{i}", "type": "number", "encoding": "plain"} for i in range(columns)],
            "outputs": [{"name": "y", "type": "binary"}], "hidden": {"layers": layers, "size": size},
            "training": {"epochs": epochs, "batch_size": batch_size, "learning_rate": 0.002, "early_stopping": None,
                         "workers": 0, **training}}


def lamina_train(folder: Path, data: Path, output: Path, processes: int) -> float:
    """Runs `lamina train` (under torchrun for several processes); returns the wall seconds."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] \
        if processes > 1 else [sys.executable]
    command = [*launch, "-m", "lamina", "train", "--config", str(folder / "config.yaml"), "--data", str(data),
               "--output", str(output), "--quiet", "--no-compare", "--no-report"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - began


def part_ddp(args) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        numbers_frame(args.ddp_rows, 20).to_parquet(folder / "data.parquet")
        (folder / "config.yaml").write_text(yaml.safe_dump(numbers_config(20, 1024, 3, 4, args.ddp_batch)))
        rates, results = {}, {}
        for processes in (1, 2, 1, 2):  # interleaved, so load from elsewhere falls on both
            output = folder / f"run{processes}-{len(results)}"
            wall = lamina_train(folder, folder / "data.parquet", output, processes)
            history = json.loads((output / "history.json").read_text())
            history = history["history"] if isinstance(history, dict) else history
            rows = json.loads((output / "metrics.json").read_text())
            seconds = statistics.median(record["seconds"] for record in history[1:])
            train_rows = int(args.ddp_rows * 0.8)
            rates.setdefault(processes, []).append(train_rows / seconds)
            auc = rows["test"]["y"]["roc_auc"] if "test" in rows else float("nan")
            results[output.name] = (processes, seconds, wall, auc)
            print(f"  {processes} process(es): median epoch {seconds:.2f} s ({train_rows / seconds:,.0f} examples/s), "
                  f"wall {wall:.1f} s, test ROC AUC {auc:.4f}")
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        print(f"\n| processes x threads | examples/s (median of 2 runs) |\n|---|---:|\n| 1 x 1 | {one:,.0f} |\n"
              f"| 2 x 1 (torchrun, gloo) | {two:,.0f} |")
        print(f"ratio 2 processes / 1: {two / one:.2f}x (goal >= 1.7: {'met' if two / one >= 1.7 else 'NOT met'})")


def run_child(code: str) -> str:
    """Runs `code` in a fresh Python (its memory its own); returns its last printed line."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return done.stdout.strip().splitlines()[-1]


def part_stream(args) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        path = folder / "big.parquet"
        began = time.perf_counter()
        writer = None
        import pyarrow as pa
        import pyarrow.parquet as pq
        for start in range(0, args.rows, 500_000):  # written in parts: the writer itself stays small
            part = numbers_frame(min(500_000, args.rows - start), 10, seed=start)
            table = pa.Table.from_pandas(part, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=100_000)
        writer.close()
        print(f"  {args.rows:,} rows x 11 columns written in {time.perf_counter() - began:.1f} s, "
              f"{path.stat().st_size / 2 ** 20:,.0f} MiB on disk")
        results = {}
        for streaming in (False, True):
            config = numbers_config(10, 64, 2, 1, 4096, streaming=streaming, shuffle_buffer=args.buffer)
            code = (f"import resource, time, lamina; began = time.perf_counter(); "
                    f"model = lamina.Model({config!r}).fit({str(path)!r}, quiet=True); "
                    f"print(time.perf_counter() - began, model.metrics_['test']['y']['roc_auc'], "
                    f"resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")  # Linux: KiB -> MiB
            fit_seconds, auc, peak = (float(value) for value in run_child(code).split())
            results[streaming] = (fit_seconds, peak, auc)
            print(f"  streaming {streaming}: Model.fit {fit_seconds:.1f} s ({args.rows / fit_seconds:,.0f} rows/s), "
                  f"peak resident memory {peak:,.0f} MiB, test ROC AUC {auc:.4f}")
        print("\n| read | Model.fit s | rows/s | peak resident MiB | test ROC AUC |\n|---|---:|---:|---:|---:|")
        for streaming, (seconds, peak, auc) in results.items():
            print(f"| {'streamed' if streaming else 'in memory'} | {seconds:.1f} | {args.rows / seconds:,.0f} | "
                  f"{peak:,.0f} | {auc:.4f} |")


def part_tune(args) -> None:
    output = Path(args.output or tempfile.mkdtemp()) / "adult-tune"
    config = ROOT / "examples" / "adult_tune.yaml"
    command = [sys.executable, "-m", "lamina", "tune", "--config", str(config), "--data", "adult",
               "--trials", str(args.trials), "--output", str(output), "--jobs", str(args.jobs), "--no-report"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)  # each worker process takes cores / jobs threads
    print(done.stdout[-4000:])
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    print(f"lamina tune: {args.trials} trials in {time.perf_counter() - began:.0f} s")
    print("compare with benchmarks/adult.py (the hand-tuned examples/adult.yaml and the GBM on the same split)")


def part_gpu(args) -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this part on a GPU machine (docs/benchmarks.md says what was measured)")
    print(f"GPU: {torch.cuda.get_device_name(0)}")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fashion_mnist.py"), "--set", "training.device=cuda",
                    "--set", "training.precision=auto"], check=True)
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", str(ROOT / "tests" / "test_devices.py")],
                   check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["ddp", "stream", "tune", "gpu", "all"], default="all")
    parser.add_argument("--ddp-rows", type=int, default=60_000)
    parser.add_argument("--ddp-batch", type=int, default=1024, help="rows per step over all processes")
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the streamed Parquet file")
    parser.add_argument("--buffer", type=int, default=100_000, help="shuffle buffer rows when streaming")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the search")
    parser.add_argument("--output", help="where `--part tune` writes its study (default: a temporary folder)")
    args = parser.parse_args()
    print(f"scale: {machine()}\n  {lamina_source()}")
    parts = ["ddp", "stream", "tune"] if args.part == "all" else [args.part]
    for part in parts:
        print(f"\n== {part}")
        {"ddp": part_ddp, "stream": part_stream, "tune": part_tune, "gpu": part_gpu}[part](args)


if __name__ == "__main__":
    main()

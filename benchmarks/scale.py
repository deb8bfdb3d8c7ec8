"""Scale: DistributedDataParallel processes against one process, streaming a Parquet file against
reading it into memory, and `lamina tune` against the hand-tuned adult config and LightGBM.
Each part prints its figures and ratios measured in the same run.

    python benchmarks/scale.py --part ddp                  # 2 gloo processes x 1 thread vs 1 x 1 thread
    python benchmarks/scale.py --part stream --rows 5000000
    python benchmarks/scale.py --part tune --trials 40     # adult; long (each trial trains a model)
    python benchmarks/scale.py --part gpu                  # where CUDA is: AMP images/s vs a hand-written loop
    python benchmarks/scale.py --part gpu --gpu-device cpu --gpu-epochs 1 --quick   # the same script's path on a CPU

ddp: `--ddp-model mlp`: a wide MLP (20 numbers -> 3 x 1024, batches of 1,024 rows) on 60,000 rows; each
step all-reduces its 2.1 M gradients, so it is as much bound by parameters as by compute.
`--ddp-model cnn`: the compute-bound case, the Fashion-MNIST example's CNN (examples/fashion_mnist.yaml,
batches of 128) on a folder of 15,000 of its real images as PNG files (split 80/10/10), 0.1 M gradients
a step. A fixed learning rate, 4 epochs; examples/s = training rows / median seconds of epochs 2-4
from the model's own history (training, batch-norm statistics and validation scoring). Goal: 2
processes >= 1.7x one.
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


def image_folder(folder: Path, count: int) -> None:
    """`count` Fashion-MNIST training images (a seeded sample) as PNG files in one folder per class."""
    from PIL import Image

    from lamina import datasets

    frame = datasets.load("fashion_mnist")
    frame = frame[frame["split"] != "test"].sample(count, random_state=0)
    for index, (image, label) in enumerate(zip(frame["image"], frame["label"])):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{index}.png")


def image_config() -> dict:
    with open(ROOT / "examples" / "fashion_mnist.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config.pop("split")  # the folder is split 80/10/10
    config["training"].update(epochs=4, early_stopping=None, workers=0)
    return config


def part_ddp(args) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        if args.ddp_model == "mlp":
            data, metric = folder / "data.parquet", ("y", "roc_auc")
            numbers_frame(args.ddp_rows, 20).to_parquet(data)
            config = numbers_config(20, 1024, 3, 4, args.ddp_batch)
        else:
            data, metric = folder / "images", ("label", "accuracy")
            image_folder(data, args.ddp_images)
            config = image_config()
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        print(f"  {args.ddp_model}: batch {config['training']['batch_size']}, 4 epochs")
        rates, results = {}, {}
        for processes in (1, 2, 1, 2):  # interleaved, so load from elsewhere falls on both
            output = folder / f"run{processes}-{len(results)}"
            wall = lamina_train(folder, data, output, processes)
            training = json.loads((output / "history.json").read_text())
            history = training["history"]
            rows = json.loads((output / "metrics.json").read_text())
            seconds = statistics.median(record["seconds"] for record in history[1:])
            train_rows = training["rows"]["train"]
            rates.setdefault(processes, []).append(train_rows / seconds)
            score = rows["test"][metric[0]][metric[1]] if "test" in rows else float("nan")
            results[output.name] = (processes, seconds, wall, score)
            print(f"  {processes} process(es): median epoch {seconds:.2f} s ({train_rows / seconds:,.0f} examples/s), "
                  f"wall {wall:.1f} s, test {metric[1]} {score:.4f}, load average {os.getloadavg()[0]:.1f}")
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


def fashion_mnist(device: str, epochs: int, threads: int, quick: bool) -> str:
    """benchmarks/fashion_mnist.py on `device` with `precision: auto` (bf16 or fp16 autocast on a GPU):
    lamina against the hand-written loop on the same device (on a GPU, a hand-written AMP loop)."""
    command = [sys.executable, str(ROOT / "benchmarks" / "fashion_mnist.py"), "--set", f"training.device={device}",
               "--set", "training.precision=auto", "--set", f"training.epochs={epochs}", "--threads", str(threads),
               *(["--quick"] if quick else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout[-6000:])
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return done.stdout


def images_per_second(output: str) -> float:
    """lamina's median-epoch training images/s from fashion_mnist.py's throughput table."""
    line = next(line for line in output.splitlines() if line.startswith("| median epoch |"))
    return float(line.split("|")[2].replace(",", ""))


def part_gpu(args) -> None:
    """Fashion-MNIST on the GPU (lamina and the hand-written AMP loop, goal >= 0.9x), the same on all
    of this machine's CPU cores for the speed-up, then the GPU tests."""
    import torch

    device = args.gpu_device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this part on a GPU machine (docs/benchmarks.md says what was measured)")
    cores = os.cpu_count() or 1
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}, "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"\n-- Fashion-MNIST on {device}, {args.gpu_epochs} epochs")
    on_device = images_per_second(fashion_mnist(device, args.gpu_epochs, min(cores, 4), args.quick))
    print(f"\n-- the same on the CPU, {cores} threads, 1 epoch")
    on_cpu = images_per_second(fashion_mnist("cpu", 1, cores, args.quick))
    print(f"\nlamina training images/s: {device} {on_device:,.0f}, CPU ({cores} threads) {on_cpu:,.0f}: "
          f"speed-up {on_device / on_cpu:.1f}x")
    tests = [str(ROOT / "tests" / "test_devices.py")]
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-rs", *tests], capture_output=True,
                          text=True)
    print(done.stdout[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["ddp", "stream", "tune", "gpu", "all"], default="all")
    parser.add_argument("--ddp-model", choices=["mlp", "cnn"], default="cnn")
    parser.add_argument("--ddp-rows", type=int, default=60_000, help="rows for the mlp")
    parser.add_argument("--ddp-images", type=int, default=15_000, help="Fashion-MNIST images for the cnn")
    parser.add_argument("--ddp-batch", type=int, default=1024, help="rows per step over all processes")
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the streamed Parquet file")
    parser.add_argument("--buffer", type=int, default=100_000, help="shuffle buffer rows when streaming")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the search")
    parser.add_argument("--output", help="where `--part tune` writes its study (default: a temporary folder)")
    parser.add_argument("--gpu-device", default="cuda", help="`--part gpu` on this device (cpu: try the script)")
    parser.add_argument("--gpu-epochs", type=int, default=10, help="Fashion-MNIST epochs of `--part gpu`")
    parser.add_argument("--quick", action="store_true", help="`--part gpu` on 1,000 images (a smoke test)")
    args = parser.parse_args()
    print(f"scale: {machine()}\n  {lamina_source()}")
    parts = ["ddp", "stream", "tune"] if args.part == "all" else [args.part]
    for part in parts:
        print(f"\n== {part}")
        {"ddp": part_ddp, "stream": part_stream, "tune": part_tune, "gpu": part_gpu}[part](args)


if __name__ == "__main__":
    main()

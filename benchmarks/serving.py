"""Serving: single-row latency through HTTP (`lamina serve` on loopback) against calling the model
in-process; requests/s with 1, 8 and 64 concurrent clients with and without micro-batching; and
batch inference rows/s of ONNX Runtime against PyTorch on the same tensors.

The model is examples/adult.yaml trained for 2 epochs (or --model FOLDER). The server runs in a
subprocess with one torch thread; the clients are asyncio connections (keep-alive HTTP/1.1) in
this process. Every phase runs for a bounded time (--seconds).

    python benchmarks/serving.py            # adult, 2 epochs; 10 s per throughput setting
    python benchmarks/serving.py --quick    # 4,000 adult rows, 1 epoch, 2 s per setting
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import lamina
from common import lamina_source, machine

ROOT = Path(__file__).resolve().parent.parent
BATCH = 4096


def train(folder: Path, quick: bool) -> lamina.Model:
    config = yaml.safe_load((ROOT / "examples" / "adult.yaml").read_text())
    config["training"].update({"epochs": 1 if quick else 2})
    data = lamina.datasets.load("adult")
    if quick:
        data = data.sample(4000, random_state=0)
    return lamina.Model(config).fit(data, output_dir=folder, quiet=True)


def percentiles(seconds: list[float]) -> str:
    milliseconds = np.array(seconds) * 1000
    return f"p50 {np.percentile(milliseconds, 50):.2f} ms, p99 {np.percentile(milliseconds, 99):.2f} ms"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, flags: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "lamina.cli", "serve", str(folder), "--port", str(port),
                                "--log-level", "warning", *flags], env=environment, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not become healthy within 120 s")


def http_latency(port: int, body: bytes, requests: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        times.append(time.perf_counter() - start)
    return times


async def _client(port: int, request: bytes, stop: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < stop:
        writer.write(request)
        await writer.drain()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            elif line.startswith(b"HTTP/1.1 ") and not line.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(line.decode())
        await reader.readexactly(length)
        counts[0] += 1
    writer.close()


def throughput(port: int, body: bytes, clients: int, seconds: float) -> float:
    request = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    counts = [0]

    async def run() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, request, stop, counts) for _ in range(clients)))

    start = time.monotonic()
    asyncio.run(run())
    return counts[0] / (time.monotonic() - start)


def batch_inference(model: lamina.Model, frame, folder: Path, repeats: int) -> dict[str, float]:
    """Rows/s of Model.predict (pandas preprocessing + network), of the exported network in
    PyTorch and of the ONNX export in ONNX Runtime, these two on the same ready tensors."""
    import onnxruntime

    from lamina import export

    onnx_folder = folder.parent / "onnx"
    export.export(model, onnx_folder, "onnx")
    description = json.loads((onnx_folder / export.MANIFEST).read_text())
    feeds = export.feeds(description, frame)
    wrapper = export.Exported(model).eval()
    # batches of 4,096 rows, as Model.predict runs them (one 20,000-row batch is slower in both)
    starts = range(0, len(frame), BATCH)
    torch_batches = [[torch.from_numpy(feeds[name][start:start + BATCH]) for name in wrapper.input_names]
                     for start in starts]
    onnx_batches = [{name: values[start:start + BATCH] for name, values in feeds.items()} for start in starts]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(str(onnx_folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def best(function) -> float:
        function()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return len(frame) / min(times)

    with torch.no_grad():
        return {"Model.predict (pandas preprocessing + PyTorch)": best(lambda: model.predict(frame)),
                "PyTorch, ready tensors": best(lambda: [wrapper(*batch) for batch in torch_batches]),
                "ONNX Runtime, ready tensors": best(lambda: [session.run(None, batch) for batch in onnx_batches])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and 2 s per setting (CI smoke test)")
    parser.add_argument("--model", help="a trained model folder (default: train examples/adult.yaml, 2 epochs)")
    parser.add_argument("--seconds", type=float, help="seconds per throughput setting (default 10; 2 with --quick)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="the micro-batching server's wait window")
    parser.add_argument("--requests", type=int, help="requests per latency measurement (default 500; 100 quick)")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    requests = args.requests or (100 if args.quick else 500)
    torch.set_num_threads(1)
    print(lamina_source())
    print(f"machine: {machine()}; torch {torch.__version__}, 1 thread")
    with tempfile.TemporaryDirectory(prefix="lamina-serving-") as scratch:
        folder = Path(args.model) if args.model else Path(scratch) / "model"
        started = time.perf_counter()
        model = lamina.load(folder) if args.model else train(folder, args.quick)
        print(f"model: {folder} ({'loaded' if args.model else f'trained in {time.perf_counter() - started:.0f} s'})")
        frame = lamina.datasets.load("adult")
        row = {name: (value.item() if hasattr(value, "item") else value)
               for name, value in frame[[f.config.name for f in model.inputs_]].iloc[0].items()}
        body = json.dumps({"rows": [row]}).encode()
        model.predict(row)
        in_process = []
        for _ in range(requests):
            start = time.perf_counter()
            model.predict(row)
            in_process.append(time.perf_counter() - start)
        print(f"\nsingle-row latency, in-process Model.predict: {percentiles(in_process)}")
        results = {}
        batching = (f"micro-batching ({args.batch_wait_ms:g} ms, 256 rows)",
                    ["--batch-wait-ms", str(args.batch_wait_ms), "--max-batch-rows", "256"])
        for label, flags in (batching, ("no micro-batching", ["--max-batch-rows", "1"])):
            process, port = start_server(folder, flags)
            try:
                http_latency(port, body, 20)  # warm the connection and the server
                print(f"single-row latency, HTTP, {label}: {percentiles(http_latency(port, body, requests))}")
                results[label] = {clients: throughput(port, body, clients, seconds) for clients in (1, 8, 64)}
            finally:
                process.terminate()
                process.wait(30)
        print(f"\nrequests/s of single-row requests ({seconds:.0f} s per setting; load average "
              f"{os.getloadavg()[0]:.1f}):")
        print(f"{'clients':>8} " + " ".join(f"{label:>34}" for label in results))
        for clients in (1, 8, 64):
            print(f"{clients:>8} " + " ".join(f"{results[label][clients]:>34.0f}" for label in results))
        sample = frame.sample(min(len(frame), 20_000), random_state=0).reset_index(drop=True)
        print(f"\nbatch inference, {len(sample):,} rows in batches of {BATCH:,}, 1 thread "
              f"(best of {3 if args.quick else 5}):")
        speeds = batch_inference(model, sample, folder, 3 if args.quick else 5)
        for label, speed in speeds.items():
            print(f"  {label:<48} {speed:>12,.0f} rows/s")
        ratio = speeds["ONNX Runtime, ready tensors"] / speeds["PyTorch, ready tensors"]
        print(f"  ONNX Runtime / PyTorch: {ratio:.2f}x")
        print(f"\nload average at the end: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()

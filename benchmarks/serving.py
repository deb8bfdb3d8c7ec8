"""Serving: the prediction fast path and the server. In one run, interleaved where two paths are
compared: single-row latency in process (Model.predict on a one-row DataFrame, the old path, against
Model.predict of a dict and Model.predict_rows, the fast path), the network on ready tensors and its
hidden layers and head alone (the floor); where the fast path stops paying (rows per call); the start of
`lamina serve` (imports, and wall time to the first ok /health); single-row latency over HTTP with one
client and requests/s with 1, 8 and 64 clients, a fast-path server against one that builds a DataFrame
for every batch (both micro-batching); batch inference rows/s of Model.predict, of the exported network
in PyTorch and of the ONNX export in ONNX Runtime on the same tensors.

The model is examples/adult.yaml trained for 2 epochs (or --model FOLDER). The servers run in
subprocesses with one torch thread; the clients are asyncio connections (keep-alive HTTP/1.1) in
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
import pandas as pd
import torch
import yaml

import lamina
from common import lamina_source, machine
from lamina.features.base import HeadContext

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


# a server started from this script: the app of `lamina serve` with the settings given as JSON
RUNNER = """
import json, sys
import uvicorn
import lamina
from lamina.serving.app import Settings, create_app
folder, port, settings = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
uvicorn.run(create_app(lamina.load(folder), folder, Settings(**settings)), host="127.0.0.1", port=port,
            log_level="warning")
"""


def wait_healthy(process: subprocess.Popen, port: int, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        time.sleep(0.01)
    process.kill()
    raise RuntimeError(f"the server did not become healthy within {limit:.0f} s")


def start_server(folder: Path, settings: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", RUNNER, str(folder), str(port), json.dumps(settings)],
                               env=environment, stdout=subprocess.DEVNULL)
    wait_healthy(process, port)
    return process, port


def serve_start(folder: Path) -> tuple[float, list[tuple[str, float]]]:
    """`lamina serve FOLDER` as a user starts it: seconds from launch to the first ok /health, and the
    imports that took longest (-X importtime: module, cumulative seconds)."""
    port = free_port()
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: importtime's lines would fill a pipe and block
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "lamina.cli", "serve", str(folder),
                                    "--port", str(port), "--log-level", "warning"], env=environment,
                                   stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_healthy(process, port)
            seconds = time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(30)
        log.seek(0)
        errors = log.read()
    imports = []
    for line in errors.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = line.split("|")
            if parts[1].strip().isdigit():
                imports.append((parts[2].rstrip(), int(parts[1]) / 1e6))
    # the modules imported at the top of the chain (nesting depth 0 to 2: lamina, its first imports)
    shallow = [(name.strip(), took) for name, took in imports if (len(name) - len(name.lstrip()) - 1) // 2 <= 2]
    return seconds, sorted(shallow, key=lambda item: -item[1])[:12]


def interleaved(calls: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, the calls taking turns (so that the machine's load falls on all alike)."""
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(repeats):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - start)
    return times


def in_process(model: lamina.Model, row: dict, repeats: int) -> dict[str, list[float]]:
    """One row through the old DataFrame path, the fast path, the network on ready tensors and the
    network's hidden layers and head alone on a ready (1, width) tensor (a hand-written forward: the floor)."""
    network = model.network_
    frame = pd.DataFrame([row])
    ready = {feature.config.name: feature.encode_rows([row[feature.config.name]]) for feature in model.inputs_}
    width = sum(encoder.output_size for encoder in network.encoders)
    hidden = torch.randn(1, width)
    head = network.heads[0]

    def network_only() -> None:
        with torch.inference_mode():
            network(ready)

    def floor() -> None:
        with torch.inference_mode():
            head(network.trunk(hidden), HeadContext())

    return interleaved({"Model.predict(DataFrame), the old path": lambda: model.predict(frame),
                        "Model.predict(dict), the fast path": lambda: model.predict(row),
                        "Model.predict_rows(dict)": lambda: model.predict_rows(row),
                        "network on ready tensors": network_only,
                        "hidden layers + head on a ready vector": floor}, repeats)


def rows_per_call(model: lamina.Model, frame: pd.DataFrame, repeats: int) -> list[tuple[int, float, float]]:
    """(rows, ms of the DataFrame path, ms of the fast path) per call, best of `repeats`: where the
    fast path stops paying, which sets FAST_ROWS."""
    names = [feature.config.name for feature in model.inputs_]
    result = []
    for count in (1, 8, 64, 256, 1024, 4096):
        rows = [{name: (value.item() if hasattr(value, "item") else value) for name, value in record.items()}
                for record in frame[names].head(count).to_dict("records")]
        times = interleaved({"frame": lambda rows=rows: model.predict(pd.DataFrame(rows)),
                             "fast": lambda rows=rows: pd.DataFrame(model._decoded_few(rows))}, repeats)
        result.append((count, 1000 * min(times["frame"]), 1000 * min(times["fast"])))
    return result


def http_latency(ports: dict[str, int], body: bytes, requests: int) -> dict[str, list[float]]:
    """Single-row requests on one keep-alive connection per server, the servers taking turns."""
    connections = {label: http.client.HTTPConnection("127.0.0.1", port) for label, port in ports.items()}

    def request(connection) -> None:
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status

    for _ in range(20):  # warm the connections and the servers
        for connection in connections.values():
            request(connection)
    return interleaved({label: (lambda connection=connection: request(connection))
                        for label, connection in connections.items()}, requests)


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

    def best(function, rows: int = len(frame)) -> float:
        function()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return rows / min(times)

    one_batch = frame.head(BATCH)
    with torch.no_grad():
        return {"Model.predict, one 4,096-row DataFrame": best(lambda: model.predict(one_batch), len(one_batch)),
                "Model.predict (pandas preprocessing + PyTorch)": best(lambda: model.predict(frame)),
                "PyTorch, ready tensors": best(lambda: [wrapper(*batch) for batch in torch_batches]),
                "ONNX Runtime, ready tensors": best(lambda: [session.run(None, batch) for batch in onnx_batches])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and 2 s per setting (CI smoke test)")
    parser.add_argument("--model", help="a trained model folder (default: train examples/adult.yaml, 2 epochs)")
    parser.add_argument("--seconds", type=float, help="seconds per throughput setting (default 10; 2 with --quick)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="the micro-batching server's wait window")
    parser.add_argument("--requests", type=int, help="requests per latency measurement (default 1000; 100 quick)")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    requests = args.requests or (100 if args.quick else 1000)
    torch.set_num_threads(1)
    print(lamina_source())
    print(f"machine: {machine()}; torch {torch.__version__}, 1 thread")
    with tempfile.TemporaryDirectory(prefix="lamina-serving-") as scratch:
        folder = Path(args.model) if args.model else Path(scratch) / "model"
        started = time.perf_counter()
        model = lamina.load(folder) if args.model else train(folder, args.quick)
        if not args.model:
            model = lamina.load(folder)  # as a server holds it: loaded, its lookup tables prepared
        print(f"model: {folder} ({'loaded' if args.model else f'trained in {time.perf_counter() - started:.0f} s'})")
        frame = lamina.datasets.load("adult")
        row = {name: (value.item() if hasattr(value, "item") else value)
               for name, value in frame[[f.config.name for f in model.inputs_]].iloc[0].items()}
        body = json.dumps({"rows": [row]}).encode()

        print(f"\nsingle-row latency in process, {requests} calls each, taking turns:")
        times = in_process(model, row, requests)
        for label, values in times.items():
            print(f"  {label:<42} {percentiles(values)}")
        fast = np.median(times["Model.predict_rows(dict)"])
        print(f"  predict_rows / old path: {fast / np.median(times['Model.predict(DataFrame), the old path']):.3f}; "
              f"predict_rows / network on ready tensors: {fast / np.median(times['network on ready tensors']):.1f}; "
              f"/ hidden layers + head: {fast / np.median(times['hidden layers + head on a ready vector']):.1f}")

        print("\nrows per call, ms (best of 20): DataFrame path against the fast path")
        for count, old, new in rows_per_call(model, frame, 5 if args.quick else 20):
            print(f"  {count:>5} rows: {old:8.2f} ms  {new:8.2f} ms  ({new / old:.2f}x)")

        start_seconds, imports = serve_start(folder)
        print(f"\n`lamina serve`: first ok /health {start_seconds:.2f} s after launch; longest imports "
              f"(cumulative s): " + ", ".join(f"{name} {took:.2f}" for name, took in imports))

        servers = {"fast path": {"fast_rows": 64}, "DataFrame path": {"fast_rows": 0}}
        processes, ports = [], {}
        try:
            for label, settings in servers.items():
                process, port = start_server(folder, {**settings, "batch_wait_ms": args.batch_wait_ms,
                                                      "max_batch_rows": 256})
                processes.append(process)
                ports[label] = port
            times = http_latency(ports, body, requests)
            print(f"\nsingle-row latency over HTTP, one client, {requests} requests each, taking turns:")
            for label, values in times.items():
                print(f"  {label:<42} {percentiles(values)}")
            results = {label: {clients: throughput(port, body, clients, seconds) for clients in (1, 8, 64)}
                       for label, port in ports.items()}
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
        print(f"\nrequests/s of single-row requests, micro-batching ({args.batch_wait_ms:g} ms, 256 rows), "
              f"{seconds:.0f} s per setting; load average {os.getloadavg()[0]:.1f}:")
        print(f"{'clients':>8} " + " ".join(f"{label:>16}" for label in results))
        for clients in (1, 8, 64):
            print(f"{clients:>8} " + " ".join(f"{results[label][clients]:>16.0f}" for label in results))

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

"""Serving: the prediction fast path and the server. In one run, interleaved where two paths are
compared: single-row latency in process (Model.predict on a one-row DataFrame, the old path, against
Model.predict of a dict and Model.predict_rows, the fast path, with the same-kind encoders grouped and
with every encoder alone, as it ran before), the network on ready tensors both ways and a hand-written
forward of its hidden layers and head (the floor); where a one-row call spends its time; batch rows/s
of Model.predict on a 4,096-row DataFrame, encoders grouped against alone; where the fast path stops
paying (rows per call); the start of `lamina serve` (imports, and wall time to the first ok /health);
single-row latency over HTTP with one client and requests/s with 1, 8 and 64 clients: the default
server (a lone small request predicted on its event loop), one handing every request to its batcher's
thread, and one that also builds a DataFrame for every batch (all micro-batching under concurrency); batch inference rows/s of
Model.predict, of the exported network in PyTorch and of the ONNX export in ONNX Runtime on the same tensors.

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


def in_process(model: lamina.Model, alone: lamina.Model, row: dict, repeats: int) -> dict[str, list[float]]:
    """One row through the old DataFrame path, the fast path, the fast path of the same model with every
    encoder computed alone (how the network ran before same-kind encoders were grouped), the network on ready
    tensors (both ways) and a hand-written forward of the hidden layers and head on a ready (1, width)
    tensor (F.linear, F.batch_norm and the activation on the trained weights: the floor)."""
    frame = pd.DataFrame([row])
    ready = {feature.config.name: feature.encode_rows([row[feature.config.name]]) for feature in model.inputs_}
    width = sum(encoder.output_size for encoder in model.network_.encoders)
    hidden = torch.randn(1, width)

    def network_only(network) -> None:
        with torch.inference_mode():
            network(ready)

    def floor() -> None:
        with torch.inference_mode():
            hand_written(model.network_, hidden)

    return interleaved({"Model.predict(DataFrame), the old path": lambda: model.predict(frame),
                        "Model.predict(dict), the fast path": lambda: model.predict(row),
                        "Model.predict_rows(dict)": lambda: model.predict_rows(row),
                        "Model.predict_rows(dict), encoders alone": lambda: alone.predict_rows(row),
                        "network on ready tensors": lambda: network_only(model.network_),
                        "network on ready tensors, encoders alone": lambda: network_only(alone.network_),
                        "hand-written hidden layers + head": floor}, repeats)


def hand_written(network, hidden: torch.Tensor) -> torch.Tensor:
    """The hidden layers and the first head of `network` as one would write them by hand in PyTorch
    (F.linear and F.batch_norm on the trained weights, the activation): (1, width) -> the head's output."""
    for block in network.trunk:
        linear, norm, activation, _ = block.layer
        hidden = torch.nn.functional.linear(hidden, linear.weight, linear.bias)
        if isinstance(norm, torch.nn.BatchNorm1d):
            hidden = torch.nn.functional.batch_norm(hidden, norm.running_mean, norm.running_var, norm.weight,
                                                    norm.bias, False, 0.0, norm.eps)
        hidden = activation(hidden)
    last = [module for module in network.heads[0].modules() if isinstance(module, torch.nn.Linear)][-1]
    return torch.nn.functional.linear(hidden, last.weight, last.bias)


def where_time_goes(model: lamina.Model, row: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each part of a one-row predict_rows, taking turns: encoding the cells, each block or
    lone encoder of the network, the hidden layers, the head, decoding; and the whole call."""
    network = model.network_
    ready = {feature.config.name: feature.encode_rows([row[feature.config.name]]) for feature in model.inputs_}
    calls = {"Model.predict_rows(dict), the whole call": lambda: model.predict_rows(row),
             "encode_rows of every input": lambda: [feature.encode_rows([row.get(feature.config.name)])
                                                    for feature in model.inputs_]}
    for positions, block in network.runs:
        names = [network.input_names[position] for position in positions]
        if block is not None:
            module = network.blocks[block]
            label = f"{type(module).__module__.split('.')[-1].removesuffix('_block')} block of {len(names)} inputs"
            calls[label] = lambda module=module, names=names: module([ready[name] for name in names])
        else:
            encoder = network.encoders[positions[0]]
            calls[f"{names[0]} encoder alone"] = lambda encoder=encoder, name=names[0]: encoder(ready[name])
    with torch.inference_mode():
        hidden, _, _ = network.encode(ready)
        output = network.heads[0](hidden, HeadContext())
    joined = torch.randn(1, sum(encoder.output_size for encoder in network.encoders))
    calls["joining the vectors (cat, index_select)"] = lambda: torch.cat([joined[:, :1], joined[:, 1:]], dim=1) \
        .index_select(1, network.order) if network.order is not None else None
    calls["hidden layers"] = lambda: network.trunk(joined)
    calls["head"] = lambda: network.heads[0](hidden, HeadContext())
    calls["decode"] = lambda: model.outputs_[0].decode(output)
    with torch.inference_mode():
        return interleaved(calls, repeats)


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


def batch_against_alone(model: lamina.Model, alone: lamina.Model, frame: pd.DataFrame,
                        repeats: int) -> dict[str, list[float]]:
    """Seconds of Model.predict on one 4,096-row DataFrame, the network with same-kind encoders grouped
    against the same network computing every encoder alone (how it ran before), taking turns."""
    batch = frame.head(BATCH)
    with torch.no_grad():
        return interleaved({"grouped": lambda: model.predict(batch), "alone": lambda: alone.predict(batch)},
                           repeats)


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
        alone = lamina.load(folder)
        alone.network_.group_encoders(False)  # every encoder alone: the network as it ran before
        frame = lamina.datasets.load("adult")
        row = {name: (value.item() if hasattr(value, "item") else value)
               for name, value in frame[[f.config.name for f in model.inputs_]].iloc[0].items()}
        body = json.dumps({"rows": [row]}).encode()

        print(f"\nsingle-row latency in process, {requests} calls each, taking turns:")
        times = in_process(model, alone, row, requests)
        for label, values in times.items():
            print(f"  {label:<48} {percentiles(values)}")
        fast = np.median(times["Model.predict_rows(dict)"])
        print(f"  predict_rows / old path: {fast / np.median(times['Model.predict(DataFrame), the old path']):.3f}; "
              f"/ encoders alone: {fast / np.median(times['Model.predict_rows(dict), encoders alone']):.3f}; "
              f"/ network on ready tensors: {fast / np.median(times['network on ready tensors']):.1f}; "
              f"/ hand-written layers + head: {fast / np.median(times['hand-written hidden layers + head']):.1f}")

        print(f"\nwhere a one-row predict_rows spends its time, {requests} calls each, taking turns (ms, p50):")
        for label, values in where_time_goes(model, row, requests).items():
            print(f"  {label:<48} {1000 * np.median(values):.3f}")

        print(f"\nbatch: Model.predict of one {BATCH:,}-row DataFrame, encoders grouped against alone, "
              f"{5 if args.quick else 20} calls each, taking turns:")
        batch_times = batch_against_alone(model, alone, frame, 5 if args.quick else 20)
        for label, values in batch_times.items():
            print(f"  {label:<10} {BATCH / np.median(values):>10,.0f} rows/s (median), "
                  f"{BATCH / min(values):>10,.0f} (best)")
        print(f"  grouped / alone rows/s: {np.median(batch_times['alone']) / np.median(batch_times['grouped']):.3f} "
              f"(median), {min(batch_times['alone']) / min(batch_times['grouped']):.3f} (best)")

        print("\nrows per call, ms (best of 20): DataFrame path against the fast path")
        for count, old, new in rows_per_call(model, frame, 5 if args.quick else 20):
            print(f"  {count:>5} rows: {old:8.2f} ms  {new:8.2f} ms  ({new / old:.2f}x)")

        start_seconds, imports = serve_start(folder)
        print(f"\n`lamina serve`: first ok /health {start_seconds:.2f} s after launch; longest imports "
              f"(cumulative s): " + ", ".join(f"{name} {took:.2f}" for name, took in imports))

        # the default server predicts a lone small request on its event loop; the second hands every request
        # to the batcher's thread, as servers did before; the third also builds a DataFrame for every batch
        servers = {"fast path": {"fast_rows": 64}, "fast, worker thread": {"fast_rows": 64, "inline_rows": 0},
                   "DataFrame path": {"fast_rows": 0, "inline_rows": 0}}
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

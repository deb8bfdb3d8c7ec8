"""Framework overhead: seconds per training epoch of lamina against a hand-written PyTorch loop
that trains the same MLP on the same tensors. Prints both and their ratio (goal: <= 1.10).

Wall seconds per epoch come from lamina's own `training_['history']` and the same clock in the
hand-written loop; the first epoch of each run is skipped; the median is the headline figure and the
fastest epoch is shown too (load from other processes only ever adds time). CPU seconds per epoch:
the process CPU time of a run of `--epochs` epochs less that of a 1-epoch run, over the difference
(setup, the first epoch and the final scoring cancel). On a shared, busy machine all three move
by up to tens of per cent from run to run (the median most); compare several runs, and use
--attribute, which times the parts of one step in turn and is the steadiest.

    python benchmarks/overhead.py            # 100,000 rows x 20 numbers, 5 epochs, 3 repeats
    python benchmarks/overhead.py --quick    # CI smoke test, well under 30 s
    python benchmarks/overhead.py --attribute  # also: CPU microseconds of each part of one step
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

import lamina
import lamina.data
import lamina.features.columns
import lamina.network
from common import lamina_source, machine

LEARNING_RATE = 1e-3


def make_frame(rows: int, columns: int, seed: int) -> pd.DataFrame:
    """Numbers with a linear signal and a binary target."""
    generator = np.random.default_rng(seed)
    values = generator.standard_normal((rows, columns)).astype(np.float32)
    weights = generator.standard_normal(columns)
    logits = values @ weights + generator.standard_normal(rows)
    frame = pd.DataFrame(values, columns=[f"x{i}" for i in range(columns)])
    frame["target"] = (logits > 0).astype(np.int64)
    return frame


def lamina_config(columns: list[str], args: argparse.Namespace, epochs: int) -> dict:
    return {
        "inputs": [{"name": name, "type": "number", "encoding": "plain"} for name in columns],
        "hidden": {"layers": args.layers, "size": args.size, "dropout": 0.0},
        "outputs": [{"name": "target", "type": "binary"}],
        "training": {"epochs": epochs, "batch_size": args.batch_size, "learning_rate": LEARNING_RATE,
                     "early_stopping": None},
        "split": {"ratios": [1.0, 0.0, 0.0]},  # no validation: an epoch is training only
    }


def run_lamina(frame: pd.DataFrame, columns: list[str], args: argparse.Namespace,
               epochs: int) -> tuple[list[float], float, int]:
    model = lamina.Model(lamina_config(columns, args, epochs)).fit(frame, quiet=True)
    history = model.training_["history"]
    parameters = sum(p.numel() for p in model.network_.parameters())
    return [record["seconds"] for record in history], history[-1]["train_loss"], parameters


def hand_network(inputs: int, args: argparse.Namespace) -> nn.Module:
    """What lamina builds for plain numbers: [Linear, BatchNorm1d, ReLU, Dropout] x layers, Linear head."""
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(args.layers):
        layers += [nn.Linear(width, args.size), nn.BatchNorm1d(args.size), nn.ReLU(), nn.Dropout(0.0)]
        width = args.size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def run_hand_written(frame: pd.DataFrame, columns: list[str], args: argparse.Namespace, epochs: int,
                     seed: int = 42) -> tuple[list[float], float, int]:
    """The loop a PyTorch user would write: normalise once, then shuffle and slice every epoch."""
    torch.manual_seed(seed)
    features = torch.from_numpy(frame[columns].to_numpy(dtype=np.float32, copy=True))  # (N, D)
    features = (features - features.mean(0)) / features.std(0, unbiased=False)
    targets = torch.from_numpy(frame["target"].to_numpy(dtype=np.float32, copy=True))  # (N,)
    network = hand_network(len(columns), args)
    optimizer = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(features) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE,
                                                    total_steps=epochs * steps_per_epoch, pct_start=0.25)
    loss_function = nn.BCEWithLogitsLoss()
    seconds, epoch_loss = [], 0.0
    for epoch in range(epochs):
        began = time.perf_counter()
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(features), generator=generator)
        network.train()
        total, rows = 0.0, 0
        for start in range(0, len(features), args.batch_size):
            index = order[start:start + args.batch_size]
            if len(index) < 2:
                continue
            loss = loss_function(network(features[index]).squeeze(1), targets[index])  # (B,)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total, rows = total + loss.item() * len(index), rows + len(index)
        epoch_loss = total / rows
        seconds.append(time.perf_counter() - began)
    return seconds, epoch_loss, sum(p.numel() for p in network.parameters())


def attribute(frame: pd.DataFrame, columns: list[str], args: argparse.Namespace) -> None:
    """Where a training step's time goes: the same batch through lamina's pieces (columns.batches'
    slicing, Network + train.batch_loss) and the hand-written ones, CPU time of this thread."""
    from lamina import features
    from lamina.train import batch_loss

    model = lamina.Model(lamina_config(columns, args, 1))
    inputs = [features.build(feature) for feature in model.config.inputs]
    outputs = [features.build(feature) for feature in model.config.outputs]
    for feature in inputs + outputs:
        feature.fit(frame[feature.config.name])
    table = lamina.data.tensors(frame, inputs, outputs)
    torch.manual_seed(0)
    network = lamina.network.Network(inputs, outputs, model.config.hidden).train()
    hand = hand_network(len(columns), args).train()
    matrix = torch.stack([table["inputs"][name] for name in columns], dim=1)  # (N, D)
    matrix, targets = (matrix - matrix.mean(0)) / matrix.std(0), table["targets"]["target"]
    optimizers = {id(net): torch.optim.AdamW(net.parameters(), lr=1e-6) for net in (network, hand)}
    index = torch.randperm(len(frame), generator=torch.Generator().manual_seed(0))[:args.batch_size]
    batch = {part: {name: tensor[index] for name, tensor in part_table.items()} for part, part_table in table.items()}
    loss_function = nn.BCEWithLogitsLoss()
    steps = math.ceil(len(frame) / args.batch_size)

    def backward(net, loss):
        optimizers[id(net)].zero_grad(set_to_none=True)
        loss.backward()

    def step(net):
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizers[id(net)].step()

    def hand_slices() -> int:
        order = torch.randperm(len(matrix), generator=torch.Generator().manual_seed(0))
        for start in range(0, len(order), args.batch_size):
            rows = order[start:start + args.batch_size]
            matrix[rows], targets[rows]
        return steps

    def costs(ours, theirs, rounds: int = 30, calls: int = 20) -> tuple[float, float]:
        """Microseconds per call of each: blocks of calls taken in turn, the fastest block of each
        kept, so that load from other processes (which only ever adds time) drops out."""
        best = [math.inf, math.inf]
        for round_ in range(rounds):
            for side in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                function = (ours, theirs)[side]
                function()
                began = time.thread_time()
                for _ in range(calls):
                    function()
                best[side] = min(best[side], 1e6 * (time.thread_time() - began) / calls)
        return best[0], best[1]

    parts = [
        ("batch slicing: one epoch's batches, per batch (lamina.features.columns.batches)",
         lambda: sum(1 for _ in lamina.features.columns.batches(table, args.batch_size, torch.Generator().manual_seed(0))),
         hand_slices),
        ("forward + loss + backward", lambda: backward(network, batch_loss(network, batch, outputs)),
         lambda: backward(hand, loss_function(hand(matrix[index]).squeeze(1), targets[index]))),
        ("clip_grad_norm_ + AdamW step", lambda: step(network), lambda: step(hand)),
    ]
    print("\n| part of one training step | lamina us | hand-written us | difference us |")
    print("|---|---:|---:|---:|")
    totals = [0.0, 0.0]
    for position, (label, ours, theirs) in enumerate(parts):
        measured = costs(ours, theirs) if position else [value / steps for value in costs(ours, theirs, 6, 1)]
        totals = [totals[0] + measured[0], totals[1] + measured[1]]
        print(f"| {label} | {measured[0]:.0f} | {measured[1]:.0f} | {measured[0] - measured[1]:+.0f} |")
    with torch.no_grad():
        inputs, names = batch["inputs"], network.input_names

        def input_layer():  # as Network.forward runs it: runs of plain numbers as one block
            return torch.cat([network.blocks[block]([inputs[name] for name in names[start:end]])
                              if block is not None else network.encoders[start](inputs[names[start]])
                              for start, end, block in network.runs], dim=1)

        encoders, _ = costs(input_layer, lambda: (matrix[index] - 0.0) / 1.0)
    print(f"| of which lamina's input layer for {len(columns)} numbers + torch.cat (forward only) | {encoders:.0f} | | |")
    print(f"| total | {totals[0]:.0f} | {totals[1]:.0f} | {totals[0] - totals[1]:+.0f} "
          f"(ratio {totals[0] / totals[1]:.3f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run for a CI smoke test (< 30 s)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5, help="per timed run (plus one 1-epoch run of each)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved L H H L ...")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--attribute", action="store_true", help="also break one training step down by part")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch (and OpenMP) threads; 1 keeps timings stable on a shared, busy machine")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.epochs, args.repeats = 20_000, 3, 1
    if args.epochs < 2:
        parser.error("--epochs must be at least 2")

    torch.set_num_threads(args.threads)  # the same for both loops
    frame = make_frame(args.rows, args.columns, seed=0)
    columns = [c for c in frame.columns if c != "target"]
    print(f"overhead: {args.rows:,} rows x {args.columns} numbers, MLP {args.layers}x{args.size}, "
          f"batch {args.batch_size}, {args.epochs} epochs x {args.repeats} runs each, "
          f"torch {torch.__version__}, {args.threads} threads\n  {machine()}\n  {lamina_source()}")

    names = ("hand-written", "lamina")
    runners = {"lamina": run_lamina, "hand-written": run_hand_written}
    order = [(name, 1) for name in names]  # 1-epoch runs, for the CPU-time difference
    for repeat in range(args.repeats):  # ABBA order so drift in machine speed hits both alike
        order += [(name, args.epochs) for name in (names[::-1] if repeat % 2 == 0 else names)]
    order += [(name, 1) for name in names[::-1]]
    for name in names:  # warm up: first calls pay for lazy initialisation in torch and lamina
        runners[name](frame.iloc[:20 * args.batch_size], columns, args, 1)
    walls = {name: [] for name in names}
    cpu = {(name, epochs): [] for name, epochs in order}
    losses = {name: [] for name in names}
    parameters = {}
    for name, epochs in order:
        began = time.process_time()
        seconds, loss, parameters[name] = runners[name](frame, columns, args, epochs)
        cpu[name, epochs].append(time.process_time() - began)
        if epochs > 1:
            walls[name] += seconds[1:]  # the first epoch warms up
            losses[name].append(loss)
        print(f"  {name:<13} {epochs}-epoch run: {cpu[name, epochs][-1]:.2f} CPU s; wall s per epoch "
              f"{' '.join(f'{s:.2f}' for s in seconds)}; final train loss {loss:.4f}")

    if parameters["lamina"] != parameters["hand-written"]:
        print(f"WARNING: parameter counts differ: {parameters}")
    wall = {name: statistics.median(walls[name]) for name in names}
    fastest = {name: min(walls[name]) for name in names}
    per_epoch = {name: (statistics.mean(cpu[name, args.epochs]) - statistics.mean(cpu[name, 1])) / (args.epochs - 1)
                 for name in names}
    batches = math.ceil(args.rows / args.batch_size)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print()
    print("| loop | wall s/epoch (median) | wall s/epoch (fastest) | CPU s/epoch | ms/batch (median wall) "
          "| parameters | final train loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {wall[name]:.3f} | {fastest[name]:.3f} | {per_epoch[name]:.3f} | "
              f"{1000 * wall[name] / batches:.2f} | {parameters[name]:,} | {statistics.mean(losses[name]):.4f} |")
    ratio = {clock: values["lamina"] / values["hand-written"]
             for clock, values in (("median", wall), ("fastest", fastest), ("CPU", per_epoch))}
    print(f"| **ratio lamina / hand-written** | **{ratio['median']:.3f}** | **{ratio['fastest']:.3f}** | "
          f"**{ratio['CPU']:.3f}** | | | |")
    verdict = "met" if ratio["median"] <= 1.10 else "NOT met"
    print(f"\nratio lamina / hand-written, median wall s/epoch: {ratio['median']:.3f} (goal <= 1.10: {verdict}); "
          f"fastest epochs {ratio['fastest']:.3f}; CPU time {ratio['CPU']:.3f}")
    if args.attribute:
        attribute(frame, columns, args)


if __name__ == "__main__":
    main()

"""The training loop, top to bottom: learning-rate range test, AdamW with a one-cycle or cosine
schedule, gradient clipping, early stopping with the best weights restored, atomic checkpoints
after every epoch, and resume. The same loop runs on the CPU or a GPU, in fp32 or under autocast,
alone or as one of several DistributedDataParallel processes started by torchrun (devices.py)."""
from __future__ import annotations

import copy
import math
import os
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from lamina import artifact, devices
from lamina.config import Training
from lamina.devices import Engine, engine_of
from lamina.errors import ArtifactError, ConfigError
from lamina.features.columns import Stream, batches, row_count
from lamina.metrics import direction

BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)

CHECKPOINT = "checkpoint.pt"
SEQUENCE_BATCH = 128  # rows at once when scoring text outputs: logits are (rows, tokens, vocabulary)
# rows whose batch statistics replace batch normalisation's running averages after each epoch
PRECISE_NORM_ROWS = 8192
# what a checkpoint carries besides the weights and optimiser state
RUN_KEYS = ("epoch", "history", "best", "best_score", "best_epoch", "bad_epochs", "stopped_early",
            "learning_rate", "finder")


def batch_loss(network, batch, outputs) -> torch.Tensor:
    predictions = network(batch["inputs"], batch["targets"])
    total = None
    for feature in outputs:
        loss = feature.loss(predictions[feature.config.name], batch["targets"][feature.config.name])
        if feature.config.weight != 1.0:  # skipped at the usual weight: each op costs time forward and back
            loss = feature.config.weight * loss
        total = loss if total is None else total + loss
    return total


def _plain(output: torch.Tensor) -> torch.Tensor:
    """A raw output as metrics and decoding take it: on the CPU, floats in float32 (autocast gives bf16)."""
    return output.float().cpu() if output.is_floating_point() else output.cpu()


@torch.no_grad()
def predict_raw(network, table, batch_size: int = 4096, engine: Engine | None = None) -> dict[str, torch.Tensor]:
    """The network's raw outputs (logits, normalised values; generated token ids) for every row, on
    the CPU; the rows go to the network's device."""
    engine = engine or engine_of(network)
    if network.training:  # eval() walks every module: a tenth of a millisecond a call, a row's own cost
        network.eval()
    if network.needs_memory:
        batch_size = min(batch_size, SEQUENCE_BATCH)
    parts = []
    for batch in batches(table, batch_size):
        with engine.autocast():
            parts.append({name: _plain(value) for name, value in network(engine.move(batch)["inputs"]).items()})
    return {name: torch.cat([part[name] for part in parts]) for name in network.output_names}


@torch.no_grad()
def measure(network, table, outputs, generate_rows: int | None = 0, engine: Engine | None = None) -> dict:
    """Loss and metrics of every output on a table: {'loss': x, '<output>': {metric: value}}.
    Text outputs are scored from teacher-forced logits, reduced batch by batch by the feature's
    `summary` (whole-table logits would not fit in memory), and also generated freely for
    BLEU/chrF on the first `generate_rows` rows (None: all, 0: none, as while training). Under
    DistributedDataParallel each rank scores its own contiguous share of the rows and the summaries
    are gathered in rank order, so every rank computes the same metrics of all the rows."""
    engine = engine or engine_of(network)
    network.eval()
    total, rows, kept = 0.0, 0, {feature.config.name: [] for feature in outputs}
    for batch in batches(share(table, engine.placement), SEQUENCE_BATCH if network.needs_memory else 4096):
        targets = batch["targets"]
        moved = engine.move(batch)
        with engine.autocast():
            raw = network(moved["inputs"], moved["targets"])
            loss = sum(f.config.weight * f.loss(raw[f.config.name], moved["targets"][f.config.name]) for f in outputs)
        size = row_count(batch)
        total += size * float(loss)
        rows += size
        for feature in outputs:
            name = feature.config.name
            kept[name].append(feature.summary(_plain(raw[name]), targets[name]))
    total, rows = devices.total([total, rows], engine.placement)
    kept = {name: devices.gather(parts, engine.placement) for name, parts in kept.items()}
    result = {"loss": total / max(rows, 1)}
    for feature in outputs:
        name = feature.config.name
        result[name] = feature.metrics(table["targets"][name], _concatenate(kept[name]))
    generating = [feature for feature in outputs if feature.generates]
    if generating and generate_rows != 0:
        part = table if generate_rows is None else head_rows(table, generate_rows)
        generated = predict_raw(network, part, engine=engine)
        for feature in generating:
            name = feature.config.name
            result[name].update(feature.generation_metrics(part["targets"][name], generated[name]))
    return result


def _concatenate(parts: list[torch.Tensor]) -> torch.Tensor:
    """Batches along rows; per-token tensors (B, T, ...) of varying T are padded to the longest."""
    if parts[0].ndim == 3:
        longest = max(part.shape[1] for part in parts)
        parts = [torch.nn.functional.pad(part, (0, 0, 0, longest - part.shape[1])) for part in parts]
    return torch.cat(parts)


def head_rows(table: dict, rows: int) -> dict:
    return {part: {name: column[:rows] for name, column in columns.items()} for part, columns in table.items()}


def share(table: dict, placement) -> dict:
    """This rank's contiguous share of a table's rows (all of them in a single process)."""
    if not placement.distributed:
        return table
    size = row_count(table)
    start, end = size * placement.rank // placement.world, size * (placement.rank + 1) // placement.world
    return {part: {name: column[start:end] for name, column in columns.items()} for part, columns in table.items()}


def find_learning_rate(network, table, outputs, training: Training, engine: Engine | None = None
                       ) -> tuple[float, dict]:
    """A learning-rate range test (Smith 2015; fastai's lr_find): raise the rate exponentially
    over a short run, then pick a rate inside the longest stretch of falling loss (fastai's valley),
    and at least a tenth of the rate of the lowest loss."""
    engine = engine or engine_of(network)
    scaler = devices.gradient_scaler(engine.device, engine.dtype)
    state = copy.deepcopy(network.state_dict())
    steps = 100
    rates = np.geomspace(1e-6, 1.0, steps)
    optimizer = devices.optimizer(network, rates[0], training.weight_decay)
    generator = torch.Generator().manual_seed(training.seed)
    network.train()
    tried, losses, smooth, best = [], [], 0.0, math.inf
    stream = (batch for _ in range(steps) for batch in batches(table, training.batch_size, generator))
    for step, (rate, batch) in enumerate(zip(rates, stream)):
        if row_count(batch) < 2:
            continue
        for group in optimizer.param_groups:
            group["lr"] = float(rate)
        with engine.autocast():
            loss = batch_loss(network, engine.move(batch), outputs)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        smooth = 0.9 * smooth + 0.1 * loss.item()
        value = smooth / (1 - 0.9 ** (step + 1))
        if not math.isfinite(value) or value > 4 * best:
            break
        best = min(best, value)
        tried.append(float(rate))
        losses.append(value)
    network.load_state_dict(state)
    if len(losses) < 3:
        return 1e-3, {"rates": tried, "losses": losses}
    # On a small data set the test's 100 steps are many epochs, so the loss keeps falling from
    # training alone and the valley sits far below the useful rate (a CNN on 1,200 digits: the valley
    # 4.6e-4 reached 0.887 test accuracy in 30 epochs, 3e-3 reached 0.94 in 10). The classic rule,
    # a tenth of the rate of the lowest loss, is a floor under the valley.
    floor = tried[int(np.argmin(losses))] / 10
    return float(min(max(valley(tried, losses), floor, 1e-5), 0.1)), {"rates": tried, "losses": losses}


def valley(rates: list[float], losses: list[float]) -> float:
    """fastai's 'valley' rule: the longest run of falling loss, and a rate two thirds down it."""
    longest = [1] * len(losses)  # longest decreasing subsequence ending at each step
    start, end = 0, 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[i] > longest[end]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    return rates[min(start + int(third) + int(third / 2), len(rates) - 1)]


def make_scheduler(optimizer, training: Training, learning_rate: float, total_steps: int):
    if training.schedule == "one_cycle":
        total_steps = max(total_steps, 4)  # each phase of the cycle needs at least one step
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=total_steps,
                                                   pct_start=max(0.25, 2.0 / total_steps))
    if training.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def save_checkpoint(path: Path, state: dict) -> None:
    """Write-then-rename, so a kill at any moment leaves the previous checkpoint intact; the
    temporary file is named as lamina's others are, so the next run removes it if a kill left it."""
    temporary = path.with_name(artifact.temporary_name(path.name))
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # only still there when writing failed (a full disk)


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint to resume from, or None (with a note) when the run was killed before its
    first epoch ended and there is none: then training starts from the beginning."""
    if not path.is_file():
        warnings.warn(f"no checkpoint at '{path}' to resume from (the run stopped before its first epoch "
                      f"ended, or had finished); training from the beginning", stacklevel=3)
        return None
    try:
        state = torch.load(path, weights_only=True)  # never unpickles arbitrary objects
    except Exception as error:  # torch raises many types for a damaged file
        raise ArtifactError(f"checkpoint '{path}' is damaged ({type(error).__name__}); delete it and "
                            f"train without --resume") from None
    if isinstance(state, dict) and state.get("fingerprint") != fingerprint:
        raise ArtifactError(f"checkpoint '{path}' belongs to another config or data; train without --resume "
                            f"or restore the original config and data")
    if not isinstance(state, dict) or any(key not in state for key in (*RUN_KEYS, "network", "optimizer")):
        raise ArtifactError(f"checkpoint '{path}' is damaged (parts are missing); delete it and train without "
                            f"--resume")
    return state


def improved(score: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return score < best if direction(metric) == "min" else score > best


def monitored(result: dict, metric: str) -> float:
    if metric == "loss":
        return result["loss"]
    output, _, name = metric.rpartition(".")  # output names may themselves hold dots
    available = [f"{o}.{m}" for o, values in result.items() if isinstance(values, dict) for m in values]
    if output not in result or name not in result[output]:
        raise ConfigError(f"training.early_stopping.metric: '{metric}' is not measured; choose 'loss' or one "
                          f"of: {', '.join(available)}")
    return result[output][name]


def train_epoch(network, table, outputs, optimizer, scheduler, training: Training, epoch: int, progress,
                engine: Engine, scaler) -> float:
    """One pass over the training rows (this rank's share of them); returns the mean training loss.
    `network` may be the DistributedDataParallel or compiled wrapper of the network."""
    torch.manual_seed(training.seed + 1000 + epoch)  # dropout noise reproducible per epoch, so resume matches
    generator = torch.Generator().manual_seed(training.seed + epoch)  # the same order on every rank
    placement = engine.placement
    network.train()
    total, rows = 0.0, 0
    for batch in batches(table, rank_batch_size(training, placement), generator, workers=training.workers,
                         shard=(placement.rank, placement.world)):
        size = row_count(batch)
        if size < 2:  # batch normalisation cannot train on a single row
            continue
        with engine.autocast():
            loss = batch_loss(network, engine.move(batch), outputs)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if training.gradient_clip:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(network.parameters(), training.gradient_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        total, rows = total + loss.item() * size, rows + size
        if not progress.disable:  # refresh=False: drawn by update() at most every mininterval, not every batch
            progress.set_postfix(epoch=f"{epoch + 1}/{training.epochs}", loss=f"{total / rows:.4f}", refresh=False)
        progress.update(1)
    total, rows = devices.total([total, rows], placement)
    return total / max(rows, 1)


def rank_batch_size(training: Training, placement) -> int:
    """Each of N processes takes 1/N of a batch, so a step sees `batch_size` rows however many run."""
    return max(1, math.ceil(training.batch_size / placement.world))


@torch.no_grad()
def recompute_batch_norm(network, table, training: Training, epoch: int, engine: Engine | None = None) -> None:
    """Batch normalisation's running mean and variance are exponential averages (momentum 0.1)
    taken while the weights moved. On a small data set, a handful of batches per epoch, they
    still hold much of their initial (0, 1), and in eval mode every layer shrinks its input until
    the network outputs nearly the same for every row. Recompute them for the current weights
    over up to PRECISE_NORM_ROWS training rows, with dropout and augmentation off as evaluation
    sees the data ("precise BN", Wu and Johnson 2021). Under DistributedDataParallel each rank reads
    its share of those rows and the ranks' statistics are averaged, so all keep the same ones."""
    engine = engine or engine_of(network)
    norms = [module for module in network.modules() if isinstance(module, BATCH_NORMS) and module.track_running_stats]
    if not norms:
        return
    network.eval()
    momenta = [module.momentum for module in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # a plain average over the batches below
        module.train()
    # a stream in file order reads only the rows it needs; shuffling it would first fill its whole buffer
    generator = None if isinstance(table, Stream) else torch.Generator().manual_seed(training.seed + 2000 + epoch)
    rows, placement = 0, engine.placement
    for batch in batches(table, rank_batch_size(training, placement), generator, workers=training.workers,
                         shard=(placement.rank, placement.world)):
        if row_count(batch) < 2:  # batch statistics need two rows
            continue
        moved = engine.move(batch)
        with engine.autocast():
            network(moved["inputs"], moved["targets"])
        rows += row_count(batch)
        if rows >= PRECISE_NORM_ROWS / placement.world:
            break
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum
        devices.average([module.running_mean, module.running_var], placement)


def keep_best(run: dict, network, score: float, metric: str, patience: int | None) -> None:
    """Early-stopping bookkeeping: remember the best weights, count epochs without improvement."""
    if improved(score, run["best_score"], metric):
        run.update(best_score=score, best_epoch=run["epoch"], bad_epochs=0,
                   best={key: value.detach().clone() for key, value in network.state_dict().items()})
    else:
        run["bad_epochs"] += 1
    run["stopped_early"] = bool(patience and run["bad_epochs"] >= patience)


def fit(network, train_table, validation_table, outputs, training: Training, *,
        checkpoint_dir: Path | None = None, resume: bool = False, quiet: bool = False,
        fingerprint: str = "", on_epoch: Callable[[dict], None] | None = None, engine: Engine | None = None) -> dict:
    """Train `network` in place on the engine's device; returns the history and what was decided along
    the way. `on_epoch` is called with each epoch's record (its validation metrics among them) once the
    epoch is saved; it may raise to stop the run (a hyperparameter search pruning a trial). Under
    DistributedDataParallel every rank runs this with the same tables: each trains on its share of the
    rows, measures its share of the validation rows, and all make the same decisions; rank 0 writes."""
    engine = engine or Engine(devices.Placement(torch.device("cpu")))
    placement, main = engine.placement, engine.placement.main
    quiet = quiet or not main
    has_validation = validation_table is not None and row_count(validation_table) > 0
    stopping = training.early_stopping if has_validation else None
    metric = stopping.metric if stopping else "loss"
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    if resume and not checkpoint_path:
        raise ConfigError("resume needs the folder of the interrupted run: pass output_dir= (--output)")
    if checkpoint_path and main:
        artifact.remove_leftovers(checkpoint_path.parent)  # from a run or save killed mid-write
    network.to(engine.device)
    if engine.device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in network.modules()):
        network.to(memory_format=torch.channels_last)  # tensor cores read images faster this way
    train_table = devices.pin(train_table, engine.device)
    saved = load_checkpoint(checkpoint_path, fingerprint) if resume else None
    if saved:
        run = {key: saved[key] for key in RUN_KEYS}
    else:
        run = {"epoch": 0, "history": [], "best": None, "best_score": None, "best_epoch": 0, "bad_epochs": 0,
               "stopped_early": False, **choose_learning_rate(network, train_table, outputs, training, engine, quiet)}

    optimizer = devices.optimizer(network, run["learning_rate"], training.weight_decay)
    steps_per_epoch = math.ceil(row_count(train_table) / placement.world / rank_batch_size(training, placement))
    scheduler = make_scheduler(optimizer, training, run["learning_rate"], training.epochs * steps_per_epoch)
    scaler = devices.gradient_scaler(engine.device, engine.dtype)
    if saved:
        network.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
    elif has_validation:  # a bad metric name fails now, not later
        monitored(measure(network, validation_table, outputs, engine=engine), metric)
    stepped = wrap(network, training, placement)

    progress = tqdm(total=training.epochs * steps_per_epoch, initial=run["epoch"] * steps_per_epoch,
                    disable=True if quiet else None, unit="batch", dynamic_ncols=True, leave=False, mininterval=0.5)
    for epoch in range(run["epoch"], training.epochs):
        if run["stopped_early"]:
            break
        began = time.perf_counter()
        record = {"epoch": epoch + 1,
                  "train_loss": train_epoch(stepped, train_table, outputs, optimizer, scheduler, training, epoch,
                                            progress, engine, scaler),
                  "learning_rate": optimizer.param_groups[0]["lr"]}
        run["epoch"] = epoch + 1
        recompute_batch_norm(network, train_table, training, epoch, engine)
        if has_validation:
            record["validation"] = measure(network, validation_table, outputs, engine=engine)
            keep_best(run, network, monitored(record["validation"], metric), metric,
                      stopping.patience if stopping else None)
        record["seconds"] = time.perf_counter() - began
        run["history"].append(record)
        if not quiet:
            tqdm.write(_epoch_line(record, training.epochs, metric))
        if checkpoint_path and main:
            save_checkpoint(checkpoint_path, {**run, "fingerprint": fingerprint, "network": network.state_dict(),
                                              "optimizer": optimizer.state_dict(),
                                              "scheduler": scheduler.state_dict() if scheduler else {}})
        if on_epoch is not None:
            on_epoch(record)
    progress.close()
    if run["best"] is not None:
        network.load_state_dict(run["best"])
    return {key: run[key] for key in ("history", "learning_rate", "finder", "best_epoch", "stopped_early")} | \
        {"monitored": metric}


def choose_learning_rate(network, table, outputs, training: Training, engine: Engine, quiet: bool) -> dict:
    """{'learning_rate', 'finder'}: the configured rate, or the range test's pick. Under
    DistributedDataParallel the test runs on rank 0 alone and its pick is sent to the others."""
    if training.learning_rate != "auto":
        return {"learning_rate": float(training.learning_rate), "finder": {}}
    chosen = None
    if engine.placement.main:
        learning_rate, finder = find_learning_rate(network, table, outputs, training, engine)
        chosen = {"learning_rate": learning_rate, "finder": finder}
        if not quiet:
            tqdm.write(f"learning-rate range test: chose {learning_rate:.2e}")
    return devices.broadcast(chosen, engine.placement)


def wrap(network, training: Training, placement):
    """What the training steps call: the network itself, compiled (training.compile), and wrapped in
    DistributedDataParallel under torchrun (its gradients averaged over the ranks at each step). Its
    weights are the network's own, so evaluation, checkpoints and saving use `network` directly."""
    stepped = network
    if placement.distributed:
        device_ids = [placement.device.index] if placement.device.type == "cuda" else None
        # gradients live in the all-reduce buckets: one copy less per step. No broadcast of the
        # batch-norm buffers before every forward (a collective each step that makes the ranks wait for
        # one another): recompute_batch_norm averages them over the ranks after each epoch, before
        # anything is scored or saved.
        stepped = torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids,
                                                            gradient_as_bucket_view=True, broadcast_buffers=False)
    return torch.compile(stepped) if training.compile else stepped


def _epoch_line(record: dict, epochs: int, metric: str) -> str:
    line = f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f}"
    if "validation" in record:
        line += f"  validation loss {record['validation']['loss']:.4f}"
        if metric != "loss":
            line += f"  {metric} {monitored(record['validation'], metric):.4f}"
    return line + f"  ({record['seconds']:.1f}s)"

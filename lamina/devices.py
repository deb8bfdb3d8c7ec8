"""Where and how the network runs: the device (cuda > mps > cpu), autocast precision and gradient
scaling, and the process group when torchrun starts several processes (DistributedDataParallel on
PyTorch's own torch.distributed: NCCL between GPUs, gloo between CPUs)."""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lamina.errors import ConfigError

TIMEOUT = datetime.timedelta(minutes=30)  # a rank waiting longer for the others has lost them


@dataclass
class Placement:
    """This process's device and its place among the processes torchrun started."""
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def choose_device(setting: str, local_rank: int = 0) -> torch.device:
    """The device `training.device` names; under torchrun 'auto' and 'cuda' take the local rank's GPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"training.device: '{setting}', but this machine has no CUDA GPU that torch can use; "
                              f"use device: auto or cpu")
        index = device.index if device.index is not None else local_rank % torch.cuda.device_count()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"training.device: '{setting}', but this machine has {torch.cuda.device_count()} "
                              f"GPU(s); use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("training.device: 'mps', but this machine has no Apple GPU; use device: auto or cpu")
    return device


def place(setting: str) -> Placement:
    """This process's placement; under torchrun (WORLD_SIZE > 1) the process group is started here,
    once, on the backend that suits the device."""
    if not launched_by_torchrun():
        return Placement(choose_device(setting))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(setting, local_rank)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return Placement(device, dist.get_rank(), dist.get_world_size(), local_rank)


def precision_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `training.precision`, or None for fp32. auto: bf16 on GPUs that support it,
    else fp16 on CUDA; fp32 on the CPU and on mps."""
    if setting == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if setting == "fp16" and device.type == "cpu":
        raise ConfigError("training.precision: fp16 needs a GPU (the CPU computes half precision slowly and "
                          "without gradient scaling); use bf16 or fp32 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The context the forward pass and loss run in."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def gradient_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """fp16 gradients underflow without scaling; bf16 and fp32 do not need it (the scaler is then off)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


FUSED_DEVICES = ("cpu", "cuda", "mps")  # where torch's fused AdamW kernel runs


def optimizer(network: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused into one kernel over all parameters where torch has one (CPU, CUDA, MPS): on one CPU
    thread a step over 2.1 M parameters takes 2.5 ms fused against 14 ms looping per tensor, a cost
    every DistributedDataParallel rank pays in full. Elsewhere (the meta device of the tests) the
    per-tensor loop."""
    parameters = list(network.parameters())
    fused = all(parameter.device.type in FUSED_DEVICES and parameter.is_floating_point() for parameter in parameters)
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=fused or None)


def move(batch: dict, device: torch.device) -> dict:
    """A batch {part: {name: tensor}} on the device; from pinned memory the copy overlaps compute."""
    if device.type == "cpu":
        return batch
    return {part: {name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                   for name, value in columns.items()} for part, columns in batch.items()}


def pin(table: dict, device: torch.device) -> dict:
    """An in-memory table in page-locked memory, once, so batches copy to a CUDA GPU asynchronously."""
    if device.type != "cuda" or not isinstance(table, dict):
        return table
    return {part: {name: value.pin_memory() if isinstance(value, torch.Tensor) else value
                   for name, value in columns.items()} for part, columns in table.items()}


def to_cpu(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.cpu() for name, value in values.items()}


def broadcast(value, placement: Placement):
    """Rank 0's value (any picklable object) on every rank."""
    if not placement.distributed:
        return value
    holder = [value if placement.main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def total(values: list[float], placement: Placement) -> list[float]:
    """Elementwise sums over the ranks (float64, so sums of losses times rows stay exact enough)."""
    if not placement.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64,
                          device=placement.device if placement.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


def average(tensors: list[torch.Tensor], placement: Placement) -> None:
    """Each tensor replaced, in place, by its mean over the ranks (batch normalisation's statistics)."""
    if placement.distributed:
        for tensor in tensors:
            dist.all_reduce(tensor)
            tensor /= placement.world


def barrier(placement: Placement) -> None:
    if placement.distributed:
        dist.barrier()


def finish(placement: Placement) -> None:
    """End the process group started by `place`."""
    if placement.distributed and dist.is_initialized():
        dist.destroy_process_group()


@dataclass
class Engine:
    """How one training or prediction runs: the placement and the autocast dtype (None: fp32)."""
    placement: Placement
    dtype: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        return self.placement.device

    def autocast(self):
        return autocast(self.device, self.dtype)

    def move(self, batch: dict) -> dict:
        return move(batch, self.device)


def engine_for(training, placement: Placement | None = None) -> Engine:
    """The engine `training` (the config's training section) asks for, in this process."""
    placement = placement or place(training.device)
    return Engine(placement, precision_dtype(training.precision, placement.device))


def engine_of(network: torch.nn.Module, precision: str = "fp32") -> Engine:
    """An engine where the network already is: prediction follows the network's device."""
    device = next(network.parameters(), torch.empty(0)).device
    dtype = precision_dtype(precision, device) if precision != "fp16" or device.type != "cpu" else None
    return Engine(Placement(device), dtype)


def gather(values: list, placement: Placement) -> list:
    """Every rank's list, concatenated in rank order, on every rank."""
    if not placement.distributed:
        return values
    parts = [None] * placement.world
    dist.all_gather_object(parts, values)
    return [value for part in parts for value in part]

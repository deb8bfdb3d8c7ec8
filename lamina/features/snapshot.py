"""Tensors derived from a module's weights for prediction only (stacked, folded), computed once and reused
while the weights stay the same: one row's prediction then runs a few ops fewer per layer.

A snapshot is read only with autograd off (`torch.no_grad` or `torch.inference_mode`: prediction and
evaluation) and with the module in eval mode. A forward in training mode or with autograd on drops it;
every training step follows such a forward, so a step can never leave a stale snapshot behind, even with a
fused optimizer that updates weights without bumping their version counters. With autograd off the
snapshot is also rebuilt when a source tensor's storage or version counter changes (load_state_dict, an
in-place edit, a move to another device or dtype), so loading other weights into a model is seen too."""
from __future__ import annotations

from typing import Callable

import torch


class Snapshot:
    """The value `make()` computes from `sources`, kept while they are unchanged (see the module doc)."""

    def __init__(self):
        self.key: tuple | None = None
        self.value = None

    def drop(self) -> None:
        self.key = self.value = None

    def get(self, sources: list[torch.Tensor], make: Callable[[], object]):
        """make()'s value, from the snapshot when the sources have not changed; None (and the snapshot
        dropped) when autograd is on or the forward is being traced for an export: the caller then computes from the weights themselves."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            self.drop()  # (an export traces the weights themselves)
            return None
        key = tuple((source.data_ptr(), source._version) for source in sources)
        if key != self.key:
            self.value, self.key = make(), key
        return self.value

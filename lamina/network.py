"""The network: one encoder per input -> concatenation -> hidden trunk -> one head per output."""
from __future__ import annotations

import torch
from torch import nn

from lamina.config import Hidden
from lamina.errors import ConfigError
from lamina.features.base import HeadContext, Trunk, Unsupported

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


class Block(nn.Module):
    """One hidden layer: linear -> normalisation -> activation -> dropout (+ skip connection)."""

    def __init__(self, input_size: int, hidden: Hidden):
        super().__init__()
        norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(hidden.normalization)
        self.layer = nn.Sequential(
            nn.Linear(input_size, hidden.size),
            norm(hidden.size) if norm else nn.Identity(),
            ACTIVATIONS[hidden.activation](),
            nn.Dropout(hidden.dropout),
        )
        self.residual = hidden.residual and input_size == hidden.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, H)
        return x + self.layer(x) if self.residual else self.layer(x)


class Network(nn.Module):
    """Input layer (encoders), hidden layers (trunk) and output layer (heads) of a lamina model.
    Every head is called as head(hidden, HeadContext): the context carries what some heads also read
    (the input tensors, the token memory of memory-giving inputs, the target while training)."""

    def __init__(self, inputs: list, outputs: list, hidden: Hidden):
        super().__init__()
        # lists, not dicts keyed by column name: column names may hold dots or clash with attributes
        self.input_names = [feature.config.name for feature in inputs]
        self.output_names = [feature.config.name for feature in outputs]
        self.encoders = nn.ModuleList(feature.encoder() for feature in inputs)
        width = sum(encoder.output_size for encoder in self.encoders)
        blocks = [Block(width if layer == 0 else hidden.size, hidden) for layer in range(hidden.layers)]
        self.trunk = nn.Sequential(*blocks)
        self.gives_memory = [feature.gives_memory() for feature in inputs]
        # a generating head (text output) also attends to the per-token states of memory-giving inputs
        memory_sizes = tuple(encoder.state_size for encoder, gives in zip(self.encoders, self.gives_memory) if gives)
        # a locating head (boxes) also reads the spatial feature maps of the inputs that give one
        reads_maps = any(feature.reads_maps() for feature in outputs)
        self.maps = [_spatial_map(feature, encoder) if reads_maps else None
                     for feature, encoder in zip(inputs, self.encoders)]
        trunk = Trunk(size=hidden.size if hidden.layers else width, inputs=list(inputs), memory_sizes=memory_sizes,
                      maps={name: shape for name, shape in zip(self.input_names, self.maps) if shape is not None})
        self.heads = nn.ModuleList(feature.head(trunk) for feature in outputs)
        self.needs_memory = any(feature.generates for feature in outputs)
        self.runs, blocks = self._runs([feature.block() for feature in inputs])
        self.blocks = nn.ModuleList(blocks)  # only non-persistent constants: the saved keys stay per encoder

    def _runs(self, kinds: list) -> tuple[list[tuple[int, int, int | None]], list[nn.Module]]:
        """(first, end, block) per run of encoders: a run of 2+ consecutive inputs whose features give the
        same `block()` class (e.g. plain numbers) is computed by one block module; others run alone."""
        runs, blocks, start = [], [], 0
        while start < len(self.encoders):
            kind = kinds[start]
            end = start + 1
            while kind is not None and end < len(self.encoders) and kinds[end] is kind:
                end += 1
            if end - start > 1:
                blocks.append(kind(list(self.encoders[start:end])))
                runs.append((start, end, len(blocks) - 1))
            else:
                runs.append((start, end, None))
            start = end
        return runs, blocks

    def forward(self, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
        """Outputs per head. `targets` are only read by heads that use them while training (teacher
        forcing, sampled negatives); without them a generating head generates."""
        hidden, memory, maps = self.encode(inputs)
        return {name: head(hidden, HeadContext(inputs, memory, (targets or {}).get(name), maps))
                for name, head in zip(self.output_names, self.heads)}

    def encode(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list, dict]:
        """The last hidden layer (B, H), the token memory of memory-giving inputs when a head needs it, and
        the feature maps (B, C, h, w) by input name when a head reads them."""
        vectors, memory, maps = [], [], {}
        for start, end, block in self.runs:
            if block is not None:
                vectors.append(self.blocks[block]([inputs[name] for name in self.input_names[start:end]]))
                continue
            name, encoder = self.input_names[start], self.encoders[start]
            if self.needs_memory and self.gives_memory[start]:
                vector, states, padding = encoder.encode(inputs[name])  # (B, D), (B, T, S), (B, T)
                memory.append((states, padding))
            elif self.maps[start] is not None:
                vector, maps[name] = encoder.encode_map(inputs[name])  # (B, D), (B, C, h, w)
            else:
                vector = encoder(inputs[name])  # (B, D)
            vectors.append(vector)
        return self.trunk(torch.cat(vectors, dim=1)), memory, maps  # (B, H)


def _spatial_map(feature, encoder: nn.Module):
    """The input's SpatialMap, or None; a map that would not match the picture is a config error."""
    try:
        return feature.gives_map(encoder)
    except Unsupported as error:
        raise ConfigError(str(error)) from None

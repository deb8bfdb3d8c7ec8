"""The network: one encoder per input -> concatenation -> hidden trunk -> one head per output."""
from __future__ import annotations

import torch
from torch import nn

from lamina.config import Hidden
from lamina.errors import ConfigError
from lamina.features.base import HeadContext, Trunk, Unsupported
from lamina.features.snapshot import Snapshot

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
        self.folded = Snapshot()  # for prediction: the batch norm folded into the linear map

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, H)
        if self.training:
            self.folded.drop()
            return x + self.layer(x) if self.residual else self.layer(x)
        linear, norm, activation, _ = self.layer  # dropout is the identity here: two module calls fewer a row
        folded = None
        # (batch-norm statistics are re-estimated with the norm alone in training mode: no fold then)
        if isinstance(norm, nn.BatchNorm1d) and not norm.training and norm.running_mean is not None \
                and norm.weight is not None:
            sources = [linear.weight, linear.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var]
            folded = self.folded.get(sources, lambda: _fold(linear, norm))
        else:
            self.folded.drop()
        if folded is not None:  # prediction: one linear map instead of a linear map and a batch norm
            y = activation(nn.functional.linear(x, *folded))
        else:
            y = activation(norm(linear(x)))
        return x + y if self.residual else y


def _fold(linear: nn.Linear, norm: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (H, D), bias (H,)) of linear followed by the batch norm with its running statistics:
    scale = gamma / sqrt(var + eps); W' = W * scale (by row); b' = (b - mean) * scale + beta."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (H,)
    return linear.weight * scale.unsqueeze(1), (linear.bias - norm.running_mean) * scale + norm.bias


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
        self.kinds = [feature.block() for feature in inputs]
        self.group_encoders(True)

    def group_encoders(self, enabled: bool = True) -> "Network":
        """Compute the inputs whose features give the same `block()` class together, one block module per
        class wherever they stand in the config (the default), or every encoder alone (`enabled` False: the
        reference a block is checked against). The blocks hold only non-persistent constants and read their
        members' weights at each call, so the saved keys stay per encoder and either way loads any model."""
        alone = [kind is None or not enabled or self.maps[position] is not None
                 or (self.needs_memory and self.gives_memory[position]) for position, kind in enumerate(self.kinds)]
        members: dict = {}
        for position, kind in enumerate(self.kinds):
            members.setdefault(position if alone[position] else kind, []).append(position)
        runs, blocks = [], []
        for positions in members.values():  # in the order of each group's first input
            if len(positions) > 1:
                blocks.append(self.kinds[positions[0]]([self.encoders[position] for position in positions]))
            runs.append((tuple(positions), len(blocks) - 1 if len(positions) > 1 else None))
        self.runs = runs  # (input positions, block index or None), each group at its first input's place
        device = next(self.encoders.parameters(), next(self.encoders.buffers(), torch.empty(0))).device
        self.blocks = nn.ModuleList(blocks).to(device)
        # the vectors come out grouped; `order` puts their columns back in the inputs' order, so that the
        # hidden layers read the concatenation they were built for (and trained on, before any grouping)
        starts = [0]
        for encoder in self.encoders:
            starts.append(starts[-1] + encoder.output_size)
        produced = [column for positions, _ in runs for position in positions
                    for column in range(starts[position], starts[position + 1])]
        order = None if produced == sorted(produced) else torch.argsort(torch.tensor(produced, device=device))
        self.register_buffer("order", order, persistent=False)
        return self

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
        for positions, block in self.runs:
            if block is not None:
                vectors.append(self.blocks[block]([inputs[self.input_names[position]] for position in positions]))
                continue
            start = positions[0]
            name, encoder = self.input_names[start], self.encoders[start]
            if self.needs_memory and self.gives_memory[start]:
                vector, states, padding = encoder.encode(inputs[name])  # (B, D), (B, T, S), (B, T)
                memory.append((states, padding))
            elif self.maps[start] is not None:
                vector, maps[name] = encoder.encode_map(inputs[name])  # (B, D), base.FeatureMaps
            else:
                vector = encoder(inputs[name])  # (B, D)
            vectors.append(vector)
        joined = torch.cat(vectors, dim=1)  # (B, D), grouped
        if self.order is not None:
            joined = joined.index_select(1, self.order)  # (B, D) in the inputs' order
        return self.trunk(joined), memory, maps  # (B, H)


def _spatial_map(feature, encoder: nn.Module):
    """The input's SpatialMap, or None; a map that would not match the picture is a config error."""
    try:
        return feature.gives_map(encoder)
    except Unsupported as error:
        raise ConfigError(str(error)) from None

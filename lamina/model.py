"""The network: one encoder per input -> concatenation -> hidden trunk -> one head per output."""
from __future__ import annotations

import torch
from torch import nn

from lamina.config import Hidden

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
    """Input layer (encoders), hidden layers (trunk) and output layer (heads) of a lamina model."""

    def __init__(self, inputs: list, outputs: list, hidden: Hidden):
        super().__init__()
        # lists, not dicts keyed by column name: column names may hold dots or clash with attributes
        self.input_names = [feature.config.name for feature in inputs]
        self.output_names = [feature.config.name for feature in outputs]
        self.encoders = nn.ModuleList(feature.encoder() for feature in inputs)
        width = sum(encoder.output_size for encoder in self.encoders)
        blocks = [Block(width if layer == 0 else hidden.size, hidden) for layer in range(hidden.layers)]
        self.trunk = nn.Sequential(*blocks)
        trunk_size = hidden.size if hidden.layers else width
        self.heads = nn.ModuleList(feature.head(trunk_size) for feature in outputs)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        encoded = torch.cat([encoder(batch[name]) for name, encoder in zip(self.input_names, self.encoders)],
                            dim=1)  # (B, sum of encoder widths)
        hidden = self.trunk(encoded)  # (B, H)
        return {name: head(hidden) for name, head in zip(self.output_names, self.heads)}

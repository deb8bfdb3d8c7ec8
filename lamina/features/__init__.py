"""The registry of data types: the one extension point of lamina.

Adding a data type = one file in this folder implementing `FeatureType` + one line in REGISTRY.
"""
from __future__ import annotations

from typing import Any, Protocol

import pandas as pd
import torch
from pydantic import BaseModel
from torch import nn

from lamina.features import (anomaly, audio, binary, category, id as id_type, image, number, ranking, set as set_type,
                             text, timeseries)


class FeatureType(Protocol):
    """One column of data: its options, learned statistics, input layer and (maybe) output layer.

    Instances are built from a validated config; `fit` learns `stats` (JSON-able) from the
    training split only, and `from_stats` restores them from a saved model.
    """

    config: BaseModel
    stats: dict[str, Any]

    def fit(self, column: pd.Series) -> None: ...
    def transform(self, column: pd.Series) -> torch.Tensor: ...
    def encoder(self) -> nn.Module: ...  # module with an `output_size` attribute


class OutputType(FeatureType, Protocol):
    """A data type that can also be predicted: head, loss, decoding and metrics."""

    def head(self, input_size: int) -> nn.Module: ...
    def target(self, column: pd.Series) -> torch.Tensor: ...
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
    def decode(self, output: torch.Tensor) -> dict[str, Any]: ...
    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]: ...


# name -> module; each module defines `Options` (a pydantic model), `Feature` and `CAN_BE_OUTPUT` (and
# `CAN_BE_INPUT = False` when it is only an output) and `READ_AS`: "number" when a file's column is read
# as numbers, "string" when as text (see read_types).
REGISTRY = {
    "number": number,
    "binary": binary,
    "category": category,
    "set": set_type,
    "image": image,
    "text": text,
    "audio": audio,
    "timeseries": timeseries,
    "id": id_type,
    "ranking": ranking,
    "anomaly": anomaly,
}


def output_types() -> list[str]:
    return [name for name, module in REGISTRY.items() if module.CAN_BE_OUTPUT]


def input_types() -> list[str]:
    return [name for name, module in REGISTRY.items() if getattr(module, "CAN_BE_INPUT", True)]


def read_types(config) -> dict[str, str]:
    """How a file's columns must be read for this config's features: {column: 'string' or 'number'}.
    Every reader (train, evaluate, predict, each chunk of a large file) reads a column the same way,
    so a code like 007 is the text '007' everywhere, never 7 in one chunk and '007' in another."""
    return {feature.name: REGISTRY[feature.type].READ_AS
            for feature in [*config.inputs, *config.outputs]}


def build(config: BaseModel, stats: dict[str, Any] | None = None) -> Any:
    """Make the feature object for a validated feature config, optionally with saved stats."""
    feature = REGISTRY[config.type].Feature(config)
    if stats is not None:
        feature.stats = stats
    return feature

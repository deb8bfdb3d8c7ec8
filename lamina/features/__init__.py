"""The registry of data types: the one extension point of lamina.

Adding a data type = one file in this folder whose `Feature` subclasses `base.Feature` (an input) or
`base.OutputFeature` (also an output) + one line in REGISTRY. base.py's docstrings are the contract.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from lamina.features import (anomaly, audio, binary, boxes, category, date, id as id_type, image, number,
                             ranking, set as set_type, text, timeseries, vector)
from lamina.features.base import Feature

# name -> module; each module defines `Options` (a pydantic model), `Feature`, `CAN_BE_INPUT`, `CAN_BE_OUTPUT`,
# and `READ_AS`: "number" when a file's column is read
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
    "vector": vector,
    "boxes": boxes,
    "date": date,
}


def output_types() -> list[str]:
    return [name for name, module in REGISTRY.items() if module.CAN_BE_OUTPUT]


def input_types() -> list[str]:
    return [name for name, module in REGISTRY.items() if module.CAN_BE_INPUT]


def read_types(config) -> dict[str, str]:
    """How a file's columns must be read for this config's features: {column: 'string' or 'number'}.
    Every reader (train, evaluate, predict, each chunk of a large file) reads a column the same way,
    so a code like 007 is the text '007' everywhere, never 7 in one chunk and '007' in another."""
    return {feature.name: REGISTRY[feature.type].READ_AS
            for feature in [*config.inputs, *config.outputs]}


def build(config: BaseModel, stats: dict[str, Any] | None = None) -> Feature:
    """Make the feature object (a base.Feature) for a validated feature config, optionally with saved stats."""
    feature = REGISTRY[config.type].Feature(config)
    if stats is not None:
        feature.stats = stats
    return feature

"""Helpers shared by the data type files: missing values, label vocabularies, class weights."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lamina.errors import DataError

UNKNOWN = "<unknown>"
MISSING = "<missing>"


def missing_mask(column: pd.Series) -> np.ndarray:
    """True where a value is missing: NaN, None or an empty/blank string."""
    mask = column.isna().to_numpy(dtype=bool, copy=True)
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        try:  # .str gives NaN for cells that are not strings (lists, numbers): those are not blank
            blank = column.str.strip().eq("")
        except (AttributeError, TypeError):  # other things (arrays, lists, bytes): look cell by cell
            blank = column.map(lambda value: isinstance(value, str) and not value.strip())
        mask |= blank.fillna(False).to_numpy(dtype=bool)
    return mask


def raise_if_missing(column: pd.Series, feature_name: str) -> None:
    """The 'missing: error' strategy: name the first row with a missing value."""
    mask = missing_mask(column)
    if mask.any():
        row = column.index[int(np.argmax(mask))]
        raise DataError(
            f"column '{feature_name}' row {row}: missing value and the feature says missing: error; "
            f"fill the value or choose another missing strategy (e.g. missing: drop)"
        )


def as_strings(column: pd.Series) -> pd.Series:
    """Values as stripped strings (vectorised); integral floats print without '.0' so 1 and 1.0 agree."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype(str)
    if pd.api.types.is_numeric_dtype(column):
        present = column.dropna()
        if pd.api.types.is_float_dtype(column) and (present == present.round()).all():
            return column.astype("Int64").astype(str)
        return column.astype(str)
    return column.astype(str).str.strip()


def class_weights(setting: Any, counts: list[int], labels: list[str], feature_name: str) -> list[float] | None:
    """None, 'balanced' (n / (k * count)) or a mapping label -> weight, as a list in label order."""
    if setting is None:
        return None
    if setting == "balanced":
        total, k = sum(counts), len(counts)
        return [total / (k * max(count, 1)) for count in counts]
    unknown = set(setting) - set(labels)
    if unknown:
        raise DataError(
            f"class_weights of '{feature_name}' name labels never seen in training: "
            f"{sorted(unknown)}; labels are {labels}"
        )
    return [float(setting.get(label, 1.0)) for label in labels]


def to_float_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


class LinearHead(nn.Module):
    """An output layer: a linear map from the last hidden layer to `width` values per row, or to
    one value per row (shape (B,)) when `width` is None."""

    def __init__(self, input_size: int, width: int | None = None):
        super().__init__()
        self.squeeze = width is None
        self.linear = nn.Linear(input_size, width or 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, width) or (B,)
        output = self.linear(hidden)
        return output.squeeze(1) if self.squeeze else output


# --- cells read one by one (images, sounds, sequences) ----------------------------------------

class Unreadable(Exception):
    """A cell that holds no usable value (image, sound, sequence); the message says why."""


def is_missing_cell(value: Any) -> bool:
    """None, NA, NaN or a blank string: a missing cell of a column of files or arrays."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def decode_cells(items: list[tuple[Any, Any]], decode, *arguments) -> tuple[list, list[tuple[Any, Any, str]]]:
    """decode(value, *arguments) of each (row, value): the values (None for a missing or unreadable
    cell) and the problems as (row, value, reason)."""
    values, problems = [], []
    for row, value in items:
        decoded = None
        if not is_missing_cell(value):
            try:
                decoded = decode(value, *arguments)
            except Unreadable as error:
                problems.append((row, value, str(error)))
        values.append(decoded)
    return values, problems

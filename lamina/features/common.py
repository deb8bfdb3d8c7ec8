"""Helpers shared by the data type files: missing values, label vocabularies, class weights."""
from __future__ import annotations

import math
import os
import re
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


WHOLE_NUMBER = re.compile(r"([+-]?\d+)\.0+")  # '1.0' as a text cell: how pandas writes 1 in a column with gaps


def as_strings(column: pd.Series) -> pd.Series:
    """Values as stripped strings, each cell on its own: a chunk of a column gives the same strings
    as the whole column, whatever dtype pandas chose for either. Whole numbers read without '.0', so
    1, 1.0 and the text '1.0' (a CSV written from a column with gaps) agree, while '007' stays '007'.
    Missing cells stay missing (callers mask them)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_integer_dtype(column):
        return column.astype(str)
    if pd.api.types.is_float_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0 ** 63)
        strings = column.astype(str).to_numpy(dtype=object, na_value=np.nan)
        strings[whole] = values[whole].astype(np.int64).astype(str)
        return pd.Series(strings, index=column.index, dtype=object)
    if pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty"):
        strings = column.astype(str).str.strip()
        if strings.str.endswith("0").any():  # the cheap test first: this runs per column per call
            strings = strings.str.replace(f"^{WHOLE_NUMBER.pattern}$", r"\1", regex=True)
        return strings
    return column.map(cell_text)  # mixed cells (e.g. JSON numbers and strings): one by one


PLAIN_CELLS = (str, int, float, bool)  # JSON's scalars: the cells the types' encode_rows read themselves


def plain_texts(values: list) -> list | None:
    """A few cells as as_strings writes them, None where missing_mask sees a missing cell (None, NaN, a
    blank string): what encode_rows of a labelled type reads. None when a cell is anything but a JSON
    scalar (an array, a numpy scalar, a Timestamp): then the type's transform reads the cells."""
    texts = []
    for value in values:
        if is_missing_cell(value):
            texts.append(None)
        elif type(value) in PLAIN_CELLS:
            texts.append(cell_text(value))
        else:
            return None
    return texts


def cell_text(value: Any) -> Any:
    """One cell as as_strings writes it: stripped text, whole numbers without '.0'; missing stays."""
    if isinstance(value, str):
        whole = WHOLE_NUMBER.fullmatch(value.strip())
        return whole.group(1) if whole else value.strip()
    if is_missing_cell(value):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and value == round(value) \
            and abs(value) < 2.0 ** 63:
        return str(int(value))
    return str(value).strip()


def describe_cell(value: Any) -> str:
    """A cell as error messages show it: short, and never a memory address (an in-memory file or
    bytes are described by their size)."""
    if isinstance(value, np.generic):  # np.str_('x') reads as 'x'
        value = value.item()
    if isinstance(value, (str, os.PathLike)):
        text = str(value)  # a file path is shown whole; a long text is cut
        return repr(text if len(text) <= 200 else text[:197] + "...")
    if isinstance(value, (bytes, bytearray)):
        return f"in-memory bytes ({len(value)} bytes)"
    if hasattr(value, "getbuffer"):  # io.BytesIO
        return f"an in-memory file ({value.getbuffer().nbytes} bytes)"
    if hasattr(value, "read"):
        return f"an open file ({type(value).__name__})"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"an array of shape {tuple(shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))[:5]}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 60 and " at 0x" not in text else f"a {type(value).__name__}"


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


def regression_loss(kind: str, output: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """The `loss:` option of a regression output (mse, mae or huber), in normalised units."""
    if kind == "huber":
        return nn.functional.huber_loss(output, goal)
    if kind == "mae":
        return nn.functional.l1_loss(output, goal)
    return nn.functional.mse_loss(output, goal)


class LinearHead(nn.Module):
    """An output layer: a linear map from the last hidden layer to `width` values per row, or to
    one value per row (shape (B,)) when `width` is None."""

    def __init__(self, input_size: int, width: int | None = None):
        super().__init__()
        self.squeeze = width is None
        self.linear = nn.Linear(input_size, width or 1)

    def forward(self, hidden: torch.Tensor, context=None) -> torch.Tensor:  # (B, H) -> (B, width) or (B,)
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


# ---- export: the pieces several types' preprocessing.json entries share ----
SAME_AS_TRAINING = "values compared as stripped strings; whole numbers written without '.0'"


def tensor_entry(name: str, dtype: str, shape: list) -> dict:
    """A tensor of an exported graph, as preprocessing.json names it."""
    return {"name": name, "dtype": dtype, "shape": shape}


class Apply(nn.Module):
    """A function of one tensor as a module: the last step of an exported output (a sigmoid, a softmax)."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

"""The `timeseries` data type (input only): multivariate sequences of numbers (sensor readings,
MFCC frames) of varying length in, a 1-D CNN, GRU or transformer encoder out to a vector.

A cell is a nested list or 2-D array, a delimited string, or the path of a CSV/NPY file. Cells
become one float tensor (N, T, C + 1): C raw channels padded with zeros to the longest row, plus
a last channel that is 1 at real time steps and 0 at padding (the mask). Per-channel
normalisation, fitted on the training split, runs in torch inside the encoder, and so do the
per-channel summary statistics (`summary`) set beside the learned encoder's vector.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, base
from lamina.features.common import Unreadable, is_missing_cell, raise_if_missing
from lamina.features.request import RequestField, Widget

CAN_BE_OUTPUT = False
CAN_BE_INPUT = True
READ_AS = "string"  # "1,2;3,4" cells and file paths are text
STEP_SEPARATOR, VALUE_SEPARATOR = ";", ","  # "1,2;3,4": two parts of two values each (see `layout`)


class Options(BaseModel):
    """Options of a timeseries feature."""

    model_config = ConfigDict(extra="forbid")
    layout: Literal["steps", "channels"] = Field(
        "steps", description="what the outer level of a cell holds: steps (a (T, C) array: one row per time step, "
                             "one column per channel; the string '1,2;3,4;5,6' is 3 steps of 2 channels) or "
                             "channels (a (C, T) array; '1,2,3;4,5,6' is 2 channels of 3 steps). A flat list, "
                             "1-D array or string without ';' is one channel")
    encoder: Literal["cnn", "gru", "transformer"] = Field(
        "cnn", description="cnn: 1-D convolutions (dilated, fast); gru: bidirectional GRU; transformer: "
                           "self-attention with sinusoidal positions")
    layers: int = Field(2, ge=1, le=16, description="layers of the encoder")
    width: int = Field(64, ge=4, le=2048, description="width of the encoder's layers")
    heads: int = Field(4, ge=1, le=32, description="attention heads (transformer)",
                       json_schema_extra={"shown_when": {"encoder": ["transformer"]}})
    kernel_size: int = Field(5, ge=1, le=63, description="width in time steps of each convolution (cnn)",
                             json_schema_extra={"shown_when": {"encoder": ["cnn"]}})
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    embedding_size: int = Field(64, ge=1, description="width of the vector the encoder outputs")
    summary: bool = Field(
        True, description="also give the network each channel's mean, std, min, max, first and last value over "
                          "the real steps, and the length (6 C + 1 numbers, standardised with the training "
                          "split's statistics): on short sequences and few rows these often carry most of the "
                          "signal. false: the learned encoder's vector alone. A model saved before this option existed keeps the "
                          "inputs it was trained with")
    max_length: int = Field(1000, ge=1, le=100_000, description="time steps kept per row; longer rows are cut "
                                                                "(and counted in a warning)")
    truncation: Literal["right", "left"] = Field("right", description="right: keep the start of long rows; "
                                                                      "left: keep the end")
    normalize: Literal["channel", "sequence", "none"] = Field(
        "channel", description="channel: subtract each channel's training mean and divide by its std; sequence: "
                               "each row's own mean and std per channel (cepstral mean and variance normalisation: "
                               "removes a speaker's or a sensor's constant offset)")
    nan: Literal["fill", "error"] = Field(
        "fill", description="NaN or infinite values inside a sequence: fill carries the last number forward (the "
                            "first ones back; a channel without numbers takes its training mean); error names the row")
    missing: Literal["fill", "drop", "error"] = Field(
        "fill", description="an empty cell: fill makes it one step of the training means; drop removes the rows "
                            "while training")
    root: str | None = Field(None, description="folder that relative file paths are read from (default: the current "
                                               "folder)")

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if self.encoder == "transformer" and self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        return self


# --- parsing one cell --------------------------------------------------------------------------

def parse_text(text: str) -> list:
    """Inline numbers, '1,2;3,4' -> [[1.0, 2.0], [3.0, 4.0]] ('1,2,3' -> [1.0, 2.0, 3.0]); never a
    path: the server parses request strings with this alone. Raises Unreadable."""
    parts = [part for part in text.strip().strip(STEP_SEPARATOR).split(STEP_SEPARATOR)]
    try:
        rows = [[float(value) for value in part.split(VALUE_SEPARATOR) if value.strip()] for part in parts]
    except ValueError as error:
        raise Unreadable(f"not numbers separated by ',' and ';' ({error})") from None
    return rows if STEP_SEPARATOR in text.strip().strip(STEP_SEPARATOR) else rows[0]


def from_request(value: Any) -> Any:
    """A value sent to a served model: time steps as nested lists, or inline numbers '1,2;3,4' -> a
    (T, C) or (T,) float array. A string is data only, whatever it looks like: never a path."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = parse_text(value)
        except Unreadable:  # the message leaves the string out: it may name a file of the server
            raise ValueError("not numbers separated by ',' and ';'; send a list of time steps (each a list of "
                             "channel values) or a string like '1,2;3,4' (a string is never read as a file on "
                             "the server)") from None
    if not isinstance(value, list):
        raise ValueError("expected a list of time steps (each a list of channel values) or a string like "
                         "'1,2;3,4'")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("ragged or non-numeric: every time step must be a list of the same number of numbers "
                         "(one per channel)") from None
    if array.ndim not in (1, 2) or array.size == 0:
        raise ValueError(f"a list nested {array.ndim} deep with {array.size} numbers; send a non-empty list of "
                         f"time steps, each a list of channel values")
    return array


def _read_file(path: Path) -> np.ndarray:
    """A .npy array, or a CSV/TSV/text table of numbers (one row per line; a header line is skipped)."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        separator = "\t" if path.suffix.lower() == ".tsv" else ","
        table = pd.read_csv(path, sep=separator, header=None, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise Unreadable(f"cannot read '{path}': {str(error).strip().splitlines()[0] if str(error) else error}") from None
    if len(table) and not all(_is_number(value) for value in table.iloc[0]):
        table = table.iloc[1:]  # a header line
    try:
        return table.to_numpy(dtype=np.float64)
    except ValueError:
        raise Unreadable(f"'{path}' holds values that are not numbers") from None


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def parse(value: Any, options: Options) -> np.ndarray:
    """One cell -> (T, C) float64; raises Unreadable. Non-finite values are kept (see `fill_gaps`)."""
    if isinstance(value, (str, os.PathLike)):
        text = str(value).strip()
        path = Path(text).expanduser()
        if options.root and not path.is_absolute():
            path = Path(options.root).expanduser() / path
        if path.suffix.lower() in (".csv", ".tsv", ".txt", ".npy"):
            if not path.is_file():
                raise Unreadable(f"no such file: '{path}'" + ("" if options.root else "; set root: to its folder"))
            value = _read_file(path)
        else:
            value = parse_text(text)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Unreadable("ragged or non-numeric: the inner lists must all hold the same number of numbers "
                         "(one per channel)") from None
    if array.ndim == 0:
        raise Unreadable("a single number is not a sequence: give a list, a 2-D array, 'a,b;c,d' or a file path")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise Unreadable(f"an array of shape {array.shape}; expected 1-D (one channel) or 2-D")
    if options.layout == "channels":
        array = array.T
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise Unreadable("an empty sequence")
    return array


def fill_gaps(array: np.ndarray, means: np.ndarray | None) -> np.ndarray:
    """NaN/inf -> the last number of the channel before it (the first number after it at the start);
    a channel with no number at all takes its training mean (0 while the means are being fitted)."""
    array = np.where(np.isfinite(array), array, np.nan)
    frame = pd.DataFrame(array).ffill().bfill()
    fallback = means if means is not None else np.zeros(array.shape[1])
    return frame.fillna(pd.Series(fallback[:array.shape[1]])).to_numpy()


def describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items"
    shape = getattr(value, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else f"{value!r}"


# --- the feature -------------------------------------------------------------------------------

def read_sequences(column: pd.Series, options: Options, name: str, stats: dict) -> list[np.ndarray | None]:
    """Every cell parsed, checked and with its gaps filled; None for an empty cell."""
    if options.missing == "error":
        raise_if_missing(column, name)
    channels, means = stats.get("channels"), stats.get("mean")
    means = None if means is None else np.asarray(means)
    sequences: list[np.ndarray | None] = []
    for row, value in zip(column.index, column.to_numpy(dtype=object)):
        if is_missing_cell(value):
            sequences.append(None)
            continue
        where = f"column '{name}' row {row}"
        try:
            array = parse(value, options)
        except Unreadable as error:
            raise DataError(f"{where}: cannot read {describe(value)} as a sequence ({error}); fix or remove "
                            f"the row") from None
        if channels is None:
            channels = array.shape[1]  # the first row fixes the channel count; the rest must agree
        if array.shape[1] != channels:
            raise DataError(f"{where}: {array.shape[1]} channels, but the other rows have {channels}; every row "
                            f"needs the same channels (check `layout: {options.layout}`: it says whether rows "
                            f"of a 2-D cell are time steps or channels)")
        if not np.isfinite(array).all():
            if options.nan == "error":
                step = int(np.argmax(~np.isfinite(array).all(axis=1)))
                raise DataError(f"{where}: NaN or infinite value at time step {step}; clean the data or set "
                                f"nan: fill")
            array = fill_gaps(array, means)
        sequences.append(array)
    return sequences


class Feature(base.Feature):
    describes_items = False  # cells read lazily or sequence-shaped: not a ranking's item side
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    def _sequences(self, column: pd.Series) -> list[np.ndarray | None]:
        return read_sequences(column, self.config, self.config.name, self.stats)

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Sequences: nested lists, 2-D arrays or strings '1,2;3,4' (0.9 when lengths vary along one side),
        one-channel lists or strings '1,2,3' of varying length (0.85; of one length a vector is likelier:
        0.45 up to 32 numbers, 0.65 beyond), paths of .csv/.npy files (0.75). The layout: the side whose
        length varies from row to row is time (steps when it is the outer one, channels when the inner);
        when neither varies, the longer side is time."""
        return sniff_sequences(column)

    def fit(self, column: pd.Series) -> None:
        """Channel count, per-channel mean and std of the training split (over all real time steps), and
        with `summary` the mean and std of each summary statistic over the training rows."""
        self.stats = {}
        sequences = [array for array in self._sequences(column) if array is not None]
        if not sequences:
            raise DataError(f"column '{self.config.name}' has no sequences in the training split; fill the "
                            f"column or remove the feature")
        steps = np.concatenate(sequences, axis=0)  # (all steps, C)
        std = steps.std(axis=0)
        std[std < 1e-8] = 1.0  # a constant channel carries no signal; avoid dividing by zero
        self.stats = {"channels": int(steps.shape[1]), "mean": steps.mean(axis=0).tolist(), "std": std.tolist(),
                      "longest": int(max(len(array) for array in sequences))}
        if self.config.summary:
            self.stats["summary"] = fit_summary(self.pad(sequences), self.stats, self.config)

    def transform(self, column: pd.Series) -> torch.Tensor:
        """(N, T, C + 1): raw values padded with zeros, then the mask channel (1 = a real step)."""
        return self.pad(self._sequences(column))

    def pad(self, sequences: list[np.ndarray | None]) -> torch.Tensor:
        """Parsed cells (None: empty, one step of the training means) -> (N, T, C + 1), cut to max_length."""
        options = self.config
        channels, means = self.stats["channels"], np.asarray(self.stats["mean"])
        sequences = [means[None, :] if array is None else array for array in sequences]
        long = sum(1 for array in sequences if len(array) > options.max_length)
        if long:
            warnings.warn(f"column '{options.name}': {long} of {len(sequences)} sequences are longer than "
                          f"max_length {options.max_length} steps and were cut on the {options.truncation}; raise "
                          f"max_length to keep them whole", stacklevel=3)
        length = min(max(len(array) for array in sequences), options.max_length)
        batch = np.zeros((len(sequences), length, channels + 1), dtype=np.float32)  # (N, T, C + 1)
        for position, array in enumerate(sequences):
            array = array[:options.max_length] if options.truncation == "right" else array[-options.max_length:]
            batch[position, :len(array), :channels] = array
            batch[position, :len(array), channels] = 1.0
        return torch.from_numpy(batch)

    def encoder(self) -> nn.Module:
        from lamina.features.timeseries_encoders import Encoder

        return Encoder(self.config, self.stats)

    # ---- classic baseline ----
    def classic_encoder(self, style: str, seed: int) -> Any:
        from lamina.features import classic

        reading = Options(layout=self.config.layout, root=self.config.root)  # cells read as the model reads them
        return classic.Numbers(self.config.name, style, functools.partial(classic_features, options=reading),
                               "summary statistics")

    # ---- explanation: a score per time step ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Steps:
        """At the steps (B, T, C + 1); baseline: the training mean of each channel at every real step,
        padding and the mask channel as they are (so they get no score)."""
        mask = values[..., -1:]  # (B, T, 1)
        means = torch.tensor(self.stats["mean"], dtype=values.dtype).view(1, 1, -1)
        baseline = values.clone()
        baseline[..., :-1] = torch.where(mask > 0, means, values[..., :-1])
        return attribution.Steps.at_input(self.config.name, encoder, values, baseline)

    def baseline_description(self) -> str:
        return "each channel at its training mean at every real time step (padding kept)"

    # ---- serving ----
    def request_field(self) -> RequestField:
        example = [[0.0] * int(len(self.stats.get("mean", [0.0])))] * 4
        as_typed = ";".join(",".join(f"{value:g}" for value in step) for step in example)  # the form sends '0,0;0,0'
        return RequestField(
            Any, "time steps, each a list of channel values (or a string: steps split by ';', channels by ',')",
            example, Widget("textarea", as_typed), nullable=self.config.missing != "error", read=from_request,
            shown=list[list[float]] | list[float] | str)


def fit_summary(batch: torch.Tensor, stats: dict, options: Options, rows: int = 1024) -> dict:
    """Mean and std over the training rows of each summary statistic of a padded batch (N, T, C + 1),
    normalised as the encoder normalises it (timeseries_encoders), `rows` rows at a time; a statistic
    that is constant (up to float32 rounding) gets std 1."""
    from lamina.features.timeseries_encoders import normalised, summary_statistics

    scale = options.normalize != "none"
    mean = torch.tensor(stats["mean"] if scale else [0.0] * stats["channels"], dtype=torch.float32).view(1, 1, -1)
    std = torch.tensor(stats["std"] if scale else [1.0] * stats["channels"], dtype=torch.float32).view(1, 1, -1)
    summaries = torch.cat([summary_statistics(normalised(part, mean, std, options.normalize == "sequence"),
                                              part[..., -1]) for part in batch.split(rows)])
    summaries = summaries.double()  # (N, 6 C + 1)
    std = summaries.std(0, unbiased=False)
    std[std < 1e-3] = 1.0  # on the values' unit scale a statistic varying less is constant, but for rounding
    return {"mean": summaries.mean(0).tolist(), "std": std.tolist()}


def classic_features(column: pd.Series, name: str, options: Options | None = None) -> np.ndarray:
    """For the classic baseline: per channel mean, std, min, quartiles, max, first and last value and
    mean absolute step change, plus the length; NaN for an empty cell. `options`: how cells are read
    (their layout and root; default Options())."""
    sequences = read_sequences(column, options or Options(), name, {})
    channels = max((array.shape[1] for array in sequences if array is not None), default=1)
    rows = np.full((len(sequences), channels * 10 + 1), np.nan)
    for position, array in enumerate(sequences):
        if array is None:
            continue
        change = np.abs(np.diff(array, axis=0)).mean(axis=0) if len(array) > 1 else np.zeros(channels)
        summary = [array.mean(0), array.std(0), array.min(0), *np.quantile(array, [0.25, 0.5, 0.75], axis=0),
                   array.max(0), array[0], array[-1], change]
        rows[position] = np.concatenate([np.stack(summary, axis=1).ravel(), [len(array)]])
    return rows


def _shape(value: Any) -> tuple | None:
    """The (outer, inner) shape of a cell as written (inner None for one channel), or None."""
    if isinstance(value, str):
        if not any(separator in value for separator in (STEP_SEPARATOR, VALUE_SEPARATOR)):
            return None
        try:
            value = parse_text(value)
        except Unreadable:
            return None
    elif not isinstance(value, (list, tuple, np.ndarray)):
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.ndim not in (1, 2) or array.size < 2:
        return None
    return (array.shape[0], array.shape[1] if array.ndim == 2 else None)


def sniff_sequences(column: base.Column) -> base.Sniff | None:
    """Feature.sniff of a timeseries column (see there)."""
    if column.numbers is not None or column.grouped_numbers:
        return None
    texts = column.strings.iloc[:500]
    if column.all_text and texts.str.lower().str.endswith((".csv", ".tsv", ".npy")).mean() > 0.9:
        return base.Sniff(0.75, "paths of sequence files (.csv/.npy)")
    shapes = [_shape(value) for value in column.values.iloc[:500]]
    if not shapes or any(shape is None for shape in shapes):
        return None
    outer = {shape[0] for shape in shapes}
    inner = {shape[1] for shape in shapes}
    if inner == {None}:
        if len(outer) > 1:
            return base.Sniff(0.85, f"one-channel sequences of {min(outer)} to {max(outer)} steps")
        return base.Sniff(0.65 if max(outer) > 32 else 0.45, f"one-channel sequences of {max(outer)} steps")
    if None in inner or (len(outer) > 1 and len(inner) > 1):
        return None
    if len(outer) == 1 and len(inner) == 1:
        steps, channels = (max(outer), max(inner)) if max(outer) >= max(inner) else (max(inner), max(outer))
        layout, confidence = ("steps" if max(outer) >= max(inner) else "channels"), 0.85
        reason = f"sequences of {steps} steps of {channels} channels (the longer side taken as time)"
    else:
        layout, confidence = ("steps" if len(outer) > 1 else "channels"), 0.9
        lengths, channels = (outer, max(inner)) if layout == "steps" else (inner, max(outer))
        reason = f"sequences of {min(lengths)} to {max(lengths)} steps of {channels} channels"
    return base.Sniff(confidence, f"{reason}, layout {layout}", {"layout": layout})

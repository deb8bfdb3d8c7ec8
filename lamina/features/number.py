"""The `number` data type: a real value in, or a real value out (regression).

Normalisation and missing-value filling run inside the encoder module (torch), so training,
export and serving share one implementation.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, base, classic, plots
from lamina.features.number_block import Block, log_scale
from lamina.features.request import RequestField, Widget, empty_is_missing
from lamina.features.common import (LinearHead, describe_cell, missing_mask, raise_if_missing, tensor_entry,
                                    regression_loss, to_float_tensor)

CAN_BE_OUTPUT = True
CAN_BE_INPUT = True
READ_AS = "number"  # a file's column is left to the reader's number parsing (parse() checks each cell)


class Options(BaseModel):
    """Options of a number feature."""

    model_config = ConfigDict(extra="forbid")
    normalize: Literal["zscore", "minmax", "log", "none"] = Field(
        "zscore", description="zscore, minmax, log (sign*log1p then zscore, for heavy tails) or none")
    encoding: Literal["plain", "bins", "periodic"] = Field(
        "bins", description="plain: the normalised value; bins: piecewise-linear encoding over quantile bins "
                            "fitted on the training split; periodic: learned sin/cos features (both help MLPs "
                            "on tabular data, Gorishniy et al. 2022)",
        json_schema_extra={"shown_when": {"role": ["input"]}})
    frequencies: int = Field(16, ge=1, le=256, description="number of learned frequencies for encoding: periodic",
                             json_schema_extra={"shown_when": {"role": ["input"], "encoding": ["periodic"]}})
    sigma: float = Field(0.1, gt=0, description="initial scale (standard deviation) of the frequencies for encoding: "
                                                "periodic, per normalised unit; the option that matters most: try "
                                                "0.01 to 100 (30 on adult)",
                         json_schema_extra={"shown_when": {"role": ["input"], "encoding": ["periodic"]}})
    bins: int = Field(48, ge=2, le=256, description="number of quantile bins for encoding: bins (fewer where the "
                                                    "column has fewer distinct values)",
                      json_schema_extra={"shown_when": {"role": ["input"], "encoding": ["bins"]}})
    embedding_size: int = Field(16, ge=0, description="with encoding bins or periodic, a learned linear+ReLU "
                                                      "layer of this width over them (0: use them as they are)",
                                json_schema_extra={"shown_when": {"role": ["input"], "encoding": ["bins", "periodic"]}})
    missing: Literal["mean", "median", "constant", "drop", "error"] = Field(
        "mean", description="how to fill missing values; drop removes the rows while training",
        json_schema_extra={"shown_when": {"role": ["input"]}})  # rows missing an output's value are always left out
    fill_value: float = Field(0.0, description="the value used by missing: constant",
                              json_schema_extra={"shown_when": {"role": ["input"], "missing": ["constant"]}})
    loss: Literal["mse", "huber", "mae"] = Field("mse", description="loss when this is an output",
                                                 json_schema_extra={"shown_when": {"role": ["output"]}})


def parse(column: pd.Series, name: str) -> np.ndarray:
    """Floats with NaN for missing; a value that is present but not a number is an error."""
    _refuse_booleans(column, name)
    numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(numbers) & ~missing_mask(column)
    if bad.any():
        position = int(np.argmax(bad))
        raise DataError(
            f"column '{name}' row {column.index[position]}: {column.iloc[position]!r} is not a number; "
            f"fix the value or declare the column with another type (e.g. type: category)"
        )
    if np.isinf(numbers).any():
        position = int(np.argmax(np.isinf(numbers)))
        raise DataError(f"column '{name}' row {column.index[position]}: infinite value; replace it")
    return numbers


def _refuse_booleans(column: pd.Series, name: str) -> None:
    """true/false (JSON booleans, a DataFrame of bools) are not numbers, though pandas would read
    them as 1 and 0: a yes/no column declared as a number is a mistake in the config."""
    if pd.api.types.is_bool_dtype(column):
        flags = ~missing_mask(column)
    elif column.dtype == object:
        flags = column.map(lambda value: isinstance(value, (bool, np.bool_))).to_numpy(dtype=bool)
    else:
        return
    if flags.any():
        position = int(np.argmax(flags))
        raise DataError(f"column '{name}' row {column.index[position]}: {describe_cell(column.iloc[position])} is a "
                        f"true/false value, not a number; declare the column type: binary, or write the values as "
                        f"numbers")


class Normalize(nn.Module):
    """Fill missing values, then scale: the numeric preprocessing, written once, in torch."""

    def __init__(self, stats: dict, normalize: str):
        super().__init__()
        self.normalize = normalize
        self.fill = float(stats["fill"])  # a constant of the graph, like the buffers below
        self.register_buffer("shift", torch.tensor(float(stats["shift"])))
        self.register_buffer("scale", torch.tensor(float(stats["scale"])))
        # (x - shift) / scale as one fused multiply-add: this runs for every column of every batch
        self.register_buffer("factor", 1.0 / self.scale)
        self.register_buffer("offset", -self.shift / self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,) -> (B,)
        x = torch.nan_to_num(x, nan=self.fill)
        if self.normalize == "log":
            x = log_scale(x)
        return torch.addcmul(self.offset, x, self.factor)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        x = z * self.scale + self.shift
        return torch.sign(x) * torch.expm1(torch.abs(x)) if self.normalize == "log" else x


class Denormalize(nn.Module):
    """Normalize undone, as a module: an exported number output in the data's units."""

    def __init__(self, normalize: Normalize):
        super().__init__()
        self.normalize = normalize

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B,) -> (B,)
        return self.normalize.inverse(z)


class Encoder(nn.Module):
    """Input layer of a number: normalised value, or piecewise-linear bins, plus a missing flag."""

    def __init__(self, options: Options, stats: dict):
        super().__init__()
        self.normalize = Normalize(stats, options.normalize)
        self.encoding = options.encoding  # a plain attribute: branching on buffers costs a lookup per batch
        self.flag_missing = bool(stats["has_missing"])
        edges = torch.tensor(stats["edges"], dtype=torch.float32) if options.encoding == "bins" else None
        self.register_buffer("left", edges[:-1] if edges is not None else None)
        self.register_buffer("width", (edges[1:] - edges[:-1]).clamp_min(1e-9) if edges is not None else None)
        width = len(stats["edges"]) - 1 if edges is not None else 1
        self.embed = None
        self.frequencies = None
        if options.encoding == "periodic":
            self.frequencies = nn.Parameter(torch.randn(options.frequencies) * options.sigma)
            width = 2 * options.frequencies
        if (edges is not None or self.frequencies is not None) and options.embedding_size:
            self.embed = nn.Sequential(nn.Linear(width, options.embedding_size), nn.ReLU())
            width = options.embedding_size
        self.output_size = width + int(self.flag_missing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, output_size)
        z = self.normalize(x).unsqueeze(1)  # (B, 1)
        if self.encoding == "plain":
            encoded = z
        elif self.encoding == "periodic":
            angle = 2 * torch.pi * z * self.frequencies  # (B, F)
            encoded = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)  # (B, 2F)
        else:
            ratio = (z - self.left) / self.width  # (B, bins)
            if ratio.shape[1] == 1:
                encoded = ratio
            else:  # first bin open below, last open above (Gorishniy et al. 2022)
                encoded = torch.cat([ratio[:, :1].clamp(max=1.0), ratio[:, 1:-1].clamp(0.0, 1.0),
                                     ratio[:, -1:].clamp(min=0.0)], dim=1)
        if self.embed is not None:
            encoded = self.embed(encoded)  # (B, embedding_size)
        if self.flag_missing:
            encoded = torch.cat([encoded, torch.isnan(x).float().unsqueeze(1)], dim=1)
        return encoded


def squared_error(piece: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, 1), (B,) -> (B,)
    return (piece.squeeze(1) - value) ** 2


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """At most bins + 1 increasing edges for the piecewise-linear encoding: the quantiles of the values.
    Where many rows share one value, quantiles coincide and the bins collapse: capital gains are 0 in 92%
    of adult's rows, so 16 quantile bins became 2 and every gain above 0 was one straight line, where a
    gradient-boosted tree cuts it at the amounts that matter. The bins lost that way are spread over the
    distinct values instead (their quantiles), so the rest of the range keeps its resolution (adult, the
    whole table, 16 bins, seeds 0 and 1: test ROC AUC 0.918 and 0.926 against 0.909 and 0.916 with the
    plain quantiles; docs/benchmarks.md, section 20)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    if 2 <= edges.size < bins + 1:
        # the distinct values' quantiles 0 and 1 are the edges' ends: bins + 1 - edges.size new ones at most,
        # each a value of the column (no edge between two neighbouring values that no row lies between)
        extra = np.quantile(np.unique(values), np.linspace(0, 1, bins + 3 - edges.size), method="inverted_cdf")
        edges = np.unique(np.concatenate([edges, extra]))
    return edges


class Feature(base.OutputFeature):
    MAIN_METRIC = "rmse"
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Numbers: 0.7, a fallback that a more particular reading (two values, a target's few whole-number
        classes, ids, dates) beats; a number column with few distinct values stays a number. Skewed
        positive numbers get normalize: log; whole numbers all different under an id's name (a row
        number) are left out."""
        numbers = column.numbers
        if numbers is None:
            return None
        if column.named_like_id and column.distinct == len(numbers) and (numbers == np.round(numbers)).all():
            return None
        skewed = numbers.min() >= 0 and abs(float(pd.Series(numbers).skew())) > 2.0
        return base.Sniff(0.7, "numbers" + (" (skewed: log scale)" if skewed else ""),
                          {"normalize": "log"} if skewed else {})

    def fit(self, column: pd.Series) -> None:
        options = self.config
        values = parse(column, options.name)
        present = values[~np.isnan(values)]
        if present.size == 0:
            raise DataError(f"column '{options.name}' has no values in the training split; "
                            f"remove the feature or fill the column")
        fill = {"mean": present.mean(), "median": np.median(present),
                "constant": options.fill_value}.get(options.missing, present.mean())
        scaled = np.sign(present) * np.log1p(np.abs(present)) if options.normalize == "log" else present
        if options.normalize in ("zscore", "log"):
            shift, scale = scaled.mean(), scaled.std()
        elif options.normalize == "minmax":
            shift, scale = scaled.min(), scaled.max() - scaled.min()
        else:
            shift, scale = 0.0, 1.0
        scale = scale if scale > 1e-12 else 1.0
        edges = quantile_edges((scaled - shift) / scale, options.bins)
        if edges.size < 2:
            edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
        self.stats = {
            "fill": float(fill), "shift": float(shift), "scale": float(scale),
            "mean": float(present.mean()), "std": float(present.std()),
            "min": float(present.min()), "max": float(present.max()),
            "edges": [float(edge) for edge in edges],
            "has_missing": bool(np.isnan(values).any()),
        }

    def transform(self, column: pd.Series) -> torch.Tensor:
        if self.config.missing == "error":
            raise_if_missing(column, self.config.name)
        return to_float_tensor(parse(column, self.config.name))  # (N,), NaN where missing

    def encode_rows(self, values: list) -> torch.Tensor:
        """JSON numbers and None as transform reads them (float64 rounded to float32, NaN where missing);
        anything else (text, booleans, infinities, 'missing: error' with a gap) is transform's to read or refuse."""
        numbers, refuses_gaps = [], self.config.missing == "error"
        for value in values:  # plain Python, no numpy: a one-row call would spend more in numpy than here
            kind = type(value)
            if kind is float or (kind is int and abs(value) < 2 ** 53):
                number = float(value)
                if math.isinf(number) or (refuses_gaps and math.isnan(number)):
                    return self.transform(pd.Series(values))
                numbers.append(number)
            elif value is None and not refuses_gaps:
                numbers.append(math.nan)
            else:
                return self.transform(pd.Series(values))
        return torch.tensor(numbers, dtype=torch.float32)  # (N,), NaN where missing; rounded as to_float_tensor

    def reconstruction(self) -> base.Reconstruction:
        """An anomaly score rebuilds the normalised number; its error is the squared difference."""
        return base.Reconstruction(1, squared_error, Normalize(self.stats, self.config.normalize))

    def encoder(self) -> nn.Module:
        return Encoder(self.config, self.stats)

    def block(self) -> type | None:
        """Number columns, whatever their encoding, are computed together by one Block."""
        return Block

    # --- as an output: regression in normalised units, decoded back to the user's units ---
    def head(self, trunk: base.Trunk) -> nn.Module:
        return LinearHead(trunk.size)

    def target(self, column: pd.Series) -> torch.Tensor:
        return to_float_tensor(parse(column, self.config.name))

    def _normalize(self) -> Normalize:
        return Normalize(self.stats, self.config.normalize)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return regression_loss(self.config.loss, output, self._normalize()(target))

    def decode(self, output: torch.Tensor) -> dict:
        return {self.config.name: self._normalize().inverse(output).detach().numpy()}

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        from sklearn import metrics as skm

        truth = target.numpy()
        predicted = self.decode(output)[self.config.name]
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(truth, predicted))),
            "mae": float(skm.mean_absolute_error(truth, predicted)),
            "r2": float(skm.r2_score(truth, predicted)),
        }

    # ---- classic baseline and comparison ----
    def classic_encoder(self, style: str, seed: int) -> classic.Numbers:
        description = "value as is (NaN kept)" if style == classic.TREE else "standardised, missing flag"
        return classic.Numbers(self.config.name, style, parse, description)

    def stats_mismatch(self, column: pd.Series) -> str | None:
        """Other rows of the same count give another mean than the one learned."""
        if "mean" not in self.stats:
            return None
        values = parse(column, self.config.name)
        mean = float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")
        if np.isclose(mean, self.stats["mean"], rtol=1e-9, atol=1e-12):
            return None
        return (f"column '{self.config.name}' of its training rows has mean {mean:.6g}, the model learned "
                f"{self.stats['mean']:.6g}")

    def classic_task(self) -> classic.Task:
        return classic.Task("regress")

    def classic_raw(self, scores: np.ndarray) -> torch.Tensor:
        return self._normalize()(torch.from_numpy(scores.astype(np.float32)))

    def bootstrap_metric(self) -> tuple:
        return (lambda raw: self.decode(raw)[self.config.name].astype(np.float64)), classic.rmse

    # ---- serving ----
    def request_field(self) -> RequestField:
        stats, example = self.stats, round(self.stats["mean"], 4)
        return RequestField(
            float, f"a number; training mean {stats['mean']:.4g}, range {stats['min']:.4g} to {stats['max']:.4g}",
            example, Widget("number", example), nullable=self.config.missing != "error", read=empty_is_missing,
            dtype="float64")

    def prediction_summary(self) -> dict:
        stats = self.stats
        return {"predicts": f"predicts the number '{self.name}' (training values {stats['min']:.4g} to "
                            f"{stats['max']:.4g}, mean {stats['mean']:.4g})"}

    def served_metadata(self) -> dict:
        return {"statistics": {key: self.stats[key] for key in ("mean", "std", "min", "max")}}

    # ---- export: filling and normalisation run inside the graph ----
    def export_entry(self) -> dict:
        return {"tensor": tensor_entry(self.config.name, "float32", ["rows"]),
                "preprocess": {"encoding": "number",
                               "value": "the number; NaN where missing", "inside_the_model": "missing-value filling "
                               f"and '{self.config.normalize}' normalisation", "stats": self.stats}}

    def export_examples(self) -> list:
        return [self.stats["mean"], self.stats["min"]]

    def export_output(self) -> nn.Module:
        return Denormalize(self._normalize())

    def export_output_entry(self) -> dict:
        return {"tensor": tensor_entry(self.config.name, "float32", ["rows"]),
                "read": "the predicted value in the data's units"}

    # ---- explanation and report ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        return attribution.Point.at_output(self.config.name, encoder, values,
                                           torch.full((len(values),), self._baseline_value()))

    def _baseline_value(self) -> float:
        """The training mean; with normalize: log, the mean on the log scale (for a skewed column such as
        capital gains, mostly 0 with a few large values, the plain mean is a value hardly anyone has)."""
        stats = self.stats
        if self.config.normalize == "log":
            return float(np.sign(stats["shift"]) * np.expm1(abs(stats["shift"])))
        return float(stats["mean"])

    def baseline_description(self) -> str:
        return "the training mean (with normalize: log, the mean on the log scale)"

    def explained_score(self, label: int | None) -> str:
        return f"{self.config.name} in normalised units (the head's output before de-normalising)"

    def evaluation_data(self, rows: pd.DataFrame, predicted: pd.DataFrame, inputs: list) -> dict:
        name = self.config.name
        return {"type": self.config.type, "truth": plots.floats(pd.to_numeric(rows[name])),
                "predicted": plots.floats(predicted[name])}

    def report_plots(self, data: dict) -> list[str]:
        """Predicted against true, and a histogram of the residuals."""
        truth, predicted = np.array(data["truth"]), np.array(data["predicted"])
        figure, axes = plots.figure()
        axes.scatter(truth, predicted, s=6, alpha=0.4)
        low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
        axes.plot([low, high], [low, high], color="grey", linestyle=":")
        axes.set(xlabel="true", ylabel="predicted", title="predicted against true")
        first = plots.png(figure)
        figure, axes = plots.figure()
        axes.hist(predicted - truth, bins=40)
        axes.set(xlabel="predicted - true", ylabel="rows", title="residuals")
        return [first, plots.png(figure)]


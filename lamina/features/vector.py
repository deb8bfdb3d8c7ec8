"""The `vector` data type: a fixed-length numeric vector per cell (a robot's observation, continuous
actions), in or out (multi-output regression). A cell is a list, tuple or array of numbers, or a string
"1.0,2.0,3.5" ("[1.0, 2.0]" and numpy's printed "[1. 2.]" too); normalisation runs in torch, once.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, base, classic, plots
from lamina.features.common import LinearHead, describe_cell, is_missing_cell, missing_mask, raise_if_missing, \
    tensor_entry, regression_loss, to_float_tensor
from lamina.features.request import RequestField, Widget

CAN_BE_OUTPUT = True
CAN_BE_INPUT = True
READ_AS = "string"  # a file's cell "1,2,3" stays one text (a number reader would refuse it); lists stay lists
HOW_TO_WRITE = ("write each cell as finite numbers separated by ',' (e.g. '1.0,2.0,3.5') or as a list of numbers, "
                "and leave it empty where the vector is missing")


class Options(BaseModel):
    """Options of a vector feature."""

    model_config = ConfigDict(extra="forbid")
    missing: Literal["fill", "drop", "error"] = Field(
        "fill", description="fill: a missing cell takes the training mean of each component; drop removes the rows "
                            "while training; error refuses them", json_schema_extra={"shown_when": {"role": ["input"]}})
    normalize: Literal["standard", "none"] = Field(
        "standard", description="standard: each component scaled by its training mean and std; none: as it is")
    embedding_size: int | None = Field(None, ge=1, description="as an input, a learned linear+ReLU layer of this "
                                                               "width over the components (default: none, the "
                                                               "normalised components go to the hidden layers)")
    loss: Literal["mse", "mae", "huber"] = Field("mse", description="loss when this is an output, in normalised units",
                                                 json_schema_extra={"shown_when": {"role": ["output"]}})


def components(value) -> np.ndarray:
    """One present cell -> its components as a (L,) float64 array; ValueError saying what is wrong."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, np.ndarray) and value.dtype == bool) or \
            (isinstance(value, (list, tuple)) and any(isinstance(item, (bool, np.bool_)) for item in value)):
        raise ValueError("holds true/false values, not numbers")
    if isinstance(value, str):
        inner = value.strip().removeprefix("[").removesuffix("]")
        value = [piece.strip() for piece in (inner.split(",") if "," in inner else inner.split())]
    elif isinstance(value, (int, float, np.number)):
        value = [value]  # a lone number is a vector of one component
    elif not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError("is not a list of numbers")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("is not a list of numbers (a component is not a number, or a list is nested)") from None
    if array.ndim != 1:
        raise ValueError(f"is nested {array.ndim} deep; a cell is one flat list of numbers")
    if array.size == 0:
        raise ValueError("has no components")
    if not np.isfinite(array).all():
        raise ValueError(f"has a NaN or infinite component (component {int(np.argmax(~np.isfinite(array)))})")
    return array


def parse(column: pd.Series, name: str, length: int | None = None) -> np.ndarray:
    """The column as (N, L) float64 components, a row of NaN where the cell is missing. Every present
    cell must have `length` components (None: as many as the first present cell)."""
    gone = missing_mask(column)
    cells, present = column.to_numpy(dtype=object), np.flatnonzero(~gone)
    expected = "as the model learned in training" if length is not None else None
    arrays = []
    for position in present:
        try:
            array = components(cells[position])
        except ValueError as error:
            raise DataError(f"column '{name}' row {column.index[position]}: {describe_cell(cells[position])} "
                            f"{error}; {HOW_TO_WRITE}") from None
        if length is None:
            length, expected = array.size, f"as row {column.index[position]} has"
        if array.size != length:
            raise DataError(f"column '{name}' row {column.index[position]}: {array.size} components, but a vector "
                            f"column has one length: {length}, {expected}; fix the cell, or leave it empty for a "
                            f"missing vector")
        arrays.append(array)
    values = np.full((len(column), length or 0), np.nan)
    if arrays:
        values[present] = np.stack(arrays)
    return values


def classic_components(column: pd.Series, name: str) -> np.ndarray:
    """For the classic baseline (module level, so a fitted baseline pickles): the components as columns."""
    return parse(column, name)


class Normalize(nn.Module):
    """Fill a missing row with the training means, then scale each component: written once, in torch."""

    def __init__(self, stats: dict):
        super().__init__()
        self.register_buffer("fill", torch.tensor(stats["mean"], dtype=torch.float32))  # (L,)
        self.register_buffer("shift", torch.tensor(stats["shift"], dtype=torch.float32))  # (L,)
        self.register_buffer("scale", torch.tensor(stats["scale"], dtype=torch.float32))  # (L,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L)
        return (torch.where(torch.isnan(x), self.fill, x) - self.shift) / self.scale

    def inverse(self, z: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L)
        return z * self.scale + self.shift


class Denormalize(nn.Module):
    """Normalize undone, as a module: an exported vector output in the data's units."""

    def __init__(self, normalize: Normalize):
        super().__init__()
        self.normalize = normalize

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L)
        return self.normalize.inverse(z)


class Encoder(nn.Module):
    """Input layer of a vector: the normalised components (optionally a linear+ReLU layer over them),
    plus a missing flag when training rows had missing cells."""

    def __init__(self, options: Options, stats: dict):
        super().__init__()
        self.normalize = Normalize(stats)
        self.flag_missing = bool(stats["has_missing"])
        width = int(stats["length"])
        self.embed = None
        if options.embedding_size:
            self.embed = nn.Sequential(nn.Linear(width, options.embedding_size), nn.ReLU())
            width = options.embedding_size
        self.output_size = width + int(self.flag_missing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, output_size)
        encoded = self.normalize(x)  # (B, L)
        if self.embed is not None:
            encoded = self.embed(encoded)  # (B, embedding_size)
        if self.flag_missing:  # a missing row is all NaN: its first component says so
            encoded = torch.cat([encoded, torch.isnan(x[:, :1]).float()], dim=1)
        return encoded


class Feature(base.OutputFeature):
    MAIN_METRIC = "rmse"
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    @property
    def length(self) -> int:
        return int(self.stats["length"])

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Lists of numbers of one length, or texts '1.0,2.0,3.5' (no ';'): 0.8 up to 32 numbers, 0.6
        beyond (a one-channel sequence is then likelier). Lengths that vary make a sequence, not a vector."""
        nested = column.share(lambda value: (isinstance(value, str) and ";" in value) or
                              (isinstance(value, np.ndarray) and value.ndim != 1))
        if column.numbers is not None or nested or column.grouped_numbers:
            return None
        lengths = set()
        for value in column.values.iloc[:500]:
            try:
                lengths.add(components(value).size)
            except ValueError:
                return None
        if len(lengths) != 1 or lengths == {1}:
            return None
        length = lengths.pop()
        return base.Sniff(0.8 if length <= 32 else 0.6, f"lists of {length} numbers")

    def fit(self, column: pd.Series) -> None:
        name = self.config.name
        values = parse(column, name)
        present = values[~np.isnan(values).any(axis=1)]  # (N, L)
        if len(present) == 0:
            raise DataError(f"column '{name}' has no values in the training split; remove the feature or fill the "
                            f"column")
        mean, std = present.mean(axis=0), present.std(axis=0)
        standard = self.config.normalize == "standard"
        self.stats = {
            "length": int(values.shape[1]), "mean": mean.tolist(), "std": std.tolist(),
            "min": present.min(axis=0).tolist(), "max": present.max(axis=0).tolist(),
            "shift": (mean if standard else np.zeros_like(mean)).tolist(),
            "scale": (np.where(std > 1e-12, std, 1.0) if standard else np.ones_like(std)).tolist(),
            "has_missing": bool(len(present) < len(values)),
        }

    def transform(self, column: pd.Series) -> torch.Tensor:
        if self.config.missing == "error":
            raise_if_missing(column, self.config.name)
        return to_float_tensor(parse(column, self.config.name, self.length))  # (N, L), NaN rows where missing

    def encode_rows(self, values: list) -> torch.Tensor:
        """As transform for cells that are JSON lists of finite numbers of the learned length, or missing;
        any other cell (text, arrays, a wrong length, 'missing: error' with a gap) is transform's to read or refuse."""
        length, rows = self.length, []
        for value in values:
            kind = type(value)
            if is_missing_cell(value):
                if self.config.missing == "error":
                    return self.transform(pd.Series(values))
                rows.append([float("nan")] * length)
            elif kind is list and len(value) == length and all(
                    (type(item) is float and abs(item) < float("inf")) or (type(item) is int and abs(item) < 2 ** 53)
                    for item in value):
                rows.append([float(item) for item in value])
            else:
                return self.transform(pd.Series(values))
        return torch.tensor(rows, dtype=torch.float32).reshape(len(values), length)  # (N, L)

    def encoder(self) -> nn.Module:
        return Encoder(self.config, self.stats)

    # --- as an output: regression per component in normalised units, decoded to the user's units ---
    def head(self, trunk: base.Trunk) -> nn.Module:
        return LinearHead(trunk.size, self.length)  # (B, L)

    def target(self, column: pd.Series) -> torch.Tensor:
        return to_float_tensor(parse(column, self.config.name, self.length))  # (N, L)

    def _normalize(self) -> Normalize:
        return Normalize(self.stats)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return regression_loss(self.config.loss, output, self._normalize().to(output.device)(target))  # (B, L)

    def decode(self, output: torch.Tensor) -> dict:
        """{name: one list of floats per row, in the data's units}."""
        return {self.config.name: self._normalize().inverse(output.detach().cpu()).tolist()}

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        """rmse, mae and r2 in the data's units, each the mean over the components."""
        from sklearn import metrics as skm

        truth, predicted = target.numpy(), np.asarray(self.decode(output)[self.config.name])
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(truth, predicted, multioutput="raw_values")).mean()),
            "mae": float(skm.mean_absolute_error(truth, predicted)),
            "r2": float(skm.r2_score(truth, predicted)),
        }

    # ---- classic baseline and comparison ----
    def classic_encoder(self, style: str, seed: int) -> classic.Numbers:
        description = "components as columns (NaN kept)" if style == classic.TREE else \
            "components standardised, missing flag"
        return classic.Numbers(self.config.name, style, classic_components, description)

    def stats_mismatch(self, column: pd.Series) -> str | None:
        """Other rows of the same count give other component means than the ones learned."""
        if "mean" not in self.stats:
            return None
        values = parse(column, self.config.name, self.length)
        present = values[~np.isnan(values).any(axis=1)]
        mean = present.mean(axis=0) if len(present) else np.full(self.length, np.nan)
        if np.allclose(mean, self.stats["mean"], rtol=1e-9, atol=1e-12):
            return None
        return (f"column '{self.config.name}' of its training rows has component means "
                f"{np.round(mean, 6).tolist()}, the model learned {np.round(self.stats['mean'], 6).tolist()}")

    def classic_task(self) -> classic.Task:
        # baseline.py's gradient boosting regresses one value per row; a fair baseline needs one per component
        raise base.Unsupported(
            f"output '{self.config.name}' of type '{self.type_name}' has no classic baseline: lamina compare's "
            f"classic regressors (gradient boosting) predict one value per row and this vector has {self.length} "
            f"components; to compare, train a model per component with a number output")

    # ---- serving ----
    def request_field(self) -> RequestField:
        example = [round(value, 4) for value in self.stats["mean"]]
        return RequestField(
            list[float], f"{self.length} numbers, as a list or one ','-separated string; training means "
                         f"{example}", example, Widget("line", ",".join(f"{value:g}" for value in example),
                                                       hint=f"{self.length} numbers separated by ','"),
            nullable=self.config.missing != "error", read=self._requested, shown=list[float] | str)

    def _requested(self, value):
        """A sent value (a list, or a ',' string, never read as a file) -> its floats; a cell of another
        length than the learned one is refused here, before any work."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        size = value.count(",") + 1 if isinstance(value, str) else len(value) if isinstance(value, list) else None
        if size is not None and size > self.length:
            raise ValueError(f"{size} numbers, more than the {self.length} this model takes; send exactly "
                             f"{self.length}")
        try:
            array = components(value)
        except ValueError as error:
            raise ValueError(f"the value {error}; send a list of {self.length} numbers or a string like "
                             f"'{','.join(['1.5'] * self.length)}'") from None
        if array.size != self.length:
            raise ValueError(f"{array.size} numbers; this model takes exactly {self.length}")
        return array.tolist()

    def prediction_summary(self) -> dict:
        return {"predicts": f"predicts '{self.name}', a vector of {self.length} numbers"}

    def served_metadata(self) -> dict:
        return {"length": self.length,
                "statistics": {key: self.stats[key] for key in ("mean", "std", "min", "max")}}

    # ---- export: filling and normalisation run inside the graph ----
    def export_entry(self) -> dict:
        return {"tensor": tensor_entry(self.config.name, "float32", ["rows", self.length]),
                "preprocess": {"encoding": "numbers",
                               "value": f"the {self.length} components of the cell (a list, or numbers separated "
                                        f"by ','); a row of NaN where the cell is missing",
                               "inside_the_model": f"missing-value filling and '{self.config.normalize}' "
                                                   f"normalisation", "stats": self.stats}}

    def export_examples(self) -> list:
        return [self.stats["mean"], self.stats["min"]]

    def export_output(self) -> nn.Module:
        return Denormalize(self._normalize())

    def export_output_entry(self) -> dict:
        return {"tensor": tensor_entry(self.config.name, "float32", ["rows", self.length]),
                "read": "the predicted components in the data's units"}

    # ---- explanation and report ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        """At the encoder's output: one score per cell, all components together (a missing row keeps
        its missing flag, which attributing at the raw components would lose)."""
        means = torch.tensor(self.stats["mean"], dtype=torch.float32).expand(len(values), -1)  # (B, L)
        return attribution.Point.at_output(self.config.name, encoder, values, means)

    def baseline_description(self) -> str:
        return "the training mean of each component"

    def explained_score(self, label: int | None) -> str:
        if label is not None:
            return f"component {label} of {self.config.name} in normalised units (the head's output)"
        return (f"each row's largest component of {self.config.name} in normalised units (the head's output); "
                f"target= picks one component, 0 to {self.length - 1}")

    def explained_labels(self) -> list:
        """The components, by position: target=2 explains the third."""
        return list(range(self.length))

    def evaluation_data(self, rows: pd.DataFrame, predicted: pd.DataFrame, inputs: list) -> dict:
        name = self.config.name
        truth = parse(rows[name], name, self.length)
        kept = ~np.isnan(truth).any(axis=1)
        return {"type": self.config.type, "truth": truth[kept].tolist(),
                "predicted": np.asarray(list(predicted[name]), dtype=np.float64)[kept].tolist()}

    def report_plots(self, data: dict) -> list[str]:
        """Predicted against true over every component, and a table of each component's rmse and r2."""
        from sklearn import metrics as skm

        truth, predicted = np.array(data["truth"]), np.array(data["predicted"])  # (N, L)
        figure, axes = plots.figure()
        for component in range(truth.shape[1]):
            axes.scatter(truth[:, component], predicted[:, component], s=6, alpha=0.4, label=str(component))
        low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
        axes.plot([low, high], [low, high], color="grey", linestyle=":")
        axes.set(xlabel="true", ylabel="predicted", title="predicted against true, every component")
        if truth.shape[1] <= 10:
            axes.legend(title="component", fontsize="small")
        errors = np.sqrt(((predicted - truth) ** 2).mean(axis=0))
        scores = skm.r2_score(truth, predicted, multioutput="raw_values") if len(truth) > 1 else [np.nan] * len(errors)
        table = plots.table([[component, float(error), float(score)] for component, (error, score)
                             in enumerate(zip(errors, scores))], ["component", "rmse", "r2"])
        return [plots.png(figure), table]

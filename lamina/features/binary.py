"""The `binary` data type: a yes/no value in, or a probability of the positive class out."""
from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn import metrics as skm
from torch import nn

from lamina.errors import DataError
from lamina.features.common import LinearHead, as_strings, class_weights, missing_mask, raise_if_missing

CAN_BE_OUTPUT = True
MAIN_METRIC = ("roc_auc", "max")
TRUTHY = {"1", "true", "yes", "y", "t", "positive", "pos"}


class Options(BaseModel):
    """Options of a binary feature."""

    model_config = ConfigDict(extra="forbid")
    positive: str | None = Field(
        None, description="the value that means 'true'; inferred (yes/true/1, else the later in "
                          "sorted order) when not given")
    missing: Literal["most_frequent", "false", "drop", "error"] = Field(
        "most_frequent", description="how to fill missing input values; drop removes the rows while training")
    threshold: float | Literal["f1"] = Field(
        0.5, description="probability at or above which the prediction is positive: a number, or f1: the "
                         "threshold with the best F1 on the validation rows, chosen after training and saved")
    minimum_precision: float | None = Field(
        None, gt=0.0, le=1.0, description="instead: the lowest threshold whose precision on the validation rows "
                                          "reaches this (the most recall at that precision), chosen and saved")

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (or f1); got {self.threshold}")
        return self
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        None, description="loss weight per class: 'balanced' or {label: weight}")
    focal_gamma: float = Field(0.0, ge=0.0, le=10.0, description="as an output: focal loss (Lin et al. 2017) "
                                                              "down-weighting easy rows, e.g. 2 for rare positives; "
                                                              "0 is plain cross-entropy")


class Encoder(nn.Module):
    """Input layer of a binary value: -1/+1, the fill for missing values, and a missing flag."""

    def __init__(self, stats: dict):
        super().__init__()
        self.register_buffer("fill", torch.tensor(float(stats["fill"])))
        self.flag_missing = bool(stats["has_missing"])
        self.output_size = 1 + int(self.flag_missing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, output_size)
        value = torch.where(torch.isnan(x), self.fill, x) * 2.0 - 1.0
        columns = [value, torch.isnan(x).float()] if self.flag_missing else [value]
        return torch.stack(columns, dim=1)


class Feature:
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    def fit(self, column: pd.Series) -> None:
        name = self.config.name
        present = column[~missing_mask(column)]
        strings = as_strings(present)
        frequency = strings.value_counts()
        values = sorted(str(value) for value in frequency.index)
        if len(values) > 2:
            raise DataError(
                f"column '{name}' has {len(values)} distinct values ({', '.join(values[:5])}"
                f"{', ...' if len(values) > 5 else ''}); binary needs at most two; use type: category")
        positive = self.config.positive
        if positive is not None and positive not in values:
            raise DataError(f"positive value '{positive}' of '{name}' never occurs in the training split; "
                            f"values are {values}")
        if positive is None:
            truthy = [value for value in values if value.lower() in TRUTHY]
            positive = truthy[0] if truthy else values[-1] if values else "1"
        negatives = [value for value in values if value != positive]
        negative = negatives[0] if negatives else "not " + positive
        counts = [int(frequency.get(label, 0)) for label in (negative, positive)]
        fill = 0.0 if self.config.missing == "false" else float(counts[1] > counts[0])
        self.stats = {"labels": [negative, positive], "counts": counts, "fill": fill,
                      "has_missing": bool(missing_mask(column).any())}

    def _encode(self, column: pd.Series) -> np.ndarray:
        negative, positive = self.stats["labels"]
        lookup = {negative: 0.0, positive: 1.0}
        encoded = as_strings(column).map(lookup).to_numpy(dtype=np.float32, na_value=np.nan, copy=True)
        encoded[missing_mask(column)] = np.nan
        return encoded

    def transform(self, column: pd.Series) -> torch.Tensor:
        if self.config.missing == "error":
            raise_if_missing(column, self.config.name)
        return torch.from_numpy(self._encode(column))  # (N,), NaN for missing or unseen values

    def encoder(self) -> nn.Module:
        return Encoder(self.stats)

    def head(self, input_size: int) -> nn.Module:
        return LinearHead(input_size)  # (B,) logits

    def target(self, column: pd.Series) -> torch.Tensor:
        encoded = self._encode(column)
        unseen = np.isnan(encoded)
        if unseen.any():
            position = int(np.argmax(unseen))
            raise DataError(
                f"column '{self.config.name}' row {column.index[position]}: label {column.iloc[position]!r} "
                f"is not one of the two labels seen in training {self.stats['labels']}")
        return torch.from_numpy(encoded)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weights = class_weights(self.config.class_weights, self.stats["counts"], self.stats["labels"],
                                self.config.name)
        per_row = None if weights is None else torch.tensor(weights)[target.long()]
        if not self.config.focal_gamma:
            return nn.functional.binary_cross_entropy_with_logits(output, target, weight=per_row)
        losses = nn.functional.binary_cross_entropy_with_logits(output, target, weight=per_row, reduction="none")
        probability = torch.sigmoid(output)
        true_class = probability * target + (1 - probability) * (1 - target)  # the probability of the truth
        return (losses * (1 - true_class) ** self.config.focal_gamma).mean()

    @property
    def threshold(self) -> float:
        """The decision threshold: the configured number, or the one tuned on validation rows."""
        if "threshold" in self.stats:
            return float(self.stats["threshold"])
        return self.config.threshold if isinstance(self.config.threshold, float) else 0.5

    def tune(self, target: torch.Tensor | None, output: torch.Tensor | None) -> None:
        """After training: choose the threshold on the validation rows when the config asks for it."""
        options = self.config
        if options.threshold != "f1" and options.minimum_precision is None:
            return
        if target is None or len(target) == 0 or len(np.unique(target.numpy())) < 2:
            warnings.warn(f"output '{options.name}': no validation rows with both classes to tune the threshold "
                          f"on; using 0.5", stacklevel=2)
            self.stats["threshold"] = 0.5
            return
        truth = target.numpy().astype(int)
        probability = torch.sigmoid(output).detach().double().numpy()
        precision, recall, thresholds = skm.precision_recall_curve(truth, probability)
        precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
        if options.minimum_precision is not None:
            reaching = np.flatnonzero(precision >= options.minimum_precision)
            chosen = thresholds[reaching[0]] if len(reaching) else thresholds[-1]
        else:
            f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
            chosen = thresholds[int(np.argmax(f1))]
        self.stats["threshold"] = float(chosen)

    def decode(self, output: torch.Tensor) -> dict:
        probability = torch.sigmoid(output).detach().numpy()
        labels = np.array(self.stats["labels"], dtype=object)
        name = self.config.name
        return {name: labels[(probability >= self.threshold).astype(int)],
                f"{name}_probability": probability}

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        truth = target.numpy().astype(int)
        probability = torch.sigmoid(output).detach().double().numpy()
        predicted = (probability >= self.threshold).astype(int)
        result = {
            "accuracy": skm.accuracy_score(truth, predicted),
            "balanced_accuracy": skm.balanced_accuracy_score(truth, predicted),
            "f1_macro": skm.f1_score(truth, predicted, average="macro", zero_division=0),
            "log_loss": skm.log_loss(truth, probability, labels=[0, 1]),
        }
        if len(np.unique(truth)) == 2:  # ranking metrics need both classes
            result["roc_auc"] = skm.roc_auc_score(truth, probability)
            result["pr_auc"] = skm.average_precision_score(truth, probability)
        return {key: float(value) for key, value in result.items()}

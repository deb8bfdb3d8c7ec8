"""The `binary` data type: a yes/no value in, or a probability of the positive class out.

As an output it handles rare positives: class weights, focal loss, over/under-sampling of the
training rows, temperature scaling of the probabilities, and a decision threshold chosen on the
validation rows (best F1, a minimum precision or recall, or the least total cost).
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lamina import calibration
from lamina.errors import DataError
from lamina.features import attribution, base, classic, plots
from lamina.features.request import RequestField, Widget, as_text
from lamina.features.thresholds import choose_threshold, recall_at_precision  # noqa: F401 - also binary.X
from lamina.features.common import (SAME_AS_TRAINING, Apply, LinearHead, as_strings, class_weights, describe_cell,
                                    missing_mask, plain_texts, raise_if_missing, tensor_entry)

CAN_BE_OUTPUT = True
CAN_BE_INPUT = True
READ_AS = "string"  # a file's column is read as text, as the two values were seen in training
TRUTHY = {"1", "true", "yes", "y", "t", "positive", "pos"}
THRESHOLD_RULES = ("threshold", "minimum_precision", "minimum_recall", "costs")
RARE = 0.2  # a target value in fewer of the rows than this is a rare class: init-config tunes the threshold


class Costs(BaseModel):
    """What each kind of mistake costs, for choosing the threshold with the least total cost."""

    model_config = ConfigDict(extra="forbid")
    false_positive: float = Field(ge=0.0, description="cost of flagging a negative row (e.g. a blocked good card)")
    false_negative: float = Field(ge=0.0, description="cost of missing a positive row (e.g. an undetected fraud)")

    @model_validator(mode="after")
    def _check(self) -> "Costs":
        if self.false_positive + self.false_negative <= 0:
            raise ValueError("costs: at least one of false_positive and false_negative must be above 0")
        return self


class Options(BaseModel):
    """Options of a binary feature."""

    model_config = ConfigDict(extra="forbid")
    positive: str | None = Field(
        None, description="the value that means 'true'; inferred (yes/true/1, else the later in "
                          "sorted order) when not given")
    missing: Literal["most_frequent", "false", "drop", "error"] = Field(
        "most_frequent", description="how to fill missing input values; drop removes the rows while training",
        json_schema_extra={"shown_when": {"role": ["input"]}})
    threshold: float | Literal["f1"] | None = Field(
        None, description="probability at or above which the prediction is positive: a number (default 0.5), or "
                          "f1: the threshold with the best F1 on the validation rows, chosen after training and saved")
    minimum_precision: float | None = Field(
        None, gt=0.0, le=1.0, description="instead: the lowest threshold whose precision on the validation rows "
                                          "reaches this (the most recall at that precision), chosen and saved")
    minimum_recall: float | None = Field(
        None, gt=0.0, le=1.0, description="instead: the highest threshold whose recall on the validation rows "
                                          "reaches this (the fewest alarms catching that share), chosen and saved")
    costs: Costs | None = Field(
        None, description="instead: {false_positive: x, false_negative: y}; the threshold with the least total "
                          "cost on the validation rows, chosen and saved")
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        None, description="loss weight per class: 'balanced' or {label: weight}")
    focal_gamma: float = Field(0.0, ge=0.0, le=10.0, description="as an output: focal loss (Lin et al. 2017) "
                                                              "down-weighting easy rows, e.g. 2 for rare positives; "
                                                              "0 is plain cross-entropy",
                               json_schema_extra={"shown_when": {"role": ["output"]}})
    sampling: Literal["over", "under"] | None = Field(
        None, description="as an output: resample the training rows (only those) so the rarer class makes up "
                          "sampling_ratio of the commoner: over repeats rare rows, under drops common ones")
    sampling_ratio: float = Field(1.0, gt=0.0, le=1.0, description="wanted rare:common row ratio after sampling",
                                  json_schema_extra={"shown_when": {"sampling": ["over", "under"]}})
    calibration: Literal["temperature"] | None = Field(
        None, description="as an output: temperature scaling (Guo et al. 2017), one temperature fitted on the "
                          "validation logits, applied to every probability (and before choosing a threshold)")

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (or f1); got {self.threshold}")
        chosen = [rule for rule in THRESHOLD_RULES if getattr(self, rule) is not None]
        if len(chosen) > 1:
            raise ValueError(f"{' and '.join(chosen)} each choose the decision threshold; keep only one of them")
        if self.sampling is None and self.sampling_ratio != 1.0:
            raise ValueError("sampling_ratio needs sampling: over or under")
        return self


def positive_of(values: list[str]) -> str:
    """The value taken as 'true' when `positive` is not given: yes/true/1 ..., else the later in sorted order."""
    values = sorted(values)
    truthy = [value for value in values if value.lower() in TRUTHY]
    return truthy[0] if truthy else values[-1] if values else "1"


def _logit_error(piece: torch.Tensor, value: torch.Tensor, fill: float) -> torch.Tensor:  # (B, 1), (B,) -> (B,)
    goal = torch.where(torch.isnan(value), torch.full_like(value, fill), value)
    return nn.functional.binary_cross_entropy_with_logits(piece.squeeze(1), goal, reduction="none")


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


class Feature(base.OutputFeature):
    MAIN_METRIC = "roc_auc"
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Exactly two distinct values (yes/no, 0/1, two words): 0.95. A target value in fewer than RARE
        of the rows is the rare class: the positive one, with the threshold tuned on validation F1."""
        if column.distinct != 2 or not column.values.map(lambda value: np.ndim(value) == 0).all():
            return None
        shares = column.strings.value_counts(normalize=True)
        reason = "two values: " + ", ".join(sorted(column.strings.unique())[:2])
        if not column.is_target or shares.iloc[-1] >= RARE:
            return base.Sniff(0.95, reason)
        rare = str(shares.index[-1])
        options = {"threshold": "f1"} | ({} if positive_of(list(shares.index)) == rare else {"positive": rare})
        return base.Sniff(0.95, f"{reason}; '{rare}' is rare ({shares.iloc[-1]:.0%} of the rows): the threshold is "
                                f"tuned on validation F1", options)

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
            positive = positive_of(values)
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
        encoded = self._encode(column)
        unseen = np.isnan(encoded) & ~missing_mask(column)
        negative, positive = self.stats["labels"]
        if unseen.any() and not self.stats["counts"][0]:
            # training saw only `positive` (an anomaly model's normal rows): any other value is 'not positive'
            encoded[unseen] = 0.0
        elif unseen.any():
            # a value seen in no training row ('maybe', 'Yes' for 'yes') is a mistake in the data, not a
            # missing value: read as missing it would silently become the fill (the server refuses it too)
            position = int(np.argmax(unseen))
            raise DataError(f"column '{self.config.name}' row {column.index[position]}: "
                            f"{describe_cell(column.iloc[position])} is not a value seen in training "
                            f"({negative!r} or {positive!r}); write it as one of them, leave the cell empty if it "
                            f"is missing, or declare the column type: category")
        return torch.from_numpy(encoded)  # (N,), NaN for missing values

    def prepare(self) -> dict:
        negative, positive = self.stats["labels"]
        return {negative: 0.0, positive: 1.0}

    def encode_rows(self, values: list) -> torch.Tensor:
        """As transform: 0/1, NaN where missing, and an unseen value transform's to refuse (or read as 0)."""
        texts, lookup = plain_texts(values), self.prepared()
        if texts is None:
            return self.transform(pd.Series(values))
        encoded = []
        for text in texts:
            if text is None:
                if self.config.missing == "error":
                    return self.transform(pd.Series(values))
                encoded.append(float("nan"))
            elif text in lookup:
                encoded.append(lookup[text])
            elif not self.stats["counts"][0]:  # training saw only the positive label (see transform)
                encoded.append(0.0)
            else:
                return self.transform(pd.Series(values))
        return torch.tensor(encoded, dtype=torch.float32)  # (N,)

    def reconstruction(self) -> base.Reconstruction:
        """An anomaly score rebuilds the value as a logit; a missing one counts as the training fill."""
        return base.Reconstruction(1, partial(_logit_error, fill=float(self.stats.get("fill", 0.0))))

    def encoder(self) -> nn.Module:
        return Encoder(self.stats)

    def head(self, trunk: base.Trunk) -> nn.Module:
        seen = [label for label, count in zip(self.stats["labels"], self.stats["counts"]) if count]
        if len(seen) < 2:
            raise DataError(f"output '{self.config.name}': the training split holds only the label {seen[0]!r}, "
                            f"so there is nothing to learn; give the training rows both labels (check the split "
                            f"column or the data)")
        return LinearHead(trunk.size)  # (B,) logits

    def target(self, column: pd.Series) -> torch.Tensor:
        encoded = self._encode(column)
        unseen = np.isnan(encoded)
        if unseen.any():
            position = int(np.argmax(unseen))
            where = f"column '{self.config.name}' row {column.index[position]}: label {column.iloc[position]!r}"
            seen = [label for label, count in zip(self.stats["labels"], self.stats["counts"]) if count]
            if len(seen) < 2:
                raise DataError(f"{where} never occurs in the training split, which holds only {seen[0]!r}; a "
                                f"classifier needs both labels among the training rows (check the split)")
            raise DataError(f"{where} is not one of the two labels seen in training {self.stats['labels']}")
        return torch.from_numpy(encoded)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weights = class_weights(self.config.class_weights, self.stats["counts"], self.stats["labels"],
                                self.config.name)
        per_row = None if weights is None else torch.tensor(weights, device=output.device)[target.long()]
        if not self.config.focal_gamma:
            return nn.functional.binary_cross_entropy_with_logits(output, target, weight=per_row)
        losses = nn.functional.binary_cross_entropy_with_logits(output, target, weight=per_row, reduction="none")
        probability = torch.sigmoid(output)
        true_class = probability * target + (1 - probability) * (1 - target)  # the probability of the truth
        return (losses * (1 - true_class) ** self.config.focal_gamma).mean()

    def stratifies(self) -> bool:
        return True

    def resampling(self) -> tuple[str, float] | None:
        return (self.config.sampling, self.config.sampling_ratio) if self.config.sampling else None

    @property
    def threshold(self) -> float:
        """The decision threshold: the configured number, or the one tuned on validation rows."""
        if "threshold" in self.stats:
            return float(self.stats["threshold"])
        return self.config.threshold if isinstance(self.config.threshold, float) else 0.5

    @property
    def temperature(self) -> float:
        """Logits are divided by this before the sigmoid: 1 unless calibration fitted one."""
        return float(self.stats.get("temperature", 1.0))

    def probability(self, output: torch.Tensor) -> torch.Tensor:
        """The (calibrated) probability of the positive class, from logits (B,)."""
        output = output.detach()
        return torch.sigmoid(output / self.temperature if self.temperature != 1.0 else output)

    @property
    def chooses_threshold(self) -> bool:
        options = self.config
        return options.threshold == "f1" or any(getattr(options, rule) is not None for rule in THRESHOLD_RULES[1:])

    def tunes(self) -> bool:
        """Whether something is chosen on the validation rows after training."""
        return self.config.calibration is not None or self.chooses_threshold

    def tune(self, target: torch.Tensor | None, output: torch.Tensor | None) -> None:
        """After training: fit the temperature, then choose the threshold on the (calibrated)
        validation probabilities, as the config asks; both go into stats and are saved."""
        options, name = self.config, self.config.name
        empty = target is None or len(target) == 0
        if options.calibration == "temperature":
            if empty:
                warnings.warn(f"output '{name}': no validation rows to fit the calibration temperature on; "
                              f"probabilities stay uncalibrated (temperature 1); give the split a validation "
                              f"share", stacklevel=2)
            self.stats["temperature"] = 1.0 if empty else calibration.fit_temperature(output, target)
        if not self.chooses_threshold:
            return
        if empty or len(np.unique(target.numpy())) < 2:
            warnings.warn(f"output '{name}': no validation rows with both classes to choose the threshold on; "
                          f"using 0.5", stacklevel=2)
            self.stats["threshold"] = 0.5
            return
        probability = self.probability(output).double().numpy()
        self.stats["threshold"] = choose_threshold(target.numpy().astype(int), probability, options)

    def decode(self, output: torch.Tensor) -> dict:
        probability = self.probability(output).numpy()
        labels = np.array(self.stats["labels"], dtype=object)
        name = self.config.name
        return {name: labels[(probability >= self.threshold).astype(int)],
                f"{name}_probability": probability}

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        from sklearn import metrics as skm

        truth = target.numpy().astype(int)
        probability = self.probability(output).double().numpy()  # as decode computes it, so the threshold agrees
        predicted = (probability >= self.threshold).astype(int)
        result = {
            "accuracy": skm.accuracy_score(truth, predicted),
            "balanced_accuracy": skm.balanced_accuracy_score(truth, predicted),
            "f1_macro": skm.f1_score(truth, predicted, average="macro", zero_division=0),
            "f1": skm.f1_score(truth, predicted, zero_division=0),  # of the positive class, at the threshold
            "log_loss": skm.log_loss(truth, probability, labels=[0, 1]),
            "precision": skm.precision_score(truth, predicted, zero_division=0),
            "recall": skm.recall_score(truth, predicted, zero_division=0),
            "brier_score": calibration.brier_score(truth, probability),
            "expected_calibration_error": calibration.expected_calibration_error(truth, probability),
        }
        if len(np.unique(truth)) == 2:  # ranking metrics need both classes
            result["roc_auc"] = skm.roc_auc_score(truth, probability)
            result["pr_auc"] = skm.average_precision_score(truth, probability)
            result["recall_at_precision_90"] = recall_at_precision(truth, probability, 0.9)
        negatives, false_positives, false_negatives, positives = skm.confusion_matrix(
            truth, predicted, labels=[0, 1]).ravel()
        result |= {"true_positives": positives, "false_positives": false_positives,
                   "false_negatives": false_negatives, "true_negatives": negatives}  # at the threshold
        return {key: float(value) for key, value in result.items()}

    # ---- classic baseline and comparison ----
    def classic_encoder(self, style: str, seed: int) -> classic.Codes:
        return classic.Codes(self.config.name, style,
                             "native categorical code" if style == classic.TREE else "one-hot")

    def classic_task(self) -> classic.Task:
        return classic.Task("classify", len(self.stats["labels"]))

    def classic_raw(self, scores: np.ndarray) -> torch.Tensor:
        return classic.logits(scores[:, 1], self.temperature)  # the output divides by it: undo, so p stays p

    def bootstrap_metric(self) -> tuple:
        return (lambda raw: torch.sigmoid(raw).double().numpy()), classic.roc_auc

    # ---- serving ----
    def request_field(self) -> RequestField:
        labels = self.stats["labels"]
        example = labels[int(np.argmax(self.stats["counts"]))]
        return RequestField(str, f"one of {labels[0]!r} or {labels[1]!r}", example, Widget("select", example, labels),
                            nullable=self.config.missing != "error", read=self._requested, shown=str | bool | int)

    def _requested(self, value):
        """A value sent to a served model -> the label as a string (JSON true or 1 -> 'True', '1')."""
        labels, value = self.stats["labels"], as_text(value)
        # training saw only the positive value (an anomaly model's normal rows): any other is 'not positive',
        # as Model.predict reads it
        if isinstance(value, str) and value.strip() not in labels and self.stats["counts"][0]:
            raise ValueError(f"{value!r} is not one of the two values seen in training ({labels[0]!r}, {labels[1]!r})")
        return value

    def prediction_summary(self) -> dict:
        negative, positive = self.stats["labels"]
        return {"predicts": f"tells whether '{self.name}' is '{positive}' or '{negative}': the probability of "
                            f"'{positive}', and the label it gives at the decision threshold",
                "classes": dict(zip((negative, positive), self.stats["counts"]))}

    def served_metadata(self) -> dict:
        return {"values": self.stats["labels"]}

    # ---- export: calibration (the temperature) runs inside the graph ----
    def export_entry(self) -> dict:
        return {"tensor": tensor_entry(self.config.name, "float32", ["rows"]),
                "preprocess": {"encoding": "label_pair",
                               "labels": self.stats["labels"], "value": "0.0 for labels[0], 1.0 for labels[1], NaN "
                               "where missing or another value", "compare": SAME_AS_TRAINING}}

    def export_examples(self) -> list:
        labels = list(self.stats["labels"][:2])
        return labels * (2 // len(labels))

    def export_output(self) -> nn.Module:
        return Apply(self.probability)  # (B,) logits -> (B,) calibrated probabilities of labels[1]

    def export_output_entry(self) -> dict:
        return {"tensor": tensor_entry(f"{self.config.name}_probability", "float32", ["rows"]),
                "labels": self.stats["labels"], "threshold": self.threshold, "temperature": self.temperature,
                "read": "the (calibrated: the graph divides the logit by temperature) probability of labels[1]; "
                        "predict labels[1] when it is at least threshold"}

    # ---- explanation and report ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        halfway = torch.full((len(values),), 0.5)  # encoded as 0.5 * 2 - 1 = 0
        return attribution.Point.at_output(self.config.name, encoder, values, halfway)

    def baseline_description(self) -> str:
        return "halfway between the two values (0 on the ±1 scale)"

    def explained_score(self, label: int | None) -> str:
        stats = self.stats
        scaled = f"logit / {stats['temperature']:.4g}" if stats.get("temperature", 1.0) != 1.0 else "logit"
        return f"logit (log-odds) of {self.config.name} = {stats['labels'][1]!r}; probability = sigmoid({scaled})"

    def evaluation_data(self, rows: pd.DataFrame, predicted: pd.DataFrame, inputs: list) -> dict:
        name, labels = self.config.name, self.stats["labels"]
        return {"type": self.config.type, "labels": labels,
                "truth": [int(value) for value in (as_strings(rows[name]) == labels[1])],
                "probability": plots.floats(predicted[f"{name}_probability"]), "threshold": float(self.threshold)}

    def report_plots(self, data: dict) -> list[str]:
        return report_plots(data)


def report_plots(data: dict) -> list[str]:
    """The confusion matrix at the threshold; with both labels among the rows also the ROC and
    precision-recall curves and the calibration of the probabilities."""
    from sklearn import metrics as skm
    from sklearn.calibration import calibration_curve

    truth, probability = np.array(data["truth"]), np.array(data["probability"])
    drawn = [plots.confusion(truth, (probability >= data["threshold"]).astype(int), data["labels"])]
    if len(np.unique(truth)) == 2:
        figure, axes = plots.figure()
        false_positive, true_positive, _ = skm.roc_curve(truth, probability)
        axes.plot(false_positive, true_positive)
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
        drawn.append(plots.png(figure))
        figure, axes = plots.figure()
        precision, recall, _ = skm.precision_recall_curve(truth, probability)
        axes.plot(recall, precision)
        axes.axhline(truth.mean(), color="grey", linestyle=":", label="always positive")
        axes.set(xlabel="recall", ylabel="precision", title="precision-recall curve")
        axes.legend()
        drawn.append(plots.png(figure))
        figure, axes = plots.figure()
        observed, predicted = calibration_curve(truth, probability, n_bins=10, strategy="quantile")
        axes.plot(predicted, observed, marker="o")
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
        axes.set(xlabel="predicted probability", ylabel="observed frequency", title="calibration")
        axes.legend()
        drawn.append(plots.png(figure))
    return drawn


"""The `category` data type: one of a set of values in (an embedding), or class probabilities out.

Values never seen in training map to an unknown token at prediction time instead of failing.
As an output, rare classes can be over/under-sampled and the probabilities calibrated.
"""
from __future__ import annotations

from typing import Literal

import warnings

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lamina import calibration
from lamina.errors import DataError
from lamina.features import attribution, base, classic, plots
from lamina.features.request import RequestField, Widget, as_text
from lamina.features.common import (MISSING, SAME_AS_TRAINING, UNKNOWN, Apply, LinearHead, as_strings, class_weights,
                                    missing_mask, plain_texts, raise_if_missing, tensor_entry)

CAN_BE_OUTPUT = True
CAN_BE_INPUT = True
READ_AS = "string"  # a file's column is read as text: the code "007" is not the number 7


class Options(BaseModel):
    """Options of a category feature."""

    model_config = ConfigDict(extra="forbid")
    missing: Literal["category", "most_frequent", "drop", "error"] = Field(
        "category", description="category: missing is a value of its own; drop removes the rows while training",
        json_schema_extra={"shown_when": {"role": ["input"]}})
    max_size: int | None = Field(None, ge=1, description="keep only the most frequent values (inputs)")
    min_count: int = Field(1, ge=1, description="values seen fewer times map to the unknown token (inputs)",
                           json_schema_extra={"shown_when": {"role": ["input"]}})
    embedding_size: int | None = Field(None, ge=1, description="embedding width; default grows with the vocabulary")
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        None, description="loss weight per class when an output: 'balanced' or {label: weight}")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the loss when an output",
                                   json_schema_extra={"shown_when": {"role": ["output"]}})
    focal_gamma: float = Field(0.0, ge=0.0, le=10.0, description="as an output: focal loss (Lin et al. 2017) "
                                                              "down-weighting easy rows, e.g. 2 for rare classes; "
                                                              "0 is plain cross-entropy",
                               json_schema_extra={"shown_when": {"role": ["output"]}})
    sampling: Literal["over", "under"] | None = Field(
        None, description="as an output: resample the training rows (only those) so every class has at least "
                          "sampling_ratio times the rows of the largest: over repeats rows of the smaller "
                          "classes, under drops rows of the larger")
    sampling_ratio: float = Field(1.0, gt=0.0, le=1.0, description="wanted smallest:largest class row ratio",
                                  json_schema_extra={"shown_when": {"sampling": ["over", "under"]}})
    calibration: Literal["temperature"] | None = Field(
        None, description="as an output: temperature scaling (Guo et al. 2017), one temperature fitted on the "
                          "validation logits, applied to every probability")

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if self.sampling is None and self.sampling_ratio != 1.0:
            raise ValueError("sampling_ratio needs sampling: over or under")
        return self


def _class_error(piece: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, V), (B,) -> (B,)
    return nn.functional.cross_entropy(piece, value, reduction="none")


class Encoder(nn.Module):
    def __init__(self, vocabulary_size: int, embedding_size: int):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size, embedding_size)
        with torch.no_grad():  # the unknown token gets no training rows: keep it neutral
            self.embedding.weight[0].zero_()
        self.output_size = embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,) long -> (B, E)
        return self.embedding(x)


class Block(nn.Module):
    """Category columns looked up together, wherever they stand among the inputs: one call for K tables
    instead of K module calls, whose overhead is most of what a one-row lookup costs. The tables are
    read from the members at every call: nothing is copied and the saved keys stay per encoder."""

    def __init__(self, encoders: list[Encoder]):
        super().__init__()
        # a plain list, not submodules: their weights stay under their own keys
        self.tables = [encoder.embedding for encoder in encoders]
        self.output_size = sum(encoder.output_size for encoder in encoders)

    def forward(self, columns: list[torch.Tensor]) -> torch.Tensor:  # K x (B,) long -> (B, sum of E)
        return torch.cat([torch.embedding(table.weight, codes) for table, codes in zip(self.tables, columns)], dim=1)


class Feature(base.OutputFeature):
    MAIN_METRIC = "accuracy"
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Short labels that repeat: 0.8 up to 100 distinct values, 0.7 up to 1000, 0.5 beyond (an id is
        likelier), 0.6 for two (binary is likelier). Whole numbers: 0.8 as a target with at most 20 values
        (classes), else 0.5 (an input number with few values stays a number). Sentences (3 words or more
        on average) or labels seen less than 1.5 times each 0.45; a different value in every row: never."""
        rows, distinct = len(column.values), column.distinct
        if distinct < 2 or (distinct == rows and rows > 20):
            return None
        numbers = column.numbers
        if numbers is not None:
            whole = bool((numbers == np.round(numbers)).all())
            if column.is_target and whole and distinct <= 20:
                return base.Sniff(0.6 if distinct == 2 else 0.8, f"{distinct} whole-number classes")
            return base.Sniff(0.5 if whole and distinct <= 20 else 0.3, f"{distinct} distinct numbers")
        if not column.all_text:
            return None
        words = float(column.strings.iloc[:2000].str.split().str.len().mean())
        confidence = 0.45 if words >= 3 or rows < 1.5 * distinct else 0.6 if distinct == 2 else \
            0.8 if distinct <= 100 else 0.7 if distinct <= 1000 else 0.5
        return base.Sniff(confidence, f"{distinct} distinct labels, each in {rows / distinct:.0f} rows on average")

    def fit(self, column: pd.Series) -> None:
        options = self.config
        missing = missing_mask(column)
        counts = as_strings(column[~missing]).value_counts()
        counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        if counts.empty:
            raise DataError(f"column '{options.name}' has no values in the training split; "
                            f"remove the feature or fill the column")
        kept = counts[counts >= options.min_count]
        kept = kept.iloc[: options.max_size] if options.max_size else kept
        special = [UNKNOWN] + ([MISSING] if options.missing == "category" else [])
        self.stats = {
            "vocabulary": special + kept.index.tolist(),
            "labels": counts.index.tolist(),  # the classes, when this is an output
            "counts": [int(count) for count in counts.tolist()],
        }

    def transform(self, column: pd.Series) -> torch.Tensor:
        options = self.config
        if options.missing == "error":
            raise_if_missing(column, options.name)
        vocabulary = self.stats["vocabulary"]
        index = {value: position for position, value in enumerate(vocabulary)}
        codes = pd.Index(vocabulary).get_indexer(as_strings(column)).astype(np.int64)
        codes[codes < 0] = 0  # values never seen in training: the unknown token
        missing = missing_mask(column)
        if options.missing == "category":
            codes[missing] = index[MISSING]
        else:  # most_frequent; rows of 'drop' are removed before this while training
            codes[missing] = index.get(self.stats["labels"][0], 0)
        return torch.from_numpy(codes)  # (N,)

    def prepare(self) -> tuple[dict, int]:
        """The vocabulary as a dict {value: code}, and the code of a missing cell (as transform fills it)."""
        index = {value: position for position, value in enumerate(self.stats["vocabulary"])}
        missing = index[MISSING] if self.config.missing == "category" else index.get(self.stats["labels"][0], 0)
        return index, missing

    def encode_rows(self, values: list) -> torch.Tensor:
        """As transform: codes by the vocabulary, 0 (unknown) for a value never seen, the fill where missing."""
        texts = plain_texts(values)
        if texts is None or (self.config.missing == "error" and None in texts):
            return self.transform(pd.Series(values))
        index, missing = self.prepared()
        return torch.tensor([missing if text is None else index.get(text, 0) for text in texts],
                            dtype=torch.int64)  # (N,)

    def reconstruction(self) -> base.Reconstruction:
        """An anomaly score rebuilds the value as a class among the vocabulary: cross-entropy."""
        return base.Reconstruction(len(self.stats["vocabulary"]), _class_error)

    def encoder(self) -> nn.Module:
        size = self.config.embedding_size or min(64, round(1.6 * len(self.stats["vocabulary"]) ** 0.56))
        return Encoder(len(self.stats["vocabulary"]), size)

    def block(self) -> type | None:
        """Category columns are looked up together by one Block."""
        return Block

    def head(self, trunk: base.Trunk) -> nn.Module:
        if len(self.stats["labels"]) < 2:
            raise DataError(f"output '{self.config.name}': the training split holds only the label "
                            f"{self.stats['labels'][0]!r}, so there is nothing to learn; give the training rows "
                            f"at least two labels (check the split column or the data)")
        return LinearHead(trunk.size, len(self.stats["labels"]))  # (B, K) logits

    def target(self, column: pd.Series) -> torch.Tensor:
        labels = self.stats["labels"]
        codes = as_strings(column).map({label: i for i, label in enumerate(labels)})
        unseen = codes.isna().to_numpy()
        if unseen.any():
            position = int(np.argmax(unseen))
            raise DataError(
                f"column '{self.config.name}' row {column.index[position]}: label {column.iloc[position]!r} "
                f"never occurs in the training split, so the model cannot predict it; "
                f"labels are {labels[:10]}{' ...' if len(labels) > 10 else ''}")
        return torch.from_numpy(codes.to_numpy(dtype=np.int64, copy=True))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weights = class_weights(self.config.class_weights, self.stats["counts"], self.stats["labels"],
                                self.config.name)
        weight = None if weights is None else torch.tensor(weights, device=output.device)
        if not self.config.focal_gamma:
            return nn.functional.cross_entropy(output, target, weight=weight,
                                               label_smoothing=self.config.label_smoothing)
        losses = nn.functional.cross_entropy(output, target, weight=weight, reduction="none",
                                             label_smoothing=self.config.label_smoothing)
        true_class = torch.softmax(output, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        return (losses * (1 - true_class) ** self.config.focal_gamma).mean()

    def stratifies(self) -> bool:
        return True

    def resampling(self) -> tuple[str, float] | None:
        return (self.config.sampling, self.config.sampling_ratio) if self.config.sampling else None

    @property
    def temperature(self) -> float:
        """Logits are divided by this before the softmax: 1 unless calibration fitted one."""
        return float(self.stats.get("temperature", 1.0))

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        """The (calibrated) class probabilities (B, K), from logits (B, K)."""
        output = output.detach()
        return torch.softmax(output / self.temperature if self.temperature != 1.0 else output, dim=1)

    def tunes(self) -> bool:
        """Whether something is chosen on the validation rows after training."""
        return self.config.calibration is not None

    def tune(self, target: torch.Tensor | None, output: torch.Tensor | None) -> None:
        """After training: fit the calibration temperature on the validation logits; saved in stats."""
        if target is None or len(target) == 0:
            warnings.warn(f"output '{self.config.name}': no validation rows to fit the calibration temperature "
                          f"on; probabilities stay uncalibrated (temperature 1); give the split a validation "
                          f"share", stacklevel=2)
            self.stats["temperature"] = 1.0
            return
        self.stats["temperature"] = calibration.fit_temperature(output, target)

    def decode(self, output: torch.Tensor) -> dict:
        probabilities = self.probabilities(output).numpy()
        labels = np.array(self.stats["labels"], dtype=object)
        name = self.config.name
        decoded = {name: labels[probabilities.argmax(axis=1)], f"{name}_probability": probabilities.max(axis=1)}
        for position, label in enumerate(self.stats["labels"]):
            decoded[f"{name}_probability_{label}"] = probabilities[:, position]
        return decoded

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        from sklearn import metrics as skm
        from sklearn.preprocessing import label_binarize

        truth = target.numpy()
        probabilities = self.probabilities(output.double()).numpy()
        predicted = probabilities.argmax(axis=1)
        classes = list(range(probabilities.shape[1]))
        result = {
            "accuracy": skm.accuracy_score(truth, predicted),
            "balanced_accuracy": skm.balanced_accuracy_score(truth, predicted),
            "f1_macro": skm.f1_score(truth, predicted, average="macro", labels=np.unique(truth), zero_division=0),
            "log_loss": skm.log_loss(truth, probabilities, labels=classes),
            "brier_score": calibration.brier_score(truth, probabilities),
            "expected_calibration_error": calibration.expected_calibration_error(
                (predicted == truth).astype(float), probabilities.max(axis=1)),
        }
        present = np.unique(truth)
        if len(present) >= 2:  # one-vs-rest ranking metrics over the classes present in the truth
            onehot = label_binarize(truth, classes=classes)
            if onehot.shape[1] == 1:  # label_binarize collapses two classes to one column
                onehot = np.hstack([1 - onehot, onehot])
            result["roc_auc"] = np.mean([skm.roc_auc_score(onehot[:, k], probabilities[:, k]) for k in present])
            result["pr_auc"] = np.mean([skm.average_precision_score(onehot[:, k], probabilities[:, k])
                                        for k in present])
        return {key: float(value) for key, value in result.items()}

    # ---- classic baseline and comparison ----
    def classic_encoder(self, style: str, seed: int) -> classic.Codes:
        return classic.Codes(self.config.name, style,
                             "native categorical codes" if style == classic.TREE else "one-hot")

    def classic_task(self) -> classic.Task:
        return classic.Task("classify", len(self.stats["labels"]))

    def classic_raw(self, scores: np.ndarray) -> torch.Tensor:
        return classic.log_probabilities(scores, self.temperature)  # the output divides by it: undo, so p stays p

    def bootstrap_metric(self) -> tuple:
        return (lambda raw: raw.argmax(dim=1).numpy()), classic.accuracy

    # ---- serving ----
    def _known(self) -> list[str]:
        """The values seen in training, most frequent first (no special tokens)."""
        return [value for value in self.stats["vocabulary"] if value not in (UNKNOWN, MISSING)]

    def request_field(self) -> RequestField:
        known = self._known()
        about = f"one of the {len(known)} values seen in training (others count as unknown): " + \
            ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        example = (known or [None])[0]
        return RequestField(str, about, example, Widget("select", example, known),
                            nullable=self.config.missing != "error", read=as_text, shown=str | int | float | bool)

    def prediction_summary(self) -> dict:
        labels = self.stats["labels"]
        listed = ", ".join(str(label) for label in labels[:10]) + (", ..." if len(labels) > 10 else "")
        return {"predicts": f"classifies '{self.name}' into {len(labels)} classes: {listed}",
                "classes": dict(zip((str(label) for label in labels), self.stats["counts"]))}

    def served_metadata(self) -> dict:
        return {"values": self._known()}

    # ---- export: calibration (the temperature) runs inside the graph ----
    def export_entry(self) -> dict:
        vocabulary, labels = self.stats["vocabulary"], self.stats["labels"]
        missing = vocabulary.index(MISSING) if self.config.missing == "category" else \
            (vocabulary.index(labels[0]) if labels[0] in vocabulary else 0)
        return {"tensor": tensor_entry(self.config.name, "int64", ["rows"]),
                "preprocess": {"encoding": "vocabulary_index",
                               "vocabulary": vocabulary, "value": "the position of the value in vocabulary",
                               "unknown_index": 0, "missing_index": missing, "compare": SAME_AS_TRAINING}}

    def export_examples(self) -> list:
        labels = list(self.stats["labels"][:2])
        return labels * (2 // len(labels))

    def export_output(self) -> nn.Module:
        return Apply(self.probabilities)  # (B, K) logits -> (B, K) calibrated probabilities

    def export_output_entry(self) -> dict:
        labels = self.stats["labels"]
        return {"tensor": tensor_entry(f"{self.config.name}_probabilities", "float32", ["rows", len(labels)]),
                "labels": labels, "temperature": self.temperature,
                "read": "one (calibrated) probability per label; predict the largest"}

    # ---- explanation and report ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        unknown = torch.zeros(len(values), dtype=torch.long)
        return attribution.Point.at_output(self.config.name, encoder, values, unknown)

    def baseline_description(self) -> str:
        return "the unknown value (its embedding: zeros)"

    def explained_score(self, label: int | None) -> str:
        return attribution.logit_of(self.config.name, self.stats["labels"], label)

    def explained_labels(self) -> list:
        return self.stats["labels"]

    def evaluation_data(self, rows: pd.DataFrame, predicted: pd.DataFrame, inputs: list) -> dict:
        name, labels = self.config.name, self.stats["labels"]
        index = {label: position for position, label in enumerate(labels)}
        return {"type": self.config.type, "labels": labels,
                "truth": [index.get(value, -1) for value in as_strings(rows[name])],
                "predicted": [index[value] for value in predicted[name]],
                "probabilities": [plots.floats(predicted[f"{name}_probability_{label}"]) for label in labels]
                if len(labels) <= 20 else None}

    def report_plots(self, data: dict) -> list[str]:
        """The confusion matrix (of the 20 most frequent true classes when there are more)."""
        truth, predicted, labels = np.array(data["truth"]), np.array(data["predicted"]), data["labels"]
        known = truth >= 0
        if len(labels) > 20:
            keep = pd.Series(truth[known]).value_counts().index[:20].to_numpy()
            mask = np.isin(truth, keep) & np.isin(predicted, keep)
            remap = {old: new for new, old in enumerate(keep)}
            return [plots.confusion(np.array([remap[t] for t in truth[mask]]),
                                    np.array([remap[p] for p in predicted[mask]]), [labels[k] for k in keep])]
        return [plots.confusion(truth[known], predicted[known], labels)]

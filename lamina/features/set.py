"""The `set` data type: a set of labels per row (multi-label), as input or output.

A cell holds a list/tuple/set of labels or a delimited string ("drama|comedy").
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, base, classic
from lamina.features.request import RequestField, Widget
from lamina.features.common import (Apply, LinearHead, cell_text, is_missing_cell, missing_mask, raise_if_missing,
                                    tensor_entry, to_float_tensor)

CAN_BE_OUTPUT = True
CAN_BE_INPUT = True
READ_AS = "string"  # a file's column is read as text (labels like 007 keep their zeros), lists as lists


class Options(BaseModel):
    """Options of a set feature."""

    model_config = ConfigDict(extra="forbid")
    delimiter: str = Field(",", min_length=1, description="separator between labels in a text cell")
    missing: Literal["empty", "drop", "error"] = Field(
        "empty", description="empty: a missing cell is the empty set; drop removes the rows while training",
        json_schema_extra={"shown_when": {"role": ["input"]}})
    max_size: int | None = Field(None, ge=1, description="keep only the most frequent labels")
    min_count: int = Field(1, ge=1, description="labels seen fewer times are ignored")
    embedding_size: int | None = Field(None, ge=1, description="width of the input layer; default grows with the labels")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="probability above which a label is predicted",
                             json_schema_extra={"shown_when": {"role": ["output"]}})
    class_weights: Literal["balanced"] | None = Field(
        None, description="balanced: weigh each label's positives by its negatives/positives ratio")


LIST_TYPES = (list, tuple, set, frozenset, np.ndarray)


def labels_per_row(column: pd.Series, delimiter: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (row position, label) pair of a column: delimited strings are split, list-like
    cells taken as they are, missing cells give no pairs."""
    rows, labels = [], []
    for position, (value, gone) in enumerate(zip(column.to_numpy(dtype=object), missing_mask(column))):
        if gone:
            continue
        for label in (value if isinstance(value, LIST_TYPES) else cell_text(value).split(delimiter)):
            label = cell_text(label)  # a label 1.0 is the label 1, in every chunk of a file
            if isinstance(label, str) and label:
                rows.append(position)
                labels.append(label)
    return np.array(rows, dtype=np.int64), np.array(labels, dtype=object)


class Encoder(nn.Module):
    """A bag of label embeddings: multi-hot times a weight matrix (the sum of the labels' vectors)."""

    def __init__(self, labels: int, embedding_size: int):
        super().__init__()
        self.bag = nn.Linear(labels, embedding_size, bias=False)
        self.output_size = embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) multi-hot -> (B, E)
        return self.bag(x)


class Feature(base.OutputFeature):
    MAIN_METRIC = "f1_micro"
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Lists of labels (0.9), or texts of labels joined by '|' (0.88), ';' or ',' (0.82): the delimiter
        in at least 30% of the cells, pieces of at most 3 words that are not numbers (those are sequences
        or vectors), and fewer distinct pieces than half the cells (prose with commas has more); with ','
        fewer distinct pieces than distinct cells, as labels that are combined make."""
        if column.share(lambda value: isinstance(value, (list, tuple, set))) == 1.0:
            if column.share(lambda value: all(isinstance(item, str) for item in value)) == 1.0:
                return base.Sniff(0.9, "lists of labels")
            return None
        if not column.all_text or column.numbers is not None:
            return None
        texts = column.strings.iloc[:2000]
        for delimiter in ("|", ";", ","):
            if texts.str.contains(delimiter, regex=False).mean() < 0.3:
                continue
            pieces = texts.str.split(delimiter, regex=False).explode().str.strip()
            pieces = pieces[pieces != ""]
            if pd.to_numeric(pieces, errors="coerce").notna().mean() > 0.5 or pieces.str.split().str.len().mean() > 3:
                continue
            labels = pieces.nunique()
            if labels > max(20, len(texts) // 2) or (delimiter == "," and labels >= texts.nunique()):
                continue  # prose; or with ',' labels that hold a comma ('Sales, retail'), which never recombine
            return base.Sniff(0.88 if delimiter == "|" else 0.82, f"labels separated by '{delimiter}' ({labels} "
                                                                  f"labels)", {"delimiter": delimiter})
        return None

    def fit(self, column: pd.Series) -> None:
        options = self.config
        rows, labels = labels_per_row(column, options.delimiter)
        unique = pd.DataFrame({"row": rows, "label": labels}).drop_duplicates()
        ordered = sorted(unique["label"].value_counts().items(), key=lambda item: (-item[1], item[0]))
        kept = [(label, count) for label, count in ordered if count >= options.min_count]
        kept = kept[: options.max_size] if options.max_size else kept
        if not kept:
            raise DataError(f"column '{options.name}' has no labels in the training split; "
                            f"check the delimiter (now {options.delimiter!r}) or remove the feature")
        self.stats = {"labels": [label for label, _ in kept], "counts": [int(count) for _, count in kept],
                      "rows": len(column)}

    def _multi_hot(self, column: pd.Series) -> np.ndarray:
        rows, labels = labels_per_row(column, self.config.delimiter)
        codes = pd.Index(self.stats["labels"]).get_indexer(labels)  # -1: a label never seen in training
        encoded = np.zeros((len(column), len(self.stats["labels"])), dtype=np.float32)
        known = codes >= 0
        encoded[rows[known], codes[known]] = 1.0
        return encoded

    def transform(self, column: pd.Series) -> torch.Tensor:
        if self.config.missing == "error":
            raise_if_missing(column, self.config.name)
        return to_float_tensor(self._multi_hot(column))  # (N, L)

    def prepare(self) -> dict:
        """The labels as a dict {label: column of the multi-hot row}."""
        return {label: position for position, label in enumerate(self.stats["labels"])}

    def encode_rows(self, values: list) -> torch.Tensor:
        """As transform: multi-hot rows of the known labels; a delimited text or a list per cell."""
        index = self.prepared()
        encoded = torch.zeros((len(values), len(index)), dtype=torch.float32)  # (N, L)
        for row, value in enumerate(values):
            kind = type(value)
            if is_missing_cell(value):
                if self.config.missing == "error":
                    return self.transform(pd.Series(values))
                continue
            if kind in (list, tuple):
                labels = value
            elif kind in (str, int, float, bool):
                labels = cell_text(value).split(self.config.delimiter)
            else:
                return self.transform(pd.Series(values))
            for label in labels:
                label = cell_text(label)
                if isinstance(label, str) and label and label in index:
                    encoded[row, index[label]] = 1.0
        return encoded

    def encoder(self) -> nn.Module:
        size = self.config.embedding_size or min(64, round(1.6 * len(self.stats["labels"]) ** 0.56) + 1)
        return Encoder(len(self.stats["labels"]), size)

    def head(self, trunk: base.Trunk) -> nn.Module:
        return LinearHead(trunk.size, len(self.stats["labels"]))  # (B, L) logits

    def target(self, column: pd.Series) -> torch.Tensor:
        return to_float_tensor(self._multi_hot(column))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None
        if self.config.class_weights == "balanced":
            positives = torch.tensor(self.stats["counts"], dtype=torch.float32, device=output.device)
            weight = (self.stats["rows"] - positives).clamp_min(1.0) / positives
        return nn.functional.binary_cross_entropy_with_logits(output, target, pos_weight=weight)

    def decode(self, output: torch.Tensor) -> dict:
        probabilities = torch.sigmoid(output).detach().numpy()
        labels = self.stats["labels"]
        chosen = probabilities >= self.config.threshold
        name = self.config.name
        decoded = {name: np.array([self.config.delimiter.join(label for label, on in zip(labels, row) if on)
                                   for row in chosen], dtype=object)}
        for position, label in enumerate(labels):
            decoded[f"{name}_probability_{label}"] = probabilities[:, position]
        return decoded

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        from sklearn import metrics as skm

        truth = target.numpy().astype(int)
        predicted = (torch.sigmoid(output).detach().numpy() >= self.config.threshold).astype(int)
        result = {
            "subset_accuracy": skm.accuracy_score(truth, predicted),
            "f1_micro": skm.f1_score(truth, predicted, average="micro", zero_division=0),
            "f1_macro": skm.f1_score(truth, predicted, average="macro", zero_division=0),
            "jaccard_samples": skm.jaccard_score(truth, predicted, average="samples", zero_division=0),
            "hamming_loss": skm.hamming_loss(truth, predicted),
        }
        per_label = skm.f1_score(truth, predicted, average=None, zero_division=0)
        for label, score in zip(self.stats["labels"], per_label):
            result[f"f1_{label}"] = score
        return {key: float(value) for key, value in result.items()}

    # ---- classic baseline and comparison ----
    def classic_encoder(self, style: str, seed: int) -> classic.Labels:
        return classic.Labels(self.config.name, self.config.delimiter, labels_per_row, "multi-hot")

    def classic_task(self) -> classic.Task:
        return classic.Task("multilabel", len(self.stats["labels"]))

    def classic_raw(self, scores: np.ndarray) -> torch.Tensor:
        return classic.logits(scores)

    def bootstrap_metric(self) -> tuple:
        return (lambda raw: (torch.sigmoid(raw) >= self.config.threshold).int().numpy()), classic.f1_micro

    # ---- serving ----
    def request_field(self) -> RequestField:
        delimiter, known = self.config.delimiter, ", ".join(self.stats["labels"][:20])
        example = self.stats["labels"][:1]
        return RequestField(
            list[str], f"labels, as a list or one {delimiter!r}-separated string; known: " + known, example,
            Widget("line", delimiter.join(example), hint=f"labels separated by {delimiter}: " + known),
            nullable=self.config.missing != "error", read=self._requested, shown=list[str] | str)

    def _requested(self, value):
        """A delimited string sent to a served model -> its labels; a list stays as it is."""
        if isinstance(value, str):
            return [label.strip() for label in value.split(self.config.delimiter) if label.strip()] or None
        return value

    def prediction_summary(self) -> dict:
        labels = self.stats["labels"]
        listed = ", ".join(str(label) for label in labels[:10]) + (", ..." if len(labels) > 10 else "")
        return {"predicts": f"tells which of {len(labels)} labels apply to '{self.name}' (any number per row): "
                            f"{listed}",
                "classes": dict(zip((str(label) for label in labels), self.stats["counts"]))}

    def served_metadata(self) -> dict:
        return {"values": self.stats["labels"]}

    # ---- export ----
    def export_entry(self) -> dict:
        labels = self.stats["labels"]
        return {"tensor": tensor_entry(self.config.name, "float32", ["rows", len(labels)]),
                "preprocess": {"encoding": "multi_hot", "labels": labels, "delimiter": self.config.delimiter,
                               "value": "multi-hot: 1.0 at the position of each label present (a cell is a list "
                                        "or a delimited string); unknown labels are ignored"}}

    def export_examples(self) -> list:
        return [self.stats["labels"][:1], self.stats["labels"][-1:]]

    def export_output(self) -> nn.Module:
        return Apply(torch.sigmoid)  # (B, L) logits -> (B, L) probabilities

    def export_output_entry(self) -> dict:
        labels = self.stats["labels"]
        return {"tensor": tensor_entry(f"{self.config.name}_probabilities", "float32", ["rows", len(labels)]),
                "labels": labels, "threshold": self.config.threshold, "delimiter": self.config.delimiter,
                "read": "one probability per label; predict those >= threshold"}

    # ---- explanation ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        return attribution.Point.at_output(self.config.name, encoder, values, torch.zeros_like(values))

    def baseline_description(self) -> str:
        return "the empty set"

    def explained_score(self, label: int | None) -> str:
        return attribution.logit_of(self.config.name, self.stats["labels"], label)

    def explained_labels(self) -> list:
        return self.stats["labels"]

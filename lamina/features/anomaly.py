"""The `anomaly` data type (an output only): an autoencoder's reconstruction error as an anomaly score.

The input layer and the hidden layers are the encoder (a narrow last hidden layer is the bottleneck);
this head is the decoder. It reconstructs a fixed view of the inputs (normalised numbers, binary and
category values as classes), so the network cannot lower its error by shrinking learned embeddings.
The loss is the mean score of the normal rows; the flagging threshold is the score quantile of the
normal validation rows at the configured false-positive rate, chosen after training and saved.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lamina.errors import ConfigError, DataError
from lamina.features import attribution, base, classic, plots
from lamina.features.common import as_strings, missing_mask

CAN_BE_OUTPUT = True
CAN_BE_INPUT = False
READ_AS = "string"  # labels are text, as normal / 0 / benign were seen
UNLABELLED = "<unlabelled>"  # the cells of a label column the data does not have (see Feature.absent_label)
NORMAL_WORDS = {"normal", "0", "false", "no", "n", "f", "benign", "legitimate", "negative", "ok"}


class Options(BaseModel):
    """Options of an anomaly output."""

    model_config = ConfigDict(extra="forbid")
    normal: str | None = Field(
        None, description="the label meaning normal when the column holds labels; inferred (normal, 0, false, "
                          "benign, ...) when not given. Without the column, every row is unlabelled")
    false_positive_rate: float = Field(
        0.01, gt=0.0, lt=0.5, description="share of normal validation rows allowed above the threshold: the "
                                          "threshold is their score quantile at 1 - this, chosen after training")
    decoder_size: int = Field(64, ge=1, description="width of the decoder's hidden layer")


class Decoder(nn.Module):
    """Rebuilds each input whose type says how (`Feature.reconstruction`: numbers, binary and category
    values) from the last hidden layer; the score of a row is its mean reconstruction error over them."""

    def __init__(self, input_size: int, parts: list[tuple[str, base.Reconstruction]], decoder_size: int):
        super().__init__()
        self.names = [name for name, _ in parts]
        self.rebuilt = [part for _, part in parts]
        self.widths = [part.width for part in self.rebuilt]
        self.normalizers = nn.ModuleList(part.normalizer for part in self.rebuilt)  # saved as before: same keys
        self.layers = nn.Sequential(nn.Linear(input_size, decoder_size), nn.ReLU(),
                                    nn.Linear(decoder_size, sum(self.widths)))

    def errors(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row, per-input reconstruction errors (B, inputs)."""
        pieces = torch.split(self.layers(hidden), self.widths, dim=1)  # each (B, width)
        columns = [part.error(piece, normalize(inputs[name]))
                   for name, part, piece, normalize in zip(self.names, self.rebuilt, pieces, self.normalizers)]
        return torch.stack(columns, dim=1)  # (B, inputs)

    def forward(self, hidden: torch.Tensor, context) -> torch.Tensor:  # -> (B,)
        return self.errors(hidden, context.inputs).mean(dim=1)


def _normal_label(values: list[str], chosen: str | None, name: str) -> str:
    """The label of normal rows: the configured one (which must occur), else the one normal-sounding value."""
    if chosen is not None:
        if chosen not in values:
            raise DataError(f"output '{name}': normal: '{chosen}' never occurs in the training rows, so there are "
                            f"no normal rows to learn from; the labels are {values[:10]}; set normal: to the "
                            f"label of normal rows")
        return chosen
    candidates = [value for value in values if value.strip().lower() in NORMAL_WORDS]
    if len(candidates) != 1:
        found = "none of them" if not candidates else f"several: {candidates}"
        raise DataError(f"output '{name}': cannot tell which label means normal (labels {values[:10]}; "
                        f"{found} looks like normal, 0 or false); set normal: <label> in the output's config")
    return candidates[0]


def rate_at(scores: np.ndarray, anomalous: np.ndarray, threshold: float) -> tuple[float, float]:
    """(detection rate, false-positive rate) when rows scoring above `threshold` are flagged."""
    flagged = scores > threshold
    detection = flagged[anomalous].mean() if anomalous.any() else float("nan")
    false_positive = flagged[~anomalous].mean() if (~anomalous).any() else float("nan")
    return float(detection), float(false_positive)


def threshold_at(scores: np.ndarray, false_positive_rate: float) -> float:
    """The score above which at most `false_positive_rate` of these (normal) scores lie."""
    return float(np.quantile(scores, 1.0 - false_positive_rate, method="higher"))


def measure(truth: np.ndarray, scores: np.ndarray, false_positive_rate: float,
            threshold: float | None = None) -> dict[str, float]:
    """Score quantiles; on labelled rows (truth 0 normal, 1 anomalous, NaN unlabelled) with both kinds,
    ROC AUC, PR AUC and the detection rate at `false_positive_rate` of these rows' normal scores; with
    a `threshold`, the share flagged and (labelled) the detection and false-positive rates it gives."""
    from sklearn import metrics as skm

    result = {"score_median": float(np.median(scores)), "score_p99": float(np.quantile(scores, 0.99))}
    labelled = ~np.isnan(truth)
    if threshold is not None:
        result["flagged"] = float(np.mean(scores > threshold))
    anomalous = truth[labelled] == 1
    if labelled.any() and anomalous.any() and (~anomalous).any():
        kept = scores[labelled]
        result["roc_auc"] = float(skm.roc_auc_score(anomalous, kept))
        result["pr_auc"] = float(skm.average_precision_score(anomalous, kept))
        at = threshold_at(kept[~anomalous], false_positive_rate)
        result["detection_at_target_fpr"] = rate_at(kept, anomalous, at)[0]
        if threshold is not None:
            result["detection_rate"], result["false_positive_rate"] = rate_at(kept, anomalous, threshold)
    return result


class Feature(base.OutputFeature):
    MAIN_METRIC = "roc_auc"

    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    def fit(self, column: pd.Series) -> None:
        name = self.config.name
        strings = as_strings(column[~missing_mask(column)])
        values = sorted(set(strings) - {UNLABELLED})
        if not values:
            if self.config.normal is not None:
                raise DataError(f"output '{name}' sets normal: '{self.config.normal}' but the training rows hold "
                                f"no labels; remove normal: to train on every row as unlabelled")
            self.stats = {"labelled": False, "labels": ["normal", "anomalous"], "normal_rows": int(len(column))}
            return
        normal = _normal_label(values, self.config.normal, name)
        others = [value for value in values if value != normal]
        self.stats = {"labelled": True, "labels": [normal, others[0] if len(others) == 1 else "anomalous"],
                      "normal_rows": int((strings == normal).sum()), "anomalous_labels": others[:50]}

    def head(self, trunk: base.Trunk) -> nn.Module:
        inputs = trunk.inputs
        parts = [(feature.config.name, feature.reconstruction()) for feature in inputs]
        parts = [(name, part) for name, part in parts if part is not None]
        if not parts:
            from lamina.features import REGISTRY  # late: this module is one of the registry's

            kinds = sorted({feature.type_name for feature in inputs})
            rebuilt = [name for name, module in REGISTRY.items()
                       if module.Feature.reconstruction is not base.Feature.reconstruction]
            raise ConfigError(f"anomaly output '{self.config.name}' has no inputs to reconstruct: it rebuilds "
                              f"{', '.join(rebuilt)} inputs, and the inputs are of type {kinds}; add such "
                              f"inputs")
        return Decoder(trunk.size, parts, self.config.decoder_size)

    def target(self, column: pd.Series) -> torch.Tensor:
        """0 normal, 1 anomalous, NaN unlabelled."""
        strings = as_strings(column)
        normal = self.stats["labels"][0]
        near = (strings != normal) & (strings.str.strip().str.lower() == normal.strip().lower())
        if near.any():
            position = int(np.argmax(near.to_numpy()))
            raise DataError(f"column '{self.config.name}' row {column.index[position]}: label "
                            f"{column.iloc[position]!r} differs from the normal label '{normal}' only in case or "
                            f"spaces, so it would count as an anomaly; write the normal label the same way everywhere")
        values = np.where(strings == normal, 0.0, 1.0).astype(np.float32)
        values[(strings == UNLABELLED).to_numpy() | missing_mask(column)] = np.nan
        return torch.from_numpy(values)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean score of the normal (and unlabelled) rows: anomalous rows teach the decoder nothing."""
        normal = target != 1  # NaN != 1 too
        return output[normal].mean() if normal.any() else output.sum() * 0.0

    def training_rows(self, column: pd.Series) -> np.ndarray:
        """Which training rows the model learns from: all but the labelled anomalies (fit made sure
        that normal rows exist)."""
        return self.target(column).numpy() != 1

    def absent_label(self) -> str:
        """Labels are optional: without the column every row is unlabelled."""
        return UNLABELLED

    def stratifies(self) -> bool:
        return True

    @property
    def threshold(self) -> float:
        return float(self.stats.get("threshold", np.inf))

    def tunes(self) -> bool:
        return True

    def tunes_without_validation(self) -> bool:
        return True  # a threshold is needed to decide; the training rows' scores are better than none

    def tuned_setting(self) -> str:
        return "the anomaly threshold"

    def tune(self, target: torch.Tensor | None, output: torch.Tensor | None) -> None:
        """After training: the threshold at the false-positive rate, on the normal validation rows."""
        if target is None or output is None:
            return
        scores = output.detach().double().numpy()[target.numpy() != 1]
        if len(scores) == 0:
            raise DataError(f"output '{self.config.name}': no normal rows to choose the threshold on; give normal "
                            f"rows in the validation split")
        rate = self.config.false_positive_rate
        if len(scores) < 1.0 / rate:
            warnings.warn(f"output '{self.config.name}': only {len(scores)} normal rows to choose the threshold at "
                          f"false_positive_rate {rate}; the realised rate will be rough", stacklevel=2)
        self.stats["threshold"] = threshold_at(scores, rate)

    def decode(self, output: torch.Tensor) -> dict:
        scores = output.detach().double().numpy()
        labels = np.array(self.stats["labels"], dtype=object)
        name = self.config.name
        return {name: labels[(scores > self.threshold).astype(int)], f"{name}_score": scores}

    def metrics(self, target: torch.Tensor, output: torch.Tensor, threshold: float | None = None) -> dict[str, float]:
        """See `measure`; `threshold` defaults to the tuned one (none before tuning)."""
        chosen = threshold if threshold is not None else self.stats.get("threshold")
        return measure(target.numpy().astype(np.float64), output.detach().double().numpy(),
                       self.config.false_positive_rate, chosen)

    # ---- classic baseline and comparison: an isolation forest ----
    def classic_task(self) -> classic.Task:
        if not self.stats.get("labelled"):
            raise base.Unsupported(
                f"output '{self.config.name}' is an anomaly score trained without labels: there are no labels to "
                f"measure either model on; add the label column (normal rows and anomalies) to compare with an "
                f"isolation forest")
        return classic.Task("anomaly")

    def classic_raw(self, scores: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(scores.astype(np.float64))  # both are scores: higher is more anomalous

    def classic_threshold(self, truth: np.ndarray, scores: np.ndarray) -> float:
        """The classic detector's own threshold: at the same false-positive rate on the normal rows."""
        return threshold_at(scores[truth != 1], self.config.false_positive_rate)

    def bootstrap_metric(self) -> tuple:
        return (lambda raw: raw.double().numpy()), classic.roc_auc

    # ---- explanation and report ----
    def prediction_summary(self) -> dict:
        normal, anomalous = self.stats["labels"]
        return {"predicts": f"scores how unusual each row is and flags it '{anomalous}' (rather than "
                            f"'{normal}') above a threshold set for a {self.config.false_positive_rate:.2%} "
                            f"false-positive rate on normal rows ('{self.name}')"}

    def explained_score(self, label: int | None) -> str:
        return (f"{self.config.name} score = mean reconstruction error of the rebuilt inputs; each input's share "
                f"(threshold {self.stats.get('threshold', float('nan')):.4g})")

    def explain_rows(self, model, frame: pd.DataFrame, method: str) -> dict:
        """An anomaly score is the mean of the inputs' reconstruction errors, so each rebuilt input's
        error / count is its exact share of the score: which values looked unlike the normal rows.
        (Inputs that are not rebuilt, such as text or ids, shape the encoding but take no share.)"""
        if method not in ("integrated_gradients", attribution.RECONSTRUCTION):
            raise ConfigError(f"an anomaly score is explained by its reconstruction errors (method "
                              f"{attribution.RECONSTRUCTION}); leave method out instead of '{method}'")
        name, rows = self.config.name, []
        network = model.network_.cpu().eval()  # explained on the CPU, whatever trained the model
        head = network.heads[[feature.config.name for feature in model.outputs_].index(name)]
        for start in range(0, len(frame), 4096):  # no gradients: large chunks
            part = frame.iloc[start:start + 4096]
            inputs = {feature.config.name: feature.transform(part[feature.config.name]) for feature in model.inputs_}
            with torch.no_grad():
                errors = head.errors(network.encode(inputs)[0], inputs) / len(head.names)  # (B, rebuilt inputs)
            decoded = self.decode(errors.sum(1))
            for position, (row, shares) in enumerate(zip(part.index, errors.tolist())):
                score = float(decoded[f"{name}_score"][position])
                rows.append({"row": attribution.plain(row), "prediction": attribution.plain(decoded[name][position]),
                             "output_value": score, "baseline_value": 0.0, "attribution_sum": float(sum(shares)),
                             "delta": float(sum(shares)) - score, "scores": dict(zip(head.names, shares)),
                             "tokens": {}, "heat_maps": {}, "steps": {},
                             "values": {f.config.name: attribution.plain(part[f.config.name].iloc[position])
                                        for f in model.inputs_ if f.config.name in head.names}})
        return {"output": name, "method": attribution.RECONSTRUCTION, "complete": True,
                "explained": self.explained_score(None),
                "baselines": {input_name: "a perfect reconstruction (error 0)" for input_name in head.names},
                "rows": rows}

    def evaluation_data(self, rows: pd.DataFrame, predicted: pd.DataFrame, inputs: list) -> dict:
        target, threshold = self.target(rows[self.config.name]).numpy(), self.threshold
        return {"type": self.config.type, "labels": self.stats["labels"],
                "truth": [None if np.isnan(value) else int(value) for value in target],
                "score": plots.floats(predicted[f"{self.config.name}_score"]),
                "threshold": float(threshold) if np.isfinite(threshold) else None}

    def report_plots(self, data: dict) -> list[str]:
        """Histograms of the scores (normal and anomalous rows apart when labelled) and the threshold."""
        scores = np.array(data["score"], dtype=np.float64)
        truth = np.array([np.nan if value is None else value for value in data["truth"]], dtype=np.float64)
        figure, axes = plots.figure()
        bins = np.histogram_bin_edges(np.log10(np.maximum(scores, 1e-6)), bins=40)
        groups = [(data["labels"][0], truth == 0), (data["labels"][1], truth == 1), ("unlabelled", np.isnan(truth))]
        for label, rows in groups:
            if rows.any():
                axes.hist(np.log10(np.maximum(scores[rows], 1e-6)), bins=bins, alpha=0.6, density=True, label=label)
        if data["threshold"] is not None:
            axes.axvline(np.log10(max(data["threshold"], 1e-6)), color="black", linestyle=":", label="threshold")
        axes.set(xlabel="log10 anomaly score", ylabel="density", title="anomaly scores")
        axes.legend()
        return [plots.png(figure)]

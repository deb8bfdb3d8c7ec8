"""Which inputs drove a prediction: attributions (Captum's Integrated Gradients by default) for
every input type through one API, and global importance (mean |attribution|, permutation).

Each input is attributed at one *point* of its encoder, compared with a *baseline* there; the input
type says which (`attribution_point`, see lamina/features/attribution.py): number, binary, category,
set and frozen-text inputs at the encoder's output vector; text at its token embeddings (a score per
token); images at their pixels (a heat map). Attributions of a point are summed over its embedding /
channel dimensions, so with Integrated Gradients the feature scores of a row add up to
output(row) - output(baseline).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lamina.data import tensors
from lamina.errors import ConfigError, DataError, did_you_mean
from lamina.features.attribution import RECONSTRUCTION, Point, plain
from lamina.features.base import HeadContext, Unsupported
from lamina.features.columns import LazyColumn

METHODS = ("integrated_gradients", "saliency", "input_x_gradient", "deeplift", "gradient_shap", "feature_ablation")
COMPLETE_METHODS = ("integrated_gradients", "deeplift", "gradient_shap")  # scores sum to output - baseline
CHUNK_ROWS = 16  # rows attributed at once; Integrated Gradients runs `steps` copies of each


def attribution_point(feature, encoder: nn.Module, values: Any) -> Point:
    """The point and baseline for one input (its type's `attribution_point`)."""
    if isinstance(values, LazyColumn):  # large image sets are read lazily; these few rows fit
        values = values[:]
    try:
        return feature.attribution_point(encoder, values)
    except Unsupported as error:
        raise ConfigError(str(error)) from None


class Completion(nn.Module):
    """The network from the attribution points on: the rest of each encoder, the hidden layers and
    the explained head. An nn.Module holding the network, so DeepLift finds its activations."""

    def __init__(self, network: nn.Module, points: list[Point], head: int):
        super().__init__()
        self.network, self.points, self.head = network, points, head

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        values, paddings = tensors[:len(self.points)], iter(tensors[len(self.points):])
        vectors = [point.finish(value, next(paddings)) if point.padding is not None else point.finish(value)
                   for point, value in zip(self.points, values)]
        hidden = self.network.trunk(torch.cat(vectors, dim=1))  # (B, H)
        return self.network.heads[self.head](hidden, HeadContext())  # (B,) or (B, K)


@dataclass
class Selection:
    """Which output is explained, and which of its classes (`label`; None: each row's predicted one)."""

    feature: Any
    head: int
    label: int | None = None

    def classes(self, output: torch.Tensor) -> list[int] | None:
        if output.ndim == 1:
            return None
        return [self.label] * len(output) if self.label is not None else output.argmax(1).tolist()

    def describe(self) -> str:
        return self.feature.explained_score(self.label)


def select_output(model, output: str | None, target: Any) -> Selection:
    """The explained output: the first by default; refuses outputs that cannot be explained (generated
    text) and unknown labels."""
    names = [feature.config.name for feature in model.outputs_]
    name = names[0] if output is None else output
    if name not in names:
        raise ConfigError(f"output '{name}' is not an output of this model{did_you_mean(name, names)}")
    feature = model.outputs_[names.index(name)]
    try:
        feature.explained_score(None)  # its type refuses here when it cannot be explained
    except Unsupported as error:
        raise ConfigError(str(error)) from None
    if target is None:
        return Selection(feature, names.index(name))
    labels = feature.explained_labels()
    if labels is None:
        raise ConfigError(f"target= picks a label of a category or set output (or an item of a ranking), but "
                          f"'{name}' is {feature.type_name}; leave target out (a binary output explains its "
                          f"positive class)")
    labels = [str(label) for label in labels]
    if str(target) not in labels:
        raise ConfigError(f"target {target!r} is not a label of output '{name}'{did_you_mean(target, labels)}")
    return Selection(feature, names.index(name), labels.index(str(target)))


def _captum():
    try:
        from captum import attr
    except ImportError:
        raise ConfigError("explaining needs Captum: pip install 'lamina[explain]' (or pip install captum)") from None
    return attr


def _ablation_masks(points: list[Point]) -> tuple[torch.Tensor, ...]:
    """Feature-ablation groups: a whole vector, one token or time step, or one patch of an image."""
    masks, start = [], 0
    for point in points:
        mask = point.ablation_mask(start)
        masks.append(mask)
        start = int(mask.max()) + 1
    return tuple(masks)


def attribute(method: str, completion: Completion, points: list[Point], classes, steps: int) -> list[torch.Tensor]:
    """Captum attributions, one tensor per point, shaped like its values."""
    attr = _captum()
    inputs = tuple(point.values.detach().requires_grad_() for point in points)  # gradient methods need it
    baselines = tuple(point.baseline for point in points)
    extra = tuple(point.padding for point in points if point.padding is not None) or None
    common = {"target": classes, "additional_forward_args": extra}
    if method == "integrated_gradients":
        result = attr.IntegratedGradients(completion).attribute(inputs, baselines, n_steps=steps, **common)
    elif method == "saliency":  # magnitudes of the gradient (Captum's default abs=True)
        result = attr.Saliency(completion).attribute(inputs, **common)
    elif method == "input_x_gradient":
        result = attr.InputXGradient(completion).attribute(inputs, **common)
    elif method == "deeplift":
        with warnings.catch_warnings():  # Captum announces the hooks it sets on activations and removes
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            result = attr.DeepLift(completion).attribute(inputs, baselines, **common)
    elif method == "gradient_shap":
        with torch.random.fork_rng():  # seeded samples without touching the caller's generator
            torch.manual_seed(0)
            result = attr.GradientShap(completion).attribute(inputs, baselines, n_samples=steps, stdevs=0.0,
                                                             **common)
    else:  # feature_ablation: each element of a group holds the group's effect; spread it so sums count it once
        masks = _ablation_masks(points)
        result = attr.FeatureAblation(completion).attribute(inputs, baselines, feature_mask=masks,
                                                            perturbations_per_eval=16, **common)
        result = tuple(values / torch.bincount(mask.expand_as(values[:1]).flatten())[mask]
                       for values, mask in zip(result, masks))
    return [values.detach() for values in result]


def _row_results(frame: pd.DataFrame, points: list[Point], attributions: list[torch.Tensor]) -> list[dict]:
    """Per row: a score per input, tokens with scores, heat maps (H x W nested lists), time steps."""
    rows = [{"row": plain(index), "values": {}, "scores": {}, "tokens": {}, "heat_maps": {}, "steps": {}}
            for index in frame.index]
    for point, values in zip(points, attributions):
        for position, row in enumerate(rows):
            point.record(row, position, values, frame[point.name].iloc[position])
    return rows


def _explain_chunk(model, frame: pd.DataFrame, method: str, selection: Selection, steps: int) -> list[dict]:
    network = model.network_.cpu().eval()  # attributions are computed on the CPU, whatever trained the model
    table = tensors(frame, model.inputs_)["inputs"]
    points = [attribution_point(feature, encoder, table[feature.config.name])
              for feature, encoder in zip(model.inputs_, network.encoders)]
    completion = Completion(network, points, selection.head)
    extra = [point.padding for point in points if point.padding is not None]
    with torch.no_grad():
        output = completion(*[point.values for point in points], *extra)
        base = completion(*[point.baseline for point in points], *extra)
    classes = selection.classes(output)
    attributions = attribute(method, completion, points, classes, steps)
    picked = output if classes is None else output[torch.arange(len(output)), classes]  # (B,)
    base = base if classes is None else base[torch.arange(len(base)), classes]
    decoded = selection.feature.decode(output.detach())  # the user-facing prediction
    name = selection.feature.config.name
    rows = _row_results(frame, points, attributions)
    for position, row in enumerate(rows):
        total = sum(row["scores"].values())
        row.update({"prediction": plain(decoded[name][position]), "output_value": float(picked[position]),
                    "baseline_value": float(base[position]), "attribution_sum": total,
                    "delta": total - float(picked[position] - base[position])})
        if f"{name}_probability" in decoded:
            row["probability"] = plain(decoded[f"{name}_probability"][position])
        if classes is not None:
            row["label"] = plain(selection.feature.explained_labels()[classes[position]])
    return rows


def explain(model, frame: pd.DataFrame, method: str = "integrated_gradients", output: str | None = None,
            target: Any = None, steps: int = 50) -> dict:
    """Attributions for every row of `frame` (see Model.explain for the structure returned)."""
    if method not in METHODS + (RECONSTRUCTION,):
        raise ConfigError(f"unknown explanation method '{method}'{did_you_mean(method, METHODS)}")
    selection = select_output(model, output, target)
    own = selection.feature.explain_rows(model, frame, method)  # e.g. an anomaly score's reconstruction errors
    if own is not None:
        return own
    if method == RECONSTRUCTION:
        raise ConfigError(f"method {RECONSTRUCTION} explains anomaly scores only; '{selection.feature.config.name}' "
                          f"is {selection.feature.type_name}: choose one of {', '.join(METHODS)}")
    _captum()  # fail before any work when Captum is missing
    rows = []
    for start in range(0, len(frame), CHUNK_ROWS):
        rows += _explain_chunk(model, frame.iloc[start:start + CHUNK_ROWS], method, selection, steps)
    return {"output": selection.feature.config.name, "method": method, "explained": selection.describe(),
            "complete": method in COMPLETE_METHODS,
            "baselines": {feature.config.name: feature.baseline_description() for feature in model.inputs_},
            "rows": rows}


def permutation_importance(model, frame: pd.DataFrame, selection: Selection, repeats: int, seed: int) -> dict:
    """How much the output's main metric worsens when one input column is shuffled across the rows."""
    name = selection.feature.config.name
    metric, direction = selection.feature.main_metric()

    def measure(table: pd.DataFrame) -> float:
        result = model.evaluate(table)[name]
        if metric not in result:
            raise DataError(f"metric {metric} of output '{name}' cannot be measured on these rows (e.g. only one "
                            f"class is present); give more varied labelled rows")
        return float(result[metric])

    reference = measure(frame)
    generator = np.random.default_rng(seed)
    result = {}
    for input_feature in model.inputs_:
        column = input_feature.config.name
        drops = []
        for _ in range(repeats):
            shuffled = frame.copy()
            cells = frame[column].to_numpy(dtype=object)[generator.permutation(len(frame))]
            shuffled[column] = pd.Series(cells, index=frame.index, dtype=frame[column].dtype
                                         if frame[column].dtype != object else object)
            score = measure(shuffled)
            drops.append(reference - score if direction == "max" else score - reference)
        result[column] = {"mean": float(np.mean(drops)), "std": float(np.std(drops)), "drops": drops}
    ordered = dict(sorted(result.items(), key=lambda item: -item[1]["mean"]))
    return {"metric": metric, "direction": direction, "reference": reference, "features": ordered}


def importance(model, frame: pd.DataFrame, output: str | None = None, target: Any = None,
               method: str = "integrated_gradients", rows: int = 200, repeats: int = 3, seed: int = 0,
               steps: int = 50) -> dict:
    """Global importance of each input on labelled rows: the mean |attribution| over a seeded sample
    of `rows` rows, and permutation importance over all of them (see Model.importance)."""
    selection = select_output(model, output, target)
    sample = frame.sample(min(rows, len(frame)), random_state=seed) if len(frame) > rows else frame
    explained = explain(model, sample, method, output, target, steps)
    names = [feature.config.name for feature in model.inputs_]
    mean_absolute = {name: float(np.mean([abs(row["scores"][name]) for row in explained["rows"]])) for name in names}
    return {"output": selection.feature.config.name, "method": explained["method"], "rows": len(frame),
            "attribution_rows": len(sample),
            "mean_absolute_attribution": dict(sorted(mean_absolute.items(), key=lambda item: -item[1])),
            "permutation": _permutation_or_none(model, frame, selection, repeats, seed)}


def _permutation_or_none(model, frame: pd.DataFrame, selection: Selection, repeats: int, seed: int) -> dict | None:
    """Permutation importance; None for an output whose labels are optional (an anomaly score) on rows
    without the labels its main metric needs (its ROC AUC: both normal and anomalous ones)."""
    try:
        return permutation_importance(model, frame, selection, repeats, seed)
    except DataError:
        if selection.feature.absent_label() is not None:  # labels optional: rows may lack them
            return None
        raise

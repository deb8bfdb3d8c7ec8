"""Which inputs drove a prediction: attributions (Captum's Integrated Gradients by default) for
every input type through one API, and global importance (mean |attribution|, permutation).

Each input is attributed at one *point* of its encoder, compared with a *baseline* there:
number, binary, category, set and frozen-text inputs at the encoder's output vector; text at
its token embeddings (a score per token); images at their pixels (a heat map). Attributions of a
point are summed over its embedding / channel dimensions, so with Integrated Gradients the
feature scores of a row add up to output(row) - output(baseline).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from lamina import features
from lamina.data import LazyColumn, tensors
from lamina.errors import ConfigError, DataError, did_you_mean

METHODS = ("integrated_gradients", "saliency", "input_x_gradient", "deeplift", "gradient_shap", "feature_ablation")
COMPLETE_METHODS = ("integrated_gradients", "deeplift", "gradient_shap")  # scores sum to output - baseline
CHUNK_ROWS = 16  # rows attributed at once; Integrated Gradients runs `steps` copies of each
ABLATION_GROUPS = 16  # an image is ablated in at most this many x this many patches
BASELINES = {
    "number": "the training mean (with normalize: log, the mean on the log scale)",
    "binary": "halfway between the two values (0 on the ±1 scale)",
    "category": "the unknown value (its embedding: zeros)",
    "set": "the empty set",
    "id": "the vector of a missing id",
    "text": "the same tokens with every word's embedding set to zeros (the padding token's); markers such as "
            "[BOS] kept",
    "frozen_text": "the sentence vector of the empty text",
    "image": "a plain image of the training mean colour",
    "audio": "the training mean log-mel spectrogram (every mel bin at its training mean)",
    "timeseries": "each channel at its training mean at every real time step (padding kept)",
}


@dataclass
class Point:
    """Where one input is attributed. The method varies `values` (B, ...) between `baseline` and
    them; `finish(values[, padding])` runs the rest of the encoder to its output vector (B, D).
    `kind` says how attributions are summed: vector (one score), tokens (B, T, E), pixels
    (B, C, H, W; also an audio input's log-mel spectrogram (B, 1, mels, frames)), steps (B, T, C):
    a score per time step of a sequence, summed over its channels."""

    name: str
    kind: str
    values: torch.Tensor
    baseline: torch.Tensor
    finish: Callable[..., torch.Tensor]
    padding: torch.Tensor | None = None  # (B, T), tokens only: True where a position is padding
    tokens: list[list[str]] = field(default_factory=list)  # tokens only: the word tokens of each row
    words: torch.Tensor | None = None  # (B, T), tokens only: True where `tokens` has an entry


def _identity(vector: torch.Tensor) -> torch.Tensor:
    return vector


@torch.no_grad()
def vector_point(name: str, encoder: nn.Module, values: torch.Tensor, baseline_input: torch.Tensor) -> Point:
    """At the encoder's output: discrete inputs (codes, ±1, multi-hot) cannot be moved in small
    steps, but their vectors can."""
    return Point(name, "vector", encoder(values).float(), encoder(baseline_input).float(), _identity)


def raw_point(name: str, encoder: nn.Module, values: torch.Tensor, baseline: torch.Tensor, kind: str) -> Point:
    """At the input itself: float inputs whose every element means something (pixels, the time
    steps of a sequence)."""
    return Point(name, kind, values.float(), baseline.float().expand_as(values).contiguous(), encoder)


def _marker_ids(vocabulary) -> list[int]:
    """Ids of the tokens the tokenizer adds around every text ([BOS], [CLS], [SEP], padding): not
    words, so the baseline keeps them. The unknown token stands for a word and is attributed."""
    unknown = getattr(vocabulary.model, "unk_token", None)
    return [index for index, token in vocabulary.get_added_tokens_decoder().items()
            if token.special and token.content != unknown]


@torch.no_grad()
def token_point(feature, encoder: nn.Module, ids: torch.Tensor) -> Point:
    """At the token embeddings: one score per word token, read back as strings with the tokenizer.
    Baseline: every word token's embedding set to zeros (the padding token's), markers kept."""
    from lamina.features.text_encoders import PretrainedEncoder, trim

    ids, padding = trim(ids)  # (B, T), (B, T)
    table = encoder.model.get_input_embeddings() if isinstance(encoder, PretrainedEncoder) else encoder.embedding
    embeddings = table(ids).float()  # (B, T, E)
    vocabulary = feature._tokenizers["plain"]
    marker = torch.isin(ids, torch.tensor(_marker_ids(vocabulary), dtype=ids.dtype))  # (B, T)
    baseline = torch.where(marker.unsqueeze(-1), embeddings, torch.zeros_like(embeddings))
    words = ~marker & ~padding  # (B, T): the positions listed with a score each
    tokens = [[vocabulary.id_to_token(token) or "?" for token, word in zip(row, keep) if word]
              for row, keep in zip(ids.tolist(), words.tolist())]

    def finish(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return encoder.from_embeddings(values, mask)[0]

    return Point(feature.config.name, "tokens", embeddings, baseline, finish, padding, tokens, words)


def number_baseline(feature) -> float:
    """The training mean; with normalize: log, the mean on the log scale (for a skewed column such as
    capital gains, mostly 0 with a few large values, the plain mean is a value hardly anyone has)."""
    stats = feature.stats
    if feature.config.normalize == "log":
        return float(np.sign(stats["shift"]) * np.expm1(abs(stats["shift"])))
    return float(stats["mean"])


def attribution_point(feature, encoder: nn.Module, column: pd.Series, values: Any) -> Point:
    """The point and baseline for one input (the baselines are listed in BASELINES)."""
    from lamina.features.text_encoders import Precomputed

    kind, name = feature.config.type, feature.config.name
    if isinstance(values, LazyColumn):  # large image sets are read lazily; these few rows fit
        values = values[:]
    if kind == "image":
        mean = torch.tensor(feature.stats["mean"]).view(1, -1, 1, 1)  # (1, C, 1, 1)
        return raw_point(name, encoder, values, mean, "pixels")
    if kind == "timeseries":  # (B, T, C + 1): the mask channel equals its baseline, so it gets no score
        return raw_point(name, encoder, values, feature.attribution_baseline(values), "steps")
    if kind == "audio":  # at the normalised log-mel spectrogram, whose zeros are the training mean
        with torch.no_grad():
            spectrogram = encoder.spectrogram(values)  # (B, 1, mels, frames)
        return Point(name, "pixels", spectrogram, torch.zeros_like(spectrogram), encoder.from_spectrogram)
    if kind == "text" and isinstance(encoder, Precomputed):
        return vector_point(name, encoder, values, feature.transform(pd.Series([""])).expand_as(values))
    if kind == "text":
        return token_point(feature, encoder, values)
    rows = len(values)
    baseline = {"number": lambda: torch.full((rows,), number_baseline(feature)),
                "binary": lambda: torch.full((rows,), 0.5),  # encoded as 0.5 * 2 - 1 = 0
                "category": lambda: torch.zeros(rows, dtype=torch.long),
                "id": lambda: torch.zeros(rows, dtype=torch.long),  # row 0: a missing id
                "set": lambda: torch.zeros_like(values)}
    if kind not in baseline:
        raise ConfigError(f"input '{name}' of type {kind} cannot be explained yet; give explain() a model "
                          f"whose inputs are of types {', '.join(BASELINES)}")
    return vector_point(name, encoder, values, baseline[kind]())


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
        return self.network.heads[self.head](hidden)  # (B,) or (B, K)


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
        kind, name, stats = self.feature.config.type, self.feature.config.name, self.feature.stats
        if kind == "binary":
            scaled = f"logit / {stats['temperature']:.4g}" if stats.get("temperature", 1.0) != 1.0 else "logit"
            return f"logit (log-odds) of {name} = {stats['labels'][1]!r}; probability = sigmoid({scaled})"
        if kind == "number":
            return f"{name} in normalised units (the head's output before de-normalising)"
        if kind == "ranking":
            which = repr(stats["items"][self.label]) if self.label is not None else \
                "each row's best-scored item (its training choices included)"
            return f"score of {name} = {which}"
        which = repr(stats["labels"][self.label]) if self.label is not None else "the predicted label of each row"
        return f"logit of {name} = {which}"


RECONSTRUCTION = "reconstruction_error"  # how anomaly scores are explained


def _labels(feature) -> list:
    """The classes of a classifier's output, or the catalogue items of a ranking."""
    return feature.stats["labels"] if "labels" in feature.stats else feature.stats["items"]


def select_output(model, output: str | None, target: Any) -> Selection:
    """The explained output: the first by default; refuses text outputs and unknown labels."""
    names = [feature.config.name for feature in model.outputs_]
    name = names[0] if output is None else output
    if name not in names:
        raise ConfigError(f"output '{name}' is not an output of this model{did_you_mean(name, names)}")
    feature = model.outputs_[names.index(name)]
    kind = feature.config.type
    if getattr(feature, "generates", False):
        raise ConfigError(f"output '{name}' is generated text, which cannot be explained here; choose a "
                          f"binary, category, number or set output with output=")
    if target is None:
        return Selection(feature, names.index(name))
    if kind not in ("category", "set", "ranking"):
        raise ConfigError(f"target= picks a label of a category or set output (or an item of a ranking), but "
                          f"'{name}' is {kind}; leave target out (a binary output explains its positive class)")
    labels = [str(label) for label in _labels(feature)]
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
    """Feature-ablation groups: a whole vector, one token, or one patch of an image."""
    masks, start = [], 0
    for point in points:
        shape = point.values.shape
        if point.kind == "vector":
            mask = torch.full((1, shape[1]), start)
        elif point.kind == "pixels":
            height, width = shape[2], shape[3]
            rows = torch.arange(height) * min(ABLATION_GROUPS, height) // height
            columns = torch.arange(width) * min(ABLATION_GROUPS, width) // width
            mask = start + (rows[:, None] * min(ABLATION_GROUPS, width) + columns[None, :]).view(1, 1, height, width)
        else:  # tokens, steps: one group per position
            mask = start + torch.arange(shape[1]).view(1, -1, 1)
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


def _plain(value: Any) -> Any:
    """A cell as a JSON value for the report (an image array is left out)."""
    if isinstance(value, np.ndarray):
        return None if value.ndim > 1 else [_plain(item) for item in value]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _row_results(frame: pd.DataFrame, points: list[Point], attributions: list[torch.Tensor]) -> list[dict]:
    """Per row: a score per input, tokens with scores, heat maps (H x W nested lists)."""
    rows = [{"row": _plain(index), "values": {}, "scores": {}, "tokens": {}, "heat_maps": {}, "steps": {}}
            for index in frame.index]
    for point, values in zip(points, attributions):
        for position, row in enumerate(rows):
            if point.kind == "pixels":
                heat_map = values[position].sum(0)  # (H, W): summed over channels
                row["heat_maps"][point.name] = heat_map.tolist()
                row["scores"][point.name] = float(heat_map.sum())
                continue
            row["values"][point.name] = _plain(frame[point.name].iloc[position])
            if point.kind == "tokens":
                per_token = values[position].sum(-1)  # (T,); markers score 0 with a baseline method
                row["tokens"][point.name] = [[token, float(score)] for token, score in
                                             zip(point.tokens[position], per_token[point.words[position]])]
                row["scores"][point.name] = float(per_token[~point.padding[position]].sum())
            elif point.kind == "steps":  # a score per real time step, summed over the channels
                real = point.values[position, :, -1] > 0  # (T,)
                per_step = values[position][real].sum(-1)
                row["steps"][point.name] = per_step.tolist()
                row["scores"][point.name] = float(per_step.sum())
            else:
                row["scores"][point.name] = float(values[position].sum())
    return rows


def _explain_chunk(model, frame: pd.DataFrame, method: str, selection: Selection, steps: int) -> list[dict]:
    network = model.network_.eval()
    table = tensors(frame, model.inputs_)["inputs"]
    points = [attribution_point(feature, encoder, frame[feature.config.name], table[feature.config.name])
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
        row.update({"prediction": _plain(decoded[name][position]), "output_value": float(picked[position]),
                    "baseline_value": float(base[position]), "attribution_sum": total,
                    "delta": total - float(picked[position] - base[position])})
        if f"{name}_probability" in decoded:
            row["probability"] = _plain(decoded[f"{name}_probability"][position])
        if classes is not None:
            row["label"] = _plain(_labels(selection.feature)[classes[position]])
    return rows


def explain(model, frame: pd.DataFrame, method: str = "integrated_gradients", output: str | None = None,
            target: Any = None, steps: int = 50) -> dict:
    """Attributions for every row of `frame` (see Model.explain for the structure returned)."""
    if method not in METHODS + (RECONSTRUCTION,):
        raise ConfigError(f"unknown explanation method '{method}'{did_you_mean(method, METHODS)}")
    selection = select_output(model, output, target)
    if getattr(selection.feature, "reads_inputs", False):
        return explain_anomaly(model, frame, selection, method)
    if method == RECONSTRUCTION:
        raise ConfigError(f"method {RECONSTRUCTION} explains anomaly scores only; '{selection.feature.config.name}' "
                          f"is {selection.feature.config.type}: choose one of {', '.join(METHODS)}")
    _captum()  # fail before any work when Captum is missing
    rows = []
    for start in range(0, len(frame), CHUNK_ROWS):
        rows += _explain_chunk(model, frame.iloc[start:start + CHUNK_ROWS], method, selection, steps)
    kinds = {feature.config.name: ("frozen_text" if feature.config.type == "text" and
                                   feature.config.encoder == "pretrained" and not feature.config.fine_tune
                                   else feature.config.type) for feature in model.inputs_}
    return {"output": selection.feature.config.name, "method": method, "explained": selection.describe(),
            "complete": method in COMPLETE_METHODS,
            "baselines": {name: BASELINES.get(kind, "") for name, kind in kinds.items()}, "rows": rows}


def explain_anomaly(model, frame: pd.DataFrame, selection: Selection, method: str) -> dict:
    """An anomaly score is the mean of the inputs' reconstruction errors, so each rebuilt input's
    error / count is its exact share of the score: which values looked unlike the normal rows.
    (Inputs that are not rebuilt, such as text or ids, shape the encoding but take no share.)"""
    if method not in ("integrated_gradients", RECONSTRUCTION):
        raise ConfigError(f"an anomaly score is explained by its reconstruction errors (method {RECONSTRUCTION}); "
                          f"leave method out instead of '{method}'")
    network, head = model.network_.eval(), model.network_.heads[selection.head]
    name, rows = selection.feature.config.name, []
    for start in range(0, len(frame), 4096):  # no gradients: large chunks
        part = frame.iloc[start:start + 4096]
        inputs = tensors(part, model.inputs_)["inputs"]
        with torch.no_grad():
            errors = head.errors(network.encode(inputs)[0], inputs) / len(head.names)  # (B, rebuilt inputs)
        decoded = selection.feature.decode(errors.sum(1))
        for position, (row, shares) in enumerate(zip(part.index, errors.tolist())):
            score = float(decoded[f"{name}_score"][position])
            rows.append({"row": _plain(row), "prediction": _plain(decoded[name][position]),
                         "output_value": score, "baseline_value": 0.0, "attribution_sum": float(sum(shares)),
                         "delta": float(sum(shares)) - score, "scores": dict(zip(head.names, shares)),
                         "tokens": {}, "heat_maps": {}, "steps": {},
                         "values": {f.config.name: _plain(part[f.config.name].iloc[position])
                                    for f in model.inputs_ if f.config.name in head.names}})
    return {"output": name, "method": RECONSTRUCTION, "complete": True,
            "explained": f"{name} score = mean reconstruction error of the rebuilt inputs; each input's share "
                         f"(threshold {selection.feature.stats.get('threshold', float('nan')):.4g})",
            "baselines": {input_name: "a perfect reconstruction (error 0)" for input_name in head.names},
            "rows": rows}


def permutation_importance(model, frame: pd.DataFrame, selection: Selection, repeats: int, seed: int) -> dict:
    """How much the output's main metric worsens when one input column is shuffled across the rows."""
    feature = selection.feature
    name = feature.config.name
    metric, direction = features.REGISTRY[feature.config.type].MAIN_METRIC

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
    """Permutation importance; None for an anomaly score on rows without both normal and anomalous
    labels (its ROC AUC, the measured quantity, needs both)."""
    try:
        return permutation_importance(model, frame, selection, repeats, seed)
    except DataError:
        if getattr(selection.feature, "reads_inputs", False):
            return None
        raise

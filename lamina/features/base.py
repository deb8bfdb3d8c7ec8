"""The type protocol, the whole contract of a data type. A type's `Feature` class subclasses `Feature`
(an input) or `OutputFeature` (it can also be predicted). Code outside lamina/features/ calls these
methods and never compares a type's name; where a type cannot do something, its own method raises
`Unsupported` with one clear message. [required] must be defined; else the default is in brackets.
A feature holds `config` (its validated options) and `stats` (learned on the training rows, JSON-able).
The options are the type's `Options` (a pydantic model). A readable config (a saved config.yaml,
init-config's output) shows the keys a user set and the defaults that matter under them: a key's Field
says when its default matters with json_schema_extra={"shown_when": C}, C being {key: [values]} (each
such key of the same options, or `role`: 'input' or 'output', holds one of the values), a list of
those (any holds) or "set" (never: only a key the user set shows). A null default (nothing chosen)
never shows; any other default without `shown_when` always does (lamina/config.py, _readable).

Feature (every input)
  reading      reads() other columns it reads [none]; fit(column) [required]: learn stats;
               transform(column) [required]: a tensor (B, ...) or a LazyColumn of file-backed cells;
               bad_rows(column), drops_missing() rows left out [none, missing: drop];
               nested_inputs() input configs inside its options [{}]; resampling() [None];
               describes_items: it may describe a ranking's items [True];
               time_values(column) the times `split: {method: time}` orders rows by [None: read by pandas]
  fast path    encode_rows(values) a few rows' plain cells (a list) as transform's tensor, without pandas
               [transform of a Series]; prepare() lookup tables built once from stats, read by prepared() [None]
  init-config  sniff(column), a classmethod: a Sniff (confidence, options, reason) when a bounded sample
               of a column (a Column) looks like this type's data [None: never inferred]; suggests(options,
               rows), a classmethod: more of its options, hidden and training keys that suit it [{}]
  network      encoder() [required]: (B, ...) -> (B, output_size); block() a module computing a group of
               such encoders at once [None]; gives_memory() token states for a decoder [False];
               gives_map(encoder) a spatial feature map for a locating head [None];
               reconstruction() how an anomaly score rebuilds it [None: not rebuilt]
  serving      request_field() how a request sends it [Unsupported]; served_metadata() [{}]
  export       export_entry(), export_examples() [Unsupported]
  classic ML   classic_encoder(style, seed) [summary statistics]; stats_mismatch(column) [None]
  explanation  attribution_point(encoder, values) [Unsupported]; baseline_description() [""];
               heat_map_background(encoder, value) [Unsupported]
OutputFeature adds
  learning     MAIN_METRIC [required]; head(trunk) [required], called as head(hidden (B, H), HeadContext);
               target(column), loss(output, target), decode(output), metrics(target, output) [required];
               generates [False]; reads_maps() the inputs' feature maps in HeadContext.maps [False];
               summary(output, target) [output]; decode_rows(output, rows) [decode];
               decode_reads_rows() whether decode_rows reads the rows [False];
               training_rows(column) [all]; absent_label() [None: required]; stratifies() [False]
  after it     tunes(), tune(target, output), tunes_without_validation(), tuned_setting() [no tuning];
               recommends(), remember_profiles(frame, input_names) [False, nothing]
  export       export_output(), export_output_entry() [Unsupported]
  classic ML   classic_task() [Unsupported]; classic_raw(scores) [Unsupported];
               classic_threshold(truth, scores) [None]; bootstrap_metric() [metrics, slow]
  explanation  main_metric(); explained_score(label) [Unsupported]; explained_labels() [None];
               explain_rows(model, frame, method) [None: by attributions]
  report       evaluation_data(rows, predicted, inputs) [None]; report_plots(data) [[]];
               prediction_summary() what it predicts, for the model card [its name and type]
Each method's docstring says what it must return. Adding a type: README.md, "Development".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from lamina.features.sniffing import Column, Sniff  # noqa: F401 - part of the protocol: base.Column, base.Sniff
from lamina.metrics import direction


class Unsupported(Exception):
    """A type cannot do what was asked (export a generated text, explain an anomaly score ...). The
    message names the feature, its type and what to do instead; callers turn it into their own error."""


@dataclass
class Trunk:
    """What an output's head is built from."""
    size: int  # width of the last hidden layer
    inputs: list = field(default_factory=list)  # the model's input features (an anomaly head rebuilds them)
    memory_sizes: tuple[int, ...] = ()  # state width of each input that gives token memory (see gives_memory)
    maps: dict = field(default_factory=dict)  # input name -> SpatialMap, when an output reads_maps()


@dataclass(frozen=True)
class SpatialMap:
    """The spatial feature map an input's encoder gives (see Feature.gives_map)."""
    channels: int  # C of its (B, C, h, w) map
    stride: int  # input pixels per map cell along each side (h = ceil(H / stride))
    size: tuple[int, int]  # (H, W) of the picture the map covers, as the network sees it
    levels: tuple[tuple[int, int], ...] = ()  # (channels, stride) of every map given, finest first (the last: above)


@dataclass
class FeatureMaps:
    """What an encoder's encode_map gives a head that locates things: its maps, finest first (the last
    as SpatialMap describes it), and which rows it mirrored left-right while training (None: none), whose
    findings the head mirrors back before they meet the targets."""
    levels: list  # (B, channels, H / stride, W / stride) per SpatialMap.levels
    mirrored: torch.Tensor | None = None  # (B,) bool


@dataclass
class HeadContext:
    """What a head may read besides the last hidden layer; most heads ignore it."""
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # input tensors by name
    memory: list = field(default_factory=list)  # (states (B, T, S), padding (B, T)) per memory-giving input
    target: torch.Tensor | None = None  # this head's target while training (teacher forcing, negatives)
    maps: dict = field(default_factory=dict)  # input name -> FeatureMaps, when a head reads_maps()


@dataclass
class Reconstruction:
    """How an anomaly score's decoder rebuilds an input (see Feature.reconstruction)."""
    width: int  # values the decoder gives per row for this input (1, or the number of classes)
    error: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (piece (B, width), value (B,)) -> error (B,)
    normalizer: nn.Module = field(default_factory=nn.Identity)  # the input's tensor -> the value error compares


class Feature:
    """One column of data as an input: its options (`config`), learned statistics (`stats`) and input
    layer. The module docstring lists the contract; each method says what a type must return."""

    describes_items = True  # whether it can describe a ranking's items (item_inputs): a small cell per item

    def __init__(self, config, stats: dict[str, Any] | None = None):
        self.config = config
        self.stats: dict[str, Any] = stats if stats is not None else {}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def type_name(self) -> str:
        """The registry name, for messages and reports only: never branch on it."""
        return self.config.type

    # ---- reading and learning ----
    def reads(self) -> list[str]:
        """Names of the other columns this feature's fit/transform/target read besides its own."""
        return []

    def fit(self, column: pd.Series) -> None:
        """Learn `stats` (JSON-able) from the training rows' column (a frame when reads() names others)."""
        raise NotImplementedError(f"{type(self).__module__}.Feature must define fit")

    def transform(self, column: pd.Series) -> Any:
        """The column as the encoder's input: a tensor (B, ...) or a LazyColumn (features/columns.py)."""
        raise NotImplementedError(f"{type(self).__module__}.Feature must define transform")

    def encode_rows(self, values: list) -> Any:
        """A few rows' cells (a list of plain Python values, as JSON or a dict of a row gives them) as
        `transform` gives them for the same cells in a DataFrame column: the same tensor bit for bit,
        the same fills of missing cells and the same errors naming the column and row (the row being
        the position in `values`). Prediction of one row or a few takes this path, so a type makes it
        fast by working on the plain values with the tables `prepared()` holds, and hands any cell it
        does not expect to `transform` (bad values, 'missing: error'), whose errors are the reference.
        Default: transform of the cells as a Series (the dtype pandas infers, as a DataFrame's column)."""
        return self.transform(pd.Series(values))

    def prepare(self) -> Any:
        """Lookup tables `encode_rows` reads, built from `stats` (a vocabulary as a dict, constants as
        floats): called once per fitted or loaded stats through `prepared()`. Default: None."""
        return None

    def prepared(self) -> Any:
        """What `prepare()` built for the current stats, built on the first call after fit or load
        (a model calls it when it is loaded and after training, so no prediction pays for it)."""
        cache = self.__dict__.get("_prepared")  # (stats it was built from, tables); stats are replaced on fit
        if cache is None or cache[0] is not self.stats:
            cache = (self.stats, self.prepare())
            self.__dict__["_prepared"] = cache
        return cache[1]

    def bad_rows(self, column: pd.Series) -> np.ndarray | None:
        """A boolean mask of rows to leave out of training and evaluation, or None for none."""
        return None

    @classmethod
    def sniff(cls, column: Column) -> Sniff | None:
        """Whether a column looks like this type's data, for `lamina init-config`: a Sniff (how sure, on
        the scale its docstring gives; the options to set; a short reason) or None: not this type, or a
        type never inferred (it needs options only a person knows). Look only at the Column's sample,
        cheaply (the first few hundred cells for parsing, a few files for headers); never raise. The
        registry's types are all asked and the most confident wins, so a new type takes part by
        defining this. Default: None."""
        return None

    @classmethod
    def suggests(cls, options: dict, rows: int) -> dict:
        """What init-config writes beside a column that sniffed as this type with `options`, in a table
        of `rows` rows: a dict with any of "options" (more of this input's options; the sniffed ones win),
        "hidden" and "training" (keys of the config's hidden layers and training that suit a network
        reading this kind of input, e.g. an image's CNN sized for its pixels and epochs for its rows).
        The first input, in the table's order, that suggests hidden or training keys sets them over
        init-config's generic ones. Default: {} (the generic ones)."""
        return {}

    def time_values(self, column: pd.Series) -> np.ndarray | None:
        """The column as times in seconds (N,) float64, parsed as this feature reads them, when
        `split: {method: time}` names it: a date's own formats and options. None: the split reads the
        column as numbers, or as dates the way pandas guesses. Default: None."""
        return None

    def drops_missing(self) -> bool:
        """Whether rows where this column is missing are left out."""
        return getattr(self.config, "missing", None) == "drop"

    def nested_inputs(self) -> dict[str, list[dict]]:
        """Input-feature configs nested in this feature's options, by option key (a ranking's
        item_inputs); the config checks each as an input feature, naming where it is. None: {}."""
        return {}

    def resampling(self) -> tuple[str, float] | None:
        """(method 'over' or 'under', ratio) when this output resamples its classes' training rows
        (`sampling`, `sampling_ratio`); its `target` then gives class codes that stats['labels'] names,
        and its config has `class_weights`. None: the training rows stay as they are."""
        return None

    def reconstruction(self) -> Reconstruction | None:
        """How an anomaly output's decoder rebuilds this input from the last hidden layer (a
        Reconstruction: its width, its error per row and the normaliser whose constants it holds), or
        None: this input is not rebuilt. Default: None."""
        return None

    # ---- the network ----
    def encoder(self) -> nn.Module:
        """The input layer: an nn.Module with `output_size`, mapping transform's (B, ...) to (B, output_size)."""
        raise NotImplementedError(f"{type(self).__module__}.Feature must define encoder")

    def block(self) -> type | None:
        """A module class built from the list of encoders whose features give the same block class (in input
        order, wherever they stand among the inputs), computing them together: (list of K tensors) -> (B, sum
        of widths, in that order). It holds no saved state: weights stay under the encoders' keys and are read
        from them at every call. None: the encoder runs alone."""
        return None

    def gives_memory(self) -> bool:
        """Whether its encoder gives per-token states a generating head attends to: then the encoder has
        `state_size` and `encode(x) -> (vector (B, D), states (B, T, S), padding (B, T))`."""
        return False

    def gives_map(self, encoder: nn.Module) -> SpatialMap | None:
        """The spatial feature map its built `encoder` gives a head that locates things (a boxes output), or
        None. Then the encoder has `encode_map(x) -> (vector (B, D), FeatureMaps)`, the vector being what forward
        gives. Raise Unsupported where the map would not match the picture as configured (an image's shifts and
        rotations move objects away from their boxes; flips are undone by the head). Default: None."""
        return None

    # ---- serving ----
    def request_field(self) -> Any:
        """How `lamina serve` takes this input in a request: a lamina.features.request.RequestField (the
        validated Python type, how a sent value is read and its files charged to the request's Budget,
        the schema's description, an example value and the web page's Widget). Only inputs are asked.
        Default: Unsupported, so a new type says how it is served."""
        raise Unsupported(f"input '{self.name}' of type '{self.type_name}' cannot be served yet; predict with "
                          f"`lamina predict` (or Model.predict) instead")

    def served_metadata(self) -> dict[str, Any]:
        """What GET /metadata of a served model shows of this input or output besides its name, type and
        options, JSON-able: the values it knows ('values'), its training statistics ('statistics').
        Default: nothing more."""
        return {}

    # ---- export ----
    def export_entry(self) -> dict[str, Any]:
        """This input in an export's preprocessing.json: {"tensor": {"name", "dtype", "shape"}, "preprocess":
        {...}} saying how a raw cell becomes its row of the tensor the exported graph takes (what the
        exported encoder computes inside the graph stays out). lamina.export.feeds reads it back.
        Default: Unsupported, so a type that does not export is refused before any file is written."""
        raise self.export_refusal("input")

    def export_examples(self) -> list:
        """Two plausible raw cells of this input, as a table's column holds them (different ones where
        the stats allow): the rows an export is traced with and checked against PyTorch on."""
        raise self.export_refusal("input")

    def export_refusal(self, role: str, why: str = "") -> Unsupported:
        """The error for a type that does not export as an `role` ('input' or 'output'); `why` says what
        the exporters cannot trace."""
        reason = f" ({why}, which the exporters cannot trace)" if why else ""
        return Unsupported(f"{role} '{self.name}' has type '{self.type_name}', which does not export yet"
                           f"{reason}. Serve this model with `lamina serve` instead")

    # ---- explanation and report ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> Any:
        """Where explain() attributes this input and against which baseline: a
        lamina.features.attribution.Point (at the encoder's output vector) or one of its layouts Pixels,
        Tokens, Steps, built from the trained `encoder` and this input's tensor `values` (B, ...) of the
        explained rows. Default: Unsupported, so a new type says how it is explained."""
        raise Unsupported(f"input '{self.name}' of type {self.type_name} cannot be explained yet; explain a model "
                          f"without this input")

    def baseline_description(self) -> str:
        """The baseline of its attributions in words, for the explanation's 'baselines' (what the input is
        compared with: the training mean, the empty set ...). Default: none given."""
        return ""

    def heat_map_background(self, encoder: nn.Module, value: Any) -> np.ndarray:
        """The picture the report lays this input's heat map over, an (H, W, C) array: what the network
        saw of the raw cell `value` (an image's pixels, a sound's log-mel spectrogram). Asked only of
        inputs whose attribution point is Pixels. Default: Unsupported."""
        raise Unsupported(f"input '{self.name}' of type {self.type_name} gives no heat map to draw")

    # ---- classic baseline ----
    def classic_encoder(self, style: str, seed: int) -> Any:
        """This input's columns for the classic models of `lamina compare`, fitted on the training rows:
        an object with fit(column) -> itself, transform(column) -> (N, K) array or scipy sparse matrix,
        `description` (words for the report) and `categorical` (trees read its one column as a native
        category). style: classic.TREE (NaN allowed, codes) or classic.LINEAR (finite, scaled, one-hot);
        seed: for any randomness. It must pickle. lamina/features/classic.py holds the building blocks.
        Default: per cell, summary statistics of a numeric array."""
        from lamina.features import classic

        return classic.Numbers(self.name, style, classic.summary_statistics, "summary statistics")

    def stats_mismatch(self, column: pd.Series) -> str | None:
        """How this feature's own column of the training rows differs from what `fit` learned from them
        ("column 'x' of its training rows has mean 3, the model learned 4"): compare refuses data that is
        not the training data. None: they agree, or the stats cannot tell. Default: None."""
        return None


class OutputFeature(Feature):
    """A type that can also be predicted: head, target, loss, decoding and metrics, and what comes
    after training (tuning, export, the classic baseline, explanation, the report)."""

    MAIN_METRIC = ""  # the metric that stands for this output (a key of `metrics`); every output type sets it
    generates = False

    def head(self, trunk: Trunk) -> nn.Module:
        """The output layer built from the Trunk; called as head(hidden (B, H), HeadContext) -> raw output."""
        raise NotImplementedError(f"{type(self).__module__}.Feature must define head")

    def target(self, column: pd.Series) -> torch.Tensor:
        """The column as what `loss` and `metrics` compare the raw output with (B, ...)."""
        raise NotImplementedError(f"{type(self).__module__}.Feature must define target")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """A scalar tensor to minimise, from the head's raw output and the target."""
        raise NotImplementedError(f"{type(self).__module__}.Feature must define loss")

    def decode(self, output: torch.Tensor) -> dict[str, Any]:
        """{column name, or name_suffix: one user-facing value per row} from the raw output."""
        raise NotImplementedError(f"{type(self).__module__}.Feature must define decode")

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        """{metric name: float} of the raw outputs (or their `summary`) against the targets; MAIN_METRIC among them."""
        raise NotImplementedError(f"{type(self).__module__}.Feature must define metrics")

    def reads_maps(self) -> bool:
        """Whether its head reads the spatial feature maps of the inputs that give one (see gives_map):
        the Trunk then has their `maps` and the HeadContext their tensors. Default: False."""
        return False

    def summary(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What evaluation keeps of one batch's raw output; `metrics` receives these, concatenated."""
        return output

    def training_rows(self, column: pd.Series) -> np.ndarray | None:
        """A boolean mask of the training rows the model learns from (fitted stats known), or None: all."""
        return None

    def tunes(self) -> bool:
        """Whether `tune` chooses something on the validation rows after training."""
        return False

    def tunes_without_validation(self) -> bool:
        """Whether `tune` must run on the training rows when there are no validation rows."""
        return False

    def tune(self, target: torch.Tensor | None, output: torch.Tensor | None) -> None:
        """Choose settings (a threshold, a temperature) from the validation targets and raw outputs and
        keep them in `stats`. Called only when `tunes()`."""

    def decode_rows(self, output: torch.Tensor, rows: pd.DataFrame) -> dict[str, Any]:
        """The predictions for these rows (the inputs' frame): `decode(output)` unless the answer also
        depends on the rows (a ranking leaves out what each user chose in training)."""
        return self.decode(output)

    def decode_reads_rows(self) -> bool:
        """Whether `decode_rows` reads the rows (then a prediction builds their DataFrame; else a few
        rows are predicted without one). Default: False (decode_rows is decode)."""
        return False

    def tuned_setting(self) -> str:
        """What `tune` chooses, in words, for messages ("the anomaly threshold")."""
        return f"the settings of output '{self.config.name}'"

    def recommends(self) -> bool:
        """Whether this output ranks items for users (then it defines recommend/profiles)."""
        return False

    def remember_profiles(self, frame: pd.DataFrame, input_names: list[str]) -> None:
        """Keep what prediction for a known key needs later (a ranking: each user's inputs). No-op."""

    # ---- export ----
    def export_output(self) -> nn.Module:
        """The last step of the exported graph for this output: a module taking the head's raw output
        (B, ...) to the user-facing tensor export_output_entry describes (probabilities, calibrated
        where the type calibrates; a number in the data's units). Default: Unsupported."""
        raise self.export_refusal("output")

    def export_output_entry(self) -> dict[str, Any]:
        """This output in preprocessing.json: {"tensor": {"name", "dtype", "shape"}, "read": how to read it,
        ...what reading needs: labels, threshold}. Default: Unsupported, so a type that does not export
        is refused before any file is written."""
        raise self.export_refusal("output")

    # ---- data reading ----
    def absent_label(self) -> Any:
        """The cell value this output's column takes when the data has no such column (an anomaly score's
        labels are optional: every row is then unlabelled), or None: the column is required."""
        return None

    def stratifies(self) -> bool:
        """Whether `split: auto` keeps this output's classes in the same proportions in the train,
        validation and test rows (a class label); False for values that are not a few classes."""
        return False

    # ---- explanation, evaluation plots and report ----
    def main_metric(self) -> tuple[str, str]:
        """(metric name, 'max' or 'min': which way is better) of the metric that stands for this output
        in comparisons and permutation importance: the class's MAIN_METRIC, a key of `metrics`."""
        return self.MAIN_METRIC, direction(self.MAIN_METRIC)

    def explained_score(self, label: int | None) -> str:
        """What explain() attributes for this output, in words (the explanation's 'explained'): the score
        per row its head gives (a logit, a number in normalised units, an item's score). `label`: the
        index into explained_labels() that target= picked, or None (each row's predicted class, or the
        only score). Default: Unsupported, for outputs that are not one differentiable score per row."""
        raise Unsupported(f"output '{self.name}' of type {self.type_name} cannot be explained by attributions; "
                          f"choose another output with output=")

    def explained_labels(self) -> list | None:
        """The labels target= may pick, in the order of the head's output columns (a category's classes, a
        ranking's items); each explained row names its label. None: the head gives one score per row and
        target= does not apply."""
        return None

    def explain_rows(self, model, frame: pd.DataFrame, method: str) -> dict | None:
        """The whole explanation (see Model.explain) of an output explained in its own way rather than by
        attributions through the network (an anomaly score: by its inputs' reconstruction errors).
        None: explain() attributes `explained_score` with `method`."""
        return None

    def evaluation_data(self, rows: pd.DataFrame, predicted: pd.DataFrame, inputs: list) -> dict | None:
        """What the report plots of this output, kept in evaluation.json: a JSON-able dict with 'type'
        (the type's name) and the data `report_plots` reads, from the test `rows` (true values in this
        output's column), the model's `predicted` frame for them and its input features. None: no plot."""
        return None

    def report_plots(self, data: dict) -> list[str]:
        """HTML pieces of this output's report section (inline <img> plots, tables; see
        lamina.features.plots), drawn from its `evaluation_data` as saved, also by earlier versions."""
        return []

    def prediction_summary(self) -> dict[str, Any]:
        """What this output predicts, for the model card: {'predicts': one line of words ("classifies
        'species' into 3 classes: a, b, c"), and where it predicts a few classes 'classes': {label: its
        rows in the training split}, from which the card warns about rare ones}. Read from `stats` only.
        Default: its name and type, no classes."""
        return {"predicts": f"predicts '{self.name}' (a {self.type_name} output)"}

    # ---- classic baseline and comparison ----
    def classic_task(self) -> Any:
        """What `lamina compare` asks of a classic model for this output: a lamina.features.classic.Task
        whose goal picks the classic models: 'classify', 'regress' or 'multilabel' (gradient boosting and
        a linear model), 'anomaly' (an isolation forest), 'ranking' (popularity and PureSVD). Raise
        Unsupported, naming the output and saying why, where classic ML has no baseline for it.
        Default: Unsupported."""
        raise Unsupported(f"output '{self.name}' of type '{self.type_name}' has no classic baseline (its type "
                          f"defines no classic task), so lamina compare has nothing to compare it with")

    def classic_raw(self, scores: np.ndarray) -> torch.Tensor:
        """A classic model's scores for this output (class probabilities (N, K), label probabilities
        (N, L), values (N,) or anomaly scores (N,), as classic_task's goal gives them) in this output's
        raw output format, so `metrics` scores both models the same way. Asked unless the goal is
        'ranking'. Default: Unsupported."""
        raise Unsupported(f"output '{self.name}' of type '{self.type_name}' cannot read a classic model's scores "
                          f"(its type defines no classic_raw)")

    def classic_threshold(self, truth: np.ndarray, scores: np.ndarray) -> float | None:
        """The threshold a classic model of this output is measured at (metrics(..., threshold=)), chosen
        on held-out rows from their truths (`target` as numpy) and its scores; None: no threshold of its
        own. Default: None."""
        return None

    def bootstrap_metric(self) -> tuple[Any, Any]:
        """(prepare, measure) of main_metric for the paired bootstrap of `lamina compare`: prepare turns
        what `metrics` takes (the raw output, or its `summary`) into per-row predictions once, and
        measure(truth, predictions) scores any subset of rows (truth: `target` as numpy). Default: the
        raw output, measured by `metrics` itself (right but slow: a type gives a fast one)."""
        metric = self.main_metric()[0]

        def measure(truth: np.ndarray, raw: np.ndarray) -> float:
            return self.metrics(torch.from_numpy(truth), torch.from_numpy(raw)).get(metric, float("nan"))

        return (lambda raw: raw.numpy()), measure

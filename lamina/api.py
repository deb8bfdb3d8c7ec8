"""`Model`: fit / evaluate / predict / compare / explain / save, and `load`. Thin: the work is done
in data.py, model.py, train.py, compare.py, explain.py and artifact.py."""
from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from lamina import artifact, devices, evaluation, features, sampling, streaming, tracking, train
from lamina.config import Config, load_config
from lamina.data import (check_columns, columns_of, labelled_rows, learning_rows, read_rows, rows_located,
                         rows_to_keep, split_rows, tensors)
from lamina.errors import ArtifactError, DataError
from lamina.network import Network

GENERATION_ROWS = 1000  # train/validation rows whose text outputs are generated for the final metrics
RANKING_CHUNK = 2048  # rows scored at once against every item of a ranking output
# up to this many rows (dicts), predict encodes each input's cells itself (Feature.encode_rows) instead of
# building a DataFrame: a DataFrame and its per-column pandas work cost ~10 ms whatever the rows
FAST_ROWS = 256


def _rows_located(method):
    """Errors naming a row of a data file also say on which line of the file it is."""
    @functools.wraps(method)
    def located(self, data, *arguments, **options):
        with rows_located(data):
            return method(self, data, *arguments, **options)
    return located


def _fit_once(built: list, rows: pd.DataFrame, placement) -> None:
    """Fit the features' statistics on the training rows in one process and send them to the others, so
    every process of a distributed run builds the same network."""
    for feature in built:
        if placement.main:
            feature.fit(columns_of(feature, rows))
        stats = devices.broadcast(feature.stats if placement.main else None, placement)
        if not placement.main:
            feature.stats = stats


def _tune(outputs: list, network, validation: dict | None, training: dict, engine=None) -> None:
    """Let outputs choose what they tune on the validation rows after training (e.g. a binary
    output's decision threshold, a calibration temperature, an anomaly score's threshold); their
    choice goes into their stats and is saved. Without validation rows an anomaly threshold is
    chosen on the training rows."""
    tuned = [f for f in outputs if f.tunes()]
    if not tuned:
        return
    on_training = [f for f in tuned if f.tunes_without_validation()]
    if validation is None and on_training:
        warnings.warn(f"no validation rows: {on_training[0].tuned_setting()} is chosen on the training rows, "
                      f"whose scores run lower than new data's; give the split a validation share", stacklevel=3)
        validation = training
    raw = train.predict_raw(network, validation, engine=engine) if validation is not None else {}
    for feature in tuned:
        name = feature.config.name
        feature.tune(validation["targets"][name] if validation is not None else None, raw.get(name))


class Model:
    """A deep network described by a config: inputs -> hidden layers -> outputs.

    Follows the scikit-learn contract: the constructor only stores the config, `fit` learns and
    returns self, and learned state ends in an underscore (`network_`, `inputs_`, `metrics_`).
    """

    def __init__(self, config: Config | dict | str | Path):
        self.config = load_config(config)

    @_rows_located
    def fit(self, data: Any, *, output_dir: str | Path | None = None, resume: bool = False,
            quiet: bool = False, on_epoch: Callable[[dict], None] | None = None) -> "Model":
        """Split the data, learn the preprocessing on the training rows, train, and measure on the
        validation and test rows. With `output_dir`, checkpoints each epoch and saves the model.
        `on_epoch(record)` is called after each epoch with its history record (see train.fit). With
        `training.log`, each epoch and the final metrics also go to TensorBoard or MLflow (tracking.py)."""
        with tracking.start(self.config, output_dir) as tracker:
            self._fit(data, output_dir, resume, quiet, tracker.follow(on_epoch))
            tracker.finish(self, output_dir)
        return self

    def _fit(self, data: Any, output_dir: str | Path | None, resume: bool, quiet: bool,
             on_epoch: Callable[[dict], None] | None) -> "Model":
        if streaming.wanted(data, self.config.training):  # Parquet larger than memory: read batch by batch
            return streaming.fit(self, data, output_dir=output_dir, resume=resume, quiet=quiet, on_epoch=on_epoch)
        config = self.config
        engine = devices.engine_for(config.training)  # under torchrun: this process's rank and GPU
        main = engine.placement.main
        torch.manual_seed(config.training.seed)
        inputs = [features.build(feature) for feature in config.inputs]
        outputs = [features.build(feature) for feature in config.outputs]
        frame, source = labelled_rows(data, config, inputs, outputs)
        keep = rows_to_keep(frame, inputs, outputs)
        frame = frame[keep]
        if frame.empty:
            raise DataError(f"no rows of {source} are left after dropping missing targets and 'missing: drop' "
                            f"features; check the data")
        parts = split_rows(frame, config)
        training_rows = frame.iloc[parts["train"]]
        _fit_once(outputs, training_rows, engine.placement)
        training_rows = learning_rows(training_rows, outputs)  # e.g. an anomaly output learns from normal rows
        _fit_once(inputs, training_rows, engine.placement)
        for feature in outputs:  # a ranking remembers each user's inputs, for recommend(user ids)
            feature.remember_profiles(training_rows, [f.config.name for f in inputs])
        tables = {part: tensors(training_rows if part == "train" else frame.iloc[rows], inputs, outputs)
                  for part, rows in parts.items() if len(rows)}
        # resampled rows train the network; metrics are measured on the training rows as they are
        resampled, sampled = sampling.resample(tables["train"], outputs, config.training.seed)
        self.inputs_, self.outputs_ = inputs, outputs
        self.network_ = Network(inputs, outputs, config.hidden)
        folder = Path(output_dir) if output_dir else None
        if folder and main:
            folder.mkdir(parents=True, exist_ok=True)
        result = train.fit(self.network_, resampled, tables.get("validation"), outputs, config.training,
                           checkpoint_dir=folder, resume=resume, quiet=quiet,
                           fingerprint=self._fingerprint({part: len(rows) for part, rows in parts.items()}),
                           on_epoch=on_epoch, engine=engine)
        # a comparison, search or rollout of an earlier fit does not describe it
        self.comparison_ = self.tuning_ = self.rollout_ = None
        self.training_ = {**result, "rows": {part: int(len(rows)) for part, rows in parts.items()},
                          "dropped_rows": int((~keep).sum()), "source": source,
                          "learned_rows": int(len(training_rows)),  # fewer when an anomaly output skips anomalies
                          **({"sampling": sampled} if sampled else {})}
        _tune(outputs, self.network_, tables.get("validation"), tables["train"], engine)
        # generated text (slow to score) is scored on every test row, and on the first rows of the others
        self.metrics_ = {part: train.measure(self.network_, table, outputs,
                                            generate_rows=None if part == "test" else GENERATION_ROWS, engine=engine)
                         for part, table in tables.items()}
        self.evaluation_ = evaluation.collect(self, frame.iloc[parts["test"]]) if main else None  # the report's plots
        if folder and main:  # one process writes the model
            self.save(folder)
            (folder / train.CHECKPOINT).unlink(missing_ok=True)
        devices.barrier(engine.placement)  # the others wait, so the model is complete when any of them returns
        return self

    def _fingerprint(self, rows: dict) -> str:
        config = self.config.to_dict()
        # where and how batches run, and where the run is logged, do not change what is learned
        for key in ("workers", "device", "compile", "log", "log_dir", "tracking_uri", "experiment", "run_name"):
            config["training"].pop(key, None)
        learned = {"config": config, "rows": rows,
                   "stats": [f.stats for f in self.inputs_ + self.outputs_]}
        return hashlib.sha256(json.dumps(learned, sort_keys=True, default=str).encode()).hexdigest()

    def _engine(self) -> devices.Engine:
        """Prediction runs where the network is (a GPU after training there, the CPU once loaded), under
        the config's precision. Kept for the network while its first weight stays on the same device:
        walking the modules for it cost a thirtieth of a one-row prediction."""
        network, kept = self.network_, self.__dict__.get("_engine_kept")
        if kept is None or kept[0] is not network or kept[1].device != kept[2].device:
            engine = devices.engine_of(network, self.config.training.precision)
            kept = (network, next(network.parameters(), torch.empty(0, device=engine.device)), engine)
            self._engine_kept = kept
        return kept[2]

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise ArtifactError("this Model is not trained yet; call fit() first or lamina.load() a saved one")

    @_rows_located
    def evaluate(self, data: Any) -> dict:
        """Loss and metrics of every output on labelled data: {'loss': x, output: {metric: value}}."""
        self._check_fitted()
        frame, source = labelled_rows(data, self.config, self.inputs_, self.outputs_)
        frame = frame[rows_to_keep(frame, self.inputs_, self.outputs_)]
        if frame.empty:
            raise DataError(f"{source} has no rows with the outputs filled in; nothing to evaluate")
        return train.measure(self.network_, tensors(frame, self.inputs_, self.outputs_), self.outputs_,
                             generate_rows=None, engine=self._engine())

    @_rows_located
    def predict(self, data: Any) -> pd.DataFrame:
        """Predictions for every row: one column per output, plus probabilities for classifiers. One
        row or a few (a dict, a list of up to FAST_ROWS dicts) skip the DataFrame (see predict_rows)."""
        self._check_fitted()
        rows = self._few_rows(data)
        if rows is not None:  # one dict or a few: the same DataFrame, without pandas on the way in
            # copy=False: the decoded arrays are new; a copy would be work for nothing (0.015 ms of a row)
            return pd.DataFrame(self._decoded_few(rows), index=pd.RangeIndex(len(rows)), copy=False)
        frame, source = read_rows(data, self.config)
        if frame.empty:
            raise DataError(f"{source} has no rows; nothing to predict")
        check_columns(frame, [f.config.name for f in self.inputs_], source)
        return pd.concat([self._decode(part, raw) for part, raw in self._scored(frame)])

    def predict_rows(self, rows: dict | list[dict]) -> list[dict]:
        """Predictions of one row (a dict) or a few (a list of dicts) as one dict per row, with plain
        Python values (NaN as None), as `lamina serve` answers them: what predict gives, without a
        DataFrame in or out when there are at most FAST_ROWS rows. Larger lists take predict's path."""
        self._check_fitted()
        few = self._few_rows(rows)
        if few is None:
            return json.loads(self.predict(rows).to_json(orient="records", double_precision=15))
        return records(self._decoded_few(few), len(few))

    def _few_rows(self, data: Any) -> list[dict] | None:
        """`data` as a list of row dicts when the fast path can take it: a dict holding one row or a list
        of at most FAST_ROWS dicts, naming every input (else predict's path raises the error naming the
        missing column), for outputs whose decoding reads no rows. None: predict builds a DataFrame."""
        if isinstance(data, dict):
            if any(isinstance(value, (list, tuple)) for value in data.values()):
                return None  # a dict of columns, as predict reads it
            data = [data]
        if not isinstance(data, list) or not 0 < len(data) <= FAST_ROWS or \
                not all(type(row) is dict for row in data):
            return None
        if any(feature.decode_reads_rows() for feature in self.outputs_):
            return None
        for feature in self.inputs_:
            name = feature.config.name
            if not any(name in row for row in data):
                return None
        return data

    def _decoded_few(self, rows: list[dict]) -> dict[str, Any]:
        """{output column: values} for a few row dicts: each input's cells encoded by encode_rows (a key
        absent from a row is a missing cell, as in a DataFrame built from the rows), one forward pass
        without autograd's bookkeeping (inference mode), and the outputs' decode."""
        with torch.inference_mode():
            inputs = {feature.config.name: feature.encode_rows([row.get(feature.config.name) for row in rows])
                      for feature in self.inputs_}
            network, engine = self.network_, self._engine()
            if network.needs_memory:  # a generating head: predict_raw bounds the rows generated at once
                raw = train.predict_raw(network, {"inputs": inputs, "targets": {}}, engine=engine)
            else:  # one batch: predict_raw's slicing into batches and joining them again cost a fifth of a row
                if network.training:
                    network.eval()
                with engine.autocast():
                    raw = network(engine.move({"inputs": inputs})["inputs"])
            columns: dict[str, Any] = {}
            for feature in self.outputs_:
                value = raw[feature.config.name]  # on the CPU, floats in float32, as predict_raw gives them
                columns.update(feature.decode(value.float().cpu() if value.is_floating_point() else value.cpu()))
        return columns

    def _warm(self) -> None:
        """Pay one-off costs once, when loaded: the inputs' lookup tables (prepared()) and the first forward
        pass's allocations, on a row of the inputs' request examples where every input has one that is not
        a file. A warm-up only: whatever it meets, loading goes on and a real prediction reports its error."""
        try:
            for feature in self.inputs_ + self.outputs_:
                feature.prepared()
            fields = [feature.request_field() for feature in self.inputs_]
            if not any(field.file for field in fields):  # an example file is base64 text the server decodes
                self.predict_rows({feature.config.name: field.example for feature, field in zip(self.inputs_, fields)})
        except Exception:  # noqa: BLE001
            pass

    def _scored(self, frame: pd.DataFrame):
        """(rows, raw outputs) for all rows at once, or chunk by chunk when a ranking output scores
        every item for every row (memory would grow with rows x items)."""
        ranking = any(feature.recommends() for feature in self.outputs_)
        size = RANKING_CHUNK if ranking else max(len(frame), 1)
        for start in range(0, len(frame), size):
            part = frame.iloc[start:start + size]
            yield part, train.predict_raw(self.network_, tensors(part, self.inputs_), engine=self._engine())

    def _decode(self, frame: pd.DataFrame, raw: dict) -> pd.DataFrame:
        columns: dict[str, Any] = {}
        for feature in self.outputs_:
            columns.update(feature.decode_rows(raw[feature.config.name], frame))
        return pd.DataFrame(columns, index=frame.index)

    def recommend(self, users: Any, k: int | None = None, exclude_seen: bool = True,
                  output: str | None = None) -> pd.DataFrame:
        """The top `k` items for each user, best first, with their scores. `users`: user ids (a
        list; their other inputs are the values last seen in training, missing for new users) or
        rows holding the model's inputs (a DataFrame, dicts or a file). With `exclude_seen`, items a
        user chose in training are left out. New users get recommendations too (their id falls in
        a shared bucket), from their other inputs and the items' popularity."""
        self._check_fitted()
        rankings = [f for f in self.outputs_ if f.recommends() and output in (None, f.config.name)]
        if not rankings:
            names = [f.config.name for f in self.outputs_ if f.recommends()]
            raise DataError(f"this model has no ranking output{' named ' + repr(output) if output else ''}; "
                            f"recommend() needs one (ranking outputs: {names or 'none'})")
        feature = rankings[0]
        if isinstance(users, (list, tuple, pd.Series, pd.Index)) and not any(isinstance(u, dict) for u in users):
            frame = feature.profiles([str(user) for user in users])
            source = "the users"
        else:
            frame, source = read_rows(users, self.config)
        if frame.empty:
            raise DataError(f"{source} has no rows; nothing to recommend")
        check_columns(frame, [f.config.name for f in self.inputs_], source)
        result = pd.concat([pd.DataFrame(feature.recommend(raw[feature.config.name], part[feature.config.user], k,
                                                           exclude_seen), index=part.index)
                            for part, raw in self._scored(frame)])
        result.insert(0, feature.config.user, frame[feature.config.user].to_numpy())
        return result

    def compare(self, data: Any, *, resamples: int = 1000, seed: int = 0) -> dict:
        """Train a classic baseline (gradient boosting or a linear model) on the same train /
        validation / test split of `data` (the data this model was trained on) and compare both on
        the test rows; the result (JSON-able, with a 'verdict') is also kept as `comparison_`.
        `seed` drives the bootstrap resamples and the classic models."""
        self._check_fitted()
        from lamina import compare as comparison  # scikit-learn and SciPy: imported when a comparison runs

        self.comparison_ = comparison.run(self, data, resamples=resamples, seed=seed)
        return self.comparison_

    def explain(self, rows: Any, method: str = "integrated_gradients", output: str | None = None,
                target: Any = None, *, steps: int = 50) -> dict:
        """Which inputs drove each row's prediction (needs captum: pip install 'lamina[explain]').

        Returns a JSON-able dict: {'output', 'method' (integrated_gradients, saliency,
        input_x_gradient, deeplift, gradient_shap, feature_ablation), 'explained' (the quantity, in
        words), 'complete' (whether scores add up to output - baseline), 'baselines' {input: words},
        'rows': [{'row', 'prediction', 'probability'?, 'label'?, 'output_value', 'baseline_value',
        'attribution_sum', 'delta', 'scores' {input: float}, 'values' {input: cell},
        'tokens' {text input: [[token, score], ...]}, 'heat_maps' {image input: H x W nested lists}}]}.
        The explained quantity is the first output by default (`output=` another): a binary's
        positive-class logit, a category's (or set's) logit of each row's predicted label or of
        `target=`, a number in normalised units. `steps`: integration steps (samples for gradient_shap).
        """
        from lamina.explain import explain

        self._check_fitted()
        frame, source = read_rows(rows, self.config)
        if frame.empty:
            raise DataError(f"{source} has no rows; nothing to explain")
        check_columns(frame, [f.config.name for f in self.inputs_], source)
        return explain(self, frame, method, output, target, steps)

    def importance(self, data: Any, output: str | None = None, target: Any = None, *,
                   method: str = "integrated_gradients", rows: int = 200, repeats: int = 3, seed: int = 0) -> dict:
        """Global importance of each input on labelled data (JSON-able): 'mean_absolute_attribution'
        {input: mean |score|} over a seeded sample of `rows` rows, and 'permutation' {'metric',
        'direction', 'reference', 'features': {input: {'mean', 'std', 'drops'}}}: how much the
        output's main metric worsens when that column is shuffled across the rows (`repeats` times).
        Both are sorted, most important first."""
        from lamina.explain import importance

        self._check_fitted()
        frame, source = labelled_rows(data, self.config, self.inputs_, self.outputs_)
        if frame.empty:
            raise DataError(f"{source} has no rows; nothing to measure")
        return importance(self, frame, output, target, method, rows, repeats, seed)

    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        return artifact.save(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "Model":
        parts = artifact.read(path)
        model = cls(artifact.check_config(parts, path))
        stats = parts["stats"]
        try:
            model.inputs_ = [features.build(c, stats["inputs"][c.name]) for c in model.config.inputs]
            model.outputs_ = [features.build(c, stats["outputs"][c.name]) for c in model.config.outputs]
            model.network_ = Network(model.inputs_, model.outputs_, model.config.hidden)
            model.network_.load_state_dict(parts["weights"], strict=True)
        except (KeyError, TypeError, RuntimeError) as error:
            raise ArtifactError(f"'{path}' does not fit together: config, stats.json and weights disagree "
                                f"({str(error).splitlines()[0]}); restore the original folder") from None
        model.network_.eval()
        model.metrics_, model.training_ = parts["metrics"], parts["training"]
        model.comparison_ = parts["comparison"]
        model.evaluation_ = parts["evaluation"]
        model.tuning_ = parts["tuning"]
        model.rollout_ = parts["rollout"]
        model._warm()
        return model


def records(columns: dict[str, Any], rows: int) -> list[dict]:
    """{column: `rows` values} (arrays, lists) -> one dict per row of plain Python values, NaN as None
    (what JSON carries), without pandas."""
    plain = {}
    for name, values in columns.items():
        values = values.tolist() if isinstance(values, np.ndarray) else list(values)
        plain[name] = [_plain_value(value) for value in values]
    return [{name: values[row] for name, values in plain.items()} for row in range(rows)]


def _plain_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load(path: str | Path) -> Model:
    """A saved model folder as a ready `Model`; checks checksums and never unpickles."""
    return Model.load(path)

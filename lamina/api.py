"""`Model`: fit / evaluate / predict / compare / explain / save, and `load`. Thin: the work is done
in data.py, model.py, train.py, compare.py, explain.py and artifact.py."""
from __future__ import annotations

import functools
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from lamina import artifact, compare as comparison, devices, evaluation, features, sampling, streaming, train
from lamina.config import Config, load_config
from lamina.data import (check_columns, columns_of, labelled_rows, learning_rows, read_rows, rows_located,
                         rows_to_keep, split_rows, tensors)
from lamina.errors import ArtifactError, DataError
from lamina.network import Network

GENERATION_ROWS = 1000  # train/validation rows whose text outputs are generated for the final metrics
RANKING_CHUNK = 2048  # rows scored at once against every item of a ranking output


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
        `on_epoch(record)` is called after each epoch with its history record (see train.fit)."""
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
        self.comparison_ = self.tuning_ = None  # a comparison or search of an earlier fit does not describe it
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
        for key in ("workers", "device", "compile"):  # where and how batches run does not change what is learned
            config["training"].pop(key, None)
        learned = {"config": config, "rows": rows,
                   "stats": [f.stats for f in self.inputs_ + self.outputs_]}
        return hashlib.sha256(json.dumps(learned, sort_keys=True, default=str).encode()).hexdigest()

    def _engine(self) -> devices.Engine:
        """Prediction runs where the network is (a GPU after training there, the CPU once loaded), under
        the config's precision."""
        return devices.engine_of(self.network_, self.config.training.precision)

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
        """Predictions for every row: one column per output, plus probabilities for classifiers."""
        self._check_fitted()
        frame, source = read_rows(data, self.config)
        if frame.empty:
            raise DataError(f"{source} has no rows; nothing to predict")
        check_columns(frame, [f.config.name for f in self.inputs_], source)
        return pd.concat([self._decode(part, raw) for part, raw in self._scored(frame)])

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
        return model


def load(path: str | Path) -> Model:
    """A saved model folder as a ready `Model`; checks checksums and never unpickles."""
    return Model.load(path)

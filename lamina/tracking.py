"""Experiment tracking (training.log): each epoch's train loss, validation loss and metrics, learning
rate and time, and at the end the metrics of every split, written to TensorBoard or MLflow. One small
class per backend behind `Tracker`; neither package is imported unless the config asks for it, and
under torchrun only rank 0 writes."""
from __future__ import annotations

import datetime
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import yaml

from lamina import devices
from lamina.artifact import MANIFEST
from lamina.errors import ConfigError
from lamina.metrics import table

INSTALL = "pip install 'lamina[tracking]'"
MLFLOW_BATCH = 100  # params per MLflow log_batch call (its limit; metrics may be 1000)
MLFLOW_PARAM_CHARACTERS = 6000  # longest parameter value MLflow stores
ARTIFACT_BYTES = 64 * 2 ** 20  # a model folder up to this size is copied to the MLflow run as its artifact


def start(config, output_dir: str | Path | None) -> "Tracker":
    """The tracker `config.training.log` asks for, its run started; a Tracker that does nothing for
    log: none and on every rank but the first under torchrun."""
    training = config.training
    if training.log == "none" or not devices.place(training.device).main:
        return Tracker()
    folder = Path(output_dir) if output_dir else None
    return TensorBoard(config, folder) if training.log == "tensorboard" else MLflow(config, folder)


def flat(values: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {'training.epochs': 3, 'inputs.0.name': 'age'}; empty lists and mappings stay."""
    items = values.items() if isinstance(values, dict) else enumerate(values) if isinstance(values, list) else None
    if items is None or not values:
        return {prefix: values}
    result: dict[str, Any] = {}
    for key, value in items:
        result.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return result


def _numbers(prefix: str, measured: dict) -> dict[str, float]:
    """{'<prefix>/loss': x, '<prefix>/<output>/<metric>': y} of a {'loss': x, output: {metric: y}} record;
    values that are not numbers (a per-class list) are left out."""
    values = {}
    for name, value in measured.items():
        inner = value.items() if isinstance(value, dict) else [(None, value)]
        for metric, number in inner:
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                values[f"{prefix}/{name}" + (f"/{metric}" if metric is not None else "")] = float(number)
    return values


def epoch_values(record: dict) -> dict[str, float]:
    """The scalars of one epoch's history record (train.fit): train/loss, validation/loss,
    validation/<output>/<metric>, learning_rate, epoch_seconds."""
    values = {"train/loss": float(record["train_loss"]), "learning_rate": float(record["learning_rate"]),
              "epoch_seconds": float(record["seconds"])}
    return values | _numbers("validation", record.get("validation", {}))


def final_values(metrics: dict) -> dict[str, float]:
    """The final metrics of every split (Model.metrics_) as final/<split>/loss, final/<split>/<output>/<metric>."""
    values: dict[str, float] = {}
    for split, measured in metrics.items():
        values |= _numbers(f"final/{split}", measured or {})
    return values


class Tracker:
    """The interface, and tracking turned off: every call does nothing. Used as `with start(...) as
    tracker:`; leaving the block on an error ends the run as failed."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None:
            self.close("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")

    def follow(self, on_epoch: Callable[[dict], None] | None) -> Callable[[dict], None] | None:
        """The epoch callback for train.fit: this tracker's `epoch`, then the caller's own `on_epoch`."""
        def both(record: dict) -> None:
            self.epoch(record)
            if on_epoch is not None:
                on_epoch(record)
        return both

    def epoch(self, record: dict) -> None:
        """Write one epoch's history record (see epoch_values)."""

    def finish(self, model, folder: str | Path | None) -> None:
        """Write the final metrics of every split (and the saved model folder, where the backend keeps
        files) and end the run."""

    def close(self, status: str) -> None:
        """End the run: FINISHED, FAILED or KILLED."""


class TensorBoard(Tracker):
    """Event files under training.log_dir/<run>, read by `tensorboard --logdir`: scalars per epoch,
    the config as text, the final metrics as hparams and as a text table."""

    def __init__(self, config, folder: Path | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ConfigError(f"training.log: tensorboard needs the tensorboard package ({error}): {INSTALL}") \
                from None
        training = config.training
        root = Path(training.log_dir) if training.log_dir else (folder / "tensorboard" if folder else Path("runs"))
        name = training.run_name or datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        self.config = config
        self.writer = SummaryWriter(log_dir=str(root / name))
        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config.to_dict(), sort_keys=False) + "```")

    def epoch(self, record: dict) -> None:
        for tag, value in epoch_values(record).items():
            self.writer.add_scalar(tag, value, record["epoch"])
        self.writer.flush()  # TensorBoard shows each epoch as it ends, not every two minutes

    def finish(self, model, folder: str | Path | None) -> None:
        history = model.training_.get("history", [])
        step = history[-1]["epoch"] if history else 0
        # the hparams plugin takes numbers, strings and booleans: other values (lists, null) as their text
        hparams = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
                   for key, value in flat(self.config.to_dict()).items()}
        self.writer.add_hparams(hparams, final_values(model.metrics_), run_name=".", global_step=step)
        self.writer.add_text("metrics", "```\n" + table(model.metrics_) + "\n```", step)
        self.close("FINISHED")

    def close(self, status: str) -> None:
        self.writer.close()


class MLflow(Tracker):
    """One MLflow run: the flattened config as params, each epoch's scalars as metrics at step = epoch,
    the final metrics, the metrics table as a text artifact and the model folder's files. Written
    through MlflowClient, so the caller's own MLflow state (tracking URI, active run) is left as it is."""

    def __init__(self, config, folder: Path | None):
        try:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise ConfigError(f"training.log: mlflow needs the mlflow package ({error}): {INSTALL}") from None
        training, artifacts = config.training, None
        uri = training.tracking_uri
        if uri is None and folder is not None:  # MLflow 3 stores runs in a database; its file store is retired
            folder.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(folder / 'mlflow.db').resolve().as_posix()}"
            artifacts = (folder / "mlartifacts").resolve().as_uri()
        self.failure = MlflowException
        try:
            self.client = MlflowClient(tracking_uri=uri)
            experiment = self.client.get_experiment_by_name(training.experiment)
            experiment_id = experiment.experiment_id if experiment else \
                self.client.create_experiment(training.experiment, artifact_location=artifacts)
            run = self.client.create_run(experiment_id, run_name=training.run_name or
                                         datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
            self.run_id = run.info.run_id
            self._log(params=flat(config.to_dict()))
        except MlflowException as error:
            where = f"'{uri}'" if uri else "MLflow's default store"
            raise ConfigError(f"training.log: mlflow cannot start a run in {where} ({_first_line(error)}); set "
                              f"training.tracking_uri to a tracking server (http://host:5000) or a database "
                              f"(sqlite:///path/mlflow.db), and training.experiment to an experiment that is not "
                              f"deleted") from None
        self.working = True

    def _log(self, metrics: dict[str, float] | None = None, params: dict[str, Any] | None = None,
             step: int = 0) -> None:
        from mlflow.entities import Metric, Param

        stamp = int(datetime.datetime.now().timestamp() * 1000)
        metric_list = [Metric(_key(key), value, stamp, step) for key, value in (metrics or {}).items()
                       if math.isfinite(value)]
        param_list = [Param(_key(key), str(value)[:MLFLOW_PARAM_CHARACTERS]) for key, value in (params or {}).items()]
        for start in range(0, max(len(metric_list), len(param_list)), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metric_list[start:start + MLFLOW_BATCH],
                                  params=param_list[start:start + MLFLOW_BATCH])

    def _safely(self, write: Callable[[], None]) -> None:
        """A tracking store that fails mid-run (a server gone) costs the run's log, never the training."""
        if not self.working:
            return
        try:
            write()
        except self.failure as error:
            self.working = False
            warnings.warn(f"MLflow stopped taking this run's log ({_first_line(error)}); training goes on, "
                          f"without tracking", stacklevel=3)

    def epoch(self, record: dict) -> None:
        self._safely(lambda: self._log(epoch_values(record), step=record["epoch"]))

    def finish(self, model, folder: str | Path | None) -> None:
        history = model.training_.get("history", [])
        step = history[-1]["epoch"] if history else 0

        def write() -> None:
            self._log(final_values(model.metrics_), step=step)
            self.client.log_text(self.run_id, table(model.metrics_) + "\n", "metrics.txt")
            for file in _model_files(Path(folder)) if folder else []:
                self.client.log_artifact(self.run_id, str(file), "model")

        self._safely(write)
        self.close("FINISHED")

    def close(self, status: str) -> None:
        self._safely(lambda: self.client.set_terminated(self.run_id, status))


def _key(name: str) -> str:
    """A metric or parameter name as MLflow allows it: letters, digits, _ - . space : / (column names may
    hold others), at most 250 characters."""
    return re.sub(r"[^\w\-. :/]", "_", name)[:250]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _model_files(folder: Path) -> list[Path]:
    """The saved model's own files (those its manifest lists, and the manifest), when they are few
    enough bytes to copy cheaply; not the tracking store or anything else sharing the folder."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return []
    files = json.loads(manifest.read_text("utf-8")).get("files", {})
    if sum(entry.get("bytes", 0) for entry in files.values()) > ARTIFACT_BYTES:
        return []
    return [folder / name for name in sorted(files)] + [manifest]

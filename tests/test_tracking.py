"""Experiment tracking (training.log): TensorBoard event files and MLflow runs are written and read
back with each epoch's scalars, the config and the final metrics; log: none imports neither package;
only the first process of a distributed run writes; bad options and a missing package are clear errors."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lamina
from lamina import ConfigError, devices, tracking

from helpers_data import config, people

EPOCHS = 3
EPOCH_TAGS = {"train/loss", "validation/loss", "validation/income/roc_auc", "validation/income/accuracy",
              "learning_rate", "epoch_seconds"}


def tracked(**training) -> dict:
    return config(training={"epochs": EPOCHS, **training})


def close(logged: float, value: float) -> bool:
    return logged == pytest.approx(value, rel=1e-6, abs=1e-7)  # event files and MLflow keep float32 / float64


def test_log_none_imports_neither_package(tmp_path):
    script = textwrap.dedent("""
        import sys
        import lamina
        from helpers_data import config, people
        lamina.Model(config()).fit(people(60), quiet=True)
        print(sorted(name for name in ("torch.utils.tensorboard", "mlflow", "tensorboard") if name in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                            cwd=Path(__file__).parent, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_tensorboard_writes_every_epoch_and_the_final_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = lamina.Model(tracked(log="tensorboard", run_name="first")).fit(people(150), output_dir=tmp_path / "model",
                                                                           quiet=True)
    events = EventAccumulator(str(tmp_path / "model" / "tensorboard" / "first"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert EPOCH_TAGS <= tags, tags
    history = model.training_["history"]
    for tag in EPOCH_TAGS:
        assert [event.step for event in events.Scalars(tag)] == [1, 2, 3], tag
    assert all(close(event.value, record["train_loss"]) for event, record in zip(events.Scalars("train/loss"), history))
    roc = [record["validation"]["income"]["roc_auc"] for record in history]
    assert all(close(event.value, value) for event, value in zip(events.Scalars("validation/income/roc_auc"), roc))
    for split in ("train", "validation", "test"):
        final = events.Scalars(f"final/{split}/income/roc_auc")
        assert close(final[-1].value, model.metrics_[split]["income"]["roc_auc"]) and final[-1].step == EPOCHS
    assert {"config", "metrics"} <= {tag.split("/")[0] for tag in events.Tags()["tensors"]}  # texts
    lamina.load(tmp_path / "model")  # the event files beside the model files do not disturb it


def test_tensorboard_without_output_folder_writes_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lamina.Model(config(training={"log": "tensorboard", "epochs": 1})).fit(people(60), quiet=True)
    (run,) = (tmp_path / "runs").iterdir()
    assert list(run.glob("events.out.tfevents.*"))
    chosen = tmp_path / "elsewhere"
    lamina.Model(config(training={"log": "tensorboard", "log_dir": str(chosen), "run_name": "b", "epochs": 1})) \
        .fit(people(60), quiet=True)
    assert list((chosen / "b").glob("events.out.tfevents.*"))


def test_mlflow_run_keeps_params_metrics_and_the_model(tmp_path):
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "model"
    model = lamina.Model(tracked(log="mlflow", run_name="first")).fit(people(150), output_dir=folder, quiet=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlflow.db').as_posix()}")
    experiment = client.get_experiment_by_name("lamina")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "first" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["training.epochs"] == str(EPOCHS) and params["inputs.0.name"] == "age"
    assert params["outputs.0.type"] == "binary" and params["training.log"] == "mlflow"
    history = model.training_["history"]
    for key in EPOCH_TAGS:
        assert [metric.step for metric in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert all(close(metric.value, record["train_loss"]) for metric, record in zip(losses, history))
    assert close(run.data.metrics["final/test/income/roc_auc"], model.metrics_["test"]["income"]["roc_auc"])
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"metrics.txt", "model"} <= artifacts
    saved = {Path(item.path).name for item in client.list_artifacts(run.info.run_id, "model")}
    assert {"weights.safetensors", "config.yaml", "manifest.json", "model_card.md"} <= saved
    assert "mlflow.db" not in saved  # only the model's own files, not the store beside them


def test_mlflow_with_a_user_store_marks_a_failed_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(tmp_path / 'team.db').as_posix()}"

    def stop(record: dict) -> None:
        if record["epoch"] == 2:
            raise RuntimeError("stopped by the caller")

    with pytest.raises(RuntimeError, match="stopped by the caller"):
        lamina.Model(tracked(log="mlflow", tracking_uri=uri, experiment="churn")).fit(people(80), quiet=True,
                                                                                     on_epoch=stop)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("churn").experiment_id])
    assert run.info.status == "FAILED"
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]


def test_only_the_first_process_writes(monkeypatch, tmp_path):
    monkeypatch.setattr(devices, "place", lambda setting: devices.Placement(torch.device("cpu"), rank=1, world=2))
    silent = tracking.start(lamina.Model(tracked(log="tensorboard")).config, tmp_path)
    assert type(silent) is tracking.Tracker and not (tmp_path / "tensorboard").exists()


@pytest.mark.parametrize("log, hidden", [("tensorboard", ["torch.utils.tensorboard"]),
                                         ("mlflow", ["mlflow", "mlflow.tracking", "mlflow.exceptions"])])
def test_missing_package_names_the_extra(monkeypatch, log, hidden):
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it fails
    epochs = []
    with pytest.raises(ConfigError, match=r"pip install 'lamina\[tracking\]'") as caught:
        lamina.Model(tracked(log=log)).fit(people(60), quiet=True, on_epoch=epochs.append)
    assert f"training.log: {log}" in str(caught.value) and not epochs  # refused before training


@pytest.mark.parametrize("training, expected", [
    ({"log": "wandb"}, "training.log: Input should be 'none', 'tensorboard' or 'mlflow'"),
    ({"log": "mlflow", "log_dir": "runs"}, "log_dir applies to log: tensorboard, but log is mlflow"),
    ({"log_dir": "runs"}, "set log: tensorboard or remove log_dir"),
    ({"log": "tensorboard", "tracking_uri": "http://localhost:5000"}, "tracking_uri applies to log: mlflow"),
    ({"log": "mlflow", "experiment": ""}, "training.experiment: String should have at least 1 character"),
    ({"log_directory": "runs"}, "unknown key 'log_directory' in training; did you mean 'log_dir'?"),
])
def test_bad_options_are_clear_errors(training, expected):
    with pytest.raises(ConfigError) as caught:
        lamina.Model(config(training=training))
    assert expected in str(caught.value)


def test_unusable_tracking_uri_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="training.log: mlflow cannot start a run in 'ftp://nowhere/x'") as caught:
        lamina.Model(tracked(log="mlflow", tracking_uri="ftp://nowhere/x")).fit(people(60), quiet=True)
    assert "http://host:5000" in str(caught.value)


def test_log_settings_do_not_change_what_resume_accepts(tmp_path):
    """Where a run is logged does not change what is learned: a run resumed with logging turned on
    continues from the checkpoint."""
    plain, logged = lamina.Model(tracked()), lamina.Model(tracked(log="tensorboard", log_dir=str(tmp_path)))
    for model in (plain, logged):
        model.inputs_, model.outputs_ = [], []
    assert plain._fingerprint({"train": 10}) == logged._fingerprint({"train": 10})


def test_a_store_failing_mid_run_costs_a_warning_not_the_training():
    from mlflow.exceptions import MlflowException

    tracker = tracking.MLflow.__new__(tracking.MLflow)  # its store is what fails here, not its set-up
    tracker.working, tracker.failure = True, MlflowException
    calls = []

    def gone() -> None:
        calls.append(1)
        raise MlflowException("connection refused")

    with pytest.warns(UserWarning, match="MLflow stopped taking this run's log .connection refused.; training goes"):
        tracker._safely(gone)
    tracker._safely(gone)  # no second try, no second warning
    assert calls == [1] and not tracker.working

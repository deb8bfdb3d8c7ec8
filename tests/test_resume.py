"""A run killed with SIGKILL in the middle of an epoch resumes from its last checkpoint and
ends with the same model as a run that was never interrupted; one killed before its first
checkpoint starts again from the beginning."""
import contextlib
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

import lamina
from lamina import artifact
from lamina.cli import main

CONFIG = {
    "inputs": [{"name": "a", "type": "number"}, {"name": "b", "type": "number"},
               {"name": "c", "type": "category"}],
    "hidden": {"layers": 2, "size": 32},
    "outputs": [{"name": "y", "type": "binary"}],
    "training": {"epochs": 4, "batch_size": 16, "learning_rate": 0.005, "early_stopping": None},
}


def write_inputs(folder):
    rng = np.random.default_rng(0)
    rows = 6000
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows),
                          "c": rng.choice(list("pqrs"), rows)})
    frame["y"] = (frame["a"] * frame["b"] + (frame["c"] == "p") > 0).astype(int)
    frame.to_csv(folder / "data.csv", index=False)
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return frame


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model: fast, and steady on a busy machine


def train_command(folder, output, *extra):
    return [sys.executable, "-m", "lamina.cli", "train", "--config", str(folder / "config.yaml"),
            "--data", str(folder / "data.csv"), "--output", str(output), "--quiet", "--no-compare", "--no-report",
            *extra]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    frame = write_inputs(tmp_path)
    killed = tmp_path / "killed"
    process = subprocess.Popen(train_command(tmp_path, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=ONE_THREAD)
    checkpoint = killed / "checkpoint.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed: " + process.stderr.read().decode()
    time.sleep(0.1)  # into the next epoch
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "manifest.json").exists()

    resumed = subprocess.run(train_command(tmp_path, killed, "--resume"), capture_output=True, text=True, env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(train_command(tmp_path, tmp_path / "straight"), capture_output=True, text=True, env=ONE_THREAD)
    assert straight.returncode == 0, straight.stderr

    history = lamina.load(killed).training_["history"]
    assert [record["epoch"] for record in history] == list(range(1, 5))
    sample = frame.head(300)
    pd.testing.assert_frame_equal(lamina.load(killed).predict(sample), lamina.load(tmp_path / "straight").predict(sample))


def test_resume_before_the_first_checkpoint_starts_from_the_beginning(tmp_path):
    """A run killed before its first epoch ended left no checkpoint (only, perhaps, a half-written
    one): --resume trains from the beginning with a one-line note, and removes the leftover."""
    frame = write_inputs(tmp_path)
    frame.head(300).to_csv(tmp_path / "data.csv", index=False)
    output = tmp_path / "run"
    output.mkdir()
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    leftover = output / artifact.temporary_name("checkpoint.pt").replace(f"-{os.getpid()}-", f"-{killed.pid}-", 1)
    leftover.write_bytes(b"half a checkpoint")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(part) for part in train_command(tmp_path, output, "--resume")[3:]])
    assert code == 0, err.getvalue()
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lamina: warning: no checkpoint at ")
    assert "training from the beginning" in lines[0]
    assert [record["epoch"] for record in lamina.load(output).training_["history"]] == list(range(1, 5))
    assert not leftover.exists() and not (output / "checkpoint.pt").exists()


def test_resume_without_an_output_folder_is_a_clear_error(tmp_path):
    frame = write_inputs(tmp_path)
    with pytest.raises(lamina.ConfigError, match="resume needs the folder of the interrupted run"):
        lamina.Model(CONFIG).fit(frame.head(100), resume=True, quiet=True)


def test_checkpoint_is_written_with_no_leftover(tmp_path):
    from lamina import train

    train.save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_resume_with_another_config_is_refused(tmp_path):
    frame = write_inputs(tmp_path)
    config = {**CONFIG, "training": {**CONFIG["training"], "epochs": 1}}
    model = lamina.Model(config)
    output = tmp_path / "run"
    output.mkdir()
    # leave a checkpoint from one config, then resume with another
    from lamina import train

    model.fit(frame, output_dir=output, quiet=True)
    train.save_checkpoint(output / "checkpoint.pt", {"fingerprint": "someone else's", "epoch": 1})
    with pytest.raises(lamina.ArtifactError, match="another config or data"):
        lamina.Model(CONFIG).fit(frame, output_dir=output, resume=True, quiet=True)


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    frame = write_inputs(tmp_path)
    output = tmp_path / "run"
    output.mkdir()
    (output / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(lamina.ArtifactError, match="damaged"):
        lamina.Model(CONFIG).fit(frame, output_dir=output, resume=True, quiet=True)

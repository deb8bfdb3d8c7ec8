"""Saving and loading a model folder: identical predictions, nothing pickled, and a clear
lamina.ArtifactError for every way a folder can be incomplete, damaged or too new."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import lamina
from lamina import ArtifactError, artifact
from lamina.artifact import COMPARISON, FORMAT_VERSION, MANIFEST, add_file

from helpers_data import config, people

OUTPUTS = [{"name": "income", "type": "binary"}, {"name": "spend", "type": "number"},
           {"name": "segment", "type": "category"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[lamina.Model, Path]:
    """A model with every input type and three outputs, saved by fit(output_dir=...)."""
    folder = tmp_path_factory.mktemp("artifact") / "model"
    model = lamina.Model(config(outputs=OUTPUTS)).fit(people(150), output_dir=folder, quiet=True)
    return model, folder


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    """A fresh copy of the saved model folder, free to damage."""
    return Path(shutil.copytree(trained[1], tmp_path / "model"))


def error_of(path) -> str:
    with pytest.raises(ArtifactError) as caught:
        lamina.load(path)
    return str(caught.value)


def rewrite_manifest(folder: Path) -> None:
    """Recompute the checksums, as someone editing the folder by hand would, so loading gets past
    them to the parts' contents."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_load_gives_identical_predictions(trained):
    model, folder = trained
    data = people(40, seed=5)
    loaded = lamina.load(folder)
    pd.testing.assert_frame_equal(loaded.predict(data), model.predict(data))
    assert loaded.evaluate(data) == model.evaluate(data)
    assert loaded.config == model.config
    assert loaded.metrics_ == json.loads(json.dumps(model.metrics_))


def test_save_again_and_load(trained, tmp_path):
    model, _ = trained
    saved = model.save(tmp_path / "again")
    data = people(10, seed=6)
    pd.testing.assert_frame_equal(lamina.load(saved).predict(data), model.predict(data))


def test_folder_holds_no_pickles(trained):
    _, folder = trained
    names = {path.name for path in folder.iterdir()}
    assert {"config.yaml", "stats.json", "weights.safetensors", MANIFEST} <= names
    suffixes = {path.suffix for path in folder.iterdir()}
    assert suffixes <= {".yaml", ".json", ".safetensors", ".csv", ".md"}, suffixes
    assert not [name for name in names if name.startswith(".saving-")]  # staging folder removed


def test_load_never_unpickles(trained, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading a model must not unpickle")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)
    lamina.load(trained[1]).predict(people(3))


def test_missing_manifest(folder):
    (folder / MANIFEST).unlink()
    message = error_of(folder)
    assert f"{MANIFEST} is missing" in message and "train again" in message


@pytest.mark.parametrize("name", ["stats.json", "weights.safetensors", "config.yaml"])
def test_missing_file(folder, name):
    (folder / name).unlink()
    message = error_of(folder)
    assert f"{folder / name}' is missing" in message and "copy the whole folder" in message


def test_truncated_weights(folder):
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    message = error_of(folder)
    assert "weights.safetensors" in message and "does not match its checksum" in message
    assert "truncated or modified" in message


def test_tampered_stats_byte_flipped(folder):
    stats = folder / "stats.json"
    data = bytearray(stats.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit differs
    stats.write_bytes(bytes(data))
    message = error_of(folder)
    assert "stats.json" in message and "does not match its checksum" in message


def test_newer_format_version(folder):
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (folder / MANIFEST).write_text(json.dumps(manifest))
    message = error_of(folder)
    assert f"format {FORMAT_VERSION + 1}" in message and "upgrade lamina" in message


@pytest.mark.parametrize("text", ["{not json", '{"files": {}}', '{"format_version": 1, "files": {"stats.json": {}}}',
                                  '{"format_version": 1, "files": ["stats.json"]}', "[]"])
def test_damaged_manifest(folder, text):
    (folder / MANIFEST).write_text(text)
    assert "is damaged" in error_of(folder)


def test_folder_that_does_not_exist(tmp_path):
    message = error_of(tmp_path / "nowhere")
    assert "nowhere' does not exist" in message


def test_folder_that_is_not_a_model(tmp_path):
    assert f"{MANIFEST} is missing" in error_of(tmp_path)


def test_truncated_weights_with_matching_manifest(folder):
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    rewrite_manifest(folder)
    assert "cannot be read" in error_of(folder)


def test_stats_that_do_not_fit_the_config(folder):
    stats = json.loads((folder / "stats.json").read_text())
    del stats["inputs"]["city"]
    (folder / "stats.json").write_text(json.dumps(stats))
    rewrite_manifest(folder)
    message = error_of(folder)
    assert "does not fit together" in message and "restore the original folder" in message


def test_weights_that_do_not_fit_the_config(folder):
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    saved["hidden"]["size"] = 8
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    rewrite_manifest(folder)
    assert "does not fit together" in error_of(folder)


def test_config_that_is_no_longer_valid(folder):
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    saved["hiden"] = saved.pop("hidden")
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    rewrite_manifest(folder)
    message = error_of(folder)
    assert "config.yaml' is not a valid config" in message and "did you mean 'hidden'" in message


@pytest.mark.parametrize("call", ["predict", "evaluate", "save"])
def test_unfitted_model_says_fit_first(call, tmp_path):
    model = lamina.Model(config())
    argument = tmp_path / "model" if call == "save" else people(5)
    with pytest.raises(ArtifactError) as caught:
        getattr(model, call)(argument)
    assert "not trained yet; call fit() first" in str(caught.value)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_share_the_mode_the_umask_gives(trained, tmp_path, umask):
    """weights.safetensors was private (0600) while the other files followed the umask (0644)."""
    previous = os.umask(umask)
    try:
        fresh = trained[0].save(tmp_path / "fresh")
        again = trained[0].save(Path(shutil.copytree(trained[1], tmp_path / "again")))
        add_file(again, COMPARISON, "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o777 & ~umask
    for folder in (fresh, again):
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
        assert set(modes.values()) == {0o666 & ~umask}, modes


def dead_process_id() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def leftover_name(process_id: int, label: str = "") -> str:
    """A temporary name as another process would have made it."""
    return artifact.temporary_name(label).replace(f"-{os.getpid()}-", f"-{process_id}-", 1)


@pytest.mark.skipif(os.name != "posix", reason="asks the system whether a process id is alive")
def test_save_removes_leftovers_of_killed_saves(trained, tmp_path):
    parent = tmp_path / "runs"
    folder = Path(shutil.copytree(trained[1], parent / "model"))
    dead = dead_process_id()
    stale = [folder / leftover_name(dead), folder / leftover_name(dead, "checkpoint.pt"),
             parent / leftover_name(dead), folder / ".saving-abcd1234"]  # the last: from an older lamina
    stale[0].mkdir()
    (stale[0] / "weights.safetensors").write_bytes(b"half")
    stale[1].write_bytes(b"half a checkpoint")
    stale[2].mkdir()
    stale[3].mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale[3], (two_days_ago, two_days_ago))
    kept = [folder / artifact.temporary_name(),  # a save under way in this (live) process
            folder / ".saving-abcd5678",  # recent, writer unknown
            folder / ".saving-notes.txt"]  # not a name lamina makes
    for path in kept:
        path.write_text("busy")
    trained[0].save(folder)
    assert [path for path in stale if path.exists()] == []
    assert all(path.exists() for path in kept)
    lamina.load(folder)


def test_failed_first_save_leaves_no_folder(trained, tmp_path, monkeypatch):
    """A new folder appears in one rename, once complete; before that only a hidden staging
    folder exists, removed when the save fails."""
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact, "save_file", full_disk)
    with pytest.raises(OSError):
        trained[0].save(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_model(trained, folder, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact, "save_file", full_disk)
    with pytest.raises(OSError):
        trained[0].save(folder)
    assert not [path for path in folder.iterdir() if path.name.startswith(".saving-")]
    data = people(10, seed=8)
    pd.testing.assert_frame_equal(lamina.load(folder).predict(data), trained[0].predict(data))

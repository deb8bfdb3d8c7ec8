"""Saving and loading a model folder: identical predictions, nothing pickled, and a clear
lamina.ArtifactError for every way a folder can be incomplete, damaged or too new."""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import lamina
from lamina import ArtifactError
from lamina.artifact import FORMAT_VERSION, MANIFEST

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
    assert suffixes <= {".yaml", ".json", ".safetensors", ".csv"}, suffixes
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

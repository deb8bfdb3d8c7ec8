"""Tampered model folders and hostile config files: every file lamina reads is listed in the
manifest and checked, manifest entries stay inside the folder, links and special files are refused,
nesting is bounded, and a save killed at any moment never leaves a half-written model that loads.

Files in the folder that the manifest does not list (report.html, a user's notes, even an unlisted
comparison.json) are allowed and ignored: lamina never reads them."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import lamina
from lamina import ArtifactError, ConfigError
from lamina.artifact import COMPARISON, EVALUATION, MANIFEST, MAX_MANIFEST_BYTES, REQUIRED
from lamina.cli import main
from lamina.config import MAX_NESTING

from helpers_data import config, people, write_table

DEEP = 100_000  # far past Python's recursion limit: without a guard, a RecursionError traceback
DEEP_YAML = 5_000  # past the limit too, and quicker for the pure-Python YAML parser


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[lamina.Model, Path]:
    folder = tmp_path_factory.mktemp("hostile") / "model"
    model = lamina.Model(config()).fit(people(80), quiet=True)
    return model, model.save(folder)


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    """A fresh copy of the saved model folder, free to damage."""
    return Path(shutil.copytree(trained[1], tmp_path / "model"))


def error_of(path) -> str:
    with pytest.raises(ArtifactError) as caught:
        lamina.load(path)
    return str(caught.value)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest))


def relist(folder: Path, *names: str) -> None:
    """Recompute the manifest entries of `names`, as someone editing the folder by hand would."""
    manifest = manifest_of(folder)
    for name in names:
        data = (folder / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_manifest(folder, manifest)


def swap_labels(folder: Path) -> None:
    stats = json.loads((folder / "stats.json").read_text())
    stats["outputs"]["income"]["labels"].reverse()  # every prediction inverted
    (folder / "stats.json").write_text(json.dumps(stats))


# --- every file read is listed and checked -------------------------------------------------------

def test_stats_dropped_from_manifest_and_labels_swapped_is_refused(folder):
    manifest = manifest_of(folder)
    del manifest["files"]["stats.json"]
    write_manifest(folder, manifest)
    swap_labels(folder)
    message = error_of(folder)
    assert f"'{folder / 'stats.json'}' is not listed in {MANIFEST}" in message and "restore" in message


@pytest.mark.parametrize("name", REQUIRED)
def test_every_file_the_loader_reads_must_be_listed(folder, name):
    manifest = manifest_of(folder)
    del manifest["files"][name]
    write_manifest(folder, manifest)
    assert f"'{folder / name}' is not listed in {MANIFEST}" in error_of(folder)


def test_labels_swapped_under_an_intact_manifest_are_refused(folder):
    swap_labels(folder)
    message = error_of(folder)
    assert "stats.json" in message and "does not match its checksum" in message


@pytest.mark.parametrize("name", [EVALUATION, COMPARISON])
def test_optional_file_is_checked_at_load(folder, name):
    (folder / name).write_text(json.dumps({"tampered": True}))
    if name == COMPARISON:  # the saved model has none: list the tampered one with a stale checksum
        manifest = manifest_of(folder)
        manifest["files"][name] = {"sha256": "0" * 64, "bytes": len((folder / name).read_bytes())}
        write_manifest(folder, manifest)
    message = error_of(folder)
    assert name in message and "does not match its checksum" in message


def test_unlisted_files_are_ignored(folder, trained):
    """An optional file the manifest does not list is not read; other files may sit beside."""
    manifest = manifest_of(folder)
    del manifest["files"][EVALUATION]
    write_manifest(folder, manifest)
    (folder / COMPARISON).write_text("{not json at all")
    (folder / "notes.txt").write_text("trained on Tuesday")
    loaded = lamina.load(folder)
    assert loaded.comparison_ is None and loaded.evaluation_ is None
    data = people(20, seed=3)
    pd.testing.assert_frame_equal(loaded.predict(data), trained[0].predict(data))


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "null"])
def test_parts_must_be_mappings(folder, content):
    (folder / "metrics.json").write_text(content)
    relist(folder, "metrics.json")
    assert f"'{folder / 'metrics.json'}' holds" in error_of(folder)


def test_truncated_weights(folder):
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "weights.safetensors" in error_of(folder)
    relist(folder, "weights.safetensors")
    message = error_of(folder)
    assert "weights.safetensors" in message and "cannot be read" in message


# --- manifest entries stay inside the folder -----------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc/hostname", "/etc/hostname", "sub/stats.json", "..\\stats.json",
                                  "stats.json\x00.txt", "..", ".", "", ".hidden", "C:stats.json", "a\nb"])
def test_manifest_entry_leaving_the_folder_is_refused(folder, name):
    manifest = manifest_of(folder)
    manifest["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    write_manifest(folder, manifest)
    message = error_of(folder)
    assert f"lists {name!r}, which is not a file of the model folder" in message and "\x00" not in message


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
@pytest.mark.parametrize("target", ["outside", "inside"])
def test_symbolic_link_is_refused(folder, tmp_path, target):
    """Even a link to an identical copy: a link could lead anywhere, so a folder holds plain files."""
    stats = folder / "stats.json"
    copy = (tmp_path / "stats-copy.json") if target == "outside" else (folder / "stats-copy.json")
    shutil.copy(stats, copy)
    stats.unlink()
    stats.symlink_to(copy)
    message = error_of(folder)
    assert f"'{stats}' is a symbolic link" in message


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_manifest_that_is_a_link_is_refused(folder, tmp_path):
    outside = tmp_path / "manifest-copy.json"
    shutil.copy(folder / MANIFEST, outside)
    (folder / MANIFEST).unlink()
    (folder / MANIFEST).symlink_to(outside)
    assert "is a symbolic link" in error_of(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_hanging(folder):
    (folder / "stats.json").unlink()
    os.mkfifo(folder / "stats.json")
    assert "is not a plain file" in error_of(folder)


# --- the manifest itself -------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[" * DEEP + "]" * DEEP, '"a manifest"', "12",
                                  '{"format_version": true, "files": {}}',
                                  '{"format_version": 1, "files": {"stats.json": {"sha256": "x", "bytes": 1}}}',
                                  '{"format_version": 1, "files": {"stats.json": {"sha256": "' + "0" * 64 +
                                  '", "bytes": "1333"}}}'])
def test_malformed_manifest_is_refused(folder, text):
    (folder / MANIFEST).write_text(text)
    assert str(folder / MANIFEST) in error_of(folder)


def test_huge_manifest_is_refused_unread(folder):
    manifest = manifest_of(folder)
    manifest["padding"] = "x" * MAX_MANIFEST_BYTES
    write_manifest(folder, manifest)
    assert f"larger than {MAX_MANIFEST_BYTES} bytes" in error_of(folder)


# --- nesting is bounded --------------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("stats.json", "[" * DEEP + "]" * DEEP),
    ("stats.json", json.dumps({"inputs": {}, "outputs": {}, "deep": json.loads("[" * 200 + "]" * 200)})),
    ("metrics.json", '{"a": ' + "[" * DEEP + "]" * DEEP + "}"),
    ("config.yaml", "a: " + "[" * DEEP_YAML),
    ("config.yaml", "a: &a [*a]\n"),  # a list that holds itself
])
def test_deep_nesting_in_a_model_file_is_refused(folder, name, text):
    (folder / name).write_text(text)
    relist(folder, name)
    message = error_of(folder)
    assert f"'{folder / name}' is nested more than {MAX_NESTING} levels deep" in message


def test_yaml_alias_bomb_in_config_is_refused(folder):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]  # 10**9 values
    (folder / "config.yaml").write_text("\n".join(lines))
    relist(folder, "config.yaml")
    assert "holds more than" in error_of(folder)


def run_cli(argv: list) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, err.getvalue()


def test_deeply_nested_model_through_the_cli(folder, tmp_path):
    (folder / "stats.json").write_text("[" * DEEP + "]" * DEEP)
    relist(folder, "stats.json")
    code, err = run_cli(["predict", "--model", folder, "--data", write_table(people(5), tmp_path / "rows.csv")])
    assert code == 2 and "nested more than" in err and "stats.json" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


BLOCK_NESTED = "inputs:\n" + "".join("  " * level + "- \n" for level in range(1, 3000))  # no brackets at all


@pytest.mark.parametrize("text", ["a: " + "[" * DEEP_YAML, BLOCK_NESTED, "[" * 150 + "]" * 150])
def test_deeply_nested_config_file_is_a_config_error(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    for load in (lamina.load_config, lamina.Model):
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert f"config file '{path}' is nested more than {MAX_NESTING} levels deep" in str(caught.value)


def test_deeply_nested_config_through_the_cli(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * DEEP)
    data = write_table(people(5), tmp_path / "data.csv")
    code, err = run_cli(["train", "--config", path, "--data", data, "--output", tmp_path / "out"])
    assert code == 2
    assert err.startswith(f"lamina: error: config file '{path}' is nested more than {MAX_NESTING} levels deep")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --- a save killed at any moment ------------------------------------------------------------------

SAVER = textwrap.dedent("""
    import sys
    import lamina

    first, second, target = sys.argv[1:]
    models = [lamina.load(first), lamina.load(second)]
    print("ready", flush=True)
    while True:  # save the two models in turn until killed
        for model in models:
            model.save(target)
""")


def state_of(target: Path, sample: pd.DataFrame, expected: list) -> str:
    """What a reader finds in the folder: nothing, an interrupted save, or one complete model."""
    if not target.exists():  # a new folder appears whole or not at all
        return "absent"
    try:
        loaded = lamina.load(target)
    except ArtifactError as error:  # between the manifest's removal and its replacement
        assert f"{MANIFEST} is missing" in str(error), str(error)
        return "interrupted"
    predictions = loaded.predict(sample)
    assert any(predictions.equals(frame) for frame in expected), "a mix of two saves loaded"
    return "complete"


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL and SIGSTOP")
def test_save_killed_at_random_moments_never_leaves_a_half_model_that_loads(tmp_path):
    """A process saves two models in turn; it is frozen (SIGSTOP, which leaves the files exactly
    as a kill at that moment would) and looked at many times, then killed (SIGKILL) for real."""
    sample = people(30, seed=9)
    wide = {"layers": 2, "size": 192}  # weights of some size, so that kills land inside a save
    models = [lamina.Model(config(hidden=wide, training={"epochs": 1, "seed": seed})).fit(people(60), quiet=True)
              for seed in (1, 2)]
    sources = [model.save(tmp_path / f"source{index}") for index, model in enumerate(models)]
    expected = [model.predict(sample) for model in models]
    assert not expected[0].equals(expected[1])  # a mix of the two would be told apart
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    target = tmp_path / "saves" / "model"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    chance = random.Random(0)
    seen = []
    for round_number in range(3):
        process = subprocess.Popen([sys.executable, str(script), *map(str, sources), str(target)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        try:
            assert process.stdout.readline().strip() == "ready", process.stderr.read()
            for _ in range(0 if round_number == 0 else 8):
                time.sleep(chance.uniform(0.0, 0.05))
                os.kill(process.pid, signal.SIGSTOP)
                seen.append(state_of(target, sample, expected))
                os.kill(process.pid, signal.SIGCONT)
            time.sleep(0.0 if round_number == 0 else chance.uniform(0.0, 0.05))  # the first: in the first save
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            process.stdout.close()
            process.stderr.close()
        seen.append(state_of(target, sample, expected))
    print("states seen:", seen)
    models[0].save(target)  # the next save cleans up what the killed ones left
    leftovers = [path.name for path in [*target.iterdir(), *target.parent.iterdir()]
                 if path.name.startswith(".saving-")]
    assert leftovers == []
    pd.testing.assert_frame_equal(lamina.load(target).predict(sample), expected[0])


@pytest.mark.parametrize("change", ["deep", "escaping model file", "not json"])
def test_hostile_export_description_is_refused(tmp_path, change):
    from lamina import DataError
    from lamina.export import MANIFEST as DESCRIPTION, read_description

    text = {"deep": '{"model_file": "model.onnx", "inputs": ' + "[" * DEEP + "]" * DEEP + "}",
            "escaping model file": json.dumps({"model_file": "../../etc/hostname", "inputs": [], "outputs": []}),
            "not json": "{"}[change]
    (tmp_path / DESCRIPTION).write_text(text)
    with pytest.raises(DataError, match="export the model again"):
        read_description(tmp_path)

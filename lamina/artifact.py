"""Saving and loading a trained model as a folder: config (YAML), learned statistics (JSON),
weights (safetensors), metrics and history, optional extras added later (comparison.json), and a
manifest of checksums. Nothing is pickled."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from pathlib import Path

import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import lamina
from lamina.errors import ArtifactError, ConfigError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
COMPARISON = "comparison.json"  # optional: written by `lamina compare`, read back as Model.comparison_
EVALUATION = "evaluation.json"  # optional (absent in folders saved before it existed): Model.evaluation_
OPTIONAL = (COMPARISON, EVALUATION)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flat_history(history: list[dict]) -> list[dict]:
    rows = []
    for record in history:
        row = {key: value for key, value in record.items() if key != "validation"}
        for output, values in record.get("validation", {}).items():
            if isinstance(values, dict):
                row.update({f"validation_{output}_{name}": value for name, value in values.items()})
            else:
                row[f"validation_{output}"] = values
        rows.append(row)
    return rows


def write_history_csv(history: list[dict], path: Path) -> None:
    rows = _flat_history(history)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def save(model, path: str | Path) -> Path:
    """Write every file to a temporary folder, then move them in with the manifest last: a folder
    whose manifest is missing or does not match is never mistaken for a good model."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    stats = {"format_version": FORMAT_VERSION, "lamina_version": lamina.__version__,
             "inputs": {f.config.name: f.stats for f in model.inputs_},
             "outputs": {f.config.name: f.stats for f in model.outputs_}}
    with tempfile.TemporaryDirectory(dir=folder, prefix=".saving-") as staging:
        staging = Path(staging)
        (staging / "config.yaml").write_text(yaml.safe_dump(model.config.to_dict(), sort_keys=False), "utf-8")
        (staging / "stats.json").write_text(json.dumps(stats, indent=1), "utf-8")
        weights = {key: value.detach().contiguous() for key, value in model.network_.state_dict().items()}
        save_file(weights, staging / "weights.safetensors", metadata={"format": "pt"})
        (staging / "metrics.json").write_text(json.dumps(model.metrics_, indent=1), "utf-8")
        (staging / "history.json").write_text(json.dumps(model.training_, indent=1), "utf-8")
        write_history_csv(model.training_.get("history", []), staging / "history.csv")
        for name, value in ((COMPARISON, getattr(model, "comparison_", None)),
                            (EVALUATION, getattr(model, "evaluation_", None))):
            if value is not None:
                (staging / name).write_text(json.dumps(value), "utf-8")
        files = sorted(item.name for item in staging.iterdir())
        manifest = {"format_version": FORMAT_VERSION, "lamina_version": lamina.__version__,
                    "files": {name: _entry(staging / name) for name in files}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), "utf-8")
        (folder / MANIFEST).unlink(missing_ok=True)
        for name in OPTIONAL:  # an extra of an earlier model in this folder does not describe this one
            if name not in files:
                (folder / name).unlink(missing_ok=True)
        for name in files + [MANIFEST]:
            os.replace(staging / name, folder / name)
    return folder


def _entry(path: Path) -> dict:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: readers see the old file or the new, never half."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=".saving-",
                                     delete=False) as handle:
        handle.write(text)
    like = path if path.exists() else path.parent / MANIFEST
    os.chmod(handle.name, like.stat().st_mode & 0o777)  # temporary files are private (0600); match the folder's
    os.replace(handle.name, path)


def add_file(path: str | Path, name: str, text: str) -> Path:
    """Add or replace an optional file (one of OPTIONAL) in a saved, intact model folder. The
    manifest first forgets the file, then the file is replaced, then the manifest lists it again:
    a crash at any step leaves a folder that loads (at worst without the file)."""
    if name not in OPTIONAL:
        raise ArtifactError(f"'{name}' is not an optional file of a model folder; expected one of {OPTIONAL}")
    folder = Path(path)
    manifest = verify(folder)
    files = manifest["files"]
    if files.pop(name, None) is not None:
        _write_atomically(folder / MANIFEST, json.dumps(manifest, indent=1))
    _write_atomically(folder / name, text)
    files[name] = _entry(folder / name)
    manifest["files"] = dict(sorted(files.items()))
    _write_atomically(folder / MANIFEST, json.dumps(manifest, indent=1))
    return folder / name


def verify(path: str | Path) -> dict:
    """The manifest of a model folder, once every file it lists matches its checksum."""
    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactError(f"model folder '{folder}' does not exist; give the --output folder of `lamina train`")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"'{folder}' is not a complete lamina model: {MANIFEST} is missing (the save was "
                            f"interrupted or this is another folder); train again or use --resume")
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        version = manifest["format_version"]
        files = {str(name): (entry["sha256"], int(entry["bytes"])) for name, entry in manifest["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ArtifactError(f"'{manifest_path}' is damaged; the model folder cannot be trusted") from None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(f"'{folder}' was saved in format {version}, newer than this lamina reads "
                            f"({FORMAT_VERSION}); upgrade lamina")
    for name, (sha256, size) in files.items():
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"'{file}' is missing from the model folder; copy the whole folder")
        if file.stat().st_size != size or _sha256(file) != sha256:
            raise ArtifactError(f"'{file}' does not match its checksum in {MANIFEST}: it was truncated or "
                                f"modified; restore it from the original model folder")
    return manifest


def read(path: str | Path) -> dict:
    """Check a model folder and return its parts: config (dict), stats, weights, metrics, training,
    and comparison (None when the folder has none; a file the manifest does not list is ignored)."""
    folder = Path(path)
    listed = verify(folder)["files"]
    try:
        parts = {
            "config": yaml.safe_load((folder / "config.yaml").read_text("utf-8")),
            "stats": json.loads((folder / "stats.json").read_text("utf-8")),
            "metrics": json.loads((folder / "metrics.json").read_text("utf-8")),
            "training": json.loads((folder / "history.json").read_text("utf-8")),
            "weights": load_file(folder / "weights.safetensors"),
            "comparison": json.loads((folder / COMPARISON).read_text("utf-8")) if COMPARISON in listed else None,
            "evaluation": json.loads((folder / EVALUATION).read_text("utf-8")) if EVALUATION in listed else None,
        }
    except (OSError, ValueError, yaml.YAMLError, SafetensorError) as error:
        raise ArtifactError(f"'{folder}' holds a file that cannot be read ({error}); restore the folder") from None
    return parts


def check_config(parts: dict, folder: str | Path):
    from lamina.config import load_config

    try:
        return load_config(parts["config"])
    except ConfigError as error:
        raise ArtifactError(f"'{folder}/config.yaml' is not a valid config: {error}") from None

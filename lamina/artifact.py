"""Saving and loading a trained model as a folder: config (YAML, as a person reads it, and JSON, whole),
learned statistics (JSON), weights (safetensors), metrics and history, its model card (model_card.py),
optional extras added later (comparison.json), and a manifest of checksums. Nothing is pickled."""
from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors, save_file

from lamina import model_card
from lamina.config import MAX_NESTING, MAX_YAML_VALUES, load_config, nesting_problem, to_yaml
from lamina.errors import ArtifactError, ConfigError
from lamina.version import __version__

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
COMPARISON = "comparison.json"  # optional: written by `lamina compare`, read back as Model.comparison_
EVALUATION = "evaluation.json"  # optional (absent in folders saved before it existed): Model.evaluation_
TUNING = "tuning.json"  # optional: the leaderboard of the `lamina tune` search that chose this config
ROLLOUT = "rollout.json"  # optional: written by `lamina rollout`, the model as a policy in its simulator
OPTIONAL = (COMPARISON, EVALUATION, TUNING, ROLLOUT)
EXTRAS = (("comparison", COMPARISON), ("evaluation", EVALUATION), ("tuning", TUNING),
          ("rollout", ROLLOUT))  # Model.<part>_ <-> file
# every file the loader parses; each must be listed in the manifest, so none is read unchecked
REQUIRED = ("config.yaml", "stats.json", "weights.safetensors", "metrics.json", "history.json")
# the resolved config, every key with its value: config.yaml leaves out defaults, which a later lamina may
# change; read whenever the manifest lists it (folders saved before it existed have a complete config.yaml)
RESOLVED = "resolved_config.json"
READABLE_HEADER = (f"# the config this model was trained with: the keys set and the defaults that matter; every "
                   f"value,\n# defaults included, is in {RESOLVED} (lamina config --resolved THIS_FOLDER)\n")
MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists a dozen files; anything larger is not one lamina wrote
# a manifest names files of this one folder: no separators, no '..', no leading dot, no NUL or control bytes
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
SHA256 = re.compile(r"[0-9a-f]{64}")
# files and folders being written carry this prefix with the writer's process id and host, so the
# leftovers of a killed writer can be told from a save still under way in a live process
TEMPORARY = ".saving-"
TEMPORARY_NAME = re.compile(r"\.saving-(\d+)-([0-9a-f]{8})-[A-Za-z0-9_.-]+")
OLD_TEMPORARY_NAME = re.compile(r"\.saving-[a-z0-9_]{8}")  # names saves used before they carried a process id
ABANDONED_SECONDS = 24 * 3600  # when the writer cannot be asked (another host, no process id): a day untouched


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_name(label: str = "") -> str:
    """A name for a file or folder being written (hidden, unique, owned by this process)."""
    return f"{TEMPORARY}{os.getpid()}-{_host()}-{secrets.token_hex(4)}{'-' + label if label else ''}"


def _abandoned(entry: os.DirEntry) -> bool:
    """Whether a temporary entry was left by a writer that is gone (killed mid-save)."""
    match = TEMPORARY_NAME.fullmatch(entry.name)
    if match is None and OLD_TEMPORARY_NAME.fullmatch(entry.name) is None:
        return False  # not lamina's: never touched
    if match and match[2] == _host() and os.name == "posix":  # on Windows, os.kill(pid, 0) sends Ctrl+C
        try:
            os.kill(int(match[1]), 0)  # signal 0 only asks whether the process exists
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError):  # PermissionError: alive, another user's
            return False
        return False
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > ABANDONED_SECONDS
    except OSError:
        return False


def remove_leftovers(*folders: Path) -> None:
    """Remove what killed saves left in these folders (temporary files and staging folders of
    processes no longer running); a save under way in a live process is left alone."""
    for folder in folders:
        try:
            entries = [entry for entry in os.scandir(folder) if entry.name.startswith(TEMPORARY)]
        except OSError:  # a folder not there (yet) or not readable holds nothing to clean
            continue
        for entry in entries:
            if not _abandoned(entry):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)  # best effort: another cleaner may race us
            else:
                Path(entry.path).unlink(missing_ok=True)


def temporary_sibling(target: Path) -> Path:
    """A hidden name beside `target` to write it under before the rename that completes it; what
    killed writers left beside it is removed first."""
    remove_leftovers(target.parent)
    return target.with_name(temporary_name(re.sub(r"[^A-Za-z0-9_.-]", "_", target.name)[-60:]))


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


def _write_parts(model, staging: Path, folder: Path) -> list[str]:
    """Every file of the model folder except the manifest, written into `staging`; their names. The
    card names `folder`, where the files end up."""
    stats = {"format_version": FORMAT_VERSION, "lamina_version": __version__,
             "inputs": {f.config.name: f.stats for f in model.inputs_},
             "outputs": {f.config.name: f.stats for f in model.outputs_}}
    (staging / "config.yaml").write_text(READABLE_HEADER + to_yaml(model.config.readable()), "utf-8")
    (staging / RESOLVED).write_text(json.dumps(model.config.to_dict(), indent=1), "utf-8")
    (staging / "stats.json").write_text(json.dumps(stats, indent=1), "utf-8")
    weights = {key: value.detach().cpu().contiguous() for key, value in model.network_.state_dict().items()}
    save_file(weights, staging / "weights.safetensors", metadata={"format": "pt"})
    (staging / "metrics.json").write_text(json.dumps(model.metrics_, indent=1), "utf-8")
    (staging / "history.json").write_text(json.dumps(model.training_, indent=1), "utf-8")
    write_history_csv(model.training_.get("history", []), staging / "history.csv")
    for part, name in EXTRAS:
        value = getattr(model, f"{part}_", None)  # absent on a model object from before the part existed
        if value is not None:
            (staging / name).write_text(json.dumps(value), "utf-8")
    (staging / model_card.MODEL_CARD).write_text(model_card.render(model, folder), "utf-8")
    files = sorted(item.name for item in staging.iterdir())
    # safetensors writes its file private (0600); every file gets the mode the umask gives a new file
    mode = (staging / "config.yaml").stat().st_mode & 0o777
    for name in files:
        os.chmod(staging / name, mode)
    manifest = {"format_version": FORMAT_VERSION, "lamina_version": __version__,
                "files": {name: _entry(staging / name) for name in files}}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), "utf-8")
    return files


def save(model, path: str | Path) -> Path:
    """Write every file to a staging folder, then move them in. A new folder appears whole, in one
    rename; an existing one loses its manifest first and gets the new one last, so a folder whose
    manifest is missing or does not match is never mistaken for a good model."""
    folder = Path(path)
    fresh = not folder.exists()
    home = folder.parent if fresh else folder  # staging sits on the same file system, for atomic renames
    home.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder.parent, folder)
    staging = home / temporary_name()
    staging.mkdir()  # not tempfile.mkdtemp: that folder would be private (0700), and may become the model
    try:
        files = _write_parts(model, staging, folder)
        if fresh:
            try:
                os.rename(staging, folder)  # also replaces an empty folder created meanwhile
                return folder
            except OSError:
                if not folder.is_dir():
                    raise
        (folder / MANIFEST).unlink(missing_ok=True)
        for name in OPTIONAL:  # an extra of an earlier model in this folder does not describe this one
            if name not in files:
                (folder / name).unlink(missing_ok=True)
        for name in files + [MANIFEST]:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the folder was renamed into place
    return folder


def _entry(path: Path) -> dict:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: readers see the old file or the new, never half."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=temporary_name() + "-",
                                     delete=False) as handle:
        handle.write(text)
    like = path if path.exists() else path.parent / MANIFEST
    os.chmod(handle.name, like.stat().st_mode & 0o777)  # temporary files are private (0600); match the folder's
    os.replace(handle.name, path)


def add_file(path: str | Path, name: str, text: str) -> Path:
    """Add or replace an optional file (one of OPTIONAL) in a saved, intact model folder, then rewrite
    its model card to match. The manifest first forgets each file, then the file is replaced, then
    the manifest lists it again: a crash at any step leaves a folder that loads (at worst without it)."""
    if name not in OPTIONAL:
        raise ArtifactError(f"'{name}' is not an optional file of a model folder; expected one of {OPTIONAL}")
    folder = Path(path)
    manifest = verify(folder)
    remove_leftovers(folder)
    _replace(folder, manifest, name, text)
    _replace(folder, manifest, model_card.MODEL_CARD, model_card.render_parts(read(folder), folder))
    return folder / name


def _replace(folder: Path, manifest: dict, name: str, text: str) -> None:
    files = manifest["files"]
    if files.pop(name, None) is not None:
        _write_atomically(folder / MANIFEST, json.dumps(manifest, indent=1))
    _write_atomically(folder / name, text)
    files[name] = _entry(folder / name)
    manifest["files"] = dict(sorted(files.items()))
    _write_atomically(folder / MANIFEST, json.dumps(manifest, indent=1))


def _read_plain(file: Path, size: int | None = None, limit: int | None = None) -> bytes:
    """The bytes of a plain file of the model folder. Links are refused (they could lead out of the
    folder), and so are FIFOs and devices (reading one could hang or never end); the size the
    manifest gives (`size`) or a bound (`limit`) is checked before a byte is read."""
    link = (f"'{file}' is a symbolic link; a model folder holds plain files: copy the file it points to "
            f"in its place, or restore the folder")
    if file.is_symlink():
        raise ArtifactError(link)
    # O_NOFOLLOW: a link swapped in after the check above is still refused; O_NONBLOCK: a FIFO opens at once
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(file, flags)
    except FileNotFoundError:
        raise ArtifactError(f"'{file}' is missing from the model folder; copy the whole folder") from None
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise ArtifactError(link) from None
    with os.fdopen(descriptor, "rb") as handle:
        found = os.fstat(handle.fileno())
        if not stat.S_ISREG(found.st_mode):
            raise ArtifactError(f"'{file}' is not a plain file; restore it from the original model folder")
        if size is not None and found.st_size != size:
            _mismatch(file)
        if limit is not None and found.st_size > limit:
            raise ArtifactError(f"'{file}' is larger than {limit} bytes, far more than lamina writes there; the "
                                f"model folder cannot be trusted: restore it from the original")
        data = handle.read(found.st_size + 1)  # one byte more shows a file that grew while being read
    if size is not None and len(data) != size:
        _mismatch(file)
    return data


def _mismatch(file: Path):
    raise ArtifactError(f"'{file}' does not match its checksum in {MANIFEST}: it was truncated or "
                        f"modified; restore it from the original model folder")


def _manifest(folder: Path) -> dict:
    """The manifest, checked for shape: a format this lamina reads, entries that each name a plain
    file of this folder with its SHA-256 and size, and every file the loader reads among them."""
    if not folder.is_dir():
        raise ArtifactError(f"model folder '{folder}' does not exist; give the --output folder of `lamina train`")
    path = folder / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise ArtifactError(f"'{folder}' is not a complete lamina model: {MANIFEST} is missing (the save was "
                            f"interrupted or this is another folder); train again or use --resume")
    data = _read_plain(path, limit=MAX_MANIFEST_BYTES)
    damaged = f"'{path}' is damaged; the model folder cannot be trusted: restore it from the original"
    try:
        manifest = json.loads(data.decode("utf-8"))
    except RecursionError:  # the parser recurses once per nesting level
        raise ArtifactError(f"'{path}' is nested too deeply to be a manifest; the model folder cannot be "
                            f"trusted: restore it from the original") from None
    except ValueError:
        raise ArtifactError(damaged) from None
    if not isinstance(manifest, dict) or type(manifest.get("format_version")) is not int:
        raise ArtifactError(damaged)
    version = manifest["format_version"]
    if version > FORMAT_VERSION:
        raise ArtifactError(f"'{folder}' was saved in format {version}, newer than this lamina reads "
                            f"({FORMAT_VERSION}); upgrade lamina")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(damaged)
    for name, entry in files.items():
        if not PLAIN_NAME.fullmatch(name) or name == MANIFEST:
            raise ArtifactError(f"{MANIFEST} of '{folder}' lists {name!r}, which is not a file of the model "
                                f"folder (a path, a name leading out of it or an odd name); the manifest was "
                                f"tampered with: restore the folder from the original")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and SHA256.fullmatch(entry["sha256"]) and type(entry.get("bytes")) is int and entry["bytes"] >= 0):
            raise ArtifactError(damaged)
    for name in REQUIRED:
        if name not in files:
            raise ArtifactError(f"'{folder / name}' is not listed in {MANIFEST}, so it cannot be checked; the "
                                f"manifest was edited by hand: restore the folder from the original save")
    return manifest


def _read_checked(folder: Path, manifest: dict) -> dict[str, bytes]:
    """Every file the manifest lists, read once and checked: what is parsed is exactly what was
    hashed, even if the folder changes meanwhile."""
    contents = {}
    for name, entry in manifest["files"].items():
        data = _read_plain(folder / name, size=entry["bytes"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            _mismatch(folder / name)
        contents[name] = data
    return contents


def verify(path: str | Path) -> dict:
    """The manifest of a model folder, once every file it lists matches its checksum."""
    folder = Path(path)
    manifest = _manifest(folder)
    _read_checked(folder, manifest)
    return manifest


def _parse(file: Path, data: bytes) -> dict:
    """A checked JSON or YAML file of the folder as a mapping, bounded in nesting so that nothing
    walking it later can exhaust the stack."""
    is_yaml = file.suffix == ".yaml"
    try:
        text = data.decode("utf-8")
        value = yaml.safe_load(text) if is_yaml else json.loads(text)
    except RecursionError:  # both parsers recurse once per nesting level
        value, problem = None, f"is nested more than {MAX_NESTING} levels deep"
    except (ValueError, yaml.YAMLError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ArtifactError(f"'{file}' cannot be read ({reason}); restore it from the original model folder") \
            from None
    else:
        problem = nesting_problem(value, MAX_YAML_VALUES if is_yaml else None)
    if problem:
        raise ArtifactError(f"'{file}' {problem}; lamina never writes that: restore it from the original model "
                            f"folder")
    if not isinstance(value, dict):
        raise ArtifactError(f"'{file}' holds {type(value).__name__}, not a mapping; restore it from the original "
                            f"model folder")
    return value


def read(path: str | Path) -> dict:
    """Check a model folder and return its parts: config (config.yaml's dict), resolved (the whole config's
    dict, None in a folder saved before it was kept), stats, weights, metrics, training, and comparison
    and evaluation (None when the manifest does not list them). Only files the manifest lists are read;
    any other file in the folder (report.html, notes) is ignored."""
    folder = Path(path)
    contents = _read_checked(folder, _manifest(folder))
    parts = {part: _parse(folder / name, contents[name]) for part, name in
             (("config", "config.yaml"), ("stats", "stats.json"), ("metrics", "metrics.json"),
              ("training", "history.json"))}
    parts["resolved"] = _parse(folder / RESOLVED, contents[RESOLVED]) if RESOLVED in contents else None
    for part, name in EXTRAS:
        parts[part] = _parse(folder / name, contents[name]) if name in contents else None
    try:
        parts["weights"] = load_tensors(contents["weights.safetensors"])
    except SafetensorError as error:
        raise ArtifactError(f"'{folder / 'weights.safetensors'}' cannot be read ({error}); restore it from the "
                            f"original model folder") from None
    return parts


def read_config(path: str | Path):
    """The Config a saved model was trained with (see check_config), checking and reading only the
    folder's config files."""
    folder = Path(path)
    listed = _manifest(folder)["files"]
    contents = _read_checked(folder, {"files": {name: entry for name, entry in listed.items()
                                                if name in ("config.yaml", RESOLVED)}})
    return check_config({"config": _parse(folder / "config.yaml", contents["config.yaml"]),
                         "resolved": _parse(folder / RESOLVED, contents[RESOLVED]) if RESOLVED in contents
                         else None}, folder)


def check_config(parts: dict, folder: str | Path):
    """The Config a saved model was trained with: its resolved config when the folder keeps one, so
    that defaults changed by a later lamina change nothing, else config.yaml (written whole before the
    resolved config was kept). config.yaml, what a person reads, must agree with it on every key it
    states: a disagreement means one of them was edited after the save."""
    readable = _valid_config(parts["config"], Path(folder) / "config.yaml")
    if parts.get("resolved") is None:
        return readable
    resolved = _valid_config(parts["resolved"], Path(folder) / RESOLVED)
    found = _disagreement(parts["config"], parts["resolved"])
    if found:
        where, stated, kept = found
        raise ArtifactError(f"'{folder}' does not fit together: config.yaml says {where}: {stated!r}, but the "
                            f"config the model was trained with ({RESOLVED}) says {kept!r}; restore the original "
                            f"folder, or train a new model from the edited config.yaml")
    # loaded from config.yaml, it knows which keys were set, so a model saved again reads the same
    return readable if readable.to_dict() == resolved.to_dict() else resolved


def _valid_config(values: dict, file: Path):
    try:
        return load_config(values)
    except ConfigError as error:
        raise ArtifactError(f"'{file}' is not a valid config: {error}") from None


def _disagreement(stated: Any, kept: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """(key path, value, kept value) of the first value that config.yaml states and the resolved config
    does not hold, or None."""
    if isinstance(stated, dict) and isinstance(kept, dict):
        pairs = [(f"{where}.{key}" if where else str(key), value, kept.get(key)) for key, value in stated.items()]
    elif isinstance(stated, list) and isinstance(kept, list) and len(stated) == len(kept):
        pairs = [(f"{where}[{index}]", value, other) for index, (value, other) in enumerate(zip(stated, kept))]
    else:
        return None if stated == kept else (where or "the config", stated, kept)
    return next(filter(None, (_disagreement(value, other, key) for key, value, other in pairs)), None)

"""`lamina tune`: hyperparameter search with Optuna. The config's `tune:` section (read in
tune_space.py) maps dotted paths of the config to the values to try; every trial trains on the
training rows and is scored on the validation rows alone (the test rows are not even handed to
it), and the best config is trained again on the whole split and measured once on the test rows."""
from __future__ import annotations

import html
import json
import math
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from lamina import artifact, features
from lamina.config import Config, Split, load_config
from lamina.data import labelled_rows, rows_to_keep, split_rows
from lamina.errors import ConfigError, DataError
from lamina.tune_space import SEARCH, Search, apply, raw_config, read_search

SPLIT_COLUMN = "lamina_tune_split"  # the column that carries the fixed train/validation split to every trial
STUDY_FILE = "study.log"  # the journal a search keeps in its output folder when no --storage is given
MODEL_FOLDER = "model"
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


class InvalidTrial(ConfigError):
    """A trial's combination of values does not make a valid config: the trial fails, the search goes on."""


MEMORY_ERRORS = (MemoryError, torch.cuda.OutOfMemoryError)  # the widest trial may not fit; the others still run


# --- trials ---------------------------------------------------------------------------------------

def search_rows(config: Config, data: Any) -> pd.DataFrame:
    """The training and validation rows of `data`, split as Model.fit splits them, with the split in
    a column: trials reproduce fit's split exactly and never receive a test row."""
    inputs = [features.build(feature) for feature in config.inputs]
    outputs = [features.build(feature) for feature in config.outputs]
    frame, _ = labelled_rows(data, config, inputs, outputs)
    frame = frame[rows_to_keep(frame, inputs, outputs)]
    parts = split_rows(frame, config)
    if not len(parts["validation"]):
        raise DataError("a search scores each trial on the validation rows, and the split gives none; give "
                        "split.ratios a validation share (e.g. [0.8, 0.1, 0.1])")
    kept = sorted([*parts["train"], *parts["validation"]])  # fit keeps the rows in file order in each part
    names = pd.Series("train", index=range(len(frame)))
    names[parts["validation"]] = "validation"
    return frame.iloc[kept].assign(**{SPLIT_COLUMN: names.iloc[kept].to_numpy()})


def _value(validation: dict, metric: str) -> float:
    if metric == "loss":
        return float(validation["loss"])
    output, _, name = metric.rpartition(".")
    if name not in validation.get(output, {}):
        measured = [f"{o}.{m}" for o, values in validation.items() if isinstance(values, dict) for m in values]
        raise ConfigError(f"tune.{SEARCH}.metric: '{metric}' is not measured; choose 'loss' or one of: "
                          f"{', '.join(measured)}")
    return float(validation[output][name])


def objective(trial, raw: dict, search: Search, rows: pd.DataFrame) -> float:
    """Train one trial's config on the search rows; its value is the best validation value of the
    run. Each epoch's value is reported to Optuna, which may prune the trial."""
    import optuna

    from lamina.api import Model

    values = {path: parameter.suggest(trial) for path, parameter in search.space.items()}
    try:
        config = load_config(apply(raw, values, search.space))
    except ConfigError as error:  # each value alone was checked; a combination of them is not valid
        trial.set_user_attr("error", str(error))
        raise InvalidTrial(str(error)) from None
    config = config.model_copy(update={"split": Split(method="column", column=SPLIT_COLUMN)})
    scores: list[float] = []
    began = time.perf_counter()

    def on_epoch(record: dict) -> None:  # only the validation part of the record is read
        score = _value(record["validation"], search.metric)
        scores.append(score)
        trial.set_user_attr("epochs", len(scores))
        trial.set_user_attr("seconds", round(time.perf_counter() - began, 3))
        if not math.isnan(score):
            trial.set_user_attr("best", _best(scores, search.direction))
            trial.report(score, record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

    try:
        Model(config).fit(rows, quiet=True, on_epoch=on_epoch)
    except MEMORY_ERRORS as error:  # e.g. the widest hidden layers: this trial fails, the search goes on
        trial.set_user_attr("error", f"out of memory: {str(error).splitlines()[0] if str(error) else 'MemoryError'}")
        raise
    if all(math.isnan(score) for score in scores):
        trial.set_user_attr("error", f"no finite {search.metric} on the validation rows (did the training diverge?)")
    return _best(scores, search.direction)


def _best(scores: list[float], direction: str) -> float:
    finite = [score for score in scores if not math.isnan(score)]
    if not finite:
        return float("nan")  # Optuna marks the trial failed
    return min(finite) if direction == "minimize" else max(finite)


def open_storage(storage: str | None, output: Path):
    """An Optuna storage: a database URL as it is, else a journal file (the default one lives in the
    output folder, so a rerun adds trials to the same study)."""
    import optuna

    if storage and "://" in storage:
        return storage
    path = Path(storage) if storage else output / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def _study(search: Search, storage, name: str, worker: int = 0):
    import optuna

    options = search.options
    seed = None if options.seed is None else options.seed + worker  # workers sample apart, reproducibly
    sampler = optuna.samplers.TPESampler(seed=seed) if options.sampler == "tpe" else \
        optuna.samplers.RandomSampler(seed=seed)
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=options.startup_trials),
              "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
              "none": optuna.pruners.NopPruner}[options.pruner]()
    return optuna.create_study(storage=storage, study_name=name, direction=search.direction, sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def work(job: dict) -> None:
    """One worker of a search: read the search rows, then run its share of the trials on the shared
    study. Runs in the calling process (jobs=1) or in a process of its own."""
    import optuna

    if job["threads"]:
        torch.set_num_threads(job["threads"])  # workers share the cores instead of each taking them all
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's reason is in its line and leaderboard row
    raw, search = read_search(job["config"])
    rows = search_rows(load_config(raw), job["data"])
    study = _study(search, open_storage(job["storage"], Path(job["output"])), job["study"], job["worker"])
    callbacks = [] if job["quiet"] else [lambda study, trial: print(_trial_line(trial, search), flush=True)]
    study.optimize(lambda trial: objective(trial, raw, search, rows), n_trials=job["trials"],
                   timeout=job["timeout"], catch=(InvalidTrial, *MEMORY_ERRORS), callbacks=callbacks)


def _trial_line(trial, search: Search) -> str:
    state = STATES.get(trial.state.name, trial.state.name.lower())
    best = trial.user_attrs.get("best")
    value = f"{search.metric} {best:.4f}" if best is not None else trial.user_attrs.get("error", "no value")
    values = " ".join(f"{path}={value:.4g}" if isinstance(value, float) else f"{path}={value}"
                      for path, value in trial.params.items())
    return (f"trial {trial.number:>3} {state:<8} {value}  ({trial.user_attrs.get('epochs', 0)} epochs, "
            f"{trial.user_attrs.get('seconds', 0):.1f}s)  {values}")


# --- the search -----------------------------------------------------------------------------------

def tune(config: Config | dict | str | Path, data: Any, trials: int, output: str | Path, jobs: int = 1,
         storage: str | None = None, study_name: str | None = None, timeout: float | None = None,
         quiet: bool = False) -> dict:
    """Search the config's tune section with `trials` trials (shared by `jobs` worker processes),
    write the leaderboard (leaderboard.csv, tune.json, leaderboard.html) and the best config
    (best.yaml) to `output`, then train the best config on `data` again, with its test rows, and save
    it to `output`/model. Returns the JSON-able summary plus 'model' (the trained lamina.Model).

    `storage`: a database URL (sqlite:///tune.db) or a journal file shared by several processes or
    machines, with `study_name`; by default a journal in `output`, so a rerun adds trials. With
    jobs > 1 the workers are spawned processes: a script calling this needs `if __name__ == "__main__":`."""
    import optuna

    from lamina.api import Model

    source = raw_config(config)
    raw, search = read_search(source)
    if trials < 1 or jobs < 1:
        raise ConfigError(f"trials and jobs must be at least 1; got trials {trials}, jobs {jobs}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial gets one line of ours instead
    name = study_name or "lamina"
    study = _study(search, open_storage(storage, output), name)
    _check_same_search(study, search)
    jobs = min(jobs, trials)
    base = {"config": source, "data": data, "storage": storage,
            "output": str(output), "study": name, "timeout": timeout, "quiet": quiet}
    began = time.perf_counter()
    _run(base, trials, jobs)
    seconds = time.perf_counter() - began
    study = _study(search, open_storage(storage, output), name)  # every worker's trials, from the storage
    board = leaderboard(study, search)
    completed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        errors = [trial.user_attrs["error"] for trial in study.trials if "error" in trial.user_attrs]
        raise ConfigError("no trial of the search completed" + (f"; the first error: {errors[0]}" if errors else
                                                                 "; see the leaderboard in " + str(output)))
    best = study.best_trial
    chosen = {path: search.space[path].decode(value) for path, value in best.params.items()}
    best_config = apply(raw, chosen, search.space)
    if "training.seed" in chosen and not (best_config.get("split") or {}).get("seed"):  # the split follows the seed
        best_config["split"] = {**(best_config.get("split") or {}), "seed": load_config(raw).training.seed}
    (output / "best.yaml").write_text(yaml.safe_dump(best_config, sort_keys=False), "utf-8")
    if not quiet:
        print(f"best: trial {best.number}, {search.metric} {best.value:.4f}; training its config again on the same "
              f"split, then measuring it on the test rows", flush=True)
    model = Model(best_config).fit(data, output_dir=output / MODEL_FOLDER, quiet=quiet)
    result = {"metric": search.metric, "direction": search.direction, "study": name,
              "storage": re.sub(r"://[^/@]*@", "://***@", storage or str(output / STUDY_FILE)),  # no password
              "trials_run": trials, "jobs": jobs,
              "seconds": round(seconds, 3), "pruned": sum(row["state"] == "pruned" for row in board),
              "best": {"trial": best.number, "value": best.value, "params": chosen},
              "leaderboard": board, "model": str(output / MODEL_FOLDER),
              "metrics": {part: model.metrics_[part] for part in ("validation", "test") if part in model.metrics_}}
    _write(output, result, search)
    model.tuning_ = {key: result[key] for key in ("metric", "direction", "trials_run", "pruned", "best", "leaderboard")}
    artifact.add_file(output / MODEL_FOLDER, artifact.TUNING, json.dumps(model.tuning_, default=str))
    return {**result, "model": model}


def _run(job: dict, trials: int, jobs: int) -> None:
    """The trials, in this process or shared by `jobs` worker processes. Processes, not threads: a
    trial's Python steps hold the GIL (two threads ran 8 small trials no faster than one). Spawned,
    not forked: a forked child cannot use CUDA, nor safely the parent's thread pools and storage."""
    if jobs == 1:
        work({**job, "trials": trials, "worker": 0, "threads": 0})
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)  # the cores shared out: one torch pool each would oversubscribe
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        shares = [trials // jobs + (worker < trials % jobs) for worker in range(jobs)]
        for done in [pool.submit(work, {**job, "trials": share, "worker": worker, "threads": threads})
                     for worker, share in enumerate(shares)]:
            done.result()


def _check_same_search(study, search: Search) -> None:
    """A study in a shared storage was made by one tune section: trials of another would not compare."""
    made = {"metric": search.metric, "space": {path: [p.choices, p.range and p.range.model_dump()]
                                               for path, p in sorted(search.space.items())}}
    if study.user_attrs.setdefault("search", made) != made:  # user_attrs is a copy: stored below when new
        raise ConfigError(f"study '{study.study_name}' in this storage was made by another tune section; give "
                          f"another --study name or --output folder, or the same tune section")
    study.set_user_attr("search", made)


def leaderboard(study, search: Search) -> list[dict]:
    """One row per trial of the study: finished ones best first, then pruned, failed and running."""
    rows = []
    for trial in study.trials:
        rows.append({"trial": trial.number, "state": STATES.get(trial.state.name, trial.state.name.lower()),
                     "value": trial.user_attrs.get("best"), **{path: trial.params.get(path) for path in search.space},
                     "epochs": trial.user_attrs.get("epochs", 0), "seconds": trial.user_attrs.get("seconds"),
                     **({"error": trial.user_attrs["error"]} if "error" in trial.user_attrs else {})})
    order = list(STATES.values())
    sign = -1 if search.direction == "maximize" else 1
    return sorted(rows, key=lambda row: (order.index(row["state"]) if row["state"] in order else len(order),
                                         row["value"] is None, sign * (row["value"] or 0.0), row["trial"]))


def table(rows: list[dict]) -> str:
    """The leaderboard as plain text, one line per trial."""
    frame = pd.DataFrame(rows).drop(columns=["error"], errors="ignore")
    return frame.to_string(index=False, na_rep="-", float_format=lambda value: f"{value:.4g}")


def _write(output: Path, result: dict, search: Search) -> None:
    """leaderboard.csv, tune.json and leaderboard.html (the model's own report.html is beside it)."""
    frame = pd.DataFrame(result["leaderboard"])
    frame.to_csv(output / "leaderboard.csv", index=False)
    (output / "tune.json").write_text(json.dumps(result, indent=1, default=str), "utf-8")
    best = result["best"]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>lamina tune</title></head><body>"
            f"<h1>lamina tune: {html.escape(search.metric)} ({search.direction})</h1><p>{len(frame)} trials, "
            f"{result['pruned']} pruned; best: trial {best['trial']} ({best['value']:.4f}), trained again in "
            f"<a href='{MODEL_FOLDER}/report.html'>{MODEL_FOLDER}/</a> (its test metrics: tune.json).</p>"
            f"{frame.to_html(index=False, na_rep='', float_format=lambda value: f'{value:.4g}')}</body></html>")
    (output / "leaderboard.html").write_text(page, "utf-8")

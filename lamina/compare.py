"""`lamina compare`: a classic machine-learning baseline trained on the same train / validation /
test rows as a deep model, both measured side by side (test metrics, training time, prediction
latency, size) with a paired bootstrap confidence interval and a plain verdict."""
from __future__ import annotations

import pickle
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from lamina import baseline, train
from lamina.data import columns_of, labelled_rows, learning_rows, rows_to_keep, split_rows, tensors
from lamina.errors import ArtifactError, DataError
from lamina.features.base import Unsupported
from lamina.version import __version__

LATENCY_ROWS = 100  # test rows predicted one at a time to time a single prediction


# --- the verdict and the bootstrap: pure functions ------------------------------------------------

def verdict(metric: str, direction: str, difference: float, low: float | None, high: float | None) -> str:
    """A plain sentence from the difference deep - classic in `metric` and its 95% interval;
    `direction` is 'max' when higher is better, 'min' when lower is (rmse)."""
    if low is None or high is None or not np.isfinite([difference, low, high]).all():
        return f"no confidence interval for {metric} could be computed (too few test rows): no verdict"
    deep_ahead = low > 0 if direction == "max" else high < 0
    classic_ahead = high < 0 if direction == "max" else low > 0
    if not (deep_ahead or classic_ahead):
        return (f"no significant difference in {metric} (deep - classic 95% CI {low:.4g}..{high:.4g} includes 0): "
                f"prefer the simpler model")
    # the winner's gain: positive when it is better, whichever direction the metric runs
    sign = 1.0 if deep_ahead == (direction == "max") else -1.0
    gain_low, gain_high = sorted((sign * low, sign * high))
    winner = "deep" if deep_ahead else "classic"
    return f"the {winner} model is better by {sign * difference:.4g} {metric} (95% CI {gain_low:.4g}..{gain_high:.4g})"


def paired_bootstrap(measure: Callable[[np.ndarray, np.ndarray], float], truth: np.ndarray, first: np.ndarray,
                     second: np.ndarray, *, resamples: int, seed: int) -> dict:
    """95% percentile interval of measure(first) - measure(second), both scored on the same test
    rows drawn with replacement; draws where the metric is undefined (e.g. one class) are skipped."""
    generator = np.random.default_rng(seed)
    rows = len(truth)
    differences = []
    for _ in range(resamples):
        drawn = generator.integers(0, rows, rows)
        difference = measure(truth[drawn], first[drawn]) - measure(truth[drawn], second[drawn])
        if np.isfinite(difference):
            differences.append(difference)
    if not differences:
        return {"low": None, "high": None, "resamples": 0}
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"low": float(low), "high": float(high), "resamples": len(differences)}


# --- the comparison ---------------------------------------------------------------------------------

def no_baseline(output) -> str | None:
    """Why the first output has no classic baseline (its type's own words), or None when it has one."""
    try:
        output.classic_task()
    except Unsupported as error:
        return str(error)
    return None


def split_as_trained(model, data: Any) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The rows Model.fit kept of `data` and its split of them ({part: row positions}), checked against
    what the model recorded."""
    recorded = (model.training_ or {}).get("rows")
    if not recorded:
        raise ArtifactError("this model keeps no record of its training rows (history.json has no 'rows'); "
                            "train it again with this version of lamina")
    frame, source = labelled_rows(data, model.config, model.inputs_, model.outputs_)  # as Model.fit read it
    frame = frame[rows_to_keep(frame, model.inputs_, model.outputs_)]
    parts = split_rows(frame, model.config)
    counts = {part: int(len(rows)) for part, rows in parts.items()}
    where = f" (it was trained on {model.training_['source']})" if model.training_.get("source") else ""
    if counts != {part: int(count) for part, count in recorded.items()}:
        raise DataError(f"{source} is not the data this model was trained on{where}: split as in training it "
                        f"gives {counts} rows, the model recorded {recorded}; compare needs exactly the data "
                        f"given to `lamina train`, so both models use the same test rows")
    training = learning_rows(frame.iloc[parts["train"]], model.outputs_)
    for feature in model.inputs_ + model.outputs_:  # same counts, other rows: e.g. the learned means differ
        mismatch = feature.stats_mismatch(training[feature.config.name])
        if mismatch:
            raise DataError(f"{source} is not the data this model was trained on{where}: {mismatch}; pass the "
                            f"same, unchanged data")
    return frame, parts




def _truth(output, frame: pd.DataFrame) -> np.ndarray:
    return output.target(frame[output.config.name]).numpy()


def choose_baseline(model, frame: pd.DataFrame, parts: dict, seed: int) -> tuple[baseline.Baseline, dict]:
    """Fit every candidate on the training rows, keep the best on the validation rows."""
    output = model.outputs_[0]
    task = output.classic_task()
    data = {}
    for part in ("train", "validation"):
        rows = frame.iloc[parts[part]]
        data[part] = (rows, task.fit_target(_truth(output, rows)))
    began = time.perf_counter()
    fitted = baseline.fit_candidates([feature.config for feature in model.inputs_], task, data, seed)
    seconds = time.perf_counter() - began
    metric, direction = output.main_metric()
    prepare, measure = output.bootstrap_metric()
    scored = []
    for candidate in fitted:
        score = None
        if len(parts["validation"]):
            raw = output.classic_raw(candidate.scores(data["validation"][0]))
            score = float(measure(_truth(output, data["validation"][0]), prepare(raw)))
            score = score if np.isfinite(score) else None
        scored.append({"model": candidate.name, "validation": score, "seconds": candidate.fit_seconds})
    ranked = [position for position, item in enumerate(scored) if item["validation"] is not None]
    sign = 1.0 if direction == "max" else -1.0
    # on a tie the later (linear, smaller and simpler) candidate wins
    best = max(reversed(ranked), key=lambda position: sign * scored[position]["validation"]) if ranked else 0
    chosen = fitted[best]
    how = f"best validation {metric}" if ranked else "no validation rows: gradient boosting by default"
    return chosen, {"model": chosen.name, "selected_by": how, "candidates": scored, "training_seconds": seconds,
                    "features": chosen.features.descriptions}


def isolation_forest(model, frame: pd.DataFrame, parts: dict, seed: int) -> tuple[baseline.Baseline, dict]:
    """The classic anomaly detector for an output whose classic goal is 'anomaly': an isolation forest
    fitted on the normal training rows (truth not 1), its threshold chosen by the output (at the same
    false-positive rate) on the normal validation rows."""
    output = model.outputs_[0]
    training = frame.iloc[parts["train"]]
    held_out = frame.iloc[parts["validation"]] if len(parts["validation"]) else training
    normal = training[_truth(output, training) != 1]
    chosen = baseline.fit_isolation_forest([feature.config for feature in model.inputs_], normal, seed)
    truth, scores = _truth(output, held_out), chosen.scores(held_out)
    chosen.threshold = output.classic_threshold(truth, scores)
    validation = output.metrics(torch.from_numpy(truth), output.classic_raw(scores)).get(output.main_metric()[0])
    where = "validation" if len(parts["validation"]) else "training (no validation rows)"
    return chosen, {"model": chosen.name, "selected_by": f"the one classic anomaly detector; threshold on the normal "
                                                         f"{where} rows",
                    "candidates": [{"model": chosen.name, "validation": validation, "seconds": chosen.fit_seconds}],
                    "training_seconds": chosen.fit_seconds, "features": chosen.features.descriptions}


def seconds_per_row(predict: Callable[[pd.DataFrame], Any], rows: pd.DataFrame) -> float:
    """Median seconds of one single-row prediction, after one untimed warm-up call."""
    predict(rows.iloc[:1])
    timings = []
    for position in range(len(rows)):
        began = time.perf_counter()
        predict(rows.iloc[[position]])
        timings.append(time.perf_counter() - began)
    return float(np.median(timings))


def run(model, data: Any, *, resamples: int = 1000, seed: int = 0) -> dict:
    """Train the classic baseline on the deep model's own split and compare the two (see README)."""
    output = model.outputs_[0]
    metric, direction = output.main_metric()
    frame, parts = split_as_trained(model, data)
    result = {"lamina_version": __version__, "output": output.config.name, "type": output.type_name,
              "metric": metric, "direction": direction, "rows": {part: int(len(rows)) for part, rows in parts.items()},
              "skipped": no_baseline(output), "deep": None, "classic": None, "difference": None}
    if result["skipped"]:
        return {**result, "verdict": result["skipped"]}
    if not len(parts["test"]):
        raise DataError(f"the model has no test rows (split ratios {list(model.config.split.ratios)}); compare "
                        f"measures both models on the test rows: train with a test share, e.g. [0.8, 0.1, 0.1]")
    goal = output.classic_task().goal
    if goal == "ranking":
        return {**result, **compare_ranking(model, frame, parts, resamples, seed)}
    test = frame.iloc[parts["test"]]
    truth = output.target(test[output.config.name])
    deep_raw = train.predict_raw(model.network_, tensors(test, model.inputs_))[output.config.name]
    pick = isolation_forest if goal == "anomaly" else choose_baseline
    chosen, classic = pick(model, frame, parts, seed)
    classic_raw = output.classic_raw(chosen.scores(test))
    own_threshold = {"threshold": chosen.threshold} if chosen.threshold is not None else {}
    timed = test.iloc[:LATENCY_ROWS]
    result["deep"] = {
        "model": "lamina", "test": output.metrics(truth, deep_raw),
        "training_seconds": float(sum(record["seconds"] for record in model.training_.get("history", []))),
        "latency_seconds": seconds_per_row(model.predict, timed),
        "size_bytes": sum(tensor.numel() * tensor.element_size() for tensor in model.network_.state_dict().values()),
    }
    result["classic"] = {**classic, "test": output.metrics(truth, classic_raw, **own_threshold),
                         "latency_seconds": seconds_per_row(chosen.scores, timed),
                         "size_bytes": len(pickle.dumps(chosen, protocol=pickle.HIGHEST_PROTOCOL))}  # in memory only
    prepare, measure = output.bootstrap_metric()
    interval = paired_bootstrap(measure, truth.numpy(), prepare(deep_raw), prepare(classic_raw),
                                resamples=resamples, seed=seed)
    difference = result["deep"]["test"][metric] - result["classic"]["test"][metric]
    result["difference"] = {"metric": metric, "value": difference, **interval, "seed": seed}
    result["verdict"] = verdict(metric, direction, difference, interval["low"], interval["high"])
    return result


def compare_ranking(model, frame: pd.DataFrame, parts: dict, resamples: int, seed: int) -> dict:
    """A ranking output against popularity and PureSVD (the better on validation NDCG@10), every
    model ranking each test row's item among the items its user did not choose in training."""
    from lamina import recommenders

    output = model.outputs_[0]
    metric, direction = output.main_metric()
    fitted = recommenders.candidates(output, frame.iloc[parts["train"]], seed)

    def summaries(scores_of, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        truth = output.target(columns_of(output, rows))
        return truth, output.summary(torch.as_tensor(scores_of(rows, truth)), truth)

    classic_scores = lambda candidate: lambda rows, truth: candidate.scores(truth[:, 1].numpy())
    scored = []
    for candidate in fitted:
        score = None
        if len(parts["validation"]):
            truth, summary = summaries(classic_scores(candidate), frame.iloc[parts["validation"]])
            score = output.metrics(truth, summary)[metric]
        scored.append({"model": candidate.name, "validation": score, "seconds": candidate.fit_seconds})
    best = max(range(len(fitted)), key=lambda position: scored[position]["validation"] or 0.0)
    chosen, test = fitted[best], frame.iloc[parts["test"]]
    deep_scores = lambda rows, truth: train.predict_raw(model.network_, tensors(rows, model.inputs_))[
        output.config.name]
    truth, deep_summary = summaries(deep_scores, test)
    _, classic_summary = summaries(classic_scores(chosen), test)
    timed = test.iloc[:LATENCY_ROWS]
    users = output.target(columns_of(output, timed))[:, 1].numpy()
    deep = {"model": "lamina", "test": output.metrics(truth, deep_summary),
            "training_seconds": float(sum(record["seconds"] for record in model.training_.get("history", []))),
            "latency_seconds": seconds_per_row(model.predict, timed),
            "size_bytes": sum(t.numel() * t.element_size() for t in model.network_.state_dict().values())}
    classic = {"model": chosen.name, "selected_by": f"best validation {metric}" if len(parts["validation"])
               else "no validation rows: the first candidate", "candidates": scored,
               "training_seconds": float(sum(item["seconds"] for item in scored)), "features": [],
               "test": output.metrics(truth, classic_summary),
               "latency_seconds": seconds_per_row(lambda rows: chosen.scores(users[:len(rows)]), timed),
               "size_bytes": len(pickle.dumps(chosen, protocol=pickle.HIGHEST_PROTOCOL))}
    prepare, measure = output.bootstrap_metric()  # per row, from the summaries
    interval = paired_bootstrap(measure, truth.numpy(), prepare(deep_summary), prepare(classic_summary),
                                resamples=resamples, seed=seed)
    difference = deep["test"][metric] - classic["test"][metric]
    return {"deep": deep, "classic": classic, "difference": {"metric": metric, "value": difference, **interval,
                                                              "seed": seed},
            "verdict": verdict(metric, direction, difference, interval["low"], interval["high"])}


# --- the printed report -------------------------------------------------------------------------------

def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if count < 1024 or unit == "MB":
            return f"{count:,} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def table(result: dict) -> str:
    """The comparison as plain text: one row per measure, one column per model, then the verdict."""
    rows = result["rows"]
    head = (f"output '{result['output']}' ({result['type']}); rows: train {rows['train']:,}, validation "
            f"{rows['validation']:,}, test {rows['test']:,}")
    if result["skipped"]:
        return f"{head}\nverdict: {result['verdict']}"
    deep, classic, difference = result["deep"], result["classic"], result["difference"]
    lines = [["", "deep (lamina)", f"classic ({classic['model']})"]]
    for name in deep["test"]:
        if name in classic["test"]:
            lines.append([f"test {name}", f"{deep['test'][name]:.4f}", f"{classic['test'][name]:.4f}"])
    lines += [["training seconds", f"{deep['training_seconds']:.1f}", f"{classic['training_seconds']:.1f}"],
              ["ms per prediction (1 row)", f"{1000 * deep['latency_seconds']:.2f}",
               f"{1000 * classic['latency_seconds']:.2f}"],
              ["model size", _size(deep["size_bytes"]), _size(classic["size_bytes"])]]
    widths = [max(len(line[column]) for line in lines) for column in range(3)]
    body = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    body.insert(1, "  ".join("-" * width for width in widths))
    picked = ", ".join(f"{item['model']} {item['validation']:.4f}" if item["validation"] is not None
                       else item["model"] for item in classic["candidates"])
    low, high = difference["low"], difference["high"]
    interval = f"95% CI {low:.4g}..{high:.4g}" if low is not None else "no CI"
    return "\n".join([head, *body, "",
                      f"classic candidates ({classic['selected_by']}): {picked}",
                      f"deep - classic {difference['metric']}: {difference['value']:+.4g} ({interval}, "
                      f"{difference['resamples']} paired bootstrap resamples of the test rows)",
                      f"verdict: {result['verdict']}"])

"""The model card (model_card.md) in every saved model folder: the data it was trained on, what it
predicts, its metrics on each split and against the classic baseline, the limits the data shows,
and how to call it. Written by lamina from what it knows; rewritten when a comparison is added."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lamina import features
from lamina.config import load_config
from lamina.features.base import Unsupported
from lamina.metrics import COUNTS

MODEL_CARD = "model_card.md"
RARE_ROWS = 30  # a class with fewer training rows is learned from few examples
RARE_SHARE = 0.05  # ... or with a smaller share of the training rows
SMALL_TEST = 200  # fewer test rows give wide confidence intervals
SPLITS = ("train", "validation", "test")


def render(model, folder: str | Path) -> str:
    """The card of a trained Model (or of a saved folder's parts, see render_parts) saved in `folder`."""
    sections = [_header(model), _data(model), _use(model), _metrics(model), _comparison(model, folder),
                _rollout(model), _limits(model), _calling(model, folder)]
    return "\n\n".join(section for section in sections if section) + "\n"


def render_parts(parts: dict, folder: str | Path) -> str:
    """The card of a saved model folder from its checked parts (artifact.read): no network is built."""
    config, stats = load_config(parts["config"]), parts["stats"]
    model = SimpleNamespace(
        config=config, metrics_=parts["metrics"], training_=parts["training"], comparison_=parts.get("comparison"),
        tuning_=parts.get("tuning"), rollout_=parts.get("rollout"),
        inputs_=[features.build(item, stats["inputs"][item.name]) for item in config.inputs],
        outputs_=[features.build(item, stats["outputs"][item.name]) for item in config.outputs])
    return render(model, folder)


# --- what the card is made of --------------------------------------------------------------------

def _summary(output) -> dict:
    """The output's prediction_summary; a folder saved by an earlier lamina may lack a statistic it reads."""
    try:
        return output.prediction_summary()
    except (KeyError, TypeError, ValueError, IndexError):
        return {"predicts": f"predicts '{output.name}' (a {output.type_name} output)"}


def _dataset(model):
    """The registry entry of the named data set the model was trained on, or None (a file, a frame)."""
    from lamina import datasets

    match = re.fullmatch(r"data set '(.+)'", str(model.training_.get("source", "")))
    return datasets.REGISTRY.get(match[1]) if match else None


def _cell(value: Any, name: str = "") -> str:
    """A metric as the printed tables show it: 4 decimals, counts (true_positives ...) whole."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    return f"{value:.0f}" if name in COUNTS else f"{value:.4f}"


def _escape(text: Any) -> str:
    """Text from the data (column names, labels) safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _header(model) -> str:
    names = ", ".join(f"'{feature.name}'" for feature in model.outputs_)
    return (f"# Model card: {names}\n\nWritten by lamina from the training run; `lamina compare` rewrites it with "
            f"the classic baseline.")


def _data(model) -> str:
    training = model.training_
    dataset = _dataset(model)
    if dataset is not None:
        source = (f"the lamina data set `{dataset.name}`: {dataset.description.rstrip('.')}.\n\n"
                  f"- Source: {dataset.source}\n- Licence: {dataset.licence}")
    else:
        source = str(training.get("source", "unknown")).replace("the DataFrame", "a DataFrame given to Model.fit")
        source = ("the file " + source if source.startswith("'") else source) + "."
    rows = training.get("rows", {})
    counts = ", ".join(f"{part} {rows.get(part, 0):,}" for part in SPLITS)
    dropped = training.get("dropped_rows", 0)
    left_out = f"; {dropped:,} rows left out (missing output or a `missing: drop` input)" if dropped else ""
    columns = ["| column | type | role |", "|---|---|---|"]
    columns += [f"| {_escape(feature.name)} | {feature.type_name} | {role} |"
                for role, group in (("input", model.inputs_), ("output", model.outputs_)) for feature in group]
    return "\n".join([f"## Data\n\nTrained on {source}\n\nRows: {counts}{left_out}.\n", *columns])


def _use(model) -> str:
    lines = ["## Intended use and outputs", ""]
    lines += [f"- {_summary(output)['predicts']}" for output in model.outputs_]
    inputs = ", ".join(f"'{feature.name}'" for feature in model.inputs_)
    lines += ["", f"It reads {inputs}. It is meant for rows like those it was trained on: the same columns, "
                  f"meaning and range of values; on other populations or periods its errors are unmeasured."]
    tuning = model.tuning_
    if tuning:
        lines += ["", f"Its config was chosen by `lamina tune` ({len(tuning.get('leaderboard', []))} trials, scored "
                      f"by validation {tuning.get('metric', '')})."]
    return "\n".join(lines)


def _metrics(model) -> str:
    """One row per output and metric, the main metric first, one column per split."""
    metrics = model.metrics_ or {}
    splits = [part for part in SPLITS if metrics.get(part)] + [part for part in metrics if part not in SPLITS]
    lines = ["## Metrics", "", "The main metric of each output comes first; loss is the training objective.", "",
             "| output | metric | " + " | ".join(splits) + " |", "|---|---|" + "---|" * len(splits)]
    lines.append("| (all) | loss | " + " | ".join(_cell(metrics[part].get("loss")) for part in splits) + " |")
    for output in model.outputs_:
        names = list(dict.fromkeys(name for part in splits
                                   for name in (metrics[part].get(output.name) or {}) if isinstance(name, str)))
        main = output.main_metric()[0]
        for name in sorted(names, key=lambda name: name != main):  # stable: the rest keep their order
            cells = [_cell((metrics[part].get(output.name) or {}).get(name), name) for part in splits]
            marker = " (main)" if name == main else ""
            lines.append(f"| {_escape(output.name)} | {name}{marker} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _deep_ahead(comparison: dict) -> bool | None:
    """Whether the deep model beat the classic one (its 95% interval clear of 0), None when unknown."""
    difference = comparison.get("difference") or {}
    low, high = difference.get("low"), difference.get("high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return None
    return low > 0 if comparison.get("direction", "max") == "max" else high < 0


def _comparison(model, folder: str | Path) -> str:
    comparison = model.comparison_
    if not comparison:
        return (f"## Compared with a classic baseline\n\nNot compared yet: `lamina compare --model {folder} --data "
                f"DATA` (the data it was trained on) trains gradient boosting or a linear model on the same split "
                f"and rewrites this card.")
    lines = ["## Compared with a classic baseline", ""]
    deep, classic = comparison.get("deep") or {}, comparison.get("classic") or {}
    if deep.get("test") and classic.get("test"):
        lines += [f"Test rows, lamina against {classic.get('model', 'the classic model')}:", "",
                  "| metric | deep (lamina) | classic |", "|---|---|---|"]
        main = comparison.get("metric")
        names = sorted((name for name in deep["test"] if name in classic["test"]), key=lambda name: name != main)
        lines += [f"| {name}{' (main)' if name == main else ''} | {_cell(deep['test'][name], name)} | "
                  f"{_cell(classic['test'][name], name)} |" for name in names]
        lines.append("")
    lines.append(f"Verdict: {comparison.get('verdict', 'none given')}.")
    return "\n".join(lines)


def _rollout(model) -> str:
    """How the model did as a policy in its simulator (`lamina rollout`), beside the reference policies."""
    rollout = model.rollout_
    if not rollout or not rollout.get("policies"):
        return ""
    seeds = rollout.get("seeds") or ["?", "?"]
    lines = ["## Acting in its simulator", "",
             f"`lamina rollout`: {rollout.get('episodes')} episodes of {_escape(rollout.get('environment'))} on "
             f"unseen seeds {seeds[0]} to {seeds[-1]}, every policy on the same seeds.", "",
             "| policy | return (mean ± std) | episode length |", "|---|---|---|"]
    for name, row in rollout["policies"].items():
        lines.append(f"| {_escape(name)} | {row['return_mean']:.2f} ± {row['return_std']:.2f} | "
                     f"{row['length_mean']:.1f} |")
    if rollout.get("clipped_actions"):
        lines += ["", f"{rollout['clipped_actions']} of its {rollout.get('actions')} actions were outside the action "
                      f"space and were clipped."]
    return "\n".join(lines)


def _limits(model) -> str:
    found = [*_data_limits(model), *_class_limits(model), *_comparison_limits(model)]
    body = "\n".join(f"- {line}" for line in found) if found else \
        "- None found from the data; the metrics above hold for data like the test rows only."
    return f"## Known limits\n\n{body}"


def _data_limits(model) -> list[str]:
    training, found = model.training_, []
    dataset = _dataset(model)
    if dataset is not None and dataset.simulated:
        found.append(f"The data set `{dataset.name}` is simulated or synthetic (generated by a program; its "
                     f"description above says which part): metrics on generated rows say how well the model "
                     f"learned the simulation, and on real data it may do much worse.")
    test = training.get("rows", {}).get("test", 0)
    if test == 0:
        found.append("No test rows: no metric was measured on rows held out from training and model choice.")
    elif test < SMALL_TEST:
        found.append(f"Small test set ({test} rows): the test metrics have wide confidence intervals.")
    if "streaming" in training:
        measured = training["streaming"].get("measured_rows", {})
        found.append(f"Trained on streamed data: the train metrics are measured on a sample of "
                     f"{measured.get('train', 0):,} training rows, and the preprocessing statistics on "
                     f"{training['streaming'].get('statistics_rows', 0):,} rows.")
    sampled = training.get("sampling")
    if sampled:
        found.append(f"The training rows of '{sampled.get('output')}' were {sampled.get('method')}-sampled "
                     f"({sampled.get('rows_before', 0):,} to {sampled.get('rows_after', 0):,} rows): its predicted "
                     f"probabilities lean towards the classes made more frequent.")
    return found


def _class_limits(model) -> list[str]:
    rows, found = model.training_.get("rows", {}).get("train", 0), []
    for output in model.outputs_:
        classes = _summary(output).get("classes") or {}
        rare = {label: count for label, count in classes.items()
                if count < RARE_ROWS or (rows and count < RARE_SHARE * rows)}
        if rare:
            listed = ", ".join(f"'{label}' ({count})" for label, count in list(rare.items())[:10])
            more = f" and {len(rare) - 10} more" if len(rare) > 10 else ""
            found.append(f"Rare classes of '{output.name}' (under {RARE_ROWS} training rows or under "
                         f"{RARE_SHARE:.0%} of them): {listed}{more}; its predictions for them rest on few "
                         f"examples, and accuracy can hide that they are rarely found.")
    return found


def _comparison_limits(model) -> list[str]:
    comparison = model.comparison_
    if not comparison or comparison.get("skipped"):
        return []
    if _deep_ahead(comparison) is False:
        classic = (comparison.get("classic") or {}).get("model", "classic model")
        return [f"The deep model is not better than the classic baseline ({classic}) on the test rows: "
                f"{comparison.get('verdict', '')}. The classic model is simpler to run and to explain."]
    return []


def _example_row(model) -> tuple[dict | None, str]:
    """A JSON row a served model takes (the types' request examples; files as a placeholder), or None
    and why the model cannot be served."""
    row = {}
    for feature in model.inputs_:
        try:
            field = feature.request_field()
        except Unsupported as error:
            return None, str(error)
        row[feature.name] = f"<base64 of a {feature.type_name} file>" if field.file else field.example
    return row, ""


def _calling(model, folder: str | Path) -> str:
    columns = ", ".join(f"'{feature.name}'" for feature in model.inputs_)
    lines = ["## How to use", "", "From the command line (a CSV, Parquet or JSONL file holding the input columns):",
             "", "```", f"lamina predict --model {folder} --data new_rows.csv --output predictions.csv", "```", "",
             "From Python, with a DataFrame holding the columns " + columns + ":", "", "```python", "import lamina",
             "", f"model = lamina.Model.load({str(folder)!r})", "predictions = model.predict(frame)", "```", ""]
    row, why = _example_row(model)
    if row is None:
        return "\n".join(lines + [f"Not servable over HTTP: {why}"])
    body = json.dumps({"rows": [row]}, default=str).replace("'", "'\\''")  # quoted for the shell
    lines += ["Over HTTP (`pip install 'lamina[serve]'`):", "", "```", f"lamina serve {folder}",
              "curl -s http://127.0.0.1:8000/predict -H 'Content-Type: application/json' \\",
              f"  -d '{body}'", "```"]
    return "\n".join(lines)

"""`lamina report`: one self-contained HTML file about a trained model (no network needed to open
it): config and data, learning curves, metrics, confusion matrix, ROC / PR / calibration curves,
the classic baseline comparison, global importance and a few explained examples. Plots are drawn
with matplotlib and embedded as PNG data."""
from __future__ import annotations

import base64
import datetime
import html
from typing import Any

import yaml

from lamina import artifact
from lamina.features.base import Unsupported
from lamina.features.plots import figure as _figure, png as _png, table as _table, text as _text
from lamina.version import __version__

EXPLAINED_ROWS = 3  # test rows explained in the report
IMPORTANCE_ROWS = 2000  # test rows used for permutation importance


# --- sections ---------------------------------------------------------------------------------

def data_section(model) -> str:
    training = model.training_
    rows = training.get("rows", {})
    lines = [f"<p>Source: {html.escape(str(training.get('source', 'unknown')))}; rows: "
             + ", ".join(f"{part} {count:,}" for part, count in rows.items())
             + f"; left out (missing targets, missing: drop): {training.get('dropped_rows', 0):,}</p>"]
    sampled = training.get("sampling")
    if sampled:
        lines.append(f"<p>Training rows {sampled['method']}-sampled for '{html.escape(sampled['output'])}': "
                     f"{sampled['rows_before']:,} to {sampled['rows_after']:,} (classes "
                     f"{html.escape(str(sampled['classes_before']))} to {html.escape(str(sampled['classes_after']))})"
                     f"</p>")
    described = []
    for role, features in (("input", model.inputs_), ("output", model.outputs_)):
        for feature in features:
            described.append([feature.config.name, feature.type_name, role, _stats_summary(feature.stats)])
    lines.append(_table(described, ["feature", "type", "role", "learned from the training split"]))
    config = yaml.safe_dump(model.config.to_dict(), sort_keys=False)
    lines.append(f"<details><summary>config</summary><pre>{html.escape(config)}</pre></details>")
    return "<h2>Data and config</h2>" + "".join(lines)


def _stats_summary(stats: dict) -> str:
    parts = []
    for key in ("labels", "vocabulary"):
        if key in stats:
            parts.append(f"{len(stats[key])} {key}")
    for key in ("shift", "scale", "fill", "threshold", "temperature"):  # the last two: chosen on validation rows
        if key in stats:
            value = stats[key]  # one number, or one per component (a vector's)
            parts.append(f"{key} {float(value):.4g}" if not isinstance(value, list) else
                         f"{key} per component ({len(value)})")
    if "vocabulary_size" in stats:
        parts.append(f"{stats['vocabulary_size']} tokens")
    if "ids" in stats:  # an id input
        parts.append(f"{len(stats['ids'])} ids of their own (of {stats['distinct_in_training']} seen)")
    if "items" in stats:  # a ranking output
        parts.append(f"catalogue of {len(stats['items'])} items, histories of {len(stats['users'])} users")
    return ", ".join(parts) or "-"


def curves_section(model) -> str:
    history = model.training_.get("history", [])
    if not history:
        return ""
    figure, axes = _figure()
    epochs = [record["epoch"] for record in history]
    axes.plot(epochs, [record["train_loss"] for record in history], marker="o", label="train loss")
    if all("validation" in record for record in history):
        axes.plot(epochs, [record["validation"]["loss"] for record in history], marker="o", label="validation loss")
    best = model.training_.get("best_epoch")
    if best:
        axes.axvline(best, color="grey", linestyle=":", label=f"best epoch ({best})")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.legend()
    rate = model.training_.get("learning_rate")
    note = f"<p>Learning rate {rate:.3g}; monitored: {html.escape(str(model.training_.get('monitored')))}; " \
           f"stopped early: {model.training_.get('stopped_early')}.</p>" if rate else ""
    return "<h2>Learning curves</h2>" + _png(figure) + note


def metrics_section(model) -> str:
    blocks = []
    for feature in model.outputs_:
        name = feature.config.name
        parts = [part for part in ("train", "validation", "test") if part in model.metrics_]
        names = list(next(iter(model.metrics_.values()))[name])
        rows = [[metric] + [model.metrics_[part][name].get(metric, "") for part in parts] for metric in names]
        blocks.append(f"<h3>{html.escape(name)} ({feature.type_name})</h3>" + _table(rows, ["metric"] + parts))
    return "<h2>Metrics</h2>" + "".join(blocks)


def plots_section(model) -> str:
    evaluation = model.evaluation_  # None in folders saved before it existed
    if not evaluation:
        return "<h2>Test predictions</h2><p>This model folder keeps no test predictions (no test rows).</p>"
    outputs = {feature.config.name: feature for feature in model.outputs_}
    blocks = []
    for name, data in evaluation.items():  # as saved, maybe by an earlier version: each type draws its own
        drawn = outputs[name].report_plots(data) if name in outputs else []
        rows = len(data.get("truth", data.get("examples", [])))
        blocks.append(f"<h3>{html.escape(name)} ({data['type']}, {rows:,} test rows)</h3>"
                      f"<div class='plots'>{''.join(drawn)}</div>")
    return "<h2>Test predictions</h2>" + "".join(blocks)


def comparison_section(model) -> str:
    result = model.comparison_
    if not result:
        return ("<h2>Deep or classic?</h2><p>No comparison yet: <code>lamina compare --model ... --data ...</code> "
                "trains a classic baseline on the same split.</p>")
    from lamina.compare import table

    return (f"<h2>Deep or classic?</h2><p class='verdict'>{html.escape(result['verdict'])}</p>"
            f"<pre>{html.escape(table(result))}</pre>")


def tuning_section(model) -> str:
    """The leaderboard of the `lamina tune` search that chose this model's config, when one did."""
    result = model.tuning_
    if not result:
        return ""
    fixed = ("trial", "state", "value", "epochs", "seconds", "error")
    rows = [[row["trial"], row["state"], "" if row["value"] is None else f"{row['value']:.4f}",
             ", ".join(f"{key}={value}" for key, value in row.items() if key not in fixed), row.get("epochs", ""),
             f"{row['seconds']:.1f}" if row.get("seconds") is not None else ""]
            for row in result["leaderboard"]]
    best = result["best"]
    return (f"<h2>Hyperparameter search</h2><p>{len(rows)} trials ({result['pruned']} pruned), scored by validation "
            f"{html.escape(result['metric'])}; the best, trial {best['trial']} ({best['value']:.4f}), is this model's "
            f"config, trained again on the same split.</p>"
            + _table(rows, ["trial", "state", result["metric"], "values tried", "epochs", "seconds"]))


def rollout_section(model) -> str:
    """The model acting as a policy in its simulator (`lamina rollout`), beside the reference policies."""
    result = getattr(model, "rollout_", None)  # absent on a model object from before rollouts existed
    if not result:
        return ""
    from lamina.simulation.rollout import table

    rounds = "".join(f"<li>DAgger round {row['round']}: {row['rows']:,} rows, return {row['return_mean']:.2f} ± "
                     f"{row['return_std']:.2f}</li>" for row in result.get("dagger", []))
    clipped = f"; {result['clipped_actions']} of the model's {result['actions']} actions clipped to the action " \
              f"space" if result["clipped_actions"] else ""
    return (f"<h2>Rollouts in {html.escape(result['environment'])}</h2><p>{result['episodes']} unseen episodes (seeds "
            f"{result['seeds'][0]} to {result['seeds'][1]}), each policy on the same seeds; success: "
            f"{html.escape(result['success_means'])}{clipped}.</p><pre>{html.escape(table(result))}</pre>"
            + (f"<ul>{rounds}</ul>" if rounds else ""))


def _bars(scores: dict[str, float], title: str, error: dict[str, float] | None = None) -> str:
    names = list(scores)[:20][::-1]
    figure, axes = _figure(5.0, 0.9 + 0.28 * len(names))
    axes.barh(names, [scores[name] for name in names], xerr=[error[name] for name in names] if error else None)
    axes.set_title(title)
    return _png(figure)


def importance_section(result: dict) -> str:
    attribution = result["mean_absolute_attribution"]
    permutation = result["permutation"]
    bars = _bars(attribution, "mean |attribution| per input")
    if permutation:  # None: not measurable (an anomaly score on unlabelled rows)
        drops = {name: values["mean"] for name, values in permutation["features"].items()}
        spread = {name: values["std"] for name, values in permutation["features"].items()}
        bars += _bars(drops, f"permutation importance: {permutation['metric']} lost when shuffled", spread)
    return "<h2>What the model relies on</h2><div class='plots'>" + bars + "</div>"


def _highlighted(tokens: list) -> str:
    largest = max((abs(score) for _, score in tokens), default=0.0) or 1.0
    pieces = []
    for token, score in tokens:
        token = str(token)
        # sub-word markers: BPE's '▁' starts a word, WordPiece's '##' continues one
        starts_word = token.startswith("▁") or not (token.startswith("##") or pieces)
        shown = token.removeprefix("▁").removeprefix("##")
        strength = abs(score) / largest
        colour = f"rgba(220,50,47,{strength:.2f})" if score > 0 else f"rgba(38,139,210,{strength:.2f})"
        pieces.append((" " if starts_word and pieces else "") + f"<span class='token' style='background:{colour}' "
                      f"title='{score:+.4f}'>{html.escape(shown)}</span>")
    return "".join(pieces)


def _image_overlay(model, name: str, value: Any, heat_map: list) -> str:
    from lamina.explain_render import heat_map_png

    position = next(index for index, f in enumerate(model.inputs_) if f.config.name == name)
    # what the network saw: an image's pixels, a sound's log-mel spectrogram (mels x frames)
    image = model.inputs_[position].heat_map_background(model.network_.encoders[position], value)
    data = base64.b64encode(heat_map_png(image, heat_map)).decode()
    return f'<img class="overlay" alt="{html.escape(name)} heat map" src="data:image/png;base64,{data}">'


def examples_section(model, explanation: dict) -> str:
    blocks = [f"<p>{html.escape(explanation['explained'])}; method {explanation['method']}.</p>"]
    for row in explanation["rows"]:
        probability = f" (probability {row['probability']:.3f})" if row.get("probability") is not None else ""
        scores = sorted(row["scores"].items(), key=lambda item: -abs(item[1]))[:8]
        table = _table([[name, _text(row["values"].get(name, "")), f"{score:+.4f}"] for name, score in scores],
                       ["input", "value", "attribution"])
        extras = "".join(f"<p><b>{html.escape(name)}</b>: {_highlighted(tokens)}</p>"
                         for name, tokens in row.get("tokens", {}).items())
        extras += "".join(_image_overlay(model, name, row["values"].get(name), heat)
                          for name, heat in row.get("heat_maps", {}).items())
        blocks.append(f"<div class='example'><h3>test row {html.escape(str(row['row']))}: predicted "
                      f"{html.escape(str(row['prediction']))}{probability}</h3>{table}{extras}</div>")
    return "<h2>Explained examples</h2>" + "".join(blocks)


def understanding(model, data: Any) -> tuple[dict | None, dict | None, str]:
    """Global importance on the test rows and explanations of a few of them (or why not)."""
    first = model.outputs_[0]
    try:
        first.explained_score(None)  # its type refuses here when it cannot be explained (generated text)
    except Unsupported:
        return None, None, f"Output '{first.config.name}' ({first.type_name}) is not explained by attributions."
    from lamina.compare import split_as_trained

    try:
        frame, parts = split_as_trained(model, data)
        test = frame.iloc[parts["test"]]
        if test.empty:
            return None, None, "No test rows to explain."
        importance = model.importance(test.head(IMPORTANCE_ROWS))
        explanation = model.explain(test.head(EXPLAINED_ROWS))
    except ImportError as error:
        return None, None, f"Explanations need captum: pip install 'lamina[explain]' ({error})."
    return importance, explanation, ""


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}pre{background:#f7f7f7;padding:.8em;overflow-x:auto}.plots img{margin:.3em}
.verdict{font-size:1.15em;font-weight:600}.token{padding:0 .05em;border-radius:3px}.example{margin-bottom:1.5em}
.overlay{width:160px;image-rendering:pixelated}.muted{color:#777}
"""


def build(model, data: Any = None) -> str:
    """The report as one HTML string. With `data` (the data the model was trained on), also global
    importance and explained test rows."""
    sections = [data_section(model), curves_section(model), metrics_section(model), plots_section(model),
                comparison_section(model), tuning_section(model), rollout_section(model)]
    if data is not None:
        importance, explanation, reason = understanding(model, data)
        if importance:
            sections.append(importance_section(importance))
            sections.append(examples_section(model, explanation))
        else:
            sections.append(f"<h2>What the model relies on</h2><p class='muted'>{html.escape(reason)}</p>")
    else:
        sections.append("<h2>What the model relies on</h2><p class='muted'>Give the training data "
                        "(<code>lamina report --model ... --data ...</code>) to add importance and explained "
                        "examples.</p>")
    names = ", ".join(f.config.name for f in model.outputs_)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>lamina report: {html.escape(names)}"
            f"</title><style>{STYLE}</style></head><body><h1>lamina report: {html.escape(names)}</h1>"
            f"<p class='muted'>lamina {__version__}, written {stamp}; the model folder's <code>model_card.md</code> "
            f"sums it up in text</p>{''.join(sections)}</body></html>")


def write(model, path, data: Any = None) -> str:
    """Write the report to `path` (atomically) and return the path."""
    import os
    from pathlib import Path

    target = Path(path)
    temporary = artifact.temporary_sibling(target)
    temporary.write_text(build(model, data), "utf-8")
    os.replace(temporary, target)
    return str(target)

"""`lamina report`: one self-contained HTML file about a trained model (no network needed to open
it): config and data, learning curves, metrics, confusion matrix, ROC / PR / calibration curves,
the classic baseline comparison, global importance and a few explained examples. Plots are drawn
with matplotlib and embedded as PNG data."""
from __future__ import annotations

import base64
import datetime
import html
import io
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

import lamina
from lamina import artifact

EXPLAINED_ROWS = 3  # test rows explained in the report
IMPORTANCE_ROWS = 2000  # test rows used for permutation importance


def _png(figure) -> str:
    """A matplotlib figure as an <img> with its PNG inline."""
    import matplotlib.pyplot as pyplot

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    pyplot.close(figure)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(width: float = 4.6, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as pyplot

    return pyplot.subplots(figsize=(width, height))


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(str(name))}</th>" for name in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):  # a sequence
        return f"a sequence of {len(value)} steps x {len(value[0])} channels"
    return str(value)


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
            described.append([feature.config.name, feature.config.type, role, _stats_summary(feature.stats)])
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
            parts.append(f"{key} {float(stats[key]):.4g}")
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
        blocks.append(f"<h3>{html.escape(name)} ({feature.config.type})</h3>" + _table(rows, ["metric"] + parts))
    return "<h2>Metrics</h2>" + "".join(blocks)


def _confusion(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> str:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(truth, predicted, labels=list(range(len(labels))))
    size = min(9.0, 2.0 + 0.45 * len(labels))
    figure, axes = _figure(size, size * 0.85)
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 4 else 0)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(labels) <= 12:
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, str(count), ha="center", va="center",
                      color="white" if count > matrix.max() / 2 else "black")
    figure.colorbar(image)
    return _png(figure)


def _binary_plots(data: dict) -> list[str]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    truth, probability = np.array(data["truth"]), np.array(data["probability"])
    plots = [_confusion(truth, (probability >= data["threshold"]).astype(int), data["labels"])]
    if len(np.unique(truth)) == 2:
        figure, axes = _figure()
        false_positive, true_positive, _ = roc_curve(truth, probability)
        axes.plot(false_positive, true_positive)
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
        plots.append(_png(figure))
        figure, axes = _figure()
        precision, recall, _ = precision_recall_curve(truth, probability)
        axes.plot(recall, precision)
        axes.axhline(truth.mean(), color="grey", linestyle=":", label="always positive")
        axes.set(xlabel="recall", ylabel="precision", title="precision-recall curve")
        axes.legend()
        plots.append(_png(figure))
        figure, axes = _figure()
        observed, predicted = calibration_curve(truth, probability, n_bins=10, strategy="quantile")
        axes.plot(predicted, observed, marker="o")
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
        axes.set(xlabel="predicted probability", ylabel="observed frequency", title="calibration")
        axes.legend()
        plots.append(_png(figure))
    return plots


def _anomaly_plots(data: dict) -> list[str]:
    """Histograms of the scores (normal and anomalous rows apart when labelled) and the threshold."""
    scores = np.array(data["score"], dtype=np.float64)
    truth = np.array([np.nan if value is None else value for value in data["truth"]], dtype=np.float64)
    figure, axes = _figure()
    bins = np.histogram_bin_edges(np.log10(np.maximum(scores, 1e-6)), bins=40)
    groups = [(data["labels"][0], truth == 0), (data["labels"][1], truth == 1), ("unlabelled", np.isnan(truth))]
    for label, rows in groups:
        if rows.any():
            axes.hist(np.log10(np.maximum(scores[rows], 1e-6)), bins=bins, alpha=0.6, density=True, label=label)
    if data["threshold"] is not None:
        axes.axvline(np.log10(max(data["threshold"], 1e-6)), color="black", linestyle=":", label="threshold")
    axes.set(xlabel="log10 anomaly score", ylabel="density", title="anomaly scores")
    axes.legend()
    return [_png(figure)]


def _category_plots(data: dict) -> list[str]:
    truth, predicted, labels = np.array(data["truth"]), np.array(data["predicted"]), data["labels"]
    known = truth >= 0
    if len(labels) > 20:  # the 20 most frequent true classes
        keep = pd.Series(truth[known]).value_counts().index[:20].to_numpy()
        mask = np.isin(truth, keep) & np.isin(predicted, keep)
        remap = {old: new for new, old in enumerate(keep)}
        return [_confusion(np.array([remap[t] for t in truth[mask]]), np.array([remap[p] for p in predicted[mask]]),
                           [labels[k] for k in keep])]
    return [_confusion(truth[known], predicted[known], labels)]


def _number_plots(data: dict) -> list[str]:
    truth, predicted = np.array(data["truth"]), np.array(data["predicted"])
    figure, axes = _figure()
    axes.scatter(truth, predicted, s=6, alpha=0.4)
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="grey", linestyle=":")
    axes.set(xlabel="true", ylabel="predicted", title="predicted against true")
    first = _png(figure)
    figure, axes = _figure()
    axes.hist(predicted - truth, bins=40)
    axes.set(xlabel="predicted - true", ylabel="rows", title="residuals")
    return [first, _png(figure)]


def _text_examples(data: dict) -> list[str]:
    rows = [[example["input"], example["reference"], example["generated"]] for example in data["examples"][:10]]
    return [_table(rows, ["input", "reference", "generated"])]


def plots_section(model) -> str:
    evaluation = getattr(model, "evaluation_", None)
    if not evaluation:
        return "<h2>Test predictions</h2><p>This model folder keeps no test predictions (no test rows).</p>"
    draw = {"binary": _binary_plots, "category": _category_plots, "number": _number_plots, "text": _text_examples,
            "anomaly": _anomaly_plots}
    blocks = []
    for name, data in evaluation.items():
        plots = draw[data["type"]](data) if data["type"] in draw else []
        rows = len(data.get("truth", data.get("examples", [])))
        blocks.append(f"<h3>{html.escape(name)} ({data['type']}, {rows:,} test rows)</h3>"
                      f"<div class='plots'>{''.join(plots)}</div>")
    return "<h2>Test predictions</h2>" + "".join(blocks)


def comparison_section(model) -> str:
    result = getattr(model, "comparison_", None)
    if not result:
        return ("<h2>Deep or classic?</h2><p>No comparison yet: <code>lamina compare --model ... --data ...</code> "
                "trains a classic baseline on the same split.</p>")
    from lamina.compare import table

    return (f"<h2>Deep or classic?</h2><p class='verdict'>{html.escape(result['verdict'])}</p>"
            f"<pre>{html.escape(table(result))}</pre>")


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
    feature = model.inputs_[position]
    pixels = feature.transform(pd.Series([value], dtype=object))[0:1]  # (1, C, H, W), as the network saw it
    if feature.config.type == "audio":  # the heat map lies over the log-mel spectrogram (mels x frames)
        with torch.no_grad():
            pixels = model.network_.encoders[position].eval().spectrogram(pixels)  # (1, 1, M, F), normalised
        pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()).clamp_min(1e-6) * 255
    image = np.asarray(pixels[0]).transpose(1, 2, 0)
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


def _explainable(model) -> bool:
    return not getattr(model.outputs_[0], "generates", False)


def understanding(model, data: Any) -> tuple[dict | None, dict | None, str]:
    """Global importance on the test rows and explanations of a few of them (or why not)."""
    if not _explainable(model):
        return None, None, "Generated-text outputs are not explained by attributions."
    from lamina.compare import training_rows

    try:
        frame, parts = training_rows(model, data)
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
                comparison_section(model)]
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
            f"<p class='muted'>lamina {lamina.__version__}, written {stamp}</p>{''.join(sections)}</body></html>")


def write(model, path, data: Any = None) -> str:
    """Write the report to `path` (atomically) and return the path."""
    import os
    from pathlib import Path

    target = Path(path)
    temporary = artifact.temporary_sibling(target)
    temporary.write_text(build(model, data), "utf-8")
    os.replace(temporary, target)
    return str(target)

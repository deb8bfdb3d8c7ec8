"""Metric bookkeeping shared by all outputs: which metrics are better when lower, and the
printed metrics table. The metric functions themselves are scikit-learn's, called from each
data type's file."""
from __future__ import annotations

LOWER_IS_BETTER = {"loss", "log_loss", "rmse", "mae", "hamming_loss", "brier_score", "expected_calibration_error",
                   "false_positives", "false_negatives"}


def direction(metric: str) -> str:
    """'min' when a lower value of this metric (or 'output.metric') is better, else 'max': the one
    place that knows which way each metric improves."""
    return "min" if metric.split(".")[-1] in LOWER_IS_BETTER else "max"


COUNTS = {"true_positives", "false_positives", "false_negatives", "true_negatives"}  # printed without decimals


def table(metrics: dict[str, dict]) -> str:
    """A plain-text table: one row per output and metric, one column per split.

    `metrics` is {split: {'loss': x, output: {metric: value}}}.
    """
    splits = [name for name, values in metrics.items() if values]
    rows: list[tuple[str, str]] = []
    for values in metrics.values():
        for output, measured in (values or {}).items():
            if isinstance(measured, dict):
                rows += [(output, name) for name in measured if (output, name) not in rows]
    header = ["output", "metric"] + splits
    body = [[output, name] + [_cell(metrics[split].get(output, {}).get(name), name in COUNTS) for split in splits]
            for output, name in rows]
    widths = [max(len(str(line[i])) for line in [header] + body) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [header] + body]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cell(value, count: bool = False) -> str:
    return "" if value is None else f"{value:.0f}" if count else f"{value:.4f}"

"""Drawing pieces of the HTML report that data types share: a matplotlib figure embedded as an inline
PNG, a table, a confusion matrix. A type's `report_plots` draws its section of the report with them."""
from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np


def floats(values) -> list[float]:
    """Values as plain floats (JSON-able plot data)."""
    return [float(value) for value in np.asarray(values, dtype=np.float64)]


def figure(width: float = 4.6, height: float = 3.4):
    """A new (figure, axes) for a plot of the report."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as pyplot

    return pyplot.subplots(figsize=(width, height))


def png(drawn) -> str:
    """A matplotlib figure as an <img> with its PNG inline (and the figure closed)."""
    import matplotlib.pyplot as pyplot

    buffer = io.BytesIO()
    drawn.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    pyplot.close(drawn)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def text(value: Any) -> str:
    """A table cell as text: floats to 4 decimals, a sequence as its size."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):  # a sequence
        return f"a sequence of {len(value)} steps x {len(value[0])} channels"
    return str(value)


def table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(str(name))}</th>" for name in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(text(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def confusion(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> str:
    """A confusion matrix of class indices (true rows, predicted columns), counts written in when few."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(truth, predicted, labels=list(range(len(labels))))
    size = min(9.0, 2.0 + 0.45 * len(labels))
    drawn, axes = figure(size, size * 0.85)
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 4 else 0)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(labels) <= 12:
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, str(count), ha="center", va="center",
                      color="white" if count > matrix.max() / 2 else "black")
    drawn.colorbar(image)
    return png(drawn)

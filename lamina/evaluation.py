"""What the report draws its plots from, kept with the saved model: each output's true values and
predictions on (a sample of) the test rows, so `lamina report --model` needs no data."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lamina.features.common import as_strings

ROWS = 5000  # test rows kept for the plots
GENERATED_ROWS = 20  # test rows whose text outputs are generated as examples (slow)


def _floats(values) -> list[float]:
    return [float(value) for value in np.asarray(values, dtype=np.float64)]


def collect(model, test_rows: pd.DataFrame) -> dict:
    """{output name: {'type': ..., plot data}} on at most ROWS test rows (JSON-able)."""
    generating = any(getattr(feature, "generates", False) for feature in model.outputs_)
    rows = test_rows.head(GENERATED_ROWS if generating else ROWS)
    if rows.empty:
        return {}
    predicted = model.predict(rows)
    result = {}
    for feature in model.outputs_:
        name, kind = feature.config.name, feature.config.type
        truth = rows[name]
        if kind == "binary":
            positive = feature.stats["labels"][1]
            result[name] = {"type": kind, "labels": feature.stats["labels"],
                            "truth": [int(value) for value in (as_strings(truth) == positive)],
                            "probability": _floats(predicted[f"{name}_probability"]),
                            "threshold": float(feature.threshold)}
        elif kind == "category":
            labels = feature.stats["labels"]
            index = {label: position for position, label in enumerate(labels)}
            result[name] = {"type": kind, "labels": labels,
                            "truth": [index.get(value, -1) for value in as_strings(truth)],
                            "predicted": [index[value] for value in predicted[name]],
                            "probabilities": [_floats(predicted[f"{name}_probability_{label}"]) for label in labels]
                            if len(labels) <= 20 else None}
        elif kind == "number":
            result[name] = {"type": kind, "truth": _floats(pd.to_numeric(truth)), "predicted": _floats(predicted[name])}
        elif kind == "anomaly":
            target = feature.target(truth).numpy()
            threshold = feature.threshold
            result[name] = {"type": kind, "labels": feature.stats["labels"],
                            "truth": [None if np.isnan(value) else int(value) for value in target],
                            "score": _floats(predicted[f"{name}_score"]),
                            "threshold": float(threshold) if np.isfinite(threshold) else None}
        elif kind == "text":
            inputs = [f.config.name for f in model.inputs_ if f.config.type == "text"]
            result[name] = {"type": kind, "examples": [
                {"input": " | ".join(str(rows[column].iloc[row]) for column in inputs),
                 "reference": str(truth.iloc[row]), "generated": str(predicted[name].iloc[row])}
                for row in range(len(rows))]}
    return result

"""A starting config inferred from a table: each column's data type, and the target as output."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lamina.data import IMAGE_SUFFIXES
from lamina.errors import DataError, did_you_mean
from lamina.features.common import missing_mask


def infer_type(column: pd.Series, is_target: bool) -> tuple[str | None, dict, str]:
    """(type or None to skip, extra options, reason) for one column."""
    present = column[~missing_mask(column)]
    if present.empty:
        return None, {}, "empty"
    if present.map(lambda value: isinstance(value, np.ndarray) and value.ndim in (2, 3)).all():
        return "image", {}, "pixel arrays"
    if present.map(lambda value: isinstance(value, (list, tuple, set, np.ndarray))).all():
        return "set", {}, "lists of labels"
    unique = present.astype(str).nunique()
    if unique <= 1:
        return None, {}, "constant"
    if unique == 2:
        return "binary", {}, "two values"
    numeric = pd.to_numeric(present, errors="coerce")
    if numeric.notna().all():
        integral = (numeric == numeric.round()).all()
        if is_target and integral and unique <= 20:
            return "category", {}, f"{unique} whole-number classes"
        skewed = numeric.min() >= 0 and abs(float(numeric.skew())) > 2.0
        return "number", ({"normalize": "log"} if skewed else {}), "numbers" + (" (skewed)" if skewed else "")
    text = present.astype(str)
    if not is_target and text.str.lower().str.endswith(tuple(IMAGE_SUFFIXES)).mean() > 0.9:
        return "image", {}, "image file paths"
    words = text.str.split().str.len()
    if words.mean() >= 3 and unique > 0.5 * len(present):  # sentences, not labels (before the id check)
        return "text", {"max_length": int(min(512, max(16, np.percentile(words, 95) * 1.5)))}, \
            f"free text ({words.mean():.0f} words on average)"
    if not is_target and unique == len(present) and len(present) > 20:
        return None, {}, "a different value in every row (an id?)"
    if text.str.contains("|", regex=False).mean() > 0.5:
        return "set", {"delimiter": "|"}, "'|'-separated labels"
    return "category", {}, f"{unique} distinct values"


def infer_config(frame: pd.DataFrame, targets: list[str]) -> tuple[dict, list[str]]:
    """A config dict and notes on skipped columns."""
    columns = [str(column) for column in frame.columns]
    for target in targets:
        if target not in frame.columns:
            raise DataError(f"target column '{target}' is not in the data{did_you_mean(target, columns)}")
    inputs, outputs, notes = [], [], []
    for column in frame.columns:
        is_target = column in targets
        kind, options, reason = infer_type(frame[column], is_target)
        if kind is None:
            if is_target:
                raise DataError(f"target column '{column}' cannot be learned: it is {reason}")
            notes.append(f"skipped '{column}': {reason}")
            continue
        (outputs if is_target else inputs).append({"name": str(column), "type": kind, **options})
    if not inputs:
        raise DataError("no usable input columns were found beside the target")
    config = {"inputs": inputs, "hidden": {"layers": 3, "size": 256, "dropout": 0.1}, "outputs": outputs,
              "training": {"epochs": 30, "batch_size": 256, "learning_rate": "auto"}}
    return config, notes

"""Over- and under-sampling of the training rows for a binary or category output with rare classes
(`sampling: over | under`, `sampling_ratio`). Only the training table is resampled, after the
preprocessing stats were fitted on the original rows; validation and test rows stay as they are."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from lamina.features.columns import LazyColumn, rows


def positions(labels: np.ndarray, method: str, ratio: float, seed: int) -> np.ndarray:
    """Row positions (sorted, repeats allowed) after sampling class codes `labels`. over: every
    class smaller than ratio x the largest gets random repeats of its rows up to that size; under:
    every class larger than the smallest / ratio keeps a random subset of that size."""
    generator = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    chosen = []
    for label, count in zip(classes, counts):
        members = np.flatnonzero(labels == label)
        if method == "over":
            wanted = int(round(ratio * counts.max()))
            extra = generator.choice(members, size=max(wanted - count, 0), replace=True)
            chosen += [members, extra]
        else:
            wanted = int(round(counts.min() / ratio))
            chosen.append(generator.choice(members, size=wanted, replace=False) if count > wanted else members)
    return np.sort(np.concatenate(chosen))


def take(table: dict, picked: np.ndarray) -> dict:
    """The table's rows at `picked`; lazily read columns stay lazy (their cells are re-listed)."""
    index = torch.from_numpy(picked.astype(np.int64))
    result: dict = {}
    for part, columns in table.items():
        result[part] = {}
        for name, column in columns.items():
            if isinstance(column, LazyColumn):
                result[part][name] = LazyColumn([column.values[position] for position in picked], column.decode)
            else:
                result[part][name] = rows(column, index)
    return result


def resample(table: dict, outputs: list, seed: int) -> tuple[dict, dict | None]:
    """The training table resampled for the one output that asks for it (the config allows at
    most one), and a record of what was done (None when no output asks)."""
    asking = [feature for feature in outputs if feature.resampling() is not None]
    if not asking:
        return table, None
    feature = asking[0]
    (method, ratio), options, labels = feature.resampling(), feature.config, feature.stats["labels"]
    if options.class_weights is not None:
        warnings.warn(f"output '{options.name}' both resamples its training rows (sampling: {method}) and "
                      f"weighs its classes (class_weights): the rare class is boosted twice; usually one is enough",
                      stacklevel=3)
    codes = table["targets"][options.name].numpy().astype(np.int64)  # binary 0./1. or category codes
    picked = positions(codes, method, ratio, seed)

    def counted(values: np.ndarray) -> dict[str, int]:
        return {str(labels[code]): int(count) for code, count in zip(*np.unique(values, return_counts=True))}

    record = {"output": options.name, "method": method, "ratio": ratio,
              "rows_before": int(len(codes)), "rows_after": int(len(picked)),
              "classes_before": counted(codes), "classes_after": counted(codes[picked])}
    return take(table, picked), record

"""Tiny generated tables and small, fast configs shared by the error-path, artifact and CLI tests.

Plain functions rather than fixtures, so each test file states which data it uses.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd

CITIES = ["paris", "rome", "oslo"]
TAGS = ["a", "b", "c"]


def people(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """A table with one column of every data type and a learnable signal.

    age (number), city (category), member (binary yes/no), tags (set, '|'-separated),
    income (binary high/low, from age and city), spend (number, from age), segment (category).
    """
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, rows).round(1)
    city = rng.choice(CITIES, rows)
    member = rng.choice(["yes", "no"], rows)
    tags = ["|".join(sorted(set(rng.choice(TAGS, rng.integers(1, 3))))) for _ in range(rows)]
    score = age + 20 * (city == "rome") + rng.normal(0, 5, rows)
    return pd.DataFrame({
        "age": age,
        "city": city,
        "member": member,
        "tags": tags,
        "income": np.where(score > 55, "high", "low"),
        "spend": (2.0 * age + rng.normal(0, 3, rows)).round(2),
        "segment": np.where(age < 35, "young", np.where(age < 60, "middle", "senior")),
    })


INPUTS = [
    {"name": "age", "type": "number"},
    {"name": "city", "type": "category"},
    {"name": "member", "type": "binary"},
    {"name": "tags", "type": "set", "delimiter": "|"},
]


def config(inputs: list | None = None, outputs: list | None = None, **sections) -> dict:
    """A small, fast config dict: one hidden layer of 16, 2 epochs, a fixed learning rate (no
    range test). `sections` replace or extend top-level keys; training keys are merged."""
    result = {
        "inputs": copy.deepcopy(INPUTS if inputs is None else inputs),
        "hidden": {"layers": 1, "size": 16},
        "outputs": copy.deepcopy([{"name": "income", "type": "binary"}] if outputs is None else outputs),
        "training": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01},
    }
    training = sections.pop("training", {})
    result["training"].update(training)
    result.update(sections)
    return result


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write a table in the format its suffix names (csv, tsv, parquet, jsonl)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    else:
        frame.to_csv(path, index=False)
    return path

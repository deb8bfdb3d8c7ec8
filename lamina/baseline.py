"""Classic machine-learning baselines for `lamina compare`: features for every input type (fitted
on the training rows only) and the candidate models: gradient boosting (LightGBM, else
scikit-learn's HistGradientBoosting) and a linear model, the better on the validation rows kept."""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from threadpoolctl import threadpool_limits

from lamina.errors import DataError
from lamina.features import REGISTRY
from lamina.features import image, number, set as set_type, text
from lamina.features.common import MISSING, as_strings, missing_mask

TREE, LINEAR = "tree", "linear"  # the two views of the inputs: trees take codes and NaN, linear models scaled values
MAX_CODES = 254  # HistGradientBoosting's native categories must fit in its 255 bins (codes 0..253, NaN missing)
MAX_ONE_HOT = 200  # one-hot columns per category input; rarer values share the all-zero row
MAX_LABELS = 1000  # multi-hot columns per set input
TEXT_VOCABULARY = 50_000  # TF-IDF terms (words and word pairs)
TEXT_COMPONENTS = 100  # trees get TF-IDF reduced to this many dense columns (truncated SVD, i.e. LSA)
PIXELS = (16, 16)  # images become this many grey pixels
ROUNDS = 1000  # most boosting rounds; early stopping on the validation rows usually ends far sooner


# --- features: one small encoder per input column ------------------------------------------------

def summary_statistics(column: pd.Series, name: str) -> np.ndarray:
    """The fallback for types without features of their own (audio, sensor sequences): per cell, a
    numeric array summarised as mean, std, min, quartiles, max and length; NaN for a missing cell."""
    rows = np.full((len(column), 8), np.nan)
    for position, (value, gone) in enumerate(zip(column.to_numpy(dtype=object), missing_mask(column))):
        if gone:
            continue
        try:
            values = np.asarray(value, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            values = None
        if values is None or values.size == 0 or isinstance(value, (str, bytes)):
            raise DataError(f"column '{name}' row {column.index[position]}: the classic baseline summarises a "
                            f"numeric array per cell, but this cell is {image.describe(value)}; give arrays of "
                            f"numbers, or add a `classic_features(column)` function to the type's module")
        rows[position] = [values.mean(), values.std(), values.min(), *np.quantile(values, [0.25, 0.5, 0.75]),
                          values.max(), values.size]
    return rows


class Numbers:
    """number inputs, and the fallback for array cells: trees take the values with NaN; linear
    models take them standardised, missing filled with the training mean plus a missing flag."""

    def __init__(self, name: str, style: str, function: Callable | None = None):
        self.name, self.style, self.function = name, style, function

    def _values(self, column: pd.Series) -> np.ndarray:
        if self.function is not None:
            return np.asarray(self.function(column, self.name), dtype=np.float64).reshape(len(column), -1)
        return number.parse(column, self.name)[:, None]  # (N, 1)

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
    """binary and category inputs: the most frequent values numbered by frequency; trees read them
    as native categories (unseen and missing values are NaN), linear models as one-hot columns."""

    def __init__(self, name: str, style: str):
        self.name, self.style = name, style

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
        codes = pd.Index(self.values).get_indexer(self._strings(column))
        if self.style == TREE:
            return np.where(codes >= 0, codes, np.nan)[:, None].astype(np.float64)  # (N, 1)
        rows = np.flatnonzero(codes >= 0)
        return sparse.csr_matrix((np.ones(len(rows)), (rows, codes[rows])), shape=(len(column), len(self.values)))


class Labels:
    """set inputs: one 0/1 column per label seen in training (multi-hot)."""

    def __init__(self, name: str, delimiter: str):
        self.name, self.delimiter = name, delimiter

    def fit(self, column: pd.Series) -> "Labels":
        _, labels = set_type.labels_per_row(column, self.delimiter)
        self.labels = pd.Series(labels, dtype=object).value_counts().index[:MAX_LABELS].tolist()
        return self

    def transform(self, column: pd.Series):
        rows, labels = set_type.labels_per_row(column, self.delimiter)
        codes = pd.Index(self.labels).get_indexer(labels)
        known = codes >= 0
        matrix = sparse.csr_matrix((np.ones(int(known.sum())), (rows[known], codes[known])),
                                   shape=(len(column), max(len(self.labels), 1)))
        matrix.data[:] = 1.0  # a label repeated in one cell counts once
        return matrix


class Words:
    """text inputs: TF-IDF of words and word pairs; for trees reduced by truncated SVD (LSA)."""

    def __init__(self, name: str, style: str, seed: int):
        self.name, self.style, self.seed = name, style, seed

    def fit(self, column: pd.Series) -> "Words":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        documents = text.texts(column, self.name)
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
        matrix = self.vectorizer.transform(text.texts(column, self.name))
        if self.style == TREE:
            return self.reducer.transform(matrix) if self.reducer is not None else matrix.toarray()
        return matrix


class Pixels:
    """image inputs: each image shrunk to 16x16 grey pixels, scaled by the training mean and std;
    missing or unreadable images take the training mean image."""

    def __init__(self, options):
        self.decoding = image.Decoding(options.name, PIXELS, 1, options.root,
                                       (options.window_center, options.window_width), "skip")

    def _pixels(self, column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        images, _ = image.decode_all(list(zip(column.index, column)), self.decoding)
        present = np.array([picture is not None for picture in images], dtype=bool)
        flat = np.zeros((len(images), PIXELS[0] * PIXELS[1]))
        for position in np.flatnonzero(present):
            flat[position] = images[position].reshape(-1)
        return flat, present

    def fit(self, column: pd.Series) -> "Pixels":
        flat, present = self._pixels(column)
        if not present.any():
            raise DataError(f"column '{self.decoding.name}': no image of the training rows could be read")
        self.mean_image = flat[present].mean(axis=0)
        self.mean, self.scale = flat[present].mean(), max(flat[present].std(), 1e-12)
        return self

    def transform(self, column: pd.Series) -> np.ndarray:
        flat, present = self._pixels(column)
        flat[~present] = self.mean_image
        return (flat - self.mean) / self.scale


def column_encoder(options, style: str, seed: int):
    """The classic features of one input, by its data type (see the README's table)."""
    kind = options.type
    if kind == "number":
        return Numbers(options.name, style)
    if kind in ("binary", "category", "id"):  # ids: the most frequent as codes, the rest as unseen
        return Codes(options.name, style)
    if kind == "set":
        return Labels(options.name, options.delimiter)
    if kind == "text":
        return Words(options.name, style, seed)
    if kind == "image":
        return Pixels(options)
    # types added later: their own `classic_features(column, name) -> (N, K) array`, else summaries
    function = getattr(REGISTRY.get(kind), "classic_features", None) or summary_statistics
    return Numbers(options.name, style, function)


DESCRIPTIONS = {
    ("number", TREE): "value as is (NaN kept)", ("number", LINEAR): "standardised, missing flag",
    ("binary", TREE): "native categorical code", ("binary", LINEAR): "one-hot",
    ("category", TREE): "native categorical codes", ("category", LINEAR): "one-hot",
    ("id", TREE): "native categorical codes (most frequent ids)", ("id", LINEAR): "one-hot (most frequent ids)",
    ("set", TREE): "multi-hot", ("set", LINEAR): "multi-hot",
    ("text", TREE): f"TF-IDF 1-2 grams -> {TEXT_COMPONENTS} SVD components", ("text", LINEAR): "TF-IDF 1-2 grams",
    ("image", TREE): "16x16 grey pixels", ("image", LINEAR): "16x16 grey pixels",
}


class ClassicFeatures:
    """Every input's classic features side by side: a dense matrix for trees, sparse for linear models."""

    def __init__(self, inputs: list, style: str, seed: int):
        self.names = [options.name for options in inputs]
        self.style = style
        self.encoders = [column_encoder(options, style, seed) for options in inputs]
        self.descriptions = {options.name: DESCRIPTIONS.get((options.type, style), "summary statistics")
                             for options in inputs}

    def fit(self, frame: pd.DataFrame) -> "ClassicFeatures":
        self.encoders = [encoder.fit(frame[name]) for name, encoder in zip(self.names, self.encoders)]
        widths = [encoder.transform(frame[name].iloc[:1]).shape[1] for name, encoder in zip(self.names, self.encoders)]
        self.categorical = np.concatenate([np.full(width, isinstance(encoder, Codes) and self.style == TREE)
                                           for width, encoder in zip(widths, self.encoders)])
        return self

    def transform(self, frame: pd.DataFrame):
        blocks = [encoder.transform(frame[name]) for name, encoder in zip(self.names, self.encoders)]
        if self.style == TREE:
            return np.hstack([block.toarray() if sparse.issparse(block) else block for block in blocks])
        if any(sparse.issparse(block) for block in blocks):
            return sparse.hstack([sparse.csr_matrix(block) for block in blocks], format="csr")
        return np.hstack(blocks)


# --- models -------------------------------------------------------------------------------------

@dataclass
class Task:
    """What the first output asks of a classic model: 'classify' (labels 0..classes-1),
    'regress', 'multilabel' (a 0/1 column per label) or 'anomaly' (a score, higher is stranger)."""

    kind: str
    classes: int = 0


@dataclass
class Baseline:
    """A fitted classic pipeline (features -> model); `scores` gives, per row, class probabilities
    (N, K), label probabilities (N, L) or a value (N,)."""

    name: str
    features: ClassicFeatures
    model: Any
    task: Task
    fit_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    threshold: float | None = None  # an anomaly detector's own flagging threshold

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        matrix = self.features.transform(frame)
        if self.task.kind == "anomaly":
            return -np.asarray(self.model.score_samples(matrix), dtype=np.float64)  # (N,) higher: more anomalous
        if self.task.kind == "regress":
            return np.asarray(self.model.predict(matrix), dtype=np.float64)
        probabilities = np.asarray(self.model.predict_proba(matrix), dtype=np.float64)
        if self.task.kind == "multilabel":
            return probabilities
        full = np.zeros((len(frame), self.task.classes))  # a class a model never saw keeps probability 0
        full[:, np.asarray(self.model.classes_, dtype=int)] = probabilities
        return full


def _lightgbm():
    try:
        import lightgbm
    except ImportError:  # optional: pip install 'lamina[compare]'
        return None
    return lightgbm


def _boosting(task: Task, features: ClassicFeatures, train: tuple, validation: tuple | None, seed: int):
    """LightGBM when installed, else HistGradientBoosting; both early-stop on the validation rows."""
    matrix, target = train
    lightgbm = _lightgbm()
    categorical = np.flatnonzero(features.categorical).tolist()
    stop = validation is not None and task.kind != "multilabel"  # one-vs-rest cannot pass validation rows on
    if lightgbm is not None:
        # as many threads as torch: a fair match for the deep model, and LightGBM's default (every
        # core, spinning) is ten times slower on small tables when the machine is busy
        options = dict(n_estimators=ROUNDS if stop else 300, learning_rate=0.05, random_state=seed, verbose=-1,
                       n_jobs=torch.get_num_threads())
        model = lightgbm.LGBMRegressor(**options) if task.kind == "regress" else lightgbm.LGBMClassifier(**options)
        if task.kind == "multilabel":
            from sklearn.multiclass import OneVsRestClassifier
            return "lightgbm", OneVsRestClassifier(model).fit(matrix, target)
        extra = {}
        if stop:  # LightGBM 4.6 renamed eval_set to eval_X / eval_y
            rows = {"eval_X": (validation[0],), "eval_y": (validation[1],)} \
                if "eval_X" in inspect.signature(model.fit).parameters else {"eval_set": [validation]}
            extra = {**rows, "callbacks": [lightgbm.early_stopping(50, verbose=False)]}
        return "lightgbm", model.fit(matrix, target, categorical_feature=categorical or "auto", **extra)
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    kind = HistGradientBoostingRegressor if task.kind == "regress" else HistGradientBoostingClassifier
    model = kind(max_iter=ROUNDS, categorical_features=features.categorical if categorical else None,
                 early_stopping=True if stop else "auto", random_state=seed)
    if task.kind == "multilabel":
        from sklearn.multiclass import OneVsRestClassifier
        return "hist_gradient_boosting", OneVsRestClassifier(model).fit(matrix, target)
    extra = {"X_val": validation[0], "y_val": validation[1]} \
        if stop and "X_val" in inspect.signature(kind.fit).parameters else {}  # scikit-learn >= 1.4
    return "hist_gradient_boosting", model.fit(matrix, target, **extra)


def _linear(task: Task, features: ClassicFeatures, train: tuple, validation: tuple | None, seed: int):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    matrix, target = train
    if task.kind == "regress":
        return "ridge_regression", Ridge(alpha=1.0).fit(matrix, target)
    logistic = LogisticRegression(C=1.0, max_iter=2000)
    if task.kind == "multilabel":
        return "logistic_regression", OneVsRestClassifier(logistic).fit(matrix, target)
    return "logistic_regression", logistic.fit(matrix, target)


CANDIDATES = ((TREE, _boosting), (LINEAR, _linear))


def fit_candidates(inputs: list, task: Task, parts: dict[str, tuple[pd.DataFrame, np.ndarray]],
                   seed: int) -> list[Baseline]:
    """Every candidate fitted on parts['train'] (features included) and timed; parts['validation']
    (may be empty) drives early stopping."""
    fitted = []
    train_frame, train_target = parts["train"]
    validation_frame, validation_target = parts["validation"]
    for style, make in CANDIDATES:
        began = time.perf_counter()
        with threadpool_limits(limits=torch.get_num_threads()):  # scikit-learn's OpenMP and BLAS threads
            features = ClassicFeatures(inputs, style, seed).fit(train_frame)
            validation = (features.transform(validation_frame), validation_target) if len(validation_frame) else None
            name, model = make(task, features, (features.transform(train_frame), train_target), validation, seed)
        fitted.append(Baseline(name, features, model, task, time.perf_counter() - began))
    return fitted


def fit_isolation_forest(inputs: list, normal_rows: pd.DataFrame, seed: int) -> Baseline:
    """An isolation forest (Liu et al. 2008) on the normal training rows: standardised numbers and
    one-hot categories, as the linear models see them (the forest takes no missing values)."""
    from sklearn.ensemble import IsolationForest

    began = time.perf_counter()
    with threadpool_limits(limits=torch.get_num_threads()):
        features = ClassicFeatures(inputs, LINEAR, seed).fit(normal_rows)
        model = IsolationForest(n_estimators=200, random_state=seed, n_jobs=1).fit(features.transform(normal_rows))
    return Baseline("isolation_forest", features, model, Task("anomaly"), time.perf_counter() - began)

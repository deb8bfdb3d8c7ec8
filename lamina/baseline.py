"""Classic machine-learning baselines for `lamina compare`: every input's classic features (each type's
own `classic_encoder`, fitted on the training rows only) and the candidate models: gradient boosting
(LightGBM, else scikit-learn's HistGradientBoosting) and a linear model, the better on the validation
rows kept; an isolation forest for anomaly scores."""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from threadpoolctl import threadpool_limits

from lamina import features as feature_types
from lamina.features.classic import LINEAR, TREE, Task

ROUNDS = 1000  # most boosting rounds; early stopping on the validation rows usually ends far sooner


# --- features: each input's own classic encoder, side by side ------------------------------------

class ClassicFeatures:
    """Every input's classic features side by side: a dense matrix for trees, sparse for linear models."""

    def __init__(self, inputs: list, style: str, seed: int):
        """inputs: the input features' configs (options)."""
        self.names = [options.name for options in inputs]
        self.style = style
        self.encoders = [feature_types.build(options).classic_encoder(style, seed) for options in inputs]
        self.descriptions = {name: encoder.description for name, encoder in zip(self.names, self.encoders)}

    def fit(self, frame: pd.DataFrame) -> "ClassicFeatures":
        self.encoders = [encoder.fit(frame[name]) for name, encoder in zip(self.names, self.encoders)]
        widths = [encoder.transform(frame[name].iloc[:1]).shape[1] for name, encoder in zip(self.names, self.encoders)]
        self.categorical = np.concatenate([np.full(width, encoder.categorical)
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
        if self.task.goal == "anomaly":
            return -np.asarray(self.model.score_samples(matrix), dtype=np.float64)  # (N,) higher: more anomalous
        if self.task.goal == "regress":
            return np.asarray(self.model.predict(matrix), dtype=np.float64)
        probabilities = np.asarray(self.model.predict_proba(matrix), dtype=np.float64)
        if self.task.goal == "multilabel":
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
    stop = validation is not None and task.goal != "multilabel"  # one-vs-rest cannot pass validation rows on
    if lightgbm is not None:
        # as many threads as torch: a fair match for the deep model, and LightGBM's default (every
        # core, spinning) is ten times slower on small tables when the machine is busy
        options = dict(n_estimators=ROUNDS if stop else 300, learning_rate=0.05, random_state=seed, verbose=-1,
                       n_jobs=torch.get_num_threads())
        model = lightgbm.LGBMRegressor(**options) if task.goal == "regress" else lightgbm.LGBMClassifier(**options)
        if task.goal == "multilabel":
            from sklearn.multiclass import OneVsRestClassifier
            return "lightgbm", OneVsRestClassifier(model).fit(matrix, target)
        extra = {}
        if stop:  # LightGBM 4.6 renamed eval_set to eval_X / eval_y
            rows = {"eval_X": (validation[0],), "eval_y": (validation[1],)} \
                if "eval_X" in inspect.signature(model.fit).parameters else {"eval_set": [validation]}
            extra = {**rows, "callbacks": [lightgbm.early_stopping(50, verbose=False)]}
        return "lightgbm", model.fit(matrix, target, categorical_feature=categorical or "auto", **extra)
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    estimator = HistGradientBoostingRegressor if task.goal == "regress" else HistGradientBoostingClassifier
    model = estimator(max_iter=ROUNDS, categorical_features=features.categorical if categorical else None,
                 early_stopping=True if stop else "auto", random_state=seed)
    if task.goal == "multilabel":
        from sklearn.multiclass import OneVsRestClassifier
        return "hist_gradient_boosting", OneVsRestClassifier(model).fit(matrix, target)
    extra = {"X_val": validation[0], "y_val": validation[1]} \
        if stop and "X_val" in inspect.signature(estimator.fit).parameters else {}  # scikit-learn >= 1.4
    return "hist_gradient_boosting", model.fit(matrix, target, **extra)


def _linear(task: Task, features: ClassicFeatures, train: tuple, validation: tuple | None, seed: int):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    matrix, target = train
    if task.goal == "regress":
        return "ridge_regression", Ridge(alpha=1.0).fit(matrix, target)
    logistic = LogisticRegression(C=1.0, max_iter=2000)
    if task.goal == "multilabel":
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

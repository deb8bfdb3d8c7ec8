"""Classic recommenders for a ranking output, the baselines `lamina compare` measures it against:
most popular items, and PureSVD (Cremonesi, Koren & Turrin 2010), a truncated SVD of the
user x item interaction matrix of the training rows. Both score every catalogue item per row."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.decomposition import TruncatedSVD

from lamina.data import columns_of

SVD_RANKS = (16, 32, 64, 128)  # candidate ranks, picked on validation NDCG@10


class Popularity:
    """Every user gets the items chosen most often in training."""

    name = "popularity"

    def __init__(self, counts: np.ndarray):
        self.scores_ = np.log1p(counts.astype(np.float64))

    def scores(self, users: np.ndarray) -> np.ndarray:  # (B,) user positions -> (B, I)
        return np.broadcast_to(self.scores_, (len(users), len(self.scores_))).astype(np.float32)


class PureSVD:
    """Scores = the user's row of the interaction matrix projected on its top `rank` right
    singular vectors; users without history fall back to popularity."""

    def __init__(self, matrix: sparse.csr_matrix, rank: int, counts: np.ndarray, seed: int):
        self.name = f"PureSVD rank {rank}"
        rank = max(1, min(rank, min(matrix.shape) - 1))
        self.matrix = matrix
        self.items_ = TruncatedSVD(rank, random_state=seed).fit(matrix).components_.T  # (I, R)
        self.popularity = Popularity(counts)

    def scores(self, users: np.ndarray) -> np.ndarray:
        known = users >= 0
        result = self.popularity.scores(users).copy()
        if known.any():
            rows = self.matrix[users[known]]  # (b, I)
            result[known] = np.asarray(rows @ self.items_ @ self.items_.T, dtype=np.float32)
        return result


def interaction_matrix(feature, frame: pd.DataFrame) -> sparse.csr_matrix:
    """Users x catalogue items, 1 where the user chose the item in these rows."""
    target = feature.target(columns_of(feature, frame)).numpy()
    keep = (target[:, 0] >= 0) & (target[:, 1] >= 0)
    shape = (len(feature.stats["users"]), len(feature.stats["items"]))
    matrix = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (target[keep, 1], target[keep, 0])),
                               shape=shape)
    matrix.data[:] = 1.0  # repeats count once
    return matrix


def candidates(feature, training: pd.DataFrame, seed: int) -> list:
    """Popularity and PureSVD at a few ranks, fitted on the training rows; with their fit seconds."""
    counts = np.asarray(feature.stats["counts"], dtype=np.float64)
    matrix = interaction_matrix(feature, training)
    fitted = []
    for make in [lambda: Popularity(counts)] + [lambda rank=rank: PureSVD(matrix, rank, counts, seed)
                                                for rank in SVD_RANKS if rank < min(matrix.shape)]:
        began = time.perf_counter()
        model = make()
        model.fit_seconds = time.perf_counter() - began
        fitted.append(model)
    return fitted

"""Probability calibration for binary and category outputs: temperature scaling (Guo et al. 2017)
fitted on the validation logits, and the calibration metrics (Brier score, expected calibration
error) reported beside the other metrics."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

ECE_BINS = 15  # equal-width bins, as in Guo et al. 2017


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T)
    (sigmoid for one logit per row) on the given rows. T is fitted as log T, so it stays positive."""
    logits = logits.detach().double()
    binary = logits.ndim == 1
    target = target.double() if binary else target.long()
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def negative_log_likelihood() -> torch.Tensor:
        optimizer.zero_grad()
        scaled = logits / log_temperature.exp()
        loss = nn.functional.binary_cross_entropy_with_logits(scaled, target) if binary \
            else nn.functional.cross_entropy(scaled, target)
        loss.backward()
        return loss

    optimizer.step(negative_log_likelihood)
    temperature = float(log_temperature.detach().exp())
    return temperature if math.isfinite(temperature) else 1.0


def brier_score(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean squared distance between the predicted probabilities and the one-hot truth. For one
    column of positive-class probabilities it is sklearn's brier_score_loss; for K columns it sums
    over the classes (Brier 1950), so a binary model scored both ways differs by a factor 2."""
    if probabilities.ndim == 1:
        return float(np.mean((probabilities - truth) ** 2))
    onehot = np.eye(probabilities.shape[1])[truth]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def expected_calibration_error(hit: np.ndarray, confidence: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of (rows in bin / rows) * |mean hit - mean confidence|.
    Binary outputs pass (is positive, probability of positive); category outputs pass (predicted
    class is right, probability of the predicted class), the top-label ECE of Guo et al."""
    if len(confidence) == 0:
        return float("nan")
    which = np.minimum((confidence * bins).astype(int), bins - 1)  # bin i holds [i/bins, (i+1)/bins)
    total = 0.0
    for position in np.unique(which):
        members = which == position
        total += members.sum() * abs(hit[members].mean() - confidence[members].mean())
    return float(total / len(confidence))

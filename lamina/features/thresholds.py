"""Choosing a binary output's decision threshold on validation rows (best F1, a minimum precision or
recall, or the least total cost), and the recall reached at a given precision. Functions only: not a
registered type (see binary.py)."""
from __future__ import annotations

import warnings

import numpy as np


def recall_at_precision(truth: np.ndarray, probability: np.ndarray, precision_wanted: float) -> float:
    """The most recall of any threshold whose precision reaches `precision_wanted` (from the
    precision-recall curve; 0 when none does)."""
    from sklearn import metrics as skm

    precision, recall, _ = skm.precision_recall_curve(truth, probability)
    return float(recall[precision >= precision_wanted].max())  # the curve ends at (precision 1, recall 0)


def choose_threshold(truth: np.ndarray, probability: np.ndarray, options) -> float:  # options: binary.Options
    """The decision threshold on validation rows (truth 0/1, probability of positive) by the
    config's rule: costs, minimum_precision, minimum_recall or (threshold: f1) the best F1."""
    from sklearn import metrics as skm

    if options.costs is not None:
        return cheapest_threshold(truth, probability, options.costs)
    precision, recall, thresholds = skm.precision_recall_curve(truth, probability)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if options.minimum_precision is not None:
        reaching = np.flatnonzero(precision >= options.minimum_precision)
        if not len(reaching):
            warnings.warn(f"output '{options.name}': no threshold reaches precision {options.minimum_precision} "
                          f"on the validation rows (best {precision.max():.3f}); using the highest", stacklevel=3)
            return float(thresholds[-1])
        return float(thresholds[reaching[0]])
    if options.minimum_recall is not None:
        # recall falls as the threshold rises and is 1 at the lowest, so some threshold reaches it
        return float(thresholds[np.flatnonzero(recall >= options.minimum_recall)[-1]])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def cheapest_threshold(truth: np.ndarray, probability: np.ndarray, costs) -> float:
    """The threshold with the least false_positive * FP + false_negative * FN on these rows; among
    equal costs the highest threshold (fewest alarms). Flagging no row at all is a candidate too."""
    order = np.argsort(-probability, kind="stable")
    ranked, hits = probability[order], truth[order]
    flagged = np.arange(len(ranked) + 1)  # flag the k most probable rows, k = 0..n
    true_positives = np.concatenate([[0], np.cumsum(hits)])
    cost = costs.false_positive * (flagged - true_positives) + costs.false_negative * (hits.sum() - true_positives)
    # a threshold flags every row at or above it, so only cut between two different probabilities
    possible = np.ones(len(flagged), dtype=bool)
    possible[1:-1] = ranked[1:] != ranked[:-1]
    best = int(np.flatnonzero(possible)[np.argmin(cost[possible])])
    return float(ranked[best - 1]) if best else float(np.nextafter(ranked[0], np.inf))

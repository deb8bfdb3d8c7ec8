"""Recommendations on MovieLens 100k, split by time per user (each user's latest interaction is
the test, the one before it validation): lamina's ranking output (examples/movielens.yaml, with
sampled softmax against 500 random movies per batch, and with the full softmax over every movie,
the config's `negatives: auto`) against most-popular and PureSVD
(rank picked on validation), all ranking each test movie among the movies its user had not seen.
Prints NDCG@10, HR@10, MRR and coverage@10 of each, and lamina / best baseline ratios. Then rating
prediction (examples/movielens_ratings.yaml): RMSE of lamina against the classic model `lamina
compare` picks on the same split, and against predicting the training mean.

    python benchmarks/movielens.py            # full runs (a few minutes on 2 cores)
    python benchmarks/movielens.py --quick    # CI smoke test: 1 epoch each
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import lamina
from lamina import datasets, recommenders
from lamina.data import columns_of
from common import lamina_source, machine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def ranking_metrics(output, rows, scores_of) -> dict:
    truth = output.target(columns_of(output, rows))
    return output.metrics(truth, output.summary(torch.as_tensor(scores_of(rows, truth)), truth))


def rankings(frame, quick: bool) -> None:
    config = lamina.load_config(EXAMPLES / "movielens.yaml").to_dict()
    if quick:
        config["training"]["epochs"] = 1
    results, reference = {}, None
    for label, negatives in (("lamina, 500 negatives", 500), ("lamina, full softmax", 0)):
        config["outputs"][0]["negatives"] = negatives
        began = time.perf_counter()
        model = lamina.Model(config).fit(frame, quiet=True)
        seconds = time.perf_counter() - began
        results[label] = {**model.metrics_["test"]["movie_id"], "seconds": seconds,
                          "best_epoch": model.training_["best_epoch"]}
        reference = model
    output, rows = reference.outputs_[0], reference.training_["rows"]
    from lamina.compare import split_as_trained

    kept, parts = split_as_trained(reference, frame)
    fitted = recommenders.candidates(output, kept.iloc[parts["train"]], seed=0)
    classic = lambda candidate: lambda part, truth: candidate.scores(truth[:, 1].numpy())
    validation = {c.name: ranking_metrics(output, kept.iloc[parts["validation"]], classic(c))["ndcg_at_10"]
                  for c in fitted}
    svd = max((c for c in fitted if c.name != "popularity"), key=lambda c: validation[c.name])
    for candidate in (fitted[0], svd):
        results[candidate.name] = {**ranking_metrics(output, kept.iloc[parts["test"]], classic(candidate)),
                                   "seconds": candidate.fit_seconds}
    print(f"ranking: {rows['train']:,} train / {rows['validation']:,} validation / {rows['test']:,} test "
          f"interactions, {len(output.stats['items']):,} movies in the catalogue")
    print(f"{'model':<28}{'NDCG@10':>9}{'HR@10':>8}{'MRR':>8}{'cov@10':>8}{'seconds':>9}")
    for label, result in results.items():
        print(f"{label:<28}{result['ndcg_at_10']:>9.4f}{result['hit_rate_at_10']:>8.4f}{result['mrr']:>8.4f}"
              f"{result['coverage_at_10']:>8.4f}{result['seconds']:>9.1f}")
    best = max(results[fitted[0].name]["ndcg_at_10"], results[svd.name]["ndcg_at_10"])
    for label in [key for key in results if key.startswith("lamina")]:
        print(f"{label}: NDCG@10 / best baseline = {results[label]['ndcg_at_10'] / best:.3f}, HR@10 / best "
              f"baseline = {results[label]['hit_rate_at_10'] / max(results[fitted[0].name]['hit_rate_at_10'], results[svd.name]['hit_rate_at_10']):.3f}")


def ratings(frame, quick: bool) -> None:
    config = lamina.load_config(EXAMPLES / "movielens_ratings.yaml").to_dict()
    if quick:
        config["training"]["epochs"] = 1
    began = time.perf_counter()
    model = lamina.Model(config).fit(frame, quiet=True)
    seconds = time.perf_counter() - began
    comparison = model.compare(frame, resamples=200 if quick else 1000)
    from lamina.compare import split_as_trained

    kept, parts = split_as_trained(model, frame)
    mean = kept.iloc[parts["train"]]["rating"].mean()
    truth = kept.iloc[parts["test"]]["rating"].to_numpy(dtype=float)
    deep, classic = comparison["deep"]["test"]["rmse"], comparison["classic"]["test"]["rmse"]
    print(f"rating prediction (random 80/10/10 split, {len(truth):,} test ratings):")
    print(f"  lamina RMSE {deep:.4f} ({seconds:.0f} s); {comparison['classic']['model']} RMSE {classic:.4f}; "
          f"training mean RMSE {np.sqrt(np.mean((truth - mean) ** 2)):.4f}")
    print(f"  lamina / classic RMSE = {deep / classic:.3f}; verdict: {comparison['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch each: checks the script runs")
    args = parser.parse_args()
    print(lamina_source())
    print(machine())
    frame = datasets.load("movielens_100k")
    rankings(frame, args.quick)
    ratings(frame, args.quick)


if __name__ == "__main__":
    main()

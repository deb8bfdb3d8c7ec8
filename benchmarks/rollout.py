"""Behaviour cloning in simulation: each example config (examples/cartpole.yaml, reacher.yaml,
reacher_noisy.yaml) trained on its demonstration data set, then rolled out against the scripted expert,
the do-nothing action and random actions on the same unseen seeds (the config's simulation section).
Also the variants that explain the figures: Reacher from demonstrations without DART noise, and DAgger
rounds on the noisy demonstrations. Prints one table per run and the time each part took.

    python benchmarks/rollout.py                   # every example, the configs as they are
    python benchmarks/rollout.py --only cartpole --training-seeds 0 1 2
    python benchmarks/rollout.py --only reacher_noisy --dagger 3 --relabel
    python benchmarks/rollout.py --quick           # smoke test: few episodes, 2 epochs, well under a minute
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import yaml

from lamina import datasets
from lamina.datasets import control
from lamina.api import Model
from lamina.simulation.dagger import dagger
from lamina.simulation.demonstrations import record
from lamina.simulation.rollout import compare, table
from common import lamina_source, machine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUNS = {  # name -> (config, data set, how to record the rows instead: (environment, episodes, DART, shaky))
    "cartpole": ("cartpole.yaml", "cartpole_demonstrations", None),
    "cartpole_without_dart": ("cartpole.yaml", None, ("CartPole-v1", 20, 0.0, 0.0)),
    "reacher": ("reacher.yaml", "reacher_demonstrations", None),
    "reacher_without_dart": ("reacher.yaml", None, ("Reacher-v5", 200, 0.0, 0.0)),
    "reacher_noisy": ("reacher_noisy.yaml", "reacher_noisy_demonstrations", None),
    "reacher_shakier": ("reacher_noisy.yaml", None, ("Reacher-v5", 200, 0.0, 1.0)),
}


def rows_of(name: str, quick: bool):
    _, data_set, recipe = RUNS[name]
    environment, episodes, injected, shaky = recipe or control.SETS[data_set]
    if quick:
        return record(environment, 4, 0, injected=injected, shaky=shaky, max_steps=60)
    if data_set:
        return datasets.load(data_set)
    return record(environment, episodes, 0, injected=injected, shaky=shaky)


def one(name: str, seed: int, args) -> None:
    config = yaml.safe_load((EXAMPLES / RUNS[name][0]).read_text())
    config["training"]["seed"] = seed
    if args.quick:
        config["training"]["epochs"] = 2
        config["simulation"].update(episodes=3, max_steps=60)
    started = time.perf_counter()
    rows = rows_of(name, args.quick)
    recorded = time.perf_counter() - started
    demonstrated = rows.groupby("episode")["reward"].sum()
    started = time.perf_counter()
    model = Model(config).fit(rows, quiet=True)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    result = compare(model, model.config.simulation)
    rolled = time.perf_counter() - started
    simulation = model.config.simulation
    print(f"\n{name} (training seed {seed}): {len(rows):,} rows, {rows['episode'].nunique()} episodes whose return "
          f"as recorded was {demonstrated.mean():.2f} ± {demonstrated.std(ddof=0):.2f}; best epoch "
          f"{model.training_['best_epoch']} of {config['training']['epochs']}; test metrics "
          f"{ {key: round(value, 4) for key, value in model.metrics_.get('test', {}).get('action', {}).items()} }")
    first, last = result["seeds"]
    print(f"{simulation.environment}, {simulation.episodes} episodes on seeds {first}-{last}; "
          f"clipped actions {result['clipped_actions']} of {result['actions']}; read/record {recorded:.1f} s, "
          f"train {trained:.1f} s, rollouts {rolled:.1f} s")
    print(table(result), flush=True)
    if args.dagger and (name == "reacher_noisy" or args.only):
        started = time.perf_counter()
        rounds = dagger(model, simulation, rows, args.dagger, relabel=args.relabel, report=lambda row: print(
            f"  DAgger round {row['round']}{' (relabelled)' if args.relabel else ''}: {row['rows']:,} rows, return "
            f"{row['return_mean']:.2f} ± {row['return_std']:.2f}, " + ", ".join(
                f"{key.removesuffix('_mean')} {value:.3f}" for key, value in row.items()
                if key.endswith("_mean") and key not in ("return_mean", "length_mean")), flush=True))
        print(f"  {len(rounds)} DAgger rounds in {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(RUNS), action="append", help="run only these (repeatable)")
    parser.add_argument("--training-seeds", type=int, nargs="+", default=[42], help="training.seed of each run")
    parser.add_argument("--dagger", type=int, default=0, help="DAgger rounds after reacher_noisy (or --only runs)")
    parser.add_argument("--relabel", action="store_true", help="DAgger's expert also relabels the demonstrations")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(lamina_source())
    print(f"{machine()}; torch threads {args.threads}")
    for name in args.only or list(RUNS):
        for seed in args.training_seeds:
            one(name, seed, args)
    print(f"\nload average at the end: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()

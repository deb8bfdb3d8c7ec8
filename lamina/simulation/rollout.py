"""Rollouts: a policy acts in its environment for N seeded episodes, all stepped together so that a
model predicts a batch of observations at once; the returns, lengths and task measures are summed up,
and a trained model is compared with the expert, the do-nothing action and random actions on the same
seeds (`lamina rollout`, written to rollout.json in the model folder)."""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lamina.errors import ConfigError
from lamina.simulation import environments
from lamina.simulation.policy import ExpertPolicy, ModelPolicy, RandomPolicy, ZeroPolicy


@dataclass
class Episode:
    seed: int
    reward: float = 0.0  # the return: the sum of the rewards
    length: int = 0
    measures: dict[str, float] = field(default_factory=dict)  # the task's success measures at the end
    observations: list = field(default_factory=list)  # (D,) arrays, when recorded
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)


def run(policy, environment: str, seeds: list[int], max_steps: int | None = None, record: bool = False,
        noise=None) -> list[Episode]:
    """One episode per seed, stepped together: each step the policy acts on the (B, D) observations of the
    episodes still running. `record` keeps each step's observation, the policy's action and the reward;
    `noise(action, rng)`, when given, perturbs the action the environment receives (the recorded action
    stays the policy's own: DART's noise injection)."""
    task = environments.task(environment)
    worlds = [environments.make(environment, max_steps) for _ in seeds]
    episodes = [Episode(seed) for seed in seeds]
    generator = np.random.default_rng(seeds[0] if seeds else 0)
    try:
        observations = [world.reset(seed=seed)[0] for world, seed in zip(worlds, seeds)]
        running = list(range(len(seeds)))
        while running:
            actions = policy.act(np.stack([observations[index] for index in running]))  # B actions
            still = []
            for index, action in zip(running, actions):
                episode, executed = episodes[index], noise(action, generator) if noise else action
                observation, reward, terminated, truncated, _ = worlds[index].step(executed)
                if record:
                    episode.observations.append(observations[index])
                    episode.actions.append(action)
                    episode.rewards.append(float(reward))
                episode.reward += float(reward)
                episode.length += 1
                observations[index] = observation
                if terminated or truncated:
                    episode.measures = task.success(observation, bool(terminated))
                else:
                    still.append(index)
            running = still
    finally:
        for world in worlds:
            world.close()
    return episodes


def summary(episodes: list[Episode], seconds: float | None = None) -> dict[str, Any]:
    """Mean and standard deviation of return, length and each task measure over the episodes."""
    result: dict[str, Any] = {"episodes": len(episodes)}
    columns = {"return": [episode.reward for episode in episodes],
               "length": [float(episode.length) for episode in episodes]}
    for name in (episodes[0].measures if episodes else {}):
        columns[name] = [episode.measures[name] for episode in episodes]
    for name, values in columns.items():
        result[f"{name}_mean"], result[f"{name}_std"] = float(np.mean(values)), float(np.std(values))
    result["returns"] = [round(value, 4) for value in columns["return"]]
    if seconds is not None:
        result["seconds"] = round(seconds, 2)
    return result


def seeds(simulation) -> list[int]:
    return list(range(simulation.seed, simulation.seed + simulation.episodes))


def settings(model, environment: str | None = None, episodes: int | None = None, seed: int | None = None):
    """The model's simulation section with the command line's overrides; ConfigError when there is none."""
    from pydantic import ValidationError

    from lamina.config import Simulation

    section = model.config.simulation
    if section is None and environment is None:
        raise ConfigError("the model's config has no simulation section; add `simulation: {environment: "
                          "Reacher-v5}` to the config before training, or pass --environment")
    values = section.model_dump() if section is not None else {"environment": environment}
    values.update({key: value for key, value in (("environment", environment), ("episodes", episodes),
                                                  ("seed", seed)) if value is not None})
    try:
        return Simulation.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in ("simulation", *first["loc"]))
        raise ConfigError(f"{where}: {first['msg']} (from the model's config and the command line)") from None


def compare(model, simulation) -> dict[str, Any]:
    """The model as a policy and the three reference policies on the same seeds: {'policies': {name: summary}}."""
    task = environments.task(simulation.environment)
    space, size = environments.spaces(simulation.environment, simulation.max_steps)
    policy = ModelPolicy(model, simulation, space, size)
    chosen = seeds(simulation)
    policies = {"model": policy, "expert": ExpertPolicy(simulation.environment), "zero": ZeroPolicy(space),
                "random": RandomPolicy(space, simulation.seed)}
    results = {}
    for name, acting in policies.items():
        started = time.perf_counter()
        results[name] = summary(run(acting, simulation.environment, chosen, simulation.max_steps),
                                time.perf_counter() - started)
    if policy.clipped:
        warnings.warn(f"{policy.clipped} of the model's {policy.actions} actions were outside the action space "
                      f"[{np.min(space.low):g}, {np.max(space.high):g}] and were clipped", stacklevel=2)
    return {"environment": simulation.environment, "episodes": simulation.episodes,
            "seeds": [chosen[0], chosen[-1]], "max_steps": simulation.max_steps, "success_means": task.success_means,
            "clipped_actions": policy.clipped, "actions": policy.actions, "policies": results}


def write(folder: str | Path, result: dict) -> Path:
    """rollout.json in the model folder, listed in its manifest like the other added files."""
    from lamina import artifact

    return artifact.add_file(folder, artifact.ROLLOUT, json.dumps(result, indent=1))


def table(result: dict) -> str:
    """The comparison as aligned text, one line per policy."""
    measures = [name.removesuffix("_mean") for name in next(iter(result["policies"].values()))
                if name.endswith("_mean") and name not in ("return_mean", "length_mean")]
    header = f"{'policy':<8} {'return':>18} {'length':>14}" + "".join(f" {name:>22}" for name in measures)
    lines = [header]
    for name, row in result["policies"].items():
        line = f"{name:<8} {row['return_mean']:>9.2f} ± {row['return_std']:<6.2f} " \
               f"{row['length_mean']:>7.1f} ± {row['length_std']:<4.1f}"
        line += "".join(f" {row[name + '_mean']:>12.3f} ± {row[name + '_std']:<7.3f}" for name in measures)
        lines.append(line)
    return "\n".join(lines)

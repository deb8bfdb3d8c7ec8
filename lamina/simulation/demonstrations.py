"""Demonstrations recorded in a simulator by a scripted expert: one row per step (episode, step,
observation, action, reward, split), whole episodes kept in one split. Optional noise makes them
harder (a shaky demonstrator) or more useful (DART: noise in the executed actions only)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lamina.errors import DataError
from lamina.simulation import environments
from lamina.simulation.policy import ExpertPolicy
from lamina.simulation.rollout import run

SPLIT_SHARES = (0.8, 0.1, 0.1)  # train, validation, test: of the episodes


class Perturbation:
    """Noise on actions: Gaussian with standard deviation `scale` x half the range of a continuous action
    (then clipped to the space), or for a discrete one a uniformly random action with probability `scale`."""

    def __init__(self, space, scale: float):
        self.space, self.scale = space, float(scale)
        self.discrete = isinstance(space, environments.gymnasium().spaces.Discrete)

    def __call__(self, action: Any, generator: np.random.Generator) -> Any:
        if self.discrete:
            return int(self.space.start + generator.integers(self.space.n)) if generator.random() < self.scale \
                else action
        half = (self.space.high - self.space.low) / 2.0
        noisy = np.asarray(action, dtype=np.float64) + generator.normal(size=self.space.shape) * self.scale * half
        return np.clip(noisy, self.space.low, self.space.high).astype(self.space.dtype)


class ShakyExpert:
    """The expert whose every action carries noise: what it does is what is recorded (a noisy demonstrator)."""

    def __init__(self, environment: str, perturbation: Perturbation, seed: int):
        self.expert, self.perturbation = ExpertPolicy(environment), perturbation
        self.generator = np.random.default_rng(seed)

    def act(self, observations: np.ndarray) -> list[Any]:
        return [self.perturbation(action, self.generator) for action in self.expert.act(observations)]


def record(environment: str, episodes: int, seed: int = 0, injected: float = 0.0, shaky: float = 0.0,
           max_steps: int | None = None) -> pd.DataFrame:
    """`episodes` expert episodes on seeds seed .. seed + episodes - 1, as rows. `injected`: DART noise in
    the executed actions (the recorded action is the expert's own, for the state the noise led to);
    `shaky`: noise in the expert's actions, recorded as executed. Both on Perturbation's scale."""
    for name, value, low in (("episodes", episodes, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"demonstrations: {name} must be a whole number >= {low}; got {value!r}")
    for name, value in (("injected", injected), ("shaky", shaky)):
        if not 0.0 <= value <= 1.0:
            raise DataError(f"demonstrations: {name} noise must be between 0 and 1; got {value!r}")
    space, _ = environments.spaces(environment, max_steps)
    policy = ShakyExpert(environment, Perturbation(space, shaky), seed + 1) if shaky else ExpertPolicy(environment)
    noise = Perturbation(space, injected) if injected else None
    recorded = run(policy, environment, list(range(seed, seed + episodes)), max_steps, record=True, noise=noise)
    return frame(recorded, split_episodes(episodes, seed))


def split_episodes(episodes: int, seed: int) -> list[str]:
    """train / validation / test per episode, seeded: about 80 / 10 / 10 %, at least one episode each
    for validation and test once there are three."""
    order = np.random.default_rng(seed).permutation(episodes)
    held = max(1, round(episodes * SPLIT_SHARES[1])) if episodes >= 3 else 0
    parts = np.array(["train"] * episodes, dtype=object)
    parts[order[:held]] = "validation"
    parts[order[held:2 * held]] = "test"
    return parts.tolist()


def frame(episodes: list, splits: list[str]) -> pd.DataFrame:
    """Rows of recorded episodes: episode, step, observation (a list of floats), action (a list of floats
    for continuous actions, a whole number for discrete ones), reward and split."""
    rows = {"episode": [], "step": [], "observation": [], "action": [], "reward": [], "split": []}
    for number, (episode, split) in enumerate(zip(episodes, splits)):
        for step, (observation, action, reward) in enumerate(zip(episode.observations, episode.actions,
                                                                 episode.rewards)):
            rows["episode"].append(number)
            rows["step"].append(step)
            rows["observation"].append(np.asarray(observation, dtype=np.float64).tolist())
            rows["action"].append(action if isinstance(action, int) else np.asarray(action, np.float64).tolist())
            rows["reward"].append(reward)
            rows["split"].append(split)
    return pd.DataFrame(rows)

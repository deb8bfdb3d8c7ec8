"""Gymnasium environments made by name, with clear errors, and what lamina knows about each task it
supports: its scripted expert, its do-nothing action and how an episode counts as a success."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lamina.errors import ConfigError, did_you_mean
from lamina.simulation import experts

INSTALL = "pip install 'lamina[simulation]'"
REACHED_MM = 10.0  # a Reacher episode succeeds when the fingertip ends within 1 cm of the target


def _balanced(final_observation: np.ndarray, terminated: bool) -> dict[str, float]:
    """CartPole: the pole stayed up until the time limit (the episode was not ended by a fall)."""
    return {"success": float(not terminated)}


def _reached(final_observation: np.ndarray, terminated: bool) -> dict[str, float]:
    """Reacher: the final fingertip-to-target distance (observation[8:10] is fingertip minus target)."""
    distance = float(np.linalg.norm(final_observation[8:10])) * 1000.0
    return {"final_distance_mm": distance, "success": float(distance < REACHED_MM)}


@dataclass(frozen=True)
class Task:
    expert: Callable[[], Any]  # makes the scripted expert (an object with act(observation) -> action)
    success: Callable[[np.ndarray, bool], dict[str, float]]  # (final observation, terminated) -> measures
    success_means: str  # what `success` says, for reports


TASKS = {
    "CartPole-v1": Task(experts.CartPoleExpert, _balanced, "the pole stayed up for the whole episode"),
    "Reacher-v5": Task(experts.ReacherExpert, _reached, f"the fingertip ended within {REACHED_MM:g} mm of the target"),
}


def gymnasium():
    """The gymnasium module, or a ConfigError saying how to install it."""
    try:
        import gymnasium as gym
    except ImportError:
        raise ConfigError(f"simulation needs gymnasium (and mujoco for the MuJoCo tasks); install them with: "
                          f"{INSTALL}") from None
    return gym


def task(environment: str) -> Task:
    """The expert and success measure of a supported environment; a ConfigError naming the supported ones."""
    if environment not in TASKS:
        raise ConfigError(f"simulation.environment '{environment}' has no scripted expert in lamina (it is needed for "
                          f"the expert comparison and DAgger){did_you_mean(environment, TASKS)}")
    return TASKS[environment]


def make(environment: str, max_steps: int | None = None):
    """A gymnasium environment by its registered name, e.g. 'Reacher-v5'; `max_steps` overrides its time
    limit. ConfigError when gymnasium or the physics engine is not installed or the name is unknown."""
    gym = gymnasium()
    if environment not in gym.registry:
        close = difflib.get_close_matches(environment, list(gym.registry), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else f"; lamina has experts for {', '.join(TASKS)}"
        raise ConfigError(f"unknown simulation.environment '{environment}'{hint} (gymnasium knows "
                          f"{len(gym.registry)} environments: gymnasium.pprint_registry() lists them)")
    options = {"max_episode_steps": max_steps} if max_steps else {}
    try:
        return gym.make(environment, **options)
    except gym.error.DependencyNotInstalled as error:
        raise ConfigError(f"environment '{environment}' needs a package that is not installed ({error}); install "
                          f"the simulation extra: {INSTALL}") from None
    except ImportError as error:
        raise ConfigError(f"environment '{environment}' cannot be made: {error}; install the simulation extra: "
                          f"{INSTALL}") from None


def spaces(environment: str, max_steps: int | None = None) -> tuple[Any, int]:
    """(action space, number of observation components) of an environment, from one made and closed."""
    world = make(environment, max_steps)
    try:
        return world.action_space, int(np.prod(world.observation_space.shape))
    finally:
        world.close()


def zero_action(space) -> Any:
    """The do-nothing action: zeros of a continuous space, the first action (0) of a discrete one."""
    gym = gymnasium()
    if isinstance(space, gym.spaces.Box):
        return np.zeros(space.shape, dtype=space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return int(space.start)
    raise ConfigError(f"action space {space} is not supported: lamina drives Box (continuous) and Discrete actions")

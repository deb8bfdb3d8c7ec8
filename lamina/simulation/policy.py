"""Policies that act in an environment a batch of observations at a time: a trained lamina model (its
inputs fed from the observation by name, its output turned into actions), the scripted expert, the
do-nothing action and uniform random actions."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from lamina.errors import ConfigError, DataError
from lamina.simulation import environments

DEFAULT_INPUT = "observation"  # the input fed the whole flat observation when no mapping is given
CHUNK = 256  # observations predicted together: at most api.FAST_ROWS, so predict_rows skips pandas


def observation_slices(mapping: dict[str, list[int] | str] | None, size: int) -> dict[str, list[int]]:
    """{input name: positions in the observation}: the whole observation to 'observation' by default,
    a list of positions or a slice 'start:stop' per input otherwise. ConfigError for a position outside
    an observation of `size` components."""
    if not mapping:
        return {DEFAULT_INPUT: list(range(size))}
    slices = {}
    for name, where in mapping.items():
        if isinstance(where, str):
            try:
                positions = list(range(size))[slice(*(int(part) if part.strip() else None
                                                       for part in where.split(":")))]
            except (TypeError, ValueError):
                raise ConfigError(f"simulation.inputs.{name}: '{where}' is not a slice; write 'start:stop' (e.g. "
                                  f"'0:4') or a list of positions") from None
        else:
            positions = list(where)
        outside = [position for position in positions if not -size <= position < size]
        if outside or not positions:
            raise ConfigError(f"simulation.inputs.{name}: positions {outside or where} select nothing in an "
                              f"observation of {size} components (0 to {size - 1})")
        slices[name] = [position % size for position in positions]
    return slices


class ModelPolicy:
    """A trained lamina Model as a policy. Each input named in the slices gets its observation components
    as a vector cell (a list of floats); the action output's decoded value becomes the action: a list of
    numbers for a continuous (Box) action space, clipped to its bounds, or a whole number for a discrete one.
    `clipped` counts the actions that had to be clipped; the rollout warns about them once."""

    def __init__(self, model, simulation, space, observation_size: int):
        self.model, self.space = model, space
        inputs = [feature.config.name for feature in model.inputs_]
        self.slices = observation_slices(simulation.inputs, observation_size)
        unfed = [name for name in inputs if name not in self.slices]
        if unfed:
            raise ConfigError(f"the model's input '{unfed[0]}' cannot be fed from the observation: simulation.inputs "
                              f"names {sorted(self.slices)}; map every input of the model ({', '.join(inputs)}) to "
                              f"observation components, e.g. simulation: {{inputs: {{{unfed[0]}: '0:4'}}}}")
        unknown = [name for name in self.slices if name not in inputs]
        if unknown:
            raise ConfigError(f"simulation.inputs names '{unknown[0]}', which is not an input of the model "
                              f"({', '.join(inputs)})")
        outputs = [feature.config.name for feature in model.outputs_]
        self.output = simulation.action or outputs[0]
        if self.output not in outputs:
            raise ConfigError(f"simulation.action '{self.output}' is not an output of the model ({', '.join(outputs)})")
        self.gym = environments.gymnasium()
        self.clipped = self.actions = 0

    def act(self, observations: np.ndarray) -> list[Any]:
        """(B, D) observations -> B actions. An input fed one component gets a number, else a list."""
        rows = [{name: float(observation[positions[0]]) if len(positions) == 1 else
                 observation[positions].astype(float).tolist() for name, positions in self.slices.items()}
                for observation in observations]
        try:
            values = [row[self.output] for start in range(0, len(rows), CHUNK)  # the fast path: a few rows at once
                      for row in self.model.predict_rows(rows[start:start + CHUNK])]
        except DataError as error:
            raise ConfigError(f"the observation cannot feed the model's inputs ({error}); say which components feed "
                              f"each input in simulation.inputs") from None
        return [self._action(value) for value in values]

    def _action(self, value: Any) -> Any:
        self.actions += 1
        if isinstance(self.space, self.gym.spaces.Discrete):
            return self._discrete(value)
        array = np.asarray(value, dtype=np.float64).ravel() if _numeric(value) else None
        if array is None or array.size != int(np.prod(self.space.shape)):
            got = f"{array.size} numbers" if array is not None else repr(value)
            raise ConfigError(f"the model's output '{self.output}' gives {got} per row, but the environment's "
                              f"actions have shape {tuple(self.space.shape)}; train a vector output with "
                              f"{int(np.prod(self.space.shape))} components (the recorded action)")
        array = array.reshape(self.space.shape)
        clipped = np.clip(array, self.space.low, self.space.high)
        self.clipped += int(not np.array_equal(clipped, array))
        return clipped.astype(self.space.dtype)

    def _discrete(self, value: Any) -> int:
        try:
            action = int(value) if float(value) == int(float(value)) else None
        except (TypeError, ValueError):
            action = None
        first, count = int(self.space.start), int(self.space.n)
        if action is None or not first <= action < first + count:
            raise ConfigError(f"the model's output '{self.output}' predicted {value!r}, but the environment's actions "
                              f"are the whole numbers {first} to {first + count - 1}; train a category output on the "
                              f"recorded action")
        return action


def _numeric(value: Any) -> bool:
    try:
        np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


class ExpertPolicy:
    """The environment's scripted expert, one observation at a time."""

    def __init__(self, environment: str):
        self.expert = environments.task(environment).expert()

    def act(self, observations: np.ndarray) -> list[Any]:
        return [self.expert.act(observation) for observation in observations]


class ZeroPolicy:
    """The do-nothing action every step (zero torque; for a discrete space, action 0)."""

    def __init__(self, space):
        self.action = environments.zero_action(space)

    def act(self, observations: np.ndarray) -> list[Any]:
        return [self.action for _ in observations]


class RandomPolicy:
    """Uniform random actions from the action space, seeded."""

    def __init__(self, space, seed: int):
        self.space = copy.deepcopy(space)  # its own random stream, whoever else samples the environment's space
        self.space.seed(seed)

    def act(self, observations: np.ndarray) -> list[Any]:
        return [self.space.sample() for _ in observations]

"""DAgger (Ross, Gordon & Bagnell 2011): the cloned policy drives, the expert labels the states it
visits, and the model is trained again on all the rows so far, so that it learns to recover from its
own mistakes rather than only from the states the expert showed."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from lamina.errors import ConfigError
from lamina.simulation import environments
from lamina.simulation.policy import ExpertPolicy, ModelPolicy
from lamina.simulation.rollout import run, seeds, summary

FIRST_SEED = 100_000  # DAgger's own episodes: far from the demonstrations' seeds and the evaluation's


def visited_rows(policy: ModelPolicy, episodes: list, expert: ExpertPolicy, action: str, start: int,
                 split: tuple[str, str] | None) -> pd.DataFrame:
    """The observations the policy met, each labelled with the expert's action, as rows of the columns the
    model reads (each input's observation components, the action output) plus episode, step and reward."""
    rows: dict[str, list] = {name: [] for name in ("episode", "step", *policy.slices, action, "reward")}
    if split:
        rows[split[0]] = []
    for number, episode in enumerate(episodes):
        observations = np.stack(episode.observations)  # (T, D)
        for step, (observation, label) in enumerate(zip(observations, expert.act(observations))):
            rows["episode"].append(start + number)
            rows["step"].append(step)
            for name, positions in policy.slices.items():
                rows[name].append(observation[positions].astype(float).tolist())
            rows[action].append(label if isinstance(label, int) else np.asarray(label, np.float64).tolist())
            rows["reward"].append(episode.rewards[step])
            if split:
                rows[split[0]].append(split[1])
    return pd.DataFrame(rows)


def relabelled(table: pd.DataFrame, policy: ModelPolicy, expert: ExpertPolicy, action: str, size: int) -> pd.DataFrame:
    """The rows with their action replaced by the expert's for the row's observation, rebuilt from the input
    columns (they must hold every observation component between them)."""
    covered = sorted({position for positions in policy.slices.values() for position in positions})
    if covered != list(range(size)):
        raise ConfigError(f"relabelling needs the whole observation, but the model's inputs hold components "
                          f"{covered} of {size}; map every component in simulation.inputs, or leave out --relabel")
    observations = np.zeros((len(table), size))  # (N, D)
    for name, positions in policy.slices.items():
        observations[:, positions] = np.array([np.asarray(cell, dtype=np.float64) for cell in table[name]])
    labels = expert.act(observations)
    table = table.copy()
    table[action] = [label if isinstance(label, int) else np.asarray(label, np.float64).tolist() for label in labels]
    return table


def dagger(model, simulation, data: Any, rounds: int, output: str | Path | None = None,
           report: Callable[[dict], None] | None = None, relabel: bool = False) -> list[dict]:
    """`rounds` DAgger rounds from a trained `model` and the rows it was trained on (`data`: a table, file or
    data set name). Each round runs the current policy for `simulation.episodes` episodes on seeds of its
    own, has the expert label every visited state, trains a new Model with the same config on all rows so
    far and rolls it out on the evaluation seeds. The visited rows go to the training split when the config
    splits by a column. `relabel`: the expert also labels the states of the given rows (demonstrations of a
    noisy or weaker demonstrator). Returns one record per round (and calls `report` with it); `output` saves
    the last round's model there."""
    from lamina.api import Model
    from lamina.data import read_table

    table, _ = read_table(data)
    config = model.config
    split = (config.split.column, "train") if config.split.method == "column" else None
    expert, current = ExpertPolicy(simulation.environment), model
    space, size = environments.spaces(simulation.environment, simulation.max_steps)
    action = ModelPolicy(model, simulation, space, size).output
    if relabel:
        table = relabelled(table, ModelPolicy(model, simulation, space, size), expert, action, size)
    first_episode = int(table["episode"].max()) + 1 if "episode" in table.columns and len(table) else 0
    records = []
    for number in range(1, rounds + 1):
        policy = ModelPolicy(current, simulation, space, size)
        own = list(range(FIRST_SEED + (number - 1) * simulation.episodes, FIRST_SEED + number * simulation.episodes))
        visited = run(policy, simulation.environment, own, simulation.max_steps, record=True)
        table = pd.concat([table, visited_rows(policy, visited, expert, action, first_episode, split)],
                          ignore_index=True)
        first_episode += len(visited)
        current = Model(config.model_copy(deep=True)).fit(table, quiet=True)
        result = summary(run(ModelPolicy(current, simulation, space, size), simulation.environment,
                             seeds(simulation), simulation.max_steps))
        record = {"round": number, "rows": int(len(table)), "visited_rows": int(sum(e.length for e in visited)),
                  **{key: value for key, value in result.items() if key != "returns"}}
        records.append(record)
        if report:
            report(record)
    if output is not None and rounds:
        current.save(output)
    return records

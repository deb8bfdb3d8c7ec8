"""SIMULATED demonstrations for behaviour cloning: a scripted expert (lamina/simulation/experts.py) acts
in a Gymnasium environment and every step becomes a row. Recorded from a seed on first use, then read
from ~/.cache/lamina/datasets/demonstrations/."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lamina.datasets.tabular import CACHE, save_arrays
from lamina.errors import DataError

VERSION = 1  # bump when the experts or the recording change, so that old cached rows are not read
INSTALL = "pip install 'lamina[simulation]'  (gymnasium and mujoco; demonstrations are then recorded on first use)"
CACHE_FOLDER = CACHE / "demonstrations"
# name -> (environment, episodes, DART noise injected into the executed actions, noise of a shaky expert)
SETS = {
    "cartpole_demonstrations": ("CartPole-v1", 20, 0.2, 0.0),
    "reacher_demonstrations": ("Reacher-v5", 200, 0.2, 0.0),
    "reacher_noisy_demonstrations": ("Reacher-v5", 200, 0.0, 0.5),
}
# Columns of every set that record the run, not what the policy sees: a policy acting in its environment
# (lamina rollout) is fed the observation alone, so a model that also reads these could not act. The step
# number would be known when acting, but rollout does not feed it; declare it in a config to try it.
BOOKKEEPING = {"episode": "which recorded episode the row is from; a policy acting is fed the observation alone",
               "step": "the row's position in its episode; a policy acting is fed the observation alone",
               "reward": "the reward the action earned, known only after acting"}


def cache_file(name: str, seed: int = 0) -> Path:
    _, episodes, injected, shaky = SETS[name]
    return CACHE_FOLDER / f"v{VERSION}-{name}-episodes{episodes}-seed{seed}-dart{injected:g}-shaky{shaky:g}.npz"


def locate(name: str) -> str | None:
    path = cache_file(name)
    return str(path) if path.is_file() else None


def _save(path: Path, table: pd.DataFrame) -> None:
    """The rows as one compressed .npz (no pickled objects), written beside and renamed into place."""
    arrays = {"episode": table["episode"].to_numpy(np.int64), "step": table["step"].to_numpy(np.int64),
              "observation": np.array(table["observation"].to_list(), dtype=np.float64),
              "action": np.array(table["action"].to_list()),
              "reward": table["reward"].to_numpy(np.float64), "split": table["split"].to_numpy(dtype=str)}
    save_arrays(path, arrays)


def _read(path: Path) -> pd.DataFrame:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            columns = {key: arrays[key] for key in ("episode", "step", "observation", "action", "reward", "split")}
        rows = len(columns["episode"])
        if any(len(values) != rows for values in columns.values()) or columns["observation"].ndim != 2:
            raise ValueError("columns of different lengths")
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"cached demonstrations '{path}' cannot be read ({error}); delete the file so that they "
                        f"are recorded again") from None
    action = columns["action"]
    return pd.DataFrame({"episode": columns["episode"], "step": columns["step"],
                         "observation": columns["observation"].tolist(),
                         "action": action.tolist() if action.ndim == 2 else action,
                         "reward": columns["reward"], "split": columns["split"].astype(object)})


def demonstrations(name: str, seed: int = 0) -> pd.DataFrame:
    """The named set's rows (see SETS), recorded once and cached."""
    from lamina.simulation.demonstrations import record

    path = cache_file(name, seed)
    if path.is_file():
        return _read(path)
    environment, episodes, injected, shaky = SETS[name]
    print(f"{name}: recording {episodes} SIMULATED expert episodes in {environment} (once; cached in {path})",
          file=sys.stderr, flush=True)
    table = record(environment, episodes, seed, injected=injected, shaky=shaky)
    try:
        _save(path, table)
    except OSError as error:  # a read-only home still gets its rows, recorded again next time
        print(f"{name}: could not cache the demonstrations in {path} ({error})", file=sys.stderr, flush=True)
    return table

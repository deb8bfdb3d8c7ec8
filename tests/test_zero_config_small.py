"""init-config on small sets and on demonstrations: the training it writes follows the training rows
(enough optimizer steps, early stopping that waits the whole run), and a named data set's bookkeeping
columns (episode, step, reward of demonstrations) are left out of the inputs."""
import numpy as np
import pandas as pd
import pytest
import yaml

import lamina
from lamina import datasets
from lamina.init_config import infer_config, training_defaults


def demonstrations_like(episodes: int = 6, steps: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = episodes * steps
    observation = rng.normal(size=(rows, 4))
    return pd.DataFrame({"episode": np.repeat(np.arange(episodes), steps), "step": np.tile(np.arange(steps), episodes),
                         "observation": observation.tolist(), "action": np.tanh(observation[:, :2]).tolist(),
                         "reward": rng.normal(size=rows),
                         "split": np.repeat(["train"] * (episodes - 2) + ["validation", "test"], steps)})


@pytest.fixture
def demonstrations(monkeypatch):
    """A named data set of demonstrations declaring the bookkeeping columns the real ones declare."""
    from lamina.datasets import control

    monkeypatch.setitem(datasets.REGISTRY, "tiny_demonstrations", datasets.Dataset(
        name="tiny_demonstrations", task="behaviour cloning", target="action", description="", source="",
        licence="", install="", loader=demonstrations_like, locate=lambda: None, simulated=True,
        bookkeeping=control.BOOKKEEPING))
    return "tiny_demonstrations"


def test_bookkeeping_columns_of_a_data_set_are_not_inputs(demonstrations):
    frame = datasets.load(demonstrations)
    config, notes = infer_config(frame, ["action"])
    assert [entry["name"] for entry in config["inputs"]] == ["observation"]
    assert config["split"] == {"method": "column", "column": "split"}
    for column in ("episode", "step", "reward"):
        assert any(note.startswith(f"'{column}': left out: bookkeeping column of the data set") for note in notes)
    lamina.load_config(config)


def test_the_same_columns_in_a_users_file_are_sniffed_as_usual(demonstrations):
    """Only the data set declares bookkeeping: a table of the same columns from elsewhere keeps them."""
    config, _ = infer_config(demonstrations_like(), ["action"])
    assert {"episode", "step", "reward", "observation"} <= {entry["name"] for entry in config["inputs"]}


def test_a_bookkeeping_column_named_as_the_target_is_still_the_output(demonstrations):
    config, _ = infer_config(datasets.load(demonstrations), ["reward"])
    assert config["outputs"][0]["name"] == "reward"
    assert "episode" not in {entry["name"] for entry in config["inputs"]}


def test_init_config_command_honours_the_bookkeeping_of_a_named_set(demonstrations, capsys):
    from lamina import cli

    cli.main(["init-config", "--data", demonstrations, "--target", "action"])
    printed = capsys.readouterr().out
    assert "# 'step': left out: bookkeeping column of the data set" in printed
    config = lamina.load_config(yaml.safe_load(printed))
    assert [feature.name for feature in config.inputs] == ["observation"]


def test_every_demonstration_set_declares_its_bookkeeping():
    for name, entry in datasets.REGISTRY.items():
        if entry.task == "behaviour cloning":
            assert set(entry.bookkeeping) == {"episode", "step", "reward"}, name
    # the word is the digit itself, and `source` marks the real test recordings
    assert {"word", "source"} <= set(datasets.REGISTRY["spoken_digits_synthetic"].bookkeeping)


# ---- the training init-config writes ----------------------------------------------------------------

def test_a_large_table_keeps_thirty_epochs_and_runs_them_all():
    whole_run = {"patience": 30}  # the epoch of least validation loss is kept, however late it comes
    assert training_defaults(8_000) == {"epochs": 30, "batch_size": 256, "learning_rate": "auto",
                                        "early_stopping": whole_run}
    assert training_defaults(1_000) == {"epochs": 30, "batch_size": 32, "learning_rate": "auto",
                                        "early_stopping": whole_run}


@pytest.mark.parametrize("rows", [32, 243, 512, 900])
def test_a_small_set_trains_for_enough_steps(rows):
    training = training_defaults(rows)
    steps = -(-rows // training["batch_size"]) * training["epochs"]
    assert training["batch_size"] == 16 if rows < 512 else training["batch_size"] >= 16
    assert 30 < training["epochs"] <= 60 and (steps >= 900 or training["epochs"] == 60)
    assert training["early_stopping"] == {"patience": training["epochs"]}
    lamina.load_config({"inputs": [{"name": "x", "type": "number"}], "outputs": [{"name": "y", "type": "number"}],
                        "training": training})


def test_the_steps_count_the_rows_the_split_column_trains_on():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=640), "y": rng.choice(["a", "b"], 640),
                          "split": ["train"] * 243 + ["validation"] * 27 + ["test"] * 370})
    assert infer_config(frame, ["y"])[0]["training"] == training_defaults(243)
    assert infer_config(frame.drop(columns="split"), ["y"])[0]["training"] == training_defaults(512)


def test_a_types_suggested_training_is_kept_as_it_is():
    suggested = {"batch_size": 16, "epochs": 30}
    assert training_defaults(160, suggested) == {**suggested, "learning_rate": "auto"}


def test_zero_config_learns_a_tiny_sequence_set():
    """40 training rows (3 steps an epoch): the defaults as written, no epochs overridden."""
    rng = np.random.default_rng(0)
    labels = rng.choice(["up", "down"], 64)
    cells = [";".join(",".join(f"{value:.3f}" for value in (np.arange(12) * (1 if label == "up" else -1) * 0.1
                                                                  + rng.normal(0, 0.3, 12) + channel))
                      for channel in range(3)) for label in labels]
    frame = pd.DataFrame({"series": cells, "label": labels,
                          "split": ["train"] * 40 + ["validation"] * 8 + ["test"] * 16})
    config, _ = infer_config(frame, ["label"])
    assert config["inputs"][0]["type"] == "timeseries" and config["training"]["epochs"] == 60
    config["training"]["seed"] = 0
    model = lamina.Model(config).fit(frame, quiet=True)
    assert model.metrics_["test"]["label"]["accuracy"] >= 0.85  # chance is about 0.5

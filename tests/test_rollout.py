"""Behaviour cloning in simulation: the scripted experts, recorded demonstrations, a trained model run as a
policy (inputs fed from the observation by name, actions clipped with one warning), rollout.json in the
model folder and its report, the errors, and one tiny DAgger round. Short rollouts: a few episodes."""
import importlib.util
import json
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from lamina import artifact  # noqa: E402
from lamina.api import Model, load  # noqa: E402
from lamina.cli import main  # noqa: E402
from lamina.config import load_config  # noqa: E402
from lamina.errors import ConfigError  # noqa: E402
from lamina.simulation import environments, policy as policies, rollout  # noqa: E402
from lamina.simulation.dagger import dagger  # noqa: E402
from lamina.simulation.demonstrations import record, split_episodes  # noqa: E402

HAS_MUJOCO = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None,
                                reason="mujoco (the Reacher task's physics) is not installed")
SMALL = {"hidden": {"layers": 2, "size": 64}, "split": {"method": "column", "column": "split"}}


def cartpole_config(**simulation) -> dict:
    return {"inputs": [{"name": "observation", "type": "vector"}], "outputs": [{"name": "action", "type": "category"}],
            "training": {"epochs": 8, "batch_size": 128, "learning_rate": 0.01, "early_stopping": None}, **SMALL,
            "simulation": {"environment": "CartPole-v1", "episodes": 4, "seed": 1000, **simulation}}


@pytest.fixture(scope="module")
def cartpole_rows():
    return record("CartPole-v1", 6, seed=0, injected=0.2)  # 3,000 rows of an LQR controller, DART noise


@pytest.fixture(scope="module")
def cartpole(cartpole_rows, tmp_path_factory):
    """A clone of the CartPole expert, saved (trained once for the module: about 5 s)."""
    folder = tmp_path_factory.mktemp("cartpole") / "model"
    Model(cartpole_config()).fit(cartpole_rows, output_dir=folder, quiet=True)
    return folder


def test_the_experts_solve_their_tasks():
    cartpole = rollout.run(policies.ExpertPolicy("CartPole-v1"), "CartPole-v1", [1000, 1001, 1002])
    assert [episode.reward for episode in cartpole] == [500.0] * 3
    assert all(episode.measures["success"] == 1.0 for episode in cartpole)


@HAS_MUJOCO
def test_the_reacher_expert_ends_on_the_target_and_beats_doing_nothing():
    seeds = [1000, 1001, 1002, 1003]
    expert = rollout.run(policies.ExpertPolicy("Reacher-v5"), "Reacher-v5", seeds)
    space = environments.make("Reacher-v5").action_space
    zero = rollout.run(policies.ZeroPolicy(space), "Reacher-v5", seeds)
    assert all(episode.measures["final_distance_mm"] < 2.0 for episode in expert)
    assert np.mean([e.reward for e in expert]) > np.mean([e.reward for e in zero]) + 3.0


def test_demonstrations_are_seeded_rows_and_keep_whole_episodes_in_one_split():
    first = record("CartPole-v1", 5, seed=3, injected=0.2, max_steps=30)
    again = record("CartPole-v1", 5, seed=3, injected=0.2, max_steps=30)
    assert list(first.columns) == ["episode", "step", "observation", "action", "reward", "split"]
    assert first.equals(again)
    assert first.groupby("episode")["split"].nunique().max() == 1
    assert set(first["split"]) == {"train", "validation", "test"}
    assert len(first["observation"][0]) == 4 and set(first["action"]) <= {0, 1}
    assert split_episodes(3, 0).count("train") == 1 and split_episodes(2, 0) == ["train", "train"]


def test_a_cloned_cartpole_policy_balances_like_its_expert(cartpole):
    model = load(cartpole)
    result = rollout.compare(model, model.config.simulation)
    policies_ = result["policies"]
    assert policies_["expert"]["return_mean"] == 500.0
    # the expert keeps the pole up for 500 steps; zero (always push left) and random fall within ~10-60
    assert policies_["model"]["return_mean"] >= 400.0
    assert policies_["model"]["return_mean"] > policies_["random"]["return_mean"] + 300.0
    assert policies_["zero"]["return_mean"] < 20.0 and result["seeds"] == [1000, 1003]


def test_lamina_rollout_writes_rollout_json_into_the_manifest_and_the_report(cartpole, capsys):
    assert main(["rollout", "--model", str(cartpole), "--episodes", "2", "--seed", "2000"]) == 0
    out = capsys.readouterr().out
    assert "expert" in out and "random" in out and "rollout saved to" in out
    manifest = artifact.verify(cartpole)
    assert artifact.ROLLOUT in manifest["files"]
    saved = json.loads((cartpole / artifact.ROLLOUT).read_text())
    assert saved["environment"] == "CartPole-v1" and saved["seeds"] == [2000, 2001]
    assert set(saved["policies"]) == {"model", "expert", "zero", "random"}
    model = load(cartpole)
    assert model.rollout_ == saved
    from lamina import report

    assert "Rollouts in CartPole-v1" in report.build(model)
    card = (cartpole / "model_card.md").read_text()  # rewritten with the rollout
    assert "## Acting in its simulator" in card and "| expert | 500.00 ± 0.00 |" in card


def test_named_observation_components_feed_named_inputs(cartpole_rows):
    rows = cartpole_rows.assign(cart=[values[:2] for values in cartpole_rows["observation"]],
                                pole=[values[2:] for values in cartpole_rows["observation"]])
    config = cartpole_config(inputs={"cart": [0, 1], "pole": "2:4"})
    config["inputs"] = [{"name": "cart", "type": "vector"}, {"name": "pole", "type": "vector"}]
    config["training"]["epochs"] = 1
    model = Model(config).fit(rows.head(600), quiet=True)
    space = environments.make("CartPole-v1").action_space
    policy = policies.ModelPolicy(model, model.config.simulation, space, 4)
    assert policy.slices == {"cart": [0, 1], "pole": [2, 3]}
    actions = policy.act(np.zeros((3, 4)))
    assert len(actions) == 3 and all(action in (0, 1) for action in actions)
    config["simulation"]["inputs"] = {"cart": [0, 1]}
    with pytest.raises(ConfigError, match="input 'pole' cannot be fed from the observation"):
        policies.ModelPolicy(Model(config).fit(rows.head(600), quiet=True), load_config(config).simulation, space, 4)
    with pytest.raises(ConfigError, match="select nothing in an observation of 4 components"):
        policies.observation_slices({"cart": [0, 7]}, 4)
    config["simulation"]["inputs"] = {"cart": [0, 1, 2], "pole": [3]}  # the model learned 2 components each
    short = policies.ModelPolicy(model, load_config(config).simulation, space, 4)
    with pytest.raises(ConfigError, match="observation cannot feed the model's inputs .*simulation.inputs"):
        short.act(np.zeros((2, 4)))


@HAS_MUJOCO
def test_continuous_actions_are_clipped_with_one_counted_warning():
    rows = record("Reacher-v5", 4, seed=0, max_steps=10)
    rows["action"] = [list(np.asarray(action) * 50.0) for action in rows["action"]]  # far outside [-1, 1]
    config = {"inputs": [{"name": "observation", "type": "vector"}],
              "outputs": [{"name": "action", "type": "vector"}], "hidden": {"layers": 1, "size": 16},
              "training": {"epochs": 1, "learning_rate": 0.01},
              "simulation": {"environment": "Reacher-v5", "episodes": 2, "max_steps": 10}}
    model = Model(config).fit(rows, quiet=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = rollout.compare(model, model.config.simulation)
    clipping = [str(warning.message) for warning in caught if "clipped" in str(warning.message)]
    assert len(clipping) == 1 and result["clipped_actions"] > 0
    assert clipping[0].startswith(f"{result['clipped_actions']} of the model's {result['actions']} actions")
    assert result["policies"]["model"]["length_mean"] == 10.0

    config["outputs"] = [{"name": "action", "type": "vector"}]
    rows["action"] = [[1.0, 2.0, 3.0]] * len(rows)  # three numbers for a two-joint arm
    wrong = Model(config).fit(rows, quiet=True)
    with pytest.raises(ConfigError, match=r"gives 3 numbers per row, but the environment's actions have shape \(2,\)"):
        rollout.compare(wrong, wrong.config.simulation)


def test_clear_errors_for_environments(monkeypatch):
    with pytest.raises(ConfigError, match="unknown simulation.environment 'CartPole-v9'; did you mean 'CartPole-v1'"):
        environments.make("CartPole-v9")
    with pytest.raises(ConfigError, match="'Acrobot-v1' has no scripted expert"):
        environments.task("Acrobot-v1")
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'lamina\[simulation\]'"):
        environments.make("CartPole-v1")


def test_rollout_without_a_simulation_section_says_how_to_add_one(cartpole_rows, tmp_path, capsys):
    config = cartpole_config()
    del config["simulation"]
    config["training"]["epochs"] = 1
    Model(config).fit(cartpole_rows.head(600), output_dir=tmp_path / "model", quiet=True)
    assert "simulation" not in json.loads((tmp_path / "model" / artifact.RESOLVED).read_text())
    assert main(["rollout", "--model", str(tmp_path / "model")]) == 2
    assert "has no simulation section" in capsys.readouterr().err
    assert main(["rollout", "--model", str(tmp_path / "model"), "--environment", "CartPole-v1", "--episodes",
                 "1", "--relabel"]) == 2
    assert "--relabel applies to --dagger" in capsys.readouterr().err
    assert main(["rollout", "--model", str(tmp_path / "model"), "--environment", "CartPole-v1", "--dagger", "1"]) == 2
    assert "pass them with --data FILE" in capsys.readouterr().err  # trained on a DataFrame: nothing to read again


def test_the_simulation_section_is_validated_and_reads_back():
    config = load_config(cartpole_config())
    assert config.readable()["simulation"] == {"environment": "CartPole-v1", "episodes": 4, "seed": 1000}
    assert load_config(config.readable()).to_dict() == config.to_dict()
    bad = cartpole_config()
    bad["simulation"]["episode"] = 3
    with pytest.raises(ConfigError, match="unknown key 'episode' in simulation; did you mean 'episodes'"):
        load_config(bad)


def test_one_tiny_dagger_round_adds_expert_labelled_rows(cartpole, cartpole_rows, tmp_path):
    model = load(cartpole)
    model.config.training.epochs = 1
    simulation = model.config.simulation.model_copy(update={"episodes": 2, "max_steps": 40})
    rounds = dagger(model, simulation, cartpole_rows, 1, output=tmp_path / "dagger", relabel=True)
    assert len(rounds) == 1 and rounds[0]["round"] == 1
    assert rounds[0]["rows"] == len(cartpole_rows) + rounds[0]["visited_rows"] and rounds[0]["visited_rows"] > 0
    assert (tmp_path / "dagger" / "weights.safetensors").is_file()
    assert np.isfinite(rounds[0]["return_mean"])

"""lamina tune: the tune section's checks, a small search with pruning, the test rows kept out of
the search, a study shared through a storage, and the command line."""
from __future__ import annotations

import pathlib

import pandas as pd
import pytest
import yaml

pytest.importorskip("optuna")

import lamina  # noqa: E402
from lamina import api, tune as tuning  # noqa: E402
from lamina.cli import main  # noqa: E402
from lamina.config import load_config  # noqa: E402
from lamina.data import split_rows  # noqa: E402
from lamina.errors import ConfigError  # noqa: E402

from helpers_data import config, people  # noqa: E402

GOOD, BAD = 0.05, 1e-6  # learning rates: one learns in an epoch, one does not move the weights at all


def searched(tune: dict | None = None, **training) -> dict:
    """A tiny config (hidden layers of 8, 3 epochs) with a tune section."""
    result = config(hidden={"layers": 1, "size": 8}, training={"epochs": 3, **training})
    result["tune"] = tune or {"hidden.size": [4, 8], "training.learning_rate": {"low": 1e-3, "high": 5e-2, "log": True},
                              "search": {"seed": 0}}
    return result


def enqueue(storage: str, name: str, *rates: float) -> None:
    """Trials that run first, in this order (Optuna's enqueue_trial), so pruning is certain."""
    import optuna

    study = optuna.create_study(storage=tuning.open_storage(storage, None), study_name=name, direction="minimize")
    for rate in rates:
        study.enqueue_trial({"training.learning_rate": rate})


def test_search_prunes_writes_the_leaderboard_and_trains_the_best(tmp_path):
    output = tmp_path / "search"
    storage = str(tmp_path / "study.log")
    enqueue(storage, "lamina", GOOD, BAD, BAD, GOOD)
    section = {"training.learning_rate": [GOOD, BAD], "search": {"metric": "loss", "startup_trials": 1}}
    result = tuning.tune(searched(section), people(300), trials=4, output=output, storage=storage, quiet=True)

    board = result["leaderboard"]
    assert len(board) == 4
    states = {row["trial"]: row["state"] for row in board}
    assert states == {0: "complete", 1: "pruned", 2: "pruned", 3: "complete"}
    assert result["pruned"] == 2 and result["direction"] == "minimize"
    assert all(row["epochs"] == 1 for row in board if row["state"] == "pruned")
    assert board[0]["state"] == "complete" and board[0]["training.learning_rate"] == GOOD
    assert len(pd.read_csv(output / "leaderboard.csv")) == 4
    assert "<table" in (output / "leaderboard.html").read_text()
    best = load_config(yaml.safe_load((output / "best.yaml").read_text()))
    assert best.training.learning_rate == GOOD and best.tune is None
    saved = lamina.load(output / "model")
    frame = people(20, seed=5)
    pd.testing.assert_frame_equal(saved.predict(frame), result["model"].predict(frame))
    assert set(result["metrics"]) == {"validation", "test"}
    assert len(saved.tuning_["leaderboard"]) == 4  # kept with the model, and shown in its report
    from lamina import report

    page = report.write(saved, tmp_path / "report.html")
    assert "Hyperparameter search" in pathlib.Path(page).read_text()


def test_the_test_rows_never_reach_a_trial(tmp_path, monkeypatch):
    """Trials receive the training and validation rows only, split exactly as fit splits them; the
    test rows reach the one final fit of the chosen config. The trial's value is the best validation
    value of its history: the final model, trained on the same split, shows it again."""
    data = people(300)
    seen: list[tuple[bool, set]] = []
    fit = api.Model.fit

    def recording(self, rows, **options):
        seen.append((options.get("on_epoch") is not None, set(rows.index)))
        return fit(self, rows, **options)

    monkeypatch.setattr(api.Model, "fit", recording)
    result = tuning.tune(searched(), data, trials=3, output=tmp_path / "search", quiet=True)

    parts = split_rows(data, load_config(config()))
    test_rows = set(data.index[parts["test"]])
    assert len(test_rows) == 30
    trials, final = [rows for searching, rows in seen if searching], [rows for searching, rows in seen if not searching]
    assert len(trials) == 3 and len(final) == 1
    for rows in trials:
        assert not rows & test_rows
        assert rows == set(data.index) - test_rows
    assert final[0] == set(data.index)
    history = result["model"].training_["history"]
    assert result["best"]["value"] == pytest.approx(max(r["validation"]["income"]["roc_auc"] for r in history))


def test_the_objective_reads_validation_only_and_prunes(tmp_path):
    """A trial that Optuna prunes after epoch 2 stops training there; the value is the best of the
    reported validation values."""
    import optuna

    raw, search = tuning.read_search(searched())
    rows = tuning.search_rows(load_config(raw), people(300))
    assert set(rows[tuning.SPLIT_COLUMN]) == {"train", "validation"}
    study = optuna.create_study(direction=search.direction, pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    reported: dict = {}
    trial.report = lambda value, step: reported.__setitem__(step, value)
    trial.should_prune = lambda: len(reported) == 2
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        tuning.objective(trial, raw, search, rows)
    assert list(reported) == [1, 2]
    assert trial.user_attrs["epochs"] == 2 and trial.user_attrs["best"] == max(reported.values())


@pytest.mark.parametrize("section, message", [
    ({"hidden.sise": [8]}, "tune.hidden.sise: unknown key 'sise' in hidden; did you mean 'size'?"),
    ({"inputs.agee.normalize": ["log"]}, "tune.inputs.agee.normalize: no input feature named 'agee'; did you mean "
                                         "'age'?"),
    ({"inputs.age.normalise": ["log"]}, "unknown key 'normalise' in inputs.age; did you mean 'normalize'?"),
    ({"outputs.income.wieght": [1.0]}, "unknown key 'wieght' in outputs.income; did you mean 'weight'?"),
    ({"trainin.epochs": [1]}, "unknown config section 'trainin'; did you mean 'training'?"),
    ({"training.early_stopping.patiense": [2]}, "unknown key 'patiense' in training.early_stopping; did you mean "
                                                "'patience'?"),
    ({"hidden.size.width": [2]}, "'hidden.size' holds a value, not keys"),
    ({"split.ratios": [[0.8, 0.1, 0.1]]}, "the split cannot vary during a search"),
    ({"hidden.size": {"low": 4, "hihg": 8}}, "unknown key 'hihg' in tune.hidden.size; did you mean 'high'?"),
    ({"hidden.size": {"low": 8, "high": 4}}, "tune.hidden.size: low must not exceed high"),
    ({"hidden.size": {"low": 8}}, "tune.hidden.size: missing key 'high'"),
    ({"training.learning_rate": {"low": 0, "high": 1, "log": True}}, "log: true needs low > 0"),
    ({"hidden.size": 8}, "tune.hidden.size: expected a list of choices"),
    ({"hidden.size": [0, 8]}, "tune.hidden.size: the value 0 makes the config invalid: hidden.size:"),
    ({"hidden.size": [8], "search": {"prunner": "median"}}, "unknown key 'prunner' in tune.search; did you mean "
                                                            "'pruner'?"),
    ({"hidden.size": [8], "search": {"pruner": "hyperband"}}, "tune.search.pruner:"),
    ({"hidden.size": [8], "search": {"metric": "incme.roc_auc"}}, "did you mean 'income'?"),
    ({"search": {"seed": 1}}, "names no config path to vary"),
])
def test_a_bad_tune_section_names_the_key(section, message):
    with pytest.raises(ConfigError) as error:
        tuning.read_search(searched(section))
    assert message in str(error.value)


def test_paths_by_name_or_position_and_the_default_metric():
    raw, search = tuning.read_search(searched({"inputs.0.normalize": ["log"], "outputs.income.weight": [2.0],
                                               "training.early_stopping.patience": {"low": 1, "high": 3}}))
    assert search.metric == "income.roc_auc" and search.direction == "maximize"
    changed = tuning.apply(raw, {"inputs.0.normalize": "log", "outputs.income.weight": 2.0,
                                 "training.early_stopping.patience": 2}, search.space)
    checked = load_config(changed)
    assert checked.inputs[0].normalize == "log" and checked.outputs[0].weight == 2.0
    assert checked.training.early_stopping.patience == 2
    assert "tune" not in load_config(config()).to_dict()  # saved configs stay as they were
    written = yaml.safe_load("tune: {training.learning_rate: {low: 1e-4, high: 1e-2, log: true}}")  # text to YAML
    _, search = tuning.read_search({**config(), **written})
    assert (search.space["training.learning_rate"].range.low, search.space["training.learning_rate"].range.high) \
        == (1e-4, 1e-2)
    assert lamina.Model(searched()).config.tune["hidden.size"] == [4, 8]  # lamina train ignores the section


def test_a_second_call_adds_trials_to_a_shared_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    first = tuning.tune(searched(), people(300), trials=2, output=tmp_path / "a", storage=storage,
                        study_name="shared", quiet=True)
    second = tuning.tune(searched(), people(300), trials=1, output=tmp_path / "b", storage=storage,
                         study_name="shared", quiet=True)
    assert len(first["leaderboard"]) == 2
    assert sorted(row["trial"] for row in second["leaderboard"]) == [0, 1, 2]
    other = searched({"hidden.size": [4, 16]})
    with pytest.raises(ConfigError, match="made by another tune section"):
        tuning.tune(other, people(300), trials=1, output=tmp_path / "c", storage=storage, study_name="shared")


def test_command_line_with_two_worker_processes(tmp_path, capsys):
    data = tmp_path / "people.csv"
    people(300).to_csv(data, index=False)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(searched()), "utf-8")
    code = main(["tune", "--config", str(path), "--data", str(data), "--trials", "2", "--jobs", "2",
                 "--output", str(tmp_path / "out"), "--quiet", "--no-report"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "2 trials in the study" in printed.out and "test" in printed.out
    assert len(pd.read_csv(tmp_path / "out" / "leaderboard.csv")) == 2
    assert (tmp_path / "out" / "model" / "weights.safetensors").is_file()

    path.write_text(yaml.safe_dump(searched({"hidden.szie": [8]})), "utf-8")
    assert main(["tune", "--config", str(path), "--data", str(data), "--output", str(tmp_path / "bad")]) == 2
    assert "tune.hidden.szie: unknown key 'szie' in hidden; did you mean 'size'?" in capsys.readouterr().err


def test_a_combination_that_is_not_valid_fails_its_trial_only(tmp_path):
    """Each value alone makes a valid config, two together do not (sampling_ratio needs sampling):
    that trial is marked failed with the message, and the search goes on; when no trial completes,
    the search ends in that message."""
    import optuna

    section = {"outputs.income.sampling": [None, "over"], "outputs.income.sampling_ratio": [0.5],
               "search": {"seed": 0}}
    raw = searched(section)
    raw["outputs"][0]["sampling"] = "over"
    output = tmp_path / "search"
    output.mkdir()
    study = optuna.create_study(storage=tuning.open_storage(None, output), study_name="lamina", direction="maximize")
    study.enqueue_trial({"outputs.income.sampling": "over"})
    study.enqueue_trial({"outputs.income.sampling": None})
    result = tuning.tune(raw, people(300), trials=2, output=output, quiet=True)
    failed = [row for row in result["leaderboard"] if row["state"] == "failed"]
    assert len(failed) == 1 and "sampling_ratio needs sampling" in failed[0]["error"]
    assert result["best"]["params"]["outputs.income.sampling"] == "over"

    study = optuna.create_study(storage=tuning.open_storage(None, tmp_path / "none"), study_name="lamina",
                                direction="maximize")
    study.enqueue_trial({"outputs.income.sampling": None})
    with pytest.raises(ConfigError, match="no trial of the search completed; the first error: .*sampling_ratio"):
        tuning.tune(raw, people(300), trials=1, output=tmp_path / "none", quiet=True)

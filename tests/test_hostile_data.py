"""Hostile data for train, evaluate and predict: files that cannot be read, columns pandas would read
differently chunk by chunk, values a model never saw, true/false given as numbers, and a predict
killed mid-write. Each ends in one `lamina: error:` line naming the file (exit 2), or in exactly the
predictions of an undisturbed run."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as arrow
import pyarrow.parquet as parquet
import pytest
import yaml

import lamina
from lamina.cli import main
from lamina.errors import DataError
from lamina.stream import predict_file

from helpers_data import write_table

CODES = ["007", "012", "100", "A7"]  # '007' is not the number 7: pandas guesses it is, chunk by chunk
CONFIG = {
    "inputs": [{"name": "age", "type": "number"}, {"name": "code", "type": "category"},
               {"name": "member", "type": "binary"}],
    "hidden": {"layers": 1, "size": 16},
    "outputs": [{"name": "income", "type": "binary"}],
    "training": {"epochs": 6, "batch_size": 64, "learning_rate": 0.02},
}
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model: fast, and steady on a busy machine


def coded(rows: int, seed: int = 0, numeric_first: int = 0) -> pd.DataFrame:
    """Rows whose code decides the income. The first `numeric_first` rows hold only codes that look
    like numbers, so a chunk of them alone would be read as numbers by a guessing reader."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(CODES, rows).astype(object)
    codes[:numeric_first] = rng.choice(CODES[:3], numeric_first)
    return pd.DataFrame({"age": rng.uniform(18, 80, rows).round(1), "code": codes,
                         "member": rng.choice(["yes", "no"], rows),
                         "income": np.where(np.isin(codes, ["007", "A7"]), "high", "low")})


def run(argv: list) -> tuple[int, str, str]:
    """main(argv) in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A model trained by `lamina train` on a CSV file of codes with leading zeros."""
    root = tmp_path_factory.mktemp("hostile")
    paths = {"root": root, "data": write_table(coded(300), root / "train.csv"), "config": root / "model.yaml",
             "model": root / "model"}
    paths["config"].write_text(yaml.safe_dump(CONFIG))
    code, _, err = run(["train", "--config", paths["config"], "--data", paths["data"], "--output", paths["model"],
                        "--quiet", "--no-compare", "--no-report"])
    assert code == 0, err
    return paths


@pytest.fixture(scope="module")
def model(project) -> lamina.Model:
    return lamina.load(project["model"])


def read_output(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True) \
        if path.suffix == ".jsonl" else pd.read_csv(path)


# --- columns read as their type wants, identically in every chunk -----------------------------

def test_training_reads_codes_as_text(model):
    vocabulary = model.inputs_[1].stats["vocabulary"]
    assert {"007", "012", "100", "A7"} <= set(vocabulary) and "7" not in vocabulary


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_chunked_predictions_equal_whole_ones(model, tmp_path, suffix, chunk):
    frame = coded(101, seed=3, numeric_first=60)
    data = write_table(frame.drop(columns="income"), tmp_path / f"rows{suffix}")
    expected = model.predict(frame)  # a DataFrame of strings: nothing guessed
    rows, _ = predict_file(model, data, tmp_path / "chunked.csv", chunk_rows=chunk, progress=False)
    predict_file(model, data, tmp_path / "whole.csv", chunk_rows=10_000, progress=False)
    chunked, whole = read_output(tmp_path / "chunked.csv"), read_output(tmp_path / "whole.csv")
    assert rows == 101
    assert chunked["income"].tolist() == whole["income"].tolist() == expected["income"].tolist()
    assert np.allclose(chunked["income_probability"], expected["income_probability"], rtol=0, atol=1e-5)
    assert np.allclose(whole["income_probability"], expected["income_probability"], rtol=0, atol=1e-5)


def test_train_and_predict_read_the_file_alike(tmp_path):
    frame = coded(120, numeric_first=120)  # every code looks like a number: pandas alone reads 7 for 007
    data = write_table(frame, tmp_path / "numeric.csv")
    trained = lamina.Model(CONFIG).fit(data, quiet=True)
    assert {"007", "012", "100"} <= set(trained.inputs_[1].stats["vocabulary"])
    from_file, from_strings = trained.predict(data), trained.predict(frame)
    assert from_file["income"].tolist() == from_strings["income"].tolist()
    assert np.allclose(from_file["income_probability"], from_strings["income_probability"], rtol=0, atol=1e-6)


# --- files that cannot be read: one line naming the file, for every command -------------------

def hostile_files(root: Path) -> dict[str, Path]:
    good = coded(20)
    files = {"empty": root / "empty.csv", "header only": root / "header.csv", "unclosed quote": root / "quote.csv",
             "not utf-8": root / "latin1.csv", "damaged parquet": root / "damaged.parquet",
             "cut parquet": root / "cut.parquet", "bad json": root / "bad.jsonl",
             "two columns csv": root / "twice.csv", "two columns parquet": root / "twice.parquet",
             "two keys jsonl": root / "twice.jsonl"}
    files["empty"].write_bytes(b"")
    files["header only"].write_text("age,code,member,income\n")
    files["unclosed quote"].write_text('age,code,member,income\n30,"007,yes,high\n40,012,no,low\n')
    files["not utf-8"].write_bytes("age,cöde,member,income\n30,007,yes,high\n".encode("latin-1"))
    whole = write_table(good, root / "whole.parquet").read_bytes()
    files["damaged parquet"].write_bytes(whole[:4] + bytes(len(whole) - 8) + whole[-4:])
    files["cut parquet"].write_bytes(whole[: len(whole) // 2])
    files["bad json"].write_text('{"age": 30, "code": "007", "member": "yes", "income": "high"}\n{"age": 4\n')
    files["two columns csv"].write_text("age,code,member,income,code\n30,007,yes,high,012\n")
    table = arrow.Table.from_pandas(good.assign(extra=good["member"]), preserve_index=False)
    parquet.write_table(table.rename_columns(["age", "code", "member", "income", "member"]),
                        files["two columns parquet"])
    files["two keys jsonl"].write_text('{"age": 30, "code": "007", "member": "yes", "income": "high", "age": 3}\n')
    return files


EXPECTED = {"empty": "is empty", "header only": "has no rows", "unclosed quote": 'quote (") opened on line 2',
            "not utf-8": "line 1 (byte 5) is not UTF-8", "damaged parquet": "cannot read",
            "cut parquet": "cannot read", "bad json": "cannot read", "two columns csv": "two columns named 'code'",
            "two columns parquet": "two columns named 'member'", "two keys jsonl": "two columns named 'age'"}


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
@pytest.mark.parametrize("case", list(EXPECTED))
def test_hostile_file_is_one_error_line(project, tmp_path, command, case):
    path = hostile_files(tmp_path)[case]
    output = tmp_path / "out" / "predictions.csv"
    output.parent.mkdir()
    argv = {"train": ["train", "--config", project["config"], "--data", path, "--output", output.parent / "model",
                      "--quiet", "--no-compare", "--no-report"],
            "evaluate": ["evaluate", "--model", project["model"], "--data", path],
            "predict": ["predict", "--model", project["model"], "--data", path, "--output", output,
                        "--chunk-size", "1"]}[command]
    code, out, err = run(argv)
    assert code == 2 and out == "", err
    assert err.startswith("lamina: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert path.name in err and EXPECTED[case] in err
    assert not any(output.parent.iterdir()) or command == "train"  # predict left no file behind


def test_a_dataframe_with_two_columns_of_one_name(model):
    frame = coded(5)
    frame.insert(1, "dupe", frame["member"])
    frame.columns = ["age", "member", "code", "member", "income"]
    for call in (lambda: model.predict(frame), lambda: model.evaluate(frame),
                 lambda: lamina.Model(CONFIG).fit(frame, quiet=True)):
        with pytest.raises(DataError, match="the DataFrame has two columns named 'member' \\(columns 2 and 4\\)"):
            call()


# --- values a model never saw, and true/false as numbers --------------------------------------

@pytest.mark.parametrize("value", ["maybe", "Yes"])
def test_unseen_binary_value_is_an_error_naming_row_column_and_values(model, value):
    frame = coded(4)
    frame.loc[2, "member"] = value
    expected = f"column 'member' row 2: '{value}' is not a value seen in training \\('no' or 'yes'\\)"
    for call in (lambda: model.predict(frame), lambda: model.evaluate(frame)):
        with pytest.raises(DataError, match=expected):
            call()


def test_missing_binary_values_stay_missing(model):
    frame = coded(4)
    frame["member"] = ["", None, np.nan, "yes"]
    assert np.isfinite(model.predict(frame)["income_probability"]).all()


def test_a_binary_seen_with_one_value_reads_any_other_as_not_that_one():
    frame = coded(60)
    frame["member"] = "yes"  # e.g. an anomaly model's normal rows: the other value only comes later
    trained = lamina.Model(CONFIG).fit(frame, quiet=True)
    member = trained.inputs_[2]
    assert member.transform(pd.Series(["yes", "no", None])).tolist()[:2] == [1.0, 0.0]


def test_unseen_binary_value_through_the_cli_names_its_line(project, tmp_path):
    frame = coded(30).drop(columns="income")
    frame.loc[17, "member"] = "maybe"
    data = write_table(frame, tmp_path / "rows.csv")
    code, _, err = run(["predict", "--model", project["model"], "--data", data, "--output", tmp_path / "p.csv",
                        "--chunk-size", "5"])
    assert code == 2 and "column 'member' row 17 (line 19 of rows.csv): 'maybe' is not a value seen" in err
    assert not (tmp_path / "p.csv").exists()


def test_true_false_in_a_number_column_is_an_error(project, model, tmp_path):
    rows = [{"age": 30.5, "code": "007", "member": "yes"}, {"age": True, "code": "012", "member": "no"}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, _, err = run(["predict", "--model", project["model"], "--data", data])
    assert code == 2 and "column 'age' row 1 (line 2 of rows.jsonl): True is a true/false value" in err
    flags = coded(4).assign(age=[True, False, True, False])
    with pytest.raises(DataError, match="column 'age' row 0: True is a true/false value, not a number"):
        model.predict(flags)
    with pytest.raises(DataError, match="type: binary"):
        lamina.Model(CONFIG).fit(coded(40).assign(age=np.arange(40) % 2 == 0), quiet=True)


# --- a predict killed mid-write leaves no output; a rerun writes it whole ----------------------

# `lamina` in a child process that turns SIGINT into KeyboardInterrupt: Python does so by itself only
# when SIGINT is not ignored at its start, and it is when the tests run in the background
LAMINA = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                                "from lamina.cli import main; sys.exit(main())"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_predict_killed_mid_way_then_rerun(project, model, tmp_path, how):
    data = write_table(coded(60_000, seed=5).drop(columns="income"), tmp_path / "many.csv")
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "predictions.csv"
    arguments = ["predict", "--model", project["model"], "--data", data, "--output", target, "--chunk-size", "200",
                 "--quiet"]
    process = subprocess.Popen(LAMINA + [str(argument) for argument in arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    try:
        deadline = time.monotonic() + 120
        while not any(folder.iterdir()) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # until the first chunk is written: it is then mid-way through 300 chunks
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(getattr(signal, how))
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert not target.exists()
    if how == "SIGINT":
        assert process.returncode == 130 and "Traceback" not in err, err
        assert "interrupted; nothing was written to --output" in err and "--resume" not in err
        assert not any(folder.iterdir())  # the partial file was removed too
    code, out, err = run(arguments)
    assert code == 0 and "wrote 60000 predictions" in out, err
    assert [path.name for path in folder.iterdir()] == ["predictions.csv"]  # a leftover partial was replaced
    written, expected = pd.read_csv(target), model.predict(data)
    assert written["income"].tolist() == expected["income"].tolist()
    assert np.allclose(written["income_probability"], expected["income_probability"], rtol=0, atol=1e-5)

"""`lamina predict` on large files: read, predicted and written chunk by chunk (never more than one
chunk in memory), with the same predictions as predicting the whole table at once."""
from __future__ import annotations

import contextlib
import io
import types

import pandas as pd
import pytest

import lamina
from lamina.cli import main
from lamina.errors import DataError
from lamina.stream import predict_file

from helpers_data import config, people, write_table


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "model"
    lamina.Model(config()).fit(people(150), output_dir=path, quiet=True)
    return path


def read(path) -> pd.DataFrame:
    suffix = path.suffix
    return pd.read_parquet(path) if suffix == ".parquet" else pd.read_json(path, lines=True) \
        if suffix == ".jsonl" else pd.read_csv(path)


@pytest.mark.parametrize("source", [".csv", ".parquet", ".jsonl", ".tsv"])
@pytest.mark.parametrize("target", [".csv", ".parquet", ".jsonl"])
def test_chunks_give_the_unchunked_predictions(folder, tmp_path, source, target):
    model = lamina.load(folder)
    data = write_table(people(1050, seed=4), tmp_path / f"rows{source}")
    largest = []

    def predict(frame):  # records the largest chunk the model ever saw
        largest.append(len(frame))
        return model.predict(frame)

    rows, chunks = predict_file(types.SimpleNamespace(predict=predict, config=model.config), data,
                                tmp_path / f"out{target}", chunk_rows=200, progress=False)
    assert (rows, chunks) == (1050, 6) and max(largest) == 200
    whole = model.predict(people(1050, seed=4))
    got = read(tmp_path / f"out{target}")
    assert list(got.columns) == list(whole.columns)
    assert (got["income"] == whole["income"]).all()
    # other batch compositions: float32 sums in another order
    assert (got["income_probability"] - whole["income_probability"]).abs().max() < 1e-5


def test_cli_reports_chunks_and_errors_name_the_file_row(folder, tmp_path):
    data = write_table(people(500, seed=2), tmp_path / "rows.csv")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["predict", "--model", str(folder), "--data", str(data), "--output", str(tmp_path / "p.csv"),
                     "--chunk-size", "150", "--quiet"])
    assert code == 0 and "wrote 500 predictions" in out.getvalue() and "(4 chunks)" in out.getvalue(), err.getvalue()
    broken = people(500, seed=2).astype({"age": object})
    broken.loc[420, "age"] = "old"
    write_table(broken, tmp_path / "broken.csv")
    with pytest.raises(DataError, match=r"row 420 \(line 422 of broken.csv\): 'old' is not a number"):
        predict_file(lamina.load(folder), tmp_path / "broken.csv", tmp_path / "b.csv", chunk_rows=150, progress=False)
    assert not (tmp_path / "b.csv").exists() and not list(tmp_path.glob(".b.csv*"))  # no half-written file


def test_errors_name_the_line_of_the_file_across_chunks(folder, tmp_path):
    frame = people(40, seed=3)
    frame["age"] = frame["age"].astype(object)
    frame.loc[3, "tags"] = "a|\nb"  # a quoted cell over two lines: every later row starts a line further
    frame.loc[17, "age"] = "old"
    csv_text = frame.to_csv(index=False)
    (tmp_path / "rows.csv").write_text(csv_text.replace("\n", "\n\n", 1))  # and a blank line after the header
    with pytest.raises(DataError, match=r"column 'age' row 17 \(line 21 of rows.csv\): 'old' is not a number"):
        predict_file(lamina.load(folder), tmp_path / "rows.csv", None, chunk_rows=5, progress=False)
    lines = frame.to_json(orient="records", lines=True).splitlines()
    (tmp_path / "rows.jsonl").write_text("\n".join(lines[:10] + ["", ""] + lines[10:]) + "\n")
    with pytest.raises(DataError, match=r"row 17 \(line 20 of rows.jsonl\): 'old' is not a number"):
        predict_file(lamina.load(folder), tmp_path / "rows.jsonl", None, chunk_rows=5, progress=False)


def test_blank_lines_in_json_lines_are_skipped_in_every_chunk(folder, tmp_path):
    lines = people(12, seed=5).to_json(orient="records", lines=True).splitlines()
    (tmp_path / "rows.jsonl").write_text("\n".join(lines[:4] + ["", "", ""] + lines[4:]) + "\n")
    rows, _ = predict_file(lamina.load(folder), tmp_path / "rows.jsonl", tmp_path / "out.csv", chunk_rows=2,
                           progress=False)
    assert rows == 12 and len(pd.read_csv(tmp_path / "out.csv")) == 12

"""Predicting a file larger than memory: read it in chunks (CSV/TSV with pandas' chunksize, Parquet
in record batches with pyarrow, JSON lines with pandas' chunksize), predict each chunk, and append
its predictions to the output (CSV, Parquet or JSON lines) at once, under a progress bar. Memory
holds one chunk and its predictions, whatever the size of the file."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from lamina.data import READERS, read_table
from lamina.errors import DataError

CHUNK_ROWS = 50_000


def _file_kind(data: Any) -> str | None:
    """csv / tsv / parquet / jsonl for a file that can be read in chunks; None for anything else
    (a DataFrame, a data set name, a folder, a .json file holding one array)."""
    if not isinstance(data, (str, Path)) or not Path(data).is_file():
        return None
    suffixes = [suffix.lower() for suffix in Path(data).suffixes if suffix.lower() in READERS]
    if not suffixes:
        return None
    kind = READERS[suffixes[-1]]
    if kind == "jsonl" and suffixes[-1] == ".json":
        with open(data, "rb") as handle:
            if handle.read(4096).lstrip().startswith(b"["):
                return None
    return kind


def chunks(data: Any, rows: int = CHUNK_ROWS) -> tuple[Iterator[pd.DataFrame], int | None]:
    """The table in chunks of at most `rows` rows (index = row numbers in the file, so errors
    name the right row), and the total number of rows when the file says it."""
    kind = _file_kind(data)
    if kind is None:
        frame, _ = read_table(data)
        return iter([frame]), len(frame)
    if kind == "parquet":
        import pyarrow.parquet as parquet

        file = parquet.ParquetFile(data)
        batches = (batch.to_pandas() for batch in file.iter_batches(batch_size=rows))
        return _numbered(batches, data, kind), file.metadata.num_rows
    if kind == "jsonl":
        reader = pd.read_json(data, lines=True, chunksize=rows)
    else:
        reader = pd.read_csv(data, sep="\t" if kind == "tsv" else ",", skipinitialspace=True, chunksize=rows)
    return _numbered(reader, data, kind), None


def _numbered(frames, data, kind: str) -> Iterator[pd.DataFrame]:
    start = 0
    try:
        for frame in frames:
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
    except UnicodeDecodeError:
        raise DataError(f"cannot read '{data}' as {kind}: it is not UTF-8 text after row {start}; re-save it as "
                        f"UTF-8") from None
    except (ValueError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read '{data}' as {kind} after row {start}: {str(error).splitlines()[0]}") from None
    if start == 0:
        raise DataError(f"'{data}' has no rows")


class Writer:
    """Appends predictions chunk by chunk to a CSV, Parquet or JSON-lines file (by its suffix), or
    CSV to standard output. A file is written under a temporary name and renamed when complete, so
    an interrupted run never leaves a file that looks whole."""

    def __init__(self, target: str | Path | None):
        self.target = Path(target) if target else None
        suffix = self.target.suffix.lower() if self.target else ".csv"
        self.kind = "parquet" if suffix in (".parquet", ".pq") else "jsonl" if suffix in (".jsonl", ".ndjson") \
            else "csv"
        if self.target and not self.target.parent.is_dir():
            raise DataError(f"cannot write '{self.target}': folder '{self.target.parent}' does not exist; create it "
                            f"or choose another --output")
        self.partial = self.target.with_name(f".{self.target.name}.partial") if self.target else None
        self.handle, self.parquet, self.schema, self.rows = None, None, None, 0

    def write(self, predictions: pd.DataFrame) -> None:
        if self.kind == "parquet":
            import pyarrow as arrow
            import pyarrow.parquet as parquet

            table = arrow.Table.from_pandas(predictions, schema=self.schema, preserve_index=False)
            if self.parquet is None:
                self.schema = table.schema  # later chunks are cast to the first one's types
                self.parquet = parquet.ParquetWriter(self.partial, self.schema)
            self.parquet.write_table(table)
        else:
            if self.handle is None:
                self.handle = open(self.partial, "w", encoding="utf-8", newline="") if self.partial else sys.stdout
            if self.kind == "jsonl":
                text = predictions.to_json(orient="records", lines=True)
                self.handle.write(text if text.endswith("\n") else text + "\n")
            else:
                predictions.to_csv(self.handle, index=False, header=self.rows == 0)
        self.rows += len(predictions)

    def close(self, complete: bool) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.handle is not None and self.handle is not sys.stdout:
            self.handle.close()
        if self.partial is not None and self.partial.exists():
            if complete:
                os.replace(self.partial, self.target)
            else:
                self.partial.unlink()


def predict_file(model, data: Any, output: str | Path | None, chunk_rows: int = CHUNK_ROWS,
                 progress: bool = True) -> tuple[int, int]:
    """Predict every row of `data` chunk by chunk into `output`; returns (rows, chunks)."""
    from tqdm import tqdm

    if chunk_rows < 1:
        raise DataError(f"--chunk-size must be at least 1 row, got {chunk_rows}")
    frames, total = chunks(data, chunk_rows)
    writer, count, complete = Writer(output), 0, False
    try:
        with tqdm(total=total, unit=" rows", disable=not progress, file=sys.stderr, leave=False) as bar:
            for frame in frames:
                writer.write(model.predict(frame))
                bar.update(len(frame))
                count += 1
        complete = True
    finally:
        writer.close(complete)
    return writer.rows, count

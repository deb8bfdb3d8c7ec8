"""Predicting a file larger than memory: read it in chunks (CSV/TSV with pandas' chunksize, Parquet
in record batches with pyarrow, JSON lines with pandas' chunksize), predict each chunk, and append
its predictions to the output (CSV, Parquet or JSON lines) at once, under a progress bar. Memory
holds one chunk and its predictions, whatever the size of the file."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from lamina import artifact, features
from lamina.data import chunkable_format, open_table, read_errors, read_table, rows_located
from lamina.errors import DataError

CHUNK_ROWS = 50_000


def chunks(data: Any, rows: int = CHUNK_ROWS, types: dict[str, str] | None = None
           ) -> tuple[Iterator[pd.DataFrame], int | None]:
    """The table in chunks of at most `rows` rows (index = row numbers in the file, so errors
    name the right row), and the total number of rows when the file says it. `types` (from
    features.read_types) makes every chunk read a column alike. A file that cannot be read gives a
    DataError here (its header, its footer) or while iterating (a bad line further on)."""
    file_format = chunkable_format(data)
    if file_format is None:
        frame, _ = read_table(data, types)
        return (part for part in [frame]), len(frame)
    path = Path(data)
    with read_errors(path, file_format):
        frames, total = open_table(path, file_format, types, rows)
    return _numbered(frames, path, file_format), total


def _numbered(frames, path: Path, file_format: str) -> Iterator[pd.DataFrame]:
    start = 0
    with contextlib.closing(frames), read_errors(path, file_format, after=lambda: start):  # closes the file early
        for frame in frames:
            if frame.empty:  # the JSON-lines reader gives an empty chunk for a chunk of blank lines
                continue
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
    if start == 0:
        raise DataError(f"'{path}' has no rows")


class Writer:
    """Appends predictions chunk by chunk to a CSV, Parquet or JSON-lines file (by its suffix), or
    CSV to standard output. A file is written under a temporary name and renamed when complete, so
    an interrupted run never leaves a file that looks whole."""

    def __init__(self, target: str | Path | None):
        self.target = Path(target) if target else None
        suffix = self.target.suffix.lower() if self.target else ".csv"
        self.file_format = "parquet" if suffix in (".parquet", ".pq") else "jsonl" if suffix in (".jsonl", ".ndjson") \
            else "csv"
        if self.target and not self.target.parent.is_dir():
            raise DataError(f"cannot write '{self.target}': folder '{self.target.parent}' does not exist; create it "
                            f"or choose another --output")
        # a hidden name owned by this process, so a killed run's leftover is told apart and removed
        self.partial = artifact.temporary_sibling(self.target) if self.target else None
        self.handle, self.parquet, self.schema, self.rows = None, None, None, 0

    def write(self, predictions: pd.DataFrame) -> None:
        if self.file_format == "parquet":
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
            if self.file_format == "jsonl":
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
    frames, total = chunks(data, chunk_rows, features.read_types(model.config))
    writer, count, complete = Writer(output), 0, False
    try:
        with contextlib.closing(frames), tqdm(total=total, unit=" rows", disable=not progress, file=sys.stderr,
                                              leave=False) as bar:
            for frame in frames:
                with rows_located(data):
                    predictions = model.predict(frame)
                writer.write(predictions)
                bar.update(len(frame))
                count += 1
        complete = True
    finally:
        writer.close(complete)
    return writer.rows, count

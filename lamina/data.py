"""Reading tables (CSV, Parquet, JSON lines, DataFrames, named data sets), splitting them, and
turning columns into model-ready tensors (batching them lives in lamina/features/columns.py)."""
from __future__ import annotations

import contextlib
import csv
import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from lamina import features
from lamina.config import Config, Split
from lamina.errors import ConfigError, DataError, did_you_mean
from lamina.features import boxes_coco
from lamina.features.common import missing_mask

READERS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "test": "test", "testing": "test"}


def _not_utf8(path: Path, file_format: str) -> str:
    """Where a file stops being UTF-8, read block by block (the file may be larger than memory)."""
    where, offset, lines, carry = " it", 0, 1, b""  # offset: the file position of carry's first byte
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2 ** 20), b""):
            data, carry = carry + block, b""
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as error:
                if error.reason == "unexpected end of data" and error.end == len(data):
                    carry = data[error.start:]  # a character cut by the block's end: decode it with the next
                else:
                    line = lines + data[:error.start].count(b"\n")
                    where = f" line {line} (byte {offset + error.start})"
                    break
            lines += data[:len(data) - len(carry)].count(b"\n")
            offset += len(data) - len(carry)
    if carry and where == " it":  # the file ends inside a character
        where = f" line {lines} (byte {offset})"
    return (f"cannot read '{path}' as {file_format}:{where} is not UTF-8 text; re-save the file as UTF-8 "
            f"(e.g. iconv -f latin1 -t utf-8 '{path.name}' > fixed.{file_format})")


def read_table(data: Any, types: dict[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """A DataFrame and a label for messages, from a DataFrame, a file path, or a named data set.
    `types` ({column: 'string' or 'number'}, from features.read_types) says how a file's columns are
    read, so training and prediction read them alike; other columns are read as the reader guesses."""
    if isinstance(data, pd.DataFrame):
        if not all(isinstance(column, str) for column in data.columns):  # config names are strings
            data = data.rename(columns=str)
        refuse_duplicates(list(data.columns), "the DataFrame")
        return data, "the DataFrame"
    if not isinstance(data, (str, Path)):
        raise DataError(f"data must be a pandas DataFrame or a path to a CSV/Parquet/JSONL file; "
                        f"got {type(data).__name__}")
    path = Path(data)
    if not path.exists():
        from lamina import datasets  # a bare name such as 'adult' means a named data set

        if str(data) in datasets.names():
            return datasets.load(str(data)), f"data set '{data}'"
        raise DataError(f"data file '{path}' does not exist; give a CSV, Parquet or JSONL file, or a data set "
                        f"name ({', '.join(datasets.names())})")
    suffixes = [suffix for suffix in path.suffixes if suffix.lower() in READERS]
    if path.is_dir():
        return read_folder(path), f"folder '{path}'"
    if not suffixes:
        raise DataError(f"cannot read '{path}': expected a file ending in {', '.join(sorted(READERS))}")
    file_format = READERS[suffixes[-1].lower()]
    if boxes_coco.is_coco(path):  # object detection in COCO's form: one row per image, its boxes
        return boxes_coco.read_coco(path), f"COCO file '{path}'"
    with read_errors(path, file_format):
        frame, _ = open_table(path, file_format, types)
    if frame.empty:
        raise DataError(f"'{path}' has no rows")
    return frame, f"'{path}'"


def read_sample(data: Any, rows: int) -> tuple[pd.DataFrame, str]:
    """At most the first `rows` rows of a table, and a label for messages: a CSV/TSV, Parquet or JSON-lines
    file is read only as far as that (a large file is never loaded whole); anything else as read_table reads it."""
    file_format = chunkable_format(data)
    if file_format is None or boxes_coco.is_coco(Path(data)):
        frame, source = read_table(data)
        return frame.head(rows), source
    path = Path(data)
    with read_errors(path, file_format):
        chunks, _ = open_table(path, file_format, None, rows=rows)
        frame = next(iter(chunks), pd.DataFrame())
    if frame.empty:
        raise DataError(f"'{path}' has no rows")
    return frame, f"'{path}'"


def chunkable_format(data: Any) -> str | None:
    """csv / tsv / parquet / jsonl for a file that can be read in chunks; None for anything else
    (a DataFrame, a data set name, a folder, a .json file holding one array or a COCO object)."""
    if not isinstance(data, (str, Path)) or not Path(data).is_file():
        return None
    suffixes = [suffix.lower() for suffix in Path(data).suffixes if suffix.lower() in READERS]
    if not suffixes:
        return None
    if READERS[suffixes[-1]] == "jsonl" and (_is_json_array(Path(data)) or boxes_coco.is_coco(Path(data))):
        return None
    return READERS[suffixes[-1]]


def _is_json_array(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return False
    with open(path, "rb") as handle:
        return handle.read(4096).lstrip().startswith(b"[")


def open_table(path: Path, file_format: str, types: dict[str, str] | None, rows: int | None = None):
    """(the whole frame, or with `rows` an iterator of frames of that many rows; the row count when
    the file says it). Columns are read as `types` says: text columns as strings in CSV (pandas would
    guess per chunk, turning '007' into 7 in one and not in another), JSON values as the file types
    them (pandas would guess numbers and dates from strings). Two columns of one name are refused."""
    separator = "\t" if file_format == "tsv" else ","
    strings = {name: str for name, read_as in (types or {}).items() if read_as == "string"}
    if file_format == "parquet":
        import pyarrow.parquet as parquet

        file = parquet.ParquetFile(path)
        refuse_duplicates(file.schema_arrow.names, f"'{path}'")
        if rows is None:
            return file.read().to_pandas(), file.metadata.num_rows
        return (batch.to_pandas() for batch in file.iter_batches(batch_size=rows)), file.metadata.num_rows
    if file_format == "jsonl":
        array = _is_json_array(path)
        if not array:
            refuse_duplicates(_first_record_keys(path), f"'{path}'")
        return pd.read_json(path, lines=not array, dtype=False, chunksize=None if array else rows), None
    header = pd.read_csv(path, sep=separator, header=None, nrows=1, dtype=str, keep_default_na=False,
                         skipinitialspace=True)  # the names as written: pandas renames a second 'x' to 'x.1'
    names = [str(name) for name in header.iloc[0] if str(name).strip()] if len(header) else []  # '': 'Unnamed: 3'
    refuse_duplicates(names, f"'{path}'")
    return pd.read_csv(path, sep=separator, skipinitialspace=True, dtype=strings or None, chunksize=rows), None


def _first_record_keys(path: Path) -> list[str]:
    """The keys of the first record of a JSON-lines file, repeats included (pandas keeps the last)."""
    with open(path, "rb") as handle:
        for line in itertools.islice(handle, 1000):  # a few blank lines may come first
            if line.strip():
                try:
                    pairs = json.loads(line, object_pairs_hook=lambda items: items)
                except ValueError:  # the reader names the problem, with its position
                    return []
                return [key for key, _ in pairs] if isinstance(pairs, list) else []
    return []


def refuse_duplicates(names: list, source: str) -> None:
    """Two columns of one name: which one a feature reads would be a guess."""
    seen = set()
    for position, name in enumerate(names):
        if name in seen:
            first = names.index(name)
            raise DataError(f"{source} has two columns named '{name}' (columns {first + 1} and {position + 1}); "
                            f"rename or remove one of them")
        seen.add(name)


@contextlib.contextmanager
def read_errors(path: Path, file_format: str, after: Callable[[], int] | None = None):
    """A file that cannot be read as `file_format` gives one DataError naming it (and the rows read
    before the problem, when `after` counts them), never a traceback from the reader."""
    try:
        yield
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(_not_utf8(path, file_format)) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"'{path}' is empty: no header and no rows; give a file with a header line and rows") \
            from None
    except (ValueError, OSError, pd.errors.ParserError) as error:  # pyarrow's errors are ValueError/OSError
        where = f" after row {after()}" if after is not None and after() else ""
        if "EOF inside string" in str(error):  # pandas counts its 'row' in a way no editor shows
            line = _unclosed_quote_line(path, file_format)
            raise DataError(f"cannot read '{path}' as {file_format}: the quote (\") opened on line {line} is never "
                            f"closed; close it or remove it") from None
        raise DataError(f"cannot read '{path}' as {file_format}{where}: {str(error).strip().splitlines()[0]}") from None


ROW = re.compile(r"\brow (\d+)\b")  # how messages name a row: its number in the file (0 = the first data row)


@contextlib.contextmanager
def rows_located(data: Any):
    """A DataError naming a row of a CSV/TSV/JSON-lines file also says on which line the row is, for
    an editor: 'row 17 (line 19 of data.csv)'."""
    try:
        yield
    except DataError as error:
        message, file_format = str(error), chunkable_format(data)
        match = ROW.search(message)
        by_line = match and file_format in ("csv", "tsv", "jsonl")
        line = line_of_row(Path(data), file_format, int(match.group(1))) if by_line else None
        if line is None:
            raise
        raise DataError(f"{message[:match.end()]} (line {line} of {Path(data).name}){message[match.end():]}") \
            from None


def _unclosed_quote_line(path: Path, file_format: str) -> int:
    """The line where the record holding an unclosed quote starts: it is the last one, as it runs
    to the end of the file."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t" if file_format == "tsv" else ",", skipinitialspace=True)
        start = previous = 1
        for _ in reader:
            start, previous = previous, reader.line_num + 1
    return start


def line_of_row(path: Path, file_format: str, row: int) -> int | None:
    """The line where data row `row` starts, skipping what the reader skips (blank lines, the header)
    and counting line breaks inside quoted cells. Read only when an error names a row."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        if file_format == "jsonl":
            records = (number for number, line in enumerate(handle, 1) if line.strip())
            return next(itertools.islice(records, row, None), None)
        reader = csv.reader(handle, delimiter="\t" if file_format == "tsv" else ",", skipinitialspace=True)
        seen, start = -1, 1  # -1: the header comes first
        for record in reader:
            if len(record) > 1 or (record and record[0].strip()):  # pandas skips blank lines
                if seen == row:
                    return start
                seen += 1
            start = reader.line_num + 1
    return None


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom"}


def read_folder(folder: Path) -> pd.DataFrame:
    """A folder of class sub-folders as a table with columns image (file path) and label
    (the sub-folder's name). Top-level train/validation/test folders, each holding class
    sub-folders, also fill a `split` column."""
    parts = {SPLIT_NAMES[child.name.lower()]: child for child in folder.iterdir()
             if child.is_dir() and child.name.lower() in SPLIT_NAMES}
    rows = []
    for split, root in (parts.items() if parts else [(None, folder)]):
        for label_folder in sorted(child for child in root.iterdir() if child.is_dir()):
            for file in sorted(label_folder.rglob("*")):
                if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                    rows.append({"image": str(file), "label": label_folder.name, **({"split": split} if split else {})})
    if not rows:
        raise DataError(f"folder '{folder}' holds no images in class sub-folders; lay it out as "
                        f"{folder}/<class>/<image file> (files ending in {', '.join(sorted(IMAGE_SUFFIXES))})")
    return pd.DataFrame(rows)


def check_columns(frame: pd.DataFrame, names: list[str], source: str, role: str = "the config") -> None:
    """Every column the config names must be in the data."""
    columns = [str(column) for column in frame.columns]
    for name in names:
        if name not in frame.columns:
            raise DataError(f"column '{name}' named in {role} is not in {source}{did_you_mean(name, columns)}")


def add_absent_labels(frame: pd.DataFrame, outputs: list) -> pd.DataFrame:
    """An output whose labels are optional (an anomaly score) may have no column in the data: it is
    added with every cell its `absent_label()` (unlabelled), so the rest of the pipeline reads it like
    any other. `outputs`: the output configs."""
    labels = {config.name: features.build(config).absent_label() for config in outputs
              if config.name not in frame.columns}
    absent = {name: label for name, label in labels.items() if label is not None}
    return frame.assign(**absent) if absent else frame


def read_rows(data: Any, config: Config) -> tuple[pd.DataFrame, str]:
    """Like read_table (a file's columns read as the config's features want them), but also takes
    one row as a dict or rows as a list of dicts."""
    if isinstance(data, dict):
        data = pd.DataFrame([data]) if all(not isinstance(v, (list, tuple)) for v in data.values()) \
            else pd.DataFrame(data)
    elif isinstance(data, list):
        data = pd.DataFrame(data)
    return read_table(data, features.read_types(config))


def labelled_rows(data: Any, config: Config, inputs: list, outputs: list) -> tuple[pd.DataFrame, str]:
    """The rows a model learns from or is measured on, as fit, evaluate, importance and compare read
    them: read as the features want, an absent optional label column added, every column the built
    features read checked to be there. (Which rows are usable is rows_to_keep's to say.)"""
    frame, source = read_rows(data, config)
    frame = add_absent_labels(frame, config.outputs)
    check_columns(frame, columns_read(inputs + outputs), source)
    return frame, source


def split_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Each row's part ('train', 'validation' or 'test') as a split column names it (also 'training',
    'valid', ...); any other value is an error naming the row."""
    names = frame[column].astype(str).str.strip().str.lower()
    bad = ~names.isin(list(SPLIT_NAMES)).to_numpy()
    if bad.any():
        position = int(np.argmax(bad))
        raise DataError(f"split column '{column}' row {frame.index[position]}: "
                        f"{frame[column].iloc[position]!r} is not train, validation or test; "
                        f"give every row one of these (unknown values: {sorted(set(names[bad]))[:5]})")
    return names.map(SPLIT_NAMES).to_numpy()


def split_rows(frame: pd.DataFrame, config: Config) -> dict[str, np.ndarray]:
    """Positions of the train / validation / test rows, reproducible for a given seed."""
    from sklearn.model_selection import train_test_split

    split: Split = config.split
    seed = config.training.seed if split.seed is None else split.seed
    positions = np.arange(len(frame))
    if split.method == "column":
        check_columns(frame, [split.column], "the data", "split.column")
        mapped = split_column(frame, split.column)
        return {part: positions[mapped == part] for part in ("train", "validation", "test")}
    if split.method == "time":
        return time_split(frame, split, config)
    first = config.outputs[0]
    stratify = None
    if split.method == "stratified" or (split.method == "auto" and features.build(first).stratifies()):
        labels, _ = pd.factorize(frame[first.name].astype(str))
        counts = np.bincount(labels)
        if counts.min() >= 3 or split.method == "stratified":
            stratify = labels
        if split.method == "stratified" and counts.min() < 3:
            raise DataError(f"cannot stratify on '{first.name}': a class has {counts.min()} rows (at least 3 "
                            f"needed); use split method: random")
    train_ratio, validation_ratio, test_ratio = split.ratios
    parts = {"train": positions, "validation": positions[:0], "test": positions[:0]}
    rest_ratio = validation_ratio + test_ratio
    try:
        if rest_ratio > 0:
            parts["train"], rest = train_test_split(positions, test_size=rest_ratio, random_state=seed,
                                                    stratify=stratify)
            if validation_ratio > 0 and test_ratio > 0:
                rest_labels = None if stratify is None else stratify[rest]
                try:
                    parts["validation"], parts["test"] = train_test_split(
                        rest, test_size=test_ratio / rest_ratio, random_state=seed, stratify=rest_labels)
                except ValueError:  # a class too rare to stratify in the held-out part
                    parts["validation"], parts["test"] = train_test_split(
                        rest, test_size=test_ratio / rest_ratio, random_state=seed)
            else:
                parts["validation" if validation_ratio > 0 else "test"] = rest
    except ValueError:  # scikit-learn: a part would be empty, or too small to hold every class
        raise DataError(f"{len(frame)} rows are too few to split into train, validation and test with ratios "
                        f"{list(split.ratios)}; give more rows or change split.ratios (e.g. [1.0, 0.0, 0.0] "
                        f"trains on every row)") from None
    if min(len(parts["train"]), 1) == 0:
        raise DataError("the training split is empty; give more rows or a larger train ratio")
    return {name: np.sort(part) for name, part in parts.items()}


def time_split(frame: pd.DataFrame, split: Split, config: Config | None = None) -> dict[str, np.ndarray]:
    """The latest rows are the test and those just before them validation: over all rows, or per
    group (each user's latest interactions), by a number of rows (`holdout`) or by `ratios`. A
    group always keeps at least one training row. A column that is also an input whose type reads
    times (a date: its formats, dayfirst) is read by that type."""
    check_columns(frame, [split.column] + ([split.group] if split.group else []), "the data", "split")
    times = frame[split.column]
    same = [feature for feature in (config.inputs if config else []) if feature.name == split.column]
    own = features.build(same[0]).time_values(times) if same else None
    if own is not None:
        if np.isnan(own).any():
            position = int(np.argmax(np.isnan(own)))
            raise DataError(f"split column '{split.column}' row {frame.index[position]}: missing time; fill it or "
                            f"drop the row")
        times = pd.Series(own, index=times.index)
    elif not pd.api.types.is_numeric_dtype(times):
        parsed = pd.to_datetime(times, errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            position = int(np.argmax(bad))
            raise DataError(f"split column '{split.column}' row {frame.index[position]}: {times.iloc[position]!r} "
                            f"is not a time (a number or a date); fill it or drop the row")
        times = parsed
    elif times.isna().any():
        position = int(np.argmax(times.isna().to_numpy()))
        raise DataError(f"split column '{split.column}' row {frame.index[position]}: missing time; fill it or "
                        f"drop the row")
    order = pd.DataFrame({"time": times.to_numpy(), "position": np.arange(len(frame)),
                          "group": frame[split.group].astype(str).to_numpy() if split.group else ""})
    order = order.sort_values(["group", "time", "position"], kind="stable")
    size = order.groupby("group", sort=False)["position"].transform("size").to_numpy()
    from_end = order.groupby("group", sort=False).cumcount(ascending=False).to_numpy()  # 0: the latest
    if split.holdout:
        test, validation = np.full(len(order), split.holdout), np.full(len(order), split.holdout)
    else:
        test = np.round(size * split.ratios[2]).astype(int)
        validation = np.round(size * split.ratios[1]).astype(int)
    test = np.minimum(test, size - 1)  # every group keeps a training row
    validation = np.minimum(validation, size - 1 - test)
    part = np.where(from_end < test, "test", np.where(from_end < test + validation, "validation", "train"))
    positions = order["position"].to_numpy()
    return {name: np.sort(positions[part == name]) for name in ("train", "validation", "test")}


def columns_of(feature, frame: pd.DataFrame):
    """What a feature's fit/transform/target read: its column, or a frame of its column and the
    others it `reads` (a ranking output reads the user column too)."""
    extra = feature.reads()
    return frame[[feature.config.name, *extra]] if extra else frame[feature.config.name]


def columns_read(built: list) -> list[str]:
    """The columns these built features read: their own, and the others a ranking `reads`."""
    return [name for feature in built for name in [feature.config.name, *feature.reads()]]


def rows_to_keep(frame: pd.DataFrame, inputs: list, outputs: list) -> np.ndarray:
    """Rows usable for training/evaluation: targets present, no missing value where an input
    `drops_missing()`, and none of the rows an input's `bad_rows(column)` marks."""
    keep = np.ones(len(frame), dtype=bool)
    for feature in outputs:
        keep &= ~missing_mask(frame[feature.config.name])
    for feature in inputs:
        if feature.drops_missing():
            keep &= ~missing_mask(frame[feature.config.name])
        bad = feature.bad_rows(frame[feature.config.name])  # e.g. unreadable image files with on_error: skip
        if bad is not None:
            keep &= ~bad
    return keep


def learning_rows(rows: pd.DataFrame, outputs: list) -> pd.DataFrame:
    """The training rows a model learns from, its inputs' statistics included: all of them minus those
    a (fitted) output leaves out with `training_rows(column)` (an anomaly output: labelled anomalies)."""
    keep = np.ones(len(rows), dtype=bool)
    for feature in outputs:
        select = feature.training_rows(rows[feature.config.name])
        if select is None:
            continue
        if len(outputs) > 1:  # the other outputs would silently lose those rows too
            raise ConfigError(f"output '{feature.config.name}' ({feature.type_name}) learns from some training "
                              f"rows only, so it must be the model's only output; train the other outputs "
                              f"({', '.join(f.config.name for f in outputs if f is not feature)}) as another model")
        keep &= select
    return rows if keep.all() else rows[keep]


def tensors(frame: pd.DataFrame, inputs: list, outputs: list | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """{'inputs': {name: tensor}, 'targets': {name: tensor}} for the given rows."""
    result = {"inputs": {f.config.name: f.transform(frame[f.config.name]) for f in inputs}, "targets": {}}
    for feature in outputs or []:
        result["targets"][feature.config.name] = feature.target(columns_of(feature, frame))
    return result

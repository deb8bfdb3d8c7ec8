"""Training on Parquet data larger than memory (`training.streaming`): rows are split by a seeded hash
of their position, the features' statistics are fitted on a bounded sample of the training rows, and
the network trains on record batches shuffled through a buffer, so memory never holds the whole file.

What differs from training in memory, by design:
- the split: row number r (counted across the files in name order) goes to train, validation or test
  by a seeded hash of r against split.ratios (or by `split.method: column`); every process and every
  pass gets the same answer. Stratified and time splits need every row at once and are refused.
- the statistics (vocabularies, normalisation, quantile bins, labels and their counts) are fitted on
  a seeded uniform sample of at most STATS_ROWS training rows and STATS_BYTES (the rows of lowest hash
  priority, read in one pass): exactly the in-memory statistics when the training rows fit in it.
- validation and test are measured on seeded samples of at most SAMPLE_ROWS rows (and SAMPLE_BYTES)
  each, and metrics_['train'] on as many training rows (training_['streaming']['measured_rows']);
  training_['rows'] holds the exact counts of every part.
Memory holds those samples, the shuffle buffer (a few copies of it while it is reshuffled) and one
record batch with what the Parquet reader keeps of its row group, whatever the size of the files.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lamina import devices, evaluation, features, train
from lamina.config import Config, Training
from lamina.data import (IMAGE_SUFFIXES, add_absent_labels, chunkable_format, columns_of, columns_read,
                         learning_rows, read_errors, refuse_duplicates, rows_to_keep, split_column, tensors)
from lamina.errors import ConfigError, DataError, did_you_mean
from lamina.features.columns import LazyColumn, Stream, row_count, rows
from lamina.network import Network

STREAM_BYTES = 2 * 2 ** 30  # with streaming: auto, Parquet files larger than this in total are streamed
# the training rows the features' statistics are fitted on: a seeded uniform sample of at most this many
# rows and bytes (Arrow's, of the columns read; pandas takes more for text)
STATS_ROWS, STATS_BYTES = 500_000, 128 * 2 ** 20
# the validation rows, test rows and training rows kept in memory to be measured on, each
SAMPLE_ROWS, SAMPLE_BYTES = 100_000, 32 * 2 ** 20
READ_ROWS, READ_BUFFER = 16_384, 2 ** 20  # rows per record batch read; bytes read at once from a column chunk
PARQUET_SUFFIXES = (".parquet", ".pq")
PARTS = ("train", "validation", "test")
SPLIT_SALT, SAMPLE_SALT = 0x5EED5, 0x5A3B1E  # two independent hashes of a row number: its part, its priority


def parquet_files(data: Any) -> list[Path] | None:
    """The Parquet files `data` names (a file, or every Parquet file under a folder in name order), or None."""
    path = Path(data) if isinstance(data, (str, Path)) else None
    if path is not None and path.is_file():
        return [path] if chunkable_format(path) == "parquet" else None
    if path is not None and path.is_dir():
        files = sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in PARQUET_SUFFIXES)
        return files or None
    return None


def wanted(data: Any, training: Training) -> bool:
    """Whether Model.fit streams `data`: streaming true, or auto and Parquet files larger than STREAM_BYTES
    in total, or a folder of Parquet files without images (the in-memory readers take one table file)."""
    if training.streaming is False:
        return False
    if training.streaming == "auto" and isinstance(data, (str, Path)) and Path(data).is_dir() and \
            any(file.suffix.lower() in IMAGE_SUFFIXES for file in Path(data).rglob("*")):
        return False  # a folder of images: read_folder lists them, and they are read lazily
    files = parquet_files(data)
    if training.streaming is True and files is None:
        what = f"a {type(data).__name__}" if not isinstance(data, (str, Path)) else \
            f"'{data}'" + ("" if Path(data).exists() else " (which does not exist)")
        raise ConfigError(f"training.streaming: true reads Parquet files batch by batch, but the data is {what}, not "
                          f"a Parquet file or a folder of them; convert it (pandas.read_csv(path).to_parquet("
                          f"'data.parquet')) or set training.streaming: false")
    return files is not None and (training.streaming is True or Path(data).is_dir()
                                  or sum(file.stat().st_size for file in files) > STREAM_BYTES)


def uniform(positions: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A number in [0, 1) per row number: splitmix64 of (seed, salt, row), the same on every machine."""
    mixed = np.uint64((seed * 0x9E3779B97F4A7C15 + salt) % 2 ** 64)
    z = positions.astype(np.uint64) + mixed
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


class Splitter:
    """Which part (0 train, 1 validation, 2 test) each row belongs to, from its row number alone (or
    its split column), so every pass and every process agrees."""

    def __init__(self, config: Config):
        split = config.split
        if split.method in ("stratified", "time"):
            raise ConfigError(f"split method '{split.method}' needs every row in memory at once, which streamed "
                              f"training (training.streaming) does not have; use split method: random (rows are "
                              f"assigned by a seeded hash of their position) or column, or set training.streaming: "
                              f"false")
        self.column = split.column if split.method == "column" else None
        self.seed = config.training.seed if split.seed is None else split.seed
        train_ratio, validation_ratio, test_ratio = split.ratios
        # a part with ratio 0 gets no row, even where float sums round (0.8 + 0.2 = 0.99999...)
        self.cuts = (train_ratio if validation_ratio + test_ratio > 0 else np.inf,
                     train_ratio + validation_ratio if test_ratio > 0 else np.inf)

    def parts(self, frame: pd.DataFrame) -> np.ndarray:
        """The part code of each row of `frame`, whose index holds the rows' numbers."""
        if self.column is None:
            draw = uniform(frame.index.to_numpy(), self.seed, SPLIT_SALT)
            return (draw >= self.cuts[0]).astype(np.int8) + (draw >= self.cuts[1])
        return pd.Series(split_column(frame, self.column)).map(PARTS.index).to_numpy(dtype=np.int8)


def split_rows(frame: pd.DataFrame, config: Config) -> dict[str, np.ndarray]:
    """Positions in `frame` of the train / validation / test rows as streamed training splits them (for a
    comparison on the same split); the frame's index holds each row's number in the data, as read."""
    parts = Splitter(config).parts(frame)
    return {name: np.flatnonzero(parts == code) for code, name in enumerate(PARTS)}


@dataclass
class Piece:
    """One row group (`group`) of one file (`file`), its first row's number across the files and its rows."""
    file: int
    group: int
    start: int
    rows: int


class Source:
    """The Parquet files of a data set as one sequence of row groups, read record batch by record batch."""

    def __init__(self, data: str | Path):
        import pyarrow.parquet as parquet

        paths = parquet_files(data)
        self.label = f"'{data}'" if len(paths) == 1 and Path(data).is_file() else \
            f"the {len(paths)} Parquet files under '{data}'"
        self.paths, self.metadata, self.names, self.pieces = paths, [], [], []
        start = 0
        for number, path in enumerate(paths):
            with read_errors(path, "parquet"):
                file = parquet.ParquetFile(path)
                self.metadata.append(file.metadata)
                self.names.append(file.schema_arrow.names)
            refuse_duplicates(self.names[-1], f"'{path}'")
            for group in range(file.metadata.num_row_groups):
                rows = file.metadata.row_group(group).num_rows
                self.pieces.append(Piece(number, group, start, rows))
                start += rows
            file.close()

    def check(self, names: list[str]) -> None:
        """Every column the config names must be in every file."""
        for path, columns in zip(self.paths, self.names):
            for name in names:
                if name not in columns:
                    raise DataError(f"column '{name}' named in the config is not in '{path}'"
                                    f"{did_you_mean(name, columns)}")

    def frames(self, pieces: list[int], columns: list[str]) -> Iterator[tuple[Any, pd.DataFrame]]:
        """(record batch, its frame indexed by row number) of the `columns` of these row groups, READ_ROWS
        rows at a time."""
        import pyarrow.parquet as parquet

        for index in pieces:
            piece = self.pieces[index]
            path = self.paths[piece.file]
            with read_errors(path, "parquet"):
                # unbuffered, pyarrow would hold the whole row group's column chunks (3 x more, measured)
                file = parquet.ParquetFile(path, metadata=self.metadata[piece.file], pre_buffer=False,
                                           buffer_size=READ_BUFFER)
                try:
                    start = piece.start
                    for batch in file.iter_batches(batch_size=READ_ROWS, row_groups=[piece.group], columns=columns):
                        frame = batch.to_pandas()
                        frame.index = pd.RangeIndex(start, start + len(frame))
                        start += len(frame)
                        yield batch, frame
                finally:
                    file.close()


class Sample:
    """The `size` offered rows of lowest priority: a seeded uniform sample without replacement, the same
    whatever order the rows come in (bottom-k). Kept as Arrow tables (text takes a fraction of what pandas
    takes); where `size` rows would take more than `max_bytes`, fewer are kept (the lowest of a bottom-k
    sample are a smaller one). Holds at most 1.25 x its bound, and twice that while dropping the surplus."""

    def __init__(self, size: int, max_bytes: int):
        self.size, self.max_bytes = size, max_bytes
        self.held, self.count, self.bytes, self.cut = [], 0, 0, np.inf

    def offer(self, batch: Any, rows: np.ndarray, priority: np.ndarray, mask: np.ndarray) -> None:
        """Offer the rows of the record batch `batch` (numbered `rows`) where `mask` is true."""
        import pyarrow as arrow

        chosen = mask & (priority < self.cut)
        if self.size == 0 or not chosen.any():
            return
        table = arrow.Table.from_batches([batch.filter(arrow.array(chosen))])
        self.held.append((table, rows[chosen], priority[chosen]))
        self.count, self.bytes = self.count + len(table), self.bytes + table.nbytes
        if self.count > self.size + self.size // 4 or self.bytes > self.max_bytes + self.max_bytes // 4:
            self._compact()

    def _compact(self) -> None:
        import pyarrow as arrow

        held, self.held = self.held, []
        rows, priority = np.concatenate([part[1] for part in held]), np.concatenate([part[2] for part in held])
        # files of one folder may type a column differently (int32, int64): Arrow unifies them
        table = arrow.concat_tables([part[0] for part in held], promote_options="permissive")
        del held
        self.size = max(1, min(self.size, int(self.max_bytes // _width(table))))
        if len(rows) > self.size:
            best = np.argpartition(priority, self.size - 1)[:self.size]
            table, rows, priority = table.take(best), rows[best], priority[best]
            self.cut = float(priority.max())
        self.held, self.count, self.bytes = [(table, rows, priority)], len(rows), table.nbytes

    def rows(self) -> tuple[pd.DataFrame, pd.Series, float] | None:
        """(the sampled rows in the data's order, indexed by row number; their priorities; bytes per row),
        or None when none was offered."""
        if not self.held:
            return None
        self._compact()
        (table, rows, priority), self.held = self.held[0], []
        order = np.argsort(rows, kind="stable")
        table = table.take(order)
        width, frame = _width(table), table.to_pandas()
        frame.index = pd.Index(rows[order])
        return frame, pd.Series(priority[order], index=frame.index), width


def _width(table) -> float:
    return max(table.nbytes / max(len(table), 1), 1.0)  # bytes per row of an Arrow table


@dataclass
class Survey:
    """What one pass over the files learns: rows per part, training rows per row group, the samples."""
    counts: dict[str, int]
    dropped: int
    per_piece: np.ndarray
    samples: dict[str, Sample]


class Reader:
    """How the files' rows become model rows: the columns read, the absent labels added, the rows kept
    (rows_to_keep) and the part of each row."""

    def __init__(self, config: Config, source: Source, inputs: list, outputs: list):
        self.config, self.source, self.inputs, self.outputs = config, source, inputs, outputs
        self.splitter = Splitter(config)
        present = set(source.names[0])  # an output whose labels are optional may have no column (anomaly)
        self.absent = [feature for feature in config.outputs
                       if feature.name not in present and features.build(feature).absent_label() is not None]
        names = columns_read(inputs + outputs) + ([self.splitter.column] if self.splitter.column else [])
        names = list(dict.fromkeys(name for name in names if name not in {f.name for f in self.absent}))
        source.check(names)
        self.columns = names

    def frames(self, pieces: list[int]) -> Iterator[tuple[Any, pd.DataFrame, np.ndarray, np.ndarray]]:
        """(record batch, its frame, kept rows mask, part codes) per record batch of these row groups."""
        for batch, frame in self.source.frames(pieces, self.columns):
            frame = self.labelled(frame)
            yield batch, frame, rows_to_keep(frame, self.inputs, self.outputs), self.splitter.parts(frame)

    def labelled(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The frame with the absent optional label columns added (as the in-memory reader adds them)."""
        return add_absent_labels(frame, self.absent) if self.absent else frame

    def training_rows(self, pieces: list[int]) -> Iterator[pd.DataFrame]:
        """The rows the network learns from, record batch by record batch (outputs fitted)."""
        for _, frame, keep, part in self.frames(pieces):
            chosen = frame[keep & (part == 0)]
            if len(chosen):
                chosen = learning_rows(chosen, self.outputs)
            if len(chosen):
                yield chosen


def survey(reader: Reader, quiet: bool = True) -> Survey:
    """One pass: exact row counts per part and per row group, and the seeded samples."""
    seed = reader.splitter.seed
    samples = {"train": Sample(STATS_ROWS, STATS_BYTES), "validation": Sample(SAMPLE_ROWS, SAMPLE_BYTES),
               "test": Sample(SAMPLE_ROWS, SAMPLE_BYTES)}
    counts, dropped = dict.fromkeys(PARTS, 0), 0
    per_piece = np.zeros(len(reader.source.pieces), dtype=np.int64)
    for index in tqdm(range(len(per_piece)), disable=True if quiet else None, unit="row group", leave=False,
                      desc="reading"):
        for batch, frame, keep, part in reader.frames([index]):
            dropped += int((~keep).sum())
            rows = frame.index.to_numpy()
            priority = uniform(rows, seed, SAMPLE_SALT)
            for code, name in enumerate(PARTS):
                mine = keep & (part == code)
                counts[name] += int(mine.sum())
                samples[name].offer(batch, rows, priority, mine)
            per_piece[index] += int((keep & (part == 0)).sum())
    return Survey(counts, dropped, per_piece, samples)


class TrainingStream(Stream):
    """The training rows of Parquet files as a table train.fit reads batch by batch. Each epoch reads the row
    groups in an order drawn from the generator, makes tensors of each record batch with the fitted features
    and shuffles them through a buffer of `buffer` rows: when full, random batches are taken until half is
    left. `shard` (rank, world): row group i is read by rank i % world, and every rank stops after as many
    rows as the smallest share holds (rows_per_rank, counted exactly), so the ranks step together."""

    def __init__(self, reader: Reader, per_piece: np.ndarray, buffer: int):
        self.reader, self.per_piece, self.buffer = reader, per_piece, buffer
        self.rows = int(per_piece.sum())

    def rows_per_rank(self, world: int) -> int:
        """The training rows each of `world` ranks yields per epoch."""
        if world <= 1:
            return self.rows
        return int(min(self.per_piece[rank::world].sum() for rank in range(world)))

    def batches(self, batch_size: int, generator: torch.Generator | None = None, workers: int = 0,
                shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
        """Batches of `batch_size` rows (the last one smaller), in random order with a generator, else in
        the files' order. `workers` is not used: lazily read columns are decoded in this process."""
        rank, world = shard
        mine = list(range(rank, len(self.per_piece), world))
        if generator is not None:
            mine = [mine[position] for position in torch.randperm(len(mine), generator=generator).tolist()]
        limit, emitted = self.rows_per_rank(world), 0
        if limit == 0 and world > 1:
            raise DataError(f"the data's {len(self.per_piece)} row groups leave a process of {world} without training "
                            f"rows; write the Parquet files in more, smaller row groups (row_group_size)")
        fill = self.buffer if generator is not None else batch_size
        keep_back = self.buffer // 2 if generator is not None else 0
        held, count = [], 0
        tables = (tensors(frame, self.reader.inputs, self.reader.outputs) for frame in self.reader.training_rows(mine))
        for table in itertools.chain(tables, [None]):  # None: the end of the files, when the buffer is emptied
            if table is not None:
                held.append(table)
                count += row_count(table)
                if count < fill:
                    continue
            elif not held:
                return
            buffer = joined(held)
            if generator is not None:
                buffer = subset(buffer, torch.randperm(count, generator=generator))
            ready = count if table is None else (count - keep_back) // batch_size * batch_size
            for start in range(0, ready, batch_size):
                size = min(batch_size, ready - start, limit - emitted)
                yield {part: {name: rows(column, slice(start, start + size)) for name, column in columns.items()}
                       for part, columns in buffer.items()}
                emitted += size
                if emitted >= limit:
                    return
            held, count = ([subset(buffer, slice(ready, count))] if ready < count else []), count - ready


def joined(tables: list[dict]) -> dict:
    """Tables of tensors one after the other; sequences padded with zeros to the longest (as each chunk's
    transform pads its own rows)."""
    if len(tables) == 1:
        return tables[0]
    return {part: {name: _join([table[part][name] for table in tables]) for name in columns}
            for part, columns in tables[0].items()}


def _join(columns: list) -> Any:
    if isinstance(columns[0], LazyColumn):
        return LazyColumn([value for column in columns for value in column.values], columns[0].decode)
    shape = [max(column.shape[axis] for column in columns) for axis in range(1, columns[0].ndim)]
    padded = []
    for column in columns:
        widths = [width for axis in reversed(range(1, column.ndim))
                  for width in (0, shape[axis - 1] - column.shape[axis])]  # torch pads the last axis first
        padded.append(torch.nn.functional.pad(column, widths) if any(widths) else column)
    return torch.cat(padded)


def subset(table: dict, index: torch.Tensor | slice) -> dict:
    """The table's rows at `index`; lazily read columns stay lazy."""
    def pick(column):
        if isinstance(column, LazyColumn):
            positions = range(len(column))[index] if isinstance(index, slice) else index.tolist()
            return LazyColumn([column.values[position] for position in positions], column.decode)
        return rows(column, index)

    return {part: {name: pick(column) for name, column in columns.items()} for part, columns in table.items()}


@dataclass
class Prepared:
    """Fitted features, the training stream and the rows kept in memory to be measured on."""
    inputs: list
    outputs: list
    source: Source
    survey: Survey
    stream: TrainingStream
    frames: dict[str, pd.DataFrame]  # 'train' (metrics sample), 'validation', 'test' samples
    statistics_rows: int  # the training rows the statistics were fitted on (after learning_rows)


def prepare(config: Config, data: Any, quiet: bool = True) -> Prepared:
    """Everything Model.fit does before training, streamed: features built, the survey, the statistics
    fitted on the training sample, the training stream."""
    inputs = [features.build(feature) for feature in config.inputs]
    outputs = [features.build(feature) for feature in config.outputs]
    for feature in outputs:
        if feature.resampling() is not None:
            raise ConfigError(f"output '{feature.config.name}' resamples its training rows (sampling), which needs "
                              f"them all in memory; streamed training (training.streaming) reads them batch by batch: "
                              f"remove sampling (class_weights weigh a rare class instead) or set training.streaming: "
                              f"false")
    if parquet_files(data) is None:
        raise DataError(f"'{data}' is not a Parquet file or a folder holding Parquet files; streamed training "
                        f"reads those")
    source = Source(data)
    reader = Reader(config, source, inputs, outputs)
    found = survey(reader, quiet)
    if found.counts["train"] == 0:
        raise DataError(f"no training rows of {source.label} are left after dropping missing targets and "
                        f"'missing: drop' features, and splitting; check the data and split.ratios")
    training_rows, priority, width = found.samples.pop("train").rows()
    training_rows = reader.labelled(training_rows)
    for feature in outputs:
        feature.fit(columns_of(feature, training_rows))
    learned = learning_rows(training_rows, outputs)  # e.g. an anomaly output learns from normal rows
    for feature in inputs:
        feature.fit(columns_of(feature, learned))
    for feature in outputs:  # a ranking remembers each user's inputs, for recommend(user ids)
        feature.remember_profiles(learned, [f.config.name for f in inputs])
    per_piece = found.per_piece
    if any(feature.training_rows(training_rows[feature.config.name]) is not None for feature in outputs):
        # an output learns from some rows only (an anomaly output: normal ones): count them per row group,
        # exactly, so every rank of a distributed run knows how many batches the others take
        per_piece = np.array([sum(len(frame) for frame in reader.training_rows([index]))
                              for index in range(len(source.pieces))], dtype=np.int64)
    stream = TrainingStream(reader, per_piece, config.training.shuffle_buffer)
    measured = max(1, min(SAMPLE_ROWS, int(SAMPLE_BYTES // width)))
    metric_rows = priority.loc[learned.index].nsmallest(measured).index.sort_values()
    frames = {"train": learned.loc[metric_rows]}
    for part in ("validation", "test"):
        sampled = found.samples.pop(part).rows()
        if sampled is not None:
            frames[part] = reader.labelled(sampled[0])
    return Prepared(inputs, outputs, source, found, stream, frames, len(learned))


def fit(model, data: Any, *, output_dir: str | Path | None = None, resume: bool = False, quiet: bool = False,
        on_epoch: Callable[[dict], None] | None = None):
    """Model.fit for Parquet data streamed from its files (see the module docstring for what differs). Under
    torchrun every process surveys the files alike (the split and samples depend on row numbers only), so
    all fit the same statistics; each trains on its share of the row groups, and the main one writes."""
    from lamina.api import GENERATION_ROWS, _tune

    config = model.config
    engine = devices.engine_for(config.training)  # under torchrun: this process's rank and GPU
    main = engine.placement.main
    torch.manual_seed(config.training.seed)
    prepared = prepare(config, data, quiet or not main)
    outputs, counts = prepared.outputs, prepared.survey.counts
    tables = {part: tensors(frame, prepared.inputs, outputs) for part, frame in prepared.frames.items()}
    model.inputs_, model.outputs_ = prepared.inputs, outputs
    model.network_ = Network(prepared.inputs, outputs, config.hidden)
    folder = Path(output_dir) if output_dir else None
    if folder and main:
        folder.mkdir(parents=True, exist_ok=True)
    result = train.fit(model.network_, prepared.stream, tables.get("validation"), outputs, config.training,
                       checkpoint_dir=folder, resume=resume, quiet=quiet, fingerprint=model._fingerprint(counts),
                       on_epoch=on_epoch, engine=engine)
    model.comparison_ = model.tuning_ = model.rollout_ = None
    model.training_ = {**result, "rows": counts, "dropped_rows": prepared.survey.dropped,
                       "source": prepared.source.label, "learned_rows": prepared.stream.rows,
                       "streaming": {"files": len(prepared.source.paths), "row_groups": len(prepared.source.pieces),
                                     "statistics_rows": prepared.statistics_rows,
                                     "shuffle_buffer": prepared.stream.buffer,
                                     "measured_rows": {part: len(frame) for part, frame in prepared.frames.items()}}}
    _tune(outputs, model.network_, tables.get("validation"), tables["train"], engine)
    # metrics_['train'] is measured on a sample of the training rows (training_['streaming']['measured_rows'])
    model.metrics_ = {part: train.measure(model.network_, table, outputs,
                                          generate_rows=None if part == "test" else GENERATION_ROWS, engine=engine)
                      for part, table in tables.items()}
    model.evaluation_ = evaluation.collect(model, prepared.frames.get("test", pd.DataFrame())) if main else None
    if folder and main:  # one process writes the model
        model.save(folder)
        (folder / train.CHECKPOINT).unlink(missing_ok=True)
    devices.barrier(engine.placement)  # the others wait, so the model is complete when any of them returns
    return model

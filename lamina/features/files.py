"""What the file-backed types (image, audio) share: the training sample their statistics come from,
finding and reporting the cells that cannot be read (each file checked once), and decoding a
column up front or, when it would not fit in memory, batch by batch as a LazyColumn."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from lamina.errors import DataError
from lamina.features.columns import LazyColumn
from lamina.features.common import Unreadable, decode_cells, is_missing_cell, missing_mask, raise_if_missing

CACHE_LIMIT = 512 * 2 ** 20  # cache: auto decodes a column up front when its decoded cells fit in this many bytes
STATS_SAMPLE = 2048  # the statistics come from at most this many training cells (a seeded sample)
STATS_BATCH = 256  # cells decoded at once while fitting the statistics


@dataclass(frozen=True)
class Cells:
    """How a file-backed type reads its cells. Module-level functions only: it travels with a
    LazyColumn's decode function into DataLoader worker processes. `decoding` is the type's own
    picklable record of its options, with at least `name`, `root` and `on_error`."""

    noun: str  # what a readable cell holds, in messages: 'rows hold no readable image'
    describe: Callable[[Any], str]  # a cell, short, for messages
    decode_one: Callable[[Any, Any], np.ndarray]  # (cell, decoding) -> array; raises Unreadable
    stack: Callable[[list, Any], torch.Tensor]  # (arrays, None for an empty cell; decoding) -> (N, ...)


def resolve(value: str | os.PathLike, root: str | None) -> Path:
    """A cell's file path, relative ones under `root` when given."""
    path = Path(value).expanduser()
    return Path(root).expanduser() / path if root and not path.is_absolute() else path


def sniffed_paths(column, suffixes: tuple[str, ...], kind: str) -> tuple[list[str], str] | None:
    """For the sniff of a file-backed type, from a base.Column: None unless nine cells in ten are texts
    ending in one of `suffixes`; else (those of the first 200 that exist from here, a reason saying so)."""
    if not column.all_text or column.strings.str.lower().str.endswith(suffixes).mean() < 0.9:
        return None
    paths = [path for path in column.strings.iloc[:200] if os.path.isfile(path)]
    if not paths:
        return [], f"{kind} file paths (not found from here: set root: to their folder)"
    return paths, f"{kind} files ({len(paths)} of the first {min(200, len(column.values))} found"


def first_line(error: BaseException) -> str:
    """A reader's error in one line, for a reason in a message (its type when it says nothing)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def problem_message(cells: Cells, name: str, row: Any, value: Any, reason: str) -> str:
    return (f"column '{name}' row {row}: cannot read {cells.describe(value)} ({reason}); fix or remove it, "
            f"or set on_error: skip to leave such rows out")


def decode_all(cells: Cells, items: list[tuple[Any, Any]], decoding) -> tuple[list, list[tuple[Any, Any, str]]]:
    """The decoded cells (None for an empty or unreadable one) and the problems as (row, value, reason)."""
    return decode_cells(items, cells.decode_one, decoding)


def decode_rows(cells: Cells, decoding, items: list[tuple[Any, Any]]) -> torch.Tensor:
    """The decode function of a LazyColumn: (row, cell) pairs -> (N, ...)."""
    arrays, problems = decode_all(cells, items, decoding)
    if problems and decoding.on_error == "stop":
        raise DataError(problem_message(cells, decoding.name, *problems[0]))
    return cells.stack(arrays, decoding)


def sampled_batches(cells: Cells, column: pd.Series, decoding, empty: str) -> Iterator[list[np.ndarray]]:
    """The readable cells of a seeded sample of at most STATS_SAMPLE present training cells, STATS_BATCH
    at a time: what the statistics are fitted on. No present cell raises `empty`; an unreadable one
    raises with on_error: stop."""
    present = column[~missing_mask(column)]
    if present.empty:
        raise DataError(empty)
    count = min(len(present), STATS_SAMPLE)
    positions = np.sort(np.random.default_rng(0).choice(len(present), count, replace=False))
    items = list(zip(present.index[positions], present.iloc[positions]))
    for start in range(0, len(items), STATS_BATCH):
        arrays, problems = decode_all(cells, items[start:start + STATS_BATCH], decoding)
        if problems and decoding.on_error == "stop":
            raise DataError(problem_message(cells, decoding.name, *problems[0]))
        yield [array for array in arrays if array is not None]


class Reader:
    """Reads one feature's column of files or arrays: remembers which files it found unreadable, so
    each is decoded once per feature however often the rows are checked."""

    def __init__(self, cells: Cells):
        self.cells = cells
        self.verdicts: dict[str, str | None] = {}  # file -> why it is unreadable (None: fine)

    def check(self, items: list[tuple[Any, Any]], decoding) -> list[tuple[Any, Any, str]]:
        """Problems of the cells (lazily read columns are checked up front, so a bad file fails now
        rather than in the middle of training)."""
        problems = []
        for row, value in items:
            if is_missing_cell(value):
                continue
            key = str(resolve(value, decoding.root)) if isinstance(value, (str, os.PathLike)) else None
            if key is None or key not in self.verdicts:
                try:
                    self.cells.decode_one(value, decoding)
                    reason = None
                except Unreadable as error:
                    reason = str(error)
                if key is not None:
                    self.verdicts[key] = reason
            else:
                reason = self.verdicts[key]
            if reason:
                problems.append((row, value, reason))
        return problems

    def report(self, problems: list, total: int, decoding, consequence: str) -> None:
        """on_error: stop raises on the first problem; skip warns, naming a few (the warning points at
        the caller of the feature's method, two frames up)."""
        if not problems:
            return
        if decoding.on_error == "stop":
            raise DataError(problem_message(self.cells, decoding.name, *problems[0]))
        listed = "; ".join(f"row {row} {self.cells.describe(value)}: {reason}" for row, value, reason in problems[:3])
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        warnings.warn(f"column '{decoding.name}': {len(problems)} of {total} rows hold no readable {self.cells.noun} "
                      f"({listed}{more}); {consequence} (on_error: skip)", stacklevel=4)

    def bad_rows(self, column: pd.Series, decoding) -> np.ndarray:
        """True for rows whose cell cannot be read, with on_error: skip (the rows are then left out
        of training and evaluation); with on_error: stop, none (reading them raises instead)."""
        mask = np.zeros(len(column), dtype=bool)
        if decoding.on_error == "skip":
            problems = self.check(list(zip(range(len(column)), column)), decoding)
            mask[[position for position, _, _ in problems]] = True
            labelled = [(column.index[position], value, reason) for position, value, reason in problems]
            self.report(labelled, len(column), decoding, "these rows are left out")
        return mask

    def transform(self, column: pd.Series, options, decoding, cell_bytes: int, fill: str) -> torch.Tensor | LazyColumn:
        """The column decoded up front (cache: yes, or auto when its `cell_bytes` per cell fit in
        CACHE_LIMIT), else a LazyColumn checked now and decoded batch by batch. `options`: the
        feature's config (missing, cache); `fill`: what an empty or skipped cell reads as."""
        if options.missing == "error":
            raise_if_missing(column, decoding.name)
        items = list(zip(column.index, column))
        consequence = f"they are read as {fill}"
        if options.cache == "yes" or (options.cache == "auto" and len(items) * cell_bytes <= CACHE_LIMIT):
            arrays, problems = decode_all(self.cells, items, decoding)
            self.report(problems, len(items), decoding, consequence)
            return self.cells.stack(arrays, decoding)
        self.report(self.check(items, decoding), len(items), decoding, consequence)
        return LazyColumn(items, partial(decode_rows, self.cells, decoding))

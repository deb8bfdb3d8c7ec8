"""Columns as the network reads them: `LazyColumn` (file-backed cells decoded batch by batch) and the
mini-batches of a table of tensors. Only torch and the standard library, so the type files import it
at the top (lamina.data re-exports it for the rest of lamina)."""
from __future__ import annotations

from typing import Callable, Iterator

import torch


class LazyColumn:
    """A column decoded batch by batch as it is read (e.g. image files), so a data set larger than
    memory trains. Indexing with row positions returns a tensor. `decode` must be a module-level
    function (or a functools.partial of one) so DataLoader worker processes can run it."""

    def __init__(self, values: list, decode: Callable[[list], torch.Tensor]):
        self.values, self.decode = values, decode

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index) -> torch.Tensor:
        positions = range(len(self.values))[index] if isinstance(index, slice) else index.tolist()
        return self.decode([self.values[position] for position in positions])


class Chunks(torch.utils.data.Dataset):
    """The mini-batches of a table as a Dataset of whole batches, for DataLoader workers."""

    def __init__(self, table: dict, indices: list):
        self.table, self.indices = table, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict:
        index = self.indices[item]
        return {part: {name: rows(column, index) for name, column in columns.items()}
                for part, columns in self.table.items()}


def rows(column, index):
    """The rows of a column at `index` (positions or a slice). `index_select` costs about half of
    `column[positions]`, whose indexing rules take longer to parse; this runs per column per batch."""
    if isinstance(column, torch.Tensor) and isinstance(index, torch.Tensor):
        return column.index_select(0, index)
    return column[index]


def token_lengths(table: dict) -> torch.Tensor | None:
    """Tokens per row summed over the token-id columns (2-D int64, 0 = padding), or None."""
    columns = [column for columns in table.values() for column in columns.values()
               if isinstance(column, torch.Tensor) and column.ndim == 2 and column.dtype == torch.int64]
    return sum((column != 0).sum(1) for column in columns) if columns else None


def shuffled_batches(table: dict, size: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Random batches. With token sequences, rows of similar length are batched together (within
    windows of 50 random batches, the batches then shuffled): encoders trim each batch to its
    longest row, so less padding means less work."""
    order = torch.randperm(size, generator=generator)
    lengths = token_lengths(table)
    if lengths is None:
        return [order[start:start + batch_size] for start in range(0, size, batch_size)]
    window = 50 * batch_size
    groups = []
    for start in range(0, size, window):
        rows = order[start:start + window]
        rows = rows[torch.argsort(lengths[rows], stable=True)]
        groups.extend(rows[offset:offset + batch_size] for offset in range(0, len(rows), batch_size))
    return [groups[position] for position in torch.randperm(len(groups), generator=generator).tolist()]


class Stream:
    """A table too large for memory, read batch by batch from its files (lamina/streaming.py): what
    train.fit needs of it is its row count and its batches, like an in-memory table's."""

    rows: int = 0

    def batches(self, batch_size: int, generator: torch.Generator | None, workers: int,
                shard: tuple[int, int]) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
        raise NotImplementedError


def batches(table: dict | Stream, batch_size: int, generator: torch.Generator | None = None,
            workers: int = 0, shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
    """Mini-batches of a table; shuffled when a generator is given. Slicing whole tensors (rather
    than collating rows) keeps the per-batch cost close to a hand-written loop; lazily decoded
    columns are read in `workers` background processes. `shard` (rank, world size): under
    DistributedDataParallel each rank takes its own share of one permutation that every rank draws
    alike (the same generator seed), the same number of batches on every rank (up to world - 1 rows
    an epoch are left out, different ones each epoch), so the ranks step together."""
    if isinstance(table, Stream):
        yield from table.batches(batch_size, generator, workers, shard)
        return
    size = row_count(table)
    rank, world = shard
    if world > 1:
        order = torch.randperm(size, generator=generator) if generator is not None else torch.arange(size)
        mine = order[:size // world * world][rank::world]
        indices = [mine[start:start + batch_size] for start in range(0, len(mine), batch_size)]
    elif generator is None:
        indices = [slice(start, start + batch_size) for start in range(0, size, batch_size)]
    else:
        indices = shuffled_batches(table, size, batch_size, generator)
    chunks = Chunks(table, indices)
    lazy = any(isinstance(column, LazyColumn) for columns in table.values() for column in columns.values())
    if lazy and workers > 0:
        yield from torch.utils.data.DataLoader(chunks, batch_size=None, num_workers=workers)
    else:
        yield from (chunks[item] for item in range(len(chunks)))


def row_count(table: dict[str, dict[str, torch.Tensor]] | Stream) -> int:
    if isinstance(table, Stream):
        return table.rows
    return len(next(iter(table["inputs"].values())))

"""The `id` data type: high-cardinality identifiers (users, items, merchants) in, as learned
embeddings. Ids seen often enough in training get a row of their own; rare ids and ids never
seen share hash buckets, so a new user or item still gets a trained vector, never an error.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, base, classic
from lamina.features.common import as_strings, missing_mask, raise_if_missing
from lamina.features.request import RequestField, Widget, as_text

CAN_BE_OUTPUT = False
CAN_BE_INPUT = True
READ_AS = "string"  # a file's column is read as text: the id "007" is not the number 7
MISSING_ROW = 0  # embedding rows: 0 missing, 1..V the kept ids, then the hash buckets


class Options(BaseModel):
    """Options of an id feature."""

    model_config = ConfigDict(extra="forbid")
    min_count: int = Field(2, ge=1, description="ids seen fewer times in training share the hash buckets "
                                                "(their own rows would barely train)")
    max_size: int | None = Field(None, ge=1, description="keep at most this many of the most frequent ids")
    hash_buckets: int = Field(64, ge=1, le=1_000_000, description="shared rows for rare and never-seen ids")
    embedding_size: int = Field(32, ge=1, description="width of each id's vector")
    missing: Literal["own", "drop", "error"] = Field(
        "own", description="own: a missing id has a row of its own; drop removes the rows while training")


def bucket_of(values: np.ndarray, buckets: int) -> np.ndarray:
    """A stable hash bucket per id (pandas' keyed SipHash: the same in every process and version)."""
    return (pd.util.hash_array(values.astype(object)) % np.uint64(buckets)).astype(np.int64)


class Encoder(nn.Module):
    def __init__(self, rows: int, embedding_size: int):
        super().__init__()
        self.embedding = nn.Embedding(rows, embedding_size)
        self.output_size = embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,) long -> (B, E)
        return self.embedding(x)


class Feature(base.Feature):
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    def fit(self, column: pd.Series) -> None:
        options = self.config
        if options.missing == "error":
            raise_if_missing(column, options.name)
        counts = as_strings(column[~missing_mask(column)]).value_counts()
        if counts.empty:
            raise DataError(f"column '{options.name}' has no ids in the training split; fill the column or "
                            f"remove the feature")
        counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        kept = counts[counts >= options.min_count]
        kept = kept.iloc[: options.max_size] if options.max_size else kept
        self.stats = {"ids": kept.index.tolist(), "distinct_in_training": int(len(counts)),
                      "rows_with_kept_ids": int(kept.sum()), "rows": int(counts.sum())}

    def transform(self, column: pd.Series) -> torch.Tensor:
        options = self.config
        if options.missing == "error":
            raise_if_missing(column, options.name)
        ids = self.stats["ids"]
        values = as_strings(column).to_numpy(dtype=object)
        rows = pd.Index(ids).get_indexer(values).astype(np.int64) + 1  # 1..V, 0 where not kept
        rare = rows == 0
        if rare.any():
            rows[rare] = 1 + len(ids) + bucket_of(values[rare], options.hash_buckets)
        rows[missing_mask(column)] = MISSING_ROW
        return torch.from_numpy(rows)  # (N,)

    def encoder(self) -> nn.Module:
        return Encoder(1 + len(self.stats["ids"]) + self.config.hash_buckets, self.config.embedding_size)

    # ---- classic baseline ----
    def classic_encoder(self, style: str, seed: int) -> classic.Codes:
        """The most frequent ids as codes, the rest as unseen."""
        return classic.Codes(self.config.name, style, "native categorical codes (most frequent ids)"
                             if style == classic.TREE else "one-hot (most frequent ids)")

    # ---- serving ----
    def request_field(self) -> RequestField:
        example = (self.stats["ids"] or ["new"])[0]
        return RequestField(
            str, f"an id; {len(self.stats['ids'])} ids have their own vector, others (new ones too) share hash buckets",
            example, Widget("textarea", example), nullable=self.config.missing != "error", read=as_text,
            shown=str | int)

    # ---- explanation ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        missing = torch.full((len(values),), MISSING_ROW, dtype=torch.long)  # the vector of a missing id
        return attribution.Point.at_output(self.config.name, encoder, values, missing)

    def baseline_description(self) -> str:
        return "the vector of a missing id"

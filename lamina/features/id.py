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
from lamina.features.common import as_strings, missing_mask, plain_texts, raise_if_missing
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

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Identifiers that repeat (users, merchants): 0.9 under an id's name ('user_id', 'userId') with
        20 distinct values or more (numbers too); texts of one word with over 1000 distinct values 0.85,
        over 200 0.72 (a category is as likely), when they repeat 1.5 times on average or more. Never
        when every value is different (a row's own key: nothing to learn) or the values hold spaces."""
        values, distinct = column.values, column.distinct
        if distinct == len(values) or distinct < 20:
            return None
        repeats = f"{distinct} distinct values, each in {len(values) / distinct:.1f} rows on average"
        if column.named_like_id and (column.numbers is None or (column.numbers == np.round(column.numbers)).all()):
            return base.Sniff(0.9, f"an identifier: {repeats}")
        if len(values) < 1.5 * distinct:  # hardly any value seen twice: more likely a row's key than an id
            return None
        if column.numbers is not None or not column.all_text or column.strings.str.contains(" ").mean() > 0.1:
            return None
        if distinct > 200:
            return base.Sniff(0.85 if distinct > 1000 else 0.72, f"many values that repeat: {repeats}")
        return None

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

    def prepare(self) -> dict:
        """The kept ids as a dict {id: embedding row}."""
        return {value: position + 1 for position, value in enumerate(self.stats["ids"])}

    def encode_rows(self, values: list) -> torch.Tensor:
        """As transform: a kept id's row, a rare one's hash bucket, MISSING_ROW where missing."""
        texts = plain_texts(values)
        if texts is None or (self.config.missing == "error" and None in texts):
            return self.transform(pd.Series(values))
        kept = self.prepared()
        rows = [MISSING_ROW if text is None else kept.get(text, -1) for text in texts]
        rare = [position for position, row in enumerate(rows) if row < 0]
        if rare:
            unseen = np.array([texts[position] for position in rare], dtype=object)
            buckets = bucket_of(unseen, self.config.hash_buckets)
            for position, bucket in zip(rare, buckets.tolist()):
                rows[position] = 1 + len(kept) + bucket
        return torch.tensor(rows, dtype=torch.int64)  # (N,)

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

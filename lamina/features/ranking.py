"""The `ranking` data type: the item a user chose (watched, bought, clicked), out, as a ranked list
of recommendations. A two-tower model: lamina's input and hidden layers are the user tower (user
id, demographics, context); this file holds the item tower (an embedding per item plus the items'
own side features, e.g. genres) and scores every item by a dot product with the user's vector.
Trained on implicit feedback with a softmax over every item, or for large catalogues sampled
softmax: each row's item against random negative items.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lamina.errors import DataError
from lamina.features import base, classic
from lamina.features.common import as_strings, missing_mask

CAN_BE_OUTPUT = True
CAN_BE_INPUT = False
READ_AS = "string"  # item ids are text: the id "007" is not the number 7
MAIN_K = 10  # hit rate and NDCG are always also measured at 10, the field's usual cut-off
FULL_SOFTMAX_ITEMS = 20_000  # negatives: auto scores every item up to this catalogue size (better and, on
AUTO_NEGATIVES = 1_000       # MovieLens' 1,682 movies, faster than 500 sampled ones); beyond, this many random


class Options(BaseModel):
    """Options of a ranking output."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(description="the input column that identifies the user: their history is excluded from "
                                  "recommendations and evaluation rankings")
    item_inputs: list[dict[str, Any]] = Field(
        default_factory=list, description="the items' own side features (columns of the same data, one value per "
                                          "item), each written like an input, e.g. {name: genres, type: set}")
    embedding_size: int = Field(64, ge=2, description="width of the space where users and items meet")
    negatives: int | Literal["auto"] = Field(
        "auto", description="random negative items per training batch (sampled softmax); 0: every item of the "
                            f"catalogue (full softmax); auto: every item up to {FULL_SOFTMAX_ITEMS:,} items, else "
                            f"{AUTO_NEGATIVES:,} random ones")
    min_count: int = Field(1, ge=1, description="items chosen fewer times in training are left out of the catalogue")
    k: int = Field(10, ge=1, le=1000, description="how many items to recommend, and the cut-off of the metrics")

    @model_validator(mode="after")
    def _check(self) -> "Options":
        from lamina.features import REGISTRY, input_types  # late: this module is itself one of the registry's

        allowed = [name for name in input_types() if REGISTRY[name].Feature.describes_items]
        for position, item_input in enumerate(self.item_inputs):
            kind = item_input.get("type") if isinstance(item_input, dict) else None
            if kind not in allowed:
                raise ValueError(f"item_inputs[{position}]: type {kind!r} cannot describe items; use one of "
                                 f"{', '.join(allowed)}")
        return self  # each item input's own options are checked by the config (see Feature.nested_inputs)


def _item_features(options: Options, stats: dict | None) -> list:
    from lamina import features
    from lamina.config import INPUT_MODELS

    built = [features.build(INPUT_MODELS[item["type"]].model_validate(item)) for item in options.item_inputs]
    for feature, saved in zip(built, (stats or {}).get("item_stats", [])):
        feature.stats = saved
    return built


def _json_values(column: pd.Series) -> list:
    """Cells as JSON-able values (None for missing), to keep the item table in stats.json."""
    values = column.astype(object).where(~missing_mask(column), None)
    return [value.item() if isinstance(value, np.generic) else value for value in values.tolist()]


class Head(nn.Module):
    """Output layer: the user's vector (from the hidden layers) against every item's vector."""

    def __init__(self, input_size: int, item_count: int, options: Options, item_features: list,
                 item_tensors: list[torch.Tensor]):
        super().__init__()
        size = options.embedding_size
        self.negatives = options.negatives if options.negatives != "auto" else \
            0 if item_count <= FULL_SOFTMAX_ITEMS else AUTO_NEGATIVES
        self.user = nn.Linear(input_size, size)
        self.items = nn.Embedding(item_count, size)
        nn.init.normal_(self.items.weight, std=0.05)
        self.bias = nn.Parameter(torch.zeros(item_count))  # how popular each item is, apart from the user
        self.side_encoders = nn.ModuleList(feature.encoder() for feature in item_features)
        width = sum(encoder.output_size for encoder in self.side_encoders)
        self.side = nn.Sequential(nn.Linear(width, size), nn.ReLU(), nn.Linear(size, size)) if width else None
        for position, tensor in enumerate(item_tensors):  # rebuilt from stats: not part of the weights
            self.register_buffer(f"side_{position}", tensor, persistent=False)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:  # -> (I, E)
        vectors = self.items.weight if items is None else self.items(items)
        if self.side is None:
            return vectors
        parts = []
        for position, encoder in enumerate(self.side_encoders):
            side = getattr(self, f"side_{position}")
            parts.append(encoder(side if items is None else side.index_select(0, items)))
        return vectors + self.side(torch.cat(parts, dim=1))

    def forward(self, hidden: torch.Tensor, context=None) -> torch.Tensor:
        target = context.target if context is not None else None
        user = self.user(hidden)  # (B, E)
        item_count = self.bias.shape[0]
        if not (self.training and target is not None and 0 < self.negatives < item_count - 1):
            return user @ self.item_vectors().T + self.bias  # (B, I): every item
        positive = target[:, 0].clamp(min=0)  # rows without a catalogue item are masked in the loss
        negative = torch.randint(0, item_count, (self.negatives,), device=hidden.device)  # (K,)
        positive_logit = (user * self.item_vectors(positive)).sum(1) + self.bias[positive]  # (B,)
        negative_logits = user @ self.item_vectors(negative).T + self.bias[negative]  # (B, K)
        accidental = negative.unsqueeze(0) == positive.unsqueeze(1)  # a negative that is the row's own item
        negative_logits = negative_logits.masked_fill(accidental, float("-inf"))
        return torch.cat([positive_logit.unsqueeze(1), negative_logits], dim=1)  # (B, 1 + K), positive first


class Feature(base.OutputFeature):
    """An item as an output: the catalogue, item side features and the users' histories are learned
    from the training rows."""
    MAIN_METRIC = "ndcg_at_10"

    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    def nested_inputs(self) -> dict[str, list[dict]]:
        return {"item_inputs": list(self.config.item_inputs)}

    def reads(self) -> list[str]:
        """Columns besides its own that fit() and target() read (given as one frame)."""
        return [self.config.user] + [item["name"] for item in self.config.item_inputs]

    def fit(self, frame: pd.DataFrame) -> None:
        options, name = self.config, self.config.name
        frame = frame[~missing_mask(frame[name])]  # rows without an item teach nothing (lamina drops them)
        items = as_strings(frame[name])
        counts = items.value_counts()
        counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        catalogue = counts[counts >= options.min_count].index.tolist()
        if len(catalogue) < 2:
            raise DataError(f"ranking output '{name}' has {len(catalogue)} item(s) chosen at least min_count="
                            f"{options.min_count} times in the training split; at least 2 are needed to rank")
        first_rows = frame.loc[~items.duplicated(keep="last").to_numpy()]  # each item's latest side values
        first_rows = first_rows.set_axis(as_strings(first_rows[name])).reindex(catalogue)
        item_features = _item_features(options, None)
        for feature in item_features:
            feature.fit(first_rows[feature.config.name].reset_index(drop=True))
        self.stats = {"items": catalogue, "counts": [int(counts[item]) for item in catalogue],
                      "item_table": {f.config.name: _json_values(first_rows[f.config.name]) for f in item_features},
                      "item_stats": [feature.stats for feature in item_features], **self._history(frame, catalogue)}

    def _history(self, frame: pd.DataFrame, catalogue: list[str]) -> dict:
        """Each training user's chosen catalogue items, as compressed rows (offsets into one list)."""
        users = as_strings(frame[self.config.user])
        positions = pd.Index(catalogue).get_indexer(as_strings(frame[self.config.name]))
        pairs = pd.DataFrame({"user": users.to_numpy(), "item": positions})
        pairs = pairs[(pairs["item"] >= 0) & ~missing_mask(frame[self.config.user])].drop_duplicates()
        grouped = pairs.groupby("user", sort=True)["item"].agg(lambda chosen: sorted(chosen.tolist()))
        lengths = grouped.map(len).to_numpy()
        return {"users": grouped.index.tolist(), "history_offsets": [0] + np.cumsum(lengths).tolist(),
                "history_items": [item for chosen in grouped for item in chosen]}

    def remember_profiles(self, frame: pd.DataFrame, input_names: list[str]) -> None:
        """Each training user's latest values of the other inputs (age, occupation, ...), so that
        recommend() can be asked with bare user ids."""
        others = [name for name in input_names if name != self.config.user]
        latest = frame.loc[~as_strings(frame[self.config.user]).duplicated(keep="last").to_numpy()]
        latest = latest.set_axis(as_strings(latest[self.config.user])).reindex(self.stats["users"])
        self.stats["profiles"] = {name: _json_values(latest[name]) for name in others}

    def profiles(self, users: list[str]) -> pd.DataFrame:
        """Rows of inputs for these user ids: remembered values, missing for users never seen."""
        known = pd.Index(self.stats["users"])
        positions = known.get_indexer(users)
        columns = {self.config.user: users}
        for name, values in self.stats.get("profiles", {}).items():
            array = np.array(values + [None], dtype=object)
            columns[name] = array[positions]  # -1 picks the trailing None
        return pd.DataFrame(columns)

    def transform(self, column: pd.Series) -> torch.Tensor:
        raise DataError(f"'{self.config.name}' is a ranking and can only be an output")

    def encoder(self) -> nn.Module:
        raise DataError(f"'{self.config.name}' is a ranking and can only be an output")

    def item_tensors(self, item_features: list) -> list[torch.Tensor]:
        table = pd.DataFrame(self.stats["item_table"])
        return [feature.transform(table[feature.config.name]) for feature in item_features]

    def head(self, trunk: base.Trunk) -> nn.Module:
        item_features = _item_features(self.config, self.stats)
        return Head(trunk.size, len(self.stats["items"]), self.config, item_features, self.item_tensors(item_features))

    def user_positions(self, users: pd.Series) -> np.ndarray:
        """Each user's row in the histories, -1 for users with none."""
        return pd.Index(self.stats["users"]).get_indexer(as_strings(users)).astype(np.int64)

    def target(self, frame: pd.DataFrame) -> torch.Tensor:
        items = pd.Index(self.stats["items"]).get_indexer(as_strings(frame[self.config.name])).astype(np.int64)
        users = self.user_positions(frame[self.config.user])
        return torch.from_numpy(np.stack([items, users], axis=1))  # (N, 2): catalogue item or -1, user or -1

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = target[:, 0] >= 0
        if not bool(known.any()):
            return output.sum() * 0.0
        output, items = output[known], target[known, 0]
        if output.shape[1] != len(self.stats["items"]):  # sampled softmax: the positive is column 0
            items = torch.zeros_like(items)
        return nn.functional.cross_entropy(output, items)

    def _history_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The histories as tensors, made once per stats (rebuilding them per call costs milliseconds)."""
        key = id(self.stats.get("history_items"))
        if getattr(self, "_history_cache", (None,))[0] != key:
            self._history_cache = (key, torch.tensor(self.stats["history_offsets"]),
                             torch.tensor(self.stats["history_items"], dtype=torch.long))
        return self._history_cache[1], self._history_cache[2]

    def seen_mask(self, users: torch.Tensor, item_count: int) -> torch.Tensor:
        """(B, I) True where the row's user chose that item in training."""
        offsets, chosen = self._history_tensors()
        known = users >= 0
        starts = torch.where(known, offsets[users.clamp(min=0)], 0)
        lengths = torch.where(known, offsets[users.clamp(min=0) + 1] - starts, 0)
        rows = torch.repeat_interleave(torch.arange(len(users)), lengths)
        within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        mask = torch.zeros(len(users), item_count, dtype=torch.bool)
        mask[rows, chosen[torch.repeat_interleave(starts, lengths) + within]] = True
        return mask

    def summary(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per row: the rank of its item among the items its user has not chosen in training
        (ties count half), then the top k item positions. Kept instead of (B, I) scores."""
        items, known = target[:, 0].clamp(min=0), target[:, 0] >= 0
        mask = self.seen_mask(target[:, 1], output.shape[1])
        mask[torch.arange(len(items)), items] = False  # a repeat of a training choice still counts
        scores = output.detach().masked_fill(mask, float("-inf"))
        own = scores.gather(1, items.unsqueeze(1))  # (B, 1)
        rank = 1 + (scores > own).sum(1) + ((scores == own).sum(1) - 1) / 2  # (B,)
        rank = torch.where(known, rank.double(), torch.tensor(math.inf, dtype=torch.double))
        top = scores.topk(min(self.config.k, scores.shape[1]), dim=1).indices.double()
        return torch.cat([rank.unsqueeze(1), top], dim=1)  # (B, 1 + k)

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        rank, top = output[:, 0].numpy(), output[:, 1:].numpy()
        result = {}
        for k in sorted({self.config.k, MAIN_K}):
            hit = rank <= k
            result[f"hit_rate_at_{k}"] = float(hit.mean()) if len(rank) else 0.0
            result[f"ndcg_at_{k}"] = float(np.where(hit, 1.0 / np.log2(np.minimum(rank, 1e9) + 1), 0.0).mean()) \
                if len(rank) else 0.0
        result["mrr"] = float((1.0 / rank).mean()) if len(rank) else 0.0
        result[f"coverage_at_{self.config.k}"] = float(len(np.unique(top)) / len(self.stats["items"]))
        result["unknown_item_rate"] = float(np.isinf(rank).mean()) if len(rank) else 0.0
        return result

    # ---- classic baseline and comparison: popularity and PureSVD (lamina.recommenders) ----
    def classic_task(self) -> classic.Task:
        return classic.Task("ranking")

    def bootstrap_metric(self) -> tuple:
        """Each row's NDCG@10 from its `summary` (its item's rank); the mean over rows is ndcg_at_10."""
        def per_row(summary: torch.Tensor) -> np.ndarray:
            rank = summary.numpy()[:, 0]
            return np.where(rank <= MAIN_K, 1.0 / np.log2(np.minimum(rank, 1e9) + 1), 0.0)

        return per_row, lambda truth, values: float(np.mean(values))

    def recommends(self) -> bool:
        return True

    def decode_rows(self, output: torch.Tensor, rows: pd.DataFrame) -> dict[str, Any]:
        return self.recommend(output, rows[self.config.user])  # a user's training choices are left out

    def decode_reads_rows(self) -> bool:
        return True

    def recommend(self, output: torch.Tensor, users: pd.Series | None, k: int | None = None,
                  exclude_seen: bool = True) -> dict[str, Any]:
        """The top k items per row (as ids) and their scores; a user's training items are left out."""
        output, k = output.detach(), min(k or self.config.k, output.shape[1])
        if exclude_seen and users is not None:
            positions = torch.from_numpy(self.user_positions(users))
            output = output.masked_fill(self.seen_mask(positions, output.shape[1]), float("-inf"))
        scores, positions = output.topk(k, dim=1)
        items = np.array(self.stats["items"], dtype=object)
        name = self.config.name
        return {name: [list(items[row]) for row in positions.numpy()],
                f"{name}_scores": [[float(value) for value in row] for row in scores.numpy()]}

    def decode(self, output: torch.Tensor) -> dict[str, Any]:
        return self.recommend(output, None)

    # ---- explanation ----
    def prediction_summary(self) -> dict:
        return {"predicts": f"ranks the {len(self.stats['items'])} items of '{self.name}' for each "
                            f"'{self.config.user}' and recommends the top {self.config.k}"}

    def explained_score(self, label: int | None) -> str:
        which = repr(self.stats["items"][label]) if label is not None else \
            "each row's best-scored item (its training choices included)"
        return f"score of {self.config.name} = {which}"

    def explained_labels(self) -> list:
        return self.stats["items"]

"""Where explain() attributes an input (its *point*) and how the scores there fold back into the
row's result: one class per layout of the point (an encoder's output vector, pixels, word tokens,
time steps). An input type's `attribution_point` builds one; lamina/explain.py runs Captum on them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

ABLATION_GROUPS = 16  # an image is ablated in at most this many x this many patches
RECONSTRUCTION = "reconstruction_error"  # the method of outputs explained by their reconstruction errors


def plain(value: Any) -> Any:
    """A cell as a JSON value for the report (an image array is left out)."""
    if isinstance(value, np.ndarray):
        return None if value.ndim > 1 else [plain(item) for item in value]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def logit_of(name: str, labels: list, label: int | None) -> str:
    """The explained score of a classifier's output in words: one label's logit, or each row's predicted."""
    which = repr(labels[label]) if label is not None else "the predicted label of each row"
    return f"logit of {name} = {which}"


def _identity(vector: torch.Tensor) -> torch.Tensor:
    return vector


@dataclass
class Point:
    """One input at one point of its encoder. The method varies `values` (B, ...) between `baseline`
    and them; `finish(values[, padding])` runs the rest of the encoder to its output vector (B, D).
    This class is a point at the encoder's output vector (B, D): one score per row, summed over D."""

    name: str
    values: torch.Tensor
    baseline: torch.Tensor
    finish: Callable[..., torch.Tensor] = _identity
    padding: torch.Tensor | None = None  # (B, T), tokens only: True where a position is padding

    @classmethod
    @torch.no_grad()
    def at_output(cls, name: str, encoder: nn.Module, values: torch.Tensor, baseline_input: torch.Tensor) -> Point:
        """At the encoder's output: discrete inputs (codes, ±1, multi-hot) cannot be moved in small
        steps, but their vectors can. `baseline_input` is the input whose vector is the baseline."""
        return cls(name, encoder(values).float(), encoder(baseline_input).float())

    @classmethod
    def at_input(cls, name: str, encoder: nn.Module, values: torch.Tensor, baseline: torch.Tensor) -> Point:
        """At the input itself: float inputs whose every element means something (pixels, the time
        steps of a sequence); `baseline` broadcasts to the values."""
        return cls(name, values.float(), baseline.float().expand_as(values).contiguous(), encoder)

    def ablation_mask(self, start: int) -> torch.Tensor:
        """Feature-ablation groups numbered from `start`, broadcast over the values: the whole vector."""
        return torch.full((1, self.values.shape[1]), start)

    def record(self, row: dict, position: int, attributions: torch.Tensor, cell: Any) -> None:
        """Put the scores of the row at `position` of the chunk (`attributions` shaped like `values`)
        into its result `row`; `cell` is the row's raw value of this input."""
        row["values"][self.name] = plain(cell)
        row["scores"][self.name] = float(attributions[position].sum())


@dataclass
class Pixels(Point):
    """At an image's pixels (B, C, H, W) or a sound's log-mel spectrogram (B, 1, mels, frames): a heat
    map per row (summed over the channels), drawn over the picture by the report."""

    def ablation_mask(self, start: int) -> torch.Tensor:  # one group per patch
        height, width = self.values.shape[2], self.values.shape[3]
        rows = torch.arange(height) * min(ABLATION_GROUPS, height) // height
        columns = torch.arange(width) * min(ABLATION_GROUPS, width) // width
        return start + (rows[:, None] * min(ABLATION_GROUPS, width) + columns[None, :]).view(1, 1, height, width)

    def record(self, row: dict, position: int, attributions: torch.Tensor, cell: Any) -> None:
        heat_map = attributions[position].sum(0)  # (H, W): summed over channels
        row["heat_maps"][self.name] = heat_map.tolist()
        row["scores"][self.name] = float(heat_map.sum())


@dataclass
class Tokens(Point):
    """At a text's token embeddings (B, T, E): a score per word token, read back as strings."""

    tokens: list[list[str]] = field(default_factory=list)  # the word tokens of each row
    words: torch.Tensor | None = None  # (B, T): True where `tokens` has an entry

    def ablation_mask(self, start: int) -> torch.Tensor:  # one group per position
        return start + torch.arange(self.values.shape[1]).view(1, -1, 1)

    def record(self, row: dict, position: int, attributions: torch.Tensor, cell: Any) -> None:
        row["values"][self.name] = plain(cell)
        per_token = attributions[position].sum(-1)  # (T,); markers score 0 with a baseline method
        row["tokens"][self.name] = [[token, float(score)] for token, score in
                                    zip(self.tokens[position], per_token[self.words[position]])]
        row["scores"][self.name] = float(per_token[~self.padding[position]].sum())


@dataclass
class Steps(Point):
    """At a sequence's time steps (B, T, C + 1), the last channel 1 at real steps: a score per real
    time step, summed over its channels."""

    def ablation_mask(self, start: int) -> torch.Tensor:  # one group per position
        return start + torch.arange(self.values.shape[1]).view(1, -1, 1)

    def record(self, row: dict, position: int, attributions: torch.Tensor, cell: Any) -> None:
        row["values"][self.name] = plain(cell)
        real = self.values[position, :, -1] > 0  # (T,)
        per_step = attributions[position][real].sum(-1)
        row["steps"][self.name] = per_step.tolist()
        row["scores"][self.name] = float(per_step.sum())

"""The input layer of the `timeseries` data type: per-channel normalisation, then a 1-D CNN, a
bidirectional GRU or a transformer over the time steps, pooled (masked mean and max) to a vector,
beside per-channel summary statistics of the real steps. Modules only: not a registered type (see
timeseries.py)."""
from __future__ import annotations

import math

import torch
from torch import nn


class Convolutions(nn.Module):
    """Dilated 1-D convolutions (dilation 1, 2, 4, ...: the receptive field grows exponentially with
    depth), each conv -> batch norm -> GELU with a skip connection; padding kept at zero between layers
    so it never leaks into real steps."""

    def __init__(self, channels: int, width: int, layers: int, kernel_size: int, dropout: float):
        super().__init__()
        self.input = nn.Conv1d(channels, width, 1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv1d(width, width, kernel_size, padding="same", dilation=2 ** layer),
                          nn.BatchNorm1d(width), nn.GELU(), nn.Dropout(dropout)) for layer in range(layers))

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, T, C), (B, T) -> (B, T, W)
        keep = mask.unsqueeze(1)  # (B, 1, T)
        x = self.input(values.transpose(1, 2)) * keep  # (B, W, T)
        for layer in self.layers:
            x = (x + layer(x)) * keep
        return x.transpose(1, 2)


class Recurrent(nn.Module):
    """A bidirectional GRU over the real steps only (packed, so padding never enters the state)."""

    def __init__(self, channels: int, width: int, layers: int, dropout: float):
        super().__init__()
        self.gru = nn.GRU(channels, width // 2, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # -> (B, T, W)
        lengths = mask.sum(1).long().clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(values, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=values.shape[1])
        return states


def sinusoids(length: int, width: int, device: torch.device) -> torch.Tensor:
    """The fixed positional encodings of Vaswani et al. 2017 (any length, nothing learned): (T, W)."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, :width // 2]
    return table


class Attention(nn.Module):
    """Pre-norm transformer encoder layers; padded steps are masked out of attention."""

    def __init__(self, channels: int, width: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.input = nn.Linear(channels, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # -> (B, T, W)
        x = self.input(values)  # (B, T, W)
        x = x + sinusoids(x.shape[1], x.shape[2], x.device)
        return self.layers(x, src_key_padding_mask=mask < 0.5)


def standardise_rows(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's channels to zero mean and unit std over its real steps (B, T, C); a row of one step
    or a constant channel keeps unit scale. Applied after the training-split normalisation, so the
    floor on the std is on a known scale."""
    weights = mask.unsqueeze(-1)  # (B, T, 1)
    count = weights.sum(1, keepdim=True).clamp_min(1.0)
    mean = (values * weights).sum(1, keepdim=True) / count  # (B, 1, C)
    variance = (((values - mean) * weights) ** 2).sum(1, keepdim=True) / count
    return (values - mean) / variance.sqrt().clamp_min(0.1) * weights


def normalised(sequences: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, per_sequence: bool) -> torch.Tensor:
    """(B, T, C + 1) raw values + mask -> (B, T, C): the training split's per-channel normalisation
    (mean, std (1, 1, C)), then each row's own with `normalize: sequence`; zero at padding."""
    mask = sequences[..., -1]  # (B, T)
    values = (sequences[..., :-1] - mean) / std * mask.unsqueeze(-1)
    return standardise_rows(values, mask) if per_sequence else values


SUMMARIES = ("mean", "std", "min", "max", "first", "last")  # per channel, then the length: 6 C + 1 numbers


def summary_statistics(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per channel mean, std, min, max, first and last value over each row's real steps, then the
    number of real steps: (B, T, C), (B, T) -> (B, 6 C + 1), laid out statistic by statistic as
    SUMMARIES names them. Padding changes none of them (a row with no real step gives zeros)."""
    weights = mask.unsqueeze(-1)  # (B, T, 1)
    length = mask.sum(1, keepdim=True)  # (B, 1)
    count = length.clamp_min(1.0)
    mean = (values * weights).sum(1) / count  # (B, C)
    variance = (((values - mean.unsqueeze(1)) * weights) ** 2).sum(1) / count
    std = (variance + 1e-10).sqrt()  # the floor keeps the gradient finite at a constant channel (explanations)
    real = weights > 0.5
    low = values.masked_fill(~real, float("inf")).amin(1)  # (B, C)
    high = values.masked_fill(~real, float("-inf")).amax(1)
    low = torch.where(torch.isfinite(low), low, torch.zeros_like(low))
    high = torch.where(torch.isfinite(high), high, torch.zeros_like(high))
    last_step = (length.long() - 1).clamp_min(0)  # (B, 1): real steps come first, padding after them
    last = values.gather(1, last_step.unsqueeze(-1).expand(-1, 1, values.shape[2])).squeeze(1)  # (B, C)
    present = (length > 0).to(values.dtype)  # (B, 1)
    return torch.cat([mean, std, low, high, values[:, 0] * present, last * present, length], dim=1)


class Encoder(nn.Module):
    """(B, T, C + 1) raw values + mask -> normalised -> sequence layers -> masked mean and max -> (B, E),
    then (with `summary`) the summary statistics of the normalised values, standardised with those of
    the training rows -> (B, E + 6 C + 1)."""

    def __init__(self, options, stats: dict):  # options: timeseries.Options
        super().__init__()
        channels = stats["channels"]
        mean = torch.tensor(stats["mean"], dtype=torch.float32) if options.normalize != "none" else \
            torch.zeros(channels)
        std = torch.tensor(stats["std"], dtype=torch.float32) if options.normalize != "none" else \
            torch.ones(channels)
        self.per_sequence = options.normalize == "sequence"
        self.register_buffer("mean", mean.view(1, 1, -1), persistent=False)  # rebuilt from stats.json
        self.register_buffer("std", std.view(1, 1, -1), persistent=False)
        if options.encoder == "cnn":
            self.body = Convolutions(channels, options.width, options.layers, options.kernel_size, options.dropout)
        elif options.encoder == "gru":
            self.body = Recurrent(channels, options.width, options.layers, options.dropout)
        else:
            self.body = Attention(channels, options.width, options.layers, options.heads, options.dropout)
        width = options.width if options.encoder != "gru" else 2 * (options.width // 2)
        self.projection = nn.Linear(2 * width, options.embedding_size)
        # the summary branch: only when its statistics were fitted (a model saved without them has none)
        summary = stats.get("summary") if options.summary else None
        self.summarises = summary is not None
        if self.summarises:
            self.register_buffer("summary_mean", torch.tensor(summary["mean"], dtype=torch.float32).view(1, -1),
                                 persistent=False)  # (1, 6 C + 1), rebuilt from stats.json
            self.register_buffer("summary_std", torch.tensor(summary["std"], dtype=torch.float32).view(1, -1),
                                 persistent=False)
        self.output_size = options.embedding_size + (len(summary["mean"]) if self.summarises else 0)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:  # (B, T, C + 1) -> (B, E)
        longest = max(int(sequences[..., -1].sum(1).max()), 1)  # trim the padding this batch does not need
        sequences = sequences[:, :longest]
        mask = sequences[..., -1]  # (B, T)
        values = normalised(sequences, self.mean, self.std, self.per_sequence)  # (B, T, C)
        states = self.body(values, mask)  # (B, T, W)
        weights = mask.unsqueeze(-1)  # (B, T, 1)
        mean = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, W)
        peak = states.masked_fill(weights < 0.5, float("-inf")).amax(1)  # (B, W)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # a row with no step at all
        encoded = self.projection(torch.cat([mean, peak], dim=1))  # (B, E)
        if not self.summarises:
            return encoded
        summary = (summary_statistics(values, mask) - self.summary_mean) / self.summary_std  # (B, 6 C + 1)
        return torch.cat([encoded, summary], dim=1)

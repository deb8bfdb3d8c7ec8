"""Number columns computed together by one module (the number type's `block()`): filling, normalising and
encoding K columns as a few batched tensor ops instead of ten small ops per column. Its own file only to keep
number.py short; what it computes is the number type's (Encoder and Normalize in number.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from lamina.features.snapshot import Snapshot

if TYPE_CHECKING:
    from lamina.features.number import Encoder


def log_scale(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(1 + |x|): normalize: log's scale, defined for negative numbers too."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


# up to this many rows a Block encodes the members of a shape as one batch; above it, member by member (on
# adult's six periodic columns, at 1,024 rows the batch took 2 to 7 times as long as the members' encoders)
GROUPED_ROWS = 256


class Block(nn.Module):
    """Number columns computed together, wherever they stand among the inputs. Filling and normalising run
    once on a (B, K) stack; members of the same shape (encoding, widths, missing flag) are then encoded as
    one (K', B, ...) batch: one sin/cos, one batched matrix product for their embedding layers. One row
    costs a few tensor ops per shape instead of ten per column, whose Python and dispatch overhead, not
    arithmetic, is the cost of a column (above GROUPED_ROWS rows, periodic and binned members go one by
    one again). The normalisation constants and bin edges are copies (fixed training statistics) held as
    non-persistent buffers; the learned weights are read from the members at every call, so training, a
    device move or loaded weights reach both, and the saved keys stay per encoder."""

    def __init__(self, encoders: list["Encoder"]):
        super().__init__()
        normalizers = [encoder.normalize for encoder in encoders]
        self.register_buffer("fill", torch.tensor([n.fill for n in normalizers], dtype=torch.float32),
                             persistent=False)
        self.register_buffer("factor", torch.stack([n.factor for n in normalizers]).float(), persistent=False)
        self.register_buffer("offset", torch.stack([n.offset for n in normalizers]).float(), persistent=False)
        logs = [n.normalize == "log" for n in normalizers]
        self.register_buffer("log", torch.tensor(logs) if any(logs) and not all(logs) else None, persistent=False)
        self.log_all = all(logs)
        shapes: dict = {}
        for position, encoder in enumerate(encoders):
            key = (encoder.encoding, encoder.embed is not None, encoder.flag_missing, encoder.output_size,
                   0 if encoder.left is None else len(encoder.left),
                   0 if encoder.frequencies is None else len(encoder.frequencies))
            shapes.setdefault(key, []).append(position)
        self.shapes = nn.ModuleList(Shape([encoders[position] for position in positions], positions, len(encoders))
                                    for positions in shapes.values())
        widths = [encoder.output_size for encoder in encoders]
        starts = np.concatenate([[0], np.cumsum(widths)])
        produced = [column for positions in shapes.values() for position in positions
                    for column in range(starts[position], starts[position + 1])]
        order = None if produced == sorted(produced) else torch.argsort(torch.tensor(produced))
        self.register_buffer("order", order, persistent=False)
        self.output_size = int(starts[-1])

    def forward(self, columns: list[torch.Tensor]) -> torch.Tensor:  # K x (B,) -> (B, sum of widths)
        x = torch.stack(columns, dim=1)  # (B, K)
        filled = torch.where(torch.isnan(x), self.fill, x)
        if self.log_all:
            filled = log_scale(filled)
        elif self.log is not None:
            filled = torch.where(self.log, log_scale(filled), filled)
        z = torch.addcmul(self.offset, filled, self.factor)  # (B, K)
        pieces = [shape.encode(z, x) for shape in self.shapes]
        encoded = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)  # (B, sum of widths), by shape
        return encoded if self.order is None else encoded.index_select(1, self.order)  # members' order


class Shape(nn.Module):
    """The members of a Block that share encoding, widths and missing flag, encoded as one batch."""

    def __init__(self, encoders: list["Encoder"], positions: list[int], members: int):
        super().__init__()
        first = encoders[0]
        self.encoding, self.flag_missing = first.encoding, first.flag_missing
        # plain lists, not submodules: the weights stay under their encoders' keys and are read at every call
        self.members = list(encoders)
        self.linears = [encoder.embed[0] for encoder in encoders] if first.embed is not None else None
        self.register_buffer("index", None if positions == list(range(members)) else torch.tensor(positions),
                             persistent=False)
        bins = self.encoding == "bins"
        self.register_buffer("left", torch.stack([e.left for e in encoders]) if bins else None, persistent=False)
        self.register_buffer("width", torch.stack([e.width for e in encoders]) if bins else None, persistent=False)
        self.stacked = Snapshot()  # for prediction: the members' weights stacked once, not at every call

    def _stacked(self) -> tuple:
        """(frequencies (K', 1, F) or None, weight (K', W, E) or None, bias (K', 1, E) or None): the members'
        learned tensors, one stack each, read from the members (a copy: the snapshot's, or this call's)."""
        frequencies = torch.stack([member.frequencies for member in self.members]).unsqueeze(1) \
            if self.encoding == "periodic" else None
        if self.linears is None:
            return frequencies, None, None
        weight = torch.stack([linear.weight for linear in self.linears]).transpose(1, 2)  # (K', W, E)
        return frequencies, weight, torch.stack([linear.bias for linear in self.linears]).unsqueeze(1)

    def encode(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, K) normalised values and raw values of all the block's members -> (B, K' * width) of these.
        The members lead (K', B, ...): each member's rows are then one contiguous matrix, as its encoder's."""
        if self.index is not None:
            z, x = z.index_select(1, self.index), x.index_select(1, self.index)  # (B, K')
        if self.encoding != "plain" and len(x) > GROUPED_ROWS and not torch.jit.is_tracing():
            # many rows: each member's own (B, W) intermediates stay in the cache, the whole (K', B, W) does not
            return torch.cat([member(column) for member, column in zip(self.members, x.unbind(1))], dim=1)
        z = z.t().contiguous().unsqueeze(2)  # (K', B, 1), contiguous: so are the (K', B, ...) tensors made from it
        sources = [member.frequencies for member in self.members] if self.encoding == "periodic" else []
        sources += [tensor for linear in self.linears or [] for tensor in (linear.weight, linear.bias)]
        frequencies, weight, bias = self.stacked.get(sources, self._stacked) or self._stacked()
        if self.encoding == "plain":
            encoded = z
        elif self.encoding == "periodic":
            angle = 2 * torch.pi * z * frequencies  # (K', B, F)
            encoded = torch.cat([torch.sin(angle), torch.cos(angle)], dim=2)  # (K', B, 2F)
        else:
            ratio = (z - self.left.unsqueeze(1)) / self.width.unsqueeze(1)  # (K', B, bins)
            if ratio.shape[2] > 1:  # first bin open below, last open above, as Encoder
                ratio = torch.cat([ratio[:, :, :1].clamp(max=1.0), ratio[:, :, 1:-1].clamp(0.0, 1.0),
                                   ratio[:, :, -1:].clamp(min=0.0)], dim=2)
            encoded = ratio
        if weight is not None:  # K' linear layers as one batched product: (K', B, W) @ (K', W, E) + (K', 1, E)
            encoded = torch.relu(torch.baddbmm(bias, encoded, weight))  # (K', B, E)
        if self.flag_missing:
            encoded = torch.cat([encoded, torch.isnan(x).t().float().unsqueeze(2)], dim=2)
        # (B, K' * width); not reshape(len(...)): an export would fix B
        return encoded.transpose(0, 1).flatten(1)

"""The output layer of a text output: a transformer decoder that writes a sentence token by token,
attending to the last hidden layer and to the per-token states of the text inputs.

Training uses teacher forcing (the true previous tokens, one pass, causal attention); prediction
runs greedy or beam search with cached keys and values, through the same layers.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

PAD_ID, START_ID, END_ID = 0, 2, 3


class Attention(nn.Module):
    """Multi-head attention whose keys and values can be computed once and reused (a cache)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, W) -> (N, heads, T, W / heads)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def project(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key, value = self.key_value(context).chunk(2, dim=-1)
        return self._split(key), self._split(value)  # each (N, heads, S, W / heads)

    def forward(self, x, key, value, mask=None, causal: bool = False) -> torch.Tensor:  # (N, T, W) -> (N, T, W)
        attended = functional.scaled_dot_product_attention(
            self._split(self.query(x)), key, value, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, attention to the memory, feed-forward; each with a skip."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.self_norm, self.memory_norm, self.feed_norm = (nn.LayerNorm(width) for _ in range(3))
        self.self_attention = Attention(width, heads, dropout)
        self.memory_attention = Attention(width, heads, dropout)
        self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(4 * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory, mask, cache: dict | None = None) -> torch.Tensor:  # (N, T, W) -> (N, T, W)
        normed = self.self_norm(x)
        key, value = self.self_attention.project(normed)
        if cache is not None:  # generation: x is the newest position; earlier keys/values are cached
            if "key" in cache:
                key, value = torch.cat([cache["key"], key], 2), torch.cat([cache["value"], value], 2)
            cache["key"], cache["value"] = key, value
        x = x + self.dropout(self.self_attention(normed, key, value, causal=cache is None))
        if cache is not None and "memory_key" in cache:
            memory_key, memory_value = cache["memory_key"], cache["memory_value"]
        else:
            memory_key, memory_value = self.memory_attention.project(memory)
            if cache is not None:
                cache["memory_key"], cache["memory_value"] = memory_key, memory_value
        x = x + self.dropout(self.memory_attention(self.memory_norm(x), memory_key, memory_value, mask=mask))
        return x + self.dropout(self.feed_forward(self.feed_norm(x)))


class Decoder(nn.Module):
    """Output layer of a text: a transformer decoder over the last hidden layer and the token memory."""

    def __init__(self, options, vocabulary_size: int, input_size: int, memory_sizes: tuple[int, ...] = ()):
        super().__init__()
        width = options.width
        self.max_steps = options.max_length + 1  # the tokens and the end token
        self.beam_size, self.length_penalty = options.beam_size, options.length_penalty
        self.embedding = nn.Embedding(vocabulary_size, width, padding_idx=PAD_ID)
        self.position = nn.Embedding(self.max_steps, width)
        self.from_hidden = nn.Linear(input_size, width)
        self.from_memory = nn.ModuleList(nn.Linear(size, width) for size in memory_sizes)
        self.layers = nn.ModuleList(DecoderLayer(width, options.heads, options.dropout) for _ in range(options.layers))
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, vocabulary_size)

    def memory(self, hidden: torch.Tensor, memory) -> tuple[torch.Tensor, torch.Tensor]:
        """What the decoder attends to: the last hidden layer as one position, then every token
        state of every text input; and which positions are real (not padding)."""
        states = [self.from_hidden(hidden).unsqueeze(1)]  # (B, 1, W)
        real = [torch.ones(hidden.shape[0], 1, dtype=torch.bool, device=hidden.device)]
        for project, (token_states, padding) in zip(self.from_memory, memory):
            states.append(project(token_states))  # (B, T, W)
            real.append(~padding)
        return torch.cat(states, 1), torch.cat(real, 1)[:, None, None, :]  # (B, S, W), (B, 1, 1, S)

    def logits(self, tokens, memory, mask, caches=None, start: int = 0) -> torch.Tensor:  # (N, T) -> (N, T, V)
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embedding(tokens) + self.position(positions)
        for layer, cache in zip(self.layers, caches or [None] * len(self.layers)):
            x = layer(x, memory, mask, cache)
        return self.output(self.norm(x))

    def forward(self, hidden: torch.Tensor, context) -> torch.Tensor:
        """With a target in the context (B, L): teacher-forced logits (B, T, V); without: generated ids
        (B, max_steps). The context's memory holds the token states of the text inputs."""
        memory, mask = self.memory(hidden, context.memory)
        target = context.target
        if target is None:
            return self.generate(memory, mask)
        length = max(int((target != PAD_ID).sum(1).max()), 1)
        start = torch.full((target.shape[0], 1), START_ID, dtype=target.dtype, device=target.device)
        return self.logits(torch.cat([start, target[:, :length - 1]], 1), memory, mask)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Beam search (greedy when beam_size is 1) with the GNMT length penalty; finished beams
        stay in the beam and grow only padding."""
        rows, beams = memory.shape[0], self.beam_size
        memory, mask = memory.repeat_interleave(beams, 0), mask.repeat_interleave(beams, 0)
        caches = [{} for _ in self.layers]
        tokens = torch.full((rows * beams, 1), START_ID, dtype=torch.long, device=memory.device)
        scores = torch.zeros(rows, beams, device=memory.device)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        finished = torch.zeros(rows * beams, dtype=torch.bool, device=memory.device)
        lengths = torch.zeros(rows * beams, device=memory.device)
        offsets = torch.arange(rows, device=memory.device).unsqueeze(1) * beams  # (rows, 1)
        for step in range(self.max_steps):
            log_probabilities = self.logits(tokens[:, -1:], memory, mask, caches, start=step)[:, -1].float()
            log_probabilities = log_probabilities.log_softmax(-1)  # (N, V)
            log_probabilities[:, [PAD_ID, START_ID]] = float("-inf")
            padding_only = torch.full_like(log_probabilities[0], float("-inf"))
            padding_only[PAD_ID] = 0.0
            log_probabilities = torch.where(finished.unsqueeze(1), padding_only, log_probabilities)
            vocabulary = log_probabilities.shape[1]
            scores, best = (scores.view(-1, 1) + log_probabilities).view(rows, -1).topk(beams, dim=1)
            origin = (offsets + best // vocabulary).view(-1)  # (N,) the beam each survivor extends
            token = (best % vocabulary).view(-1)
            lengths = lengths[origin] + (~finished[origin]).float()
            finished = finished[origin] | (token == END_ID)
            tokens = torch.cat([tokens[origin], token.unsqueeze(1)], 1)
            for cache in caches:
                cache["key"], cache["value"] = cache["key"][origin], cache["value"][origin]
            if bool(finished.all()):
                break
        penalty = ((5.0 + lengths.view(rows, beams)) / 6.0) ** self.length_penalty
        choice = (scores / penalty).argmax(1)
        chosen = tokens.view(rows, beams, -1)[torch.arange(rows), choice, 1:]  # (rows, steps)
        return functional.pad(chosen, (0, self.max_steps - chosen.shape[1]), value=PAD_ID)  # (rows, max_steps)

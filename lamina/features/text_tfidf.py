"""TF-IDF n-gram features of text (`encoder: tfidf`): word 1-2 grams and character 2-5 grams within
words, learned on the training split with scikit-learn's vectorizers and saved as plain lists (the
n-grams and their inverse document frequencies), and the input layer that reads them: one learned
vector per n-gram, summed with the text's TF-IDF weights (a linear layer on the sparse features).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lamina.errors import DataError

# the two kinds of n-grams, as scikit-learn's vectorizers cut them; their features sit side by side,
# words first, each kind's part of a row scaled to length 1 (as two TfidfVectorizers stacked would)
KINDS = {"words": {"analyzer": "word", "ngram_range": (1, 2)},
         "characters": {"analyzer": "char_wb", "ngram_range": (2, 5)}}
INITIAL = 0.01  # std of the n-gram vectors at the start of training
# n-grams one text keeps at most (its heaviest): bounds the input tensor (N, terms, 2), 8 bytes per n-gram
# slot and row (a model of 60-word reviews: 1,040 slots, about 8 KB a row held in memory while training)
MOST_TERMS = 2048


def fit(corpus: list[str], options, lowercase: bool) -> dict:
    """The n-grams seen in at least `min_count` training texts, at most `vocabulary_size` of each kind
    (the most frequent), with their idf; JSON-able. Also `terms_per_text`, the width of transform's
    tensor: the most n-grams a training text has (at most MOST_TERMS)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    stats = {}
    for kind, settings in KINDS.items():
        vectorizer = TfidfVectorizer(**settings, lowercase=lowercase, min_df=min(options.min_count, len(corpus)),
                                     max_features=options.vocabulary_size, sublinear_tf=True)
        try:
            vectorizer.fit(corpus)
        except ValueError:  # no n-gram reaches min_df
            raise DataError(f"column '{options.name}': no {kind[:-1]} n-gram occurs in {options.min_count} or more "
                            f"training texts; lower min_count or give more text") from None
        stats[kind] = {"terms": vectorizer.get_feature_names_out().tolist(),
                       "idf": [float(value) for value in vectorizer.idf_]}
    stats["terms_per_text"] = 1
    counted = Vectorizers(stats, lowercase).weights(corpus)
    stats["terms_per_text"] = int(min(MOST_TERMS, max(1, np.diff(counted.indptr).max())))
    return stats


class Vectorizers:
    """The saved n-grams as scikit-learn count vectorizers (fixed vocabularies) and idf arrays, built
    once per fitted or loaded stats; `features` turns texts into the encoder's input."""

    def __init__(self, stats: dict, lowercase: bool):
        from sklearn.feature_extraction.text import CountVectorizer

        self.parts = []
        for kind, settings in KINDS.items():
            terms = stats[kind]["terms"]
            counter = CountVectorizer(**settings, lowercase=lowercase, vocabulary=terms, dtype=np.float64)
            self.parts.append((counter, np.asarray(stats[kind]["idf"], dtype=np.float64)))
        self.width = int(stats["terms_per_text"])
        self.size = sum(len(stats[kind]["terms"]) for kind in KINDS)  # n-grams in all

    def weights(self, strings: list[str]):
        """A CSR matrix (N, size) of TF-IDF weights: (1 + log count) * idf, each kind's part of a row
        scaled to length 1, exactly as scikit-learn's TfidfVectorizer(sublinear_tf=True) computes it."""
        from scipy import sparse
        from sklearn.preprocessing import normalize

        blocks = []
        for counter, idf in self.parts:
            counts = counter.transform(strings).tocsr()  # (N, terms of this kind)
            counts.data = (np.log(counts.data) + 1.0) * idf[counts.indices]
            blocks.append(normalize(counts, norm="l2", copy=False))
        return sparse.hstack(blocks, format="csr")

    def features(self, strings: list[str]) -> torch.Tensor:
        """Texts -> (N, terms_per_text, 2) float32: per text its n-grams' indices [..., 0] (as floats, exact
        below 2^24) and TF-IDF weights [..., 1], heaviest first, then zeros; a text with more n-grams
        keeps its terms_per_text heaviest."""
        matrix = self.weights(strings)
        result = np.zeros((len(strings), self.width, 2), dtype=np.float32)
        for row in range(len(strings)):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            values, columns = matrix.data[start:end], matrix.indices[start:end]
            order = np.lexsort((columns, -values))[:self.width]  # heaviest first; ties by index, so stable
            result[row, :len(order), 0] = columns[order]
            result[row, :len(order), 1] = values[order]
        return torch.from_numpy(result)


class TfidfEncoder(nn.Module):
    """(B, terms, 2) n-gram indices and TF-IDF weights -> (B, D): the weighted sum of one learned vector
    per n-gram, plus a bias. Dropout removes whole n-grams of a text while training. The vectors start
    near zero (std INITIAL), so training learns n-gram weights as a linear model would rather than first
    fitting a random projection of them (on jeans_reviews: test PR AUC 0.80 against 0.77 with std
    size ** -0.5, docs/benchmarks.md section 19)."""

    def __init__(self, terms: int, size: int, dropout: float):
        super().__init__()
        self.table = nn.EmbeddingBag(terms, size, mode="sum")
        nn.init.normal_(self.table.weight, std=INITIAL)
        self.bias = nn.Parameter(torch.zeros(size))
        self.dropout = nn.Dropout(dropout)
        self.output_size = size

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, T, 2) -> (B, D)
        weights = features[..., 1]  # (B, T), zeros after each text's last n-gram
        present = weights.ne(0).any(0)  # (T,)
        length = max(int(present.nonzero().max()) + 1 if present.any() else 1, 1)
        ids, weights = features[:, :length, 0].long(), self.dropout(weights[:, :length].float())  # (B, T')
        return self.table(ids, per_sample_weights=weights) + self.bias  # (B, D)

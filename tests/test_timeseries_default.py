"""The default timeseries input: the per-channel summary statistics beside the learned encoder (exact
over the real steps whatever the padding), models saved without them still loading their weights,
init-config on sequences written as text, the japanese_vowels data set and the zero-config benchmark."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import lamina
from lamina import artifact, features
from lamina.config import INPUT_MODELS
from lamina.datasets import sequences
from lamina.features import timeseries
from lamina.features.timeseries_encoders import summary_statistics
from lamina.init_config import infer_config

HAS_AEON = sequences.japanese_vowels_folder() is not None


def feature(**options):
    return features.build(INPUT_MODELS["timeseries"](name="series", type="timeseries", **options))


def as_text(array: np.ndarray) -> str:
    """(T, C) -> '1,2,3;4,5,6': one part per channel (layout: channels), as japanese_vowels writes it."""
    return sequences.as_channel_text(array)


def vowels_like(rows: int = 90, seed: int = 0) -> pd.DataFrame:
    """3 speakers, 4 channels of 7 to 20 steps written as channel text; each speaker has its own
    channel offsets, so the channel means tell them apart."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 1.0, (3, 4))
    cells, speakers = [], []
    for row in range(rows):
        speaker = row % 3
        length = int(rng.integers(7, 21))
        values = offsets[speaker] + rng.normal(0, 0.7, (length, 4)).cumsum(0) * 0.2
        cells.append(as_text(values))
        speakers.append(f"s{speaker}")
    return pd.DataFrame({"series": cells, "speaker": speakers})


def test_summary_statistics_use_the_real_steps_only():
    rng = np.random.default_rng(0)
    short, long = rng.normal(size=(3, 2)), rng.normal(size=(11, 2))
    ts = feature(layout="steps")
    column = pd.Series([short.tolist(), long.tolist()], dtype=object)
    ts.fit(column)
    batch = ts.transform(column)  # (2, 11, 3): the short row padded with 8 zero steps
    stats = summary_statistics(batch[..., :-1].double(), batch[..., -1].double())  # (2, 6 * 2 + 1)
    alone = ts.transform(pd.Series([short.tolist()], dtype=object))  # (1, 3, 3): no padding
    assert torch.allclose(stats[:1], summary_statistics(alone[..., :-1].double(), alone[..., -1].double()), atol=1e-6)
    for position, array in enumerate((short, long)):
        expected = np.concatenate([array.mean(0), array.std(0), array.min(0), array.max(0), array[0], array[-1],
                                   [len(array)]])
        np.testing.assert_allclose(stats[position].numpy(), expected, rtol=1e-5, atol=1e-5)
    encoder = ts.encoder().eval()
    assert encoder.output_size == ts.config.embedding_size + 13
    assert torch.allclose(encoder(alone), encoder(batch)[:1], atol=1e-5)  # padding changes no output


def test_summary_statistics_are_standardised_with_the_training_rows():
    frame = vowels_like(60)
    ts = feature(layout="channels")
    ts.fit(frame["series"])
    summary = json.loads(json.dumps(ts.stats))["summary"]  # JSON-able
    assert len(summary["mean"]) == len(summary["std"]) == 6 * 4 + 1
    encoded = ts.encoder().eval()(ts.transform(frame["series"]))[:, ts.config.embedding_size:]  # (60, 25)
    np.testing.assert_allclose(encoded.mean(0).detach().numpy(), 0.0, atol=1e-4)
    off = feature(layout="channels", summary=False)
    off.fit(frame["series"])
    assert "summary" not in off.stats and off.encoder().output_size == off.config.embedding_size


def test_a_model_saved_before_the_summary_option_loads_its_weights(tmp_path):
    """A folder saved before `summary` existed: its config files lack the key (so it reads as the
    default, on) and its stats lack the summary statistics; it must build the network it was saved
    with and predict as before."""
    frame = vowels_like(60)
    config = {"inputs": [{"name": "series", "type": "timeseries", "layout": "channels", "summary": False,
                          "width": 8, "embedding_size": 8, "layers": 1}],
              "hidden": {"layers": 1, "size": 16}, "outputs": [{"name": "speaker", "type": "category"}],
              "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.003}}
    model = lamina.Model(config).fit(frame, quiet=True)
    folder = model.save(tmp_path / "old")
    for name in ("config.yaml", artifact.RESOLVED):  # as an earlier lamina wrote them: no `summary` key
        path = folder / name
        text = path.read_text(encoding="utf-8")
        assert "summary" in text
        values = _without_summary((json.loads if name.endswith(".json") else yaml.safe_load)(text))
        path.write_text(json.dumps(values) if name.endswith(".json") else yaml.safe_dump(values), encoding="utf-8")
    manifest = json.loads((folder / artifact.MANIFEST).read_text(encoding="utf-8"))
    manifest["files"] = {name: artifact._entry(folder / name) for name in manifest["files"]}
    (folder / artifact.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    loaded = lamina.load(folder)
    assert loaded.inputs_[0].config.summary  # the key reads as the default ...
    pd.testing.assert_frame_equal(loaded.predict(frame), model.predict(frame))  # ... yet the old network is built


def _without_summary(value):
    if isinstance(value, dict):
        return {key: _without_summary(item) for key, item in value.items() if key != "summary"}
    return [_without_summary(item) for item in value] if isinstance(value, list) else value


def test_init_config_reads_channel_text_as_a_timeseries_with_its_layout():
    config, notes = infer_config(vowels_like(40), ["speaker"])
    assert config["inputs"] == [{"name": "series", "type": "timeseries", "layout": "channels"}]
    assert "7 to 20 steps of 4 channels" in notes[0]
    assert config["training"]["batch_size"] == 16  # 40 rows: batches of 256 would be one step per epoch
    steps = pd.DataFrame({"series": [";".join(",".join(map(str, step)) for step in np.ones((length, 4)))
                                     for length in range(5, 45)], "speaker": ["a", "b"] * 20})
    assert infer_config(steps, ["speaker"])[0]["inputs"][0]["layout"] == "steps"


def test_classic_features_read_the_cells_with_the_models_layout():
    frame = vowels_like(6)
    ts = feature(layout="channels")
    ts.fit(frame["series"])
    encoder = ts.classic_encoder("linear", 0).fit(frame["series"])
    values = timeseries.classic_features(frame["series"], "series", timeseries.Options(layout="channels"))
    assert values.shape == (6, 4 * 10 + 1)  # 4 channels, not 7..20 'channels' of 4 steps
    assert np.asarray(encoder.transform(frame["series"])).shape[0] == 6


def test_zero_config_default_beats_chance_widely_on_vowel_like_sequences():
    frame = vowels_like(150, seed=1)
    config, _ = infer_config(frame, ["speaker"])
    config["training"].update(epochs=15)
    accuracy = lamina.Model(config).fit(frame, quiet=True).metrics_["test"]["speaker"]["accuracy"]
    assert accuracy >= 0.7  # chance is 1/3


@pytest.mark.skipif(not HAS_AEON, reason="pip install --no-deps aeon==1.6.0")
def test_japanese_vowels_loads_the_archive_split_as_channel_text():
    frame = lamina.datasets.load("japanese_vowels")
    assert frame["split"].value_counts().to_dict() == {"test": 370, "train": 243, "validation": 27}
    assert frame.loc[frame["split"] == "validation", "speaker"].value_counts().eq(3).all()
    array = timeseries.parse(frame["series"].iloc[0], timeseries.Options(layout="channels"))
    assert array.shape == (20, 12)
    assert array[0, 0] == pytest.approx(1.860936)


@pytest.mark.skipif(not HAS_AEON, reason="pip install --no-deps aeon==1.6.0")
def test_zero_config_benchmark_runs_on_a_slice():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import zero_config

    frame = lamina.datasets.load("japanese_vowels")
    frame = frame[frame.groupby(["split", "speaker"]).cumcount() < 3]  # 3 rows per speaker in each part
    row = zero_config.run_set("japanese_vowels", frame, resamples=20, epochs=3)
    assert row["metric"] == "accuracy" and row["example_file"] == "japanese_vowels.yaml"
    assert 0 <= row["zero"] <= 1 and 0 <= row["example"] <= 1 and 0 <= row["classic"] <= 1
    assert "japanese_vowels" in zero_config.table([row, zero_config.run_set("movielens_100k")])
    assert zero_config.run_set("driving_scenes")["skipped"]

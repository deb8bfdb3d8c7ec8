"""The audio data type: reading files and arrays, resampling, mix-down, padding, the log-mel
spectrogram, bad clips, augmentation, and training on sine tones the tests synthesise."""
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

import lamina
from lamina import features
from lamina.config import INPUT_MODELS
from lamina.features.columns import LazyColumn
from lamina.errors import ConfigError, DataError
from lamina.features.audio import Decoding, Unreadable, decode_one
from lamina.features.audio_encoders import LogMel, mel_filterbank, mix_noise, resample

RATE = 8000
SMALL = {"sample_rate": RATE, "duration": 0.25, "mels": 24, "width": 8, "stages": 2, "embedding_size": 16}


def tone(frequency: float, seconds: float = 0.2, rate: int = RATE, phase: float = 0.0) -> np.ndarray:
    time = np.arange(int(seconds * rate)) / rate
    return np.sin(2 * np.pi * frequency * time + phase).astype(np.float32)


def tones(rows: int = 160, seed: int = 0) -> pd.DataFrame:
    """Noisy clips of a low (300-500 Hz) or high (1200-1600 Hz) tone at random loudness and length."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for row in range(rows):
        label = "high" if row % 2 else "low"
        frequency = rng.uniform(1200, 1600) if label == "high" else rng.uniform(300, 500)
        clip = tone(frequency, rng.uniform(0.1, 0.25), phase=rng.uniform(0, 6)) * rng.uniform(0.1, 1.0)
        clips.append(clip + rng.normal(0, 0.05, len(clip)).astype(np.float32))
        labels.append(label)
    return pd.DataFrame({"sound": clips, "label": labels})


def feature(**options):
    return features.build(INPUT_MODELS["audio"](name="sound", type="audio", **{**SMALL, **options}))


def config(audio: dict | None = None, epochs: int = 6) -> dict:
    return {"inputs": [{"name": "sound", "type": "audio", **SMALL, **(audio or {})}],
            "hidden": {"layers": 1, "size": 16},
            "outputs": [{"name": "label", "type": "category"}],
            "training": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.01}}


def dominant_frequency(waveform: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1 / rate)[np.argmax(spectrum)])


def test_sine_tones_of_different_pitch_are_told_apart():
    model = lamina.Model(config()).fit(tones(), quiet=True)
    assert model.metrics_["test"]["label"]["accuracy"] >= 0.9


@pytest.mark.parametrize("original, target", [(44100, 16000), (22050, 8000), (8000, 16000), (16000, 16000)])
def test_resampling_keeps_the_pitch_and_matches_the_ideal_signal(original, target):
    clip = tone(440.0, 0.5, original)
    result = resample(torch.from_numpy(clip), original, target).numpy()
    assert len(result) == int(np.ceil(len(clip) * target / original))
    ideal = tone(440.0, 0.5, target)[:len(result)]
    middle = slice(len(result) // 10, -len(result) // 10)  # the ends see the filter's zero padding
    assert np.abs(result[middle] - ideal[middle]).max() < 0.01


def test_resampling_down_removes_frequencies_above_the_new_nyquist():
    alias = resample(torch.from_numpy(tone(6000.0, 0.5, 16000)), 16000, 8000).numpy()  # 6 kHz > 4 kHz
    assert np.sqrt(np.mean(alias[400:-400] ** 2)) < 0.02


def test_mel_filterbank_is_triangular_and_a_tone_lands_in_the_right_bin():
    bank = mel_filterbank(24, 256, RATE, 0.0, RATE / 2)
    assert bank.shape == (24, 129) and bank.max() <= 1.0 + 1e-6 and (bank >= 0).all()
    assert torch.all(bank.argmax(1).diff() > 0)  # centres rise with the bin
    log_mel = LogMel(RATE, 24, 25.0, 10.0, 0.0, None)
    low, high = (log_mel(torch.from_numpy(tone(frequency))[None]).mean(2).argmax().item() for frequency in (300, 2000))
    assert low < high
    centres = bank.argmax(1) * RATE / 256
    assert abs(float(centres[high]) - 2000) < 300


def test_files_are_read_mixed_to_mono_resampled_and_padded(tmp_path):
    stereo = np.stack([tone(440, 0.1, 16000), np.zeros(1600, dtype=np.float32)], axis=1)
    soundfile.write(tmp_path / "a.wav", stereo, 16000)
    soundfile.write(tmp_path / "b.flac", tone(440, 0.1, 8000), 8000)
    soundfile.write(tmp_path / "c.ogg", tone(440, 0.1, 8000), 8000)
    decoding = Decoding("sound", RATE, 2000, volume="none", root=str(tmp_path))
    for name in ("a.wav", "b.flac", "c.ogg"):
        waveform = decode_one(name, decoding)
        assert waveform.shape == (2000,)
        assert waveform[:200].max() == 0 and waveform[-200:].max() == 0  # centred in silence
        assert abs(dominant_frequency(waveform[200:-200], RATE) - 440) < 15, name
    assert abs(decode_one("a.wav", decoding)[1000] - tone(440, 0.1)[600] / 2) < 0.05  # the channels' average
    start = decode_one("b.flac", Decoding("sound", RATE, 400, align="start", root=str(tmp_path)))
    assert np.allclose(start, tone(440, 0.1)[:400] / np.abs(tone(440, 0.1)).max(), atol=1e-3)


def test_arrays_of_every_kind_decode():
    decoding = Decoding("sound", RATE, 800, volume="none")
    integers = (tone(440, 0.1) * 32767).astype(np.int16)
    assert np.allclose(decode_one(integers, decoding), tone(440, 0.1), atol=1e-3)
    channels_first = np.stack([tone(440, 0.1), tone(440, 0.1)])  # (2, samples)
    assert np.allclose(decode_one(channels_first, decoding), tone(440, 0.1), atol=1e-6)
    slow = decode_one(tone(440, 0.1, 4000), Decoding("sound", RATE, 800, array_rate=4000))
    assert abs(dominant_frequency(slow, RATE) - 440) < 15


def test_silence_is_trimmed_before_padding():
    clip = np.concatenate([np.zeros(1000), tone(440, 0.05), np.zeros(3000)]).astype(np.float32)
    trimmed = decode_one(clip, Decoding("sound", RATE, None, trim_decibels=40))
    assert 400 <= len(trimmed) <= 560  # whole 10 ms frames around the 400-sample tone


@pytest.mark.parametrize("write, reason", [
    (lambda path: path.write_bytes(b"not a sound at all" * 10), "not a sound file"),
    (lambda path: soundfile.write(path, np.zeros(0, dtype=np.float32), RATE), "empty audio"),
    (None, "no such file"),
])
def test_bad_files_are_errors_naming_the_row(tmp_path, write, reason):
    soundfile.write(tmp_path / "good.wav", tone(440), RATE)
    if write:
        write(tmp_path / "bad.wav")
    column = pd.Series(["good.wav", "bad.wav"], index=[7, 8])
    with pytest.raises(DataError, match=rf"column 'sound' row 8: cannot read 'bad.wav' \({reason}.*on_error: skip"):
        feature(root=str(tmp_path)).fit(column)


def test_wrong_rate_is_resampled_or_an_error_when_resampling_is_off(tmp_path):
    soundfile.write(tmp_path / "fast.wav", tone(440, 0.2, 22050), 22050)
    column = pd.Series([str(tmp_path / "fast.wav")])
    resampled = feature()
    resampled.fit(column)
    assert resampled.transform(column).shape == (1, 2000)
    with pytest.raises(DataError, match=r"row 0: .*sampled at 22050 Hz but the feature expects 8000 Hz; set resample"):
        feature(resample=False).fit(column)


def test_bad_arrays_and_nan_are_errors_and_skip_leaves_rows_out():
    with pytest.raises(DataError, match=r"row 1: .*NaN or infinite"):
        feature().fit(pd.Series([tone(440), np.full(100, np.nan)], dtype=object))
    with pytest.raises(DataError, match=r"row 0: cannot read 'abc'"):
        feature().fit(pd.Series(["abc"]))
    frame = tones(80)
    frame.loc[5, "sound"] = np.zeros((2, 2, 2))
    with pytest.warns(UserWarning, match=r"1 of 80 rows hold no readable sound"):
        model = lamina.Model(config({"on_error": "skip"}, epochs=1)).fit(frame, quiet=True)
    assert len(model.predict(frame)) == 80


def test_options_are_checked_when_the_config_is_read():
    with pytest.raises(ConfigError, match="high_hz"):
        lamina.Model(config({"high_hz": 6000}))
    with pytest.raises(ConfigError, match="snr"):
        lamina.Model(config({"augment": {"snr": [20, 5]}}))


def test_noise_is_mixed_at_the_requested_snr():
    clean = torch.from_numpy(np.stack([tone(440, 0.5)] * 4))
    augment = INPUT_MODELS["audio"](name="s", type="audio", augment={"noise": 1.0, "snr": [10, 10]}).augment
    noisy = mix_noise(clean, augment, None)
    noise = noisy - clean
    snr = 10 * torch.log10(clean.pow(2).mean(1) / noise.pow(2).mean(1))
    assert torch.allclose(snr, torch.full((4,), 10.0), atol=0.01)


def test_augmentation_changes_training_inputs_only_and_noise_files_are_read(tmp_path):
    soundfile.write(tmp_path / "hum.wav", tone(50, 1.0, 16000), 16000)
    options = {"augment": {"noise": 1.0, "noise_files": [str(tmp_path / "hum.wav")], "time_masks": 2,
                           "frequency_masks": 2, "shift": 0.02}}
    audio = feature(**options)
    column = tones(8)["sound"]
    audio.fit(column)
    assert audio._noise is not None and audio._noise.shape == (RATE,)
    encoder, batch = audio.encoder(), audio.transform(column)
    encoder.eval()
    assert torch.equal(encoder.spectrogram(batch), encoder.spectrogram(batch))
    encoder.train()
    assert not torch.equal(encoder.spectrogram(batch), encoder.spectrogram(batch))
    with pytest.raises(DataError, match=r"noise file .*absent.wav.*no such file"):
        feature(augment={"noise": 0.5, "noise_files": [str(tmp_path / "absent.wav")]}).fit(column)


def test_per_bin_stats_are_fitted_on_training_clips_and_missing_is_silence():
    audio = feature()
    column = pd.Series([tone(440), None, tone(1000)], dtype=object)
    audio.fit(column)
    assert len(audio.stats["mean"]) == 24 and audio.stats["clips"] == 2
    assert audio.stats["frames"] == 26  # 0.25 s at a 10 ms hop, centred frames
    assert audio.transform(column)[1].abs().max() == 0
    with pytest.raises(DataError, match="row 1: missing value"):
        feature(missing="error").fit(column)


def test_lazy_column_save_load_and_explain(tmp_path):
    frame = tones(64)
    paths = []
    for position, clip in enumerate(frame["sound"]):
        soundfile.write(tmp_path / f"{position}.wav", clip, RATE)
        paths.append(str(tmp_path / f"{position}.wav"))
    frame["sound"] = paths
    model = lamina.Model(config({"cache": "no"}, epochs=2)).fit(frame, quiet=True)
    assert isinstance(model.inputs_[0].transform(frame["sound"]), LazyColumn)
    model.save(tmp_path / "model")
    pd.testing.assert_frame_equal(model.predict(frame), lamina.load(tmp_path / "model").predict(frame))
    pytest.importorskip("captum")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explanation = model.explain(frame.iloc[:2], steps=16)
    heat_map = np.asarray(explanation["rows"][0]["heat_maps"]["sound"])
    assert heat_map.shape == (24, 26)  # mels x frames
    # the score is the float32 sum of the same cells: equal up to the rounding of a sum of 624 terms
    assert abs(heat_map.sum() - explanation["rows"][0]["scores"]["sound"]) <= 1e-4 * np.abs(heat_map).sum()


def test_unreadable_is_raised_for_non_waveforms():
    with pytest.raises(Unreadable, match="not a waveform"):
        decode_one(np.array(["a", "b"]), Decoding("sound", RATE, 100))

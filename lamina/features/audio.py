"""The `audio` data type (input only): sound files (WAV, FLAC, OGG via soundfile) or arrays in,
a CNN over the log-mel spectrogram out to a vector.

Cells decode to mono waveforms at `sample_rate`, `duration` seconds long: (N, samples) float32.
The spectrogram, its per-mel-bin normalisation (fitted on the training split) and the
training-only augmentation (time shift, background noise, SpecAugment) run in torch inside the
encoder (audio_encoders.py), so training, evaluation and serving compute them the same way.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, audio_requests, base, files
from lamina.features.audio_encoders import Encoder, LogMel, resample
from lamina.features.columns import LazyColumn
from lamina.features.common import Unreadable, decode_cells, raise_if_missing
from lamina.features.files import first_line
from lamina.features.request import RequestField, Widget

CAN_BE_OUTPUT = False
CAN_BE_INPUT = True
READ_AS = "string"  # file paths are text, whatever pandas would guess
FRAME_MS = 10  # silence trimming looks at the loudness of frames this long


class Augment(BaseModel):
    """Random changes to training clips (never at evaluation or prediction), drawn from torch's
    generator so a run is reproducible from its seed."""

    model_config = ConfigDict(extra="forbid")
    shift: float = Field(0.0, ge=0.0, description="move each clip in time by up to this many seconds either way")
    noise: float = Field(0.0, ge=0.0, le=1.0, description="fraction of clips that get background noise mixed in")
    snr: tuple[float, float] = Field((5.0, 30.0), description="[low, high] signal-to-noise ratio in dB; each noisy "
                                                              "clip draws one uniformly")
    noise_files: list[str] = Field(default_factory=list, description="sound files to take the noise from (random "
                                                                     "stretches); none: generated noise")
    noise_colour: Literal["white", "pink", "brown"] = Field("pink", description="the generated noise's spectrum")
    time_masks: int = Field(0, ge=0, le=16, description="SpecAugment: bands of time frames masked per clip")
    time_mask_width: int = Field(10, ge=1, description="SpecAugment: widest time band, in frames")
    frequency_masks: int = Field(0, ge=0, le=16, description="SpecAugment: bands of mel bins masked per clip")
    frequency_mask_width: int = Field(8, ge=1, description="SpecAugment: widest frequency band, in mel bins")

    @model_validator(mode="after")
    def _check(self) -> "Augment":
        if self.snr[0] > self.snr[1]:
            raise ValueError(f"snr is [low, high] in dB; got {list(self.snr)}")
        return self


class Options(BaseModel):
    """Options of an audio feature."""

    model_config = ConfigDict(extra="forbid")
    sample_rate: int = Field(16000, ge=1000, le=192000, description="every clip is brought to this rate (Hz)")
    resample: bool = Field(True, description="true: clips at another rate are resampled (windowed sinc, in torch); "
                                             "false: such a clip is an error naming its row")
    array_rate: int | None = Field(None, ge=1000, le=192000, description="the rate of array cells (files carry "
                                                                         "their own); default: sample_rate")
    duration: float = Field(1.0, gt=0.0, le=600.0, description="seconds per clip: shorter clips are padded with "
                                                               "silence, longer ones cut")
    align: Literal["center", "start"] = Field("center", description="where a clip sits when padded or cut")
    trim_silence: float | None = Field(None, gt=0.0, le=120.0, description="cut leading and trailing frames this "
                                                                          "many dB quieter than the loudest frame "
                                                                          "(e.g. 40) before padding; null: keep")
    volume: Literal["peak", "none"] = Field("peak", description="peak: scale each clip so its loudest sample is 1")
    mels: int = Field(40, ge=4, le=256, description="mel bins of the spectrogram")
    window_ms: float = Field(25.0, gt=0.0, le=1000.0, description="STFT window (Hann), in milliseconds")
    hop_ms: float = Field(10.0, gt=0.0, le=1000.0, description="STFT hop between frames, in milliseconds")
    low_hz: float = Field(20.0, ge=0.0, description="lowest frequency of the mel filterbank")
    high_hz: float | None = Field(None, gt=0.0, description="highest frequency of the mel filterbank (default: "
                                                            "half the sample rate)")
    encoder: Literal["cnn", "resnet"] = Field("cnn", description="the CNN over the spectrogram (see image)")
    width: int = Field(32, ge=1, le=1024, description="channels of the first stage; each later stage doubles them")
    stages: int = Field(3, ge=1, le=6, description="stages; each after the first halves mel bins and frames")
    depth: int | None = Field(None, ge=1, le=16, description="layers (cnn) or basic blocks (resnet) per stage")
    embedding_size: int = Field(128, ge=1, description="width of the vector the encoder outputs")
    augment: Augment | None = Field(None, description="random changes to the clips while training")
    missing: Literal["fill", "drop", "error"] = Field(
        "fill", description="fill: an empty cell is silence; drop removes the rows while training")
    on_error: Literal["stop", "skip"] = Field(
        "stop", description="stop: an unreadable or empty file, or a bad array, is an error; skip: such rows are "
                            "left out of training and evaluation, and predicted from silence",
        json_schema_extra={"shown_when": "set"})
    cache: Literal["auto", "yes", "no"] = Field(
        "auto", description="yes: decode every clip once up front; no: batch by batch (data larger than memory); "
                            "auto: yes when the waveforms fit in 512 MB",
        json_schema_extra={"shown_when": "set"})  # memory and speed only, not what is learned
    root: str | None = Field(None, description="folder that relative file paths are read from")

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if self.high_hz is not None and self.high_hz > self.sample_rate / 2:
            raise ValueError(f"high_hz ({self.high_hz}) is above half the sample rate ({self.sample_rate / 2}); "
                             f"lower it or raise sample_rate")
        if self.hop_ms * self.sample_rate / 1000 < 1:
            raise ValueError(f"hop_ms {self.hop_ms} is shorter than one sample at {self.sample_rate} Hz")
        return self


@dataclass(frozen=True)
class Decoding:
    """What turning a cell into a waveform needs: a plain, picklable record (DataLoader worker
    processes receive it), unlike the pydantic config. samples None: keep the clip's own length."""

    name: str
    rate: int
    samples: int | None
    resample: bool = True
    array_rate: int | None = None
    align: str = "center"
    trim_decibels: float | None = None
    volume: str = "peak"
    root: str | None = None
    on_error: str = "stop"


def decoding_of(options: Options, name: str) -> Decoding:
    return Decoding(name, options.sample_rate, int(round(options.duration * options.sample_rate)), options.resample,
                    options.array_rate, options.align, options.trim_silence, options.volume, options.root,
                    options.on_error)


# --- decoding one cell -------------------------------------------------------------------------

def describe(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return repr(str(value))
    shape = getattr(value, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else type(value).__name__


def read_file(value: str | os.PathLike, root: str | None) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the file's sample rate."""
    try:
        import soundfile
    except ImportError:  # a missing package is not a bad file: never skipped
        raise ImportError("reading sound files needs soundfile: pip install 'lamina[audio]'") from None
    path = files.resolve(value, root)
    if not path.is_file():
        where = "" if path.is_absolute() else (f" under root '{root}'" if root else
                                                f" relative to '{os.getcwd()}'; set root: to the clips' folder")
        raise Unreadable(f"no such file: '{path}'{where}")
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError, EOFError) as error:  # LibsndfileError is a RuntimeError
        raise Unreadable(f"not a sound file soundfile can read (WAV, FLAC, OGG, ...): {first_line(error)}") from None
    return samples, int(rate)


def from_array(value: Any) -> np.ndarray:
    """(samples,) or (samples, channels) numbers -> (samples, channels) float32; integer samples
    (e.g. int16 PCM) are scaled to [-1, 1]. A (channels, samples) array with at most 8 rows is
    recognised and turned."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.ndim not in (1, 2):
        raise Unreadable(f"{describe(value)} of dtype {array.dtype} is not a waveform: give a file path, or a 1-D "
                         f"(mono) or 2-D (samples x channels) array of numbers")
    if array.dtype.kind in "iu":
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    array = array.astype(np.float32).reshape(len(array), -1)
    if array.shape[0] <= 8 < array.shape[1]:
        array = array.T
    return array


def trim(waveform: np.ndarray, rate: int, decibels: float) -> np.ndarray:
    """Cut leading and trailing 10 ms frames quieter than the loudest frame by `decibels`."""
    frame = max(rate * FRAME_MS // 1000, 1)
    count = len(waveform) // frame
    if count < 2:
        return waveform
    energy = (waveform[:count * frame].reshape(count, frame) ** 2).mean(1)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-decibels / 10))
    return waveform[loud[0] * frame:(loud[-1] + 1) * frame] if len(loud) else waveform


def fit_length(waveform: np.ndarray, samples: int, align: str) -> np.ndarray:
    """Pad with silence or cut to `samples`, keeping the clip at the start or in the centre."""
    extra = len(waveform) - samples
    if extra > 0:
        start = extra // 2 if align == "center" else 0
        return waveform[start:start + samples]
    before = -extra // 2 if align == "center" else 0
    return np.pad(waveform, (before, -extra - before))


def decode_one(value: Any, decoding: Decoding) -> np.ndarray:
    """One cell -> (samples,) float32 mono at decoding.rate; raises Unreadable."""
    if isinstance(value, (str, os.PathLike)):
        sound, rate = read_file(value, decoding.root)
    else:
        sound, rate = from_array(value), decoding.array_rate or decoding.rate
    if sound.size == 0:
        raise Unreadable("empty audio: no samples")
    if not np.isfinite(sound).all():
        raise Unreadable("the samples hold NaN or infinite values")
    mono = sound.mean(axis=1)  # mix-down: the average of the channels
    if rate != decoding.rate:
        if not decoding.resample:
            raise Unreadable(f"sampled at {rate} Hz but the feature expects {decoding.rate} Hz; set resample: true "
                             f"(or convert the file, e.g. sox in.wav -r {decoding.rate} out.wav)")
        mono = resample(torch.from_numpy(np.ascontiguousarray(mono)), rate, decoding.rate).numpy()
    if decoding.trim_decibels is not None:
        mono = trim(mono, decoding.rate, decoding.trim_decibels)
    peak = float(np.abs(mono).max())
    if decoding.volume == "peak" and peak > 0:
        mono = mono / peak
    if decoding.samples is not None:
        mono = fit_length(mono, decoding.samples, decoding.align)
    return np.ascontiguousarray(mono, dtype=np.float32)


# --- decoding many cells (module level, so DataLoader workers can run it) ------------------------

def decode_all(items: list[tuple[Any, Any]], decoding: Decoding) -> tuple[list, list[tuple[Any, Any, str]]]:
    """Waveforms (None for an empty or unreadable cell) and the problems as (row, value, reason)."""
    return decode_cells(items, decode_one, decoding)


def stack(waveforms: list, samples: int) -> torch.Tensor:
    """Waveforms -> (N, samples); empty cells are silence."""
    batch = np.zeros((len(waveforms), samples), dtype=np.float32)
    for position, waveform in enumerate(waveforms):
        if waveform is not None:
            batch[position] = waveform
    return torch.from_numpy(batch)


def stack_clips(waveforms: list, decoding: Decoding) -> torch.Tensor:
    return stack(waveforms, decoding.samples)  # (N, samples)


CELLS = files.Cells("sound", describe, decode_one, stack_clips)  # a LazyColumn decodes (N, samples) with these


# --- the feature -------------------------------------------------------------------------------

class Feature(base.Feature):
    describes_items = False  # cells read lazily or sequence-shaped: not a ranking's item side
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}
        self._noise: torch.Tensor | None = None  # the noise files, read by fit for training (not saved)
        self._reader = files.Reader(CELLS)  # checks each file once

    def _decoding(self) -> Decoding:
        return decoding_of(self.config, self.config.name)

    def _log_mel(self) -> LogMel:
        options = self.config
        return LogMel(options.sample_rate, options.mels, options.window_ms, options.hop_ms, options.low_hz,
                      options.high_hz)

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Sound file paths by suffix (.wav, .flac, .ogg, .mp3 ...): 0.95 when some are found from here,
        with sample_rate (the files' most common rate, at most 16000) and duration (their 95th percentile,
        at most 30 s) from a sample of headers; 0.8 when none is found (set root:)."""
        return sniff_sounds(column)

    def fit(self, column: pd.Series) -> None:
        """Per-mel-bin mean and std of the training clips' log-mel spectrograms (a seeded sample, see
        files.sampled_batches), and the noise files for augmentation."""
        options = self.config
        if options.missing == "error":
            raise_if_missing(column, options.name)
        empty = f"column '{options.name}' has no clips in the training split; remove the feature or fill the column"
        log_mel, decoding = self._log_mel(), self._decoding()
        sums, squares, frames, clips = 0.0, 0.0, 0, 0
        for waveforms in files.sampled_batches(CELLS, column, decoding, empty):
            if not waveforms:
                continue
            spectrograms = log_mel(stack(waveforms, decoding.samples)).double()  # (B, M, F)
            sums = sums + spectrograms.sum(dim=(0, 2))
            squares = squares + (spectrograms ** 2).sum(dim=(0, 2))
            frames, clips = frames + spectrograms.shape[0] * spectrograms.shape[2], clips + len(waveforms)
        if not clips:
            raise DataError(f"column '{options.name}': no clip of the training split could be read; check the "
                            f"paths (and root: {options.root!r})")
        mean = sums / frames
        std = (squares / frames - mean ** 2).clamp_min(0.0).sqrt()
        std[std < 1e-6] = 1.0  # a bin that never changes carries no signal; avoid dividing by zero
        spectrogram_frames = log_mel(torch.zeros(1, decoding.samples)).shape[-1]
        self.stats = {"mean": mean.tolist(), "std": std.tolist(), "frames": int(spectrogram_frames),
                      "clips": int(clips)}
        self._noise = self._read_noise()

    def _read_noise(self) -> torch.Tensor | None:
        """The noise files at the feature's rate, one after another: checked now, so a bad file fails
        before training starts."""
        augment = self.config.augment
        if augment is None or not augment.noise_files:
            return None
        decoding = replace(self._decoding(), samples=None, trim_decibels=None)
        parts = []
        for path in augment.noise_files:
            try:
                parts.append(decode_one(path, decoding))
            except Unreadable as error:
                raise DataError(f"audio feature '{self.config.name}': noise file {path!r}: {error}; fix the path "
                                f"in augment.noise_files") from None
        return torch.from_numpy(np.concatenate(parts))

    def bad_rows(self, column: pd.Series) -> np.ndarray:
        """True for rows whose cell cannot be read, with on_error: skip (see files.Reader.bad_rows)."""
        return self._reader.bad_rows(column, self._decoding())

    def transform(self, column: pd.Series) -> torch.Tensor | LazyColumn:
        """(N, samples) float32, decoded now or batch by batch (see files.Reader.transform)."""
        decoding = self._decoding()
        return self._reader.transform(column, self.config, decoding, decoding.samples * 4, "silence")

    def encoder(self) -> nn.Module:
        return Encoder(self.config, self.stats, self._noise)

    # ---- classic baseline ----
    def classic_encoder(self, style: str, seed: int) -> Any:
        from lamina.features import classic

        return classic.Numbers(self.config.name, style, classic_features, "summary statistics")

    # ---- serving ----
    def request_field(self) -> RequestField:
        options = self.config  # a sound arrives as a file, read at the rate arrays are read at
        return RequestField(
            Any, "a sound file (WAV, FLAC, OGG), base64-encoded; or upload it with multipart/form-data",
            audio_requests.silence(), Widget("file", accept="audio/*"), nullable=options.missing != "error",
            read=partial(audio_requests.read, options.array_rate or options.sample_rate), file=True)

    # ---- explanation: a heat map over the log-mel spectrogram ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Pixels:
        """At the normalised log-mel spectrogram, whose zeros are the training mean."""
        with torch.no_grad():
            spectrogram = encoder.spectrogram(values)  # (B, 1, mels, frames)
        return attribution.Pixels(self.config.name, spectrogram, torch.zeros_like(spectrogram),
                                  encoder.from_spectrogram)

    def baseline_description(self) -> str:
        return "the training mean log-mel spectrogram (every mel bin at its training mean)"

    def heat_map_background(self, encoder: nn.Module, value: Any) -> np.ndarray:
        waveform = self.transform(pd.Series([value], dtype=object))[0:1]  # (1, samples)
        with torch.no_grad():
            pixels = encoder.eval().spectrogram(waveform)  # (1, 1, M, F), normalised
        pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()).clamp_min(1e-6) * 255
        return np.asarray(pixels[0]).transpose(1, 2, 0)  # (M, F, 1)


def classic_features(column: pd.Series, name: str) -> np.ndarray:
    """For the classic baseline: 20 MFCCs (DCT-II of a 40-bin log-mel at 16 kHz, 25 ms windows)
    summarised per clip by their mean and std over time, plus their deltas' std (arrays are read as
    16 kHz); NaN for an empty or unreadable cell."""
    options = Options()
    decoding = decoding_of(options, name)
    waveforms, _ = decode_all(list(zip(column.index, column)), decoding)
    log_mel = LogMel(options.sample_rate, options.mels, options.window_ms, options.hop_ms, options.low_hz, None)
    mels = options.mels
    grid = torch.arange(mels, dtype=torch.float64)
    dct = torch.cos(math.pi / mels * (grid[None, :] + 0.5) * torch.arange(20, dtype=torch.float64)[:, None])  # (20, M)
    rows = np.full((len(waveforms), 60), np.nan)
    present = [position for position, waveform in enumerate(waveforms) if waveform is not None]
    for start in range(0, len(present), 256):
        chunk = present[start:start + 256]
        with torch.no_grad():
            spectrograms = log_mel(stack([waveforms[position] for position in chunk], decoding.samples)).double()
        coefficients = torch.matmul(dct, spectrograms)  # (B, 20, F)
        deltas = coefficients.diff(dim=2)
        summary = torch.cat([coefficients.mean(2), coefficients.std(2), deltas.std(2)], dim=1)
        rows[chunk] = summary.numpy()
    return rows


SNIFF_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")


def sniff_sounds(column: base.Column) -> base.Sniff | None:
    """Feature.sniff of an audio column (see there)."""
    found = files.sniffed_paths(column, SNIFF_SUFFIXES, "sound")
    if found is None:
        return None
    paths, reason = found
    if not paths:
        return base.Sniff(0.8, reason)
    try:
        import soundfile
    except ImportError:
        return base.Sniff(0.9, "sound files (pip install 'lamina[audio]' to read them)")
    rates, durations = [], []
    for path in paths[:20]:
        try:
            info = soundfile.info(path)
        except (RuntimeError, OSError):  # an unreadable file is named when the column is read
            continue
        rates.append(int(info.samplerate))
        durations.append(float(info.duration))
    if not rates:
        return base.Sniff(0.8, "sound file paths (none of the first files could be read)")
    rate = min(16000, int(pd.Series(rates).mode().iloc[0]))
    duration = float(min(30.0, max(0.1, math.ceil(np.percentile(durations, 95) * 10) / 10)))
    return base.Sniff(0.95, f"{reason}, {duration:g} s at {rate} Hz)", {"sample_rate": rate, "duration": duration})

"""Sounds sent to a served model: a base64 string or uploaded bytes of a WAV / FLAC / OGG file, whose
header (frames, channels, rate) is read and charged to the request's Budget before a sample is
decoded; and the short silence of the request's example."""
from __future__ import annotations

import base64
import io
import math
from functools import partial
from typing import Any

import numpy as np
from pydantic import ValidationInfo

from lamina.features.request import Undecoded, budget_of, file_bytes, reason

# Resampling builds a polyphase filter of about (original / gcd) x (target / gcd) taps: common rates need
# under 300,000 (11025 -> 16000 Hz), a crafted one (44101 Hz) billions. Larger are refused.
MAX_RESAMPLING_FILTER = 1_000_000


def read(rate: int, value: Any, info: ValidationInfo) -> Any:
    """A base64 string or uploaded bytes of a WAV / FLAC / OGG file -> an Undecoded sound: its
    header (frames, channels, rate) is read and charged now; `Undecoded.decode` gives (samples, 1)
    float32 at `rate`, the array the audio feature takes."""
    import soundfile

    data = file_bytes(value, "sound")
    if data is None:
        return None
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            frames, channels, original = sound.frames, sound.channels, sound.samplerate
    except (RuntimeError, TypeError, ValueError) as error:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(f"cannot read the sound ({reason(error)}); send a WAV, FLAC or OGG file") from None
    if frames <= 0:
        raise ValueError("the sound file holds no samples")
    divisor = math.gcd(original, rate)
    if (original // divisor) * (rate // divisor) > MAX_RESAMPLING_FILTER:
        raise ValueError(f"the sound is sampled at {original} Hz, which cannot be resampled to the model's "
                         f"{rate} Hz at a bounded cost; send it at {rate} Hz or a common rate (8000, 16000, "
                         f"22050, 44100 or 48000 Hz)")
    resampled = math.ceil(frames * rate / original) if original != rate else 0
    budget_of(info).charge_sound(frames * channels + resampled)
    return Undecoded(partial(_decode, data, frames, original, rate))


def _decode(data: bytes, frames: int, original: int, rate: int) -> np.ndarray:
    import soundfile
    import torch

    from lamina.features.audio_encoders import resample

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            sound = file.read(frames=frames, dtype="float32", always_2d=True)  # never more than was charged
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"cannot read the sound ({reason(error)}); send a WAV, FLAC or OGG file") from None
    if sound.size == 0:
        raise ValueError("the sound file holds no samples")
    mono = np.ascontiguousarray(sound.mean(axis=1))  # the feature mixes down anyway: resample one channel
    if original != rate:
        mono = resample(torch.from_numpy(mono), original, rate).numpy()
    return mono[:, None]  # (samples, 1)


def silence() -> str:
    """A short silent WAV, base64-encoded."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(1600, dtype=np.float32), 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()

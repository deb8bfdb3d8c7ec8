"""The spoken_digits_synthetic data set: the words 'zero'..'nine' synthesised with espeak-ng in many
accents, voices, speeds and pitches, with background noise (training and validation), tested on
real human recordings of the same words from Asterisk's English prompts. Generated once, then read
from the cache."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lamina.datasets.tabular import CACHE
from lamina.errors import DataError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
INSTALL = "apt-get install -y espeak-ng asterisk-core-sounds-en-wav  (Debian, as root)"
REAL_FOLDER = Path("/usr/share/asterisk/sounds/en/digits")  # <digit>.wav, 8 kHz, one female speaker
# espeak-ng's own English accents (the mbrola voices need extra packages and are left out)
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc"]
CLIPS_PER_WORD = 200
VALIDATION_SHARE = 0.15
CACHE_NAME = "spoken_digits_synthetic-v1"  # bump the version when the generation changes
# Columns that say how a clip was made, not what a model hears: `lamina init-config` leaves them out
BOOKKEEPING = {"word": "the digit written as a word: the answer itself",
               "voice": "the espeak-ng voice that made the clip; a real recording has none",
               "speed": "the espeak-ng speed that made the clip; a real recording has none",
               "pitch": "the espeak-ng pitch that made the clip; a real recording has none",
               "source": "synthetic or real: it marks the test rows, which are the real recordings"}


def cache_folder() -> Path:
    return CACHE / CACHE_NAME


def locate() -> str | None:
    """The generated clips if cached, else the real recordings' folder when espeak-ng can make them."""
    if (cache_folder() / "index.csv").is_file():
        return str(cache_folder())
    return str(REAL_FOLDER) if REAL_FOLDER.is_dir() and shutil.which("espeak-ng") else None


def voice_variants() -> list[str]:
    """espeak-ng's voice variants (m1..m7, f1..f5, klatt, ...): the files of its voices/!v folder."""
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = [token.removeprefix("!v/") for line in listing.splitlines()[1:] for token in line.split()
             if token.startswith("!v/")]
    return sorted(set(names)) or ["m1", "f3"]


def noisy(waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Most clips get white or pink noise at 5..30 dB SNR, and every clip a random gain."""
    if rng.random() < 0.7:
        noise = rng.normal(size=len(waveform))
        if rng.random() < 0.5:  # pink: 1/f power
            spectrum = np.fft.rfft(noise) / np.sqrt(np.maximum(np.arange(len(noise) // 2 + 1), 1))
            noise = np.fft.irfft(spectrum, n=len(noise))
        signal_rms = np.sqrt(np.mean(waveform ** 2)) or 1.0
        noise *= signal_rms / (np.sqrt(np.mean(noise ** 2)) * 10 ** (rng.uniform(5, 30) / 20))
        waveform = waveform + noise
    waveform = waveform * rng.uniform(0.2, 1.0) / max(np.abs(waveform).max(), 1e-9)
    return waveform.astype(np.float32)


def synthesise(folder: Path, rng: np.random.Generator) -> pd.DataFrame:
    """CLIPS_PER_WORD clips of each word in `folder`, each from a random accent, voice variant,
    speed (110..200 words a minute) and pitch (20..80 of espeak's 0..99)."""
    import soundfile

    variants, rows = voice_variants(), []
    for word_index, word in enumerate(WORDS):
        for clip in range(CLIPS_PER_WORD):
            accent, variant = rng.choice(ACCENTS), rng.choice(variants)
            speed, pitch = int(rng.integers(110, 201)), int(rng.integers(20, 81))
            raw = folder / "raw.wav"
            subprocess.run(["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "-w",
                            str(raw), word], check=True, capture_output=True)
            waveform, rate = soundfile.read(raw, dtype="float32")
            name = f"{word}_{clip:03d}.wav"
            soundfile.write(folder / name, noisy(waveform, rng), rate, subtype="PCM_16")
            rows.append({"file": name, "digit": str(word_index), "word": word, "voice": f"{accent}+{variant}",
                         "speed": speed, "pitch": pitch})
    raw.unlink()
    return pd.DataFrame(rows)


def generate() -> None:
    """Make the clips once, in a temporary folder renamed into place (atomic: a reader never sees
    a half-made set, and two processes generating at once leave one whole copy)."""
    if not shutil.which("espeak-ng"):
        raise DataError(f"spoken_digits_synthetic needs espeak-ng to synthesise its clips; install: {INSTALL}")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=CACHE, prefix=CACHE_NAME, suffix=".part"))
    try:
        index = synthesise(partial, np.random.default_rng(0))
        index.to_csv(partial / "index.csv", index=False)
        os.chmod(partial, 0o755)  # mkdtemp makes it private; a cache is readable like any download
        try:
            os.replace(partial, cache_folder())
        except OSError:  # another process finished first: keep its copy
            if not (cache_folder() / "index.csv").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def spoken_digits_synthetic() -> pd.DataFrame:
    """2,000 synthetic clips (`split` train, and a seeded 15% validation) and the 10 real recordings
    '0.wav'..'9.wav' (`split` test). Columns: audio (file path), digit '0'..'9', word, voice,
    source synthetic/real."""
    if not (REAL_FOLDER / "0.wav").is_file():
        raise DataError(f"the real test recordings ({REAL_FOLDER}) are not installed; install: {INSTALL}")
    if not (cache_folder() / "index.csv").is_file():
        generate()
    frame = pd.read_csv(cache_folder() / "index.csv", dtype={"digit": str})
    frame["audio"] = [str(cache_folder() / name) for name in frame.pop("file")]
    validation = np.random.default_rng(1).random(len(frame)) < VALIDATION_SHARE
    frame["split"] = np.where(validation, "validation", "train")
    frame["source"] = "synthetic"
    real = pd.DataFrame({"audio": [str(REAL_FOLDER / f"{digit}.wav") for digit in range(10)],
                         "digit": [str(digit) for digit in range(10)], "word": WORDS, "voice": "human (Asterisk)",
                         "speed": np.nan, "pitch": np.nan, "split": "test", "source": "real"})
    return pd.concat([frame, real], ignore_index=True)[["audio", "digit", "word", "voice", "speed", "pitch",
                                                        "split", "source"]]

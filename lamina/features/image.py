"""The `image` data type (input only): image files (PNG, JPEG, BMP, TIFF, DICOM) or arrays in,
a convolutional encoder (small CNN or ResNet) out to a vector.

Cells decode to uint8 (or, for float arrays, raw float) tensors (N, C, H, W); scaling,
normalisation and training-time augmentation run in torch inside the encoder. Small sets are
decoded once up front; larger ones become a `LazyColumn` read batch by batch in worker processes.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from torch import nn

from lamina.errors import DataError
from lamina.features.common import (Unreadable, decode_cells, describe_cell, is_missing_cell, missing_mask,
                                    raise_if_missing)
from lamina.features.image_encoders import Encoder, read_weights

if TYPE_CHECKING:
    from lamina.data import LazyColumn

CAN_BE_OUTPUT = False
READ_AS = "string"  # file paths are text, whatever pandas would guess
CACHE_LIMIT = 512 * 2 ** 20  # cache: auto decodes a column up front when its pixels fit in this many bytes
STATS_SAMPLE = 2048  # mean and std come from at most this many training images (a seeded sample)
GREY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, the weights Pillow's convert("L") uses


Side = Annotated[int, Field(ge=1, le=8192)]


def _square(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value


def _yes_no(value: Any) -> Any:
    # YAML 1.1 reads a bare `yes` / `no` as a boolean
    return {True: "yes", False: "no"}.get(value, value) if isinstance(value, bool) else value


class Augment(BaseModel):
    """Random changes to training images (never at evaluation or prediction), drawn from torch's
    generator so a run is reproducible from its seed."""

    model_config = ConfigDict(extra="forbid")
    crop: int = Field(0, ge=0, description="shift each image by up to this many pixels (pad and crop back)")
    flip: bool = Field(False, description="mirror half of the images left-right")
    rotation: float = Field(0.0, ge=0.0, le=180.0, description="rotate by up to this many degrees either way")
    brightness: float = Field(0.0, ge=0.0, lt=1.0, description="scale brightness by a random factor in 1 ± this")
    contrast: float = Field(0.0, ge=0.0, lt=1.0, description="scale contrast by a random factor in 1 ± this")


class Options(BaseModel):
    """Options of an image feature."""

    model_config = ConfigDict(extra="forbid")
    size: Annotated[tuple[Side, Side], BeforeValidator(_square)] = Field(
        (64, 64), description="[height, width] every image is resized to (one number: a square)")
    channels: Literal[1, 3] = Field(3, description="1: grey, 3: RGB; images are converted on reading")
    encoder: Literal["cnn", "resnet"] = Field(
        "cnn", description="cnn: a small fast convolutional network; resnet: ResNet basic blocks")
    width: int = Field(32, ge=1, le=1024, description="channels of the first stage; each later stage doubles them")
    stages: int = Field(3, ge=1, le=6, description="stages; each after the first halves height and width")
    depth: int | None = Field(None, ge=1, le=16, description="layers (cnn) or basic blocks (resnet) per stage; "
                                                           "default 1 for cnn, 2 for resnet")
    embedding_size: int = Field(128, ge=1, description="width of the vector the encoder outputs")
    weights: str | None = Field(None, description="a .safetensors file holding the encoder's initial weights "
                                                  "(a state_dict saved from an encoder with the same options)")
    augment: Augment | None = Field(None, description="random changes to the images while training")
    missing: Literal["fill", "drop", "error"] = Field(
        "fill", description="fill: an empty cell becomes a plain image of the training mean colour; drop removes "
                            "the rows while training")
    on_error: Literal["stop", "skip"] = Field(
        "stop", description="stop: an unreadable file or bad array is an error; skip: such rows are left out of "
                            "training and evaluation, and predicted from a plain image of the mean colour")
    cache: Annotated[Literal["auto", "yes", "no"], BeforeValidator(_yes_no)] = Field(
        "auto", description="yes: decode every image once up front; no: decode batch by batch (data sets larger "
                            "than memory); auto: yes when the decoded pixels fit in 512 MB")
    root: str | None = Field(None, description="folder that relative file paths are read from (default: the "
                                               "current folder)")
    window_center: float | None = Field(None, description="DICOM window centre for files that carry none")
    window_width: float | None = Field(None, gt=0, description="DICOM window width for files that carry none")


@dataclass(frozen=True)
class Decoding:
    """What turning a cell into an image needs: a plain, picklable record (DataLoader worker
    processes receive it), unlike the pydantic config."""

    name: str
    size: tuple[int, int]
    channels: int
    root: str | None = None
    window: tuple[float | None, float | None] = (None, None)
    on_error: str = "stop"
    fill: tuple[float, ...] = ()


# --- decoding one cell -------------------------------------------------------------------------

def describe(value: Any) -> str:
    if isinstance(value, Image.Image):
        return "a PIL image"
    return describe_cell(value)  # a path whole, an array's shape, an in-memory file by its size


def resolve(value: str | os.PathLike, root: str | None) -> Path:
    path = Path(value).expanduser()
    return Path(root).expanduser() / path if root and not path.is_absolute() else path


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _to_uint8(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] onto 0..255, clipped (the DICOM window; min-max when not given)."""
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round(np.clip((pixels - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        # pydicom gives several windows (a MultiValue) for some scans: the first is the default
        return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None


def read_dicom(path: Path, decoding: Decoding) -> np.ndarray:
    """A DICOM image as uint8: rescale slope/intercept applied, then the file's window, else the
    configured one, else the pixels' own min-max. MONOCHROME1 (white = low) is inverted."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # a missing package is not a bad file: never skipped
        raise ImportError("reading DICOM files needs pydicom: pip install 'lamina[medical]'") from None
    try:
        dataset = pydicom.dcmread(path, force=True)
        pixels = dataset.pixel_array
    except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError, TypeError, EOFError,
            NotImplementedError, RuntimeError) as error:
        raise Unreadable(f"cannot decode the DICOM file: {_first_line(error)}") from None
    frames = int(_first_number(dataset.get("NumberOfFrames")) or 1)
    if frames > 1:
        raise Unreadable(f"a DICOM file of {frames} frames; lamina reads one image per cell: save each frame apart")
    if pixels.ndim == 3:  # colour (RGB after pydicom's conversion): the window is for grey pixels
        return pixels if pixels.dtype == np.uint8 else _to_uint8(pixels, float(pixels.min()), float(pixels.max()))
    slope = _first_number(dataset.get("RescaleSlope"))
    intercept = _first_number(dataset.get("RescaleIntercept"))
    values = pixels.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
    center = _first_number(dataset.get("WindowCenter"))
    width = _first_number(dataset.get("WindowWidth"))
    if center is None or not width:
        center, width = decoding.window
    if center is None or not width:
        grey = _to_uint8(values, float(values.min()), float(values.max()))
    else:
        grey = _to_uint8(values, center - width / 2, center + width / 2)
    return 255 - grey if str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1" else grey


def _from_pillow(image: Image.Image, decoding: Decoding) -> np.ndarray:
    """A decoded Pillow image -> (H, W, C) uint8 at the configured size and channels."""
    if image.mode in ("I", "F") or image.mode.startswith("I;"):  # 16-bit or float: min-max onto 0..255
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(_to_uint8(pixels, float(pixels.min()), float(pixels.max())))
    image = image.convert("L" if decoding.channels == 1 else "RGB")
    height, width = decoding.size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(height, width, decoding.channels)


def _looks_like_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def read_file(path: Path, decoding: Decoding) -> np.ndarray:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return _from_pillow(Image.fromarray(read_dicom(path, decoding)), decoding)
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        if _looks_like_dicom(path):
            return _from_pillow(Image.fromarray(read_dicom(path, decoding)), decoding)
        raise Unreadable("not an image file Pillow can read (PNG, JPEG, BMP, TIFF, ...) nor DICOM") from None
    except (OSError, Image.DecompressionBombError) as error:  # unreadable (permissions), or absurdly large
        raise Unreadable(_first_line(error)) from None
    with image:
        try:
            image.load()  # decodes every pixel: a truncated file fails here, not in the middle of training
            upright = ImageOps.exif_transpose(image)  # photos taken with the camera turned
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise Unreadable(f"damaged or truncated {image.format or 'image'} file: {_first_line(error)}") from None
        return _from_pillow(upright, decoding)


def _from_float(array: np.ndarray, decoding: Decoding) -> np.ndarray:
    """A float (H, W, C) array -> (H, W, channels) float32 at the configured size, values kept as
    they are: the encoder's learned mean and std put them on the network's scale."""
    if not np.isfinite(array).all():
        raise Unreadable("the array holds NaN or infinite values")
    if array.shape[2] == 4:
        array = array[:, :, :3]  # drop alpha
    if decoding.channels == 1 and array.shape[2] == 3:
        array = array @ np.asarray(GREY, dtype=np.float32)[:, None]  # (H, W, 1)
    elif decoding.channels == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    height, width = decoding.size
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(array[:, :, plane]))  # mode "F"
                         .resize((width, height), Image.Resampling.BILINEAR)) for plane in range(array.shape[2])]
    return np.stack(planes, axis=2).astype(np.float32)


def from_array(value: Any, decoding: Decoding) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or min(array.shape[:2]) < 1:
        what = "a number" if array.ndim == 0 else f"shape {array.shape}"
        raise Unreadable(f"{what} is not an image: give a file path, or an HxW (grey) or HxWxC (C = 1, 3 or 4) array")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return _from_pillow(Image.fromarray(np.ascontiguousarray(array)), decoding)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise Unreadable(f"an array of dtype {array.dtype} is not an image: give uint8 or float pixels")
    return _from_float(array.astype(np.float32).reshape(*array.shape[:2], -1), decoding)


def decode_one(value: Any, decoding: Decoding) -> np.ndarray:
    """One cell -> (H, W, C) uint8 (files, uint8 arrays) or float32 (other arrays); raises Unreadable."""
    if isinstance(value, Image.Image):
        return _from_pillow(value, decoding)
    if not isinstance(value, (str, os.PathLike)):
        return from_array(value, decoding)
    path = resolve(value, decoding.root)
    if not path.is_file():
        if path.is_dir():
            raise Unreadable(f"'{path}' is a folder, not an image file")
        where = f"under root '{decoding.root}'" if decoding.root else \
            f"relative to the current folder '{os.getcwd()}'; set root: to the images' folder"
        raise Unreadable(f"no such file: looked for '{path}'" + ("" if Path(value).is_absolute() else f" {where}"))
    return read_file(path, decoding)


# --- decoding many cells (module level, so DataLoader workers can run it) ------------------------

def decode_all(items: list[tuple[Any, Any]], decoding: Decoding) -> tuple[list, list[tuple[Any, Any, str]]]:
    """Images (None for an empty or unreadable cell) and the problems as (row, value, reason)."""
    return decode_cells(items, decode_one, decoding)


def problem_message(name: str, row: Any, value: Any, reason: str) -> str:
    return (f"column '{name}' row {row}: cannot read {describe(value)} ({reason}); fix or remove it, "
            f"or set on_error: skip to leave such rows out")


def stack(images: list, decoding: Decoding) -> torch.Tensor:
    """Images -> (N, C, H, W): uint8 when every image is uint8, else float32; empty cells take the
    fill colour (the training mean, which the encoder normalises to zero)."""
    height, width = decoding.size
    present = [image for image in images if image is not None]
    dtype = np.uint8 if all(image.dtype == np.uint8 for image in present) else np.float32
    fill = np.asarray(decoding.fill or [0.0] * decoding.channels, dtype=np.float64)
    fill = np.clip(np.round(fill), 0, 255) if dtype == np.uint8 else fill
    batch = np.empty((len(images), decoding.channels, height, width), dtype=dtype)  # (N, C, H, W)
    batch[:] = fill.astype(dtype).reshape(1, -1, 1, 1)
    for position, image in enumerate(images):
        if image is not None:
            batch[position] = image.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return torch.from_numpy(batch)


def decode_rows(decoding: Decoding, items: list[tuple[Any, Any]]) -> torch.Tensor:
    """The decode function of a LazyColumn: (row, cell) pairs -> (N, C, H, W)."""
    images, problems = decode_all(items, decoding)
    if problems and decoding.on_error == "stop":
        raise DataError(problem_message(decoding.name, *problems[0]))
    return stack(images, decoding)


# --- defaults that fit the data (a folder trained with no config) -----------------------------

INFER_SAMPLE = 200  # files whose headers set the inferred size and channels
INFER_MAX_SIDE = 64  # larger images are shrunk to at most this side: the small CNN is trained on the CPU too
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def infer_options(paths: Sequence[str]) -> dict:
    """Options for an image column of files, from the headers of a seeded sample of them (no
    pixel is decoded): `channels: 1` when every sampled image is grey, and `size` the median
    height and width, shrunk (aspect kept) so the longer side is at most INFER_MAX_SIDE. Small
    grey images (scans, digits) are then trained as they are, not upscaled to 64x64 RGB. The CNN
    gets two layers a stage (`depth: 2`)."""
    paths = list(paths)
    if not paths:
        return {}
    chosen = np.random.default_rng(0).choice(len(paths), min(len(paths), INFER_SAMPLE), replace=False)
    heights, widths, grey = [], [], True
    for position in chosen:
        try:
            with Image.open(paths[position]) as image:
                heights.append(image.height)
                widths.append(image.width)
                grey = grey and image.mode in GREY_MODES
        except (OSError, UnidentifiedImageError, ValueError):  # DICOM and unreadable files: left to decoding
            continue
    if not heights:
        return {}
    height, width = float(np.median(heights)), float(np.median(widths))
    scale = min(1.0, INFER_MAX_SIDE / max(height, width))
    # two layers a stage: one per stage sees too little of a small image before the average pool
    # (5,000 MNIST digits in a folder: test accuracy 0.950 with depth 1, 0.978 with depth 2)
    return {"size": [max(8, round(height * scale)), max(8, round(width * scale))], "channels": 1 if grey else 3,
            "depth": 2}


# --- the feature -------------------------------------------------------------------------------

class Feature:
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}
        self._weights: dict[str, torch.Tensor] | None = None  # from `weights:`, read by fit (not saved)
        self._verdicts: dict[str, str | None] = {}  # file -> why it is unreadable (None: fine), checked once

    def _decoding(self) -> Decoding:
        options = self.config
        return Decoding(options.name, tuple(options.size), options.channels, options.root,
                        (options.window_center, options.window_width), options.on_error,
                        tuple(self.stats.get("mean", ())))

    def fit(self, column: pd.Series) -> None:
        """Per-channel mean and std of the training images (a seeded sample of at most STATS_SAMPLE)."""
        options = self.config
        present = column[~missing_mask(column)]
        if present.empty:
            raise DataError(f"column '{options.name}' has no values in the training split; "
                            f"remove the feature or fill the column")
        count = min(len(present), STATS_SAMPLE)
        positions = np.sort(np.random.default_rng(0).choice(len(present), count, replace=False))
        items = list(zip(present.index[positions], present.iloc[positions]))
        sums, squares, pixels, images = np.zeros(options.channels), np.zeros(options.channels), 0, 0
        for start in range(0, len(items), 256):
            decoded, problems = decode_all(items[start:start + 256], self._decoding())
            if problems and options.on_error == "stop":
                raise DataError(problem_message(options.name, *problems[0]))
            for image in (image for image in decoded if image is not None):
                values = image.reshape(-1, options.channels).astype(np.float64)  # (H * W, C)
                sums, squares = sums + values.sum(axis=0), squares + (values ** 2).sum(axis=0)
                pixels, images = pixels + len(values), images + 1
        if not images:
            raise DataError(f"column '{options.name}': no image of the training split could be read; "
                            f"check the paths (and root: {options.root!r})")
        mean = sums / pixels
        std = np.sqrt(np.maximum(squares / pixels - mean ** 2, 0.0))
        std[std < 1e-6] = 1.0  # a constant channel carries no signal; avoid dividing by zero
        self.stats = {"mean": [float(value) for value in mean], "std": [float(value) for value in std],
                      "images": int(images)}
        if options.weights:  # read and checked now, so a bad file fails before training starts
            self._weights = read_weights(options.weights, Encoder(options, self.stats), options.name)

    def _check(self, items: list[tuple[Any, Any]]) -> list[tuple[Any, Any, str]]:
        """Problems of the cells, decoding each file once per feature (lazily read columns are
        checked up front, so a bad file fails now rather than in the middle of training)."""
        decoding, problems = self._decoding(), []
        for row, value in items:
            if is_missing_cell(value):
                continue
            key = str(resolve(value, decoding.root)) if isinstance(value, (str, os.PathLike)) else None
            if key is None or key not in self._verdicts:
                try:
                    decode_one(value, decoding)
                    reason = None
                except Unreadable as error:
                    reason = str(error)
                if key is not None:
                    self._verdicts[key] = reason
            else:
                reason = self._verdicts[key]
            if reason:
                problems.append((row, value, reason))
        return problems

    def _report(self, problems: list, total: int, consequence: str) -> None:
        if not problems:
            return
        if self.config.on_error == "stop":
            raise DataError(problem_message(self.config.name, *problems[0]))
        listed = "; ".join(f"row {row} {describe(value)}: {reason}" for row, value, reason in problems[:3])
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        warnings.warn(f"column '{self.config.name}': {len(problems)} of {total} rows hold no readable image "
                      f"({listed}{more}); {consequence} (on_error: skip)", stacklevel=3)

    def bad_rows(self, column: pd.Series) -> np.ndarray:
        """True for rows whose cell cannot be read, with on_error: skip (the rows are then left out
        of training and evaluation); with on_error: stop, none (reading them raises instead)."""
        mask = np.zeros(len(column), dtype=bool)
        if self.config.on_error == "skip":
            problems = self._check(list(zip(range(len(column)), column)))
            mask[[position for position, _, _ in problems]] = True
            labelled = [(column.index[position], value, reason) for position, value, reason in problems]
            self._report(labelled, len(column), "these rows are left out")
        return mask

    def transform(self, column: pd.Series) -> torch.Tensor | LazyColumn:
        from lamina.data import LazyColumn  # here, not at the top: data -> config -> features -> image

        options = self.config
        if options.missing == "error":
            raise_if_missing(column, options.name)
        items = list(zip(column.index, column))
        decoding = self._decoding()
        consequence = "they are read as a plain image of the training mean colour"
        height, width = decoding.size
        decoded_bytes = len(items) * options.channels * height * width
        if options.cache == "yes" or (options.cache == "auto" and decoded_bytes <= CACHE_LIMIT):
            images, problems = decode_all(items, decoding)
            self._report(problems, len(items), consequence)
            return stack(images, decoding)  # (N, C, H, W)
        self._report(self._check(items), len(items), consequence)
        return LazyColumn(items, partial(decode_rows, decoding))

    def encoder(self) -> nn.Module:
        encoder = Encoder(self.config, self.stats)
        if self._weights is not None:
            encoder.load_state_dict(self._weights, strict=False)  # keys checked by read_weights
        return encoder

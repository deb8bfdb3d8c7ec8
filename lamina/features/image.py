"""The `image` data type (input only): image files (PNG, JPEG, BMP, TIFF, DICOM) or arrays in,
a convolutional encoder (small CNN or ResNet) out to a vector.

Cells decode to uint8 (or, for float arrays, raw float) tensors (N, C, H, W); scaling,
normalisation and training-time augmentation run in torch inside the encoder. Small sets are
decoded once up front; larger ones become a `LazyColumn` read batch by batch in worker processes.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, base, classic, files, image_requests
from lamina.features.columns import LazyColumn
from lamina.features.common import Unreadable, decode_cells, describe_cell, tensor_entry
from lamina.features.files import first_line
from lamina.features.image_dicom import looks_like_dicom, read_dicom, to_uint8
from lamina.features.image_encoders import Encoder, read_weights
from lamina.features.request import RequestField, Widget

CAN_BE_OUTPUT = False
CAN_BE_INPUT = True
READ_AS = "string"  # file paths are text, whatever pandas would guess
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


def _from_pillow(image: Image.Image, decoding: Decoding) -> np.ndarray:
    """A decoded Pillow image -> (H, W, C) uint8 at the configured size and channels."""
    if image.mode in ("I", "F") or image.mode.startswith("I;"):  # 16-bit or float: min-max onto 0..255
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(to_uint8(pixels, float(pixels.min()), float(pixels.max())))
    image = image.convert("L" if decoding.channels == 1 else "RGB")
    height, width = decoding.size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(height, width, decoding.channels)


def read_file(path: Path, decoding: Decoding) -> np.ndarray:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return _from_pillow(Image.fromarray(read_dicom(path, decoding.window)), decoding)
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        if looks_like_dicom(path):
            return _from_pillow(Image.fromarray(read_dicom(path, decoding.window)), decoding)
        raise Unreadable("not an image file Pillow can read (PNG, JPEG, BMP, TIFF, ...) nor DICOM") from None
    except (OSError, Image.DecompressionBombError) as error:  # unreadable (permissions), or absurdly large
        raise Unreadable(first_line(error)) from None
    with image:
        try:
            image.load()  # decodes every pixel: a truncated file fails here, not in the middle of training
            upright = ImageOps.exif_transpose(image)  # photos taken with the camera turned
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise Unreadable(f"damaged or truncated {image.format or 'image'} file: {first_line(error)}") from None
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
    path = files.resolve(value, decoding.root)
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


CELLS = files.Cells("image", describe, decode_one, stack)  # a LazyColumn decodes (N, C, H, W) with these


def grey_pixels(column: pd.Series, decoding: Decoding) -> tuple[np.ndarray, np.ndarray]:
    """For the classic baseline: each cell's flat pixels (zeros where unreadable) and whether it was read."""
    images, _ = decode_all(list(zip(column.index, column)), decoding)
    present = np.array([picture is not None for picture in images], dtype=bool)
    flat = np.zeros((len(images), decoding.size[0] * decoding.size[1] * decoding.channels))
    for position in np.flatnonzero(present):
        flat[position] = images[position].reshape(-1)
    return flat, present


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

class Feature(base.Feature):
    describes_items = False  # cells read lazily or sequence-shaped: not a ranking's item side
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}
        self._weights: dict[str, torch.Tensor] | None = None  # from `weights:`, read by fit (not saved)
        self._reader = files.Reader(CELLS)  # checks each file once

    def _decoding(self) -> Decoding:
        options = self.config
        return Decoding(options.name, tuple(options.size), options.channels, options.root,
                        (options.window_center, options.window_width), options.on_error,
                        tuple(self.stats.get("mean", ())))

    def fit(self, column: pd.Series) -> None:
        """Per-channel mean and std of the training images (a seeded sample, see files.sampled_batches)."""
        options = self.config
        empty = f"column '{options.name}' has no values in the training split; remove the feature or fill the column"
        sums, squares, pixels, images = np.zeros(options.channels), np.zeros(options.channels), 0, 0
        for batch in files.sampled_batches(CELLS, column, self._decoding(), empty):
            for image in batch:
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

    def bad_rows(self, column: pd.Series) -> np.ndarray:
        """True for rows whose cell cannot be read, with on_error: skip (see files.Reader.bad_rows)."""
        return self._reader.bad_rows(column, self._decoding())

    def transform(self, column: pd.Series) -> torch.Tensor | LazyColumn:
        """(N, C, H, W) uint8 or float32, decoded now or batch by batch (see files.Reader.transform)."""
        (height, width), channels = self.config.size, self.config.channels
        return self._reader.transform(column, self.config, self._decoding(), channels * height * width,
                                      "a plain image of the training mean colour")

    def encoder(self) -> nn.Module:
        encoder = Encoder(self.config, self.stats)
        if self._weights is not None:
            encoder.load_state_dict(self._weights, strict=False)  # keys checked by read_weights
        return encoder

    # ---- classic baseline ----
    def classic_encoder(self, style: str, seed: int) -> classic.Pixels:
        """Each image shrunk to 16x16 grey pixels; missing or unreadable ones take the mean image."""
        options = self.config
        decoding = Decoding(options.name, classic.PIXELS, 1, options.root,
                            (options.window_center, options.window_width), "skip")
        return classic.Pixels(options.name, partial(grey_pixels, decoding=decoding),
                              f"{classic.PIXELS[0]}x{classic.PIXELS[1]} grey pixels")

    # ---- serving ----
    def request_field(self) -> RequestField:
        return RequestField(
            Any, "an image file (PNG, JPEG, ...), base64-encoded; or upload it with multipart/form-data",
            image_requests.plain_image(self.stats.get("mean", [128] * self.config.channels)),
            Widget("file", accept="image/*"), nullable=self.config.missing != "error", read=image_requests.read,
            file=True)

    # ---- export: scaling by the training mean and std runs inside the graph ----
    def export_entry(self) -> dict:
        (height, width), channels = self.config.size, self.config.channels
        return {"tensor": tensor_entry(self.config.name, "uint8", ["rows", channels, height, width]),
                "preprocess": {"encoding": "pixels", "size": [height, width], "channels": channels, "layout": "NCHW",
                               "value": "the decoded image converted to grey (L, ITU-R 601-2) or RGB, resized "
                                        "bilinearly to size; missing images: every pixel the training mean colour",
                               "inside_the_model": "scaling by the training mean and std", "stats": self.stats}}

    def export_examples(self) -> list:
        pixel = np.clip(np.round(self.stats["mean"]), 0, 255).astype(np.uint8)  # the training mean colour
        return [np.tile(pixel, (*self.config.size, 1))] * 2

    # ---- explanation: a heat map over the pixels ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Pixels:
        mean = torch.tensor(self.stats["mean"]).view(1, -1, 1, 1)  # (1, C, 1, 1)
        return attribution.Pixels.at_input(self.config.name, encoder, values, mean)

    def baseline_description(self) -> str:
        return "a plain image of the training mean colour"

    def heat_map_background(self, encoder: nn.Module, value: Any) -> np.ndarray:
        pixels = self.transform(pd.Series([value], dtype=object))[0:1]  # (1, C, H, W), as the network saw it
        return np.asarray(pixels[0]).transpose(1, 2, 0)

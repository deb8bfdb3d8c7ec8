"""The network side of the `boxes` data type (see boxes.py): a CenterNet head ("Objects as Points",
Zhou et al. 2019) on an image encoder's feature map, its training targets and loss, decoding peaks
into boxes, and COCO mean average precision. Box coordinates here are fractions of the image's
width and height (x to the right, y down), so they do not depend on how the image was resized."""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional

OUTPUT_STRIDE = 4  # input pixels per heat-map cell: CenterNet's; a 96x96 image gives a 24x24 heat map
HEAT_BIAS = -math.log((1 - 0.1) / 0.1)  # -2.19: every class starts at probability 0.1 (focal loss init)
SIZE_WEIGHT = 0.1  # the size loss's weight (CenterNet: sizes are in cells, several times the offsets)
MIN_OVERLAP = 0.7  # a shifted centre still giving this IoU is penalised less (the Gaussian's radius)
PADDING = -1  # the label of a target's padding rows: rows hold different numbers of boxes


def convolution(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class Head(nn.Module):
    """Feature maps -> (B, K + 4, H / stride, W / stride): K class heat-map logits, then width and height
    (in heat-map cells) and the centre's sub-cell offset (x, y). `levels`: (channels, stride) of the
    encoder's maps, finest first. The last map is read first; each upsampling step doubles the
    resolution (bilinear), adds the encoder's own map of that stride where there is one (a 1x1
    projection: a feature pyramid's lateral link, which brings back the fine detail small objects need)
    and mixes with a 3x3 convolution, until the output `stride`. The last hidden layer (every input, not
    only the image) shifts each channel of every cell."""

    def __init__(self, levels: tuple[tuple[int, int], ...], hidden_size: int, classes: int, width: int,
                 stride: int = OUTPUT_STRIDE):
        super().__init__()
        map_channels, map_stride = levels[-1]
        self.reduce = nn.Conv2d(map_channels, width, 1)
        self.context = nn.Linear(hidden_size, width)
        steps = max(0, round(math.log2(max(map_stride, 1) / stride)))
        self.upsample = nn.ModuleList(convolution(width, width) for _ in range(steps))
        # the lateral link of step i reads the encoder's map of stride map_stride / 2 ** (i + 1), if it gives one
        strides = [level_stride for _, level_stride in levels]
        self.sources = {str(step): strides.index(map_stride // 2 ** (step + 1)) for step in range(steps)
                        if map_stride // 2 ** (step + 1) in strides[:-1]}
        self.lateral = nn.ModuleDict({step: nn.Conv2d(levels[source][0], width, 1)
                                      for step, source in self.sources.items()})
        self.heat = nn.Sequential(convolution(width, width), nn.Conv2d(width, classes, 1))
        self.boxes = nn.Sequential(convolution(width, width), nn.Conv2d(width, 4, 1))
        nn.init.constant_(self.heat[-1].bias, HEAT_BIAS)
        self.stride = map_stride / 2 ** steps  # input pixels per output cell

    def forward(self, hidden: torch.Tensor, maps) -> torch.Tensor:  # maps: base.FeatureMaps
        levels = maps.levels
        x = torch.relu(self.reduce(levels[-1]) + self.context(hidden)[:, :, None, None])  # (B, W, h, w)
        for step, convolve in enumerate(self.upsample):
            x = functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            if str(step) in self.sources:
                x = x + self.lateral[str(step)](levels[self.sources[str(step)]])
            x = convolve(x)  # (B, W, 2 h, 2 w) after each step
        output = torch.cat([self.heat(x), self.boxes(x)], dim=1)  # (B, K + 4, H / stride, W / stride)
        return output if maps.mirrored is None else unmirror(output, maps.mirrored)


def unmirror(output: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    """A head's output (B, K + 4, h, w) for images of which the rows `mirrored` (B,) were flipped left-right
    -> the output in the unflipped images' frame: every map mirrored back, and the x offset within a cell
    becomes 1 - offset (a centre at x cells in a map w cells wide is at w - x in the mirror image)."""
    classes = output.shape[1] - 4
    back = output.flip(-1)
    back = torch.cat([back[:, :classes + 2], 1 - back[:, classes + 2:classes + 3], back[:, classes + 3:]], dim=1)
    return torch.where(mirrored[:, None, None, None], back, output)


# --- training targets and loss --------------------------------------------------------------------

def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = MIN_OVERLAP) -> torch.Tensor:
    """CenterNet's radius (in cells) within which a corner shift still gives `min_overlap` IoU with a
    box of this height and width: the smallest root of its three cases (CornerNet's formula)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def encode(boxes: torch.Tensor, classes: int, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """A target of boxes (B, M, 5) [x0, y0, x1, y1 as fractions, class index; PADDING rows] -> the
    CenterNet targets on a (h, w) grid: 'heat' (B, K, h, w), one Gaussian peak of exactly 1 per object
    at its centre's cell; 'index' (B, M) that cell's flat position; 'size' (B, M, 2) width and height
    in cells; 'offset' (B, M, 2) the centre within its cell; 'mask' (B, M) the real boxes."""
    height, width = grid
    scale = boxes.new_tensor([width, height, width, height])
    corners = boxes[..., :4] * scale  # (B, M, 4) in cells
    mask = boxes[..., 4] != PADDING  # (B, M)
    centre = (corners[..., :2] + corners[..., 2:]) / 2  # (B, M, 2) x, y
    cell = torch.minimum(centre.floor(), centre.new_tensor([width - 1, height - 1])).clamp(min=0)  # (B, M, 2)
    size = corners[..., 2:] - corners[..., :2]  # (B, M, 2) width, height
    radius = gaussian_radius(size[..., 1].ceil(), size[..., 0].ceil()).floor().clamp(min=0)  # (B, M)
    sigma = (2 * radius + 1) / 6
    xs = torch.arange(width, dtype=boxes.dtype, device=boxes.device)
    ys = torch.arange(height, dtype=boxes.dtype, device=boxes.device)
    dx = (xs[None, None, :] - cell[..., 0:1]) ** 2  # (B, M, w)
    dy = (ys[None, None, :] - cell[..., 1:2]) ** 2  # (B, M, h)
    # CenterNet draws each Gaussian only within its radius (a square window)
    near = ((dx <= radius[..., None] ** 2)[:, :, None, :] & (dy <= radius[..., None] ** 2)[:, :, :, None])
    peaks = torch.exp(-(dy[:, :, :, None] + dx[:, :, None, :]) / (2 * sigma[..., None, None] ** 2)) * near
    peaks = peaks * mask[..., None, None]  # (B, M, h, w)
    labels = functional.one_hot(boxes[..., 4].long().clamp(min=0), classes).to(boxes.dtype)  # (B, M, K)
    heat = (peaks[:, :, None] * labels[..., None, None]).amax(dim=1) if boxes.shape[1] else \
        boxes.new_zeros(boxes.shape[0], classes, height, width)  # (B, K, h, w)
    index = (cell[..., 1] * width + cell[..., 0]).long()  # (B, M)
    return {"heat": heat, "index": index, "size": size, "offset": centre - cell, "mask": mask}


def focal_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4) of heat-map logits (B, K, h, w) against
    the Gaussian targets, summed and divided by the number of objects (at least 1)."""
    positive = heat.eq(1).to(logits.dtype)
    log_p, log_not_p = functional.logsigmoid(logits), functional.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    positives = -(log_p * (1 - p) ** 2 * positive).sum()
    negatives = -(log_not_p * p ** 2 * (1 - heat) ** 4 * (1 - positive)).sum()
    return (positives + negatives) / positive.sum().clamp(min=1)


def loss(output: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Focal loss on the heat maps plus L1 of sizes (weight SIZE_WEIGHT) and offsets at the objects'
    centres. output: (B, K + 4, h, w) from Head; boxes: the target (B, M, 5)."""
    classes = output.shape[1] - 4
    targets = encode(boxes.to(output.dtype), classes, tuple(output.shape[2:]))
    regression = output[:, classes:].flatten(2)  # (B, 4, h * w)
    index = targets["index"][:, None, :].expand(-1, 4, -1)  # (B, 4, M)
    at_centres = regression.gather(2, index).transpose(1, 2)  # (B, M, 4)
    mask = targets["mask"][..., None].to(output.dtype)  # (B, M, 1)
    objects = mask.sum().clamp(min=1)
    size = (functional.l1_loss(at_centres[..., :2], targets["size"], reduction="none") * mask).sum() / objects
    offset = (functional.l1_loss(at_centres[..., 2:], targets["offset"], reduction="none") * mask).sum() / objects
    return focal_loss(output[:, :classes], targets["heat"]) + SIZE_WEIGHT * size + offset


# --- decoding -------------------------------------------------------------------------------------

def detect(output: torch.Tensor, top_k: int) -> torch.Tensor:
    """Raw output (B, K + 4, h, w) -> the `top_k` best peaks per row (B, top_k, 6): [x0, y0, x1, y1 as
    fractions, score, class index], best first. A peak is a cell no neighbour (3x3) outscores: no
    non-maximum suppression is needed."""
    output = output.detach()
    classes = output.shape[1] - 4
    height, width = output.shape[2:]
    heat = torch.sigmoid(output[:, :classes].float())  # (B, K, h, w)
    peaks = heat * (functional.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, flat = peaks.flatten(1).topk(min(top_k, peaks[0].numel()), dim=1)  # (B, k)
    label, cell = flat // (height * width), flat % (height * width)
    regression = output[:, classes:].float().flatten(2).gather(2, cell[:, None, :].expand(-1, 4, -1))  # (B, 4, k)
    size, offset = regression[:, :2].clamp(min=0), regression[:, 2:]
    x = (cell % width).to(heat.dtype) + offset[:, 0]
    y = torch.div(cell, width, rounding_mode="floor").to(heat.dtype) + offset[:, 1]
    found = torch.stack([(x - size[:, 0] / 2) / width, (y - size[:, 1] / 2) / height,
                         (x + size[:, 0] / 2) / width, (y + size[:, 1] / 2) / height], dim=2).clamp(0, 1)
    found = torch.cat([found, scores[..., None], label[..., None].to(heat.dtype)], dim=2)  # (B, k, 6)
    if found.shape[1] < top_k:  # a tiny map has fewer cells than top_k: pad with score-0 rows
        found = functional.pad(found, (0, 0, 0, top_k - found.shape[1]))
    return found


# --- COCO mean average precision ------------------------------------------------------------------

COCO_SCALE = 1000.0  # fractions are scaled to a 1000x1000 "image" for COCOeval (its area ranges are in pixels)


def average_precision(truth: list[np.ndarray], found: list[np.ndarray], classes: int) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5 and AP@[.5:.95] per class (by index, classes with true boxes only)
    from pycocotools' COCOeval (up to 100 detections per image). truth: per image (M, 5) [x0, y0, x1, y1
    as fractions, class]; found: per image (k, 6) [box, score, class]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, detections = [], [], []
    for image, (boxes, predicted) in enumerate(zip(truth, found)):
        images.append({"id": image, "width": COCO_SCALE, "height": COCO_SCALE})
        for box in boxes:
            x0, y0, x1, y1 = (float(value) * COCO_SCALE for value in box[:4])
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": int(box[4]),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        for box in predicted:
            x0, y0, x1, y1 = (float(value) * COCO_SCALE for value in box[:4])
            detections.append({"image_id": image, "category_id": int(box[5]), "score": float(box[4]),
                               "bbox": [x0, y0, x1 - x0, y1 - y0]})
    present = sorted({annotation["category_id"] for annotation in annotations})
    if not present:  # no true object: every detection is a false positive, there is nothing to find
        return {"map": 0.0, "map_50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        ground = COCO()
        ground.dataset = {"images": images, "annotations": annotations,
                          "categories": [{"id": label} for label in range(classes)]}
        ground.createIndex()
        if not detections:
            return {"map": 0.0, "map_50": 0.0, **{f"ap_{label}": 0.0 for label in present}}
        evaluation = COCOeval(ground, ground.loadRes(detections), "bbox")
        evaluation.params.catIds = present
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"]  # (IoU thresholds, recalls, classes, areas, max detections)
    result = {"map": max(float(evaluation.stats[0]), 0.0), "map_50": max(float(evaluation.stats[1]), 0.0)}
    for position, label in enumerate(present):
        values = precision[:, :, position, 0, -1]
        result[f"ap_{label}"] = float(values[values > -1].mean()) if (values > -1).any() else 0.0
    return result

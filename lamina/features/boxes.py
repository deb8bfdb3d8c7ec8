"""The `boxes` data type (output only): the objects in an image input, each a box and a label, found
by a CenterNet head on the image encoder's feature map (boxes_head.py). A cell is a list of
[x_min, y_min, x_max, y_max, label] in pixels of that row's image as read from its file (a Python list or
a JSON string; [] when the image holds no object). Targets are kept as fractions of each image's width
and height, so they follow the image however the image input resizes it.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lamina.errors import ConfigError, DataError
from lamina.features import base, boxes_head, files, plots
from lamina.features.common import describe_cell, missing_mask

CAN_BE_OUTPUT = True
CAN_BE_INPUT = False
READ_AS = "string"  # a file's cell is JSON text
HOW_TO_WRITE = ("write each cell as a list of boxes [x_min, y_min, x_max, y_max, label] in pixels of the row's "
                "image (a JSON string like '[[10, 20, 50, 60, \"car\"]]' or a Python list; [] for no object)")
EDGE = 1.0  # pixels a box may reach past the image's border (rounding in annotation tools); it is clipped
ROTATED = {5, 6, 7, 8}  # EXIF orientations that turn the picture a quarter: width and height swap


class Options(BaseModel):
    """Options of a boxes output."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field("image", description="the image input the boxes are drawn on (its column)")
    root: str | None = Field(None, description="folder that relative image paths are read from, as the image "
                                               "input's root (the boxes need each image's size as read)")
    width: int = Field(64, ge=4, le=1024, description="channels of the head's layers")
    stride: Literal[1, 2, 4, 8] = Field(4, description="input pixels per cell of the heat map (CenterNet: 4); 2 "
                                                     "finds objects under 8 pixels wide better, at 4 times the "
                                                     "head's cost")
    threshold: float = Field(0.3, ge=0.0, le=1.0, description="predictions keep boxes scoring at least this")
    top_k: int = Field(100, ge=1, le=1000, description="at most this many boxes per image (the best scores)")


# --- reading cells --------------------------------------------------------------------------------

def parse_cell(value: Any) -> list[list]:
    """One present cell -> its boxes as [x0, y0, x1, y1, label] lists; ValueError saying what is wrong."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"is not JSON ({error.msg} at character {error.pos})") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError("is not a list of boxes")
    boxes = []
    for position, box in enumerate(value):
        box = box.tolist() if isinstance(box, np.ndarray) else box
        if not isinstance(box, (list, tuple)) or len(box) != 5:
            count = f"{len(box)} values" if isinstance(box, (list, tuple)) else repr(box)[:40]
            raise ValueError(f"box {position} is {count}, not 5 values [x_min, y_min, x_max, y_max, label]")
        corners = box[:4]
        if not all(isinstance(item, (int, float, np.number)) and not isinstance(item, (bool, np.bool_))
                   and math.isfinite(item) for item in corners):
            raise ValueError(f"box {position} {list(box)} has a corner that is not a finite number")
        label = box[4]
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (str, int, np.integer)) or label == "":
            raise ValueError(f"box {position} has label {label!r}; a label is a name or a whole number")
        x0, y0, x1, y1 = (float(item) for item in corners)
        if x1 < x0 or y1 < y0:
            raise ValueError(f"box {position} {list(box)} has x_max < x_min or y_max < y_min; corners are "
                             f"[x_min, y_min, x_max, y_max] (COCO's [x, y, width, height] must be converted)")
        boxes.append([x0, y0, x1, y1, label.item() if isinstance(label, np.integer) else label])
    return boxes


def parse(column: pd.Series, name: str) -> list[list[list] | None]:
    """Every cell's boxes (None where the cell is missing); DataError naming the row and column."""
    gone, cells, parsed = missing_mask(column), column.to_numpy(dtype=object), []
    for position, value in enumerate(cells):
        if gone[position]:
            parsed.append(None)
            continue
        try:
            parsed.append(parse_cell(value))
        except ValueError as error:
            raise DataError(f"column '{name}' row {column.index[position]}: {describe_cell(value)} {error}; "
                            f"{HOW_TO_WRITE}") from None
    return parsed


def image_size(value: Any, root: str | None) -> tuple[int, int]:
    """(width, height) of an image cell as the image input reads it (a file turned upright by its EXIF
    orientation, an array, a PIL image), from the file's header only; ValueError when unknown."""
    if isinstance(value, Image.Image):
        return value.size
    if isinstance(value, (str, os.PathLike)):
        path = files.resolve(value, root)
        try:
            with Image.open(path) as image:
                turned = image.getexif().get(0x0112) in ROTATED  # 0x0112: the EXIF orientation tag
                return (image.height, image.width) if turned else image.size
        except FileNotFoundError:
            raise ValueError(f"no such image file '{path}' (set root: to the images' folder)") from None
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"cannot read the size of image '{path}' ({files.first_line(error)})") from None
    array = np.asarray(value)
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise ValueError(f"the image cell is {describe_cell(value)}, not an image")
    return int(array.shape[1]), int(array.shape[0])


def sizes(frame: pd.DataFrame, options: Options, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) width and height of the image of each row (every row, or those where `rows` is True)."""
    column = frame[options.image]
    result = np.ones((len(column), 2))
    for position in np.flatnonzero(np.ones(len(column), bool) if rows is None else rows):
        value = column.iloc[position]
        try:
            result[position] = image_size(value, options.root)
        except ValueError as error:
            raise DataError(f"column '{options.image}' row {column.index[position]}: {error}; the boxes of "
                            f"'{options.name}' are measured against it") from None
    return result


class Found(list):
    """One row's predicted boxes: a list of {'box', 'label', 'score'} that prints as JSON, so a CSV
    written by `lamina predict` holds JSON cells (as the JSON-lines and HTTP answers do)."""

    def __repr__(self) -> str:
        return json.dumps(list(self))

    __str__ = __repr__


def as_png(image: np.ndarray) -> str:
    """The network's (C, H, W) pixels (stretched to 0..255) as a base64 PNG: small in evaluation.json."""
    pixels = np.asarray(image, dtype=np.float64).transpose(1, 2, 0)
    pixels = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1e-9) * 255
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).astype(np.uint8)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def from_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


class Feature(base.OutputFeature):
    MAIN_METRIC = "map"

    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    @property
    def labels(self) -> list:
        return self.stats["labels"]

    def _index(self) -> dict[str, int]:
        return {str(label): position for position, label in enumerate(self.labels)}

    def reads(self) -> list[str]:
        return [self.config.image]

    def fit(self, frame: pd.DataFrame) -> None:
        parsed = [cell for cell in parse(frame[self.config.name], self.config.name) if cell is not None]
        found = {str(box[4]): box[4] for cell in parsed for box in cell}
        if not found:
            raise DataError(f"column '{self.config.name}' holds no box in the training split; label the objects "
                            f"in the images ({HOW_TO_WRITE})")
        self.stats = {"labels": [found[key] for key in sorted(found)], "images": len(parsed),
                      "boxes": sum(len(cell) for cell in parsed), "most": max(len(cell) for cell in parsed)}

    def target(self, frame: pd.DataFrame) -> torch.Tensor:
        """(N, M, 5): [x0, y0, x1, y1 as fractions of the image, class index]; padding rows PADDING."""
        name, index = self.config.name, self._index()
        parsed = parse(frame[name], name)
        measured = sizes(frame, self.config, np.array([cell is not None and len(cell) > 0 for cell in parsed]))
        longest = max([len(cell) for cell in parsed if cell is not None] + [1])
        target = np.full((len(parsed), longest, 5), float(boxes_head.PADDING), dtype=np.float32)
        for position, cell in enumerate(parsed):
            (width, height), row = measured[position], frame.index[position]
            for slot, (x0, y0, x1, y1, label) in enumerate(cell or []):
                if x0 < -EDGE or y0 < -EDGE or x1 > width + EDGE or y1 > height + EDGE:
                    raise DataError(f"column '{name}' row {row}: box {slot} {[x0, y0, x1, y1]} reaches outside "
                                    f"its {width:g}x{height:g} image; boxes are in pixels of the image as read "
                                    f"from its file (x to the right, y down): fix or clip the box")
                if str(label) not in index:
                    raise DataError(f"column '{name}' row {row}: label {label!r} was not in the training rows "
                                    f"(labels: {self.labels}); add such boxes to the training data or drop it")
                target[position, slot] = [min(max(x0, 0), width) / width, min(max(y0, 0), height) / height,
                                          min(max(x1, 0), width) / width, min(max(y1, 0), height) / height,
                                          index[str(label)]]
        return torch.from_numpy(target)

    def encoder(self) -> nn.Module:
        raise base.Unsupported(f"feature '{self.config.name}' of type 'boxes' is an output only: boxes are what a "
                               f"model finds in an image; use it under outputs:")

    # ---- the network: a CenterNet head on the image's feature map ----
    def reads_maps(self) -> bool:
        return True

    def head(self, trunk: base.Trunk) -> nn.Module:
        spatial = trunk.maps.get(self.config.image)
        if spatial is None:
            raise ConfigError(f"output '{self.config.name}' (boxes) finds objects in the image input "
                              f"'{self.config.image}', which this model does not have as an image input; add it "
                              f"under inputs: or name the image input with image: <its name>")
        height, width = spatial.size
        if height % spatial.stride or width % spatial.stride:
            raise ConfigError(f"output '{self.config.name}' (boxes): the image input '{self.config.image}' has size "
                              f"[{height}, {width}], not a multiple of its feature map's stride {spatial.stride}, "
                              f"so its cells would not line up with the pixels; choose a size that is (e.g. "
                              f"[{height // spatial.stride * spatial.stride or spatial.stride}, "
                              f"{width // spatial.stride * spatial.stride or spatial.stride}])")
        levels = spatial.levels or ((spatial.channels, spatial.stride),)
        return MapHead(self.config.image, boxes_head.Head(levels, trunk.size, len(self.labels), self.config.width,
                                                          self.config.stride))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return boxes_head.loss(output, target)

    def summary(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The top_k peaks (B, top_k, 6), not the whole heat maps."""
        return boxes_head.detect(output, self.config.top_k)

    def _found(self, output: torch.Tensor) -> torch.Tensor:
        """Peaks (B, top_k, 6) from the raw output (B, K + 4, h, w) or from its summary."""
        return output if output.ndim == 3 else boxes_head.detect(output, self.config.top_k)

    def metrics(self, target: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        """COCO mAP@[.5:.95] ('map'), mAP@.5 ('map_50') and AP@[.5:.95] per class ('ap_<label>')."""
        found = self._found(output).numpy()
        truth = [boxes[boxes[:, 4] != boxes_head.PADDING] for boxes in target.numpy()]
        kept = [rows[rows[:, 4] > 0] for rows in found]  # score 0: padding of a tiny heat map
        measured = boxes_head.average_precision(truth, kept, len(self.labels))
        return {(f"ap_{self.labels[int(key[3:])]}" if key.startswith("ap_") else key): value
                for key, value in measured.items()}

    def _rows(self, output: torch.Tensor, scale: np.ndarray) -> list[list[dict]]:
        """Each row's boxes scoring at least `threshold`, in the units `scale` (N, 2) gives fractions."""
        found, result = self._found(output.detach().cpu().float()).numpy(), []
        digits = 2 if (scale > 1).any() else 4  # pixels to a hundredth; fractions to 1/10,000 of the image
        for boxes, (width, height) in zip(found, scale):
            kept = boxes[boxes[:, 4] >= max(self.config.threshold, 1e-9)]
            corners = kept[:, :4] * [width, height, width, height]  # (k, 4)
            result.append(Found({"box": [round(float(value), digits) for value in box],
                                 "label": self.labels[int(label)], "score": round(float(score), 4)}
                                for box, score, label in zip(corners, kept[:, 4], kept[:, 5])))
        return result

    def decode(self, output: torch.Tensor) -> dict[str, Any]:
        """{name: per row a list of {'box': [x0, y0, x1, y1] as fractions of the image, 'label', 'score'}}."""
        return {self.config.name: self._rows(output, np.ones((len(output), 2)))}

    def decode_rows(self, output: torch.Tensor, rows: pd.DataFrame) -> dict[str, Any]:
        """As decode, with each box in pixels of its row's image as read from the file."""
        if self.config.image not in rows:
            return self.decode(output)
        present = ~missing_mask(rows[self.config.image])
        return {self.config.name: self._rows(output, sizes(rows, self.config, present))}

    def decode_reads_rows(self) -> bool:
        return True

    # ---- what it cannot do ----
    def classic_task(self) -> Any:
        raise base.Unsupported(f"output '{self.config.name}' of type '{self.type_name}' finds objects in images, "
                               f"and classic ML offers no object detector to compare it with")

    def explained_score(self, label: int | None) -> str:
        raise base.Unsupported(f"output '{self.config.name}' of type '{self.type_name}' cannot be explained by "
                               f"attributions yet (it gives many boxes per image, not one score); choose "
                               f"another output with output=")

    def export_output(self) -> nn.Module:
        raise self.export_refusal("output", "decoding heat-map peaks into a varying number of boxes")

    def export_output_entry(self) -> dict[str, Any]:
        raise self.export_refusal("output", "decoding heat-map peaks into a varying number of boxes")

    def prediction_summary(self) -> dict:
        labels = self.labels
        listed = ", ".join(str(label) for label in labels[:10]) + (", ..." if len(labels) > 10 else "")
        return {"predicts": f"finds the objects of {len(labels)} classes in image '{self.config.image}' and "
                            f"gives each a box, a class and a score ('{self.name}'): {listed}"}

    def served_metadata(self) -> dict[str, Any]:
        return {"values": self.labels, "display": "boxes", "image": self.config.image}

    # ---- report: predicted (and true) boxes drawn on a few test images ----
    def evaluation_data(self, rows: pd.DataFrame, predicted: pd.DataFrame, inputs: list) -> dict | None:
        image = next((feature for feature in inputs if feature.config.name == self.config.image), None)
        if image is None or rows.empty:
            return None
        shown = rows.iloc[:4]
        pixels = image.transform(shown[self.config.image])[0:len(shown)]  # (n, C, H, W) as the network saw them
        truth = parse(shown[self.config.name], self.config.name)
        measured = sizes(shown, self.config, np.array([cell is not None for cell in truth]))
        return {"type": self.config.type, "images": [as_png(picture) for picture in pixels.numpy()],
                "sizes": measured.tolist(), "truth": [cell or [] for cell in truth],
                "predicted": [list(cell) for cell in predicted[self.config.name].iloc[:4]]}

    def report_plots(self, data: dict) -> list[str]:
        """Up to four test images: true boxes dashed white, predicted ones in colour with label and score."""
        figure, first = plots.figure(3.0 * len(data["images"]), 3.2)
        figure.delaxes(first)
        axes = np.atleast_1d(figure.subplots(1, len(data["images"])))
        for place, picture, (width, height), truth, found in zip(axes, data["images"], data["sizes"],
                                                                 data["truth"], data["predicted"]):
            picture = from_png(picture)
            across, down = picture.shape[1] / width, picture.shape[0] / height
            place.imshow(picture)
            place.set_axis_off()
            for x0, y0, x1, y1, label in truth:
                place.add_patch(_rectangle(x0 * across, y0 * down, x1 * across, y1 * down, "white", "--"))
            for item in found:
                x0, y0, x1, y1 = item["box"]
                place.add_patch(_rectangle(x0 * across, y0 * down, x1 * across, y1 * down, "orange", "-"))
                place.text(x0 * across, y0 * down, f"{item['label']} {item['score']:.2f}", color="orange",
                           fontsize=6, va="bottom")
        figure.suptitle("test images: predicted boxes (orange), true boxes (white, dashed)", fontsize=8)
        return [plots.png(figure)]


def _rectangle(x0: float, y0: float, x1: float, y1: float, colour: str, style: str):
    from matplotlib.patches import Rectangle

    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style,
                     linewidth=1.2)


class MapHead(nn.Module):
    """Reads the named image input's feature map from the HeadContext: head(hidden, context)."""

    def __init__(self, image: str, head: nn.Module):
        super().__init__()
        self.image, self.head = image, head

    def forward(self, hidden: torch.Tensor, context: base.HeadContext) -> torch.Tensor:
        return self.head(hidden, context.maps[self.image])  # (B, K + 4, h, w)

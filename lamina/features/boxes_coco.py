"""Reading object-detection data in COCO's form (an instances.json with "images", "annotations" and
"categories", beside a folder of images) into lamina's frame: one row per image, an `image` column of
file paths and a `boxes` column of [x_min, y_min, x_max, y_max, label] lists (the boxes type's cells)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from lamina.errors import DataError

KEYS = {"images", "annotations"}  # what makes a JSON file COCO's detection form ("categories" is optional)


def is_coco(path: Path) -> bool:
    """Whether a .json file holds one COCO object (rather than JSON lines or an array), read cheaply: a
    JSON-lines file is told apart by its first line, which is then a whole record of other keys."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with open(path, "rb") as handle:
        first = handle.readline()  # a JSON-lines record; '{' of a pretty-printed file; all of a minified one
    if not first.lstrip().startswith(b"{"):
        return False
    try:
        record = json.loads(first)
    except ValueError:  # one object over many lines: not JSON lines, so read it whole
        try:
            with open(path, "rb") as handle:
                record = json.load(handle)
        except ValueError:
            return False  # the table reader names the problem
    return isinstance(record, dict) and KEYS <= record.keys()


def image_folder(path: Path) -> Path:
    """Where the images of a COCO file are: the `images/` folder beside it when there is one, else its own
    folder."""
    beside = path.parent / "images"
    return beside if beside.is_dir() else path.parent


def read_coco(path: str | Path, images: str | Path | None = None, image_column: str = "image",
              boxes_column: str = "boxes") -> pd.DataFrame:
    """The COCO file as one row per image: `image_column` the image's path (under `images`, default
    image_folder(path); a path that is not found there is left as the file_name, relative, for the
    image input's `root:`), `boxes_column` its boxes as [x, y, x + width, y + height, category name]
    (crowd regions, iscrowd: 1, left out). Images with no annotation get []."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = json.load(handle)
    except ValueError as error:
        raise DataError(f"cannot read '{path}' as COCO JSON: {error}") from None
    missing = KEYS - set(data) if isinstance(data, dict) else KEYS
    if missing:
        raise DataError(f"'{path}' is not a COCO detection file: it lacks {sorted(missing)}; it needs 'images', "
                        f"'annotations' (and 'categories')")
    names = {category.get("id"): str(category.get("name", category.get("id")))
             for category in data.get("categories") or [] if isinstance(category, dict)}
    folder = Path(images) if images is not None else image_folder(path)
    rows: dict[Any, dict] = {}
    for position, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DataError(f"'{path}' images[{position}]: {str(image)[:80]} needs an 'id' and a 'file_name'")
        where = folder / image["file_name"]
        rows[image["id"]] = {image_column: str(where.resolve()) if where.is_file() else image["file_name"],
                             boxes_column: []}
    for position, annotation in enumerate(data["annotations"]):
        annotation = annotation if isinstance(annotation, dict) else {}
        box = annotation.get("bbox")
        if annotation.get("image_id") not in rows:
            raise DataError(f"'{path}' annotations[{position}]: image_id {annotation.get('image_id')!r} is not "
                            f"among its images; fix the file")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(value, (int, float)) for value in box)):
            raise DataError(f"'{path}' annotations[{position}]: bbox {box!r} is not [x, y, width, height]")
        if annotation.get("iscrowd"):
            continue
        x, y, width, height = (float(value) for value in box)
        category = annotation.get("category_id")
        rows[annotation["image_id"]][boxes_column].append([x, y, x + width, y + height,
                                                           names.get(category, str(category))])
    return pd.DataFrame(list(rows.values()))

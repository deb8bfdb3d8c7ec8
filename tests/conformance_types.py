"""Samples, options and tiny trained models of every registered data type, shared by the conformance
suite (tests/test_conformance.py and tests/test_conformance_surfaces.py)."""
import json

import numpy as np
import pandas as pd
import torch

import lamina
from lamina import features
from lamina.config import INPUT_MODELS, OUTPUT_MODELS
from lamina.features.base import FeatureMaps, HeadContext, SpatialMap, Trunk

ROWS = 64


def sample(type_name: str, rows: int = ROWS, seed: int = 0) -> pd.Series:
    """A column of each data type, with a missing value in it."""
    rng = np.random.default_rng(seed)
    if type_name == "number":
        values = rng.normal(10, 3, rows).astype(object)
    elif type_name == "binary":
        values = rng.choice(["yes", "no"], rows).astype(object)
    elif type_name == "category":
        values = rng.choice(["red", "green", "blue", "grey"], rows).astype(object)
    elif type_name == "set":
        values = np.array(["|".join(sorted(set(rng.choice(["a", "b", "c", "d"], rng.integers(0, 3)))))
                           for _ in range(rows)], dtype=object)
    elif type_name == "image":  # in-memory arrays of varied sizes, grey and colour
        values = np.empty(rows, dtype=object)
        values[:] = [rng.integers(0, 256, (int(rng.integers(6, 12)), 8) + ((3,) if row % 2 else ())).astype(np.uint8)
                     for row in range(rows)]
    elif type_name == "text":
        words = ["good", "bad", "fine", "dress", "fits", "small", "large", "love", "it", "not"]
        values = np.array([" ".join(rng.choice(words, int(rng.integers(1, 8)))) for _ in range(rows)], dtype=object)
    elif type_name == "audio":  # in-memory mono and stereo arrays of varied lengths at 8 kHz
        values = np.empty(rows, dtype=object)
        values[:] = [rng.normal(0, 0.3, (int(rng.integers(1000, 3000)),) + ((2,) if row % 2 else ())).astype(np.float32)
                     for row in range(rows)]
    elif type_name == "timeseries":  # nested lists and delimited strings of 3 channels, varied lengths
        values = np.empty(rows, dtype=object)
        values[:] = [rng.normal(size=(int(rng.integers(3, 9)), 3)).round(3).tolist() if row % 2 else
                     ";".join(",".join(str(value) for value in step) for step in rng.normal(size=(4, 3)).round(3))
                     for row in range(rows)]
    elif type_name == "id":  # many ids, most seen once or twice
        values = np.array([f"user{int(number)}" for number in rng.zipf(1.5, rows) % 500], dtype=object)
    elif type_name == "ranking":  # the items users chose (the user column is added by `columns`)
        values = rng.choice([f"item{number}" for number in range(12)], rows).astype(object)
    elif type_name == "anomaly":  # labels: mostly normal
        values = rng.choice(["normal", "attack"], rows, p=[0.8, 0.2]).astype(object)
    elif type_name == "vector":  # 3 components per cell: lists, and every third cell a ','-separated string
        values = np.empty(rows, dtype=object)
        values[:] = [rng.normal(size=3).round(3).tolist() if row % 3 else
                     ",".join(map(str, rng.normal(size=3).round(3))) for row in range(rows)]
    elif type_name == "boxes":  # 0-2 boxes in a 16x16 image (see `pictures`): lists, every third a JSON string
        values = np.empty(rows, dtype=object)
        for row in range(rows):
            cell = []
            for _ in range(int(rng.integers(0, 3))):
                x, y, side = int(rng.integers(0, 9)), int(rng.integers(0, 9)), int(rng.integers(3, 8))
                cell.append([x, y, x + side, y + side, str(rng.choice(["car", "duck"]))])
            values[row] = json.dumps(cell) if row % 3 == 0 else cell
    elif type_name == "date":  # ISO times, a zone, day/month/year and epoch seconds (as numbers and as text)
        values = np.empty(rows, dtype=object)
        stamps = 1.7e9 + rng.integers(0, 3 * 10 ** 7, rows)
        values[:] = [str(pd.Timestamp(int(stamp), unit="s")) if row % 4 == 0 else
                     pd.Timestamp(int(stamp), unit="s").strftime("%Y-%m-%dT%H:%M:%S+02:00") if row % 4 == 1 else
                     pd.Timestamp(int(stamp), unit="s").strftime("%d/%m/%Y %H:%M") if row % 4 == 2 else int(stamp)
                     for row, stamp in enumerate(stamps)]
    else:
        raise AssertionError(f"add a sample column for the new data type '{type_name}' to the conformance suite")
    values[3] = None
    return pd.Series(values, name="column")


def options(type_name: str) -> dict:
    return {"set": {"delimiter": "|"}, "image": {"size": 8, "width": 4, "stages": 2, "embedding_size": 8},
            "text": {"max_length": 8, "width": 16, "layers": 1, "heads": 2, "min_count": 1},
            "audio": {"sample_rate": 8000, "duration": 0.25, "mels": 16, "width": 4, "stages": 2, "embedding_size": 8},
            "timeseries": {"width": 8, "layers": 1, "embedding_size": 8},
            "ranking": {"user": "user", "negatives": 4, "k": 3,
                        "item_inputs": [{"name": "kind", "type": "category"}]},
            "boxes": {"width": 8, "threshold": 0.0}, "date": {"dayfirst": True, "embedding_size": 8}}.get(type_name, {})


IMAGE = {"name": "image", "type": "image", "size": 16, "width": 4, "stages": 2, "embedding_size": 8}


def pictures(column: pd.Series) -> pd.Series:
    """16x16 noise images with each row's boxes (a boxes column) painted in, as the images they are drawn on."""
    rng = np.random.default_rng(5)
    images = np.empty(len(column), dtype=object)
    for row, cell in enumerate(column):
        image = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
        for x0, y0, x1, y1, label in (json.loads(cell) if isinstance(cell, str) else cell or []):
            image[y0:y1, x0:x1] = (220, 40, 40) if label == "car" else (40, 40, 220)
        images[row] = image
    return pd.Series(images, index=column.index, name="image")


def columns(feature, column: pd.Series):
    """What fit/target read: the column, or a frame with the other columns a feature `reads`
    (a ranking: the user, and an item side feature that follows the item)."""
    if not feature.reads():
        return column
    users = [f"u{position % 7}" for position in range(len(column))]
    frame = pd.DataFrame({"column": column, "user": users, "kind": column.astype(str).str[-1]}, index=column.index)
    if "image" in feature.reads():  # a boxes output: the images its boxes are drawn on
        frame["image"] = pictures(column)
    return frame


def make(type_name: str, role: str):
    models = INPUT_MODELS if role == "input" else OUTPUT_MODELS
    return features.build(models[type_name](name="column", type=type_name, **options(type_name)))


NUMBERS = pd.Series(np.random.default_rng(3).normal(size=ROWS), name="x")  # what a head that reads inputs rebuilds


def make_head(feature, width: int):
    """Every head is built from a Trunk; its inputs are one number input `x` (what a head that reads
    the inputs, an anomaly score, rebuilds)."""
    number = features.build(INPUT_MODELS["number"](name="x", type="number"))
    number.fit(NUMBERS)
    maps = {"image": SpatialMap(4, 4, (16, 16))} if feature.reads_maps() else {}  # a 4x4 feature map
    return feature.head(Trunk(size=width, inputs=[number], maps=maps))


def run_head(feature, head, hidden, target=None):
    """Every head is called the same way: head(hidden, HeadContext)."""
    inputs = {"x": torch.tensor(NUMBERS.to_numpy()[:len(hidden)], dtype=torch.float32)}
    maps = {"image": FeatureMaps([torch.randn(len(hidden), 4, 4, 4)])} if feature.reads_maps() else {}
    return head(hidden, HeadContext(inputs=inputs, target=target, maps=maps))



def table(type_name: str, role: str, rows: int = 120) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "column": sample(type_name, rows, seed=2)})
    if role == "input":
        frame["y"] = rng.normal(size=rows)
        config = {"inputs": [{"name": "x", "type": "number"},
                             {"name": "column", "type": type_name, **options(type_name)}],
                  "outputs": [{"name": "y", "type": "number"}]}
    else:
        config = {"inputs": [{"name": "x", "type": "number"}],
                  "outputs": [{"name": "column", "type": type_name, **options(type_name)}]}
        if type_name == "ranking":
            extra = columns(make(type_name, "output"), frame["column"])
            frame[["user", "kind"]] = extra[["user", "kind"]]
            config["inputs"].append({"name": "user", "type": "id", "min_count": 1})
        if type_name == "boxes":  # boxes are found in an image input
            frame["image"] = pictures(frame["column"])
            config["inputs"].append(IMAGE)
    config.update(hidden={"layers": 1, "size": 8},
                  training={"epochs": 2, "batch_size": 32, "learning_rate": 0.01})
    return frame, config



TRAINED: dict = {}


def trained(type_name: str, role: str):
    """One tiny model per type and role (see _table), trained once for the tests of this section."""
    if (type_name, role) not in TRAINED:
        frame, config = table(type_name, role)
        TRAINED[type_name, role] = lamina.Model(config).fit(frame, quiet=True), frame
    return TRAINED[type_name, role]


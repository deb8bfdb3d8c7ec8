"""The request schema of a served model, derived from its input features (one pydantic model per
saved model), and the turning of validated rows into the DataFrame that Model.predict takes.

Image cells arrive as base64 strings (JSON) or uploaded bytes (multipart) and are decoded in
memory: nothing a client sends is ever written to disk, and an image string is never read as a
file path (a client must not make the server open its own files).
"""
from __future__ import annotations

import base64
import binascii
import io
from functools import partial
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, create_model

from lamina.features.common import MISSING, UNKNOWN

IMAGE_FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"]  # never EPS/PDF: those run external programs
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs before decoding a single pixel


class RequestProblem(ValueError):
    """A request the server refuses; `status` is the HTTP status and the message names the field."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# --- turning one JSON or form value into what the feature reads -----------------------------------

def _as_text(value: Any) -> Any:
    """Labels sent as JSON numbers or booleans become the strings lamina learned them as ('3', 'True')."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _binary(labels: list[str], value: Any) -> Any:
    value = _as_text(value)
    if isinstance(value, str) and value.strip() not in labels:
        raise ValueError(f"{value!r} is not one of the two values seen in training ({labels[0]!r}, {labels[1]!r})")
    return value


def _labels(delimiter: str, value: Any) -> Any:
    if isinstance(value, str):
        return [label.strip() for label in value.split(delimiter) if label.strip()] or None
    return value


def _empty_is_missing(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def read_image(value: Any) -> Any:
    """A base64 string (optionally a data: URL) or uploaded bytes -> a decoded PIL image (in memory)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if value is None or value == b"" or (isinstance(value, str) and not value.strip()):
        return None  # also a form's file input left empty
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not a base64 string; send the image file's bytes base64-encoded "
                             "(or upload the file as multipart/form-data)") from None
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"expected a base64 string or an uploaded file, got {type(value).__name__}")
    try:
        image = Image.open(io.BytesIO(value), formats=IMAGE_FORMATS)
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"the image is {image.width}x{image.height} pixels, over the limit of "
                             f"{MAX_IMAGE_PIXELS:,}; send a smaller image")
        image.load()  # decodes every pixel now: a truncated file fails here, with its field named
        return ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"cannot read the image ({reason}); send a {', '.join(IMAGE_FORMATS)} file") from None


def _base64_bytes(value: Any, what: str) -> bytes | None:
    if value is None or value == b"" or (isinstance(value, str) and not value.strip()):
        return None  # also a form's file input left empty
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"not a base64 string; send the {what} file's bytes base64-encoded "
                             f"(or upload the file as multipart/form-data)") from None
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"expected a base64 string or an uploaded file, got {type(value).__name__}")
    return bytes(value)


def read_sound(rate: int, value: Any) -> Any:
    """A base64 string or uploaded bytes of a WAV / FLAC / OGG file -> (samples, channels) float32
    at `rate` (resampled in memory: the audio feature takes arrays at that rate)."""
    import soundfile
    import torch

    from lamina.features.audio_encoders import resample

    data = _base64_bytes(value, "sound")
    if data is None:
        return None
    try:
        sound, original = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"cannot read the sound ({reason}); send a WAV, FLAC or OGG file") from None
    if sound.size == 0:
        raise ValueError("the sound file holds no samples")
    channels = [resample(torch.from_numpy(sound[:, channel].copy()), original, rate).numpy()
                for channel in range(sound.shape[1])]
    return np.stack(channels, axis=1)  # (samples, channels)


def _sequence(value: Any) -> Any:
    if value is None or isinstance(value, (str, list)):
        return value
    raise ValueError("expected a list of time steps (each a list of channel values) or a string like '1,2;3,4'")


# --- the schema ------------------------------------------------------------------------------------

def _field(feature) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one input feature in the request schema."""
    options, stats, kind = feature.config, feature.stats, feature.config.type
    nullable = getattr(options, "missing", None) != "error"
    accepted, before, schema = Any, None, None  # schema: what the OpenAPI document shows as accepted
    if kind == "number":
        accepted, before = float, _empty_is_missing
        about = f"a number; training mean {stats['mean']:.4g}, range {stats['min']:.4g} to {stats['max']:.4g}"
    elif kind == "binary":
        accepted, before, schema = str, partial(_binary, stats["labels"]), str | bool | int
        about = f"one of {stats['labels'][0]!r} or {stats['labels'][1]!r}"
    elif kind == "category":
        accepted, before, schema = str, _as_text, str | int | float | bool
        shown = vocabulary(feature)
        about = f"one of the {len(shown)} values seen in training (others count as unknown): " + \
            ", ".join(shown[:20]) + (", ..." if len(shown) > 20 else "")
    elif kind == "set":
        accepted, before, schema = list[str], partial(_labels, options.delimiter), list[str] | str
        about = f"labels, as a list or one {options.delimiter!r}-separated string; known: " + \
            ", ".join(stats["labels"][:20])
    elif kind == "text":
        accepted, about = str, "text"
    elif kind == "image":
        before = read_image
        about = "an image file (PNG, JPEG, ...), base64-encoded; or upload it with multipart/form-data"
    elif kind == "audio":
        before = partial(read_sound, options.array_rate or options.sample_rate)
        about = "a sound file (WAV, FLAC, OGG), base64-encoded; or upload it with multipart/form-data"
    elif kind == "timeseries":
        accepted, before, schema = Any, _sequence, list[list[float]] | str
        about = "time steps, each a list of channel values (or a string: steps split by ';', channels by ',')"
    elif kind == "id":
        accepted, before, schema = str, _as_text, str | int
        about = f"an id; {len(stats['ids'])} ids have their own vector, others (new ones too) share hash buckets"
    else:
        raise RequestProblem(f"input feature '{options.name}' has type '{kind}', which serving does not know yet",
                             status=500)
    annotation = accepted | None if nullable and accepted is not Any else accepted
    if before is not None:
        schema = schema or accepted
        shown = schema | None if nullable and schema is not Any else schema
        annotation = Annotated[annotation, BeforeValidator(before, json_schema_input_type=shown)]
    if kind in ("image", "audio"):
        annotation = Annotated[annotation, WithJsonSchema(
            {"anyOf": [{"type": "string", "contentEncoding": "base64"}] + ([{"type": "null"}] if nullable else [])})]
    missing = " (null: missing)" if nullable else " (required: the model was trained with missing: error)"
    return annotation, Field(..., alias=options.name, description=about + missing)


def vocabulary(feature) -> list[str]:
    """The values of a category seen in training, most frequent first (no special tokens)."""
    return [value for value in feature.stats["vocabulary"] if value not in (UNKNOWN, MISSING)]


def row_model(model) -> type[BaseModel]:
    """The pydantic model of one row: one field per input feature, named by its column. Keys that
    name no input (for example the output column of a labelled row) are ignored."""
    fields = {f"field_{position}": _field(feature) for position, feature in enumerate(model.inputs_)}
    return create_model("Row", __config__=ConfigDict(extra="ignore", populate_by_name=False), **fields)


def request_model(row: type[BaseModel], example: dict) -> type[BaseModel]:
    return create_model(
        "PredictRequest", __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"rows": [example]}]}),
        rows=(list[row], Field(..., min_length=1, description="the rows to predict, one object per row")))


def example_row(model) -> dict:
    """A plausible JSON row (training means and most frequent values): the OpenAPI example, the
    web page's defaults and the warm-up prediction."""
    row: dict[str, Any] = {}
    for feature in model.inputs_:
        kind, stats, name = feature.config.type, feature.stats, feature.config.name
        if kind == "number":
            row[name] = round(stats["mean"], 4)
        elif kind == "binary":
            row[name] = stats["labels"][int(np.argmax(stats["counts"]))]
        elif kind == "category":
            row[name] = (vocabulary(feature) or [None])[0]
        elif kind == "set":
            row[name] = stats["labels"][:1]
        elif kind == "text":
            row[name] = "an example"
        elif kind == "image":
            row[name] = _plain_image(feature)
        elif kind == "audio":
            row[name] = _silence(feature)
        elif kind == "timeseries":
            row[name] = [[0.0] * int(len(feature.stats.get("mean", [0.0])))] * 4
        elif kind == "id":
            row[name] = (feature.stats["ids"] or ["new"])[0]
    return row


def _silence(feature) -> str:
    """A short silent WAV, base64-encoded."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(1600, dtype=np.float32), 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def _plain_image(feature) -> str:
    """A small PNG of the training mean colour, base64-encoded."""
    from PIL import Image

    mean = tuple(int(round(value)) for value in feature.stats.get("mean", [128] * feature.config.channels))
    mode = "L" if len(mean) == 1 else "RGB"
    buffer = io.BytesIO()
    Image.new(mode, (8, 8), mean[0] if mode == "L" else mean).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def where(location: tuple) -> str:
    """('rows', 0, 'age') -> 'rows[0].age'."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def explain(error: ValidationError, names: list[str]) -> str:
    """One message naming the bad fields (missing ones grouped per row) and how to fix the request."""
    missing: dict[str, list[str]] = {}
    messages = []
    for problem in error.errors(include_url=False):
        if problem["type"] == "missing" and len(problem["loc"]) > 1:
            missing.setdefault(where(problem["loc"][:-1]), []).append(str(problem["loc"][-1]))
        else:
            messages.append(f"{where(problem['loc']) or 'the body'}: {problem['msg'].removeprefix('Value error, ')}")
    for place, fields in missing.items():
        messages.append(f"{place}: missing {', '.join(repr(field) for field in fields)}; send every input "
                        f"({', '.join(names)}), with null for an unknown value")
    more = len(messages) - 3
    return "; ".join(messages[:3]) + (f"; and {more} more problems" if more > 0 else "")


def frame(rows: list[BaseModel], model) -> pd.DataFrame:
    """Validated rows -> the DataFrame Model.predict reads, with the dtypes the features expect."""
    columns = {}
    for position, feature in enumerate(model.inputs_):
        values = [getattr(row, f"field_{position}") for row in rows]
        kind = feature.config.type
        if kind == "number":
            columns[feature.config.name] = pd.Series(values, dtype="float64")  # None -> NaN
        else:  # lists (set), PIL images and strings stay Python objects
            columns[feature.config.name] = pd.Series(values, dtype=object)
    return pd.DataFrame(columns)

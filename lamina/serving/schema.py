"""The request schema of a served model, derived from its input features (one pydantic model per
saved model), and the turning of validated rows into the DataFrame that Model.predict takes.

Image and sound cells arrive as base64 strings (JSON) or uploaded bytes (multipart) and are decoded
in memory: nothing a client sends is ever written to disk, and no string of a request is ever read
as a path (a client must not make the server open its own files; time series strings are inline
numbers only). Every file is charged to the request's Budget from its header; nothing is decoded
until all the files of the request fit it.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Callable

import numpy as np
import pandas as pd
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema,
                      create_model)
from pydantic_core import PydanticCustomError

from lamina.features.common import MISSING, UNKNOWN, Unreadable

IMAGE_FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"]  # never EPS/PDF: those run external programs
MAX_NESTING = 64  # levels of [ and { in a JSON body; a real request nests 5: {rows: [{series: [[step]]}]}
# Resampling builds a polyphase filter of about (original / gcd) x (target / gcd) taps: common rates need
# under 300,000 (11025 -> 16000 Hz), a crafted one (44101 Hz) billions. Larger are refused.
MAX_RESAMPLING_FILTER = 1_000_000
OVER_BUDGET = "over_budget"  # the pydantic error type of a file over a decoding limit: answered with 413


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


def _binary(labels: list[str], counts: list[int], value: Any) -> Any:
    value = _as_text(value)
    # training saw only the positive value (an anomaly model's normal rows): any other is 'not positive',
    # as Model.predict reads it
    if isinstance(value, str) and value.strip() not in labels and counts[0]:
        raise ValueError(f"{value!r} is not one of the two values seen in training ({labels[0]!r}, {labels[1]!r})")
    return value


def _labels(delimiter: str, value: Any) -> Any:
    if isinstance(value, str):
        return [label.strip() for label in value.split(delimiter) if label.strip()] or None
    return value


def _empty_is_missing(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


# --- what decoding one request may cost ---------------------------------------------------------

def over_budget(message: str) -> PydanticCustomError:
    return PydanticCustomError(OVER_BUDGET, message.replace("{", "(").replace("}", ")"))


@dataclass
class Budget:
    """What decoding one request may cost (the app makes one per request from its Settings). Files
    are charged from their headers, so a small file of huge dimensions is refused undecoded."""

    image_pixels: int = 25_000_000  # one image (--max-image-pixels)
    request_pixels: int = 50_000_000  # all the images of the request (--max-request-pixels)
    request_samples: int = 50_000_000  # all the sound samples of the request, as read and resampled
    pixels: int = 0  # charged so far
    samples: int = 0

    def charge_image(self, width: int, height: int) -> None:
        if width * height > self.image_pixels:
            raise over_budget(f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
                              f"{self.image_pixels:,} per image (--max-image-pixels); send a smaller image")
        self.pixels += width * height
        if self.pixels > self.request_pixels:
            raise over_budget(f"the images of this request add up to more than {self.request_pixels:,} pixels, "
                              f"the limit per request (--max-request-pixels); send fewer or smaller images per "
                              f"request")

    def charge_sound(self, samples: int) -> None:
        self.samples += samples
        if self.samples > self.request_samples:
            raise over_budget(f"the sounds of this request add up to more than {self.request_samples:,} samples "
                              f"(channels included, as read and resampled), the limit per request "
                              f"(--max-request-samples); send fewer or shorter sounds per request")


def _budget(info: ValidationInfo) -> Budget:
    """The request's budget; a lone value validated without one (in a test) gets its own."""
    return (info.context or {}).get("budget") or Budget()


@dataclass(frozen=True)
class Undecoded:
    """A file whose header was read and charged to the request's budget; `decode` (see below)
    turns it into what the feature reads once every file of the request fits the budget."""

    decode: Callable[[], Any]


def decode(rows: list[BaseModel], names: list[str]) -> None:
    """Decodes, in place, the files of validated rows; a file unreadable past its header is a
    RequestProblem naming its row and field."""
    for index, row in enumerate(rows):
        for position, name in enumerate(names):
            value = getattr(row, f"field_{position}")
            if isinstance(value, Undecoded):
                try:
                    setattr(row, f"field_{position}", value.decode())
                except ValueError as error:
                    raise RequestProblem(f"rows[{index}].{name}: {error}") from None


def _reason(error: Exception) -> str:
    """The first line of a decoder's error, without the reprs of in-memory files it may carry."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", line)


# --- images, sounds and series ---------------------------------------------------------------------

def read_image(value: Any, info: ValidationInfo) -> Any:
    """A base64 string (optionally a data: URL) or uploaded bytes -> an Undecoded PIL image: its
    header is read and charged now, its pixels decoded by `decode`."""
    from PIL import Image, UnidentifiedImageError

    data = _base64_bytes(value, "image")
    if data is None:
        return None
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise over_budget(f"the image is over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, over the limit of "
                          f"{_budget(info).image_pixels:,} per image (--max-image-pixels); send a smaller "
                          f"image") from None
    except UnidentifiedImageError:
        raise ValueError(f"cannot read the image (not a known image format); send a "
                         f"{', '.join(IMAGE_FORMATS)} file") from None
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as error:  # PIL's errors on bad headers
        raise ValueError(f"cannot read the image ({_reason(error)}); send a {', '.join(IMAGE_FORMATS)} "
                         f"file") from None
    _budget(info).charge_image(image.width, image.height)
    return Undecoded(partial(_decode_image, image))


def _decode_image(image) -> Any:
    from PIL import ImageOps

    try:
        image.load()  # every pixel now: a truncated file fails here, with its field named
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as error:
        raise ValueError(f"cannot read the image ({_reason(error)}); send a {', '.join(IMAGE_FORMATS)} "
                         f"file") from None


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


def read_sound(rate: int, value: Any, info: ValidationInfo) -> Any:
    """A base64 string or uploaded bytes of a WAV / FLAC / OGG file -> an Undecoded sound: its
    header (frames, channels, rate) is read and charged now; `decode` gives (samples, 1) float32
    at `rate`, the array the audio feature takes."""
    import soundfile

    data = _base64_bytes(value, "sound")
    if data is None:
        return None
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            frames, channels, original = sound.frames, sound.channels, sound.samplerate
    except (RuntimeError, TypeError, ValueError) as error:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(f"cannot read the sound ({_reason(error)}); send a WAV, FLAC or OGG file") from None
    if frames <= 0:
        raise ValueError("the sound file holds no samples")
    divisor = math.gcd(original, rate)
    if (original // divisor) * (rate // divisor) > MAX_RESAMPLING_FILTER:
        raise ValueError(f"the sound is sampled at {original} Hz, which cannot be resampled to the model's "
                         f"{rate} Hz at a bounded cost; send it at {rate} Hz or a common rate (8000, 16000, "
                         f"22050, 44100 or 48000 Hz)")
    resampled = math.ceil(frames * rate / original) if original != rate else 0
    _budget(info).charge_sound(frames * channels + resampled)
    return Undecoded(partial(_decode_sound, data, frames, original, rate))


def _decode_sound(data: bytes, frames: int, original: int, rate: int) -> np.ndarray:
    import soundfile
    import torch

    from lamina.features.audio_encoders import resample

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            sound = file.read(frames=frames, dtype="float32", always_2d=True)  # never more than was charged
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"cannot read the sound ({_reason(error)}); send a WAV, FLAC or OGG file") from None
    if sound.size == 0:
        raise ValueError("the sound file holds no samples")
    mono = np.ascontiguousarray(sound.mean(axis=1))  # the feature mixes down anyway: resample one channel
    if original != rate:
        mono = resample(torch.from_numpy(mono), original, rate).numpy()
    return mono[:, None]  # (samples, 1)


def read_sequence(value: Any) -> Any:
    """Time steps as nested lists, or inline numbers '1,2;3,4' -> a (T, C) or (T,) float array.
    A string is data only, whatever it looks like: never a path the feature would open."""
    from lamina.features.timeseries import parse_text

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = parse_text(value)
        except Unreadable:  # the message leaves the string out: it may name a file of the server
            raise ValueError("not numbers separated by ',' and ';'; send a list of time steps (each a list of "
                             "channel values) or a string like '1,2;3,4' (a string is never read as a file on "
                             "the server)") from None
    if not isinstance(value, list):
        raise ValueError("expected a list of time steps (each a list of channel values) or a string like "
                         "'1,2;3,4'")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("ragged or non-numeric: every time step must be a list of the same number of numbers "
                         "(one per channel)") from None
    if array.ndim not in (1, 2) or array.size == 0:
        raise ValueError(f"a list nested {array.ndim} deep with {array.size} numbers; send a non-empty list of "
                         f"time steps, each a list of channel values")
    return array


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
        accepted, before, schema = str, partial(_binary, stats["labels"], stats["counts"]), str | bool | int
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
        accepted, before, schema = Any, read_sequence, list[list[float]] | list[float] | str
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


def explain(problems: list[dict], names: list[str]) -> str:
    """One message naming the bad fields (missing ones grouped per row) and how to fix the request,
    from the problems of a pydantic ValidationError (`errors()`)."""
    missing: dict[str, list[str]] = {}
    messages = []
    for problem in problems:
        if problem["type"] == "missing" and len(problem["loc"]) > 1:
            missing.setdefault(where(problem["loc"][:-1]), []).append(str(problem["loc"][-1]))
        else:
            messages.append(f"{where(problem['loc']) or 'the body'}: {problem['msg'].removeprefix('Value error, ')}")
    for place, fields in missing.items():
        messages.append(f"{place}: missing {', '.join(repr(field) for field in fields)}; send every input "
                        f"({', '.join(names)}), with null for an unknown value")
    more = len(messages) - 3
    return "; ".join(messages[:3]) + (f"; and {more} more problems" if more > 0 else "")


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def nesting(text: str) -> int:
    """The deepest nesting of [ and { in a JSON text that has parsed (so its strings are well formed:
    the pattern that drops them runs in linear time), counted in C by numpy, not by recursion."""
    codes = np.frombuffer(_STRING.sub("", text).encode("utf-8"), dtype=np.uint8)
    steps = ((codes == ord("[")).astype(np.int64) + (codes == ord("{"))
             - (codes == ord("]")) - (codes == ord("}")))
    return int(steps.cumsum().max(initial=0))


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

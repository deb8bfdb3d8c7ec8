"""What a served model takes for one input (a RequestField, which each type's `request_field` fills in)
and what decoding the files of one request may cost (Budget): the pieces the types' request readers
share with lamina/serving. A request carries data only: nothing here ever reads a path.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import ValidationInfo
from pydantic_core import PydanticCustomError

OVER_BUDGET = "over_budget"  # the pydantic error type of a file over a decoding limit: answered with 413


@dataclass
class Widget:
    """The control of one input on a served model's web page."""

    control: str  # 'select' (one of `choices`), 'number', 'line' (one line of text), 'file' or 'textarea'
    value: Any = None  # the initial value, as the form sends it
    choices: list = field(default_factory=list)  # a select's values
    accept: str = ""  # a file input's media types ('image/*')
    hint: str = ""  # a line's placeholder and title


@dataclass
class RequestField:
    """How a served model takes one input: one cell of a JSON row, one field of an HTML form."""

    accepted: Any  # the Python type of the validated value (float, str, list[str]); Any: whatever `read` gives
    about: str  # what the request schema says the field takes
    example: Any  # a plausible JSON value: the OpenAPI example, the web page's default, the warm-up row
    widget: Widget
    nullable: bool = True  # null means missing (False: the model was trained with missing: error)
    # the sent value -> `accepted`: a pydantic before-validator, called as read(value) or read(value, info);
    # a file is charged to the request's Budget (budget_of(info)) and given back Undecoded
    read: Callable | None = None
    shown: Any = None  # what the OpenAPI document shows as accepted, where wider than `accepted` (str | int)
    file: bool = False  # sent as a file: a base64 string in JSON, an upload in a form
    dtype: str = "object"  # the dtype of the column Model.predict reads ('float64': None becomes NaN)


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


def budget_of(info: ValidationInfo) -> Budget:
    """The request's budget; a lone value validated without one (in a test) gets its own."""
    return (info.context or {}).get("budget") or Budget()


@dataclass(frozen=True)
class Undecoded:
    """A file whose header was read and charged to the request's budget; `decode` turns it into what
    the feature reads once every file of the request fits the budget (lamina.serving.schema.decode)."""

    decode: Callable[[], Any]


# --- turning one JSON or form value into what a feature reads ----------------------------------------

def as_text(value: Any) -> Any:
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


def empty_is_missing(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def file_bytes(value: Any, what: str) -> bytes | None:
    """A base64 string (optionally a data: URL) or uploaded bytes -> the file's bytes; None when empty."""
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


def reason(error: Exception) -> str:
    """The first line of a decoder's error, without the reprs of in-memory files it may carry."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", line)

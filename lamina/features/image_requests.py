"""Images sent to a served model: a base64 string or uploaded bytes, whose header is read and charged
to the request's Budget before a pixel is decoded; and the plain image of the request's example."""
from __future__ import annotations

import base64
import io
import struct
from functools import partial
from typing import Any

from pydantic import ValidationInfo

from lamina.features.request import Undecoded, budget_of, file_bytes, over_budget, reason

IMAGE_FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"]  # never EPS/PDF: those run external programs


def read(value: Any, info: ValidationInfo) -> Any:
    """A base64 string (optionally a data: URL) or uploaded bytes -> an Undecoded PIL image: its
    header is read and charged now, its pixels decoded by `Undecoded.decode`."""
    from PIL import Image, UnidentifiedImageError

    data = file_bytes(value, "image")
    if data is None:
        return None
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise over_budget(f"the image is over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, over the limit of "
                          f"{budget_of(info).image_pixels:,} per image (--max-image-pixels); send a smaller "
                          f"image") from None
    except UnidentifiedImageError:
        raise ValueError(f"cannot read the image (not a known image format); send a "
                         f"{', '.join(IMAGE_FORMATS)} file") from None
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as error:  # PIL's errors on bad headers
        raise ValueError(f"cannot read the image ({reason(error)}); send a {', '.join(IMAGE_FORMATS)} "
                         f"file") from None
    budget_of(info).charge_image(image.width, image.height)
    return Undecoded(partial(_decode, image))


def _decode(image) -> Any:
    from PIL import ImageOps

    try:
        image.load()  # every pixel now: a truncated file fails here, with its field named
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as error:
        raise ValueError(f"cannot read the image ({reason(error)}); send a {', '.join(IMAGE_FORMATS)} "
                         f"file") from None


def plain_image(mean: list[float]) -> str:
    """A small PNG of one colour (the training mean: one value per channel), base64-encoded."""
    from PIL import Image

    mean = tuple(int(round(value)) for value in mean)
    mode = "L" if len(mean) == 1 else "RGB"
    buffer = io.BytesIO()
    Image.new(mode, (8, 8), mean[0] if mode == "L" else mean).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")

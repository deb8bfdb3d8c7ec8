"""DICOM files (medical scans) as uint8 pixels for the `image` type: rescaling, the display window
and MONOCHROME1 inversion. pydicom is imported only when a DICOM file is read."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lamina.features.common import Unreadable
from lamina.features.files import first_line


def to_uint8(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] onto 0..255, clipped (the DICOM window; min-max when not given)."""
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round(np.clip((pixels - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        # pydicom gives several windows (a MultiValue) for some scans: the first is the default
        return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None


def looks_like_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def read_dicom(path: Path, window: tuple[float | None, float | None]) -> np.ndarray:
    """A DICOM image as uint8: rescale slope/intercept applied, then the file's window, else the
    configured one (`window`: centre, width), else the pixels' own min-max. MONOCHROME1 (white =
    low) is inverted."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # a missing package is not a bad file: never skipped
        raise ImportError("reading DICOM files needs pydicom: pip install 'lamina[medical]'") from None
    try:
        dataset = pydicom.dcmread(path, force=True)
        pixels = dataset.pixel_array
    except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError, TypeError, EOFError,
            NotImplementedError, RuntimeError) as error:
        raise Unreadable(f"cannot decode the DICOM file: {first_line(error)}") from None
    frames = int(_first_number(dataset.get("NumberOfFrames")) or 1)
    if frames > 1:
        raise Unreadable(f"a DICOM file of {frames} frames; lamina reads one image per cell: save each frame apart")
    if pixels.ndim == 3:  # colour (RGB after pydicom's conversion): the window is for grey pixels
        return pixels if pixels.dtype == np.uint8 else to_uint8(pixels, float(pixels.min()), float(pixels.max()))
    slope = _first_number(dataset.get("RescaleSlope"))
    intercept = _first_number(dataset.get("RescaleIntercept"))
    values = pixels.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
    center = _first_number(dataset.get("WindowCenter"))
    width = _first_number(dataset.get("WindowWidth"))
    if center is None or not width:
        center, width = window
    if center is None or not width:
        grey = to_uint8(values, float(values.min()), float(values.max()))
    else:
        grey = to_uint8(values, center - width / 2, center + width / 2)
    return 255 - grey if str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1" else grey

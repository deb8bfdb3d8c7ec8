"""Explanations for people: an image heat map drawn over its image (an RGB array or PNG bytes,
for files and HTML reports), and the plain-text summary `lamina explain` prints."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from lamina.errors import DataError


def _grey(image: Any) -> np.ndarray:
    """An image as grey values in [0, 1], (H, W); takes (H, W), (H, W, C) or (C, H, W) arrays."""
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 3:
        channel_axis = 0 if pixels.shape[0] in (1, 3) and pixels.shape[2] not in (1, 3) else 2
        pixels = pixels.mean(axis=channel_axis)
    if pixels.ndim != 2:
        raise DataError(f"an image must be an (H, W), (H, W, C) or (C, H, W) array; got shape {pixels.shape}")
    low, high = float(pixels.min()), float(pixels.max())
    return (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)


def heat_map_rgb(image: Any, heat_map: Any, opacity: float = 0.6, colormap: str = "RdBu_r") -> np.ndarray:
    """The heat map (H x W attributions, nested lists or an array) coloured with a diverging
    colormap centred on zero (red: pushed the output up; blue: down) and laid over the image in
    grey. The heat map is resized to the image when their sizes differ. Returns (H, W, 3) uint8."""
    from matplotlib import colormaps
    from PIL import Image

    background = _grey(image)
    scores = np.asarray(heat_map, dtype=np.float32)
    if scores.shape != background.shape:  # e.g. the original photo rather than the model's resized input
        scores = np.asarray(Image.fromarray(scores).resize(background.shape[::-1], Image.BILINEAR))
    largest = float(np.abs(scores).max()) or 1.0
    colours = colormaps[colormap](0.5 + 0.5 * scores / largest)[..., :3]  # (H, W, 3) in [0, 1]
    # strong attributions show their colour; weak ones let the image through
    weight = opacity * (np.abs(scores) / largest)[..., None]
    blended = (1 - weight) * background[..., None] + weight * colours
    return (blended * 255).round().astype(np.uint8)


def heat_map_png(image: Any, heat_map: Any, path: str | Path | None = None, **options) -> bytes:
    """heat_map_rgb as PNG bytes (e.g. for a base64 <img> in an HTML report); also written to
    `path` when given."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(heat_map_rgb(image, heat_map, **options)).save(buffer, format="PNG")
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _signed(value: float) -> str:
    return f"{value:+.3g}"


def _shown(value: Any) -> str:
    if value is None:
        return "(missing)"
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 30 else text[:27] + "..."


def row_summary(row: dict, top: int = 5) -> list[str]:
    """Lines for one explained row: the prediction, the top inputs, top tokens, heat map peaks."""
    label = f" = {row['label']!r}" if "label" in row else ""
    probability = f" (probability {row['probability']:.3f})" if isinstance(row.get("probability"), float) else ""
    lines = [f"row {row['row']}: prediction {row['prediction']}{probability}; explained value{label} "
             f"{row['output_value']:.4g} = baseline {row['baseline_value']:.4g} + attributions "
             f"{row['attribution_sum']:.4g}" + (f" (gap {row['delta']:+.2g})" if abs(row["delta"]) > 1e-3 else "")]
    ranked = sorted(row["scores"].items(), key=lambda item: -abs(item[1]))[:top]
    parts = [f"{name}={_shown(row['values'][name])} {_signed(score)}" if name in row["values"] and
             name not in row["tokens"] else f"{name} {_signed(score)}" for name, score in ranked]
    lines.append("  top inputs: " + "; ".join(parts))
    for name, tokens in row["tokens"].items():
        best = sorted(tokens, key=lambda item: -abs(item[1]))[:top]
        lines.append(f"  {name} tokens: " + ", ".join(f"{token} {_signed(score)}" for token, score in best))
    for name, heat_map in row["heat_maps"].items():
        scores = np.asarray(heat_map)
        peak = np.unravel_index(np.abs(scores).argmax(), scores.shape)
        lines.append(f"  {name}: heat map {scores.shape[0]}x{scores.shape[1]}, strongest pixel (row {peak[0]}, "
                     f"column {peak[1]}) {_signed(float(scores[peak]))}")
    return lines


def summary(explanation: dict, top: int = 5) -> str:
    """The whole explanation as plain text: what is explained, then a few lines per row."""
    lines = [f"explaining {explanation['explained']} with {explanation['method']}"]
    for row in explanation["rows"]:
        lines += row_summary(row, top)
    return "\n".join(lines)


def importance_summary(result: dict, top: int = 10) -> str:
    """Global importance as two ranked lists."""
    permutation = result["permutation"]
    lines = [f"importance for output {result['output']}: mean |attribution| over {result['attribution_rows']} rows "
             f"({result['method']})"]
    lines += [f"  {name:<24} {value:.4g}" for name, value in list(result["mean_absolute_attribution"].items())[:top]]
    if not permutation:
        return "\n".join(lines + ["permutation importance: not measurable on these rows (an anomaly score needs "
                                  "both normal and anomalous labels)"])
    lines.append(f"permutation importance over {result['rows']} rows: drop in {permutation['metric']} "
                 f"(reference {permutation['reference']:.4g})")
    lines += [f"  {name:<24} {value['mean']:+.4g} ± {value['std']:.2g}"
              for name, value in list(permutation["features"].items())[:top]]
    return "\n".join(lines)

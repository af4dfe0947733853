"""Training pairs for the learned anonymizer: an image and what blurbeam's default makes of it.

Targets come from blurbeam itself: the image's faces found by the anonymize default detector
(``pipelines.scaffold.DEFAULT_DETECTOR`` at its default threshold) and blurred by the default
``BlurConfig`` (Gaussian, strength 0.25, on the 1.6x ellipse mask). The detections are cached
(``detect_folder``), so that tiles can be cut again without detecting again.

Tiles (``cut_tiles``) are 128x128 pairs cut from each image rescaled by a random factor, half
centred on a detected face (anywhere in the tile, so faces are not only central) and half
anywhere, so that the network sees small, large, several and off-centre faces and face-free
background, which it must leave unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from blurbeam.blur import BlurConfig, anonymize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: Rescaling factors of whole images before tiles are cut (log-uniform in this range).
SCALE_RANGE = (0.3, 1.0)


def image_files(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"no such folder: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def detect_folder(folder: str | Path, cache: str | Path, detector: str, threads: int = 1) -> dict:
    """Detections of ``detector`` (its default threshold) for every image under ``folder``,
    kept in the JSON file ``cache`` ({relative path: [[x, y, w, h], ...]}); images already in
    the cache are not detected again."""
    from blurbeam.detectors import DetectorSpec, create

    cache = Path(cache)
    boxes: dict[str, list[list[float]]] = json.loads(cache.read_text()) if cache.is_file() else {}
    files = image_files(folder)
    todo = [p for p in files if str(p.relative_to(folder)) not in boxes]
    if todo:
        det = create(DetectorSpec(detector), threads=threads)
        for i, path in enumerate(todo):
            faces = det.detect(load_rgb(path))
            boxes[str(path.relative_to(folder))] = [[f.x, f.y, f.w, f.h] for f in faces]
            if i % 50 == 49 or i == len(todo) - 1:
                cache.write_text(json.dumps(boxes))
    return {"detector": detector, "boxes": boxes}


def target(rgb: np.ndarray, boxes: list[list[float]], cfg: BlurConfig | None = None) -> np.ndarray:
    """What ``blurbeam anonymize`` writes for ``rgb`` given its detections."""
    return anonymize(rgb, [tuple(b) for b in boxes], cfg or BlurConfig())


def _crop_origin(size: int, extent: int, centre: float | None, rng: np.random.Generator) -> int:
    if extent <= size:
        return 0
    if centre is None:
        return int(rng.integers(0, extent - size + 1))
    # the face lands anywhere in the tile, not only in its middle
    lo = int(np.clip(centre - size + 8, 0, extent - size))
    hi = int(np.clip(centre - 8, 0, extent - size))
    return int(rng.integers(lo, hi + 1)) if hi >= lo else lo


def cut_tiles(
    rgb: np.ndarray,
    tgt: np.ndarray,
    boxes: list[list[float]],
    n: int,
    rng: np.random.Generator,
    size: int = 128,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``n`` (input, target) uint8 tiles of ``size`` px from one image pair."""
    for k in range(n):
        lo, hi = np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1])
        s = float(np.exp(rng.uniform(lo, hi)))
        h, w = rgb.shape[:2]
        s = max(s, size / min(h, w))
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        cx = cy = None
        if boxes and k % 2 == 0:
            x, y, bw, bh = boxes[int(rng.integers(len(boxes)))]
            cx, cy = (x + bw / 2) * nw / w, (y + bh / 2) * nh / h
        x0 = _crop_origin(size, nw, cx, rng)
        y0 = _crop_origin(size, nh, cy, rng)
        # the source window of that tile, resized alone (the same pixels as resizing the
        # whole image and cutting, up to INTER_AREA's treatment of the window's border)
        fx, fy = w / nw, h / nh
        sx0, sx1 = round(x0 * fx), min(w, round((x0 + size) * fx))
        sy0, sy1 = round(y0 * fy), min(h, round((y0 + size) * fy))
        yield tuple(
            cv2.resize(img[sy0:sy1, sx0:sx1], (size, size), interpolation=cv2.INTER_AREA)
            for img in (rgb, tgt)
        )


def build_tiles(
    folders: list[tuple[str, int]],
    cache_dir: str | Path,
    detector: str,
    seed: int = 0,
    threads: int = 1,
    log=print,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(inputs, targets, names) uint8 arrays (N, 128, 128, 3) from ``folders``, a list of
    (folder, tiles per image). Detections are cached under ``cache_dir``."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xs, ys, names = [], [], []
    for folder, per_image in folders:
        key = "".join(c if c.isalnum() else "_" for c in str(Path(folder).resolve()))[-80:]
        log(f"detecting with {detector} in {folder}")
        det = detect_folder(folder, cache_dir / f"boxes_{detector}_{key}.json", detector, threads)
        for rel, boxes in sorted(det["boxes"].items()):
            rgb = load_rgb(Path(folder) / rel)
            tgt = target(rgb, boxes)
            for a, b in cut_tiles(rgb, tgt, boxes, per_image, rng):
                xs.append(a)
                ys.append(b)
                names.append(rel)
        log(f"{folder}: {len(det['boxes'])} images, {len(xs)} tiles so far")
    return np.stack(xs), np.stack(ys), names

"""The face crops: listing, the seeded train/validation split, loading."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

DEFAULT_TRAIN_DIR = "../shared/data/deblur/faces128_train"
DEFAULT_SEED_PAIRS = "../shared/data/deblur/seed_pairs"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def split(
    files: list[Path], seed: int = 0, val_fraction: float = 0.1
) -> tuple[list[Path], list[Path]]:
    """Seeded split; the validation part is the held-out set of the benchmark."""
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = max(1, int(round(len(files) * val_fraction)))
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val


def read_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """uint8 RGB; resized to size x size (area) when ``size`` is given and differs."""
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image: {path}")
    rgb = bgr[..., ::-1].copy()
    if size is not None and rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return rgb


def load_stack(files: list[Path], size: int = 128) -> np.ndarray:
    return np.stack([read_rgb(p, size) for p in files])

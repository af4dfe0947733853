"""Run the learned anonymizer on whole images: overlapping tiles through a TFLite model.

The packaged model (``weights/edge_student_int8.tflite``) is full-integer: uint8 RGB in, uint8
RGB out, 128x128. ``EdgeAnonymizer.apply`` pads the image by reflection to cover it with tiles
on a stride of ``tile - overlap``, runs every tile, and blends the overlapping outputs with a
weight that falls linearly to the tile's borders, where a convolutional network sees least
context. Every output pixel is the network's: no detector runs and no pixel is copied from the
input, so the result is only as private as the network (docs/PRIVACY.md).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WEIGHTS_PACKAGE = "blurbeam.edge.weights"
DEFAULT_MODEL = "edge_student_int8.tflite"
DEFAULT_OVERLAP = 32


def default_model_path() -> Path:
    return Path(str(resources.files(WEIGHTS_PACKAGE) / DEFAULT_MODEL))


@functools.lru_cache(maxsize=4)
def model_sha256(path: str | None = None) -> str:
    return hashlib.sha256(Path(path or default_model_path()).read_bytes()).hexdigest()


def require_interpreter() -> None:
    """Raise ``MissingExtra`` unless a TFLite interpreter (``ai_edge_litert`` or TensorFlow's) is
    installed."""
    from blurbeam.extras import installed, require

    if not installed("ai_edge_litert"):
        require("tensorflow", "edge", "the learned method")


def _interpreter(path: str, threads: int):
    """A TFLite interpreter: ``ai_edge_litert`` when installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        require_interpreter()
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            return tf.lite.Interpreter(model_path=path, num_threads=threads or None)
    return Interpreter(model_path=path, num_threads=threads or None)


def _ramp(n: int, overlap: int) -> np.ndarray:
    """1-D blending weight of a tile: rising over ``overlap`` px from each border."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        w[:overlap] = r
        w[-overlap:] = np.minimum(w[-overlap:], r[::-1])
    return w


class EdgeAnonymizer:
    """A loaded TFLite anonymizer. ``threads``: the interpreter's threads (0: its default).
    Calls are serialised: one interpreter holds one set of buffers."""

    def __init__(
        self, path: str | Path | None = None, threads: int = 1, overlap: int = DEFAULT_OVERLAP
    ) -> None:
        self.path = str(path or default_model_path())
        if not os.path.isfile(self.path):
            raise RuntimeError(f"no learned anonymizer model at {self.path}")
        self.sha256 = model_sha256(self.path)
        self._it = _interpreter(self.path, threads)
        self._it.allocate_tensors()
        inp = self._it.get_input_details()[0]
        out = self._it.get_output_details()[0]
        self._in, self._out = inp, out
        _, h, w, c = inp["shape"]
        if h != w or c != 3:
            raise RuntimeError(f"{self.path}: expected a square RGB input, got {inp['shape']}")
        self.tile = int(h)
        if not 0 <= overlap < self.tile // 2:
            raise ValueError(f"overlap must be in [0, {self.tile // 2})")
        self.overlap = overlap
        self._lock = threading.Lock()

    def _quantize(self, rgb8: np.ndarray) -> np.ndarray:
        d = self._in
        if d["dtype"] == np.float32:
            return (rgb8.astype(np.float32) / 255.0)[None]
        scale, zero = d["quantization"]
        q = np.rint(rgb8.astype(np.float32) / 255.0 / scale + zero)
        info = np.iinfo(d["dtype"])
        return np.clip(q, info.min, info.max).astype(d["dtype"])[None]

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        d = self._out
        if d["dtype"] == np.float32:
            return y.astype(np.float32)
        scale, zero = d["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def run_tile(self, tile8: np.ndarray) -> np.ndarray:
        """One (tile, tile, 3) uint8 RGB tile -> float RGB in [0, 1] (unclipped)."""
        with self._lock:
            self._it.set_tensor(self._in["index"], self._quantize(tile8))
            self._it.invoke()
            return self._dequantize(self._it.get_tensor(self._out["index"])[0])

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The anonymized copy of ``pixels`` (H, W, C) uint8 or uint16, C in 1-4: colour
        channels through the network (grey as RGB), alpha kept."""
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"expected (H, W, C) pixels, got {pixels.shape}")
        dtype = pixels.dtype
        if dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected uint8 or uint16 pixels, got {dtype}")
        cc = 3 if pixels.shape[2] >= 3 else 1
        colour = pixels[:, :, :cc]
        rgb8 = (colour >> 8).astype(np.uint8) if dtype == np.uint16 else colour
        if cc == 1:
            rgb8 = np.repeat(rgb8, 3, axis=2)
        result = self._apply_rgb8(rgb8)
        if cc == 1:
            result = result.mean(axis=2, keepdims=True)
        peak = 65535.0 if dtype == np.uint16 else 255.0
        out = pixels.copy()
        out[:, :, :cc] = np.clip(np.rint(result * peak), 0, peak).astype(dtype)
        return out

    def _apply_rgb8(self, rgb8: np.ndarray) -> np.ndarray:
        return apply_tiles(self.run_tile, rgb8, self.tile, self.overlap)


def apply_tiles(
    run_tile: Callable[[np.ndarray], np.ndarray], rgb8: np.ndarray, t: int, ov: int
) -> np.ndarray:
    """``run_tile`` (a (t, t, 3) uint8 tile -> float RGB) over the whole (H, W, 3) uint8 image
    in tiles overlapping by ``ov`` px, blended; float RGB in [0, 1]."""
    h, w = rgb8.shape[:2]
    stride = t - ov
    # a margin of ov/2 around the image, so that its borders fall inside blended tiles
    m = ov // 2

    def tiles(n: int) -> int:
        return max(1, -(-(n + 2 * m - ov) // stride))

    ny, nx = tiles(h), tiles(w)
    ph, pw = (ny - 1) * stride + t, (nx - 1) * stride + t
    mode = "reflect" if min(h, w) > 1 else "edge"
    padded = np.pad(rgb8, ((m, ph - h - m), (m, pw - w - m), (0, 0)), mode)
    acc = np.zeros((ph, pw, 3), np.float32)
    wsum = np.zeros((ph, pw, 1), np.float32)
    ramp = _ramp(t, ov)
    weight = (ramp[:, None] * ramp[None, :])[:, :, None]
    for iy in range(ny):
        y0 = iy * stride
        for ix in range(nx):
            x0 = ix * stride
            out = run_tile(padded[y0 : y0 + t, x0 : x0 + t])
            acc[y0 : y0 + t, x0 : x0 + t] += out * weight
            wsum[y0 : y0 + t, x0 : x0 + t] += weight
    return np.clip(acc[m : m + h, m : m + w] / wsum[m : m + h, m : m + w], 0.0, 1.0)


@functools.lru_cache(maxsize=2)
def shared_anonymizer(path: str | None = None, threads: int = 1) -> EdgeAnonymizer:
    """One loaded model per process and (path, threads)."""
    return EdgeAnonymizer(path, threads=threads)

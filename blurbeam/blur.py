"""Face anonymization methods. Pure code: no Beam.

Every method's strength scales with the face: ``face size`` below is the larger side of the
detected face box, in pixels, and each method has a floor in pixels so that tiny faces are
destroyed too.

=========  ==================================================  =======  =========================
method     strength means                                      default  floor
=========  ==================================================  =======  =========================
gaussian   Gaussian sigma as a fraction of the face size       0.25     sigma >= 4 px
median     median kernel width as a fraction of the face size  0.75     kernel >= 9 px
bilateral  spatial sigma as a fraction of the face size        1.0      sigma >= 4 px
box        box kernel width as a fraction of the face size     0.9      kernel >= 9 px
pixelate   blocks across the face (fewer = stronger)           4        block >= 4 px
solid      (none) fill with a constant colour                  -        -
=========  ==================================================  =======  =========================

The defaults are chosen so that a face recognizer is near chance on the result (the privacy audit
measures this); the original notebook's fixed 20x20 box blur is deliberately not offered as a
default. Large kernels are computed on a downscaled copy of the region (then upsampled), which is
both faster and destroys at least as much detail as the full-size filter.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from blurbeam.geometry import MASK_SHAPES, clip_rect, region_mask, scale_box

METHODS = ("gaussian", "median", "bilateral", "box", "pixelate", "solid", "learned")
DEFAULT_STRENGTH: dict[str, float] = {
    "gaussian": 0.25,
    "median": 0.75,
    "bilateral": 1.0,  # edge-preserving: weak at any strength (docs/PRIVACY.md)
    "box": 0.9,
    "pixelate": 4.0,
    "solid": 0.0,
    "learned": 0.0,  # no strength: the learned edge network (blurbeam.edge) does the whole image
}
#: Face boxes are enlarged by this before masking. The privacy audit (docs/PRIVACY.md) measured
#: 1.6 against deface's 1.3: detector boxes are tighter than the head, and the wider mask halves
#: re-identification; it also lifts blur recall on WIDER FACE (docs/BENCHMARKS.md).
DEFAULT_MASK_SCALE = 1.6
MIN_SIGMA_PX = 4.0
MIN_KERNEL_PX = 9
MIN_BLOCK_PX = 4.0
#: The weakest setting of each method that the privacy audit (docs/PRIVACY.md, "Recommended
#: modes") measured at or under its targets (top-1 identification and verification
#: re-identification <= 5% against every attacker), with the 1.6x mask: a strength that blurs
#: less (for pixelate: more blocks across the face) is weak. ``bilateral`` passed at no strength
#: and ``solid`` leaves nothing to attack.
SAFE_MIN_STRENGTH: dict[str, float] = {"gaussian": 0.25, "median": 0.75, "box": 0.9}
SAFE_MAX_BLOCKS = 4.0
SAFE_MIN_MASK_SCALE = 1.6
_MAX_DIRECT_SIGMA = 6.0  # above this, blur a downscaled copy
_MAX_DIRECT_MEDIAN = 15
_MAX_DIRECT_BILATERAL_SIGMA = 4.0


@dataclass(frozen=True)
class BlurConfig:
    method: str = "gaussian"
    strength: float | None = None  # None: the method's default (table above)
    mask_scale: float = DEFAULT_MASK_SCALE
    mask_shape: str = "ellipse"
    feather: float = 0.0  # soft edge outside the mask, as a fraction of the mask's smaller side
    color: tuple[int, int, int] = (0, 0, 0)  # for ``solid``

    def __post_init__(self) -> None:
        for name in ("mask_scale", "feather") + (
            ("strength",) if self.strength is not None else ()
        ):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name.replace('_', ' ')} must be a finite number")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.mask_shape not in MASK_SHAPES:
            raise ValueError(f"unknown mask shape {self.mask_shape!r}")
        if self.mask_scale < 1.0:
            raise ValueError("mask scale must be >= 1.0 (a smaller mask leaves face pixels)")
        if self.feather < 0:
            raise ValueError("feather must be >= 0")
        s = self.effective_strength
        if self.method == "pixelate" and s < 1:
            raise ValueError("pixelate strength is the number of blocks across the face (>= 1)")
        if self.method == "learned" and s != 0:
            raise ValueError("the learned method takes no strength")
        if self.method not in ("solid", "pixelate", "learned") and s <= 0:
            raise ValueError(f"{self.method} strength must be > 0")

    @property
    def effective_strength(self) -> float:
        return float(DEFAULT_STRENGTH[self.method] if self.strength is None else self.strength)

    @property
    def weakness(self) -> str | None:
        """Why this setting is weaker than the privacy audit's weakest passing setting, or None
        when it is at least as strong (``SAFE_MIN_STRENGTH``, ``SAFE_MAX_BLOCKS``,
        ``SAFE_MIN_MASK_SCALE``)."""
        s = self.effective_strength
        if self.method == "solid":
            return None
        if self.method == "learned":
            from blurbeam.edge import LEARNED_WEAKNESS

            return LEARNED_WEAKNESS
        if self.method == "bilateral":
            return (
                "bilateral blur keeps edges and passed the privacy audit at no strength "
                "(docs/PRIVACY.md)"
            )
        if self.method == "pixelate" and s > SAFE_MAX_BLOCKS:
            return (
                f"pixelate with {s:g} blocks across the face is finer than the {SAFE_MAX_BLOCKS:g} "
                "blocks the privacy audit measured as safe (docs/PRIVACY.md)"
            )
        minimum = SAFE_MIN_STRENGTH.get(self.method)
        if minimum is not None and s < minimum:
            return (
                f"{self.method} strength {s:g} is below {minimum:g}, the weakest the privacy "
                "audit measured as safe"
            )
        if self.mask_scale < SAFE_MIN_MASK_SCALE:
            return (
                f"mask scale {self.mask_scale:g} is below {SAFE_MIN_MASK_SCALE:g}, the mask the "
                f"privacy audit measured {self.method} as safe with"
            )
        return None

    def params(self) -> dict[str, object]:
        """Everything that determines the output, for audit records and config hashes. A weak
        setting (``weakness``) says so under ``weak_anonymization``."""
        d = asdict(self)
        d["strength"] = self.effective_strength
        d["color"] = list(self.color)
        d["floors"] = {
            "min_sigma_px": MIN_SIGMA_PX,
            "min_kernel_px": MIN_KERNEL_PX,
            "min_block_px": MIN_BLOCK_PX,
        }
        if self.method == "learned":
            from blurbeam.edge import model_record

            d["model"] = model_record()
        if self.weakness:
            d["weak_anonymization"] = self.weakness
        return d

    @property
    def whole_image(self) -> bool:
        """True when the method rewrites the whole image and needs no face boxes (learned)."""
        return self.method == "learned"

    def params_json(self) -> str:
        return json.dumps(self.params(), sort_keys=True)


def _odd(k: float) -> int:
    k = max(1, int(math.ceil(k)))
    return k if k % 2 == 1 else k + 1


def face_size(w: float, h: float) -> float:
    return max(float(w), float(h), 1.0)


def gaussian_sigma(cfg: BlurConfig, size: float) -> float:
    return max(cfg.effective_strength * size, MIN_SIGMA_PX)


def kernel_width(cfg: BlurConfig, size: float) -> int:
    return _odd(max(cfg.effective_strength * size, MIN_KERNEL_PX))


def block_size(cfg: BlurConfig, size: float) -> float:
    return max(size / cfg.effective_strength, MIN_BLOCK_PX)


def face_params(cfg: BlurConfig, w: float, h: float) -> dict[str, float]:
    """The pixel-level parameters the method uses for one face (also what an attacker would know)."""
    size = face_size(w, h)
    if cfg.method in ("gaussian", "bilateral"):
        return {"sigma_px": gaussian_sigma(cfg, size)}
    if cfg.method in ("median", "box"):
        return {"kernel_px": float(kernel_width(cfg, size))}
    if cfg.method == "pixelate":
        return {"block_px": block_size(cfg, size)}
    return {}


def psf(cfg: BlurConfig, w: float, h: float) -> np.ndarray | None:
    """The point-spread function of a linear method for one face (None for non-linear ones):
    what a deconvolution attacker who knows our settings would use."""
    p = face_params(cfg, w, h)
    if cfg.method == "gaussian":
        sigma = p["sigma_px"]
        k = _odd(6 * sigma)
        g = cv2.getGaussianKernel(k, sigma)
        return (g @ g.T).astype(np.float64)
    if cfg.method == "box":
        k = int(p["kernel_px"])
        return np.full((k, k), 1.0 / (k * k))
    return None


def _resize(img: np.ndarray, w: int, h: int, interp: int) -> np.ndarray:
    out = cv2.resize(img, (max(1, w), max(1, h)), interpolation=interp)
    return out.reshape(h, w, -1) if out.ndim == 2 else out


def _with_3d(fn):  # keep (H, W, C) layout through OpenCV calls that drop a singleton channel
    def wrapped(region: np.ndarray, *a):
        out = fn(region, *a)
        return out.reshape(region.shape) if out.ndim == 2 else out

    return wrapped


@functools.lru_cache(maxsize=256)
def _gaussian_kernel(k: int, sigma: float) -> np.ndarray:
    return cv2.getGaussianKernel(k, sigma)


def _gaussian_direct(region: np.ndarray, sigma: float) -> np.ndarray:
    # The separable filter with OpenCV's own Gaussian kernel: the same filter as
    # cv2.GaussianBlur, whose bit-exact fixed-point path for 8-bit images is several times
    # slower on face-sized regions (outputs differ by rounding, at most 2 levels).
    g = _gaussian_kernel(_odd(6 * sigma), sigma)
    return cv2.sepFilter2D(region, -1, g, g, borderType=cv2.BORDER_REFLECT)


@_with_3d
def _gaussian(region: np.ndarray, sigma: float) -> np.ndarray:
    h, w = region.shape[:2]
    if sigma <= _MAX_DIRECT_SIGMA:
        return _gaussian_direct(region, sigma)
    f = sigma / _MAX_DIRECT_SIGMA
    sw, sh = max(1, round(w / f)), max(1, round(h / f))
    small = _gaussian_direct(_resize(region, sw, sh, cv2.INTER_AREA), _MAX_DIRECT_SIGMA)
    return _resize(small.reshape(sh, sw, -1), w, h, cv2.INTER_LINEAR)


@_with_3d
def _box(region: np.ndarray, k: int) -> np.ndarray:
    return cv2.blur(region, (k, k), borderType=cv2.BORDER_REFLECT)


def _to8(region: np.ndarray) -> np.ndarray:
    return (region >> 8).astype(np.uint8) if region.dtype == np.uint16 else region


def _from8(region8: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return region8.astype(np.uint16) * 257 if dtype == np.uint16 else region8


@_with_3d
def _median(region: np.ndarray, k: int) -> np.ndarray:
    h, w = region.shape[:2]
    src = np.ascontiguousarray(_to8(region))
    if k <= _MAX_DIRECT_MEDIAN:
        out = cv2.medianBlur(src, k)
    else:
        f = k / _MAX_DIRECT_MEDIAN
        small = _resize(src, max(1, round(w / f)), max(1, round(h / f)), cv2.INTER_AREA)
        small = cv2.medianBlur(np.ascontiguousarray(small), _MAX_DIRECT_MEDIAN)
        out = _resize(small, w, h, cv2.INTER_LINEAR)
    return _from8(out.reshape(region.shape), region.dtype)


@_with_3d
def _bilateral(region: np.ndarray, sigma: float) -> np.ndarray:
    h, w = region.shape[:2]
    src = np.ascontiguousarray(_to8(region))
    f = max(1.0, sigma / _MAX_DIRECT_BILATERAL_SIGMA)
    s = sigma / f
    small = (
        src
        if f == 1.0
        else _resize(src, max(1, round(w / f)), max(1, round(h / f)), cv2.INTER_AREA)
    )
    small = small.reshape(small.shape[0], small.shape[1], -1)
    d = _odd(4 * s)
    out = cv2.bilateralFilter(
        np.ascontiguousarray(small), d, 150.0, s, borderType=cv2.BORDER_REFLECT
    )
    out = out.reshape(small.shape)
    if f != 1.0:
        out = _resize(out, w, h, cv2.INTER_LINEAR)
    return _from8(out.reshape(region.shape), region.dtype)


@_with_3d
def _pixelate(region: np.ndarray, block: float) -> np.ndarray:
    h, w = region.shape[:2]
    nx, ny = max(1, round(w / block)), max(1, round(h / block))
    small = _resize(region, nx, ny, cv2.INTER_AREA)
    return _resize(small, w, h, cv2.INTER_NEAREST)


def _pad(cfg: BlurConfig, size: float) -> int:
    """Context around the mask that the filter reads, so the blur sees real neighbours."""
    if cfg.method in ("gaussian", "bilateral"):
        return int(math.ceil(2 * gaussian_sigma(cfg, size)))
    if cfg.method in ("median", "box"):
        return kernel_width(cfg, size) // 2
    return 0


def anonymize(
    pixels: np.ndarray,
    boxes: Sequence[tuple[float, float, float, float]],
    cfg: BlurConfig,
) -> np.ndarray:
    """Return a copy of ``pixels`` (H, W, C; uint8/uint16) with every face box anonymized.

    Only colour channels are changed; alpha is kept. Pixels outside the (mask-scaled, feathered)
    face masks are left exactly as they were, except with ``learned``: its network rewrites every
    pixel and ignores ``boxes``.
    """
    if cfg.method == "learned":
        from blurbeam.edge.infer import shared_anonymizer

        return shared_anonymizer().apply(pixels)
    out = pixels.copy()
    height, width = out.shape[:2]
    cc = {1: 1, 2: 1, 3: 3, 4: 3}[out.shape[2]]
    for x, y, w, h in boxes:
        if w <= 0 or h <= 0:
            continue
        size = face_size(w, h)
        sbox = scale_box(x, y, w, h, cfg.mask_scale)
        feather_px = cfg.feather * min(sbox[2], sbox[3])
        outer = int(math.ceil(feather_px * 1.5))
        mroi = clip_rect(
            sbox[0] - outer,
            sbox[1] - outer,
            sbox[0] + sbox[2] + outer,
            sbox[1] + sbox[3] + outer,
            width,
            height,
        )
        if mroi is None:
            continue
        pad = _pad(cfg, size)
        x0, y0, x1, y1 = mroi
        rx0, ry0 = max(0, x0 - pad), max(0, y0 - pad)
        rx1, ry1 = min(width, x1 + pad), min(height, y1 + pad)
        if cfg.method == "pixelate":
            # The mosaic grid is laid over the mask box itself.
            region = out[y0:y1, x0:x1, :cc]
            filtered = _pixelate(region, block_size(cfg, size))
            rx0, ry0, rx1, ry1 = x0, y0, x1, y1
        else:
            region = out[ry0:ry1, rx0:rx1, :cc]
            if cfg.method == "gaussian":
                filtered = _gaussian(region, gaussian_sigma(cfg, size))
            elif cfg.method == "box":
                filtered = _box(region, kernel_width(cfg, size))
            elif cfg.method == "median":
                filtered = _median(region, kernel_width(cfg, size))
            elif cfg.method == "bilateral":
                filtered = _bilateral(region, gaussian_sigma(cfg, size))
            else:  # solid
                filtered = np.empty_like(region)
                fill = cfg.color[:cc] if cc == 3 else (int(round(sum(cfg.color) / 3)),)
                scale = 257 if region.dtype == np.uint16 else 1
                filtered[...] = np.array(fill, dtype=np.float64) * scale
        # The mask (feather included) is zero outside ``mroi``: only that part is composited.
        filtered = filtered[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
        mask = region_mask(sbox, mroi, cfg.mask_shape, feather_px)[:, :, None]
        target = out[y0:y1, x0:x1, :cc]
        if feather_px > 0:
            blended = mask * filtered.astype(np.float32) + (1.0 - mask) * target.astype(np.float32)
            info = np.iinfo(target.dtype)
            target[...] = np.clip(np.rint(blended), info.min, info.max).astype(target.dtype)
        else:
            np.copyto(target, filtered, where=mask >= 1.0)
    return out

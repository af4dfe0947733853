"""Attackers: try to undo the anonymization of one face before it is matched.

Every attacker knows what the product's audit record tells anyone: the method, its strength, the
face box and the mask (scale 1.3, ellipse). It works on a *window* of the anonymized image around
the face (uint8 RGB) and returns the window with the masked pixels replaced by its estimate;
pixels outside the mask are untouched by the anonymizer, so the attacker keeps them.

==================  ==========================  ==================================================
attacker            applies to                  what it does
==================  ==========================  ==================================================
none                every method                the anonymized face as it is
wiener              gaussian, box (exact PSF);  Wiener deconvolution (``skimage.restoration``) with
                    bilateral, median (approx)  the kernel ``blur.psf`` gives for this face
richardson_lucy     same as wiener              Richardson-Lucy deconvolution, same kernel
unsharp             every blur method           unsharp mask at the blur's own scale
upsample            pixelate                    block means of the known mosaic grid, bicubic
                                                upsampling (smooths the blocks away)
upsample_unsharp    pixelate                    ``upsample`` then an unsharp mask
deblur              every blur method, pixelate our trained face-deblurring network
                                                (``blurbeam.deblur``) when its weights exist
==================  ==========================  ==================================================

For median and bilateral there is no exact kernel; the deconvolution attackers use the kernel of
the same size (a box of the median's width, a Gaussian of the bilateral's spatial sigma).

Deconvolution runs at a working resolution: the window is downscaled so that the face is at most
``WORK_FACE_PX`` pixels (SFace sees faces at about 90 px in its 112 px crop, so nothing it could use
is lost), and for Gaussian blurs stronger than the anonymizer's direct limit, to the anonymizer's
own internal grid (it blurs a downscaled copy there); box and median kernels wider than
``WORK_KERNEL_PX`` are deconvolved on a grid where they are that wide (a box kernel's spectrum keeps
its side lobes there). The kernel is scaled with the window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from blurbeam import blur
from blurbeam.geometry import clip_rect, region_mask, scale_box

WORK_FACE_PX = 96.0
WIENER_BALANCE = 0.1  # tuned on WIDER faces: 0.001-0.03 ring and identify fewer faces
RL_ITERATIONS = 15  # 10 and 60 iterations identify as many faces as 30
WORK_KERNEL_PX = 24.0  # box / median kernels are deconvolved at about this width
UNSHARP_AMOUNT = 1.5
DEBLUR_CONTEXT = 1.3  # the deblur model was trained on square crops of 1.3x the face box

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class AttackContext:
    """What the attacker knows about one face: settings and where the face is in the window."""

    cfg: blur.BlurConfig
    box: Box  # the face box, in window coordinates

    @property
    def size(self) -> float:
        return blur.face_size(self.box[2], self.box[3])

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean (H, W) mask of the window pixels the anonymizer replaced."""
        h, w = shape
        sbox = scale_box(*self.box, self.cfg.mask_scale)
        m = region_mask(sbox, (0, 0, w, h), self.cfg.mask_shape, self.cfg.feather * min(sbox[2:]))
        return m > 0.0


# ---------------------------------------------------------------------------------------------
# kernels


def _odd(k: float) -> int:
    k = max(1, int(math.ceil(k)))
    return k if k % 2 == 1 else k + 1


def gaussian_psf(sigma: float) -> np.ndarray:
    k = max(3, _odd(6 * sigma))
    g = cv2.getGaussianKernel(k, max(sigma, 1e-3)).astype(np.float64)
    return g @ g.T


def box_psf(width: float) -> np.ndarray:
    """A centred box of (possibly fractional) ``width`` px, partial taps at its ends; sums to 1."""
    width = max(width, 1.0)
    n = _odd(width)
    c = (n - 1) / 2.0
    taps = np.arange(n) - c
    lo = np.clip(taps - 0.5, -width / 2, width / 2)
    hi = np.clip(taps + 0.5, -width / 2, width / 2)
    w1 = np.clip(hi - lo, 0.0, None)
    w1 /= w1.sum()
    return np.outer(w1, w1)


def work_scale(cfg: blur.BlurConfig, size: float) -> float:
    s = min(1.0, WORK_FACE_PX / size)
    if cfg.method in ("gaussian", "bilateral"):
        sigma = blur.gaussian_sigma(cfg, size)
        if sigma > blur._MAX_DIRECT_SIGMA:
            s = min(s, blur._MAX_DIRECT_SIGMA / sigma)
    elif cfg.method in ("box", "median"):
        k = blur.kernel_width(cfg, size)
        if k > WORK_KERNEL_PX:
            s = min(s, WORK_KERNEL_PX / k)
    return s


def attack_psf(cfg: blur.BlurConfig, size: float, scale: float) -> tuple[np.ndarray, bool] | None:
    """(kernel at working scale ``scale``, exact?) for a blur method; None for the others.

    At scale 1 the Gaussian and box kernels equal ``blur.psf`` for the face."""
    p = blur.face_params(cfg, size, size)
    if cfg.method in ("gaussian", "bilateral"):
        return gaussian_psf(p["sigma_px"] * scale), cfg.method == "gaussian"
    if cfg.method in ("box", "median"):
        return box_psf(p["kernel_px"] * scale), cfg.method == "box"
    return None


# ---------------------------------------------------------------------------------------------
# helpers


def _to_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / 255.0


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _resize(img: np.ndarray, w: int, h: int, interp: int) -> np.ndarray:
    out = cv2.resize(img, (max(1, w), max(1, h)), interpolation=interp)
    return out.reshape(max(1, h), max(1, w), -1) if out.ndim == 2 else out


def _at_work_scale(
    window: np.ndarray, scale: float, fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Run ``fn`` on the float window downscaled by ``scale``; return it at the window's size."""
    h, w = window.shape[:2]
    x = _to_float(window)
    if scale < 1.0:
        small = _resize(x, round(w * scale), round(h * scale), cv2.INTER_AREA)
        y = fn(small)
        return _resize(y, w, h, cv2.INTER_CUBIC)
    return fn(x)


def _padded(fn: Callable[[np.ndarray], np.ndarray], pad: int) -> Callable[[np.ndarray], np.ndarray]:
    """Mirror-pad by ``pad`` (the kernel size) before a deconvolution, which assumes periodic
    borders and needs the image at least as large as the kernel; crop after."""

    def run(img: np.ndarray) -> np.ndarray:
        if pad <= 0:
            return fn(img)
        big = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
        return fn(big)[pad:-pad, pad:-pad]

    return run


def _unsharp(img: np.ndarray, radius: float, amount: float = UNSHARP_AMOUNT) -> np.ndarray:
    radius = max(radius, 0.5)
    k = max(3, _odd(6 * radius))
    soft = cv2.GaussianBlur(img, (k, k), radius, borderType=cv2.BORDER_REFLECT)
    soft = soft.reshape(img.shape)
    return np.clip(img + amount * (img - soft), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# the attackers: (window uint8 RGB, context) -> estimate of the window, uint8 RGB


def _deconvolve(window: np.ndarray, ctx: AttackContext, which: str) -> np.ndarray:
    from skimage import restoration

    s = work_scale(ctx.cfg, ctx.size)
    got = attack_psf(ctx.cfg, ctx.size, s)
    if got is None:
        raise ValueError(f"{which} does not apply to {ctx.cfg.method}")
    kernel = got[0]
    pad = kernel.shape[0]

    def wiener(img: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                restoration.wiener(img[:, :, c], kernel, WIENER_BALANCE, clip=True)
                for c in range(img.shape[2])
            ],
            axis=2,
        )

    def rl(img: np.ndarray) -> np.ndarray:
        return restoration.richardson_lucy(
            np.clip(img, 0.0, 1.0), kernel[:, :, None], num_iter=RL_ITERATIONS, clip=True
        )

    fn = wiener if which == "wiener" else rl
    return _to_u8(np.clip(_at_work_scale(window, s, _padded(fn, pad)), 0.0, 1.0))


def attack_none(window: np.ndarray, ctx: AttackContext) -> np.ndarray:
    return window


def attack_wiener(window: np.ndarray, ctx: AttackContext) -> np.ndarray:
    return _deconvolve(window, ctx, "wiener")


def attack_richardson_lucy(window: np.ndarray, ctx: AttackContext) -> np.ndarray:
    return _deconvolve(window, ctx, "richardson_lucy")


def _blur_scale_px(cfg: blur.BlurConfig, size: float) -> float:
    """The blur's own length scale, in pixels of the full-resolution image."""
    p = blur.face_params(cfg, size, size)
    if "sigma_px" in p:
        return p["sigma_px"]
    if "kernel_px" in p:
        return p["kernel_px"] / 2.5
    if "block_px" in p:
        return p["block_px"] / 2.0
    return 1.0


def attack_unsharp(window: np.ndarray, ctx: AttackContext) -> np.ndarray:
    s = min(1.0, WORK_FACE_PX / ctx.size)
    radius = _blur_scale_px(ctx.cfg, ctx.size) * s
    return _to_u8(_at_work_scale(window, s, lambda x: _unsharp(x, radius)))


def _mosaic_rect(window_shape: tuple[int, int], ctx: AttackContext) -> tuple[int, int, int, int]:
    h, w = window_shape
    sbox = scale_box(*ctx.box, ctx.cfg.mask_scale)
    rect = clip_rect(sbox[0], sbox[1], sbox[0] + sbox[2], sbox[1] + sbox[3], w, h)
    if rect is None:
        raise ValueError("the face's mask is outside the window")
    return rect


def attack_upsample(window: np.ndarray, ctx: AttackContext, sharpen: bool = False) -> np.ndarray:
    """Recover the block means on the anonymizer's own grid and upsample them smoothly."""
    x0, y0, x1, y1 = _mosaic_rect(window.shape[:2], ctx)
    region = _to_float(window[y0:y1, x0:x1])
    rh, rw = region.shape[:2]
    block = blur.block_size(ctx.cfg, ctx.size)
    nx, ny = max(1, round(rw / block)), max(1, round(rh / block))
    means = _resize(region, nx, ny, cv2.INTER_AREA)
    up = _resize(means, rw, rh, cv2.INTER_CUBIC)
    if sharpen:
        up = _unsharp(up, block / 2.0)
    out = _to_float(window)
    out[y0:y1, x0:x1] = np.clip(up, 0.0, 1.0)
    return _to_u8(out)


def attack_upsample_unsharp(window: np.ndarray, ctx: AttackContext) -> np.ndarray:
    return attack_upsample(window, ctx, sharpen=True)


class DeblurAttacker:
    """Our face-deblurring network on the 1.3x square crop it was trained on (128x128)."""

    def __init__(self, restorer) -> None:
        self.restorer = restorer

    def __call__(self, window: np.ndarray, ctx: AttackContext) -> np.ndarray:
        x, y, w, h = ctx.box
        side = DEBLUR_CONTEXT * max(w, h)
        cx, cy = x + w / 2.0, y + h / 2.0
        x0, y0 = int(math.floor(cx - side / 2)), int(math.floor(cy - side / 2))
        n = max(8, int(math.ceil(side)))
        wh, ww = window.shape[:2]
        pad = max(0, -x0, -y0, x0 + n - ww, y0 + n - wh)
        src = window
        if pad:
            src = cv2.copyMakeBorder(window, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        crop = src[y0 + pad : y0 + pad + n, x0 + pad : x0 + pad + n]
        size = int(getattr(self.restorer, "size", 128))
        small = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        restored = np.asarray(self.restorer.restore(small))
        back = cv2.resize(restored, (n, n), interpolation=cv2.INTER_CUBIC)
        out = src.copy()
        out[y0 + pad : y0 + pad + n, x0 + pad : x0 + pad + n] = back
        return out[pad : pad + wh, pad : pad + ww] if pad else out


AttackFn = Callable[[np.ndarray, AttackContext], np.ndarray]

_BLURS = ("gaussian", "box", "median", "bilateral")
APPLIES: dict[str, tuple[str, ...]] = {
    "none": ("gaussian", "box", "median", "bilateral", "pixelate", "solid"),
    "wiener": _BLURS,
    "richardson_lucy": _BLURS,
    "unsharp": _BLURS,
    "upsample": ("pixelate",),
    "upsample_unsharp": ("pixelate",),
    "deblur": (*_BLURS, "pixelate"),
}
ATTACKERS: tuple[str, ...] = tuple(APPLIES)
_FUNCTIONS: dict[str, AttackFn] = {
    "none": attack_none,
    "wiener": attack_wiener,
    "richardson_lucy": attack_richardson_lucy,
    "unsharp": attack_unsharp,
    "upsample": attack_upsample,
    "upsample_unsharp": attack_upsample_unsharp,
}


def attackers_for(method: str, deblur: bool = False) -> list[str]:
    """The attackers that apply to ``method`` (``deblur`` only when the model is available)."""
    return [a for a in ATTACKERS if method in APPLIES[a] and (a != "deblur" or deblur)]


def load_deblur() -> DeblurAttacker | None:
    """The deblur attacker, or None when the model or its weights are not available."""
    try:
        from blurbeam.deblur.model import Restorer, packaged_weights

        weights, _ = packaged_weights()
        if not Path(weights).is_file():
            return None
        return DeblurAttacker(Restorer())
    except (ImportError, FileNotFoundError, OSError, AttributeError):
        return None


def run_attack(
    name: str, window: np.ndarray, ctx: AttackContext, deblur: AttackFn | None = None
) -> np.ndarray:
    """The attacker's estimate of the window; only pixels under the mask change."""
    if name not in APPLIES:
        raise ValueError(f"unknown attacker {name!r}; choose from {', '.join(ATTACKERS)}")
    if ctx.cfg.method not in APPLIES[name]:
        raise ValueError(f"attacker {name} does not apply to method {ctx.cfg.method}")
    if name == "none":
        return window
    if name == "deblur":
        if deblur is None:
            raise ValueError("the deblur attacker needs the deblur model")
        est = deblur(window, ctx)
    else:
        est = _FUNCTIONS[name](window, ctx)
    mask = ctx.mask(window.shape[:2])
    return np.where(mask[:, :, None], est, window)

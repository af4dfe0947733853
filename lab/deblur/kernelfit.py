"""What degradation turned a clean image into its blurry pair? (NumPy, scikit-image; no Beam, no model.)

``fit_linear_blur`` explains each channel of the blurry image as a linear, shift-invariant blur
of the same channel of the clean image plus an offset, by least squares over every pixel whose
whole neighbourhood lies inside the image:

    blurry[y, x] = sum_(dy, dx) w[dy, dx] * clean[y + dy, x + dx] + offset

The weights' sum is the contrast gain (1 for a plain blur; above 1 when the blurred image was
stretched afterwards, e.g. min-max normalised); the weights divided by it are the blur kernel.
How well the fit reproduces the blurry image (its PSNR) says whether "a blur plus a contrast
change" is the whole story. With the kernel known, ``oracle_wiener`` undoes the contrast change
and deconvolves: an upper reference for classical deconvolution given the true degradation,
not a method anyone could run without the clean image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blurbeam.lab.deblur.metrics import psnr


@dataclass(frozen=True)
class FittedBlur:
    kernels: np.ndarray  # (3, K, K): per channel, correlation weights / gain (sum 1)
    gain: np.ndarray  # (3,)
    offset: np.ndarray  # (3,), on the 0-1 scale
    fit_psnr: float  # PSNR (dB) of the fitted model against the blurry image, interior pixels

    def extent(self, rel: float = 0.1) -> int:
        """Larger side (px) of the box holding the mean kernel's weights above ``rel`` x its peak."""
        k = self.kernels.mean(axis=0)
        ys, xs = np.nonzero(k > rel * k.max())
        return int(max(np.ptp(ys), np.ptp(xs)) + 1)

    def centre(self) -> tuple[float, float]:
        """(down, right) px from the window's centre to the mean kernel's centre of weight:
        how far the blurry image moved up and to the left of its clean image."""
        k = self.kernels.mean(axis=0)
        ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
        c = (k.shape[0] - 1) / 2
        return float((k * ys).sum() / k.sum() - c), float((k * xs).sum() / k.sum() - c)


def _patches(ch: np.ndarray, k: int) -> np.ndarray:
    """(N, k*k): every k x k neighbourhood lying wholly inside ``ch``, row-major."""
    win = np.lib.stride_tricks.sliding_window_view(np.asarray(ch, np.float64), (k, k))
    return win.reshape(-1, k * k)


def fit_linear_blur(clean: np.ndarray, blurry: np.ndarray, size: int = 15) -> FittedBlur:
    """Least-squares blur kernel (``size`` x ``size``, odd) plus gain and offset, per channel.
    ``clean`` and ``blurry``: float RGB in [0, 1], the same shape."""
    if size % 2 == 0:
        raise ValueError("kernel size must be odd")
    if clean.shape != blurry.shape or clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"need two RGB images of one shape, got {clean.shape} and {blurry.shape}")
    r = size // 2
    h, w = clean.shape[0] - 2 * r, clean.shape[1] - 2 * r
    if h * w <= size * size + 1:
        raise ValueError(f"{clean.shape[:2]} is too small to fit a {size}x{size} kernel")
    kernels, gains, offsets, fitted = [], [], [], []
    for c in range(3):
        a = _patches(clean[..., c], size)
        a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
        y = np.asarray(blurry[r : r + h, r : r + w, c], np.float64).ravel()
        x, *_ = np.linalg.lstsq(a, y, rcond=None)
        g = float(x[:-1].sum())
        kernels.append(x[:-1].reshape(size, size) / g)
        gains.append(g)
        offsets.append(float(x[-1]))
        fitted.append(a @ x)
    pred = np.clip(np.stack(fitted, axis=-1), 0, 1)
    return FittedBlur(
        kernels=np.stack(kernels),
        gain=np.asarray(gains),
        offset=np.asarray(offsets),
        fit_psnr=psnr(np.asarray(blurry[r : r + h, r : r + w], np.float64).reshape(-1, 3), pred),
    )


def predict(clean: np.ndarray, fit: FittedBlur, boundary: str = "wrap") -> np.ndarray:
    """The fitted degradation applied to the whole of ``clean``, the image extended past its
    edges by ``boundary`` (numpy.pad mode: "wrap" is circular convolution, as an FFT blur
    makes; "reflect" or "edge" is what a blur of a wider scene, cropped, looks more like)."""
    k = fit.kernels.shape[1]
    r = k // 2
    h, w = clean.shape[:2]
    out = []
    for c in range(3):
        p = np.pad(np.asarray(clean[..., c], np.float64), r, mode=boundary)
        out.append(_patches(p, k) @ fit.kernels[c].ravel() * fit.gain[c] + fit.offset[c])
    return np.stack(out, axis=-1).reshape(h, w, 3)


def border_psnr(clean: np.ndarray, blurry: np.ndarray, fit: FittedBlur, boundary: str) -> float:
    """PSNR of ``predict`` against the blurry image over the border band the interior fit left
    out: which boundary rule made the pair."""
    r = fit.kernels.shape[1] // 2
    band = np.ones(clean.shape[:2], bool)
    band[r:-r, r:-r] = False
    pred = np.clip(predict(clean, fit, boundary), 0, 1)
    return psnr(np.asarray(blurry, np.float64)[band], pred[band])


def oracle_wiener(
    blurry: np.ndarray, fit: FittedBlur, balance: float, boundary: str = "wrap"
) -> np.ndarray:
    """Undo the fitted contrast change, then Wiener-deconvolve each channel with its fitted
    kernel. ``boundary`` "wrap" deconvolves circularly (scikit-image's Wiener is an FFT
    filter); another numpy.pad mode extends the image by that rule first. Uses what only the
    clean image can tell: a reference, not a method."""
    from skimage.restoration import wiener

    k = fit.kernels.shape[1]
    out = []
    for c in range(3):
        ch = (np.asarray(blurry[..., c], np.float64) - fit.offset[c]) / fit.gain[c]
        # the fit is a correlation; scikit-image's PSF is convolved, hence the flip
        psf = fit.kernels[c][::-1, ::-1]
        if boundary == "wrap":
            out.append(wiener(ch, psf, balance, clip=False))
        else:
            p = np.pad(ch, k, mode=boundary)
            out.append(wiener(p, psf, balance, clip=False)[k:-k, k:-k])
    return np.stack(out, axis=-1)

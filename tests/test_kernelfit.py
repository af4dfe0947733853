"""Fitting the degradation behind a blurry/clean pair (blurbeam.lab.deblur.kernelfit)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from blurbeam.lab.deblur import degrade
from blurbeam.lab.deblur.kernelfit import border_psnr, fit_linear_blur, oracle_wiener
from blurbeam.lab.deblur.metrics import psnr


@pytest.fixture(scope="module")
def face64(astronaut) -> np.ndarray:
    face = astronaut[30:230, 140:340]  # the astronaut's face and some background
    return (
        cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)[..., :3].astype(np.float32) / 255
    )


@pytest.fixture(scope="module")
def shake() -> np.ndarray:
    return degrade.shake_kernel(np.random.default_rng(7), 9.0)  # 11 x 11


def _correlate(img: np.ndarray, kernel: np.ndarray, boundary: str) -> np.ndarray:
    r = kernel.shape[0] // 2
    p = np.pad(img, ((r, r), (r, r), (0, 0)), mode=boundary)
    out = np.zeros_like(img, dtype=np.float64)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * p[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return out


def _degrade(face, kernel, boundary, gain=1.2, offset=-0.08):
    return degrade.quantize(np.clip(_correlate(face, kernel, boundary) * gain + offset, 0, 1))


@pytest.mark.parametrize("boundary", ["wrap", "reflect"])
def test_fit_recovers_the_kernel_the_stretch_and_the_boundary(face64, shake, boundary):
    blurry = _degrade(face64, shake, boundary)
    fit = fit_linear_blur(face64, blurry, size=15)
    assert fit.fit_psnr > 40
    np.testing.assert_allclose(fit.gain, 1.2, atol=0.03)
    np.testing.assert_allclose(fit.offset, -0.08, atol=0.02)
    truth = np.pad(shake, 2)  # 11 x 11 centred in 15 x 15
    for k in fit.kernels:  # 8-bit rounding leaves a little noise on every one of the 225 taps
        assert np.corrcoef(k.ravel(), truth.ravel())[0, 1] > 0.97
        assert np.abs(k - truth).max() < 0.2 * truth.max()
    assert fit.extent() == pytest.approx(9, abs=2)
    other = "reflect" if boundary == "wrap" else "wrap"
    assert border_psnr(face64, blurry, fit, boundary) > border_psnr(face64, blurry, fit, other) + 5


def test_a_blurred_image_is_not_fitted_by_a_smaller_kernel(face64):
    wide = degrade.motion_kernel(13, 30)
    blurry = _degrade(face64, wide, "reflect", gain=1.0, offset=0.0)
    assert (
        fit_linear_blur(face64, blurry, size=3).fit_psnr
        < fit_linear_blur(face64, blurry, size=15).fit_psnr - 8
    )


def test_oracle_wiener_undoes_the_fitted_degradation(face64, shake):
    blurry = _degrade(face64, shake, "wrap")
    fit = fit_linear_blur(face64, blurry, size=15)
    restored = degrade.quantize(np.clip(oracle_wiener(blurry, fit, 0.003), 0, 1))
    assert psnr(face64, restored) > psnr(face64, blurry) + 5


def test_bad_arguments(face64):
    with pytest.raises(ValueError, match="odd"):
        fit_linear_blur(face64, face64, size=4)
    with pytest.raises(ValueError, match="one shape"):
        fit_linear_blur(face64, face64[:32], size=5)
    with pytest.raises(ValueError, match="too small"):
        fit_linear_blur(face64[:16, :16], face64[:16, :16], size=15)


@pytest.mark.shared
def test_the_notebook_pairs_are_a_circular_blur_and_a_stretch(shared):
    """What `blurbeam evaluate-deblur` reports about the original notebook's 10 pairs: each
    is its clean image blurred by one kernel with circular (FFT) convolution and stretched in
    contrast, and moved one pixel; a 15x15 fit explains every pair, the border band only with
    wrap-around."""
    from blurbeam.lab.deblur.crops import read_rgb

    folder = shared / "deblur" / "seed_pairs"
    names = sorted(p.name for p in (folder / "clean").iterdir())
    assert len(names) == 10
    for n in names:
        c = read_rgb(folder / "clean" / n).astype(np.float32) / 255
        b = read_rgb(folder / "blurry" / n).astype(np.float32) / 255
        fit = fit_linear_blur(c, b)
        assert fit.fit_psnr > 40, n
        assert border_psnr(c, b, fit, "wrap") > border_psnr(c, b, fit, "reflect") + 10, n
        assert fit.gain.mean() >= 0.99 and fit.extent() >= 9, n
        # and one pixel up and to the left (degrade.CircularDegradation.shift)
        np.testing.assert_allclose(fit.centre(), (1.0, 1.0), atol=0.15, err_msg=n)

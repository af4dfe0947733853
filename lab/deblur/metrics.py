"""Image-quality metrics of the deblurring benchmark and analysis: scikit-image's PSNR and SSIM
on float images in [0, 1] (any matching shapes for PSNR; RGB images for SSIM)."""

from __future__ import annotations

import numpy as np


def psnr(clean: np.ndarray, out: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(clean, out, data_range=1.0))


def ssim(clean: np.ndarray, out: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(clean, out, channel_axis=2, data_range=1.0))

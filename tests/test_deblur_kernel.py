"""The deblurring network's blur-kernel estimation: the kernel windows training supervises it
with, the blur statistics it reads, the Wiener deconvolution it feeds the U-Net, and (with the
shipped weights and shared data) whether its estimates point the way the blur went."""

from __future__ import annotations

import numpy as np
import pytest

from blurbeam.deblur.kernel import describe_kernel, fft_flops, fit_kernel
from blurbeam.lab.deblur import degrade
from blurbeam.lab.deblur.metrics import psnr


def test_fit_kernel_centres_crops_and_renormalises():
    k = degrade.motion_kernel(9, 0)  # 11 x 11, one row
    w = fit_kernel(k, 27)
    assert w.shape == (27, 27) and abs(float(w.sum()) - 1.0) < 1e-6
    ys, xs = np.nonzero(w > 1e-4)
    assert set(ys) == {13} and xs.min() + xs.max() == 26  # centred on the window's centre
    ident = fit_kernel(None, 27)
    assert ident[13, 13] == 1.0 and ident.sum() == 1.0
    big = degrade.soften(degrade.motion_kernel(29, 45), 1.5)  # larger than the window
    cropped = fit_kernel(big, 27)
    assert cropped.shape == (27, 27) and abs(float(cropped.sum()) - 1.0) < 1e-6
    assert cropped[13, 13] == cropped.max() or cropped[13, 13] > 0.5 * cropped.max()
    with pytest.raises(ValueError, match="odd"):
        fit_kernel(np.ones((4, 4), np.float32), 27)


@pytest.mark.parametrize("length,angle", [(5, 0), (9, 30), (13, 90), (17, 135), (21, 170)])
def test_describe_kernel_reads_length_and_direction(length, angle):
    got_len, got_angle = describe_kernel(degrade.motion_kernel(length, angle))
    assert abs(got_len - length) <= 1.0, got_len
    d = abs(got_angle - angle) % 180
    assert min(d, 180 - d) < 2.0, got_angle
    point_len, _ = describe_kernel(fit_kernel(None, 27))
    assert point_len == 1.0


def test_fft_flops_grow_with_the_image():
    small, large = fft_flops(64, 64, 27, 2), fft_flops(128, 128, 27, 2)
    assert 0 < small < large < 100_000_000


def _face_like(rng: np.random.Generator, n: int = 128) -> np.ndarray:
    """A smooth random image with some edges (a stand-in face: no shared data needed)."""
    import cv2

    base = rng.random((n // 8, n // 8, 3)).astype(np.float32)
    img = cv2.resize(base, (n, n), interpolation=cv2.INTER_NEAREST)  # blocks: sharp edges
    img = 0.7 * img + 0.3 * cv2.GaussianBlur(rng.random((n, n, 3)).astype(np.float32), (0, 0), 1)
    return np.clip(img, 0, 1).astype(np.float32)


def test_wiener_with_the_true_kernel_undoes_the_blur_where_it_should():
    _, _, wiener = _layers()
    from blurbeam.deblur.kernel import LUMA

    rng = np.random.default_rng(0)
    clean = _face_like(rng)
    k = degrade.motion_kernel(11, 30)
    blurry = degrade.blur(clean, k)
    luma = clean @ np.asarray(LUMA, np.float32)
    kw = fit_kernel(k, 27)[None]
    out = wiener((0.01,))([blurry[None], kw]).numpy()
    assert out.shape == (1, 128, 128, 1)
    inner = np.s_[16:-16, 16:-16]
    before = psnr(luma[inner], (blurry @ np.asarray(LUMA, np.float32))[inner])
    after = psnr(luma[inner], np.clip(out[0, ..., 0][inner], 0, 1))
    assert after > before + 4, (before, after)  # measured: 23.3 -> 28.5 dB
    # the kernel shifted by a pixel either way deconvolves worse: the window is centred right
    for shift in (1, -1):
        worse = wiener((0.01,))([blurry[None], np.roll(kw, shift, axis=2)]).numpy()[0, ..., 0]
        assert psnr(luma[inner], np.clip(worse[inner], 0, 1)) < after - 2
    # the identity kernel with a tiny weight returns the luma itself; two weights, two channels
    two = wiener((1e-6, 0.1))([clean[None], fit_kernel(None, 27)[None]]).numpy()
    assert two.shape == (1, 128, 128, 2)
    assert np.abs(two[0, ..., 0] - luma).max() < 1e-3


def test_wiener_wrap_undoes_a_circular_blur_to_the_border():
    import cv2

    _, _, wiener = _layers()
    from blurbeam.deblur.kernel import LUMA

    clean = _face_like(np.random.default_rng(4), 64)
    k = degrade.motion_kernel(11, 60)
    circular = cv2.filter2D(clean, -1, k[::-1, ::-1].copy(), borderType=cv2.BORDER_WRAP)
    luma = clean @ np.asarray(LUMA, np.float32)
    kw = fit_kernel(k, 27)[None]
    wrap = wiener((1e-4,), "wrap")([circular[None], kw]).numpy()[0, ..., 0]
    reflect = wiener((1e-4,), "reflect")([circular[None], kw]).numpy()[0, ..., 0]
    band = np.ones((64, 64), bool)
    band[8:-8, 8:-8] = False  # the border band, where the two rules differ
    by_wrap = psnr(luma[band], np.clip(wrap[band], 0, 1))
    by_reflect = psnr(luma[band], np.clip(reflect[band], 0, 1))
    assert by_wrap > 33 and by_reflect < by_wrap - 6, (by_wrap, by_reflect)  # 37.0 measured
    with pytest.raises(ValueError, match="boundary"):
        wiener((0.01,), "zero")


def _layers():
    from blurbeam.deblur.kernel import layers

    return layers()


def test_blur_features_see_the_direction_of_the_blur():
    features, _, _ = _layers()
    rng = np.random.default_rng(1)
    clean = _face_like(rng)
    f = features(27)
    sharp = f(clean[None]).numpy()[0]
    assert sharp.shape == (53, 53, 5)
    assert np.allclose(sharp[26, 26, :4], 1.0, atol=1e-4)  # autocorrelations: 1 at zero lag
    for angle, along, across in ((0, (26, 31), (31, 26)), (90, (31, 26), (26, 31))):
        blurred = degrade.blur(clean, degrade.motion_kernel(15, angle))
        got = f(blurred[None]).numpy()[0]
        # the horizontal/vertical difference autocorrelation stays high along the blur
        ac = got[..., 0] + got[..., 1]
        assert ac[along] > ac[across] + 0.2, (angle, ac[along], ac[across])
        assert ac[along] > (sharp[..., 0] + sharp[..., 1])[along] + 0.2


def test_the_network_estimates_a_kernel_and_stays_in_budget():
    from blurbeam.deblur.model import UNetConfig, build_unet
    from blurbeam.lab.deblur.baseline import conv_macs

    cfg = UNetConfig()
    assert cfg.kernel_size == 27
    net = build_unet(cfg)
    out, k = net(np.random.default_rng(0).random((2, 96, 64, 3), dtype=np.float32))
    assert out.shape == (2, 96, 64, 3) and k.shape == (2, 27, 27)
    k = k.numpy()
    assert np.all(k >= 0) and np.allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-5)
    macs = conv_macs(net, 128, 128)
    assert macs + fft_flops(128, 128, cfg.kernel_size, len(cfg.wiener_lams)) / 2 <= 1e9
    assert net.count_params() <= 500_000
    old = build_unet(UNetConfig.from_dict({"widths": [16, 32, 64, 96],
                                           "enc_blocks": [0, 1, 1, 1], "dec_blocks": 1}))  # fmt: skip
    assert old.count_params() == 443_651  # a config saved before kernel estimation: none


def test_batches_carry_the_kernel_that_blurred_each_sample():
    from blurbeam.lab.deblur.train import BatchMaker, make_batch

    stack = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    plain = dict(noise_max=0.0, p_jpeg=0.0, p_lowres=0.0)
    motion = degrade.TrainDegradation(p_motion=1.0, p_shake=0, p_gauss=0, p_motion_gauss=0, **plain)
    x, y, k = make_batch(stack, np.random.default_rng(3), motion, 3, 64, kernel_size=27)
    assert k.shape == (3, 27, 27) and np.allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-5)
    # each sample is its clean patch blurred by its own kernel (the whole 64 px image here)
    for i in range(3):
        again = degrade.quantize(degrade.blur(y[i], k[i]))
        assert psnr(x[i], again) > 45
    sharp = degrade.TrainDegradation(p_motion=0, p_shake=0, p_gauss=0, p_motion_gauss=0, **plain)
    bm = BatchMaker(stack, np.random.default_rng(5), batch=2, patch=48, deg=sharp, kernel_size=27)
    try:
        _, _, ks = bm.next()
    finally:
        bm.close()
    assert np.array_equal(ks, np.stack([fit_kernel(None, 27)] * 2))
    assert make_batch(stack, np.random.default_rng(3), motion, 2, 48)[2] is None


def test_the_first_weights_network_estimates_no_kernel(tmp_path):
    import json

    from blurbeam.deblur.model import Restorer, UNetConfig, build_unet

    cfg = UNetConfig(kernel_size=0)
    build_unet(cfg).save_weights(str(tmp_path / "old.weights.h5"))
    (tmp_path / "old.json").write_text(json.dumps({"model": cfg.to_dict()}))
    r = Restorer(tmp_path / "old.weights.h5")  # its config is read from beside the weights
    assert r.config.kernel_size == 0 and r.restore(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="does not estimate"):
        r.estimate_kernel(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.shared
def test_shipped_estimates_measure_the_blur_that_was_applied(shared):
    """On 20 held-out real faces blurred by straight motion of 9 or 15 px at seeded angles, the
    shipped network's kernel estimate lies along the blur (median angle error under 5 degrees)
    and measures its length (median error under 1 px; 0.9 degrees and 0.2 px when shipped)."""
    from blurbeam.deblur.model import Restorer
    from blurbeam.lab.deblur.crops import list_images, load_stack, split

    r = Restorer()
    assert r.estimates_kernel, "the shipped network should estimate the blur kernel"
    _, held_out = split(list_images(shared / "deblur" / "faces128_train"), seed=0)
    clean = load_stack(held_out[:20]).astype(np.float32) / 255.0
    rng = np.random.default_rng(321)
    angle_err, length_err = [], []
    for i, c in enumerate(clean):
        length, angle = (9, 15)[i % 2], rng.uniform(0, 180)
        k = degrade.motion_kernel(length, angle)
        b = degrade.quantize(degrade.add_noise(degrade.blur(c, k), 2 / 255, rng))
        true_len, _ = describe_kernel(k)
        est_len, est_angle = describe_kernel(r.estimate_kernel(b))
        d = abs(est_angle - angle) % 180
        angle_err.append(min(d, 180 - d))
        length_err.append(abs(est_len - true_len))
    assert np.median(angle_err) < 5, angle_err
    assert np.median(length_err) < 1, length_err

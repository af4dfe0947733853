"""Face deblurring: degradations, the network's size, the shipped weights, face restoration."""

from __future__ import annotations

import numpy as np
import pytest

from blurbeam.deblur.apply import (
    crop_square,
    feather_window,
    restore_faces,
    restore_whole,
    sharpness,
)
from blurbeam.lab.deblur import degrade

# ---- degradations (no TensorFlow) ----


@pytest.mark.parametrize("length,angle", [(5, 0), (9, 30), (15, 90), (21, 135)])
def test_motion_kernel_is_a_normalised_line(length, angle):
    k = degrade.motion_kernel(length, angle)
    assert k.dtype == np.float32 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert abs(float(k.sum()) - 1.0) < 1e-5 and k.min() >= 0
    ys, xs = np.nonzero(k > 1e-3)
    extent = np.hypot(xs.max() - xs.min(), ys.max() - ys.min()) + 1  # along the line
    assert length - 2 <= extent <= length + 2


def test_shake_and_gaussian_kernels():
    rng = np.random.default_rng(0)
    for ext in (5, 13, 21):
        k = degrade.shake_kernel(rng, ext)
        assert abs(float(k.sum()) - 1.0) < 1e-5 and k.min() >= 0 and k.shape[0] <= ext + 3
    g = degrade.gaussian_kernel(2.0)
    assert abs(float(g.sum()) - 1.0) < 1e-5 and g.shape == (13, 13)


def test_degradations_are_seeded():
    img = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
    a = degrade.TrainDegradation()(img, np.random.default_rng(7))
    b = degrade.TrainDegradation()(img, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.shape == img.shape and a.dtype == np.float32
    x1, k1 = degrade.eval_motion(img, np.random.default_rng(3))
    x2, k2 = degrade.eval_motion(img, np.random.default_rng(3))
    assert np.array_equal(x1, x2) and np.array_equal(k1, k2)
    assert np.all(x1 * 255 == np.rint(x1 * 255))  # 8-bit values


def test_softened_motion_kernel_is_a_thicker_trail():
    m = degrade.motion_kernel(11, 0)  # horizontal: one row thick
    s = degrade.soften(m, 1.0)
    assert abs(float(s.sum()) - 1.0) < 1e-5 and s.min() >= 0 and s.shape[0] > m.shape[0]
    rows = lambda k: int(np.count_nonzero(k.sum(axis=1) > 0.01))  # noqa: E731
    assert rows(m) <= 2 and rows(s) >= 4


_NO_BLUR = dict(p_motion=0.0, p_shake=0.0, p_gauss=0.0, p_motion_gauss=0.0)


def test_training_mix_leaves_an_undegraded_face_alone_and_lowres_loses_detail():
    img = degrade.quantize(np.random.default_rng(2).random((64, 64, 3), dtype=np.float32))
    plain = degrade.TrainDegradation(**_NO_BLUR, noise_max=0.0, p_jpeg=0.0, p_lowres=0.0)
    assert np.array_equal(plain(img, np.random.default_rng(0)), img)
    low = degrade.TrainDegradation(**_NO_BLUR, noise_max=0.0, p_jpeg=0.0, p_lowres=1.0)
    out = low(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.float32
    assert sharpness(out, 64) < 0.5 * sharpness(img, 64)  # half size and back: detail is gone


def test_training_mix_covers_every_kernel_family():
    deg = degrade.TrainDegradation()
    rng = np.random.default_rng(0)
    kinds = {"none": 0, "kernel": 0}
    for _ in range(200):
        k = deg.kernel(rng)
        kinds["none" if k is None else "kernel"] += 1
        if k is not None:
            assert abs(float(k.sum()) - 1.0) < 1e-4 and k.min() >= 0
    assert 10 <= kinds["none"] <= 60  # about 15 % sharp faces


def test_named_mixes_shift_weight_to_motion_blur_and_bad_names_are_refused():
    from blurbeam.lab.deblur.train import TrainConfig

    assert set(degrade.MIXES) >= {"default", "motion"}
    assert degrade.MIXES["default"] == degrade.TrainDegradation()

    def shares(deg, n=2000):
        rng = np.random.default_rng(0)
        sharp = sum(deg.kernel(rng) is None for _ in range(n)) / n
        rng = np.random.default_rng(0)
        straight = 0
        for _ in range(n):  # a straight motion kernel has its mass on one line: few cells
            k = deg.kernel(rng)
            straight += k is not None and np.count_nonzero(k > 1e-3) <= 2.5 * k.shape[0]
        return sharp, straight / n

    d_sharp, d_straight = shares(degrade.MIXES["default"])
    m_sharp, m_straight = shares(degrade.MIXES["motion"])
    assert m_straight > d_straight + 0.08 and 0.03 < m_sharp < d_sharp
    with pytest.raises(ValueError, match="unknown mix 'blurry'"):
        TrainConfig(data="d", out="o", mix="blurry")


def test_batch_maker_applies_the_mix_it_is_given():
    from blurbeam.lab.deblur.train import BatchMaker

    stack = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    none = degrade.TrainDegradation(**_NO_BLUR, noise_max=0.0, p_jpeg=0.0, p_lowres=0.0)
    bm = BatchMaker(stack, np.random.default_rng(5), batch=3, patch=48, deg=none)
    try:
        x, y, k = bm.next()
    finally:
        bm.close()
    assert x.shape == y.shape == (3, 48, 48, 3) and k is None
    assert np.abs(x - y).max() <= 0.5 / 255 + 1e-6  # nothing degraded: only rounded to 8 bits


def test_lr_schedule_spans_the_budget():
    from blurbeam.lab.deblur.train import lr_at

    assert lr_at(1e-3, 0, 100, 0.0) == pytest.approx(1e-5)  # warm-up
    assert lr_at(1e-3, 500, 100, 0.0) == pytest.approx(1e-3)
    mid, end = lr_at(1e-3, 500, 100, 0.5), lr_at(1e-3, 500, 100, 1.0)
    assert mid == pytest.approx(0.51e-3) and end == pytest.approx(2e-5)
    assert lr_at(1e-3, 500, 100, 3.0) == end  # past the budget: stays at the floor


def test_batch_maker_is_seeded_and_reports_failures():
    from blurbeam.lab.deblur.train import BatchMaker

    stack = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    runs = []
    for _ in range(2):
        bm = BatchMaker(stack, np.random.default_rng(5), batch=3, patch=48)
        try:
            runs.append([bm.next() for _ in range(3)])
        finally:
            bm.close()
    for (xa, ya, _), (xb, yb, _) in zip(runs[0], runs[1], strict=True):
        assert xa.shape == ya.shape == (3, 48, 48, 3)
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    bad = BatchMaker(stack, np.random.default_rng(5), batch=3, patch=80)  # patch > image
    try:
        with pytest.raises(RuntimeError, match="batch synthesis"):
            bad.next()
    finally:
        bad.close()


def test_reusing_the_original_rows_needs_the_same_protocol(tmp_path):
    import json

    from blurbeam.lab.deblur.benchmark import load_reused_original, protocol

    row = {"method": "original", "n": 165, "psnr": 21.0, "ssim": 0.6, "note": "w.h5"}
    f = tmp_path / "results.json"
    f.write_text(json.dumps({"held_out": {"original": row}, "protocol": protocol(0, 0.1, 165),
                             "seed_pairs": {"original": dict(row, n=10)}}))  # fmt: skip
    got = load_reused_original(f, protocol(0, 0.1, 165))
    assert got["held_out"]["psnr"] == 21.0 and "not re-run" in got["held_out"]["note"]
    assert got["seed_pairs"]["n"] == 10
    with pytest.raises(ValueError, match="protocol"):
        load_reused_original(f, protocol(0, 0.1, 20))
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="no original-network results"):
        load_reused_original(tmp_path / "empty.json", protocol(0, 0.1, 165))


# ---- face restoration geometry (a stand-in restorer, no TensorFlow) ----


class _Brighten:
    """A fake restorer that adds 0.1 everywhere: shows exactly where corrections land."""

    size = 32

    def restore(self, img):
        assert img.shape == (32, 32, 3)
        return np.clip(img + 0.1, 0, 1)


def test_feather_window():
    w = feather_window(40, 0.2)
    assert w.shape == (40, 40) and w[20, 20] == 1.0 and w[0, 0] < 0.01 and w.max() <= 1.0
    assert np.all(feather_window(10, 0.0) == 1.0)


def test_restore_faces_changes_only_the_crop():
    img = np.full((100, 120, 3), 100, np.uint8)
    out, res = restore_faces(img, [(40, 30, 20, 20)], _Brighten(), margin=1.5, feather=0.2)
    x0, y0, side = crop_square((40, 30, 20, 20), 1.5, 120, 100)
    assert (x0, y0, side) == (35, 25, 30) and len(res) == 1
    changed = np.any(out != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= y0 and ys.max() < y0 + side and xs.min() >= x0 and xs.max() < x0 + side
    assert int(out[40, 50, 0]) == 100 + round(0.1 * 255)  # the centre gets the full correction
    assert out.dtype == np.uint8 and out.shape == img.shape


def test_restore_faces_at_the_border_alpha_grey_16bit():
    rgba = np.full((50, 50, 4), 80, np.uint8)
    rgba[..., 3] = 7
    out, _ = restore_faces(rgba, [(-5, -5, 20, 20)], _Brighten(), feather=0.0)
    assert np.all(out[..., 3] == 7) and out[0, 0, 0] > 80 and out[49, 49, 0] == 80
    grey = np.full((40, 40, 1), 30000, np.uint16)
    out, _ = restore_faces(grey, [(10, 10, 20, 20)], _Brighten(), feather=0.0)
    assert out.dtype == np.uint16 and out.shape == grey.shape and out[20, 20, 0] > 30000


def test_restore_whole_resizes_the_correction():
    img = np.full((48, 64, 3), 0.5, np.float32)
    out, res = restore_whole((img * 255).astype(np.uint8), _Brighten())
    assert out.shape == (48, 64, 3) and abs(int(out[24, 32, 0]) - round(0.6 * 255)) <= 1
    assert res.box == (0.0, 0.0, 64.0, 48.0)


def test_sharpness_orders_blur():
    rng = np.random.default_rng(0)
    img = rng.random((128, 128, 3), dtype=np.float32)
    soft = degrade.blur(img, degrade.gaussian_kernel(2.0))
    assert sharpness(img) > 10 * sharpness(soft)


# ---- the network and the shipped weights (TensorFlow) ----


@pytest.fixture(scope="module")
def restorer():
    from blurbeam.deblur.model import Restorer

    return Restorer()


def test_network_budget():
    from blurbeam.deblur.model import build_unet
    from blurbeam.lab.deblur.baseline import conv_macs

    net = build_unet()
    assert net.count_params() <= 500_000
    assert conv_macs(net, 128, 128) <= 1_000_000_000


@pytest.mark.parametrize("ema", [0.999, 0.0], ids=["ema", "no-ema"])
def test_a_short_training_run_leaves_loadable_weights_and_a_record(tmp_path, ema):
    import json

    import cv2

    from blurbeam.deblur.model import Restorer
    from blurbeam.lab.deblur.train import TrainConfig, train

    data = tmp_path / "faces"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        img = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), (0, 0), 2)
        cv2.imwrite(str(data / f"{i:02d}.png"), img)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "out"), minutes=0.05, clock="wall",
                      batch=2, patch=64, val_every_s=0.0, n_val=3, val_fraction=0.25,
                      threads=1, ema=ema)  # fmt: skip
    info = train(cfg, log=lambda m: None)
    rec = json.loads((tmp_path / "out" / "deblur_unet.json").read_text())
    assert rec["finished"] and rec["steps"] == info["steps"] >= 1
    assert len(rec["held_out_files"]) == 3 and rec["history"]
    assert rec["val_best_psnr"] >= max(h["val_psnr"] for h in rec["history"]) - 1e-3
    r = Restorer(tmp_path / "out" / "deblur_unet.weights.h5")
    y = r.restore(np.zeros((128, 128, 3), np.uint8))
    assert y.shape == (128, 128, 3)


def test_shipped_weights_are_small_and_documented():
    import json

    from blurbeam.deblur.model import packaged_weights

    weights, config = packaged_weights()
    assert weights.is_file() and weights.stat().st_size <= 2_000_000  # the issue's 2 MB
    info = json.loads(config.read_text())
    assert info["model"]["widths"] and info["train_config"]["seed"] == 0
    assert (weights.parent / "PROVENANCE.md").is_file()


def test_compacting_a_weights_file_keeps_every_array_and_attribute(tmp_path):
    import h5py

    from blurbeam.deblur.model import build_unet
    from blurbeam.lab.deblur.train import compact_weights_file

    net = build_unet()
    path = tmp_path / "w.weights.h5"
    net.save_weights(str(path))

    def contents() -> dict:
        """Every dataset's array and every group's attributes, by name."""
        found: dict = {}
        with h5py.File(path) as f:
            f.visititems(
                lambda n, o: found.setdefault(
                    n, o[()] if isinstance(o, h5py.Dataset) else dict(o.attrs)
                )
            )
        return found

    before, size = contents(), path.stat().st_size
    compact_weights_file(path)
    assert path.stat().st_size < size and not list(tmp_path.glob("*.tmp"))
    after = contents()
    assert before.keys() == after.keys()
    for name, value in before.items():
        if isinstance(value, dict):
            assert value.keys() == after[name].keys(), name
        else:
            assert np.array_equal(value, after[name]), name
    again = build_unet()
    again.load_weights(str(path))
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    assert np.array_equal(net(x)[0].numpy(), again(x)[0].numpy())


def test_inference_shape_range_determinism(restorer):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    y1, y2 = restorer.restore(x), restorer.restore(x)
    assert y1.shape == x.shape and y1.dtype == np.uint8 and np.array_equal(y1, y2)
    xf = rng.random((2, 72, 100, 3), dtype=np.float32)  # not multiples of 8: padded inside
    yf = restorer.restore(xf)
    assert yf.shape == xf.shape and yf.dtype == np.float32 and yf.min() >= 0 and yf.max() <= 1
    assert np.array_equal(yf, restorer.restore(xf))


@pytest.fixture(scope="module")
def real_face_gains(restorer, shared) -> np.ndarray:
    """PSNR gains on 20 held-out shared crops, a fixed 11 px motion blur at seeded angles plus
    noise 2/255 (a check of the weights, not of speed)."""
    from blurbeam.lab.deblur.crops import list_images, load_stack, split
    from blurbeam.lab.deblur.metrics import psnr

    _, held_out = split(list_images(shared / "deblur" / "faces128_train"), seed=0)
    clean = load_stack(held_out[:20]).astype(np.float32) / 255.0
    rng = np.random.default_rng(123)
    gains = []
    for c in clean:
        k = degrade.motion_kernel(11, rng.uniform(0, 180))
        b = degrade.quantize(degrade.add_noise(degrade.blur(c, k), 2 / 255, rng))
        out = degrade.quantize(restorer.restore(b))
        gains.append(psnr(c, out) - psnr(c, b))
    return np.asarray(gains)


@pytest.mark.shared
def test_shipped_weights_deblur_real_faces(real_face_gains):
    """The shipped weights restore real faces: a mean gain of at least 1 dB (an identity or
    untrained network gives 0 or less) and no face made worse on average."""
    assert real_face_gains.mean() >= 1.0, f"mean PSNR gain {real_face_gains.mean():.2f} dB"
    assert np.median(real_face_gains) > 0


@pytest.mark.shared
def test_shipped_weights_reach_the_issue_target(real_face_gains):
    assert real_face_gains.mean() >= 3.0, f"mean PSNR gain {real_face_gains.mean():.2f} dB"


class _Estimating(_Brighten):
    """A fake restorer that also reports a blur estimate: a 9 px kernel at ``angle``."""

    def __init__(self, angle: float) -> None:
        self.angle = angle

    def restore_and_estimate(self, img):
        return self.restore(img), degrade.motion_kernel(9, self.angle)


def test_blur_estimates_are_given_in_source_pixels():
    from blurbeam.deblur.kernel import describe_kernel

    length9, _ = describe_kernel(degrade.motion_kernel(9, 0))
    img = np.full((100, 120, 3), 100, np.uint8)
    # a 30 px crop restored at 32 px: lengths scale by 30/32, a direction stays
    _, res = restore_faces(img, [(40, 30, 20, 20)], _Estimating(0.0), margin=1.5)
    assert res[0].blur_length_px == pytest.approx(length9 * 30 / 32, rel=1e-6)
    assert min(res[0].blur_angle_deg, 180 - res[0].blur_angle_deg) < 1.0
    # a 64 x 32 image squeezed into 32 x 32: a 45-degree blur there was flatter in the source
    _, whole = restore_whole(np.full((32, 64, 3), 100, np.uint8), _Estimating(45.0))
    assert whole.blur_angle_deg == pytest.approx(np.degrees(np.arctan2(1, 2)), abs=1.0)
    assert whole.blur_length_px == pytest.approx(length9 * np.hypot(2, 1) / np.sqrt(2), rel=0.02)
    _, plain = restore_faces(img, [(40, 30, 20, 20)], _Brighten())
    assert plain[0].blur_length_px is None and plain[0].blur_angle_deg is None

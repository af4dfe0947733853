import numpy as np
import pytest

from blurbeam.blur import METHODS, BlurConfig, anonymize, face_params, psf
from blurbeam.geometry import clip_rect, faces_mask, scale_box


def textured(h: int = 240, w: int = 320, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    if dtype == np.uint16:
        return img.astype(np.uint16) * 257
    return img


def outside_scaled_box(img_shape, box, scale):
    x, y, w, h = scale_box(*box, scale)
    r = clip_rect(x, y, x + w, y + h, img_shape[1], img_shape[0])
    m = np.ones(img_shape[:2], bool)
    if r:
        m[r[1] : r[3], r[0] : r[2]] = False
    return m


#: The methods that blur face boxes (``learned`` rewrites the whole image: tests/test_edge.py).
BOX_METHODS = [m for m in METHODS if not BlurConfig(method=m).whole_image]


@pytest.mark.parametrize("method", BOX_METHODS)
def test_method_changes_face_and_nothing_outside_mask_box(method):
    img = textured()
    box = (100.0, 60.0, 80.0, 100.0)  # non-square on purpose
    cfg = BlurConfig(method=method)
    out = anonymize(img, [box], cfg)
    assert out.shape == img.shape and out.dtype == img.dtype
    face = (slice(60, 160), slice(100, 180))
    changed = np.any(out[face] != img[face], axis=2)
    assert changed.mean() > 0.9, f"{method} left most of the face unchanged"
    outside = outside_scaled_box(img.shape, box, cfg.mask_scale)
    assert np.array_equal(out[outside], img[outside]), (
        f"{method} changed pixels outside the mask box"
    )


def test_mask_keeps_width_and_height_apart():
    img = textured(300, 300)
    tall = anonymize(img, [(140, 50, 20, 200)], BlurConfig(method="solid"))
    changed = np.any(tall != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.max() - ys.min() > 3 * (xs.max() - xs.min())  # tall stays tall


@pytest.mark.parametrize("box", [(-30, -20, 80, 80), (280, 200, 80, 80), (-50, 100, 400, 60)])
def test_faces_at_borders_are_clipped(box):
    img = textured()
    out = anonymize(img, [box], BlurConfig(method="pixelate"))
    x, y, w, h = box
    r = clip_rect(x, y, x + w, y + h, img.shape[1], img.shape[0])
    inner = (slice(r[1], r[3]), slice(r[0], r[2]))
    assert np.any(out[inner] != img[inner], axis=2).mean() > 0.8


def test_box_fully_outside_image_is_ignored():
    img = textured()
    assert np.array_equal(anonymize(img, [(1000, 1000, 50, 50)], BlurConfig()), img)


def test_strength_scales_with_face_size():
    cfg = BlurConfig()
    small, large = face_params(cfg, 40, 40)["sigma_px"], face_params(cfg, 400, 400)["sigma_px"]
    assert large == pytest.approx(10 * small)
    assert small == pytest.approx(0.25 * 40)
    # the pixel floor destroys tiny faces too
    assert face_params(cfg, 6, 6)["sigma_px"] >= 4.0
    pix = BlurConfig(method="pixelate")
    assert face_params(pix, 60, 60)["block_px"] == pytest.approx(15.0)  # 4 blocks across
    assert face_params(pix, 10, 10)["block_px"] >= 4.0


def test_larger_faces_lose_the_same_relative_detail():
    """High-frequency energy left in the face is small at every size (no fixed 20 px kernel)."""
    for size in (40, 160, 480):
        img = textured(size * 2, size * 2, seed=size)
        box = (size / 2, size / 2, size, size)
        out = anonymize(img, [box], BlurConfig())
        face = out[
            size // 2 + size // 4 : size + size // 4, size // 2 + size // 4 : size + size // 4
        ]
        hf = np.abs(np.diff(face.astype(float), axis=1)).mean()
        orig = img[size // 2 : size, size // 2 : size]
        hf0 = np.abs(np.diff(orig.astype(float), axis=1)).mean()
        assert hf < 0.08 * hf0, (size, hf, hf0)


def test_sixteen_bit_and_alpha_are_kept():
    img = textured(dtype=np.uint16)
    rgba = np.dstack([img, np.full(img.shape[:2], 40000, np.uint16)])
    out = anonymize(rgba, [(100, 60, 80, 100)], BlurConfig())
    assert out.dtype == np.uint16
    assert np.array_equal(out[:, :, 3], rgba[:, :, 3])
    assert np.any(out[100:140, 120:160, :3] != rgba[100:140, 120:160, :3])


def test_gray_image():
    img = textured()[:, :, :1].copy()
    out = anonymize(img, [(100, 60, 80, 100)], BlurConfig(method="median"))
    assert out.shape == img.shape
    assert np.any(out[80:140, 110:170] != img[80:140, 110:170])


def test_feather_only_extends_outward():
    img = textured()
    box = (100, 60, 80, 100)
    hard = anonymize(img, [box], BlurConfig(method="solid"))
    soft = anonymize(img, [box], BlurConfig(method="solid", feather=0.2))
    inside = faces_mask([box], img.shape[1], img.shape[0])
    assert np.array_equal(hard[inside], soft[inside])  # the full mask stays fully anonymized
    assert np.any(soft[~inside] != img[~inside])  # and the ramp lies outside it


def test_psf_matches_linear_methods():
    k = psf(BlurConfig(), 100, 100)
    assert k.sum() == pytest.approx(1.0)
    assert psf(BlurConfig(method="median"), 100, 100) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "swirl"},
        {"mask_scale": 0.9},
        {"method": "pixelate", "strength": 0.5},
        {"feather": -1},
    ],
)
def test_bad_config_rejected(kwargs):
    with pytest.raises(ValueError):
        BlurConfig(**kwargs)

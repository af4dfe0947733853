"""Attackers: kernels, and that each one really undoes part of the anonymization."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from blurbeam import blur
from blurbeam.lab.reid.attackers import (
    AttackContext,
    attack_psf,
    attackers_for,
    box_psf,
    gaussian_psf,
    run_attack,
)

BOX = (60.0, 50.0, 80.0, 100.0)  # x, y, w, h in the test image


def _scene(seed: int = 0) -> np.ndarray:
    """A 200x200 RGB image with face-sized detail: smooth shading plus random blobs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(25, 25, 3)).astype(np.uint8)
    img = cv2.resize(small, (200, 200), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def _err(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    d = a.astype(float) - b.astype(float)
    return float(np.sqrt((d[mask] ** 2).mean()))


def test_kernels_equal_the_anonymizers_psf_at_full_resolution() -> None:
    cfg = blur.BlurConfig("gaussian", 0.05)
    g = gaussian_psf(blur.gaussian_sigma(cfg, 80))
    ref = blur.psf(cfg, 80, 80)
    assert g.shape == ref.shape and np.allclose(g, ref)
    cfg = blur.BlurConfig("box", 0.2)
    ref = blur.psf(cfg, 80, 80)
    assert np.allclose(box_psf(float(ref.shape[0])), ref)
    # Fractional widths keep unit mass and symmetry.
    k = box_psf(6.4)
    assert k.sum() == pytest.approx(1.0) and np.allclose(k, k[::-1, ::-1])
    psf, exact = attack_psf(blur.BlurConfig("median", 0.5), 80, 1.0)
    assert not exact and psf.sum() == pytest.approx(1.0)
    assert attack_psf(blur.BlurConfig("pixelate", 6), 80, 1.0) is None


def test_applicability() -> None:
    assert attackers_for("solid") == ["none"]
    assert attackers_for("pixelate") == ["none", "upsample", "upsample_unsharp"]
    assert attackers_for("gaussian") == ["none", "wiener", "richardson_lucy", "unsharp"]
    assert "deblur" in attackers_for("gaussian", deblur=True)
    img = _scene()
    ctx = AttackContext(blur.BlurConfig("solid"), BOX)
    with pytest.raises(ValueError, match="does not apply"):
        run_attack("wiener", img, ctx)
    with pytest.raises(ValueError, match="unknown attacker"):
        run_attack("magic", img, ctx)


@pytest.mark.parametrize(
    ("method", "strength", "attacker"),
    [
        ("gaussian", 0.04, "wiener"),
        ("gaussian", 0.04, "richardson_lucy"),
        ("box", 0.08, "wiener"),
        ("pixelate", 16, "upsample"),
    ],
)
def test_attack_recovers_detail_and_only_touches_the_mask(
    method: str, strength: float, attacker: str
) -> None:
    img = _scene()
    cfg = blur.BlurConfig(method, strength)
    anon = blur.anonymize(img, [BOX], cfg)
    ctx = AttackContext(cfg, BOX)
    mask = ctx.mask(img.shape[:2])
    est = run_attack(attacker, anon, ctx)
    assert est.dtype == np.uint8 and est.shape == img.shape
    assert np.array_equal(est[~mask], anon[~mask])
    before, after = _err(anon, img, mask), _err(est, img, mask)
    assert after < 0.9 * before, (before, after)


def test_none_is_identity() -> None:
    img = _scene(1)
    cfg = blur.BlurConfig("gaussian", 0.25)
    anon = blur.anonymize(img, [BOX], cfg)
    assert np.array_equal(run_attack("none", anon, AttackContext(cfg, BOX)), anon)


class _FakeRestorer:
    """Stands in for the deblur network: records its input, returns a constant face."""

    size = 128

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def restore(self, img: np.ndarray) -> np.ndarray:
        self.inputs.append(img)
        return np.full_like(img, 200)


def test_deblur_attacker_feeds_the_1_3x_square_crop_and_pastes_inside_the_mask() -> None:
    from blurbeam.lab.reid.attackers import DeblurAttacker

    img = _scene(2)
    # mask 1.3: the mask lies inside the 1.3x crop the model restores (with a wider mask the ring
    # outside the crop stays as anonymized)
    cfg = blur.BlurConfig("gaussian", 0.25, mask_scale=1.3)
    anon = blur.anonymize(img, [BOX], cfg)
    fake = _FakeRestorer()
    ctx = AttackContext(cfg, BOX)
    est = run_attack("deblur", anon, ctx, DeblurAttacker(fake))
    assert len(fake.inputs) == 1 and fake.inputs[0].shape == (128, 128, 3)
    mask = ctx.mask(img.shape[:2])
    assert np.array_equal(est[~mask], anon[~mask])
    assert (est[mask] == 200).all()
    # A face at the image border: the crop is mirror-padded, the output keeps the window's shape.
    edge = (0.0, 0.0, 60.0, 70.0)
    ctx = AttackContext(cfg, edge)
    out = run_attack("deblur", blur.anonymize(img, [edge], cfg), ctx, DeblurAttacker(fake))
    assert out.shape == img.shape
    with pytest.raises(ValueError, match="needs the deblur model"):
        run_attack("deblur", anon, AttackContext(cfg, BOX))

"""bench/deblur_breakdown.py on synthetic faces with stand-in restorers (no network, no timing):
the flips of the ensembles are undone, the passes are counted in the GMACs, and the gain by
length measures what the restorer changed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from benchload import load_bench

from blurbeam.lab.deblur import degrade

breakdown = load_bench("deblur_breakdown")


class Identity:
    def restore(self, x: np.ndarray) -> np.ndarray:
        return x.copy()


class LeftHalfBlanked:
    """Sets the left half of every face to grey: not symmetric, so a mirror pass that was not
    flipped back would grey the other half."""

    def restore(self, x: np.ndarray) -> np.ndarray:
        y = x.copy()
        y[:, :, : x.shape[2] // 2] = 0.5
        return y


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    from skimage import data

    img = data.astronaut().astype(np.float32) / 255.0
    crops = [img[30:230, 140:340], img[0:256, 100:356], img[60:200, 180:320]]
    return np.stack([cv2.resize(c, (128, 128), interpolation=cv2.INTER_AREA) for c in crops])


def _cases(faces):
    rng = np.random.default_rng(0)
    cases = []
    for c in faces:
        b, k = degrade.eval_motion(c, rng)
        cases.append((b, c, k))
    return cases


def test_flip_passes_are_undone_and_counted(faces):
    rows = breakdown.flip_ensembles(Identity(), _cases(faces), gmac=0.5)
    assert [r["gmac_per_face"] for r in rows] == [0.5, 1.0, 2.0]
    # the identity restorer, each flip undone: every ensemble is the input itself
    assert all(r["gain_db"] == 0.0 for r in rows)
    assert len({r["psnr"] for r in rows}) == 1


def test_ensembles_average_what_each_pass_changed(faces):
    once, two, four = breakdown.flip_ensembles(LeftHalfBlanked(), _cases(faces), gmac=0.5)
    # one pass greys the left half; the mirror pass (flipped back) greys the right half, and
    # the average keeps half of each side's pixels: worse than the blurry input, unlike once
    assert once["psnr"] != two["psnr"]
    assert two["psnr"] == four["psnr"]  # the upside-down passes grey the same halves
    assert once["gain_db"] < 0 and two["gain_db"] < 0


def test_gain_by_length(faces):
    rows = breakdown.by_length(Identity(), faces, [5.0, 15.0], seed=0)
    assert [r["length_px"] for r in rows] == [5.0, 15.0]
    assert all(r["gain_db"] == 0.0 for r in rows)
    assert rows[0]["input_psnr"] > rows[1]["input_psnr"] + 3  # longer blur, lower PSNR
    md = breakdown.to_markdown(
        rows, breakdown.flip_ensembles(Identity(), _cases(faces), 0.5), 3, "ab" * 32
    )
    assert "| 15 |" in md and "4 passes" in md and "abababababab" in md

"""SFace alignment and identity on real faces (the crowd photos in ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blurbeam.lab.reid.face_features import face_window, original_features
from blurbeam.lab.reid.faceset import FaceSpec, match_landmarks, read_rgb
from blurbeam.lab.reid.recognizer import COSINE_THRESHOLD, Recognizer


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer()


@pytest.fixture(scope="module")
def crowd(shared: Path) -> tuple[np.ndarray, list[FaceSpec]]:
    from blurbeam.detectors import DetectorSpec, create

    rgb = read_rgb(shared / "crowds" / "ppl.jpg")
    faces = [
        FaceSpec((f.x, f.y, f.w, f.h), f.landmarks)
        for f in create(DetectorSpec("yunet")).detect(rgb)
        if max(f.w, f.h) >= 40
    ]
    assert len(faces) >= 8
    return rgb, faces


def test_alignment_follows_the_landmarks_not_the_pixels_around(rec, crowd) -> None:
    rgb, faces = crowd
    f = faces[0]
    full = rec.align(rgb, f.landmarks)
    assert full.shape == (112, 112, 3) and full.dtype == np.uint8
    # The same face in a window of the image, landmarks given in image coordinates + origin.
    x0, y0, x1, y1 = face_window(f.box, rgb.shape[1], rgb.shape[0])
    win = rec.align(rgb[y0:y1, x0:x1], f.landmarks, (x0, y0))
    assert np.abs(full.astype(int) - win.astype(int)).max() <= 1
    # Shifting the image and the landmarks together gives the same crop.
    shifted = np.zeros_like(rgb)
    shifted[7:, 13:] = rgb[:-7, :-13]
    moved = [(x + 13, y + 7) for x, y in f.landmarks]
    assert np.abs(rec.align(shifted, moved).astype(int) - full.astype(int)).max() <= 1
    # The template puts the eyes in the upper half, the mouth in the lower half: a crop aligned
    # with the landmarks swapped top/bottom is a different image.
    upside = [f.landmarks[3], f.landmarks[4], f.landmarks[2], f.landmarks[0], f.landmarks[1]]
    assert np.abs(rec.align(rgb, upside).astype(int) - full.astype(int)).mean() > 10


def test_same_face_matches_other_faces_do_not(rec, crowd) -> None:
    rgb, faces = crowd
    feats = np.stack(original_features(rec, rgb, faces))
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-4)
    sims = feats @ feats.T
    off = sims[~np.eye(len(faces), dtype=bool)]
    # Different people in one photo: almost all pairs are below the threshold.
    assert (off >= COSINE_THRESHOLD).mean() < 0.05
    # The same face after mild JPEG-like noise still matches itself.
    rng = np.random.default_rng(0)
    noisy = np.clip(rgb.astype(int) + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    again = np.stack(original_features(rec, noisy, faces))
    own = np.sum(feats * again, axis=1)
    assert (own >= COSINE_THRESHOLD).all()


def test_landmark_matching_by_iou() -> None:
    from blurbeam.detectors.base import Face

    lm = ((1.0, 1.0),) * 5
    dets = [Face(0, 0, 10, 10, 0.9, lm), Face(100, 100, 10, 10, 0.9, ((2.0, 2.0),) * 5)]
    got = match_landmarks([(101, 101, 10, 10), (0, 0, 9, 9), (50, 50, 10, 10)], dets)
    assert got[0] == ((2.0, 2.0),) * 5 and got[1] == lm and got[2] is None

"""The dlib detectors (the optional ``dlib`` extra): skipped, with the reason, without it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from blurbeam.detectors import DetectorSpec, create
from blurbeam.detectors.base import Face

#: The astronaut's face in skimage's 512x512 image, (x0, y0, x1, y1), drawn by hand.
ASTRONAUT_FACE = (170, 70, 265, 175)


def _iou(f: Face, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = (
        max(f.x, box[0]),
        max(f.y, box[1]),
        min(f.x + f.w, box[2]),
        min(f.y + f.h, box[3]),
    )
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = f.w * f.h + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / union


def _needs_dlib() -> None:
    pytest.importorskip("dlib", reason='dlib is not installed (pip install "blurbeam[dlib]")')


def _needs_mmod() -> None:
    _needs_dlib()
    pytest.importorskip(
        "face_recognition_models",
        reason='face-recognition-models (the MMOD model) is not installed: pip install "blurbeam[dlib]"',
    )


@pytest.mark.parametrize("upsample", [0, 1])
def test_hog_finds_the_astronaut_face(astronaut: np.ndarray, upsample: int) -> None:
    _needs_dlib()
    det = create(DetectorSpec("dlib", options=(("upsample", upsample),)))
    faces = det.detect(astronaut)
    best = max(faces, key=lambda f: _iou(f, ASTRONAUT_FACE))
    assert _iou(best, ASTRONAUT_FACE) > 0.5
    assert 0.5 <= best.score < 1.0  # a positive SVM margin squashed by the logistic
    assert len(det.model_sha256) == 64


def test_hog_lower_threshold_returns_more_candidates(astronaut: np.ndarray) -> None:
    _needs_dlib()
    default = create(DetectorSpec("dlib", options=(("upsample", 0),))).detect(astronaut)
    low = create(DetectorSpec("dlib", score_threshold=0.3, options=(("upsample", 0),))).detect(
        astronaut
    )
    assert len(low) > len(default)
    assert all(f.score >= 0.3 for f in low)
    assert any(f.score < 0.5 for f in low)


def test_cnn_finds_the_astronaut_face(astronaut: np.ndarray) -> None:
    _needs_mmod()
    det = create(DetectorSpec("dlib-cnn", options=(("upsample", 0),)))
    faces = det.detect(astronaut)
    assert len(faces) == 1
    assert _iou(faces[0], ASTRONAUT_FACE) > 0.5
    assert faces[0].score > 0.5
    assert len(det.model_sha256) == 64


def test_boxes_are_clipped_to_the_image(astronaut: np.ndarray) -> None:
    _needs_dlib()
    # the face cut by the left border: dlib's box reaches outside, ours stops at column 0
    crop = np.ascontiguousarray(astronaut[40:220, 200:420])
    faces = create(DetectorSpec("dlib", score_threshold=0.5)).detect(crop)
    assert faces
    for f in faces:
        assert f.x >= 0 and f.y >= 0
        assert f.x + f.w <= crop.shape[1] and f.y + f.h <= crop.shape[0]


def test_bad_upsample_is_a_value_error() -> None:
    _needs_dlib()
    with pytest.raises(ValueError, match="upsample must be 0-3"):
        create(DetectorSpec("dlib", options=(("upsample", 5),)))


@pytest.mark.parametrize("name", ["dlib", "dlib-cnn"])
def test_without_dlib_load_names_the_extra(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    with pytest.raises(RuntimeError, match=r"blurbeam\[dlib\]"):
        create(DetectorSpec(name))

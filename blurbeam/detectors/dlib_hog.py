"""dlib's face detectors (the optional ``dlib`` extra: ``pip install "blurbeam[dlib]"``).

* ``dlib``: HOG features + linear SVM (``dlib.get_frontal_face_detector()``), the detector of
  the face-anonymization tutorials and of ``face_recognition``'s default ``model="hog"``.
  Its window is 80x80 px, so it finds faces of about 80 px at ``upsample=0`` and 40 px at
  ``upsample=1`` (the default, as in ``face_recognition``).
* ``dlib-cnn``: the MMOD CNN (``mmod_human_face_detector.dat``, ``face_recognition``'s
  ``model="cnn"``), read from the ``face-recognition-models`` package (CC0) installed beside
  dlib; nothing is downloaded.

Both are imported in ``load``; without the extra, ``load`` fails with a one-line error that
names it. Scores are dlib's SVM / MMOD margins squashed to (0, 1) by a logistic, so dlib's own
decision threshold (margin 0) is score 0.5, the default threshold of both backends.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from blurbeam.detectors import register
from blurbeam.detectors.base import Detector, Face, file_sha256

MMOD_MODEL = "mmod_human_face_detector.dat"
#: The lowest SVM margin the HOG detector is asked for (``adjust_threshold``), whatever the
#: score threshold: below it the detector returns thousands of background windows per image.
HOG_MIN_MARGIN = -1.0


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise RuntimeError(
            'the dlib detectors need the dlib extra: pip install "blurbeam[dlib]"'
        ) from None
    return dlib


def _squash(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-margin))


def _logit(score: float) -> float:
    s = min(max(score, 1e-6), 1.0 - 1e-6)
    return math.log(s / (1.0 - s))


def _upsample(value: Any) -> int:
    n = int(value)
    if not 0 <= n <= 3:
        raise ValueError(f"dlib option upsample must be 0-3, got {n}")
    return n


def _to_face(left: int, top: int, right: int, bottom: int, margin: float, shape: tuple) -> Face:
    h, w = shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(w, right), min(h, bottom)
    return Face(float(x0), float(y0), float(x1 - x0), float(y1 - y0), _squash(float(margin)))


def _dlib_version_sha(dlib: Any) -> str:
    """The HOG model is compiled into dlib: its identity is dlib's version and binary."""
    import _dlib_pybind11

    return file_sha256(_dlib_pybind11.__file__)


@register
class DlibHogDetector(Detector):
    """Options: ``upsample`` (0-3, default 1: doubles the image once, faces down to ~40 px)."""

    name = "dlib"
    default_score_threshold = 0.5

    def load(self) -> None:
        dlib = _import_dlib()
        self._upsample_n = _upsample(self.option("upsample", 1))
        self.model_sha256 = _dlib_version_sha(dlib)
        self._det = dlib.get_frontal_face_detector()

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        adjust = max(HOG_MIN_MARGIN, min(0.0, _logit(self.score_threshold)))
        rects, margins, _ = self._det.run(np.ascontiguousarray(rgb), self._upsample_n, adjust)
        return [
            _to_face(r.left(), r.top(), r.right() + 1, r.bottom() + 1, m, rgb.shape)
            for r, m in zip(rects, margins, strict=True)
        ]


def mmod_model_path() -> str:
    try:
        import face_recognition_models
    except ImportError:
        raise RuntimeError(
            "the dlib-cnn detector needs the face-recognition-models package (its MMOD model): "
            'pip install "blurbeam[dlib]"'
        ) from None
    path = os.path.join(os.path.dirname(face_recognition_models.__file__), "models", MMOD_MODEL)
    if not os.path.isfile(path):
        raise RuntimeError(f"face-recognition-models does not ship {MMOD_MODEL}")
    return path


@register
class DlibCnnDetector(Detector):
    """Options: ``upsample`` (0-3, default 1). MMOD returns only detections with a positive
    margin (scores above 0.5), so thresholds below 0.5 change nothing."""

    name = "dlib-cnn"
    default_score_threshold = 0.5

    def load(self) -> None:
        dlib = _import_dlib()
        self._upsample_n = _upsample(self.option("upsample", 1))
        path = mmod_model_path()
        self.model_sha256 = file_sha256(path)
        self._net = dlib.cnn_face_detection_model_v1(path)

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        dets = self._net(np.ascontiguousarray(rgb), self._upsample_n)
        return [
            _to_face(
                d.rect.left(),
                d.rect.top(),
                d.rect.right() + 1,
                d.rect.bottom() + 1,
                d.confidence,
                rgb.shape,
            )
            for d in dets
        ]

"""OpenCV's bundled frontal-face Haar cascade (the original notebooks' detector)."""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from blurbeam.detectors import register
from blurbeam.detectors.base import Detector, Face, file_sha256

CASCADE = "haarcascade_frontalface_default.xml"


@register
class HaarDetector(Detector):
    """Options: ``scale_factor`` (1.1), ``min_neighbors`` (4), ``min_size`` (12 px).
    Scores are the cascade's last-stage weight squashed to (0, 1) by a logistic."""

    name = "haar"
    default_score_threshold = 0.0

    def load(self) -> None:
        path = os.path.join(cv2.data.haarcascades, CASCADE)
        if not os.path.isfile(path):
            raise RuntimeError(f"OpenCV does not ship {CASCADE}; install opencv-python-headless<5")
        self.model_sha256 = file_sha256(path)
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"could not load {path}")
        self._min_size = int(self.option("min_size", 12))
        self._scale_factor = float(self.option("scale_factor", 1.1))
        self._min_neighbors = int(self.option("min_neighbors", 4))

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=self._scale_factor,
            minNeighbors=self._min_neighbors,
            minSize=(self._min_size, self._min_size),
            outputRejectLevels=True,
        )
        faces = []
        for (x, y, w, h), wt in zip(boxes, np.ravel(weights), strict=False):
            score = 1.0 / (1.0 + math.exp(-float(wt)))
            faces.append(Face(float(x), float(y), float(w), float(h), score))
        return faces

"""MTCNN (the ``mtcnn`` package on TensorFlow; the card's choice), installed with the ``mtcnn``
extra. TensorFlow is imported in ``load`` only, so other backends never pay for it."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import os

import numpy as np

from blurbeam.detectors import register
from blurbeam.detectors.base import Detector, Face
from blurbeam.extras import require

# mtcnn's keypoint names are image-side (``left_eye`` is on the image's left, i.e. the subject's
# right eye); our landmark order is the subject's right eye, left eye, nose, right/left mouth corner.
_KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@register
class MTCNNDetector(Detector):
    """Options: ``min_face_size`` (MTCNN's own pyramid floor, 12 px), ``threads`` (TF intra-op)."""

    name = "mtcnn"
    default_score_threshold = 0.7
    gives_landmarks = True

    def load(self) -> None:
        require("tensorflow", "mtcnn", "the mtcnn detector")
        require("mtcnn", "mtcnn", "the mtcnn detector")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        threads = self.thread_count()
        if threads:
            with contextlib.suppress(RuntimeError):  # already initialised in this process
                tf.config.threading.set_intra_op_parallelism_threads(threads)
        from mtcnn import MTCNN

        weights = importlib.resources.files("mtcnn") / "assets" / "weights"
        h = hashlib.sha256()
        for name in ("pnet.lz4", "rnet.lz4", "onet.lz4"):
            h.update((weights / name).read_bytes())
        self.model_sha256 = h.hexdigest()
        self._net = MTCNN(device="CPU:0")
        self._min_size = int(self.option("min_face_size", 12))

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        results = self._net.detect_faces(
            rgb, min_face_size=self._min_size, threshold_onet=min(0.7, self.score_threshold)
        )
        faces = []
        for r in results:
            x, y, w, h = (float(v) for v in r["box"])
            kp = r.get("keypoints") or {}
            lms = None
            if all(k in kp for k in _KEYPOINTS):
                lms = tuple((float(kp[k][0]), float(kp[k][1])) for k in _KEYPOINTS)
            faces.append(Face(x, y, w, h, float(r["confidence"]), lms))
        return faces

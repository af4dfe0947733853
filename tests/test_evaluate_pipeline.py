"""Blur recall and false positives on hand-made cases; ``blurbeam evaluate`` end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from blurbeam.lab.detection import wider_ap
from blurbeam.lab.detection.blur_recall import (
    PrivacyConfig,
    false_positive_count,
    image_privacy,
    summarise,
)
from blurbeam.pipelines.cli import main


def shared_dir() -> Path:
    env = os.environ.get("BLURBEAM_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def dev305() -> Path:
    d = shared_dir() / "data" / "widerface" / "dev305"
    if not (d / "gt.txt").is_file():
        pytest.skip(f"WIDER FACE dev305 not found under {d} (set BLURBEAM_SHARED)")
    return d


def gt_image(boxes: list[list[float]], invalid: list[int] | None = None) -> wider_ap.ImageGt:
    attrs = np.zeros((len(boxes), 6), dtype=int)
    if invalid:
        attrs[:, 3] = invalid
    return wider_ap.ImageGt(np.array(boxes, dtype=float).reshape(-1, 4), attrs)


def test_blur_recall_uses_the_anonymizer_mask() -> None:
    gt = gt_image([[100, 100, 40, 50], [300, 100, 40, 50], [500, 100, 8, 9], [600, 100, 40, 50]])
    gt.attributes[3, 3] = 1  # invalid: not counted
    dets = np.array([[100, 100, 40, 50, 0.9], [320, 100, 40, 50, 0.8]])  # 2nd: half off
    res = image_privacy(gt, dets, 700, 300)
    assert res.sizes == [50.0, 50.0]  # the 9 px and the invalid face are not counted
    assert res.covered == [True, False]
    # With a tight rectangle, a box shifted by a quarter is still 75% covered (< 80%).
    shifted = np.array([[110, 100, 40, 50, 0.9]])
    rect = PrivacyConfig(mask_scale=1.0, mask_shape="rect")
    assert image_privacy(gt, shifted, 700, 300, rect).covered[0] is False
    # The default 1.3 ellipse covers it.
    assert image_privacy(gt, shifted, 700, 300).covered[0] is True
    # A box at the image border: coverage counts the in-image part only.
    edge = gt_image([[-10, 0, 40, 40]])
    assert image_privacy(edge, np.array([[-10, 0, 40, 40]]), 100, 100).covered == [True]


def test_false_positives_touch_no_labelled_face() -> None:
    boxes = np.array([[100, 100, 40, 50], [500, 100, 6, 6]], dtype=float)
    cfg = PrivacyConfig()
    dets = np.array(
        [
            [98, 95, 46, 58],  # the face, drawn looser
            [490, 90, 26, 26],  # around the 6 px face: IoU small, but contains it
            [300, 300, 40, 40],  # background
        ]
    )
    assert false_positive_count(dets, boxes, cfg) == 1
    assert false_positive_count(dets, np.zeros((0, 4)), cfg) == 3
    assert false_positive_count(np.zeros((0, 4)), boxes, cfg) == 0


def test_summary_by_size() -> None:
    gt = gt_image([[0, 0, 12, 12], [50, 0, 20, 20], [100, 0, 70, 70]])
    res = image_privacy(gt, np.array([[50, 0, 20, 20, 1.0], [100, 0, 70, 70, 1.0]]), 200, 100)
    s = summarise([res, image_privacy(gt, np.zeros((0, 5)), 200, 100)])
    assert s["faces"] == 6 and s["faces_covered"] == 2
    assert s["blur_recall"] == pytest.approx(2 / 6)
    assert s["blur_recall_by_size"]["10-16px"] == {"faces": 2, "blur_recall": 0.0}
    assert s["blur_recall_by_size"]["16-32px"]["blur_recall"] == 0.5
    assert s["false_positives_per_image"] == 0.0


def test_cli_rejects_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imgs").mkdir()
    rc = main(
        [
            "evaluate",
            "--images",
            str(tmp_path / "imgs"),
            "--gt",
            str(tmp_path / "nope.txt"),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot read ground truth" in err[0]


@pytest.mark.shared
def test_cli_rejects_images_not_in_ground_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], astronaut: np.ndarray
) -> None:
    from PIL import Image

    dev = dev305()
    (tmp_path / "imgs" / "x").mkdir(parents=True)
    Image.fromarray(astronaut).save(tmp_path / "imgs" / "x" / "a.jpg")
    rc = main(
        [
            "evaluate",
            "--images",
            str(tmp_path / "imgs"),
            "--gt",
            str(dev / "gt.txt"),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2 and "none of the 1 images" in capsys.readouterr().err


@pytest.mark.shared
@pytest.mark.slow
def test_evaluate_yunet_on_ten_dev_images(tmp_path: Path) -> None:
    dev = dev305()
    images = tmp_path / "images"
    picked = sorted((dev / "images").glob("*/*.jpg"))[:10]
    for src in picked:
        (images / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, images / src.parent.name / src.name)
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "--images",
            str(images),
            "--gt",
            str(dev / "gt.txt"),
            "--detector",
            "yunet",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == 10 and m["labelled_images"] == 10 and m["errors"] == 0
    # YuNet (int8) on these 10 crowded Parade/Handshaking images: AP well above chance and
    # below perfect; hard lowest because of the many tiny faces.
    ap = m["ap"]
    assert 0.75 < ap["easy"] <= 1.0
    assert 0.8 < ap["medium"] <= 1.0
    assert 0.6 < ap["hard"] < 0.9
    assert ap["hard"] < ap["medium"]
    pv = m["privacy"]
    assert 0.3 < pv["blur_recall"] < 1.0 and pv["faces"] > 50
    assert m["anonymize_threshold"] == 0.6 and m["ap_min_score"] == 0.02
    sweep = m["threshold_sweep"]
    at = {row["threshold"]: row for row in sweep}
    assert at[0.6]["blur_recall"] == pytest.approx(pv["blur_recall"])
    recalls = [row["blur_recall"] for row in sweep]
    fps = [row["false_positives_per_image"] for row in sweep]
    assert recalls == sorted(recalls, reverse=True) and recalls[0] > recalls[-1]
    assert fps == sorted(fps, reverse=True)
    # The prediction files are the official format and give back the same AP.
    preds = wider_ap.read_predictions(out / "predictions")
    assert sorted(preds) == sorted(f"{p.parent.name}/{p.stem}" for p in picked)
    gt = wider_ap.load_ground_truth(dev / "gt.txt")
    sub = wider_ap.WiderGroundTruth(
        {k: gt.images[k] for k in preds}, {lv: {k: gt.keep[lv][k] for k in preds} for lv in gt.keep}
    )
    again = wider_ap.evaluate(preds, sub)
    for lv in wider_ap.LEVELS:
        assert again[lv].ap == pytest.approx(ap[lv], abs=2e-3)  # files round scores to 1e-6
    for lv in wider_ap.LEVELS:
        png = out / f"pr_{lv}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "images.jsonl").read_text().splitlines()) == 10
    assert m["timing_ms"]["detect_median"] > 0


@pytest.mark.shared
def test_cli_rejects_a_bad_detector_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = dev305()
    rc = main(
        [
            "evaluate",
            "--images",
            str(dev / "images"),
            "--gt",
            str(dev / "gt.txt"),
            "--detector",
            "multiscale",
            "--detector-option",
            "base=yunet",
            "--detector-option",
            "fusion=mean",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if "evaluate" in ln]
    assert rc == 2 and err == [
        "blurbeam evaluate: error: detector multiscale: unknown fusion 'mean'; "
        "choose from ('vote', 'nms')"
    ]

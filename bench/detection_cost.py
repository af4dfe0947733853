"""Per-image cost of a detector config: wall and CPU milliseconds of ``detect`` per image.

    python bench/detection_cost.py --images DIR --detector centerface [--detector-option K=V ...]
        [--limit N] [--every K] [--threads N]

CPU time (the process's, all threads) is reported next to wall time because the machines this
runs on are shared: on a loaded machine wall time grows with the other jobs, CPU time much less.
Images are read with OpenCV and detected one at a time after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from blurbeam.detectors import DetectorSpec, create
from blurbeam.pipelines.scaffold import key_value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--detector", required=True)
    ap.add_argument("--score-threshold", type=float, default=None)
    ap.add_argument("--detector-option", type=key_value, action="append", default=[])
    ap.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    ap.add_argument("--every", type=int, default=1, help="take every K-th image (sorted)")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="the worker's thread budget handed to the detector (0: the library's default)",
    )
    args = ap.parse_args(argv)
    paths = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    paths = paths[:: max(1, args.every)]
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        print(f"detection_cost: no .jpg/.png under {args.images}", file=sys.stderr)
        return 2
    spec = DetectorSpec(
        args.detector, args.score_threshold, 0.0, tuple(sorted(dict(args.detector_option).items()))
    )
    try:
        det = create(spec, threads=args.threads)
    except (ValueError, RuntimeError) as exc:
        print(f"detection_cost: {exc}", file=sys.stderr)
        return 2
    first = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    det.detect(first)  # warm-up
    wall, cpu, pixels = [], [], []
    for p in paths:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        t0, c0 = time.perf_counter(), time.process_time()
        det.detect(rgb)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        pixels.append(rgb.shape[0] * rgb.shape[1])
    out = {
        "detector": spec.name,
        "options": dict(spec.options),
        "threads": args.threads,
        "images": len(paths),
        "median_megapixels": round(float(np.median(pixels)) / 1e6, 3),
        "wall_ms_median": round(float(np.median(wall)), 1),
        "wall_ms_p90": round(float(np.percentile(wall, 90)), 1),
        "cpu_ms_median": round(float(np.median(cpu)), 1),
        "cpu_ms_p90": round(float(np.percentile(cpu, 90)), 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The learned edge anonymizer against the detector + blur pipeline, on WIDER FACE dev305.

    python bench/edge_eval.py --images ../shared/data/widerface/dev305/images \\
        --gt ../shared/data/widerface/dev305/gt.txt --out /tmp/edge_eval \\
        [--models int8 fp32 student teacher pipeline] [--every 1] [--threads 1]

For every model it anonymizes the images in memory (no JPEG re-encode, for every row alike) and
measures from the pixels, with ``bench/compare.py``'s functions: blur recall (a labelled valid
face is covered when >= 80% of its box changed noticeably: largest per-channel difference,
averaged over 5x5, > 6 levels) for faces >= 10 px and >= 40 px, and collateral change (pixels
outside every labelled box enlarged 1.7x that changed noticeably). Speed: wall ms per image
(median) and images/s of the loop, one thread; ms per 128x128 tile (median of ``--tile-repeats``
calls on a real tile, one thread). ``pipeline`` is blurbeam's default (the multiscale detector
at its threshold, Gaussian 0.25 on the 1.6 ellipse). Writes ``metrics.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
MODELS = ("int8", "fp32", "student", "teacher", "pipeline")


def _compare():
    spec = importlib.util.spec_from_file_location("bench_compare", REPO / "bench" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = mod
    spec.loader.exec_module(mod)
    return mod


def _keras_tile_fn(arch: str, weights: str):
    from blurbeam.lab.edge.network import ARCHS, build

    model = build(ARCHS[arch])
    if weights.endswith(".npz"):
        from blurbeam.lab.edge.export import load_fp16

        load_fp16(model, weights)
    else:
        model.load_weights(weights)

    def run(tile8: np.ndarray) -> np.ndarray:
        return model(tile8[None].astype(np.float32) / 255.0, training=False).numpy()[0]

    return run


def anonymizer(name: str, weights_dir: Path, threads: int):
    """(apply(rgb) -> rgb uint8, run_tile or None, model file or None) of one row."""
    from blurbeam.edge.infer import DEFAULT_OVERLAP, EdgeAnonymizer, apply_tiles

    if name in ("int8", "fp32"):
        path = weights_dir / f"edge_student_{name}.tflite"
        edge = EdgeAnonymizer(path, threads=threads)
        return edge.apply, edge.run_tile, path
    if name in ("student", "teacher"):
        path = weights_dir / (
            "edge_student.weights.h5" if name == "student" else "edge_teacher_fp16.npz"
        )
        run = _keras_tile_fn(name, str(path))

        def apply(rgb: np.ndarray) -> np.ndarray:
            out = apply_tiles(run, rgb, 128, DEFAULT_OVERLAP)
            return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)

        return apply, run, path
    if name == "pipeline":
        from blurbeam.blur import BlurConfig, anonymize
        from blurbeam.detectors import DetectorSpec, create
        from blurbeam.pipelines.scaffold import DEFAULT_DETECTOR

        det = create(DetectorSpec(DEFAULT_DETECTOR), threads=threads)
        cfg = BlurConfig()

        def apply(rgb: np.ndarray) -> np.ndarray:
            boxes = [(f.x, f.y, f.w, f.h) for f in det.detect(rgb)]
            return anonymize(rgb, boxes, cfg)

        return apply, None, None
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def tile_ms(run_tile, tile: np.ndarray, repeats: int) -> float:
    run_tile(tile)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run_tile(tile)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", nargs="+", default=["int8", "pipeline"], choices=MODELS)
    ap.add_argument("--weights", default=str(REPO / "blurbeam" / "edge" / "weights"))
    ap.add_argument("--every", type=int, default=1, help="every K-th image (sorted)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tile-repeats", type=int, default=30)
    args = ap.parse_args(argv)
    if args.threads:
        import contextlib

        import tensorflow as tf

        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        import cv2

        cv2.setNumThreads(args.threads)
    cmp = _compare()
    from blurbeam.lab.detection.wider_ap import parse_gt_txt

    gt = parse_gt_txt(args.gt)
    images = Path(args.images)
    names = sorted(
        str(p.relative_to(images))
        for p in images.rglob("*.jpg")
        if f"{p.parent.name}/{p.stem}" in gt
    )[:: args.every]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "load_before": os.getloadavg(),
        "images": len(names),
        "models": {},
    }
    probe = cmp.load_rgb(images / names[0])
    for name in args.models:
        apply, run_tile, path = anonymizer(name, Path(args.weights), args.threads)
        row: dict = {}
        if path is not None:
            row["model_file"] = path.name
            row["model_bytes"] = os.path.getsize(path)
        if run_tile is not None:
            row["ms_per_tile"] = tile_ms(
                run_tile, np.ascontiguousarray(probe[:128, :128]), args.tile_repeats
            )
        scores10, scores40, ms = [], [], []
        t0 = time.perf_counter()
        for rel in names:
            rgb = cmp.load_rgb(images / rel)
            g = gt[f"{Path(rel).parent.name}/{Path(rel).stem}"]
            t = time.perf_counter()
            anon = apply(rgb)
            ms.append((time.perf_counter() - t) * 1000)
            scores10.append(
                cmp.score_image(rgb, anon, g.boxes, g.invalid, cmp.DEFAULT_CHANGED_THRESHOLD, 10.0)
            )
            scores40.append(
                cmp.score_image(rgb, anon, g.boxes, g.invalid, cmp.DEFAULT_CHANGED_THRESHOLD, 40.0)
            )
        wall = time.perf_counter() - t0
        s10, s40 = cmp.summarise_scores(scores10), cmp.summarise_scores(scores40)
        row.update(
            {
                "faces_10": s10["faces"],
                "blur_recall_10": s10["blur_recall"],
                "blur_recall_small": s10["blur_recall_small"],
                "faces_40": s40["faces"],
                "blur_recall_40": s40["blur_recall"],
                "collateral": s10["collateral"],
                "ms_per_image_median": statistics.median(ms),
                "images_per_s": len(names) / sum(ms) * 1000,
                "loop_wall_s": wall,
            }
        )
        results["models"][name] = row
        print(name, json.dumps(row), flush=True)
    results["load_after"] = os.getloadavg()
    (out / "metrics.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

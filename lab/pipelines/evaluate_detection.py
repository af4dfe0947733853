"""``blurbeam evaluate``: WIDER FACE AP, blur recall and false positives of a detector config.

The pipeline reads, decodes and detects with the anonymize pipeline's transforms
(``ReadImages``, ``DetectFaces``), writes one WIDER prediction file per image, and computes:

* easy / medium / hard AP exactly as the official WIDER FACE tool (``blurbeam.lab.detection.wider_ap``)
  on the images found under ``--images`` that the ground truth labels;
* blur recall at the threshold ``anonymize`` would use (``--score-threshold`` or the backend's
  default): the fraction of valid labelled faces of at least ``--min-blur-face`` px whose box is
  at least ``--min-coverage`` covered by the anonymizer's mask (``--mask-scale``,
  ``--mask-shape``), and false-positive regions per image.

AP needs the low-score detections too, so the detector runs with ``--ap-min-score`` as its
threshold; blur recall keeps only the faces at or above the anonymize threshold.

Outputs under ``--output``: ``predictions/<event>/<name>.txt``, ``metrics.json``,
``pr_<level>.png``, ``images.jsonl`` (one record per image).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import fsspec
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from blurbeam import __version__
from blurbeam.blur import DEFAULT_MASK_SCALE
from blurbeam.detectors import DetectorSpec
from blurbeam.geometry import MASK_SHAPES
from blurbeam.lab.detection.blur_recall import PrivacyConfig
from blurbeam.lab.detection.wider_ap import LEVELS, WiderFormatError, WiderGroundTruth
from blurbeam.pipelines.scaffold import add_detector_options, detector_spec, option

DEFAULT_AP_MIN_SCORE = 0.02


#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    option(parser, "images", required=True, help="directory of <event>/<name>.jpg images")
    option(parser, "gt", required=True, help="WIDER gt.txt (e.g. .../widerface/dev305/gt.txt)")
    option(
        parser,
        "mat-dir",
        default=None,
        help="folder of wider_{easy,medium,hard}_val.mat (default: ground_truth/ beside --gt)",
    )
    option(parser, "output", required=True, help="output directory")
    add_detector_options(parser)
    option(
        parser,
        "ap-min-score",
        type=float,
        default=DEFAULT_AP_MIN_SCORE,
        help=f"detector threshold for the AP predictions (default {DEFAULT_AP_MIN_SCORE})",
    )
    option(
        parser,
        "every",
        type=int,
        default=1,
        help="evaluate every K-th labelled image, sorted by name (default 1: all)",
    )
    option(
        parser, "mask-scale", type=float, default=DEFAULT_MASK_SCALE, help="anonymizer mask scale"
    )
    option(parser, "mask-shape", default="ellipse", choices=MASK_SHAPES)
    option(
        parser,
        "min-blur-face",
        type=float,
        default=10.0,
        help="blur recall counts valid faces whose larger side is at least this (px)",
    )
    option(
        parser,
        "min-coverage",
        type=float,
        default=0.8,
        help="a face counts as blurred when this fraction of its box is masked",
    )


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def finalize(
    records: list[dict[str, Any]],
    gt: WiderGroundTruth,
    output: str,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """All per-image records -> AP, privacy summary, timings; writes metrics, plots, records."""
    from blurbeam.lab.detection import wider_ap
    from blurbeam.lab.detection.blur_recall import SWEEP_THRESHOLDS, summarise, threshold_sweep
    from blurbeam.lab.detection.pr_plots import pr_curve_png
    from blurbeam.lab.transforms.score_detections import privacy_from_record, records_to_jsonl
    from blurbeam.shards import join_output, write_bytes

    labelled = [r for r in records if r["labelled"]]
    keys = {r["key"] for r in labelled}
    sub = WiderGroundTruth(
        images={k: gt.images[k] for k in keys},
        keep={lv: {k: gt.keep[lv][k] for k in keys} for lv in LEVELS},
    )
    preds = {r["key"]: np.asarray(r["preds"], dtype=np.float64).reshape(-1, 5) for r in labelled}
    results = wider_ap.evaluate(preds, sub)
    plots = {}
    for lv, res in results.items():
        name = f"pr_{lv}.png"
        write_bytes(join_output(output, name), pr_curve_png(res, meta["detector"]["name"]))
        plots[lv] = name
    privacy = summarise(privacy_from_record(r) for r in labelled if r["privacy"] is not None)
    sweep = threshold_sweep(
        (
            (gt.images[r["key"]], preds[r["key"]], int(r["width"]), int(r["height"]))
            for r in labelled
            if r["privacy"] is not None
        ),
        [t for t in SWEEP_THRESHOLDS if t >= meta["ap_min_score"]],
        PrivacyConfig(**meta["privacy_config"]),
    )
    ok = [r for r in records if not r["error"]]
    detect_ms = [r["timings_ms"]["detect"] for r in ok if "detect" in r["timings_ms"]]
    total_ms = [sum(r["timings_ms"].get(s, 0.0) for s in ("decode", "detect")) for r in ok]
    errors: dict[str, int] = {}
    for r in records:
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    metrics = {
        **meta,
        "images": len(records),
        "labelled_images": len(labelled),
        "unlabelled_images": len(records) - len(labelled),
        "errors": sum(errors.values()),
        "error_reasons": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:10]),
        "ap": {lv: results[lv].ap for lv in LEVELS},
        "ap_faces": {lv: results[lv].face_count for lv in LEVELS},
        "privacy": privacy,
        "threshold_sweep": sweep,
        "predictions_per_image": (
            float(np.mean([len(r["preds"]) for r in labelled])) if labelled else None
        ),
        "faces_with_landmarks": int(sum(r["landmarks"] for r in ok)),
        "timing_ms": {
            "detect_median": _percentile(detect_ms, 50),
            "detect_p90": _percentile(detect_ms, 90),
            "decode_plus_detect_median": _percentile(total_ms, 50),
        },
        "plots": plots,
    }
    write_bytes(join_output(output, "metrics.json"), json.dumps(metrics, indent=2).encode())
    write_bytes(join_output(output, "images.jsonl"), records_to_jsonl(records))
    return metrics


def build(
    p: beam.Pipeline,
    images: str,
    output: str,
    spec: DetectorSpec,
    gt: WiderGroundTruth,
    score_cfg: Any,
    meta: dict[str, Any],
    max_pixels: int,
    max_bytes: int,
    keep: list[str] | None = None,
):
    """The evaluate pipeline on ``p``; ``keep``: only these image keys (None: every image)."""
    from blurbeam.lab.transforms.score_detections import ScoreImages
    from blurbeam.transforms.anonymize import DetectFaces, ReadImages

    tasks = p | "ReadImages" >> ReadImages(images, max_pixels, max_bytes, exclude=output)
    if keep is not None:
        tasks = tasks | "Sample" >> beam.Filter(_in_sample, frozenset(keep))
    detected = tasks | "DetectFaces" >> DetectFaces(spec)
    records = detected | "ScoreImages" >> ScoreImages(gt.images, score_cfg)
    _ = (
        records
        | "Gather" >> beam.combiners.ToList()
        | "Finalize" >> beam.Map(finalize, gt, output, meta)
    )
    return records


def _in_sample(task: Any, keys: frozenset[str]) -> bool:
    from blurbeam.lab.detection.wider_ap import image_key

    return image_key(task.rel) in keys


def _fail(msg: str) -> int:
    print(f"blurbeam evaluate: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from blurbeam.detectors import create, get_class
    from blurbeam.lab.detection.wider_ap import image_key, load_ground_truth
    from blurbeam.lab.transforms.score_detections import ScoreConfig
    from blurbeam.shards import InputError, canonical, expand_input, join_output, write_bytes

    if not Path(args.images).is_dir():
        return _fail(f"--images {args.images} is not a directory")
    try:
        gt = load_ground_truth(args.gt, args.mat_dir)
    except WiderFormatError as exc:
        return _fail(str(exc))
    try:
        base = detector_spec(args)
        det_cls = get_class(base.name)
    except ValueError as exc:
        return _fail(str(exc))
    anon_threshold = (
        base.score_threshold
        if base.score_threshold is not None
        else det_cls.default_score_threshold
    )
    ap_min = min(args.ap_min_score, anon_threshold)
    spec = DetectorSpec(base.name, ap_min, base.min_face_size, base.options)
    try:  # load once here, so a missing model or a bad option is one clear line, not a traceback
        create(spec)
    except (ValueError, RuntimeError, ImportError, OSError) as exc:
        return _fail(f"detector {spec.name}: {exc}")
    output = canonical(args.output)
    try:
        found = [image_key(ref.rel) for ref in expand_input(args.images, exclude=output)]
    except InputError as exc:
        return _fail(str(exc))
    labelled = sorted(k for k in found if k in gt.images)
    if not labelled:
        return _fail(
            f"none of the {len(found)} images under {args.images} is in {args.gt} "
            "(expected <event>/<name>.jpg as in the ground truth)"
        )
    if args.every < 1:
        return _fail(f"--every must be >= 1, got {args.every}")
    keep = labelled[:: args.every] if args.every > 1 else None
    if keep is not None:
        found, labelled = keep, keep
    privacy = PrivacyConfig(
        mask_scale=args.mask_scale,
        mask_shape=args.mask_shape,
        min_face=args.min_blur_face,
        min_coverage=args.min_coverage,
    )
    meta = {
        "package_version": __version__,
        "command": "blurbeam evaluate " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "detector": {
            "name": spec.name,
            "options": dict(spec.options),
            "min_face_size": spec.min_face_size,
        },
        "anonymize_threshold": anon_threshold,
        "ap_min_score": ap_min,
        "privacy_config": privacy.__dict__,
        "gt": str(args.gt),
        "every": args.every,
    }
    score_cfg = ScoreConfig(join_output(output, "predictions"), anon_threshold, privacy)
    print(
        f"blurbeam {__version__} evaluate: {len(labelled)} labelled images of {len(found)}, "
        f"detector {spec.name} (AP scores >= {ap_min:g}, anonymize threshold {anon_threshold:g})",
        file=sys.stderr,
    )
    options = PipelineOptions(beam_args)
    t0 = time.monotonic()
    with beam.Pipeline(options=options) as p:
        build(
            p, args.images, output, spec, gt, score_cfg, meta, args.max_pixels, args.max_bytes, keep
        )
    wall = time.monotonic() - t0
    metrics_path = join_output(output, "metrics.json")
    try:
        with fsspec.open(metrics_path, "rb") as fh:
            m = json.loads(fh.read())
    except FileNotFoundError:
        return _fail(f"the pipeline finished without writing {metrics_path}")
    m["wall_s"] = round(wall, 2)
    write_bytes(metrics_path, json.dumps(m, indent=2).encode())
    ap = m["ap"]
    pv = m["privacy"]
    t = {k: (v if v is not None else float("nan")) for k, v in m["timing_ms"].items()}
    br = pv["blur_recall"]
    print(
        f"AP easy {ap['easy']:.4f}  medium {ap['medium']:.4f}  hard {ap['hard']:.4f}\n"
        f"blur recall {'n/a' if br is None else f'{br:.4f}'} ({pv['faces_covered']}/{pv['faces']} "
        f"faces >= {args.min_blur_face:g} px at score >= {anon_threshold:g}), "
        f"false positives {pv['false_positives_per_image'] or 0:.3f}/image\n"
        f"detect median {t['detect_median']:.0f} ms/image (p90 {t['detect_p90']:.0f}), "
        f"{m['errors']} errors, {wall:.1f} s wall\n"
        f"wrote {metrics_path}, pr_*.png and predictions/ under {output}",
        file=sys.stderr,
    )
    return 1 if m["errors"] else 0

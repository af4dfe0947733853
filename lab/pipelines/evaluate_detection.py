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
from dataclasses import dataclass
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
from blurbeam.lab.detection.wider_ap import LEVELS, WiderGroundTruth
from blurbeam.pipelines.scaffold import (
    Command,
    Launch,
    Outcome,
    add_detector_options,
    detector_spec,
    option,
    score_threshold,
)

DEFAULT_AP_MIN_SCORE = 0.02


class EvaluateOptions(PipelineOptions):
    """The flags of ``blurbeam evaluate``."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        option(parser, "images", help="directory of <event>/<name>.jpg images")
        option(parser, "gt", help="WIDER gt.txt (e.g. .../widerface/dev305/gt.txt)")
        option(
            parser,
            "mat-dir",
            default=None,
            help="folder of wider_{easy,medium,hard}_val.mat (default: ground_truth/ beside --gt)",
        )
        option(parser, "output", help="output directory")
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
            parser,
            "mask-scale",
            type=float,
            default=DEFAULT_MASK_SCALE,
            help="anonymizer mask scale",
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


@dataclass(frozen=True)
class EvaluatePlan:
    """What an evaluate run reads, detects with and scores, resolved at launch."""

    images: str
    output: str
    spec: DetectorSpec
    gt: WiderGroundTruth
    score_cfg: Any
    meta: dict[str, Any]
    max_pixels: int
    max_bytes: int
    keep: list[str] | None
    found: int
    labelled: int


class Evaluate(Command[EvaluatePlan]):
    name = "evaluate"
    options_class = EvaluateOptions
    required = ("images", "gt", "output")

    def plan(self, opts: EvaluateOptions, launch: Launch) -> EvaluatePlan:
        from blurbeam.detectors import create
        from blurbeam.lab.detection.wider_ap import image_key, load_ground_truth
        from blurbeam.lab.transforms.score_detections import ScoreConfig
        from blurbeam.shards import InputError, canonical, expand_input, join_output

        if not Path(opts.images).is_dir():
            raise ValueError(f"--images {opts.images} is not a directory")
        gt = load_ground_truth(opts.gt, opts.mat_dir)
        base = detector_spec(opts)
        anon_threshold = score_threshold(base)
        ap_min = min(opts.ap_min_score, anon_threshold)
        spec = DetectorSpec(base.name, ap_min, base.min_face_size, base.options)
        try:  # load once here, so a missing model or a bad option is one line, not a traceback
            create(spec)
        except (ValueError, RuntimeError, ImportError, OSError) as exc:
            raise ValueError(f"detector {spec.name}: {exc}") from None
        output = canonical(opts.output)
        try:
            found = [image_key(ref.rel) for ref in expand_input(opts.images, exclude=output)]
        except InputError as exc:
            raise ValueError(str(exc)) from None
        labelled = sorted(k for k in found if k in gt.images)
        if not labelled:
            raise ValueError(
                f"none of the {len(found)} images under {opts.images} is in {opts.gt} "
                "(expected <event>/<name>.jpg as in the ground truth)"
            )
        if opts.every < 1:
            raise ValueError(f"--every must be >= 1, got {opts.every}")
        keep = labelled[:: opts.every] if opts.every > 1 else None
        if keep is not None:
            found, labelled = keep, keep
        privacy = PrivacyConfig(
            mask_scale=opts.mask_scale,
            mask_shape=opts.mask_shape,
            min_face=opts.min_blur_face,
            min_coverage=opts.min_coverage,
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
            "gt": str(opts.gt),
            "every": opts.every,
        }
        score_cfg = ScoreConfig(join_output(output, "predictions"), anon_threshold, privacy)
        return EvaluatePlan(
            opts.images, output, spec, gt, score_cfg, meta, opts.max_pixels, opts.max_bytes,
            keep, len(found), len(labelled),
        )  # fmt: skip

    def announce(self, ep: EvaluatePlan, launch: Launch) -> list[str]:
        return [
            f"blurbeam {__version__} evaluate: {ep.labelled} labelled images of {ep.found}, "
            f"detector {ep.spec.name} (AP scores >= {ep.meta['ap_min_score']:g}, anonymize "
            f"threshold {ep.meta['anonymize_threshold']:g})"
        ]

    def build(self, p: beam.Pipeline, ep: EvaluatePlan, progress_dir: str | None) -> Any:
        return build(
            p, ep.images, ep.output, ep.spec, ep.gt, ep.score_cfg, ep.meta, ep.max_pixels,
            ep.max_bytes, ep.keep,
        )  # fmt: skip

    def finish(self, ep: EvaluatePlan, launch: Launch, result: Any, wall_s: float) -> Outcome:
        from blurbeam.shards import join_output

        metrics_path = join_output(ep.output, "metrics.json")
        try:
            with fsspec.open(metrics_path, "rb") as fh:
                m = json.loads(fh.read())
        except FileNotFoundError:
            return Outcome(
                {}, None, error=f"the pipeline finished without writing {metrics_path}", exit_code=2
            )
        m["wall_s"] = round(wall_s, 2)
        ap, pv = m["ap"], m["privacy"]
        t = {k: (v if v is not None else float("nan")) for k, v in m["timing_ms"].items()}
        br = pv["blur_recall"]
        lines = (
            f"AP easy {ap['easy']:.4f}  medium {ap['medium']:.4f}  hard {ap['hard']:.4f}",
            f"blur recall {'n/a' if br is None else f'{br:.4f}'} ({pv['faces_covered']}/"
            f"{pv['faces']} faces >= {ep.meta['privacy_config']['min_face']:g} px at score >= "
            f"{ep.meta['anonymize_threshold']:g}), false positives "
            f"{pv['false_positives_per_image'] or 0:.3f}/image",
            f"detect median {t['detect_median']:.0f} ms/image (p90 {t['detect_p90']:.0f}), "
            f"{m['errors']} errors, {wall_s:.1f} s wall",
            f"wrote {metrics_path}, pr_*.png and predictions/ under {ep.output}",
        )
        return Outcome(m, metrics_path, lines, exit_code=1 if m["errors"] else 0)


COMMAND = Evaluate()
#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True
add_arguments = COMMAND.add_arguments
run = COMMAND.run

"""``blurbeam deblur``: detect faces and restore (deblur) each face region, on Apache Beam.

Same reading, decoding, detection and fail-safe rules as ``blurbeam anonymize``: every input
yields exactly one record (status ok | no_faces | error with a one-line reason), writes are
atomic. Outputs: restored images mirroring the input paths, Parquet records under
``OUTPUT/records/`` (schema: ``schemas/deblur.py``), and ``OUTPUT/run.json``.
``--whole-image`` treats each input as one pre-cropped face (no detector).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from blurbeam.pipelines.scaffold import add_detector_options as add_detection_arguments
from blurbeam.pipelines.scaffold import option as _option

#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blurbeam.deblur.apply import DEFAULT_FEATHER, DEFAULT_MARGIN

    _option(parser, "input", required=True, help="image file, directory, glob or fsspec URL")
    _option(parser, "output", required=True, help="output directory or fsspec URL")
    add_detection_arguments(parser)
    _option(parser, "whole-image", action="store_true",
            help="each input is one pre-cropped face: restore it whole, no detection")  # fmt: skip
    from blurbeam.deblur.model import PRESETS

    _option(parser, "preset", default="default", choices=tuple(PRESETS),
            help="packaged network: default (photographs: camera shake, motion blur) or "
            "circular64 (64x64 faces blurred as the original notebook's pairs: a circular FFT "
            "blur and a min-max stretch)")  # fmt: skip
    _option(
        parser,
        "weights",
        default=None,
        help="restoration weights (default: the packaged network of --preset)",
    )
    _option(parser, "margin", type=float, default=DEFAULT_MARGIN,
            help="face crop side = margin x the larger box side")  # fmt: skip
    _option(parser, "feather", type=float, default=DEFAULT_FEATHER,
            help="fraction of the crop side over which the restoration fades out")  # fmt: skip
    _option(parser, "keep-metadata", action="store_true", help="keep EXIF (without GPS)")
    _option(parser, "keep-gps", action="store_true", help="with --keep-metadata, keep GPS too")
    _option(
        parser,
        "max-error-rate",
        type=float,
        default=0.0,
        help="exit non-zero above this error fraction",
    )
    _option(parser, "run-id", default=None, help="identifier of this run (default: time + random)")
    _option(
        parser, "progress", default="auto", choices=("auto", "on", "off"), help="live progress line"
    )


def read_records(output: str, run_id: str):
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from blurbeam.schemas.deblur import DEBLUR_SCHEMA

    fs, path = fsspec.core.url_to_fs(output)
    files = sorted(fs.glob(f"{path.rstrip('/')}/records/run-{run_id}*.parquet"))
    tables = [pq.read_table(f, filesystem=fs, schema=DEBLUR_SCHEMA) for f in files]
    return pa.concat_tables(tables) if tables else DEBLUR_SCHEMA.empty_table()


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from blurbeam import __version__
    from blurbeam.deblur.model import packaged_weights, weights_config
    from blurbeam.detectors import get_class
    from blurbeam.detectors.base import file_sha256
    from blurbeam.imageio import MetadataPolicy
    from blurbeam.pipelines.scaffold import Progress as _Progress
    from blurbeam.pipelines.scaffold import detector_spec, query_counters
    from blurbeam.shards import InputError, expand_input, join_output, write_bytes
    from blurbeam.task import RunContext, config_hash
    from blurbeam.transforms.deblur import Deblur

    prog = "blurbeam deblur"
    spec = detector_spec(args)
    det_params: dict[str, Any] = {}
    if not args.whole_image:
        try:
            det_cls = get_class(spec.name)
        except ValueError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        det_params = {
            "score_threshold": spec.score_threshold
            if spec.score_threshold is not None
            else det_cls.default_score_threshold,
            "min_face_size": spec.min_face_size,
            **dict(spec.options),
        }
    weights = args.weights or str(packaged_weights(args.preset)[0])
    try:
        weights_sha = file_sha256(weights)
    except OSError as exc:
        print(f"{prog}: error: cannot read weights: {exc}", file=sys.stderr)
        return 2
    policy = MetadataPolicy(keep_metadata=args.keep_metadata, keep_gps=args.keep_gps)
    method_params = {
        "margin": args.margin,
        "feather": args.feather,
        "whole_image": args.whole_image,
        "preset": None if args.weights else args.preset,
        "weights_sha256": weights_sha,
        "model": weights_config(weights).to_dict(),
    }
    config = {
        "detector": None if args.whole_image else {"name": spec.name, **det_params},
        "deblur": method_params,
        "metadata": {"keep_metadata": policy.keep_metadata, "keep_gps": policy.keep_gps},
        "max_pixels": args.max_pixels,
        "max_bytes": args.max_bytes,
    }
    run_id = (
        args.run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    )
    ctx = RunContext(
        run_id=run_id,
        detector="none" if args.whole_image else spec.name,
        detector_params=json.dumps(det_params, sort_keys=True),
        method="deblur",
        method_params=json.dumps(method_params, sort_keys=True),
        metadata_policy=json.dumps(config["metadata"], sort_keys=True),
        config_hash=config_hash(config),
    )
    from blurbeam.pipelines.scaffold import check_locations

    try:
        output = check_locations(args.input, args.output)
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    local = runner in ("DirectRunner", "direct", "FnApiRunner")
    total = None
    if local:
        try:
            total = sum(1 for _ in expand_input(args.input, exclude=output))
        except InputError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
    print(
        f"blurbeam {__version__}: deblur run {run_id}, "
        + ("whole images" if args.whole_image else f"detector {spec.name}")
        + f", runner {runner}"
        + (f", {total} inputs" if total is not None else ""),
        file=sys.stderr,
    )
    show = args.progress == "on" or (args.progress == "auto" and local)
    t0 = time.monotonic()
    with _Progress(total, enabled=show and local) as progress:
        p = beam.Pipeline(options=options)
        _ = p | "Deblur" >> Deblur(
            input_spec=args.input,
            output=output,
            ctx=ctx,
            detector=None if args.whole_image else spec,
            weights=args.weights,
            margin=args.margin,
            feather=args.feather,
            policy=policy,
            max_pixels=args.max_pixels,
            max_bytes=args.max_bytes,
            preset=args.preset,
            progress_dir=progress.dir,
        )
        result = p.run()
        result.wait_until_finish()
    wall = time.monotonic() - t0
    table = read_records(output, run_id)
    status = table.column("status").to_pylist()
    counts = {s: status.count(s) for s in ("ok", "no_faces", "error")}
    n = len(status)
    errors: dict[str, int] = {}
    for e in table.column("error").to_pylist():
        if e:
            errors[e] = errors.get(e, 0) + 1
    before = [v for row in table.column("sharpness_before").to_pylist() if row for v in row]
    after = [v for row in table.column("sharpness_after").to_pylist() if row for v in row]
    blur = sorted(v for row in table.column("blur_length_px").to_pylist() if row for v in row)
    summary = {
        "run_id": run_id,
        "package_version": __version__,
        "runner": runner,
        "input": args.input,
        "output": output,
        "images": n,
        "status_counts": counts,
        "faces": sum(x or 0 for x in table.column("num_faces").to_pylist()),
        "faces_restored": len(after),
        "mean_sharpness_before": round(sum(before) / len(before), 2) if before else None,
        "mean_sharpness_after": round(sum(after) / len(after), 2) if after else None,
        # the network's estimate of the blur it undid (source pixels), median over faces
        "median_blur_length_px": round(blur[len(blur) // 2], 2) if blur else None,
        "error_rate": counts["error"] / n if n else 0.0,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:20]),
        "wall_s": round(wall, 3),
        "images_per_s": round(n / wall, 3) if wall > 0 else None,
        "metrics": query_counters(result),
        "config_hash": ctx.config_hash,
        "config": config,
    }
    write_bytes(join_output(output, "run.json"), json.dumps(summary, indent=2).encode())
    print(
        f"done: {n} images ({counts['ok']} with faces, {counts['no_faces']} without, "
        f"{counts['error']} errors), {summary['faces_restored']} faces restored, sharpness "
        f"{summary['mean_sharpness_before']} -> {summary['mean_sharpness_after']}, {wall:.1f} s",
        file=sys.stderr,
    )
    print(
        f"images and records under {output} (run.json, records/run-{run_id}-*.parquet)",
        file=sys.stderr,
    )
    for reason, k in list(errors.items())[:5]:
        print(f"  error x{k}: {reason}", file=sys.stderr)
    if summary["error_rate"] > args.max_error_rate:
        print(f"{prog}: error rate {summary['error_rate']:.3f} exceeds --max-error-rate {args.max_error_rate}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0

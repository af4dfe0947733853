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
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from blurbeam import __version__
from blurbeam.detectors import DetectorSpec
from blurbeam.imageio import MetadataPolicy
from blurbeam.pipelines.scaffold import (
    Command,
    Launch,
    Outcome,
    add_detector_options,
    add_io_options,
    check_locations,
    check_run_id,
    detector_params,
    detector_spec,
    new_run_id,
    option,
    query_counters,
    run_summary,
)
from blurbeam.schemas import layout
from blurbeam.task import RunContext


class DeblurOptions(PipelineOptions):
    """Every flag of ``blurbeam deblur``."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        from blurbeam.deblur.apply import DEFAULT_FEATHER, DEFAULT_MARGIN
        from blurbeam.deblur.model import PRESETS

        add_io_options(parser)
        add_detector_options(parser)
        # fmt: off
        option(parser, "whole-image", action="store_true",
               help="each input is one pre-cropped face: restore it whole, no detection")
        option(parser, "preset", default="default", choices=tuple(PRESETS),
               help="packaged network: default (photographs: camera shake, motion blur) or "
               "circular64 (64x64 faces blurred as the original notebook's pairs: a circular FFT "
               "blur and a min-max stretch)")
        option(parser, "weights", default=None,
               help="restoration weights (default: the packaged network of --preset)")
        option(parser, "margin", type=float, default=DEFAULT_MARGIN,
               help="face crop side = margin x the larger box side")
        option(parser, "feather", type=float, default=DEFAULT_FEATHER,
               help="fraction of the crop side over which the restoration fades out")
        option(parser, "keep-metadata", action="store_true", help="keep EXIF (without GPS)")
        option(parser, "keep-gps", action="store_true", help="with --keep-metadata, keep GPS too")
        option(parser, "max-error-rate", type=float, default=0.0,
               help="exit non-zero above this error fraction")
        option(parser, "run-id", default=None,
               help="identifier of this run (default: time + random)")
        option(parser, "progress", default="auto", choices=("auto", "on", "off"),
               help="live progress line")
        # fmt: on


@dataclass(frozen=True)
class DeblurPlan:
    """Everything the pipeline needs, resolved from options once at launch."""

    input: str
    output: str
    ctx: RunContext
    spec: DetectorSpec | None  # None: --whole-image
    weights: str | None
    preset: str
    margin: float
    feather: float
    policy: MetadataPolicy
    config: dict[str, Any]
    max_pixels: int
    max_bytes: int
    max_error_rate: float
    total: int | None = None  # the inputs the launcher listed (local runners)


def plan(opts: DeblurOptions) -> DeblurPlan:
    """The run ``opts`` ask for, resolved and checked (ValueError: one line)."""
    from blurbeam.deblur.model import packaged_weights, weights_config
    from blurbeam.detectors.base import file_sha256
    from blurbeam.task import config_hash

    spec = None if opts.whole_image else detector_spec(opts)
    det_params = detector_params(spec) if spec is not None else {}
    weights = opts.weights or str(packaged_weights(opts.preset)[0])
    try:
        weights_sha = file_sha256(weights)
    except OSError as exc:
        raise ValueError(f"cannot read weights: {exc}") from None
    policy = MetadataPolicy(keep_metadata=opts.keep_metadata, keep_gps=opts.keep_gps)
    method_params = {
        "margin": opts.margin,
        "feather": opts.feather,
        "whole_image": opts.whole_image,
        "preset": None if opts.weights else opts.preset,
        "weights_sha256": weights_sha,
        "model": weights_config(weights).to_dict(),
    }
    config = {
        "detector": None if spec is None else {"name": spec.name, **det_params},
        "deblur": method_params,
        "metadata": {"keep_metadata": policy.keep_metadata, "keep_gps": policy.keep_gps},
        "max_pixels": opts.max_pixels,
        "max_bytes": opts.max_bytes,
    }
    check_run_id(opts.run_id)
    run_id = opts.run_id or new_run_id()
    ctx = RunContext(
        run_id=run_id,
        detector="none" if spec is None else spec.name,
        detector_params=json.dumps(det_params, sort_keys=True),
        method="deblur",
        method_params=json.dumps(method_params, sort_keys=True),
        metadata_policy=json.dumps(config["metadata"], sort_keys=True),
        config_hash=config_hash(config),
    )
    output = check_locations(opts.input, opts.output)
    return DeblurPlan(
        opts.input, output, ctx, spec, opts.weights, opts.preset, opts.margin, opts.feather,
        policy, config, opts.max_pixels, opts.max_bytes, opts.max_error_rate,
    )  # fmt: skip


def build(p: Any, dp: DeblurPlan, progress_dir: str | None = None) -> Any:
    """The deblur pipeline on ``p``; returns the record PCollection."""
    from blurbeam.transforms.deblur import Deblur

    return p | "Deblur" >> Deblur(
        input_spec=dp.input,
        output=dp.output,
        ctx=dp.ctx,
        detector=dp.spec,
        weights=dp.weights,
        margin=dp.margin,
        feather=dp.feather,
        policy=dp.policy,
        max_pixels=dp.max_pixels,
        max_bytes=dp.max_bytes,
        preset=dp.preset,
        progress_dir=progress_dir,
    )


def read_records(output: str, run_id: str) -> Any:
    """This run's deblur records as an Arrow table."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from blurbeam.schemas.deblur import DEBLUR_SCHEMA

    fs, path = fsspec.core.url_to_fs(output)
    files = sorted(fs.glob(layout.deblur_records_glob(path, run_id)))
    tables = [pq.read_table(f, filesystem=fs, schema=DEBLUR_SCHEMA) for f in files]
    return pa.concat_tables(tables) if tables else DEBLUR_SCHEMA.empty_table()


def summarize(table: Any, dp: DeblurPlan, wall_s: float, runner: str, metrics: dict[str, int]):
    """run.json: the run's counts, sharpness before and after, rate and config."""
    before = [v for row in table.column("sharpness_before").to_pylist() if row for v in row]
    after = [v for row in table.column("sharpness_after").to_pylist() if row for v in row]
    blur = sorted(v for row in table.column("blur_length_px").to_pylist() if row for v in row)
    return run_summary(
        table, ("ok", "no_faces", "error"), run_id=dp.ctx.run_id, runner=runner, input=dp.input,
        output=dp.output, wall_s=wall_s, metrics=metrics, config_hash=dp.ctx.config_hash,
        config=dp.config, faces_restored=len(after),
        mean_sharpness_before=round(sum(before) / len(before), 2) if before else None,
        mean_sharpness_after=round(sum(after) / len(after), 2) if after else None,
        # the network's estimate of the blur it undid (source pixels), median over faces
        median_blur_length_px=round(blur[len(blur) // 2], 2) if blur else None,
    )  # fmt: skip


class DeblurCommand(Command[DeblurPlan]):
    name = "deblur"
    options_class = DeblurOptions
    required = ("input", "output")

    def plan(self, opts: DeblurOptions, launch: Launch) -> DeblurPlan:
        dp = plan(opts)
        if not launch.local:
            return dp
        from dataclasses import replace

        from blurbeam.shards import InputError, expand_input

        try:
            total = sum(1 for _ in expand_input(dp.input, exclude=dp.output))
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return replace(dp, total=total)

    def total(self, dp: DeblurPlan) -> int | None:
        return dp.total

    def announce(self, dp: DeblurPlan, launch: Launch) -> list[str]:
        return [
            f"blurbeam {__version__}: deblur run {dp.ctx.run_id}, "
            + ("whole images" if dp.spec is None else f"detector {dp.spec.name}")
            + f", runner {launch.runner}"
            + (f", {dp.total} inputs" if dp.total is not None else "")
        ]

    def build(self, p: Any, dp: DeblurPlan, progress_dir: str | None) -> Any:
        return build(p, dp, progress_dir)

    def finish(self, dp: DeblurPlan, launch: Launch, result: Any, wall_s: float) -> Outcome:
        table = read_records(dp.output, dp.ctx.run_id)
        s = summarize(table, dp, wall_s, launch.runner, query_counters(result))
        c = s["status_counts"]
        lines = [
            f"done: {s['images']} images ({c['ok']} with faces, {c['no_faces']} without, "
            f"{c['error']} errors), {s['faces_restored']} faces restored, sharpness "
            f"{s['mean_sharpness_before']} -> {s['mean_sharpness_after']}, {wall_s:.1f} s",
            f"images and records under {dp.output} ({layout.RUN_SUMMARY}, "
            f"{layout.deblur_records_glob('', dp.ctx.run_id)})",
        ]
        lines += [f"  error x{k}: {reason}" for reason, k in list(s["errors"].items())[:5]]
        error = None
        if s["error_rate"] > dp.max_error_rate:
            error = f"error rate {s['error_rate']:.3f} exceeds --max-error-rate {dp.max_error_rate}"
        return Outcome(s, layout.run_summary(dp.output), tuple(lines), error)


COMMAND = DeblurCommand()
#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True
add_arguments = COMMAND.add_arguments
run = COMMAND.run

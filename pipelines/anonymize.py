"""``blurbeam anonymize``: detect and blur every face in an image dataset.

The flags are a Beam ``PipelineOptions`` subclass (``AnonymizeOptions``), so runners and templates
see them; Beam's own flags (``--runner``, ``--direct_num_workers``, ``--direct_running_mode`` ...)
pass through unchanged. ``plan`` resolves them into a ``RunPlan``, ``build`` is the pipeline, and
``AnonymizeCommand`` runs both through the shared scaffold (``pipelines/scaffold.py``).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from blurbeam import __version__
from blurbeam.blur import DEFAULT_MASK_SCALE, DEFAULT_STRENGTH, METHODS, BlurConfig
from blurbeam.detectors import DetectorSpec
from blurbeam.geometry import MASK_SHAPES
from blurbeam.imageio import MetadataPolicy
from blurbeam.pipelines.scaffold import (
    INPUTS_PER_LOCAL_WORKER,
    LOCAL_RUNNERS,
    Command,
    Launch,
    Outcome,
    absolute_input,
    add_detector_options,
    add_io_options,
    available_cores,
    check_locations,
    check_run_id,
    check_writable,
    default_local_workers,
    detector_params,
    detector_spec,
    finite_float,
    fraction,
    new_run_id,
    non_negative,
    non_negative_int,
    option,
    plural,
    positive_int,
    query_counters,
    run_summary,
    use_local_workers,
    worker_threads,
)
from blurbeam.schemas import layout
from blurbeam.schemas.audit import STATUSES
from blurbeam.shards.files import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_SEGMENT_SECONDS,
    MAX_VIDEO_DETECT_EVERY,
)
from blurbeam.task import RunContext, config_hash


class AnonymizeOptions(PipelineOptions):
    """Every flag of ``blurbeam anonymize`` (also the Flex Template's parameters)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_io_options(parser)
        add_detector_options(parser)
        option(parser, "method", default="gaussian", choices=METHODS, help="anonymization method")
        option(
            parser,
            "strength",
            type=finite_float,
            default=None,
            help="method strength relative to face size (defaults: "
            + ", ".join(
                f"{m} {s:g}" for m, s in DEFAULT_STRENGTH.items() if m not in ("solid", "learned")
            )
            + "); weaker than the privacy audit's safe minimum is refused unless "
            "--allow-weak-anonymization",
        )
        option(
            parser,
            "mask-scale",
            type=finite_float,
            default=DEFAULT_MASK_SCALE,
            help=f"enlarge each face box by this factor (default {DEFAULT_MASK_SCALE})",
        )
        option(
            parser,
            "mask-shape",
            default="ellipse",
            choices=MASK_SHAPES,
            help="shape of the anonymized region around each face (default ellipse)",
        )
        option(
            parser,
            "feather",
            type=non_negative,
            default=0.0,
            help="soft edge outside the mask (fraction of its size, default 0)",
        )
        option(
            parser,
            "allow-weak-anonymization",
            action="store_true",
            help="accept a method/strength/mask weaker than the weakest the privacy audit measured "
            "as safe (docs/PRIVACY.md); run.json and every record then say so",
        )
        option(
            parser,
            "keep-metadata",
            action="store_true",
            help="keep an allow-list of EXIF tags (camera, exposure, lens, dates; no GPS, MakerNote, "
            "thumbnail or other blobs: docs/SECURITY.md) and printable JPEG comments",
        )
        option(parser, "keep-gps", action="store_true", help="with --keep-metadata, keep GPS too")
        option(
            parser,
            "max-frames",
            type=positive_int,
            default=DEFAULT_MAX_FRAMES,
            help=f"video: reject a video of more frames (default {DEFAULT_MAX_FRAMES:,}); "
            "--max-pixels applies to each frame",
        )
        option(
            parser,
            "video-segment-seconds",
            type=non_negative,
            default=DEFAULT_SEGMENT_SECONDS,
            help="video: cut each video at keyframes into segments of about this many seconds, "
            f"processed by any worker and joined (default {DEFAULT_SEGMENT_SECONDS:g}); 0: each "
            "video whole on one worker. Segments are kept under --temp_location (else a local "
            "temporary folder on a local runner; a remote runner without --temp_location "
            "processes each video whole)",
        )
        option(
            parser,
            "video-detector",
            default=None,
            help="video: the detector for video frames, at its own default threshold (default: "
            "--detector's, with its threshold and options); e.g. centerface with "
            "--video-detect-every 2 for fast video while images keep the default",
        )
        option(
            parser,
            "video-detect-every",
            type=positive_int,
            default=1,
            help="video: run the detector on every k-th frame only (default 1: every frame, "
            f"at most {MAX_VIDEO_DETECT_EVERY}); tracks cover the frames between. Faster, at a "
            "measured cost in recall (docs/BENCHMARKS.md, Video)",
        )
        option(
            parser,
            "max-error-rate",
            type=fraction,
            default=0.0,
            help="exit 1 when the fraction of images that failed is above this (0-1, default 0)",
        )
        option(
            parser,
            "audit-shards",
            type=positive_int,
            default=1,
            help="number of audit Parquet files per run (default 1)",
        )
        option(
            parser, "run-id", default=None, help="identifier of this run (default: time + random)"
        )
        option(
            parser,
            "progress",
            default="auto",
            choices=("auto", "on", "off"),
            help="live progress line",
        )
        option(
            parser,
            "image-column",
            default=None,
            help="Parquet shards: the image column, binary or struct{bytes, path} (default: detected)",
        )
        option(
            parser,
            "allow-image-field",
            action="append",
            default=None,
            help="container shards: a field that holds images showing no one (e.g. masks), copied "
            "through unchanged (repeatable): a tar member extension after the key (seg.png), a "
            "Parquet column or a TFRecord feature. Other image data outside the image field is "
            "anonymized (a tar member that is an image) or its sample, row or Example left out with "
            "an error (media anywhere in another member, column or feature)",
        )
        option(
            parser,
            "skip-existing",
            action="store_true",
            help="skip inputs already done under the same config whose bytes and outputs are "
            "unchanged (audit under --output); errors are done too unless --retry-errors",
        )
        option(
            parser,
            "retry-errors",
            action="store_true",
            help="with --skip-existing, process inputs whose last record is an error again",
        )
        option(
            parser,
            "input-slices",
            type=non_negative_int,
            default=0,
            help="list the input in this many parallel pieces (default: 1; DaskRunner: its partitions)",
        )
        option(
            parser,
            "worker-threads",
            type=non_negative_int,
            default=None,
            help="CPU threads each worker process gives the detector's inference library "
            "(onnxruntime, OpenCV, TensorFlow); 0 = the libraries' defaults (every core). Default: "
            "cores / workers on DirectRunner with worker processes (the default local run's, or "
            "--direct_num_workers > 1 with multi_processing), else 0. Set it to 1 on "
            "Dataflow (one SDK process per vCPU) and to cores / processes on a Dask or Flink host",
        )
        option(
            parser,
            "opencv-threads",
            type=non_negative_int,
            default=None,
            help="cv2.setNumThreads in each worker (default: --worker-threads when it is > 0, "
            "else OpenCV's)",
        )
        option(
            parser,
            "corrections",
            default=None,
            help="a corrections.json exported from the review site (blurbeam review): re-process "
            "exactly those inputs with the reviewer's boxes added; refused when an input changed "
            "since it was reviewed",
        )
        option(
            parser,
            "drop-false-positives",
            action="store_true",
            help="with --corrections, leave the detections a reviewer marked as false positives "
            "unblurred (default: they stay blurred)",
        )


@dataclass(frozen=True)
class RunPlan:
    """Everything the pipeline needs, resolved from options once at launch."""

    input: str
    output: str
    run_id: str
    spec: DetectorSpec
    blur: BlurConfig
    policy: MetadataPolicy
    ctx: RunContext
    config: dict[str, Any]
    max_pixels: int
    max_bytes: int
    audit_shards: int = 1
    max_frames: int = DEFAULT_MAX_FRAMES
    video_segment_seconds: float = DEFAULT_SEGMENT_SECONDS  # 0: each video whole on one worker
    video_detect_every: int = 1  # the detector on every k-th video frame
    #: the videos' own detector (--video-detector) and their records' context; None: ``spec``
    video_spec: DetectorSpec | None = None
    video_ctx: RunContext | None = None
    image_column: str | None = None
    skip_existing: bool = False
    input_slices: int = 1
    opencv_threads: int | None = None
    worker_threads: int = 0  # the detector's thread budget per worker (0: library defaults)
    allow_image_fields: tuple[str, ...] = ()
    retry_errors: bool = False
    max_error_rate: float = 0.0
    corrections: Any = None  # a blurbeam.review.corrections.CorrectionPlan
    #: corrections earlier runs kept under the output (input URI -> Correction)
    stored_corrections: dict[str, Any] = field(default_factory=dict)
    #: the launcher's listing of the input (local runners), so the pipeline does not list again
    refs: list[Any] | None = None
    #: worker processes this local run chose (``default_local_workers``); 0: the user's flags
    local_workers: int = 0


def opencv_threads(opts: AnonymizeOptions, worker_threads: int) -> int | None:
    """``--opencv-threads``, else the worker's thread budget when it has one (None: OpenCV's)."""
    return opts.opencv_threads if opts.opencv_threads is not None else (worker_threads or None)


def work_units(refs: list[Any]) -> int:
    """The listing's work for ``default_local_workers``: a plain image is one unit, a container
    shard or a video (by its name) ``INPUTS_PER_LOCAL_WORKER``."""
    from blurbeam.shards import get_format
    from blurbeam.shards.files import VIDEO_MUXERS

    def heavy(ref: Any) -> bool:
        name = ref.uri.rsplit("/", 1)[-1].lower()
        return get_format(ref.kind).container or name.endswith(tuple(VIDEO_MUXERS))

    return sum(INPUTS_PER_LOCAL_WORKER if heavy(r) else 1 for r in refs if r.kind != "skipped")


def read_run_records(output: str, run_id: str) -> Any:
    """This run's audit records as an Arrow table."""
    from blurbeam.report import load_audit

    return load_audit(output, run_id=run_id)


def plan(opts: AnonymizeOptions, input_slices: int | None = None) -> RunPlan:
    """The run ``opts`` ask for, resolved and checked (ValueError: one line); ``input_slices``
    overrides ``--input-slices`` (the runner's, see ``scaffold.prepare_runner``)."""
    spec = detector_spec(opts)
    from blurbeam.detectors.none import check_method

    if check_method(opts.method, spec.name) != spec.name:  # --method learned: no detector
        spec = DetectorSpec("none")
    threads = worker_threads(opts, opts.worker_threads)
    det_params = detector_params(spec)  # fails early, with the list of backends, on a typo
    blur = BlurConfig(
        method=opts.method,
        strength=opts.strength,
        mask_scale=opts.mask_scale,
        mask_shape=opts.mask_shape,
        feather=opts.feather,
    )
    if blur.weakness and not opts.allow_weak_anonymization:
        raise ValueError(
            f"{blur.weakness}; faces may stay recognisable (docs/PRIVACY.md). Use a stronger "
            "setting, or pass --allow-weak-anonymization to accept it (recorded in run.json and "
            "every audit record)"
        )
    if not opts.input or not opts.output:
        raise ValueError("--input and --output are required")
    output = check_locations(opts.input, opts.output)
    policy = MetadataPolicy(keep_metadata=opts.keep_metadata, keep_gps=opts.keep_gps)
    from blurbeam import detectors
    from blurbeam.errors import one_line
    from blurbeam.extras import MissingExtra

    def fingerprint(spec: DetectorSpec, what: str) -> tuple[str, dict]:
        try:
            return detectors.describe(spec)
        except MissingExtra:  # its message names the extra to install
            raise
        except Exception as exc:
            raise ValueError(
                f"{what} {spec.name!r} cannot load its model here: {one_line(exc)}"
            ) from None

    model_sha, settings = fingerprint(spec, "detector")
    video_spec = video_params = None
    if opts.video_detector:
        from blurbeam.detectors.runtime import pin

        video_spec = pin(DetectorSpec(opts.video_detector))
        video_params = detector_params(video_spec)
        video_sha, video_settings = fingerprint(video_spec, "video detector")
    config = {
        "package_version": __version__,
        "models": {"detector": model_sha},
        # the settings the code resolves (its defaults included), so a changed default is a
        # new config even within one package version
        "detector": {"name": spec.name, **det_params, "settings": settings},
        "blur": blur.params(),
        "metadata": {"keep_metadata": policy.keep_metadata, "keep_gps": policy.keep_gps},
        "max_pixels": opts.max_pixels,
        "max_bytes": opts.max_bytes,
    }
    if opts.max_frames != DEFAULT_MAX_FRAMES:  # only when set, as image_column
        config["max_frames"] = opts.max_frames
    if opts.video_segment_seconds not in (0, DEFAULT_SEGMENT_SECONDS):  # 0: whole, same output
        config["video_segment_seconds"] = opts.video_segment_seconds
    if opts.video_detect_every > MAX_VIDEO_DETECT_EVERY:
        raise ValueError(
            f"--video-detect-every {opts.video_detect_every}: at most {MAX_VIDEO_DETECT_EVERY}; "
            "sparser search leaves faces unblurred between the searched frames (unmeasured)"
        )
    if opts.video_detect_every != 1:
        config["video_detect_every"] = opts.video_detect_every
    if video_spec is not None:  # only when set, so that runs without it keep their hash
        config["video_detector"] = {
            "name": video_spec.name,
            **video_params,
            "settings": video_settings,
        }
        config["models"]["video_detector"] = video_sha
    if opts.image_column:  # only when set, so that configs without it keep their hash
        config["image_column"] = opts.image_column
    allowed = tuple(sorted(set(opts.allow_image_field or ())))
    if allowed:
        config["allow_image_fields"] = list(allowed)
    corrections = None
    if opts.drop_false_positives and not opts.corrections:
        raise ValueError("--drop-false-positives needs --corrections")
    if opts.corrections:  # only when given, so that runs without it keep their hash
        from blurbeam.review.corrections import plan_corrections
        from blurbeam.shards import ShardOptions

        shard_opts = ShardOptions(
            max_bytes=opts.max_bytes, image_column=opts.image_column, allow_image_fields=allowed
        )
        corrections = plan_corrections(
            opts.corrections, opts.input, output, bool(opts.drop_false_positives), shard_opts
        )
        # recorded in run.json and the attestation, but not in the config hash: corrections are
        # data about single inputs (each corrected box is in its record, source "reviewer"),
        # so a corrected input stays covered and done under the run's config
        config["corrections"] = {**corrections.config(), "base_config_hash": config_hash(config)}
    from blurbeam.review.corrections import load_stored

    stored_corrections = load_stored(output)
    check_run_id(opts.run_id)
    run_id = opts.run_id or new_run_id()
    from blurbeam.attest import run_id_used

    if opts.run_id and run_id_used(output, run_id):
        raise ValueError(
            f"--run-id {run_id!r} was used before under {output!r}: a run's audit and "
            "attestation are never overwritten; choose a new run id"
        )
    ctx = RunContext(
        run_id=run_id,
        detector=spec.name,
        detector_params=json.dumps(det_params, sort_keys=True),
        method=blur.method,
        method_params=blur.params_json(),
        metadata_policy=json.dumps(config["metadata"], sort_keys=True),
        config_hash=config_hash({k: v for k, v in config.items() if k != "corrections"}),
    )
    return RunPlan(
        absolute_input(opts.input),
        output,
        run_id,
        spec,
        blur,
        policy,
        ctx,
        config,
        opts.max_pixels,
        opts.max_bytes,
        opts.audit_shards,
        max_frames=opts.max_frames,
        video_segment_seconds=opts.video_segment_seconds,
        video_detect_every=opts.video_detect_every,
        video_spec=video_spec,
        video_ctx=(
            replace(
                ctx,
                detector=video_spec.name,
                detector_params=json.dumps(video_params, sort_keys=True),
            )
            if video_spec is not None
            else None
        ),
        image_column=opts.image_column,
        skip_existing=bool(opts.skip_existing),
        input_slices=max(1, input_slices or opts.input_slices or 1),
        opencv_threads=opencv_threads(opts, threads),
        worker_threads=threads,
        allow_image_fields=allowed,
        retry_errors=bool(opts.retry_errors),
        max_error_rate=opts.max_error_rate,
        corrections=corrections,
        stored_corrections=stored_corrections,
    )


def build(
    p: beam.Pipeline,
    rp: RunPlan,
    progress_dir: str | None = None,
    fail_on_error_rate: bool = False,
):
    """The anonymize pipeline on ``p``; returns the audit-record PCollection. Its last step
    writes the run's attestation, manifest and done index (``FinalizeRun``); with
    ``fail_on_error_rate`` that step fails the job when the error rate is above
    ``--max-error-rate`` (for launchers that do not wait for the job)."""
    from blurbeam.transforms.anonymize import Anonymize
    from blurbeam.transforms.finalize import FinalizeRun
    from blurbeam.transforms.video import video_options

    corrected = rp.corrections is not None  # the reviewed inputs only, none skipped
    anonymize = Anonymize(
        input_spec=rp.input,
        output=rp.output,
        ctx=rp.ctx,
        detector=rp.spec,
        blur=rp.blur,
        policy=rp.policy,
        max_pixels=rp.max_pixels,
        max_bytes=rp.max_bytes,
        exclude=rp.output,
        image_column=rp.image_column,
        allow_image_fields=rp.allow_image_fields,
        skip_existing=(
            (rp.output, rp.ctx.config_hash, rp.run_id)
            if rp.skip_existing and not corrected
            else None
        ),
        retry_errors=rp.retry_errors,
        input_slices=rp.input_slices,
        refs=list(rp.corrections.refs) if corrected else rp.refs,
        opencv_threads=rp.opencv_threads,
        detector_threads=rp.worker_threads,
        expected_model_sha256=rp.config["models"]["detector"],
        expected_settings=rp.config["detector"].get("settings"),
        corrections=rp.corrections.by_input if corrected else None,
        drop_false_positives=bool(corrected and rp.corrections.drop_false_positives),
        stored_corrections=rp.stored_corrections,
        progress_dir=progress_dir,
        audit_shards=rp.audit_shards,
        video=video_options(
            rp.max_pixels,
            rp.max_frames,
            rp.policy,
            rp.video_segment_seconds or None,
            rp.video_detect_every,
        ),
        video_segments_dir=video_segments_dir(p.options, rp.run_id, rp.video_segment_seconds),
        video_detector=rp.video_spec,
        video_model_sha256=rp.config["models"].get("video_detector"),
        video_settings=(rp.config.get("video_detector") or {}).get("settings"),
        video_ctx=rp.video_ctx,
    )
    records = p | "Anonymize" >> anonymize
    _ = p | "FinalizeRun" >> FinalizeRun(
        records,
        anonymize.already_done,
        anonymize.audit_files,
        output=rp.output,
        run_id=rp.run_id,
        input_spec=rp.input,
        config=rp.config,
        config_hash=rp.ctx.config_hash,
        max_error_rate=rp.max_error_rate,
        fail_on_error_rate=fail_on_error_rate,
        corrections=rp.corrections.stored(rp.run_id) if rp.corrections else None,
    )
    return records


def video_segments_dir(options: PipelineOptions, run_id: str, segment_seconds: float) -> str | None:
    """Where the run keeps its temporary video segments, or None when each video is processed
    whole on one worker (``--video-segment-seconds 0``, or a remote runner without
    ``--temp_location``, whose workers share no disk). Never under the output."""
    if not segment_seconds:
        return None
    temp = options.view_as(GoogleCloudOptions).temp_location
    if temp:
        return f"{temp.rstrip('/')}/blurbeam-video-{run_id}"
    runner = options.view_as(StandardOptions).runner
    if runner is None or runner in LOCAL_RUNNERS:
        import tempfile

        return os.path.join(tempfile.gettempdir(), f"blurbeam-video-{run_id}")
    return None


def summarize(
    table: Any, rp: RunPlan, wall_s: float, runner: str, metrics: dict[str, int]
) -> dict[str, Any]:
    """run.json: the run's counts (from its audit records ``table``), rate and config."""
    return run_summary(
        table, STATUSES, run_id=rp.run_id, runner=runner, input=rp.input, output=rp.output,
        wall_s=wall_s, metrics=metrics, config_hash=rp.ctx.config_hash, config=rp.config,
        weak_anonymization=rp.blur.weakness, worker_threads=rp.worker_threads,
    )  # fmt: skip


class AnonymizeCommand(Command[RunPlan]):
    name = "anonymize"
    options_class = AnonymizeOptions
    required = ("input", "output")
    sliced_input = True

    def plan(self, opts: AnonymizeOptions, launch: Launch) -> RunPlan:
        rp = plan(opts, launch.input_slices)
        if not launch.local:
            return rp
        from blurbeam.shards import InputError, expand_input

        check_writable(rp.output, layout.AUDIT_DIR)
        try:
            refs = list(expand_input(rp.input, exclude=rp.output, every_file=True))
        except InputError as exc:
            raise ValueError(str(exc)) from None
        rp = replace(rp, refs=refs)
        workers = default_local_workers(
            launch.beam_args, launch.runner, work_units(refs), (rp.input, rp.output)
        )
        if not workers:
            return rp
        use_local_workers(launch.options, workers)
        threads = worker_threads(opts, opts.worker_threads)
        return replace(
            rp,
            worker_threads=threads,
            opencv_threads=opencv_threads(opts, threads),
            local_workers=workers,
        )

    def total(self, rp: RunPlan) -> int | None:
        if rp.refs is None or self._containers(rp):
            return None  # a shard's images are counted when read
        return len(rp.refs)

    @staticmethod
    def _containers(rp: RunPlan) -> int:
        from blurbeam.shards import get_format

        return sum(get_format(r.kind).container for r in rp.refs or ())

    def announce(self, rp: RunPlan, launch: Launch) -> list[str]:
        what = ""
        if rp.refs is not None:
            n, shards = len(rp.refs), self._containers(rp)
            what = (
                f", {plural(n - shards, 'file')} and {plural(shards, 'shard')}"
                if shards
                else f", {plural(n, 'input')}"
            )
        lines = [
            f"blurbeam {__version__}: run {rp.run_id}, detector {rp.spec.name}"
            + (f", video detector {rp.video_spec.name}" if rp.video_spec else "")
            + f", method {rp.blur.method}, runner {launch.runner}{what}"
            + (", skipping inputs already done" if rp.skip_existing else "")
        ]
        if rp.local_workers:
            cores = available_cores()
            lines[0] += (
                f", {rp.local_workers} worker processes x {rp.worker_threads} thread each"
                if rp.local_workers > 1
                else f", 1 worker process on {plural(cores, 'core')}"
            ) + " (--direct_num_workers and --direct_running_mode choose)"
        if (
            rp.video_segment_seconds
            and not launch.local
            and video_segments_dir(launch.options, rp.run_id, rp.video_segment_seconds) is None
        ):
            lines.append(
                f"{self.prog}: note: no --temp_location: each video is processed whole on one "
                "worker, not in segments across workers"
            )
        if rp.blur.weakness:
            lines.append(f"{self.prog}: warning: weak anonymization accepted: {rp.blur.weakness}")
        return lines

    def build(self, p: beam.Pipeline, rp: RunPlan, progress_dir: str | None) -> Any:
        return build(p, rp, progress_dir)

    def failed(self, rp: RunPlan, failure: str, started: float) -> str:
        """Remove every output written since the run ``started`` that no audit record accounts
        for (anonymized copies only; files the user keeps under --output from before the run
        are left alone)."""
        from blurbeam.report import remove_unaccounted_outputs

        try:
            removed = remove_unaccounted_outputs(rp.output, since=started)
            tidy = (
                f"; removed {plural(len(removed), 'output')} that had no audit record"
                if removed
                else "; every output left has an audit record"
            )
        except Exception as exc:  # the output itself may be what failed
            tidy = f"; could not check the outputs for missing audit records: {exc}"
        return failure + tidy

    def finish(self, rp: RunPlan, launch: Launch, result: Any, wall_s: float) -> Outcome:
        import fsspec

        att_uri = layout.attestation(rp.output, rp.run_id)
        afs, apath = fsspec.core.url_to_fs(att_uri)
        if not afs.exists(apath):
            return Outcome(
                {},
                None,
                error=f"the job finished but left no attestation at {att_uri}: the workers did "
                "not write where this launcher reads (a path that differs between them?)",
            )
        table = read_run_records(rp.output, rp.run_id)
        summary = summarize(table, rp, wall_s, launch.runner, query_counters(result))
        c, metrics = summary["status_counts"], summary["metrics"]
        lines = []
        if rp.skip_existing:
            # a counter never incremented is not reported: on a local runner that means none
            n = metrics.get("images_skipped", 0 if launch.local else None)
            lines.append(
                "skipped "
                + (plural(n, "input") if n is not None else "an unknown number of inputs (the "
                   "runner reports no metrics)")
                + " already done under this config"
            )  # fmt: skip
        lines.append(
            f"done: {plural(summary['images'], 'input')} ({c['ok']} with faces, {c['no_faces']} "
            f"without, {c['skipped']} not images or hidden, {plural(c['error'], 'error')}), "
            f"{plural(summary['faces'], 'face')}, {summary['wall_s']:.1f} s, "
            f"{summary['images_per_s'] or 0:.2f} inputs/s"
            + (f"; model loads {metrics['model_loads']}" if "model_loads" in metrics else "")
        )
        lines.append(
            f"images and audit records under {rp.output} ({layout.RUN_SUMMARY}, "
            f"{layout.audit_glob('', rp.run_id)}, attestation "
            f"{layout.attestation('', rp.run_id)})"
        )
        lines += [f"  error x{n}: {reason}" for reason, n in list(summary["errors"].items())[:5]]
        error = None
        if summary["error_rate"] > rp.max_error_rate:
            error = (
                f"error rate {summary['error_rate']:.3f} exceeds --max-error-rate "
                f"{rp.max_error_rate:g}"
            )
        return Outcome(summary, layout.run_summary(rp.output), tuple(lines), error)


COMMAND = AnonymizeCommand()
#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True
add_arguments = COMMAND.add_arguments
run = COMMAND.run

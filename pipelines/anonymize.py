"""``blurbeam anonymize``: detect and blur every face in an image dataset.

The flags are a Beam ``PipelineOptions`` subclass (``AnonymizeOptions``), so runners and templates
see them; Beam's own flags (``--runner``, ``--direct_num_workers``, ``--direct_running_mode`` ...)
pass through unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from blurbeam import __version__
from blurbeam.blur import DEFAULT_MASK_SCALE, DEFAULT_STRENGTH, METHODS, BlurConfig
from blurbeam.detectors import DetectorSpec
from blurbeam.geometry import MASK_SHAPES
from blurbeam.imageio import DEFAULT_MAX_PIXELS, MetadataPolicy
from blurbeam.shards import DEFAULT_MAX_BYTES, InputError, expand_input
from blurbeam.task import RunContext, config_hash

#: Methods the privacy audit (docs/PRIVACY.md) found leaking identity at their default strength.
WEAK_METHODS = {
    "bilateral": "bilateral blur keeps edges: the privacy audit re-identified 65% of faces at "
    "strength 0.25 and, at the default 1.0 with a 1.3 mask, still 6.8% by verification (target "
    "5%); use gaussian, pixelate or solid for anonymization",
}

#: The default backend: best blur recall on WIDER FACE dev305 (see docs/BENCHMARKS.md).
DEFAULT_DETECTOR = "multiscale"


def _option(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """Register ``--a-b`` with the alias ``--a_b`` (Beam and template style)."""
    flags = [f"--{name}"]
    if "-" in name:
        flags.append(f"--{name.replace('-', '_')}")
    parser.add_argument(*flags, dest=name.replace("-", "_"), **kw)


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_detection_arguments(parser: argparse.ArgumentParser) -> None:
    """Detector flags shared by every pipeline that detects faces."""
    _option(
        parser,
        "detector",
        default=DEFAULT_DETECTOR,
        help=f"face detector backend (default {DEFAULT_DETECTOR})",
    )
    _option(
        parser,
        "score-threshold",
        type=float,
        default=None,
        help="minimum detection score (default: the backend's)",
    )
    _option(
        parser,
        "min-face-size",
        type=float,
        default=0.0,
        help="ignore detections smaller than this many pixels",
    )
    _option(
        parser,
        "detector-option",
        type=_key_value,
        action="append",
        default=None,
        help="backend option KEY=VALUE (repeatable), e.g. max_side=2048",
    )
    _option(
        parser,
        "max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="reject larger images (decompression bombs)",
    )
    _option(parser, "max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="reject larger files")


def add_anonymize_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    _option(parser, "input", required=required, help="image file, directory, glob or fsspec URL")
    _option(parser, "output", required=required, help="output directory or fsspec URL")
    add_detection_arguments(parser)
    _option(parser, "method", default="gaussian", choices=METHODS, help="anonymization method")
    _option(
        parser,
        "strength",
        type=float,
        default=None,
        help="method strength relative to face size (defaults: "
        + ", ".join(f"{m} {s:g}" for m, s in DEFAULT_STRENGTH.items() if m != "solid")
        + ")",
    )
    _option(
        parser,
        "mask-scale",
        type=float,
        default=DEFAULT_MASK_SCALE,
        help=f"enlarge each face box by this factor (default {DEFAULT_MASK_SCALE})",
    )
    _option(parser, "mask-shape", default="ellipse", choices=MASK_SHAPES)
    _option(
        parser,
        "feather",
        type=float,
        default=0.0,
        help="soft edge outside the mask (fraction of its size)",
    )
    _option(
        parser, "keep-metadata", action="store_true", help="keep EXIF (without GPS or thumbnail)"
    )
    _option(parser, "keep-gps", action="store_true", help="with --keep-metadata, keep GPS too")
    _option(
        parser,
        "max-error-rate",
        type=float,
        default=0.0,
        help="exit non-zero above this error fraction",
    )
    _option(
        parser, "audit-shards", type=int, default=1, help="number of audit Parquet files per run"
    )
    _option(parser, "run-id", default=None, help="identifier of this run (default: time + random)")
    _option(
        parser, "progress", default="auto", choices=("auto", "on", "off"), help="live progress line"
    )
    _option(
        parser,
        "image-column",
        default=None,
        help="Parquet shards: the image column, binary or struct{bytes, path} (default: detected)",
    )
    _option(
        parser,
        "allow-image-field",
        action="append",
        default=None,
        help="container shards: a field that holds images showing no one (e.g. masks), copied "
        "through unchanged (repeatable): a tar member extension after the key (seg.png), a "
        "Parquet column or a TFRecord feature. Other image data outside the image field is "
        "anonymized (tar) or its row left out with an error (Parquet, TFRecord)",
    )
    _option(
        parser,
        "skip-existing",
        action="store_true",
        help="skip images that already succeeded under the same config (audit under --output)",
    )
    _option(
        parser,
        "input-slices",
        type=int,
        default=0,
        help="list the input in this many parallel pieces (default: 1; DaskRunner: its partitions)",
    )
    _option(
        parser,
        "worker-threads",
        type=int,
        default=None,
        help="CPU threads each worker process gives the detector's inference library "
        "(onnxruntime, OpenCV, TensorFlow); 0 = the libraries' defaults (every core). Default: "
        "cores / workers on DirectRunner with --direct_num_workers > 1, else 0. Set it to 1 on "
        "Dataflow (one SDK process per vCPU) and to cores / processes on a Dask or Flink host",
    )
    _option(
        parser,
        "opencv-threads",
        type=int,
        default=None,
        help="cv2.setNumThreads in each worker (default: --worker-threads when it is > 0, "
        "else OpenCV's)",
    )


class AnonymizeOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_anonymize_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_anonymize_arguments(parser, required=True)


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's limit, e.g. a Kubernetes ``cpu`` limit), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def worker_threads(opts: PipelineOptions, explicit: int | None = None) -> int:
    """The per-worker thread budget (``--worker-threads``), resolved for the runner.

    ``explicit`` is the flag's value. Unset, it is ``cores // workers`` on the DirectRunner in
    multi_processing mode with ``--direct_num_workers`` > 1 (the worker processes share this
    machine's cores; uncapped, each one's onnxruntime starts a thread per core and together they
    oversubscribe the machine), and 0 (the libraries' defaults) elsewhere, since a remote
    worker's core count is not known at launch.
    """
    if explicit is not None:
        if explicit < 0:
            raise ValueError(f"--worker-threads must be >= 0, got {explicit}")
        return int(explicit)
    runner = opts.view_as(StandardOptions).runner or "DirectRunner"
    if runner not in ("DirectRunner", "direct", "FnApiRunner"):
        return 0
    direct = opts.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":  # workers share one process, one model
        return 0
    workers = direct.direct_num_workers
    cores = available_cores()
    if workers == 0:  # Beam's convention: as many workers as cores
        workers = cores
    return max(1, cores // workers) if workers > 1 else 0


def detector_spec(opts: Any) -> DetectorSpec:
    return DetectorSpec(
        name=opts.detector,
        score_threshold=opts.score_threshold,
        min_face_size=opts.min_face_size or 0.0,
        options=tuple(sorted(dict(opts.detector_option or []).items())),
    )


@dataclass
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
    image_column: str | None = None
    skip_existing: bool = False
    input_slices: int = 1
    opencv_threads: int | None = None
    worker_threads: int = 0  # the detector's thread budget per worker (0: library defaults)
    allow_image_fields: tuple[str, ...] = ()

    def shard_options(self):
        from blurbeam.shards import ShardOptions

        return ShardOptions(
            max_bytes=self.max_bytes,
            image_column=self.image_column,
            allow_image_fields=self.allow_image_fields,
        )


def plan(opts: AnonymizeOptions) -> RunPlan:
    spec = detector_spec(opts)
    threads = worker_threads(opts, opts.worker_threads)
    from blurbeam.detectors import get_class

    det_cls = get_class(spec.name)  # fails early, with the list of backends, on a typo
    threshold = (
        spec.score_threshold
        if spec.score_threshold is not None
        else det_cls.default_score_threshold
    )
    blur = BlurConfig(
        method=opts.method,
        strength=opts.strength,
        mask_scale=opts.mask_scale,
        mask_shape=opts.mask_shape,
        feather=opts.feather,
    )
    policy = MetadataPolicy(keep_metadata=opts.keep_metadata, keep_gps=opts.keep_gps)
    det_params = {
        "score_threshold": threshold,
        "min_face_size": spec.min_face_size,
        **dict(spec.options),
    }
    config = {
        "detector": {"name": spec.name, **det_params},
        "blur": blur.params(),
        "metadata": {"keep_metadata": policy.keep_metadata, "keep_gps": policy.keep_gps},
        "max_pixels": opts.max_pixels,
        "max_bytes": opts.max_bytes,
    }
    if opts.image_column:  # only when set, so that configs without it keep their hash
        config["image_column"] = opts.image_column
    allowed = tuple(sorted(set(opts.allow_image_field or ())))
    if allowed:
        config["allow_image_fields"] = list(allowed)
    run_id = (
        opts.run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    )
    ctx = RunContext(
        run_id=run_id,
        detector=spec.name,
        detector_params=json.dumps(det_params, sort_keys=True),
        method=blur.method,
        method_params=blur.params_json(),
        metadata_policy=json.dumps(config["metadata"], sort_keys=True),
        config_hash=config_hash(config),
    )
    return RunPlan(
        opts.input,
        opts.output.rstrip("/") or "/",
        run_id,
        spec,
        blur,
        policy,
        ctx,
        config,
        opts.max_pixels,
        opts.max_bytes,
        opts.audit_shards,
        image_column=opts.image_column,
        skip_existing=bool(opts.skip_existing),
        input_slices=max(1, opts.input_slices or 1),
        opencv_threads=(
            opts.opencv_threads if opts.opencv_threads is not None else (threads or None)
        ),
        worker_threads=threads,
        allow_image_fields=allowed,
    )


def build(p: beam.Pipeline, rp: RunPlan, progress_dir: str | None = None):
    """The anonymize pipeline on ``p``; returns the audit-record PCollection."""
    from blurbeam.transforms.anonymize import AnonymizeAndWrite, DetectFaces, ReadImages

    tasks = p | "ReadImages" >> ReadImages(
        rp.input,
        rp.max_pixels,
        rp.max_bytes,
        exclude=rp.output,
        image_column=rp.image_column,
        skip_existing=(rp.output, rp.ctx.config_hash, rp.run_id) if rp.skip_existing else None,
        input_slices=rp.input_slices,
        opencv_threads=rp.opencv_threads,
        allow_image_fields=rp.allow_image_fields,
    )
    detected = tasks | "DetectFaces" >> DetectFaces(rp.spec, threads=rp.worker_threads)
    return detected | "AnonymizeAndWrite" >> AnonymizeAndWrite(
        rp.output,
        rp.ctx,
        rp.blur,
        rp.policy,
        progress_dir,
        rp.audit_shards,
        shard_options=rp.shard_options(),
    )


DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DEFAULT_DASK_PARTITIONS = 16


def prepare_runner(beam_args: list[str], input_slices: int) -> tuple[list[str], int]:
    """Runner-specific defaults: ``--runner DaskRunner`` is Beam's DaskRunner (by its full
    path), and there the input is listed in as many slices as the Dask bags have partitions
    (``--dask_npartitions``, default 16), since Dask ignores Reshuffle. Returns the Beam arguments
    and the number of input slices (``input_slices`` when it is set, else 1 elsewhere)."""
    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner or ""
    if runner not in ("DaskRunner", "dask", DASK_RUNNER):
        return args, max(1, input_slices or 1)
    args += ["--runner", DASK_RUNNER]
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dask_npartitions", type=int, default=None)
    partitions = parser.parse_known_args(args)[0].dask_npartitions
    slices = input_slices or partitions or DEFAULT_DASK_PARTITIONS
    if partitions is None and "--dask_partition_size" not in " ".join(args):
        args.append(f"--dask_npartitions={slices}")
    return args, slices


class _Progress:
    """A live progress line for local runs: worker processes drop counts in a temp dir."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.dir = tempfile.mkdtemp(prefix="blurbeam-progress-") if enabled else None
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True) if enabled else None

    def __enter__(self) -> _Progress:
        if self._thread:
            self._thread.start()
        return self

    def _read(self) -> dict[str, int]:
        agg = {"done": 0, "faces": 0, "error": 0}
        for name in os.listdir(self.dir):
            if name.endswith(".json"):
                try:
                    with open(os.path.join(self.dir, name)) as fh:
                        for k, v in json.load(fh).items():
                            agg[k] = agg.get(k, 0) + v
                except (OSError, ValueError):
                    continue
        return agg

    def _line(self) -> str:
        c = self._read()
        elapsed = time.monotonic() - self._t0
        total = f"/{self.total}" if self.total is not None else ""
        rate = c["done"] / elapsed if elapsed > 0 else 0.0
        return f"images {c['done']}{total}  faces {c['faces']}  errors {c['error']}  {rate:.1f} images/s"

    def _loop(self) -> None:
        tty = sys.stderr.isatty()
        last = 0.0
        while not self._stop.wait(0.5):
            if tty:
                print("\r" + self._line(), end="", file=sys.stderr, flush=True)
            elif time.monotonic() - last >= 10:
                print(self._line(), file=sys.stderr, flush=True)
                last = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()
            print(("\r" if sys.stderr.isatty() else "") + self._line(), file=sys.stderr, flush=True)
            shutil.rmtree(self.dir, ignore_errors=True)


def read_run_records(output: str, run_id: str):
    """This run's audit records as an Arrow table."""
    import fsspec
    import pyarrow.parquet as pq

    from blurbeam.schemas.audit import AUDIT_SCHEMA

    fs, path = fsspec.core.url_to_fs(output)
    files = sorted(fs.glob(f"{path.rstrip('/')}/audit/run-{run_id}*.parquet"))
    tables = [pq.read_table(f, filesystem=fs, schema=AUDIT_SCHEMA) for f in files]
    if not tables:
        return AUDIT_SCHEMA.empty_table()
    import pyarrow as pa

    return pa.concat_tables(tables)


def summarize(
    table, rp: RunPlan, wall_s: float, runner: str, metrics: dict[str, int]
) -> dict[str, Any]:
    status = table.column("status").to_pylist()
    counts = {s: status.count(s) for s in ("ok", "no_faces", "error")}
    n = len(status)
    faces = sum(x or 0 for x in table.column("num_faces").to_pylist())
    errors: dict[str, int] = {}
    for e in table.column("error").to_pylist():
        if e:
            errors[e] = errors.get(e, 0) + 1
    return {
        "run_id": rp.run_id,
        "package_version": __version__,
        "runner": runner,
        "input": rp.input,
        "output": rp.output,
        "images": n,
        "status_counts": counts,
        "faces": faces,
        "error_rate": counts["error"] / n if n else 0.0,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:20]),
        "wall_s": round(wall_s, 3),
        "images_per_s": round(n / wall_s, 3) if wall_s > 0 else None,
        "metrics": metrics,
        "worker_threads": rp.worker_threads,
        "config_hash": rp.ctx.config_hash,
        "config": rp.config,
    }


def query_counters(result) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for c in result.metrics().query()["counters"]:
            if c.key.metric.namespace == "blurbeam":
                out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(
                    c.committed or c.attempted or 0
                )
    except Exception:  # some runners do not report metrics
        pass
    return out


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    beam_args, slices = prepare_runner(beam_args, args.input_slices)
    options = PipelineOptions(beam_args, **vars(args))
    opts = options.view_as(AnonymizeOptions)
    try:
        rp = plan(opts)
    except ValueError as exc:
        print(f"blurbeam anonymize: error: {exc}", file=sys.stderr)
        return 2
    rp.input_slices = slices
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    local = runner in ("DirectRunner", "direct", "FnApiRunner")
    total = None
    what = ""
    if local:
        try:
            refs = list(expand_input(rp.input, exclude=rp.output))
        except InputError as exc:
            print(f"blurbeam anonymize: error: {exc}", file=sys.stderr)
            return 2
        if all(r.kind == "file" for r in refs):
            total = len(refs)
            what = f", {total} inputs"
        else:
            what = f", {len(refs)} files and shards"
    print(
        f"blurbeam {__version__}: run {rp.run_id}, detector {rp.spec.name}, method {rp.blur.method}, "
        f"runner {runner}{what}" + (", skipping images already done" if rp.skip_existing else ""),
        file=sys.stderr,
    )
    if rp.blur.method in WEAK_METHODS:
        print(f"blurbeam anonymize: warning: {WEAK_METHODS[rp.blur.method]}", file=sys.stderr)
    show = opts.progress == "on" or (opts.progress == "auto" and local)
    t0 = time.monotonic()
    with _Progress(total, enabled=show and local) as progress:
        p = beam.Pipeline(options=options)
        build(p, rp, progress.dir)
        result = p.run()
        try:
            result.wait_until_finish()
        finally:
            client = getattr(result, "client", None)  # DaskRunner's dask.distributed client
            if client is not None:
                client.close()
    wall = time.monotonic() - t0
    table = read_run_records(rp.output, rp.run_id)
    summary = summarize(table, rp, wall, runner, query_counters(result))
    if rp.skip_existing:
        summary["images_skipped"] = summary["metrics"].get("images_skipped")
    from blurbeam.shards import join_output, write_bytes

    write_bytes(join_output(rp.output, "run.json"), json.dumps(summary, indent=2).encode())
    c = summary["status_counts"]
    if rp.skip_existing:
        print(
            f"skipped {summary['images_skipped'] if summary['images_skipped'] is not None else '?'}"
            " images already done under this config",
            file=sys.stderr,
        )
    print(
        f"done: {summary['images']} images ({c['ok']} with faces, {c['no_faces']} without, "
        f"{c['error']} errors), {summary['faces']} faces, {summary['wall_s']:.1f} s, "
        f"{summary['images_per_s'] or 0:.2f} images/s; model loads {summary['metrics'].get('model_loads', '?')}",
        file=sys.stderr,
    )
    print(
        f"images and audit records under {rp.output} (run.json, audit/run-{rp.run_id}-*.parquet)",
        file=sys.stderr,
    )
    for reason, n in list(summary["errors"].items())[:5]:
        print(f"  error x{n}: {reason}", file=sys.stderr)
    if summary["error_rate"] > opts.max_error_rate:
        print(
            f"blurbeam anonymize: error rate {summary['error_rate']:.3f} exceeds --max-error-rate "
            f"{opts.max_error_rate}",
            file=sys.stderr,
        )
        return 1
    return 0

"""``blurbeam anonymize``: detect and blur every face in an image dataset.

The flags are a Beam ``PipelineOptions`` subclass (``AnonymizeOptions``), so runners and templates
see them; Beam's own flags (``--runner``, ``--direct_num_workers``, ``--direct_running_mode`` ...)
pass through unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from blurbeam import __version__
from blurbeam.blur import DEFAULT_MASK_SCALE, DEFAULT_STRENGTH, METHODS, BlurConfig
from blurbeam.detectors import DetectorSpec
from blurbeam.geometry import MASK_SHAPES
from blurbeam.imageio import DEFAULT_MAX_PIXELS, MetadataPolicy
from blurbeam.schemas.audit import STATUSES
from blurbeam.shards import DEFAULT_MAX_BYTES, InputError, expand_input, get_format
from blurbeam.task import RunContext, config_hash

#: Methods the privacy audit (docs/PRIVACY.md) found leaking identity at their default strength.
WEAK_METHODS = {
    "bilateral": "bilateral blur keeps edges: the privacy audit re-identified 65% of faces at "
    "strength 0.25 and, at the default 1.0 with a 1.3 mask, still 6.8% by verification (target "
    "5%); use gaussian, pixelate or solid for anonymization",
}

#: What --run-id may be: it is part of file names (a "/" would hide the run's audit).
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: The default backend: best blur recall on WIDER FACE dev305 (see docs/BENCHMARKS.md).
DEFAULT_DETECTOR = "multiscale"


def _option(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """Register ``--a-b`` with the alias ``--a_b`` (Beam and template style)."""
    flags = [f"--{name}"]
    if "-" in name:
        flags.append(f"--{name.replace('-', '_')}")
    parser.add_argument(*flags, dest=name.replace("-", "_"), **kw)


def finite_float(text: str) -> float:
    """A finite number (``nan`` and ``inf`` would reach the audit as invalid JSON)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


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
    from blurbeam.detectors import available, get_class

    # the backends this package ships (not ones a plugin or a test registered in this process)
    shipped = [n for n in available() if get_class(n).__module__.startswith("blurbeam.detectors.")]
    _option(
        parser,
        "detector",
        default=DEFAULT_DETECTOR,
        help=f"face detector backend: {', '.join(shipped)}, or a plugin's "
        f"(default {DEFAULT_DETECTOR})",
    )
    _option(
        parser,
        "score-threshold",
        type=fraction,
        default=None,
        help="minimum detection score, 0-1 (default: the backend's)",
    )
    _option(
        parser,
        "min-face-size",
        type=non_negative,
        default=0.0,
        help="ignore detections smaller than this many pixels (default 0)",
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
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help=f"reject larger images, decompression bombs (default {DEFAULT_MAX_PIXELS:,})",
    )
    _option(
        parser,
        "max-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BYTES,
        help=f"reject larger files (default {DEFAULT_MAX_BYTES:,} bytes)",
    )


def add_anonymize_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    _option(parser, "input", required=required, help="image file, directory, glob or fsspec URL")
    _option(parser, "output", required=required, help="output directory or fsspec URL")
    add_detection_arguments(parser)
    _option(parser, "method", default="gaussian", choices=METHODS, help="anonymization method")
    _option(
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
    _option(
        parser,
        "mask-scale",
        type=finite_float,
        default=DEFAULT_MASK_SCALE,
        help=f"enlarge each face box by this factor (default {DEFAULT_MASK_SCALE})",
    )
    _option(
        parser,
        "mask-shape",
        default="ellipse",
        choices=MASK_SHAPES,
        help="shape of the anonymized region around each face (default ellipse)",
    )
    _option(
        parser,
        "feather",
        type=non_negative,
        default=0.0,
        help="soft edge outside the mask (fraction of its size, default 0)",
    )
    _option(
        parser,
        "allow-weak-anonymization",
        action="store_true",
        help="accept a method/strength/mask weaker than the weakest the privacy audit measured "
        "as safe (docs/PRIVACY.md); run.json and every record then say so",
    )
    _option(
        parser,
        "keep-metadata",
        action="store_true",
        help="keep an allow-list of EXIF tags (camera, exposure, lens, dates; no GPS, MakerNote, "
        "thumbnail or other blobs: docs/SECURITY.md) and printable JPEG comments",
    )
    _option(parser, "keep-gps", action="store_true", help="with --keep-metadata, keep GPS too")
    _option(
        parser,
        "max-error-rate",
        type=fraction,
        default=0.0,
        help="exit 1 when the fraction of images that failed is above this (0-1, default 0)",
    )
    _option(
        parser,
        "audit-shards",
        type=positive_int,
        default=1,
        help="number of audit Parquet files per run (default 1)",
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
        "anonymized (a tar member that is an image) or its sample, row or Example left out with "
        "an error (media anywhere in another member, column or feature)",
    )
    _option(
        parser,
        "skip-existing",
        action="store_true",
        help="skip inputs already done under the same config whose bytes and outputs are "
        "unchanged (audit under --output); errors are done too unless --retry-errors",
    )
    _option(
        parser,
        "retry-errors",
        action="store_true",
        help="with --skip-existing, process inputs whose last record is an error again",
    )
    _option(
        parser,
        "input-slices",
        type=non_negative_int,
        default=0,
        help="list the input in this many parallel pieces (default: 1; DaskRunner: its partitions)",
    )
    _option(
        parser,
        "worker-threads",
        type=non_negative_int,
        default=None,
        help="CPU threads each worker process gives the detector's inference library "
        "(onnxruntime, OpenCV, TensorFlow); 0 = the libraries' defaults (every core). Default: "
        "cores / workers on DirectRunner with --direct_num_workers > 1, else 0. Set it to 1 on "
        "Dataflow (one SDK process per vCPU) and to cores / processes on a Dask or Flink host",
    )
    _option(
        parser,
        "opencv-threads",
        type=non_negative_int,
        default=None,
        help="cv2.setNumThreads in each worker (default: --worker-threads when it is > 0, "
        "else OpenCV's)",
    )
    _option(
        parser,
        "corrections",
        default=None,
        help="a corrections.json exported from the review site (blurbeam review): re-process "
        "exactly those inputs with the reviewer's boxes added; refused when an input changed "
        "since it was reviewed",
    )
    _option(
        parser,
        "drop-false-positives",
        action="store_true",
        help="with --corrections, leave the detections a reviewer marked as false positives "
        "unblurred (default: they stay blurred)",
    )


class AnonymizeOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_anonymize_arguments(parser)


#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True


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
    retry_errors: bool = False
    max_error_rate: float = 0.0
    corrections: Any = None  # a blurbeam.review.corrections.CorrectionPlan
    #: corrections earlier runs kept under the output (input URI -> Correction)
    stored_corrections: dict[str, Any] = field(default_factory=dict)
    #: the launcher's listing of the input (local runners), so the pipeline does not list again
    refs: list[Any] | None = None

    def shard_options(self):
        from blurbeam.shards import ShardOptions

        return ShardOptions(
            max_bytes=self.max_bytes,
            image_column=self.image_column,
            allow_image_fields=self.allow_image_fields,
        )


def check_locations(input_spec: str, output: str) -> str:
    """The output as a canonical location (an absolute path locally), after checking that
    writing there cannot touch the input: the output may lie inside the input (it is then left
    out of the listing) but must not be the input's root, hold the input, or be a file. Every
    spelling of a place (``in/.``, ``in//x``, ``x/../x``, a symlink) is compared as the place
    itself. Raises ValueError with a one-line reason."""
    from blurbeam.shards import canonical, input_root, is_within, to_uri

    try:
        fs, _, root, _ = input_root(input_spec, list_files=False)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    in_root = canonical(to_uri(fs, root or "/"))
    out = canonical(output)
    if is_within(in_root, out):
        raise ValueError(
            f"--output {output!r} is the input's folder or holds it ({in_root}): anonymized "
            "copies would replace the originals; choose a folder outside the input"
        )
    ofs, opath = fsspec.core.url_to_fs(output)
    if ofs.isfile(opath):
        raise ValueError(f"--output {output!r} is a file, not a folder")
    return out


def absolute_input(spec: str) -> str:
    """``--input`` as recorded in run.json and the attestation: a local path made absolute (a
    report run from another folder checks the same input), a URL as given."""
    if "://" in spec:
        return spec
    return os.path.abspath(spec)


def check_writable(output: str) -> None:
    """Fail before the pipeline starts when a local output (or its audit folder) cannot be
    written: create both and write and remove a probe file in each."""
    from blurbeam.shards import is_local

    fs, path = fsspec.core.url_to_fs(output)
    if not is_local(fs):
        return
    for folder in (path, os.path.join(path, "audit")):
        try:
            os.makedirs(folder, exist_ok=True)
            probe = os.path.join(folder, f".blurbeam-probe-{os.getpid()}")
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise ValueError(
                f"cannot write to {folder!r}: {exc.strerror or type(exc).__name__}"
            ) from None


def plan(opts: AnonymizeOptions) -> RunPlan:
    spec = detector_spec(opts)
    from blurbeam.detectors.none import check_method

    if check_method(opts.method, spec.name) != spec.name:  # --method learned: no detector
        spec = DetectorSpec("none")
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
    det_params = {
        "score_threshold": threshold,
        "min_face_size": spec.min_face_size,
        **dict(spec.options),
    }
    from blurbeam.detectors import model_fingerprint
    from blurbeam.task import one_line

    try:
        model_sha = model_fingerprint(spec)
    except Exception as exc:
        raise ValueError(
            f"detector {spec.name!r} cannot load its model here: {one_line(exc)}"
        ) from None
    config = {
        "package_version": __version__,
        "models": {"detector": model_sha},
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
    if opts.run_id and not RUN_ID_PATTERN.fullmatch(opts.run_id):
        raise ValueError(
            f"--run-id {opts.run_id!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "(it names files)"
        )
    run_id = (
        opts.run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    )
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
        image_column=opts.image_column,
        skip_existing=bool(opts.skip_existing),
        input_slices=max(1, opts.input_slices or 1),
        opencv_threads=(
            opts.opencv_threads if opts.opencv_threads is not None else (threads or None)
        ),
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
        corrections=rp.corrections.by_input if corrected else None,
        drop_false_positives=bool(corrected and rp.corrections.drop_false_positives),
        stored_corrections=rp.stored_corrections,
        progress_dir=progress_dir,
        audit_shards=rp.audit_shards,
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
        return f"inputs {c['done']}{total}  faces {c['faces']}  errors {c['error']}  {rate:.1f} inputs/s"

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
    counts = {s: status.count(s) for s in STATUSES}
    n = len(status)
    attempted = n - counts["skipped"]  # the error rate is over the images, not skipped files
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
        "error_rate": counts["error"] / attempted if attempted else 0.0,
        "weak_anonymization": rp.blur.weakness,
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


def _error(message: str) -> None:
    print(f"blurbeam anonymize: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from blurbeam.task import one_line

    beam_args, slices = prepare_runner(beam_args, args.input_slices)
    options = PipelineOptions(beam_args, **vars(args))
    opts = options.view_as(AnonymizeOptions)
    try:
        rp = plan(opts)
    except (ValueError, OSError) as exc:
        _error(str(exc) if isinstance(exc, ValueError) else one_line(exc))
        return 2
    rp.input_slices = slices
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    local = runner in ("DirectRunner", "direct", "FnApiRunner")
    total = None
    if local:
        try:
            check_writable(rp.output)
            refs = list(expand_input(rp.input, exclude=rp.output, every_file=True))
        except (InputError, ValueError) as exc:
            _error(str(exc))
            return 2
        rp.refs = refs
        containers = sum(get_format(r.kind).container for r in refs)
        total = None if containers else len(refs)  # a shard's images are counted when read
        what = (
            f", {_plural(len(refs), 'input')}"
            if not containers
            else (f", {_plural(len(refs) - containers, 'file')} and {_plural(containers, 'shard')}")
        )
    else:
        what = ""
    print(
        f"blurbeam {__version__}: run {rp.run_id}, detector {rp.spec.name}, method {rp.blur.method}, "
        f"runner {runner}{what}" + (", skipping inputs already done" if rp.skip_existing else ""),
        file=sys.stderr,
    )
    if rp.blur.weakness:
        print(
            f"blurbeam anonymize: warning: weak anonymization accepted: {rp.blur.weakness}",
            file=sys.stderr,
        )
    show = opts.progress == "on" or (opts.progress == "auto" and local)
    if not os.environ.get("BLURBEAM_DEBUG"):
        # a failing step is reported below in one line; Beam would also log its traceback
        logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    t0 = time.monotonic()
    started = time.time()  # outputs older than this are not this run's
    with _Progress(total, enabled=show and local) as progress:
        p = beam.Pipeline(options=options)
        build(p, rp, progress.dir)
        try:
            result = p.run()
            restore = _cancel_on_sigterm(result)
            try:
                result.wait_until_finish()
            finally:
                restore()
                client = getattr(result, "client", None)  # DaskRunner's dask.distributed client
                if client is not None:
                    client.close()
        except Exception as exc:
            failure = one_line(exc)
        else:
            failure = None
    if failure is not None:
        return _failed(rp, failure, started)
    wall = time.monotonic() - t0
    from blurbeam.attest import attestation_uri

    att_uri = attestation_uri(rp.output, rp.run_id)
    afs, apath = fsspec.core.url_to_fs(att_uri)
    if not afs.exists(apath):
        _error(
            f"the job finished but left no attestation at {att_uri}: the workers did not write "
            "where this launcher reads (a path that differs between them?)"
        )
        return 1
    table = read_run_records(rp.output, rp.run_id)
    summary = summarize(table, rp, wall, runner, query_counters(result))
    from blurbeam.shards import join_output, write_bytes

    write_bytes(join_output(rp.output, "run.json"), json.dumps(summary, indent=2).encode())
    c = summary["status_counts"]
    if rp.skip_existing:
        # a counter never incremented is not reported: on a local runner that means none
        n = summary["metrics"].get("images_skipped", 0 if local else None)
        print(
            "skipped "
            + (_plural(n, "input") if n is not None else "an unknown number of inputs (the runner "
               "reports no metrics)")
            + " already done under this config",
            file=sys.stderr,
        )  # fmt: skip
    print(
        f"done: {_plural(summary['images'], 'input')} ({c['ok']} with faces, {c['no_faces']} "
        f"without, {c['skipped']} not images or hidden, {_plural(c['error'], 'error')}), "
        f"{_plural(summary['faces'], 'face')}, {summary['wall_s']:.1f} s, "
        f"{summary['images_per_s'] or 0:.2f} inputs/s"
        + (
            f"; model loads {summary['metrics']['model_loads']}"
            if "model_loads" in summary["metrics"]
            else ""
        ),
        file=sys.stderr,
    )
    print(
        f"images and audit records under {rp.output} (run.json, audit/run-{rp.run_id}-*.parquet, "
        f"attestation runs/{rp.run_id}.json)",
        file=sys.stderr,
    )
    for reason, n in list(summary["errors"].items())[:5]:
        print(f"  error x{n}: {reason}", file=sys.stderr)
    if summary["error_rate"] > opts.max_error_rate:
        _error(
            f"error rate {summary['error_rate']:.3f} exceeds --max-error-rate "
            f"{opts.max_error_rate:g}"
        )
        return 1
    return 0


def _cancel_on_sigterm(result):
    """While this launcher waits for a job on a cluster (Flink, Dataflow, Dask), SIGTERM (a
    scheduler killing the task) cancels the job before the launcher exits with 143, so that no
    job runs on unwatched. Returns the function that puts the previous handler back."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum, frame):
        with contextlib.suppress(Exception):
            result.cancel()
        _error("terminated: the job was cancelled")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _failed(rp: RunPlan, failure: str, started: float) -> int:
    """A pipeline that failed part way: remove every output written since the run ``started``
    that no audit record accounts for (anonymized copies only; files the user keeps under
    --output from before the run are left alone), then report in one line."""
    from blurbeam.report import remove_unaccounted_outputs

    try:
        removed = remove_unaccounted_outputs(rp.output, since=started)
        tidy = (
            f"; removed {_plural(len(removed), 'output')} that had no audit record"
            if removed
            else "; every output left has an audit record"
        )
    except Exception as exc:  # the output itself may be what failed
        tidy = f"; could not check the outputs for missing audit records: {exc}"
    _error(f"the pipeline failed: {failure}{tidy}")
    return 1

"""The run scaffold every blurbeam pipeline shares.

A pipeline is a ``Command``: its flags are one ``PipelineOptions`` subclass (so runners and
templates see them), and it says how to ``plan`` a run (every launch-time check), ``build`` the
Beam pipeline and ``finish`` (the summary, run.json and the exit code). ``Command.run`` is the
lifecycle around those steps, the same for every pipeline: parse, plan (a bad flag or setting is
one line, exit 2), a progress line on local runs, run the pipeline with SIGTERM cancelling a
cluster job, one line on failure (exit 1), the summary, exit code. ``pipelines/cli.py`` calls a
command through its module's ``add_arguments(parser)`` and ``run(args, beam_args)``.

Also here, the helpers pipelines share: flag declaration and value checks, the detector flags
and their resolved threshold, run ids, the worker thread budget and runner preparation.
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
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)

from blurbeam.detectors import DetectorSpec

# ---------------------------------------------------------------------------------------------
# Flags


def option(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """Declare ``--a-b`` with the alias ``--a_b`` (Beam and template style), dest ``a_b``.

    Beam parses the flags of every PipelineOptions subclass in one parser, and pipelines share
    flags (``--input``, ``--detector`` ...): a flag that parser already has is not declared
    again (each command parses its own flags with its own class)."""
    flags = [f"--{name}"]
    if "-" in name:
        flags.append(f"--{name.replace('-', '_')}")
    if any(f in parser._option_string_actions for f in flags):
        return
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


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``, the value parsed as JSON when it is JSON (``max_side=2048`` is a number)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_io_options(parser: argparse.ArgumentParser) -> None:
    option(parser, "input", help="image file, directory, glob or fsspec URL")
    option(parser, "output", help="output directory or fsspec URL")


# ---------------------------------------------------------------------------------------------
# Detection

#: The default backend: best blur recall on WIDER FACE dev305 (see docs/BENCHMARKS.md).
DEFAULT_DETECTOR = "multiscale"


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """Detector and input-size flags shared by every pipeline that detects faces."""
    from blurbeam.detectors import available, get_class
    from blurbeam.imageio import DEFAULT_MAX_PIXELS
    from blurbeam.shards import DEFAULT_MAX_BYTES

    # the backends this package ships (not ones a plugin or a test registered in this process)
    shipped = [n for n in available() if get_class(n).__module__.startswith("blurbeam.detectors.")]
    option(
        parser,
        "detector",
        default=DEFAULT_DETECTOR,
        help=f"face detector backend: {', '.join(shipped)}, or a plugin's "
        f"(default {DEFAULT_DETECTOR})",
    )
    option(
        parser,
        "score-threshold",
        type=fraction,
        default=None,
        help="minimum detection score, 0-1 (default: the backend's)",
    )
    option(
        parser,
        "min-face-size",
        type=non_negative,
        default=0.0,
        help="ignore detections smaller than this many pixels (default 0)",
    )
    option(
        parser,
        "detector-option",
        type=key_value,
        action="append",
        default=None,
        help="backend option KEY=VALUE (repeatable), e.g. max_side=2048",
    )
    option(
        parser,
        "max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help=f"reject larger images, decompression bombs (default {DEFAULT_MAX_PIXELS:,})",
    )
    option(
        parser,
        "max-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BYTES,
        help=f"reject larger files (default {DEFAULT_MAX_BYTES:,} bytes)",
    )


def detector_spec(opts: Any) -> DetectorSpec:
    """The detector the flags of ``add_detector_options`` ask for, its inference runtime and
    precision resolved on this machine (``blurbeam.detectors.runtime.pin``)."""
    from blurbeam.detectors.runtime import pin

    return pin(
        DetectorSpec(
            name=opts.detector,
            score_threshold=opts.score_threshold,
            min_face_size=opts.min_face_size or 0.0,
            options=tuple(sorted(dict(opts.detector_option or []).items())),
        )
    )


def score_threshold(spec: DetectorSpec) -> float:
    """The threshold a detector of ``spec`` keeps faces at: the flag's, else the backend's.
    Raises ValueError, listing the backends, for an unknown detector."""
    from blurbeam.detectors import get_class

    det_cls = get_class(spec.name)
    return (
        spec.score_threshold
        if spec.score_threshold is not None
        else det_cls.default_score_threshold
    )


def detector_params(spec: DetectorSpec) -> dict[str, Any]:
    """The detector's settings as the config and the audit record give them."""
    return {
        "score_threshold": score_threshold(spec),
        "min_face_size": spec.min_face_size,
        **dict(spec.options),
    }


# ---------------------------------------------------------------------------------------------
# Run ids

#: What a run id may be: it is part of file names (a "/" would hide the run's audit).
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_run_id() -> str:
    """A fresh run id: UTC time to the second and 6 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def check_run_id(run_id: str | None) -> None:
    """Raises ValueError when ``--run-id`` is given and does not match ``RUN_ID_PATTERN``."""
    if run_id is not None and not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(
            f"--run-id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-' (it names files)"
        )


# ---------------------------------------------------------------------------------------------
# Locations


def check_locations(input_spec: str, output: str) -> str:
    """The output as a canonical location (an absolute path locally), after checking that
    writing there cannot touch the input: the output may lie inside the input (it is then left
    out of the listing) but must not be the input's root, hold the input, or be a file. Every
    spelling of a place (``in/.``, ``in//x``, ``x/../x``, a symlink) is compared as the place
    itself. Raises ValueError with a one-line reason."""
    import fsspec

    from blurbeam.shards import InputError, canonical, input_root, is_within, to_uri

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


def check_writable(output: str, *folders: str) -> None:
    """Fail before the pipeline starts when a local output (or its ``folders``, names under it)
    cannot be written: create each and write and remove a probe file in it."""
    import fsspec

    from blurbeam.shards import is_local

    fs, path = fsspec.core.url_to_fs(output)
    if not is_local(fs):
        return
    for folder in (path, *(os.path.join(path, f) for f in folders)):
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


# ---------------------------------------------------------------------------------------------
# Runners

LOCAL_RUNNERS = ("DirectRunner", "direct", "FnApiRunner")
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DEFAULT_DASK_PARTITIONS = 16


def runner_name(options: PipelineOptions) -> str:
    return options.view_as(StandardOptions).runner or "DirectRunner"


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
    if runner_name(opts) not in LOCAL_RUNNERS:
        return 0
    direct = opts.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":  # workers share one process, one model
        return 0
    workers = direct.direct_num_workers
    cores = available_cores()
    if workers == 0:  # Beam's convention: as many workers as cores
        workers = cores
    return max(1, cores // workers) if workers > 1 else 0


#: A local worker process's peak memory with the default detector on WIDER photos (1.2-1.4 GB
#: measured on dev305, docs/BENCHMARKS.md "The default local run"), with a little room.
LOCAL_WORKER_MEMORY = 3 * 2**29
#: Plain images per local worker process before one more pays for its start-up (a Python
#: process importing Beam and loading its own model: a few seconds); a container shard or a
#: video counts as this many.
INPUTS_PER_LOCAL_WORKER = 16
#: Beam flags that choose the local runner's workers; given any of them, the user's choice holds.
WORKER_FLAGS = ("--direct_num_workers", "--direct_running_mode")


def memory_available() -> int | None:
    """Bytes this process can still use: MemAvailable, capped by a cgroup v2 memory limit
    (a container's) less what the cgroup uses; None where neither can be read."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as fh:
                room = int(limit) - int(fh.read().strip())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


#: fsspec protocols whose files live in one process's memory: worker processes cannot share them
IN_PROCESS_PROTOCOLS = ("memory",)


def default_local_workers(
    beam_args: Sequence[str], runner: str, units: int, uris: Sequence[str] = ()
) -> int:
    """How many worker processes a local run uses when the user chose none (0: the user
    chose, with ``--direct_num_workers`` or ``--direct_running_mode``, or the runner is not
    local). One per core, as long as each gets ``INPUTS_PER_LOCAL_WORKER`` of the ``units``
    (plain images, each shard or video counting as that many) and ``LOCAL_WORKER_MEMORY``;
    each then runs one inference thread (``worker_threads``). One process when any of
    ``uris`` (the input, the output) lives in this process's memory (``memory://``). On 2
    cores, 2 worker processes of 1 thread ran dev305 1.16x faster than one process using both
    cores (docs/BENCHMARKS.md, "The default local run")."""
    if runner not in LOCAL_RUNNERS or any(a.split("=")[0] in WORKER_FLAGS for a in beam_args):
        return 0
    import fsspec

    if any(fsspec.core.split_protocol(u)[0] in IN_PROCESS_PROTOCOLS for u in uris):
        return 1
    workers = min(available_cores(), units // INPUTS_PER_LOCAL_WORKER)
    memory = memory_available()
    if memory is not None:
        workers = min(workers, memory // LOCAL_WORKER_MEMORY)
    return max(1, workers)


def use_local_workers(options: PipelineOptions, workers: int) -> None:
    """Run ``options``' local pipeline on ``workers`` worker processes (Beam's
    multi_processing mode); one worker stays in this process (in_memory)."""
    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = max(1, workers)
    direct.direct_running_mode = "multi_processing" if workers > 1 else "in_memory"


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


def query_counters(result: Any) -> dict[str, int]:
    """The job's ``blurbeam`` counters ({} on runners that report no metrics)."""
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


def cancel_on_sigterm(result: Any, on_cancel: Any = None) -> Any:
    """While this launcher waits for a job on a cluster (Flink, Dataflow, Dask), SIGTERM (a
    scheduler killing the task) cancels the job before the launcher exits with 143, so that no
    job runs on unwatched; ``on_cancel()`` reports it. Returns the function that puts the
    previous handler back."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum, frame):
        with contextlib.suppress(Exception):
            result.cancel()
        if on_cancel is not None:
            on_cancel()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, previous)


class Progress:
    """A live progress line for local runs: worker processes drop counts (JSON) in ``dir``."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.dir = tempfile.mkdtemp(prefix="blurbeam-progress-") if enabled else None
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True) if enabled else None

    def __enter__(self) -> Progress:
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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run_summary(
    table: Any,
    statuses: tuple[str, ...],
    *,
    run_id: str,
    runner: str,
    input: str,
    output: str,
    wall_s: float,
    metrics: dict[str, int],
    config_hash: str,
    config: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """run.json of a run whose records (``table``: status, error, num_faces) are one per input:
    counts per status, faces, the error rate (over the inputs not ``skipped``: files that are
    not images), the 20 commonest errors, rate, metrics and config, plus the command's
    ``extra`` fields."""
    from blurbeam import __version__

    status = table.column("status").to_pylist()
    counts = {s: status.count(s) for s in statuses}
    n = len(status)
    attempted = n - counts.get("skipped", 0)
    errors = Counter(e for e in table.column("error").to_pylist() if e)
    return {
        "run_id": run_id,
        "package_version": __version__,
        "runner": runner,
        "input": input,
        "output": output,
        "images": n,
        "status_counts": counts,
        "faces": sum(x or 0 for x in table.column("num_faces").to_pylist()),
        "error_rate": counts.get("error", 0) / attempted if attempted else 0.0,
        "errors": dict(errors.most_common(20)),
        "wall_s": round(wall_s, 3),
        "images_per_s": round(n / wall_s, 3) if wall_s > 0 else None,
        "metrics": metrics,
        **extra,
        "config_hash": config_hash,
        "config": config,
    }


def write_json(uri: str, doc: dict[str, Any]) -> None:
    from blurbeam.shards import write_bytes

    write_bytes(uri, json.dumps(doc, indent=2).encode())


# ---------------------------------------------------------------------------------------------
# The lifecycle


def forget_listings(uri: str | None) -> None:
    """Drop the directory listings this process's filesystem object for ``uri`` cached."""
    if not uri:
        return
    import fsspec

    with contextlib.suppress(Exception):
        fsspec.core.url_to_fs(uri)[0].invalidate_cache()


#: Warnings Beam logs on every run that say nothing about it: RunInference's memory probe
#: needs ``apache_beam.ml.inference.model_manager``, which imports torch (not installed).
BEAM_NOISE = ("Resource module is not available for current platform",)


def _quiet_beam_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(BEAM_NOISE)


@contextlib.contextmanager
def workers_stderr(launch: Launch) -> Iterator[str | None]:
    """While a local run's worker processes (Beam's multi_processing mode) run, they write their
    stderr (Beam's start-up logging, library warnings) to a log file rather than the terminal:
    yields its path, or None where nothing is redirected (other modes, ``BLURBEAM_DEBUG`` set,
    or a ``sys.stderr`` that is not file descriptor 2, e.g. under test capture). This process's
    own messages (``sys.stderr``) still reach the terminal."""
    direct = launch.options.view_as(DirectOptions)
    try:
        ours = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        ours = False
    if (
        not ours
        or not launch.local
        or direct.direct_running_mode != "multi_processing"
        or os.environ.get("BLURBEAM_DEBUG")
    ):
        yield None
        return
    # the workers log at ERROR only; what they log before reading that option goes to the file
    launch.options.view_as(WorkerOptions).default_sdk_harness_log_level = "ERROR"
    fd, path = tempfile.mkstemp(prefix="blurbeam-workers-", suffix=".log")
    previous = sys.stderr
    previous.flush()
    terminal = os.fdopen(
        os.dup(2), "w", buffering=1, encoding=previous.encoding, errors="backslashreplace"
    )
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = terminal
    try:
        yield path
    finally:
        terminal.flush()
        os.dup2(terminal.fileno(), 2)
        sys.stderr = previous
        terminal.close()


@dataclass(frozen=True)
class Launch:
    """How a command's pipeline runs, resolved from the Beam flags before its plan."""

    options: PipelineOptions
    runner: str
    input_slices: int = 1
    #: the Beam arguments of the command line (after the runner's defaults)
    beam_args: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        return self.runner in LOCAL_RUNNERS


@dataclass(frozen=True)
class Outcome:
    """A finished run as its launcher reports it."""

    summary: dict[str, Any]
    #: where ``summary`` is written as JSON (run.json), None: nowhere
    summary_uri: str | None
    #: printed on stderr, one line each
    lines: tuple[str, ...] = ()
    #: a one-line reason the run failed (an error rate above --max-error-rate ...)
    error: str | None = None
    #: the exit code (with ``error``: 1 unless set)
    exit_code: int = 0


PlanT = TypeVar("PlanT")


class Command(ABC, Generic[PlanT]):
    """One ``blurbeam`` pipeline command: its options class and its steps (see the module)."""

    #: the command's name: ``blurbeam <name>``
    name: ClassVar[str]
    #: the command's flags, declared once in ``_add_argparse_args``
    options_class: ClassVar[type[PipelineOptions]]
    #: flags (dests) the command line requires; PipelineOptions itself requires none, since Beam
    #: parses every subclass's flags on any argument list
    required: ClassVar[tuple[str, ...]] = ()
    #: whether the input is listed in parallel slices (``--input_slices``, Dask's partitions)
    sliced_input: ClassVar[bool] = False

    @property
    def prog(self) -> str:
        return f"blurbeam {self.name}"

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {message}", file=sys.stderr)

    # the module protocol of pipelines/cli.py

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.options_class._add_argparse_args(parser)
        for action in parser._actions:
            if action.dest in self.required:
                action.required = True

    def launch(self, args: argparse.Namespace, beam_args: list[str]) -> Launch:
        """The Beam options of a run: the runner's defaults (``prepare_runner``) plus the
        command's own parsed flags."""
        slices = getattr(args, "input_slices", 0) if self.sliced_input else 0
        beam_args, slices = prepare_runner(beam_args, slices or 0)
        options = PipelineOptions(beam_args, **vars(args))
        return Launch(options, runner_name(options), slices, tuple(beam_args))

    def run(self, args: argparse.Namespace, beam_args: list[str]) -> int:
        from blurbeam.errors import one_line

        launch = self.launch(args, beam_args)
        opts = launch.options.view_as(self.options_class)
        try:
            plan = self.plan(opts, launch)
        except (ValueError, OSError) as exc:
            self.error(" ".join(str(exc).split()) if isinstance(exc, ValueError) else one_line(exc))
            return 2
        total = self.total(plan)
        for line in self.announce(plan, launch):
            print(line, file=sys.stderr)
        mode = getattr(opts, "progress", "off")
        show = launch.local and (mode == "on" or mode == "auto")
        if not os.environ.get("BLURBEAM_DEBUG"):
            # a failing step is reported below in one line; Beam would also log its traceback
            logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
            logging.getLogger().addFilter(_quiet_beam_noise)
        import apache_beam as beam

        t0 = time.monotonic()
        started = time.time()  # outputs older than this are not this run's
        failure = None
        with Progress(total, enabled=show) as progress, workers_stderr(launch) as worker_log:
            p = beam.Pipeline(options=launch.options)
            self.build(p, plan, progress.dir)
            try:
                result = p.run()
                restore = cancel_on_sigterm(
                    result, lambda: self.error("terminated: the job was cancelled")
                )
                try:
                    result.wait_until_finish()
                finally:
                    restore()
                    client = getattr(result, "client", None)  # DaskRunner's dask.distributed client
                    if client is not None:
                        client.close()
            except Exception as exc:
                failure = one_line(exc)
        # the workers wrote through filesystem objects of their own (other processes, other
        # machines): the listings this one cached before the run (s3fs, gcsfs) are stale
        forget_listings(getattr(plan, "output", None))
        if failure is not None:
            log = f" (worker log: {worker_log})" if worker_log else ""
            self.error(f"the pipeline failed: {self.failed(plan, failure, started)}{log}")
            return 1
        if worker_log:
            with contextlib.suppress(OSError):
                os.unlink(worker_log)
        outcome = self.finish(plan, launch, result, time.monotonic() - t0)
        if outcome.summary_uri is not None:
            write_json(outcome.summary_uri, outcome.summary)
        for line in outcome.lines:
            print(line, file=sys.stderr)
        if outcome.error is not None:
            self.error(outcome.error)
            return outcome.exit_code or 1
        return outcome.exit_code

    # the steps a command implements

    @abstractmethod
    def plan(self, opts: Any, launch: Launch) -> PlanT:
        """Everything the pipeline needs, from the options, checked before it starts (on a
        local runner also the input's listing and the output's access): raises ValueError (or
        OSError) with a one-line reason (exit 2)."""

    def total(self, plan: PlanT) -> int | None:
        """The number of inputs for the progress line, when the plan knows it."""
        return None

    @abstractmethod
    def announce(self, plan: PlanT, launch: Launch) -> list[str]:
        """The lines printed when the run starts."""

    @abstractmethod
    def build(self, p: Any, plan: PlanT, progress_dir: str | None) -> Any:
        """The pipeline on ``p``; workers write progress counts under ``progress_dir``."""

    def failed(self, plan: PlanT, failure: str, started: float) -> str:
        """The one-line report of a pipeline that failed with ``failure`` (after tidying what
        it left, for commands that write outputs)."""
        return failure

    @abstractmethod
    def finish(self, plan: PlanT, launch: Launch, result: Any, wall_s: float) -> Outcome:
        """The finished run's summary and exit code."""

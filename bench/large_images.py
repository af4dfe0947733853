"""Camera-sized photos: the default detector's memory on them and its large faces at the seams.

    python bench/large_images.py make --output DIR [--size 6000x4000] [--count 10]
    python bench/large_images.py memory [--size 6000x4000] [--detector NAME]
        [--detector-option K=V ...]
    python bench/large_images.py sweep [--size 6000x4000] [--faces 150,300,700,1500]
        [--detector-option K=V ...]
    python bench/large_images.py stages --photo FILE [--detector-option K=V ...]

WIDER photos are at most about 1.5 MP; camera photos are 12-50 MP, where every pass of the
multiscale detector runs on tiles. ``make`` writes ``--count`` dev305 photos (every 30th)
upscaled to ``--size`` as JPEG (quality 90), for ``bench/compare.py --images DIR`` (a worker's
peak RSS on such photos). ``memory`` runs the default detector (or ``--detector``; one thread)
on one crowd photo (``../shared/data/crowds``) upscaled to ``--size``, in a fresh process, and
prints the process's peak RSS before and after ``detect``. ``sweep`` pastes skimage's
astronaut's head with a face of each ``--faces`` size at 9 places across a grey canvas of
``--size`` (seams of every pass included) and prints, per size, the worst over the places of
the best IoU of a found box with the face and of the share of the face box the found boxes
cover. ``stages`` runs one photo through ``anonymize``'s stage functions (decode, detect, blur,
encode) in a fresh process and prints the process's peak RSS after loading the detector and
after each stage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BLURBEAM_SHARED", ROOT.parent / "shared")) / "data"


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 6000x4000: {text!r}")
    return int(w), int(h)


def _key_value(text: str) -> tuple[str, object]:
    from blurbeam.pipelines.scaffold import key_value

    return key_value(text)


def _detector(options: list[tuple[str, object]], name: str = "multiscale"):
    from blurbeam.detectors import DetectorSpec, create

    return create(DetectorSpec(name, options=tuple(sorted(options))), threads=1)


def make(output: Path, size: tuple[int, int], count: int) -> None:
    import cv2

    src = sorted((SHARED / "widerface" / "dev305" / "images").rglob("*.jpg"))[::30][:count]
    if not src:
        raise SystemExit(f"large_images: no dev305 photos under {SHARED}")
    output.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(src):
        big = cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(output / f"large{i:02d}.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"large_images: wrote {len(src)} photos of {size[0]}x{size[1]} to {output}")


def memory(
    size: tuple[int, int], options: list[tuple[str, object]], detector: str = "multiscale"
) -> dict:
    import cv2
    import numpy as np

    crowd = sorted((SHARED / "crowds").glob("*.jpg"))
    if not crowd:
        raise SystemExit(f"large_images: no crowd photo under {SHARED / 'crowds'}")
    rgb = np.ascontiguousarray(cv2.resize(cv2.imread(str(crowd[0])), size)[:, :, ::-1])
    det = _detector(options, detector)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    faces = det.detect(rgb)
    return {
        "size": f"{size[0]}x{size[1]}",
        "detector": detector,
        "options": options,
        "precision": det.precision,
        "faces": len(faces),
        "peak_rss_mib_before_detect": round(before),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def stages(photo: Path, options: list[tuple[str, object]]) -> dict:
    from blurbeam.blur import BlurConfig
    from blurbeam.imageio import MetadataPolicy
    from blurbeam.stages import anonymize_task, decode_task, detect_task, encode_task
    from blurbeam.task import ImageTask

    def peak() -> int:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    det = _detector(options)
    row: dict = {"photo": photo.name, "options": options, "peak_rss_mib": {"loaded": peak()}}
    task = ImageTask(
        source_uri=str(photo),
        shard_uri=str(photo),
        key=photo.name,
        rel=photo.name,
        data=photo.read_bytes(),
    )
    for name, stage in (
        ("decode", decode_task),
        ("detect", lambda t: detect_task(t, det)),
        ("blur", lambda t: anonymize_task(t, BlurConfig())),
        ("encode", lambda t: encode_task(t, MetadataPolicy())),
    ):
        task = stage(task)
        if task.error:
            raise SystemExit(f"large_images: {photo}: {task.error}")
        row["peak_rss_mib"][name] = peak()
    return row


def sweep(size: tuple[int, int], faces_px: list[int], options: list[tuple[str, object]]) -> dict:
    import cv2
    import numpy as np
    from skimage import data

    from blurbeam.geometry import iou

    w, h = size
    det = _detector(options)
    astronaut = data.astronaut()
    f0 = max(det.detect(astronaut), key=lambda f: f.score)
    cx, cy, side = f0.x + f0.w / 2, f0.y + f0.h / 2, max(f0.w, f0.h) * 1.8
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    head = astronaut[y0 : int(cy + side / 2), x0 : int(cx + side / 2)]
    out: dict[str, dict[str, float]] = {}
    for px in faces_px:
        r = px / max(f0.w, f0.h)
        scaled = cv2.resize(head, (round(head.shape[1] * r), round(head.shape[0] * r)))
        ious, covers = [], []
        for k in range(9):
            ox = int((w - scaled.shape[1]) * k / 8)
            oy = int((h - scaled.shape[0]) * ((k * 3) % 8) / 7)
            canvas = np.full((h, w, 3), 90, np.uint8)
            canvas[oy : oy + scaled.shape[0], ox : ox + scaled.shape[1]] = scaled
            box = (ox + (f0.x - x0) * r, oy + (f0.y - y0) * r, f0.w * r, f0.h * r)
            found = det.detect(canvas)
            ious.append(max((iou(box, (f.x, f.y, f.w, f.h)) for f in found), default=0.0))
            mask = np.zeros((h, w), bool)
            for f in found:
                mask[int(max(0, f.y)) : int(f.y + f.h), int(max(0, f.x)) : int(f.x + f.w)] = True
            bx, by = int(box[0]), int(box[1])
            covers.append(float(mask[by : int(box[1] + box[3]), bx : int(box[0] + box[2])].mean()))
        out[str(px)] = {"worst_iou": round(min(ious), 2), "worst_cover": round(min(covers), 2)}
    return {"size": f"{w}x{h}", "options": options, "precision": det.precision, "faces": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--output", type=Path, required=True)
    m.add_argument("--count", type=int, default=10)
    for name in ("make", "memory", "sweep", "stages"):
        p = m if name == "make" else sub.add_parser(name)
        p.add_argument("--size", type=_size, default=(6000, 4000))
        if name != "make":
            p.add_argument("--detector-option", type=_key_value, action="append", default=[])
        if name == "sweep":
            p.add_argument("--faces", default="150,300,700,1500")
        if name == "stages":
            p.add_argument("--photo", type=Path, required=True)
        if name == "memory":
            p.add_argument("--detector", default="multiscale")
        if name in ("memory", "stages"):  # the measured process gets the options as JSON:
            # parsing them imports the pipeline module, and Beam would inflate its RSS
            p.add_argument("--options-json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.cmd == "make":
        make(args.output, args.size, args.count)
    elif args.cmd == "sweep":
        faces = [int(v) for v in args.faces.split(",")]
        print(json.dumps(sweep(args.size, faces, args.detector_option)))
    elif args.options_json is not None:
        options = [tuple(kv) for kv in json.loads(args.options_json)]
        if args.cmd == "memory":
            row = memory(args.size, options, args.detector)
        else:
            row = stages(args.photo, options)
        print(json.dumps(row))
    else:  # a fresh process: its peak RSS is this detector's alone
        size = f"{args.size[0]}x{args.size[1]}"
        options = json.dumps(args.detector_option)
        cmd = [sys.executable, __file__, args.cmd, "--size", size, "--options-json", options]
        if args.cmd == "stages":
            cmd += ["--photo", str(args.photo)]
        else:
            cmd += ["--detector", args.detector]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            print(f"large_images: {last.removeprefix('large_images: ')[-300:]}", file=sys.stderr)
            return 1
        print(proc.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-stage CPU per image of the default detector path and of deface's, one thread.

    python bench/profile_stages.py [--images ../shared/data/widerface/dev305/images] [--every 5]
        [--repeat 3] [--tool blurbeam --tool deface] [--detector-option K=V ...]

For each image, in one process with one intra-op thread (``threads=1``; run it with
``OMP_NUM_THREADS=1``), this times with ``time.process_time`` (this process's CPU, which other jobs
on a shared machine inflate far less than wall time):

* blurbeam, the default detector (``multiscale``) through the product's own functions: read (file
  bytes), decode (``imageio.decode`` + ``to_rgb8``), each detector pass (the 1x pass, the 0.5x
  pass with its resize, the 2x focus pass with its region crops and resizes) split into network
  inference and CenterFace's pre/post-processing (padding into the input blob; heatmap decoding and
  NMS), the fusion of the passes, the rest of ``detect`` (focus regions, clipping), blur
  (``blur.anonymize``, default config), encode (``imageio.encode``) and write (to a temporary
  directory);
* deface 1.5.0 as its ``image_detect`` runs (``imageio.v2.imread``, its ``CenterFace`` at the
  image's own size on onnxruntime, ``anonymize_frame`` with its defaults, ``imageio.imsave``), with
  its onnxruntime session rebuilt with one intra-op thread like ours.

Each pass over the images is repeated ``--repeat`` times; the table gives, per stage, the median
over repeats of the mean CPU ms per image. Written to ``bench/out/profile_stages.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: A detector pass's stage name, e.g. "pass 0.5x".
PASS = re.compile(r"pass [0-9.]+x")
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "widerface" / "dev305" / "images"


class Clock:
    """CPU ms per named stage; nested stages are also counted in their parents."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.current: list[str] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current.append(name)
        c0 = time.process_time()
        try:
            yield
        finally:
            self.ms[name] += (time.process_time() - c0) * 1000
            self.current.pop()

    def pass_name(self) -> str:
        for name in reversed(self.current):
            if PASS.fullmatch(name):
                return name
        return "pass 1x"

    def wrap(self, fn: Callable[..., Any], name: Callable[..., str]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name(*args, **kwargs)):
                return fn(*args, **kwargs)

        return timed


def instrument(det: Any, clock: Clock) -> None:
    """Time the passes, inference and pre/post-processing of a multiscale detector in place."""
    from blurbeam.detectors import centerface, multiscale

    ms_cls = type(det)
    cf_cls = type(det._base)
    ms_cls._at_scale = clock.wrap(ms_cls._at_scale, lambda self, rgb, s: f"pass {s:g}x")
    ms_cls._in_regions = clock.wrap(ms_cls._in_regions, lambda self, rgb, s, r: f"pass {s:g}x")
    multiscale.fuse = clock.wrap(multiscale.fuse, lambda *a, **k: "fusion")
    cf_cls.detect_raw = clock.wrap(cf_cls.detect_raw, lambda *a, **k: clock.pass_name() + " cf")
    centerface.decode = clock.wrap(centerface.decode, lambda *a, **k: clock.pass_name() + " post")
    centerface.nms = clock.wrap(centerface.nms, lambda *a, **k: clock.pass_name() + " post")
    for base in {id(det._base): det._base, id(det._up_base): det._up_base}.values():
        sess = base._sess
        sess.run = clock.wrap(sess.run, lambda *a, **k: clock.pass_name() + " infer")


def blurbeam_stages(ms: dict[str, float], passes: list[str]) -> dict[str, float]:
    """Raw nested timings -> exclusive stages."""
    out = {"read": ms["read"], "decode": ms["decode"]}
    accounted = 0.0
    for p in passes:
        infer, cf = ms[f"{p} infer"], ms[f"{p} cf"]
        out[f"{p}: inference"] = infer
        out[f"{p}: CenterFace pre/post"] = cf - infer
        out[f"{p}: resize, crops, mapping"] = ms[p] - cf
        accounted += ms[p]
    out["fusion"] = ms["fusion"]
    out["detector, other"] = ms["detect"] - accounted - ms["fusion"]
    for k in ("blur", "encode", "write"):
        out[k] = ms[k]
    out["total"] = sum(out.values())
    return out


def profile_blurbeam(paths: list[Path], options: dict[str, Any], repeat: int) -> dict[str, Any]:
    from blurbeam import imageio
    from blurbeam.blur import BlurConfig, anonymize
    from blurbeam.detectors import DetectorSpec, create
    from blurbeam.imageio import MetadataPolicy

    spec = DetectorSpec("multiscale", None, 0.0, tuple(sorted(options.items())))
    det = create(spec, threads=1)
    clock = Clock()
    instrument(det, clock)
    cfg, policy = BlurConfig(), MetadataPolicy()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat + 1):  # the first pass warms up every shape and cache
            clock.ms.clear()
            for i, p in enumerate(paths):
                with clock.stage("read"):
                    data = p.read_bytes()
                with clock.stage("decode"):
                    img = imageio.decode(data)
                    rgb = imageio.to_rgb8(img.pixels)
                with clock.stage("detect"):
                    faces = det.detect(rgb)
                with clock.stage("blur"):
                    boxes = [(f.x, f.y, f.w, f.h) for f in faces]
                    out = anonymize(img.pixels, boxes, cfg) if boxes else img.pixels
                with clock.stage("encode"):
                    blob = imageio.encode(img, out, policy)
                with clock.stage("write"):
                    Path(tmp, f"{i}.bin").write_bytes(blob)
            passes = sorted(k for k in clock.ms if PASS.fullmatch(k))
            per = {k: v / len(paths) for k, v in blurbeam_stages(clock.ms, passes).items()}
            runs.append(per)
    return {
        "detector": "multiscale",
        "options": options,
        "model_sha256": det.model_sha256,
        "runtime": det.runtime,
        "precision": det.precision,
        "runs": runs[1:],
    }


def profile_deface(paths: list[Path], repeat: int) -> dict[str, Any]:
    import types

    import imageio.v2 as iio
    import onnxruntime as ort
    from deface.centerface import CenterFace

    try:
        import imageio.plugins.ffmpeg  # noqa: F401
    except ImportError:  # deface imports it for video only; its image path never touches it
        sys.modules["imageio.plugins.ffmpeg"] = types.ModuleType("imageio.plugins.ffmpeg")
    from deface.deface import anonymize_frame

    from blurbeam.detectors.centerface import MODEL_FILE

    cf = CenterFace(in_shape=None, backend="onnxrt")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    cf.sess = ort.InferenceSession(str(MODEL_FILE), so, providers=["CPUExecutionProvider"])
    clock = Clock()
    cf.sess.run = clock.wrap(cf.sess.run, lambda *a, **k: "infer")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat + 1):
            clock.ms.clear()
            for i, p in enumerate(paths):
                with clock.stage("read+decode"):
                    frame = iio.imread(p)
                with clock.stage("detect"):
                    dets, _ = cf(frame, threshold=0.2)
                with clock.stage("blur"):
                    anonymize_frame(dets, frame, 1.3, "blur", True, False, None, 20)
                with clock.stage("encode+write"):
                    iio.imsave(Path(tmp, f"{i}.jpg"), frame)
            ms = clock.ms
            per = {
                "read+decode": ms["read+decode"],
                "pass 1x: inference": ms["infer"],
                "pass 1x: CenterFace pre/post": ms["detect"] - ms["infer"],
                "blur": ms["blur"],
                "encode+write": ms["encode+write"],
            }
            per["total"] = sum(per.values())
            runs.append({k: v / len(paths) for k, v in per.items()})
    return {"tool": "deface", "runs": runs[1:]}


def median_table(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = list(runs[0])
    return {k: round(float(np.median([r.get(k, 0.0) for r in runs])), 1) for k in keys}


def main(argv: list[str] | None = None) -> int:
    from blurbeam.pipelines.scaffold import key_value

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--every", type=int, default=5, help="take every K-th image (sorted)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tool", action="append", choices=("blurbeam", "deface"))
    ap.add_argument("--detector-option", type=key_value, action="append", default=[])
    ap.add_argument("--label", default="", help="a name for this run in the output file")
    ap.add_argument("--output", default=str(ROOT / "bench" / "out" / "profile_stages.json"))
    args = ap.parse_args(argv)
    root = Path(args.images)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    paths = paths[:: max(1, args.every)]
    if not paths:
        print(f"profile_stages: no images under {root}", file=sys.stderr)
        return 2
    tools = args.tool or ["blurbeam", "deface"]
    out: dict[str, Any] = {
        "images": len(paths),
        "source": str(root),
        "every": args.every,
        "repeat": args.repeat,
        "cpu": platform.processor() or platform.machine(),
        "threads": 1,
        "load_avg_1min_before": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if "blurbeam" in tools:
        res = profile_blurbeam(paths, dict(args.detector_option), args.repeat)
        res["median"] = median_table(res["runs"])
        out["blurbeam"] = res
    if "deface" in tools:
        try:
            res = profile_deface(paths, args.repeat)
        except ImportError as exc:
            print(f"profile_stages: deface left out ({exc})", file=sys.stderr)
        else:
            res["median"] = median_table(res["runs"])
            out["deface"] = res
    out["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    prev = json.loads(Path(args.output).read_text()) if Path(args.output).is_file() else {}
    prev[args.label or "run"] = out
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(prev, indent=1))
    for tool in ("blurbeam", "deface"):
        if tool in out:
            print(f"{tool} ({args.label}): CPU ms per image, one thread, median of {args.repeat}")
            for k, v in out[tool]["median"].items():
                print(f"  {k:45s} {v:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

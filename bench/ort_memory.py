"""onnxruntime's memory settings against a worker's peak: the default detector over a photo set.

    python bench/ort_memory.py [--images ../shared/data/widerface/pool886/images] [--every 4]
        [--setting packaged --setting pattern-on ...] [--detector-option K=V ...]

Each setting runs in a process of its own (peak RSS is a process's high-water mark), one
intra-op thread, over every ``--every``-th photo (sorted), and prints one JSON line: faces found,
CPU ms per image (``time.process_time`` around ``detect``) and the process's peak RSS in MiB.

Settings (how :class:`blurbeam.detectors.runtime.OnnxRuntimeSession` builds its session):

- ``packaged``: as the product builds it (memory patterns off);
- ``pattern-on``: onnxruntime's default, a memory pattern planned and kept per input shape;
- ``no-arena``: patterns off and no CPU arena (every buffer from malloc);
- ``env-allocator``: patterns off, one arena shared by the process's sessions that grows by what
  is asked (``arena_extend_strategy`` kSameAsRequested) instead of doubling.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("packaged", "pattern-on", "no-arena", "env-allocator")
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "widerface" / "pool886" / "images"


def patch_session(setting: str) -> None:
    """Make the product's onnxruntime sessions use ``setting``."""
    if setting == "packaged":
        return
    import onnxruntime as ort

    if setting == "env-allocator":
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
    real_init = ort.InferenceSession.__init__

    def init(self: object, path: str, sess_options: object = None, **kw: object) -> None:
        so = sess_options
        if setting == "pattern-on":
            so.enable_mem_pattern = True
        elif setting == "no-arena":
            so.enable_cpu_mem_arena = False
        elif setting == "env-allocator":
            so.add_session_config_entry("session.use_env_allocators", "1")
        real_init(self, path, sess_options=so, **kw)

    # OnnxRuntimeSession builds its sessions with these options: patched, they get the setting
    ort.InferenceSession.__init__ = init  # type: ignore[method-assign]


def _key_value(text: str) -> tuple[str, object]:
    """``--detector-option K=V`` as the CLI parses it (imported here, in the launching process
    only: the pipeline module imports Beam, which would inflate a measured process's RSS)."""
    from blurbeam.pipelines.scaffold import key_value

    return key_value(text)


def measure(setting: str, images: Path, every: int, options: list[list[object]]) -> dict:
    sys.path.insert(0, str(ROOT))
    patch_session(setting)
    from blurbeam import imageio
    from blurbeam.detectors import DetectorSpec, create

    opts = tuple(sorted((str(k), v) for k, v in options))
    det = create(DetectorSpec("multiscale", 0.15, 0.0, opts), threads=1)
    paths = sorted(p for p in images.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    paths = paths[:: max(1, every)]
    faces, cpu = 0, 0.0
    for p in paths:
        rgb = imageio.to_rgb8(imageio.decode(p.read_bytes()).pixels)
        c0 = time.process_time()
        faces += len(det.detect(rgb))
        cpu += time.process_time() - c0
    return {
        "setting": setting,
        "images": len(paths),
        "faces": faces,
        "cpu_ms_per_image": round(1000 * cpu / len(paths), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "precision": det.precision,
        "model_sha256": det.model_sha256[:16],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--setting", action="append", choices=SETTINGS, default=[])
    ap.add_argument("--detector-option", type=_key_value, action="append", default=[])
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # run one setting here
    ap.add_argument("--options-json", default="[]", help=argparse.SUPPRESS)  # its options
    args = ap.parse_args(argv)
    if args.one:
        row = measure(args.one, Path(args.images), args.every, json.loads(args.options_json))
        print(json.dumps(row), flush=True)
        return 0
    for setting in args.setting or list(SETTINGS):
        cmd = [sys.executable, __file__, "--one", setting, "--images", args.images]
        cmd += ["--every", str(args.every), "--options-json", json.dumps(args.detector_option)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"ort_memory: {setting} failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
            return 1
        print(proc.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

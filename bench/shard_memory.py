"""Peak memory of ``blurbeam anonymize`` on one large WebDataset tar shard.

Builds a synthetic shard of about ``--mb`` MB (JPEGs of 1-2 MB, each scikit-image's astronaut
scaled and pasted onto a different noise background, so that every member differs, plus a
``.json`` and a ``.txt`` member per sample), runs ``blurbeam anonymize`` on it with the default
detector in a subprocess (DirectRunner, one worker: ``--mode in_memory``, the default, runs it in
the launcher's process; ``multi_processing`` in a worker process of its own, as on a cluster) and
polls the process tree with psutil: peak RSS of the largest process and of the whole tree, wall
time and images/s. ``--pythonpath DIR`` puts DIR first on the subprocess's PYTHONPATH, to measure
another checkout of blurbeam (a folder holding a ``blurbeam`` package, with its ``pipelines``,
``transforms`` and ``schemas`` folders inside it, as the installed package maps them).

    nice -n 10 python bench/shard_memory.py --work /tmp/shard-bench [--mb 200] [--mode M] [--json F]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image


def face_jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A JPEG of ``width`` x ``height``: noise, with the astronaut pasted at a random place
    and size (one face per image)."""
    from skimage import data

    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(base)
    side = int(rng.integers(height // 3, height // 2))
    face = Image.fromarray(data.astronaut()).resize((side, side))
    img.paste(face, (int(rng.integers(0, width - side)), int(rng.integers(0, height - side))))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_shard(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write the shard; returns its number of images."""
    rng = np.random.default_rng(seed)
    target = megabytes * 1e6
    written = 0
    n = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:

        def add(name: str, body: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(body))

        while written < target:
            width = int(rng.integers(1400, 1800))
            body = face_jpeg(rng, width, width * 3 // 4)
            key = f"{n:06d}"
            add(f"{key}.jpg", body)
            add(f"{key}.json", json.dumps({"id": n, "caption": "an astronaut"}).encode())
            add(f"{key}.txt", b"an astronaut on noise")
            written += len(body)
            n += 1
    return n


def measure(cmd: list[str], env: dict[str, str], poll_s: float = 0.1) -> dict:
    """Run ``cmd``; peak RSS of its largest process and of its whole tree, wall time."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    top = psutil.Process(proc.pid)
    peak_proc = peak_tree = 0
    while proc.poll() is None:
        try:
            procs = [top, *top.children(recursive=True)]
            rss = []
            for p in procs:
                with contextlib.suppress(psutil.Error):  # a child that just exited
                    rss.append(p.memory_info().rss)
            peak_proc = max(peak_proc, max(rss, default=0))
            peak_tree = max(peak_tree, sum(rss))
        except psutil.Error:
            pass
        time.sleep(poll_s)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    return {
        "returncode": proc.returncode,
        "wall_s": round(time.monotonic() - t0, 1),
        "peak_rss_process_mb": round(peak_proc / 2**20),
        "peak_rss_tree_mb": round(peak_tree / 2**20),
        "log_tail": out.strip().splitlines()[-5:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder for the shard and the outputs")
    ap.add_argument("--mb", type=float, default=200.0, help="shard size in MB")
    ap.add_argument("--pythonpath", default=None, help="another checkout's package folder")
    ap.add_argument(
        "--mode",
        default="in_memory",
        choices=("in_memory", "multi_processing"),
        help="DirectRunner running mode: in_memory (the launcher is the worker) or "
        "multi_processing (one worker process of its own, as on a cluster)",
    )
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--json", default=None, help="append the result as one JSON line here")
    args, anonymize_args = ap.parse_known_args(argv)  # the rest goes to blurbeam anonymize
    work = Path(args.work)
    src = work / "in"
    src.mkdir(parents=True, exist_ok=True)
    shard = src / "shard-000000.tar"
    if not shard.exists():
        n = build_shard(shard, args.mb)
        print(f"built {shard}: {n} images, {shard.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    out = work / f"out-{int(time.time())}"
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-c",
        "import sys; from blurbeam.pipelines.cli import main; sys.exit(main(sys.argv[1:]))",
        "anonymize",
        "--input",
        str(src),
        "--output",
        str(out),
        "--progress",
        "off",
        "--direct_running_mode",
        args.mode,
        "--direct_num_workers",
        "1",
        *anonymize_args,
    ]
    result = measure(cmd, env)
    summary = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    images = summary.get("images") or summary.get("total")
    result.update(
        label=args.label,
        shard_mb=round(shard.stat().st_size / 1e6, 1),
        images=images,
        status_counts=summary.get("status_counts"),
        images_per_s=round(images / result["wall_s"], 3) if images else None,
    )
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

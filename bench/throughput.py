"""Throughput of ``blurbeam anonymize`` with 1 and 2 workers, on DirectRunner (multi_processing)
and on Beam's DaskRunner (a dask.distributed LocalCluster with as many worker processes).

    python bench/throughput.py --images ../shared/data/widerface/dev305/images \
        [--workers 1 2] [--opencv-threads 1 0] [--runners direct dask] [--write docs/BENCHMARKS.md]

Each configuration runs the real CLI (``blurbeam anonymize``, default detector and method) in its
own process on the same images and reads its ``run.json``: images/s over the whole run (model
loads and worker start-up included) and the ``model_loads`` Beam counter (DaskRunner reports no
metrics). ``--opencv-threads 0`` leaves OpenCV's own thread pool alone. The load average before
each run is recorded next to its figures, since the machines this runs on are shared. With
``--write``, the section "## Throughput (DirectRunner and Dask)" of that Markdown file is
replaced (or appended) with the table, the command, the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

SECTION = "## Throughput (DirectRunner and Dask)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_cli(images: str, out: str, extra: list[str], env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "blurbeam.pipelines.cli", "anonymize", "--input", images]
    cmd += ["--output", out, "--progress", "off", "--max-error-rate", "1", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(Path(out, "run.json").read_text())


def load_rows(path: str | None) -> list[dict]:
    if not path or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def measure(args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    rows = []
    done = load_rows(args.rows)
    for runner in args.runners:
        for workers in args.workers:
            for threads in args.opencv_threads:
                name = "DirectRunner multi_processing" if runner == "direct" else "DaskRunner"
                earlier = [
                    r
                    for r in done
                    if (r["runner"], r["workers"], r["opencv_threads"], r.get("input"))
                    == (name, workers, threads or "default", args.images)
                ]
                if earlier:  # measured by an earlier invocation (--rows): reuse, do not rerun
                    rows.append(earlier[-1])
                    print(json.dumps(earlier[-1]), "(reused)", flush=True)
                    continue
                extra = [] if threads == 0 else ["--opencv-threads", str(threads)]
                load = os.getloadavg()[0]
                out = tempfile.mkdtemp(prefix="blurbeam-bench-")
                cluster = None
                try:
                    if runner == "direct":
                        extra += [
                            f"--direct_num_workers={workers}",
                            "--direct_running_mode=multi_processing",
                        ]
                    else:
                        from distributed import LocalCluster

                        cluster = LocalCluster(
                            n_workers=workers,
                            threads_per_worker=1,
                            processes=True,
                            host="127.0.0.1",
                            dashboard_address=None,
                            silence_logs=40,
                        )
                        extra += [
                            "--runner=DaskRunner",
                            f"--dask_client_address={cluster.scheduler_address}",
                        ]
                    summary = run_cli(args.images, out, extra, env)
                finally:
                    if cluster is not None:
                        cluster.close()
                    shutil.rmtree(out, ignore_errors=True)
                loads = summary["metrics"].get("model_loads")
                row = {
                    "runner": name,
                    "input": args.images,
                    "measured": datetime.now(UTC).strftime("%H:%M"),
                    "workers": workers,
                    "opencv_threads": threads or "default",
                    "images": summary["images"],
                    "errors": summary["status_counts"]["error"],
                    "faces": summary["faces"],
                    "wall_s": summary["wall_s"],
                    "images_per_s": summary["images_per_s"],
                    "model_loads": loads,
                    "load_before": round(load, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.rows:
                    with open(args.rows, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
                time.sleep(2)
    return rows


def table(rows: list[dict]) -> list[str]:
    base = {
        (r["runner"], r["opencv_threads"]): r["images_per_s"] for r in rows if r["workers"] == 1
    }
    out = [
        "| runner | workers | OpenCV threads | images | wall s | images/s | vs 1 worker "
        "| model loads | load avg before | at (UTC) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        one = base.get((r["runner"], r["opencv_threads"]))
        ratio = f"{r['images_per_s'] / one:.2f}x" if one else ""
        loads = "n/a" if r["model_loads"] is None else str(r["model_loads"])
        out.append(
            f"| {r['runner']} | {r['workers']} | {r['opencv_threads']} | {r['images']} | "
            f"{r['wall_s']:.1f} | {r['images_per_s']:.2f} | {ratio} | {loads} | {r['load_before']} "
            f"| {r.get('measured', '')} |"
        )
    return out


def section(rows: list[dict], command: str, started: datetime, loads: tuple) -> str:
    import apache_beam

    lines = [
        SECTION,
        "",
        f"`{command}`, written {started.strftime('%Y-%m-%d %H:%M UTC')} on {cpu_model()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, Beam {apache_beam.__version__}; "
        f"load average then {loads[0]:.2f} / {loads[1]:.2f} / {loads[2]:.2f} "
        "(1/5/15 min); each row's own start time and load average before it are in its columns "
        "(rows kept in `--rows` from an earlier invocation are reused, not rerun). "
        "Each row is one `blurbeam anonymize` run over the same images with the "
        "default detector and method; images/s is over the whole run (worker start-up and model "
        "loads included); model loads is Beam's `model_loads` counter (DaskRunner reports no "
        "metrics).",
        "",
        *table(rows),
        "",
        *speedups(rows),
    ]
    return "\n".join(lines)


def speedups(rows: list[dict]) -> list[str]:
    """One line per runner and OpenCV setting: the largest worker count against one worker."""
    out = []
    for runner in dict.fromkeys(r["runner"] for r in rows):
        for threads in dict.fromkeys(r["opencv_threads"] for r in rows):
            same = {
                r["workers"]: r
                for r in rows
                if (r["runner"], r["opencv_threads"]) == (runner, threads)
            }
            if 1 in same and len(same) > 1:
                top = max(same)
                ratio = same[top]["images_per_s"] / same[1]["images_per_s"]
                loads = same[top]["model_loads"]
                per = f", {loads / top:g} model loads per worker" if loads is not None else ""
                out.append(
                    f"- {runner}, OpenCV threads {threads}: {top} workers "
                    f"{same[top]['images_per_s']:.2f} images/s vs 1 worker "
                    f"{same[1]['images_per_s']:.2f} images/s = {ratio:.2f}x{per}."
                )
    return [*out, ""] if out else []


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in old:
        start = old.index(SECTION)
        nxt = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("\n" + old[nxt + 1 :] if nxt >= 0 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, help="folder of images (e.g. WIDER FACE dev305)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--opencv-threads", type=int, nargs="+", default=[1, 0], help="0: OpenCV's default"
    )
    ap.add_argument("--runners", nargs="+", default=["direct", "dask"], choices=["direct", "dask"])
    ap.add_argument("--write", default=None, help="Markdown file whose section to replace")
    ap.add_argument(
        "--rows",
        default=None,
        help="JSON-lines file: each measured row is appended; rows already there are reused",
    )
    args = ap.parse_args(argv)
    if not Path(args.images).exists():
        print(f"throughput: {args.images} does not exist", file=sys.stderr)
        return 2
    command = "python bench/throughput.py " + shlex.join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    started, loads = datetime.now(UTC), os.getloadavg()
    rows = measure(args)
    text = section(rows, command, started, loads)
    print(text)
    if args.write:
        write_section(Path(args.write), text)
        print(f"written to {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of ``blurbeam anonymize`` with 1 and 2 workers, on DirectRunner (multi_processing)
and on Beam's DaskRunner (a dask.distributed LocalCluster with as many worker processes).

    python bench/throughput.py --images ../shared/data/widerface/dev305/images \
        [--workers 1 2] [--threads auto 1] [--runners direct dask] [--repeat 1] \
        [--write docs/BENCHMARKS.md]

Each configuration runs the real CLI (``blurbeam anonymize``, default detector and method) in its
own process on the same images and reads its ``run.json``: images/s over the whole run (model
loads and worker start-up included) and the ``model_loads`` Beam counter (DaskRunner reports no
metrics). ``--threads`` is the per-worker thread budget (``--worker-threads``): ``auto`` is what
the CLI does by default on the DirectRunner (cores / workers when workers > 1, else the
libraries' defaults, i.e. every core), applied the same way to the local Dask cluster; a number
caps every worker at that many threads (``1`` measures how throughput scales with workers when
each worker has one core, as on a cluster). Configurations that resolve to the same budget run
once. ``--repeat N`` runs every configuration N times, interleaved (all configurations once,
then again), so that a slow spell of a shared machine does not land on one configuration only;
the speed-ups use each configuration's median images/s and show the range. With ``--rows``,
every run kept there for a requested configuration is reported, so a later invocation can add
runs of some configurations only (e.g. ``--runners direct --threads 1 --repeat 3``) and a final
one with ``--write`` reports them all. The load average
before each run is recorded next to its figures, since the machines this runs on are shared. With ``--write``, the section "## Throughput (DirectRunner and Dask)" of that
Markdown file is replaced (or appended) with the table, the command, the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
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


def resolve_threads(setting: str, workers: int) -> int:
    """The ``--worker-threads`` value a setting means for this many local workers."""
    if setting == "auto":
        cores = os.cpu_count() or 1
        return max(1, cores // workers) if workers > 1 else 0
    return int(setting)


def threads_label(n: int) -> str:
    return "library default" if n == 0 else str(n)


def runner_name(runner: str) -> str:
    return "DirectRunner multi_processing" if runner == "direct" else "DaskRunner"


def configs(args: argparse.Namespace) -> dict[tuple[str, int, int], list[str]]:
    """The requested configurations, (runner, workers, threads) in request order, each with the
    ``--threads`` settings that resolve to it (one run serves settings of the same budget)."""
    out: dict[tuple[str, int, int], list[str]] = {}
    for runner in args.runners:
        for workers in args.workers:
            for setting in args.threads:
                key = (runner, workers, resolve_threads(setting, workers))
                out.setdefault(key, []).append(setting)
    return out


def measure(args: argparse.Namespace) -> list[dict]:
    """Make sure every requested configuration has ``--repeat`` runs; return all of its runs
    (with ``--rows``, also those measured by earlier invocations beyond ``--repeat``)."""
    rows: list[dict] = []
    for rep in range(1, args.repeat + 1):
        rows += measure_once(args, rep)
    if not args.rows:
        return rows
    wanted = {(runner_name(r), w, t): settings for (r, w, t), settings in configs(args).items()}
    return [
        dict(r, settings=wanted[key])
        for r in load_rows(args.rows)
        if (key := (r["runner"], r["workers"], r.get("worker_threads"))) in wanted
        and r.get("input") == args.images
    ]


def measure_once(args: argparse.Namespace, rep: int) -> list[dict]:
    """Run repetition ``rep`` of every configuration that ``--rows`` does not already hold."""
    rows = []
    done = load_rows(args.rows)
    for (runner, workers, threads), settings in configs(args).items():
        earlier = [
            r
            for r in done
            if (r["runner"], r["workers"], r.get("worker_threads"), r.get("input"))
            == (runner_name(runner), workers, threads, args.images)
            and r.get("rep", 1) == rep
        ]
        if earlier:  # measured by an earlier invocation (--rows): reuse, do not rerun
            rows.append(dict(earlier[-1], settings=settings))
            print(json.dumps(earlier[-1]), "(reused)", flush=True)
            continue
        row = dict(run_one(args.images, runner, workers, threads), settings=settings, rep=rep)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.rows:
            with open(args.rows, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        time.sleep(2)
    return rows


def run_one(images: str, runner: str, workers: int, threads: int) -> dict:
    """One ``blurbeam anonymize`` run of a configuration, as a row of the table."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    extra = ["--worker-threads", str(threads)]
    load = os.getloadavg()[0]
    out = tempfile.mkdtemp(prefix="blurbeam-bench-")
    cluster = None
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        if runner == "direct":
            extra += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
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
            extra += ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
        summary = run_cli(images, out, extra, env)
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(out, ignore_errors=True)
    row = {
        "runner": runner_name(runner),
        "input": images,
        "measured": datetime.now(UTC).strftime("%H:%M"),
        "workers": workers,
        "worker_threads": threads,
        "images": summary["images"],
        "errors": summary["status_counts"]["error"],
        "faces": summary["faces"],
        "wall_s": summary["wall_s"],
        "images_per_s": summary["images_per_s"],
        "model_loads": summary["metrics"].get("model_loads"),
        "load_before": round(load, 2),
    }
    if runner == "direct":  # Dask workers are not children of the CLI process
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        row["cpu_s"] = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)
    return row


def table(rows: list[dict]) -> list[str]:
    out = [
        "| runner | workers | threads per worker | run | images | wall s | images/s | CPU s "
        "| model loads | load avg before | finished (UTC) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    order = {name: i for i, name in enumerate(dict.fromkeys(r["runner"] for r in rows))}

    def by_config(r: dict) -> tuple:
        # library default (0) first, as in the --threads order auto, 1
        return (order[r["runner"]], r["workers"], r["worker_threads"] != 0, r.get("rep", 1))

    for r in sorted(rows, key=by_config):
        loads = "n/a" if r["model_loads"] is None else str(r["model_loads"])
        out.append(
            f"| {r['runner']} | {r['workers']} | {threads_label(r['worker_threads'])} | "
            f"{r.get('rep', 1)} | {r['images']} | {r['wall_s']:.1f} | {r['images_per_s']:.2f} | "
            f"{r.get('cpu_s', 'n/a')} | {loads} | {r['load_before']} | {r.get('measured', '')} |"
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
        "(1/5/15 min); each row's finish time and the load average before it are in its columns "
        "(rows kept in `--rows` from earlier invocations are reported, not rerun; run is the "
        "repetition, `--repeat`; the speed-ups use each configuration's median). "
        "Each row is one `blurbeam anonymize` run over the same images with the "
        "default detector and method; images/s is over the whole run (worker start-up and model "
        "loads included); threads per worker is the `--worker-threads` budget each worker gives "
        "onnxruntime/OpenCV (library default: every core); CPU s is the user + system time of "
        "the CLI and its worker processes (DirectRunner only); model loads is Beam's "
        "`model_loads` counter (DaskRunner reports no metrics).",
        "",
        *table(rows),
        "",
        *speedups(rows),
    ]
    return "\n".join(lines)


def speedups(rows: list[dict]) -> list[str]:
    """Per runner and ``--threads`` setting: the largest worker count against one worker, from
    the median images/s of each configuration's runs (with the range when there are several)."""
    out = []
    for runner in dict.fromkeys(r["runner"] for r in rows):
        mine = [r for r in rows if r["runner"] == runner]
        for setting in dict.fromkeys(x for r in mine for x in r.get("settings", [])):
            same: dict[int, list[dict]] = {}
            for r in mine:
                if setting in r.get("settings", []):
                    same.setdefault(r["workers"], []).append(r)
            if 1 not in same or len(same) < 2:
                continue
            top = max(same)
            rate = {w: statistics.median(r["images_per_s"] for r in same[w]) for w in (1, top)}
            ratio = rate[top] / rate[1]
            runs = ""
            if len(same[top]) > 1 or len(same[1]) > 1:
                lo = min(r["images_per_s"] for r in same[top]) / max(
                    r["images_per_s"] for r in same[1]
                )
                hi = max(r["images_per_s"] for r in same[top]) / min(
                    r["images_per_s"] for r in same[1]
                )
                runs = (
                    f" (medians of {len(same[top])} and {len(same[1])} runs; "
                    f"any pair of runs: {lo:.2f}-{hi:.2f}x)"
                )
            loads = [r["model_loads"] for r in same[top]]
            per = (
                f", {max(loads) / top:g} model loads per worker"
                if all(x is not None for x in loads)
                else ""
            )
            budgets = " vs ".join(threads_label(same[w][0]["worker_threads"]) for w in (top, 1))
            out.append(
                f"- {runner}, threads {setting} ({budgets}): {top} workers "
                f"{rate[top]:.2f} images/s vs 1 worker {rate[1]:.2f} images/s = "
                f"{ratio:.2f}x{runs}{per}."
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
        "--threads",
        nargs="+",
        default=["auto", "1"],
        help="per-worker thread budgets: auto (the CLI's default) or a number (0: libraries')",
    )
    ap.add_argument("--runners", nargs="+", default=["direct", "dask"], choices=["direct", "dask"])
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration, interleaved")
    ap.add_argument("--write", default=None, help="Markdown file whose section to replace")
    ap.add_argument(
        "--rows",
        default=None,
        help="JSON-lines file: each measured row is appended; rows already there are reused",
    )
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
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

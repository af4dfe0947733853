"""bench/throughput.py: which runs are reused from --rows, the table and the speed-ups from the
median of repeated runs (no timing is measured here: the rows are hand-made)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
from benchload import load_bench

DIRECT = "DirectRunner multi_processing"


throughput = load_bench("throughput")


def row(workers: int, threads: int, rep: int, rate: float, runner: str = DIRECT) -> dict:
    return {
        "runner": runner,
        "input": "imgs",
        "measured": "00:00",
        "workers": workers,
        "settings": ["x"],
        "worker_threads": threads,
        "rep": rep,
        "images": 10,
        "errors": 0,
        "faces": 3,
        "wall_s": 10 / rate,
        "images_per_s": rate,
        "model_loads": workers,
        "load_before": 0.5,
        "cpu_s": 1.0,
    }


def args(rows: Path, **kw) -> argparse.Namespace:
    base = dict(runners=["direct"], workers=[1, 2], threads=["auto", "1"], repeat=1)
    return argparse.Namespace(rows=str(rows), images="imgs", **(base | kw))


def test_runs_in_rows_are_reused_and_all_reported(tmp_path, monkeypatch):
    rows = tmp_path / "rows.jsonl"
    kept = [row(1, 0, 1, 2.0), row(1, 1, 1, 1.0), row(1, 1, 2, 1.2), row(2, 1, 1, 1.9)]
    kept.append(row(1, 1, 1, 9.0, runner="DaskRunner"))  # another runner: not requested
    rows.write_text("".join(json.dumps(r) + "\n" for r in kept))
    monkeypatch.setattr(throughput, "run_cli", lambda *a, **k: pytest.fail("nothing to run"))
    got = throughput.measure(args(rows))
    assert [(r["workers"], r["worker_threads"], r["rep"]) for r in got] == [
        (1, 0, 1),
        (1, 1, 1),
        (1, 1, 2),
        (2, 1, 1),
    ]
    # the 2-worker run serves both settings: auto is one thread per worker on 2 cores
    two = got[-1]["settings"]
    assert "1" in two and ("auto" in two) == ((os.cpu_count() or 1) // 2 == 1)


def test_speedups_use_the_median_and_show_the_range():
    rows = [row(1, 1, r, v) for r, v in ((1, 1.0), (2, 1.2), (3, 1.1))]
    rows += [row(2, 1, r, v) for r, v in ((1, 2.0), (2, 2.4), (3, 1.8))]
    for r in rows:
        r["settings"] = ["1"]
    (line,) = throughput.speedups(rows)[:-1]
    assert "2 workers 2.00 images/s vs 1 worker 1.10 images/s = 1.82x" in line
    assert "medians of 3 and 3 runs; any pair of runs: 1.50-2.40x" in line
    assert "1 model loads per worker" in line
    table = throughput.table(list(reversed(rows)))
    assert [t.split("|")[2].strip() for t in table[2:]] == ["1", "1", "1", "2", "2", "2"]
    assert [t.split("|")[4].strip() for t in table[2:]] == ["1", "2", "3", "1", "2", "3"]


def test_a_single_run_has_no_range():
    rows = [dict(row(1, 1, 1, 1.0), settings=["1"]), dict(row(2, 1, 1, 1.5), settings=["1"])]
    (line,) = throughput.speedups(rows)[:-1]
    assert line.endswith("= 1.50x, 1 model loads per worker.")

"""The per-worker thread budget: resolved from the runner, handed to the detector's inference
library, and kept out of the config hash (results do not depend on it)."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from blurbeam.detectors import DetectorSpec, create
from blurbeam.pipelines import anonymize as anon
from blurbeam.pipelines import scaffold


def resolve(*argv: str, cores: int = 2, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(scaffold, "available_cores", lambda: cores)
    args = ["--input", "in", "--output", "out", *argv]
    opts = PipelineOptions(args).view_as(anon.AnonymizeOptions)
    return scaffold.worker_threads(opts, opts.worker_threads)


@pytest.mark.parametrize(
    ("argv", "cores", "expected"),
    [
        ((), 2, 0),  # one in-process worker: the libraries may use every core
        (("--direct_num_workers", "2", "--direct_running_mode", "multi_processing"), 2, 1),
        (("--direct_num_workers", "2", "--direct_running_mode", "multi_processing"), 8, 4),
        (("--direct_num_workers", "3", "--direct_running_mode", "multi_processing"), 2, 1),
        (("--direct_num_workers", "0", "--direct_running_mode", "multi_processing"), 4, 1),
        (("--direct_num_workers", "1", "--direct_running_mode", "multi_processing"), 4, 0),
        # threads of one process share one model: no cap
        (("--direct_num_workers", "2", "--direct_running_mode", "multi_threading"), 2, 0),
        (("--runner", "DataflowRunner", "--direct_num_workers", "2"), 2, 0),
        (("--worker-threads", "3", "--direct_num_workers", "2"), 2, 3),
        (
            ("--worker-threads", "0", "--direct_num_workers", "2")
            + ("--direct_running_mode", "multi_processing"),
            2,
            0,
        ),
    ],
)
def test_worker_threads_resolution(argv, cores, expected, monkeypatch):
    assert resolve(*argv, cores=cores, monkeypatch=monkeypatch) == expected


def test_available_cores_is_at_least_one_and_at_most_the_machine():
    assert 1 <= scaffold.available_cores() <= (scaffold.os.cpu_count() or 1)


def test_negative_worker_threads_is_a_clear_error(tmp_path, capsys):
    from blurbeam.pipelines.cli import main as cli_main

    argv = ["anonymize", "--input", str(tmp_path), "--output", str(tmp_path / "o")]
    assert cli_main([*argv, "--worker-threads", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--worker-threads" in err and "expected a whole number >= 0" in err
    assert len(err.strip().splitlines()) == 1


def test_the_budget_reaches_opencv_and_stays_out_of_the_config_hash(tmp_path):
    def plan(*extra: str) -> anon.RunPlan:
        argv = ["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--run-id", "t", *extra]
        return anon.plan(PipelineOptions(argv).view_as(anon.AnonymizeOptions))

    plain, capped = plan(), plan("--worker-threads", "1")
    assert (plain.worker_threads, plain.opencv_threads) == (0, None)
    assert (capped.worker_threads, capped.opencv_threads) == (1, 1)
    assert plan("--worker-threads", "1", "--opencv-threads", "2").opencv_threads == 2
    assert capped.ctx.config_hash == plain.ctx.config_hash


def test_centerface_session_gets_the_budget_and_the_option_wins():
    det = create(DetectorSpec("centerface"), threads=1)
    assert det._sess.get_session_options().intra_op_num_threads == 1
    det = create(DetectorSpec("centerface", options=(("threads", 2),)), threads=1)
    assert det._sess.get_session_options().intra_op_num_threads == 2
    # every image is a new input shape: no memory pattern is planned and kept for each
    assert det._sess.get_session_options().enable_mem_pattern is False


def test_multiscale_hands_the_budget_to_its_backends():
    det = create(DetectorSpec("multiscale", options=(("ensemble", "yunet"),)), threads=1)
    assert det._base.threads == 1 and det._ensemble.threads == 1
    assert det._base._sess.get_session_options().intra_op_num_threads == 1


# ---------------------------------------------------------------- the default local workers


class _Ref:
    def __init__(self, uri: str, kind: str = "file") -> None:
        self.uri, self.kind = uri, kind


@pytest.mark.parametrize(
    ("beam_args", "runner", "units", "cores", "memory_gib", "expected"),
    [
        ((), "DirectRunner", 305, 2, 20, 2),  # dev305 on this machine: 2 x 1 thread
        ((), "DirectRunner", 305, 8, 20, 8),
        ((), "DirectRunner", 305, 8, 4, 2),  # 1.5 GiB per worker
        ((), "DirectRunner", 40, 8, 20, 2),  # 16 inputs per worker
        ((), "DirectRunner", 31, 2, 20, 1),
        ((), "DirectRunner", 0, 2, 20, 1),
        ((), "DirectRunner", 305, 1, 20, 1),
        (("--direct_num_workers", "1"), "DirectRunner", 305, 2, 20, 0),  # the user's choice
        (("--direct_running_mode=in_memory",), "DirectRunner", 305, 2, 20, 0),
        ((), "DataflowRunner", 305, 2, 20, 0),
    ],
)
def test_default_local_workers(beam_args, runner, units, cores, memory_gib, expected, monkeypatch):
    monkeypatch.setattr(scaffold, "available_cores", lambda: cores)
    monkeypatch.setattr(scaffold, "memory_available", lambda: memory_gib * 2**30)
    assert scaffold.default_local_workers(beam_args, runner, units) == expected


def test_files_in_this_process_memory_keep_one_process(monkeypatch):
    monkeypatch.setattr(scaffold, "available_cores", lambda: 2)
    monkeypatch.setattr(scaffold, "memory_available", lambda: 20 * 2**30)
    local = ("/data/in", "/data/out")
    assert scaffold.default_local_workers((), "DirectRunner", 305, local) == 2
    assert scaffold.default_local_workers((), "DirectRunner", 305, ("s3://b/in", "/o")) == 2
    assert scaffold.default_local_workers((), "DirectRunner", 305, ("/in", "memory://o")) == 1


def test_work_units_count_shards_and_videos_as_many_images():
    n = scaffold.INPUTS_PER_LOCAL_WORKER
    refs = [_Ref("/d/a.jpg"), _Ref("/d/b.PNG"), _Ref("/d/c.MP4", "other"), _Ref("/d/s.tar", "tar")]
    refs.append(_Ref("/d/.hidden.jpg", "skipped"))
    assert anon.work_units(refs) == 2 + 2 * n


def test_use_local_workers_sets_the_mode_and_one_thread_each(monkeypatch):
    monkeypatch.setattr(scaffold, "available_cores", lambda: 2)
    opts = PipelineOptions(["--input", "in", "--output", "out"])
    scaffold.use_local_workers(opts, 2)
    assert scaffold.worker_threads(opts.view_as(anon.AnonymizeOptions), None) == 1
    scaffold.use_local_workers(opts, 1)
    assert scaffold.worker_threads(opts.view_as(anon.AnonymizeOptions), None) == 0


def test_memory_available_is_positive_here():
    memory = scaffold.memory_available()
    assert memory is None or memory > 0


@pytest.mark.skipif(scaffold.available_cores() < 2, reason="needs 2 cores for 2 worker processes")
def test_default_run_uses_worker_processes_and_says_so(tmp_path):
    """Without worker flags, 2 x 16 inputs on 2 or more cores run on worker processes (each
    loads its model), the header says how many, and the terminal shows no worker logging."""
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq
    from test_shards import face_image, plain_image

    src = tmp_path / "in"
    src.mkdir()
    for i in range(2 * scaffold.INPUTS_PER_LOCAL_WORKER):
        (src / f"{i:02d}.jpg").write_bytes(face_image(i % 5) if i % 2 else plain_image(i))
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    cmd = "from blurbeam.pipelines.cli import console; console()"  # what `blurbeam` runs
    run = subprocess.run(
        [sys.executable, "-c", cmd, "anonymize", "--input", str(src), "--output", str(out)]
        + ["--progress", "off"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    assert "32 inputs, 2 worker processes x 1 thread each" in lines[0]
    assert lines[1].startswith("done: 32 inputs (16 with faces, 16 without")
    assert "model loads 2" in lines[1]
    assert len(lines) == 3, run.stderr  # header, done, where: no worker logging
    table = pq.read_table(out / "audit")
    assert sorted(table.column("status").to_pylist()) == ["no_faces"] * 16 + ["ok"] * 16
    assert not list(tmp.glob("blurbeam-workers-*"))  # the worker log of a run that succeeded


def test_workers_stderr_goes_to_a_log_while_ours_reaches_the_terminal(tmp_path):
    """What a worker process writes to file descriptor 2 lands in the log; what the launcher
    prints on sys.stderr still reaches the terminal, and fd 2 is back afterwards."""
    import subprocess
    import sys

    code = f"""
import os, sys
from apache_beam.options.pipeline_options import PipelineOptions
from blurbeam.pipelines import scaffold
opts = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
launch = scaffold.Launch(opts, "DirectRunner")
with scaffold.workers_stderr(launch) as log:
    os.system("echo worker-noise >&2")
    print("launcher-line", file=sys.stderr)
os.write(2, b"after\\n")
open({str(tmp_path / "log")!r}, "w").write(open(log).read())
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "launcher-line" in run.stderr and "after" in run.stderr
    assert "worker-noise" not in run.stderr
    assert (tmp_path / "log").read_text() == "worker-noise\n"

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


def test_multiscale_hands_the_budget_to_its_backends():
    det = create(DetectorSpec("multiscale", options=(("ensemble", "yunet"),)), threads=1)
    assert det._base.threads == 1 and det._ensemble.threads == 1
    assert det._base._sess.get_session_options().intra_op_num_threads == 1

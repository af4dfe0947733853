"""The same pipeline on other runners gives the same outputs as the in-process DirectRunner:
DirectRunner with two worker processes, Beam's DaskRunner on a two-worker dask.distributed
cluster, and the portable path (PortableRunner against Beam's own job service)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from test_shards import face_image, plain_image

from blurbeam.pipelines import anonymize as anon
from blurbeam.pipelines import scaffold
from blurbeam.shards import tar as tarfmt


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runners-in")
    (root / "img").mkdir()
    for i in range(8):
        (root / "img" / f"{i:02d}.jpg").write_bytes(face_image(i) if i % 3 else plain_image(i))
    (root / "img" / "broken.jpg").write_bytes(face_image(1)[:1500])
    samples = {f"k{i}": {"jpg": face_image(20 + i), "cls": b"%d" % i} for i in range(3)}
    (root / "part-0.tar").write_bytes(tarfmt.write_samples(samples))
    pq.write_table(
        pa.table({"image": [{"bytes": face_image(30), "path": None}]}), root / "p.parquet"
    )
    return root


def run_with(dataset: Path, out: Path, run_id: str, beam_args: list[str], slices: int = 1):
    argv = ["--input", str(dataset), "--output", str(out), "--run-id", run_id]
    rp = anon.plan(PipelineOptions(argv).view_as(anon.AnonymizeOptions), slices)
    progress = out.parent / f"{out.name}-progress"
    progress.mkdir(parents=True)
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    anon.build(p, rp, str(progress))
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        if getattr(result, "client", None) is not None:
            result.client.close()
    workers = {}
    for f in progress.glob("*.json"):
        pid = f.name.split("-")[0]
        workers[pid] = workers.get(pid, 0) + json.loads(f.read_text())["done"]
    return anon.read_run_records(rp.output, rp.run_id).to_pylist(), workers, result


def outcome(records: list[dict], out: Path) -> dict[str, tuple]:
    """What must not depend on the runner: per input, status, faces and the output bytes."""
    res = {}
    for r in records:
        body = None
        if r["output_uri"]:
            path = r["output_uri"].split("#")[0]
            body = Path(path).read_bytes()
        res[r["source_uri"]] = (
            r["status"],
            r["num_faces"],
            r["output_sha256"],
            r["output_uri"] and os.path.relpath(r["output_uri"], out),
            None if body is None else len(body),
        )
    return res


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    records, _, _ = run_with(dataset, out, "ref", [])
    assert len(records) == 9 + 3 + 1
    assert {r["status"] for r in records} == {"ok", "no_faces", "error"}
    return outcome(records, out)


def test_direct_runner_two_processes(dataset, reference, tmp_path):
    out = tmp_path / "out"
    args = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    records, workers, result = run_with(dataset, out, "mp", args)
    assert outcome(records, out) == reference
    assert len(workers) == 2 and all(n > 0 for n in workers.values()), workers
    counters = anon.query_counters(result)
    assert 1 <= counters["model_loads"] <= 2


def test_dask_runner_two_workers(dataset, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    ) as cluster:
        args, slices = scaffold.prepare_runner(
            ["--runner", "DaskRunner", "--dask_client_address", cluster.scheduler_address], 0
        )
        assert scaffold.DASK_RUNNER in args and slices == scaffold.DEFAULT_DASK_PARTITIONS
        assert f"--dask_npartitions={slices}" in args
        out = tmp_path / "out"
        records, workers, _ = run_with(dataset, out, "dask", args, slices)
    assert outcome(records, out) == reference
    # both worker processes did part of the work (and the launcher none)
    assert len(workers) == 2 and all(n > 0 for n in workers.values()), workers
    assert str(os.getpid()) not in workers


def test_prepare_runner_leaves_other_runners_alone():
    assert scaffold.prepare_runner(["--direct_num_workers=2"], 0) == (["--direct_num_workers=2"], 1)
    args, slices = scaffold.prepare_runner(["--runner=DaskRunner", "--dask_npartitions", "6"], 0)
    assert slices == 6 and args.count("--dask_npartitions") == 1
    assert scaffold.prepare_runner(["--runner", "PortableRunner"], 3)[1] == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def job_service(tmp_path):
    """Beam's Python job service, the same Job API a Flink job server speaks, on 127.0.0.1."""
    port = _free_port()
    log_path = tmp_path / "job_service.log"
    cmd = [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"job service did not start: {log_path.read_text()[-2000:]}")
                    time.sleep(0.3)
            yield f"localhost:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_portable_runner_against_job_service(dataset, reference, tmp_path, job_service):
    out = tmp_path / "out"
    args = [
        "--runner=PortableRunner",
        f"--job_endpoint={job_service}",
        "--environment_type=LOOPBACK",
    ]
    records, _, result = run_with(dataset, out, "portable", args)
    assert outcome(records, out) == reference
    assert anon.query_counters(result)["model_loads"] == 1


_SIGTERM_SCRIPT = """
import os, signal, sys
from blurbeam.pipelines import scaffold

class FakeResult:
    cancelled = False

    def cancel(self):
        self.cancelled = True

result = FakeResult()
before = signal.getsignal(signal.SIGTERM)
restore = scaffold.cancel_on_sigterm(result)
try:
    os.kill(os.getpid(), signal.SIGTERM)
    signal.sigtimedwait([], 0.5)  # let the handler run before the block ends
    code = None
except SystemExit as exc:
    code = exc.code
finally:
    restore()
print(result.cancelled, code, signal.getsignal(signal.SIGTERM) == before)
"""


def test_sigterm_while_waiting_cancels_the_job():
    """A scheduler that kills the launcher (Airflow task kill, pod deletion) cancels the job.
    The signal goes to a process of its own, not to the test runner with its native threads."""
    import signal

    done = subprocess.run(
        [sys.executable, "-c", _SIGTERM_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    cancelled, code, restored = done.stdout.split()
    assert cancelled == "True" and int(code) == 128 + signal.SIGTERM
    assert restored == "True"

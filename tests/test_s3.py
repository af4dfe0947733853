"""S3 end to end against a real S3-compatible server process (moto's standalone server, as
s3fs's own test suite uses) listening on 127.0.0.1: shards uploaded, the pipeline run with
s3:// input and output through the CLI, the audit Parquet read back, the report and a rerun."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_shards import face_image, plain_image

from blurbeam.pipelines.cli import main as cli_main
from blurbeam.shards import tar as tarfmt

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"moto server did not start: {log_path.read_text()[-2000:]}")
                    time.sleep(0.3)
            yield endpoint
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """An s3fs filesystem on the local server; the pipeline finds it through the standard AWS
    environment variables, as it would find a real bucket."""
    import fsspec

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    fsspec.AbstractFileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("blurbeam-test")
    yield fs
    fs.rm("blurbeam-test", recursive=True)
    fsspec.AbstractFileSystem.clear_instance_cache()


def test_s3_input_and_output_end_to_end(s3, capsys):
    samples = {f"s{i}": {"jpg": face_image(i), "json": b'{"n": %d}' % i} for i in range(2)}
    s3.pipe("blurbeam-test/in/shards/shard-0.tar", tarfmt.write_samples(samples))
    s3.pipe("blurbeam-test/in/photos/a.jpg", face_image(5))
    s3.pipe("blurbeam-test/in/photos/b.png", plain_image(1, "PNG"))
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": [{"bytes": face_image(7), "path": "x"}], "y": [1]}), buf)
    s3.pipe("blurbeam-test/in/rows.parquet", buf.getvalue())

    argv = ["anonymize", "--input", "s3://blurbeam-test/in", "--output", "s3://blurbeam-test/out"]
    assert cli_main([*argv, "--run-id", "s3a"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    s3.invalidate_cache()  # the pipeline wrote through other s3fs instances

    # the audit Parquet, read back from the bucket
    [audit] = s3.glob("blurbeam-test/out/audit/run-s3a-*.parquet")
    with s3.open(audit, "rb") as fh:
        records = pq.read_table(fh).to_pylist()
    status = {r["source_uri"]: r["status"] for r in records}
    assert status == {
        "s3://blurbeam-test/in/photos/a.jpg": "ok",
        "s3://blurbeam-test/in/photos/b.png": "no_faces",
        "s3://blurbeam-test/in/rows.parquet#0": "ok",
        "s3://blurbeam-test/in/shards/shard-0.tar#s0.jpg": "ok",
        "s3://blurbeam-test/in/shards/shard-0.tar#s1.jpg": "ok",
    }
    outputs = sorted(s3.find("blurbeam-test/out"))
    assert "blurbeam-test/out/photos/a.jpg" in outputs
    assert "blurbeam-test/out/shards/shard-0.tar" in outputs
    with tarfile.open(fileobj=io.BytesIO(s3.cat("blurbeam-test/out/shards/shard-0.tar"))) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    assert members["s0.json"] == b'{"n": 0}' and members["s0.jpg"] != samples["s0"]["jpg"]
    by_uri = {r["source_uri"]: r for r in records}
    tar_rec = by_uri["s3://blurbeam-test/in/shards/shard-0.tar#s1.jpg"]
    assert tar_rec["output_uri"] == "s3://blurbeam-test/out/shards/shard-0.tar#s1.jpg"
    summary = json.loads(s3.cat("blurbeam-test/out/run.json"))
    assert summary["images"] == 5 and summary["status_counts"]["error"] == 0

    # a scheduled rerun: nothing to do, nothing rewritten
    before = {p: s3.info(p)["ETag"] for p in outputs if "/audit/" not in p and "run.json" not in p}
    assert cli_main([*argv, "--run-id", "s3b", "--skip-existing"]) == 0
    assert "skipped 5 inputs" in capsys.readouterr().err
    s3.invalidate_cache()
    assert {p: s3.info(p)["ETag"] for p in before} == before

    # the report reads the audit of both runs from the bucket and checks coverage there
    assert cli_main(["report", "--output", "s3://blurbeam-test/out"]) == 0
    s3.invalidate_cache()
    rep = json.loads(s3.cat("blurbeam-test/out/report.json"))
    assert rep["coverage"]["inputs"] == 5 and rep["coverage"]["missing"] == []
    assert [r["run_id"] for r in rep["runs"]] == ["s3a"]  # the rerun wrote no record

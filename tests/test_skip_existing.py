"""Scheduled compliance runs: ``--skip-existing`` reruns and ``blurbeam report``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from test_shards import face_image, plain_image, run_pipeline

from blurbeam.pipelines.cli import main as cli_main
from blurbeam.pipelines.scaffold import DEFAULT_DETECTOR
from blurbeam.report import load_audit
from blurbeam.schemas.audit import AUDIT_SCHEMA
from blurbeam.schemas.layout import OWN_FILES
from blurbeam.shards import tar as tarfmt


def build_inputs(root: Path) -> int:
    """Plain files, a tar shard and a Parquet shard; returns the number of images."""
    (root / "photos").mkdir(parents=True)
    for i in range(3):
        (root / "photos" / f"face{i}.jpg").write_bytes(face_image(i))
    (root / "photos" / "empty_scene.png").write_bytes(plain_image(1, "PNG"))
    samples = {f"s{i}": {"jpg": face_image(10 + i), "json": b'{"i": %d}' % i} for i in range(2)}
    (root / "shard-0.tar").write_bytes(tarfmt.write_samples(samples))
    pq.write_table(
        pa.table({"image": [{"bytes": face_image(20), "path": "x.jpg"}], "label": [4]}),
        root / "rows.parquet",
    )
    return 4 + 2 + 1


def snapshot(out: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every output file (not the audit, attestations, index or reports)."""
    return {
        p.relative_to(out).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.relative_to(out).as_posix().startswith(OWN_FILES)
    }


def test_second_run_skips_everything_and_changes_nothing(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    n = build_inputs(src)
    first, _ = run_pipeline(src, out, "--run-id", "night1", "--skip-existing")
    assert len(first) == n and {r["status"] for r in first} <= {"ok", "no_faces"}
    before = snapshot(out)
    assert len(before) == 4 + 2  # 4 images, 1 tar, 1 Parquet
    second, counters = run_pipeline(src, out, "--run-id", "night2", "--skip-existing")
    assert second == []
    assert counters["images_skipped"] == n
    assert counters.get("images_read", 0) == 0 and counters.get("model_loads", 0) == 0
    assert snapshot(out) == before
    assert load_audit(str(out)).num_rows == n

    # a changed config processes everything again, and rewrites the outputs
    third, _ = run_pipeline(src, out, "--run-id", "pix", "--skip-existing", "--method", "pixelate")
    assert len(third) == n
    after = snapshot(out)
    changed = [k for k in before if after[k][0] != before[k][0]]
    assert "photos/face0.jpg" in changed and "shard-0.tar" in changed and "rows.parquet" in changed


def test_rerun_after_crash_finishes_the_rest_once(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    n = build_inputs(src)
    (src / "photos" / "truncated.jpg").write_bytes(face_image(5)[:2000])
    records, _ = run_pipeline(src, out, "--run-id", "crashed", "--audit-shards", "3")
    assert len(records) == n + 1
    # the run "crashed" after the audit of some shards was written: keep only those records
    survivors = {
        str(src / "shard-0.tar"),
        str(src / "photos" / "face0.jpg"),
        str(src / "photos" / "truncated.jpg"),
    }
    kept = [r for r in records if r["shard_uri"] in survivors]
    for part in (out / "audit").glob("run-crashed-*.parquet"):
        part.unlink()
    shutil.rmtree(out / "runs")  # a crashed run never reaches its last step: no attestation,
    shutil.rmtree(out / "index")  # no index update
    pq.write_table(
        pa.Table.from_pylist(kept, schema=AUDIT_SCHEMA),
        out / "audit" / "run-crashed-00000-of-00003.parquet",
    )
    survived_ok = {r["source_uri"] for r in kept if r["status"] != "error"}
    assert len(survived_ok) == 3  # the tar's two images and face0.jpg
    truncated = str(src / "photos" / "truncated.jpg")

    # a corrupt input is done too: the same bytes under the same config fail the same way
    rerun, counters = run_pipeline(src, out, "--run-id", "rerun", "--skip-existing")
    everything = {r["source_uri"] for r in records}
    assert {r["source_uri"] for r in rerun} == everything - survived_ok - {truncated}
    assert counters["images_skipped"] == 4
    history = load_audit(str(out)).to_pylist()
    assert {r["source_uri"] for r in history} == everything  # every input accounted for
    ok_uris = [r["source_uri"] for r in history if r["status"] != "error"]
    assert len(ok_uris) == len(set(ok_uris)) == n  # each success recorded exactly once

    # --retry-errors processes exactly the inputs whose last record is an error
    again, _ = run_pipeline(src, out, "--run-id", "retry", "--skip-existing", "--retry-errors")
    assert [(r["source_uri"], r["status"]) for r in again] == [(truncated, "error")]


def test_report_totals_errors_and_coverage(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    n = build_inputs(src)
    (src / "photos" / "truncated.jpg").write_bytes(face_image(5)[:2000])
    argv = ["anonymize", "--input", str(src), "--output", str(out), "--max-error-rate", "1"]
    assert cli_main([*argv, "--run-id", "r1"]) == 0
    assert cli_main([*argv, "--run-id", "r2", "--skip-existing", "--retry-errors"]) == 0
    capsys.readouterr()
    assert cli_main(["report", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert [r["run_id"] for r in rep["runs"]] == ["r1", "r2"]
    r1, r2 = rep["runs"]
    assert r1["images"] == n + 1 and r1["error"] == 1 and r1["detector"] == DEFAULT_DETECTOR
    assert r1["method"] == "gaussian" and r2["images"] == 1  # only the failed input was retried
    cov = rep["coverage"]
    assert (cov["checked"], cov["input"], cov["inputs"], cov["covered"], cov["missing"]) == (
        True, str(src), n + 1, n + 1, []
    )  # fmt: skip
    assert cov["by_status"] == {"ok": n - 1, "no_faces": 1, "error": 1}
    assert len(cov["files"]) == n + 1 and {f["status"] for f in cov["files"]} == set(
        cov["by_status"]
    )
    assert rep["latest_status"]["error"] == 1 and rep["errors"][0]["stage"] == "decode"
    assert rep["errors"][0]["inputs"] == [str(src / "photos" / "truncated.jpg")]
    faces = rep["images_with_faces"]
    assert len(faces) == rep["latest_status"]["ok"] == n - 1  # all but the empty scene
    assert f"{src / 'shard-0.tar'}#s0.jpg" in faces
    assert "all 8 inputs have an audit record" in text and f"detector {DEFAULT_DETECTOR}" in text
    md = (out / "report.md").read_text()
    assert "## Coverage" in md and "| r1 |" in md and "truncated.jpg" in md

    # a new input that no run has seen is reported missing, with exit code 1
    (src / "photos" / "late.jpg").write_bytes(face_image(6))
    assert cli_main(["report", "--output", str(out), "--report-dir", str(tmp_path / "rep")]) == 1
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["coverage"]["missing"] == [str(src / "photos" / "late.jpg")]
    assert "1 of 9 inputs are NOT covered" in capsys.readouterr().out
    # the error rate is over the inputs checked
    strict = ["report", "--output", str(out), "--fail-on-error", "--input"]
    assert cli_main([*strict, str(src / "photos" / "truncated.jpg")]) == 1
    assert cli_main([*strict, str(src / "photos" / "face0.jpg")]) == 0
    assert cli_main(["report", "--output", str(tmp_path / "nothing")]) == 2
    assert "no audit records" in capsys.readouterr().err

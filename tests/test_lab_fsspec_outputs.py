"""``blurbeam evaluate`` and ``blurbeam privacy-audit`` write every output through fsspec, so an
``--output`` on an object store (here fsspec's in-memory filesystem) gets all of them and the
local disk none."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from blurbeam.pipelines.cli import main as cli_main


def _memory_output() -> str:
    return f"memory://blurbeam-test-{uuid.uuid4().hex[:8]}/out"


def _read(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as fh:
        return fh.read()


@pytest.fixture(autouse=True)
def _no_stray_local_output(tmp_path: Path, monkeypatch):
    """Runs in an empty working directory: a local write of a ``memory://`` URL would show up
    here as a ``memory:`` folder."""
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / "memory:").exists()


@pytest.mark.shared
def test_evaluate_writes_its_outputs_to_a_memory_url(shared: Path, tmp_path: Path) -> None:
    dev = shared / "widerface" / "dev305"
    images = tmp_path / "images"
    picked = sorted((dev / "images").glob("*/*.jpg"))[:2]
    for src in picked:
        (images / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, images / src.parent.name / src.name)
    out = _memory_output()
    argv = ["evaluate", "--images", str(images), "--gt", str(dev / "gt.txt")]
    assert cli_main([*argv, "--detector", "yunet", "--output", out]) == 0
    metrics = json.loads(_read(f"{out}/metrics.json"))
    assert metrics["images"] == 2 and metrics["errors"] == 0 and metrics["wall_s"] > 0
    for level in ("easy", "medium", "hard"):
        assert _read(f"{out}/pr_{level}.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(_read(f"{out}/images.jsonl").decode().splitlines()) == 2
    for src in picked:
        text = _read(f"{out}/predictions/{src.parent.name}/{src.stem}.txt").decode()
        assert text.splitlines()[0] == src.stem


@pytest.mark.shared
def test_privacy_audit_writes_its_report_to_a_memory_url(shared: Path, tmp_path: Path) -> None:
    src, anon = tmp_path / "orig", tmp_path / "anon"
    src.mkdir()
    shutil.copy(shared / "crowds" / "ppl.jpg", src / "ppl.jpg")
    weak = ["--method", "gaussian", "--strength", "0.05", "--allow-weak-anonymization"]
    assert cli_main(["anonymize", "--input", str(src), "--output", str(anon), *weak]) == 0
    out = _memory_output()
    argv = ["privacy-audit", "--anonymized", str(anon), "--original", str(src)]
    assert cli_main([*argv, "--output", out, "--attackers", "none"]) == 0
    summary = json.loads(_read(f"{out}/privacy_summary.json"))
    assert [(s["method"], s["strength"]) for s in summary] == [("gaussian", 0.05)]
    with fsspec.open(f"{out}/privacy_rows.parquet", "rb") as fh:
        rows = pq.read_table(fh).to_pylist()
    assert len(rows) == summary[0]["n_faces"] >= 8
    with fsspec.open(f"{out}/privacy_summary.parquet", "rb") as fh:
        assert pq.read_table(fh).num_rows == 1
    assert "gaussian | 0.05" in _read(f"{out}/PRIVACY_REPORT.md").decode()
    assert _read(f"{out}/top1_vs_strength.png")[:8] == b"\x89PNG\r\n\x1a\n"

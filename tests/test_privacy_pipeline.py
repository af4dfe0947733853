"""``blurbeam privacy-audit`` end to end on DirectRunner, on a real crowd photo from ../shared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from blurbeam.pipelines.cli import main as cli_main


@pytest.fixture(scope="module")
def weak_run(shared: Path, tmp_path_factory) -> tuple[Path, Path]:
    """ppl.jpg anonymized with a known-weak Gaussian (sigma = 0.05 x face)."""
    src = tmp_path_factory.mktemp("orig")
    shutil.copy(shared / "crowds" / "ppl.jpg", src / "ppl.jpg")
    out = tmp_path_factory.mktemp("anon")
    argv = ["anonymize", "--input", str(src), "--output", str(out)]
    weak = ["--method", "gaussian", "--strength", "0.05", "--allow-weak-anonymization"]
    assert cli_main([*argv, *weak]) == 0
    return src, out


def test_audit_of_an_anonymize_run_flags_a_weak_setting(weak_run, tmp_path: Path) -> None:
    src, out = weak_run
    rep = tmp_path / "report"
    argv = ["privacy-audit", "--anonymized", str(out), "--original", str(src)]
    assert cli_main([*argv, "--output", str(rep), "--attackers", "none,unsharp"]) == 0
    rows = pq.read_table(rep / "privacy_rows.parquet").to_pylist()
    summary = json.loads((rep / "privacy_summary.json").read_text())
    assert len(summary) == 1
    s = summary[0]
    assert (s["method"], s["strength"]) == ("gaussian", 0.05)
    n = s["n_faces"]
    assert n >= 8 and s["gallery_size"] == n
    assert {r["attacker"] for r in rows} == {"none", "unsharp"}
    assert len(rows) == 2 * n
    assert all(r["face_id"].startswith(str(src / "ppl.jpg")) for r in rows)
    assert all(r["face_size"] >= 40 for r in rows)
    # sigma = 0.05 x face leaks identity: most faces are still their own nearest neighbour.
    assert s["top1_max"] >= 0.5 and not s["passes"]
    report = (rep / "PRIVACY_REPORT.md").read_text()
    assert "gaussian | 0.05" in report and "fewer than 200" in report
    assert (rep / "top1_vs_strength.png").stat().st_size > 1000


def test_audit_without_a_record_redetects_the_faces(weak_run, tmp_path: Path) -> None:
    src, out = weak_run
    rep = tmp_path / "report"
    argv = ["privacy-audit", "--no-audit-record", "--original", str(src), "--anonymized", str(out)]
    argv += ["--output", str(rep), "--attackers", "none", "--strength", "0.05"]
    assert cli_main(argv) == 0
    s = json.loads((rep / "privacy_summary.json").read_text())[0]
    assert s["n_faces"] >= 8 and s["attackers"] == "none"


def test_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    argv = ["privacy-audit", "--anonymized", str(tmp_path / "missing"), "--output", str(tmp_path)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blurbeam privacy-audit: error:") and "\n" not in err
    assert "audit" in err
    assert cli_main([*argv, "--attackers", "none,magic"]) == 2
    assert "magic" in capsys.readouterr().err


def test_sweep_report_without_results_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "shared" / "data").mkdir(parents=True)
    argv = ["privacy-audit", "--sweep", "--report-only", "--shared", str(tmp_path / "shared")]
    assert cli_main([*argv, "--output", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blurbeam privacy-audit: error:") and "\n" not in err
    assert "no sweep results" in err and "Traceback" not in err

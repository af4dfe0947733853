"""Issue 19, as a hostile new user would try it: every numbered item that
tests/test_hostile_metadata.py (items 3 and 6) and tests/test_hostile_shards.py (items 2 and 7's
shards) do not cover, each built from synthetic files made here and run through the real
``blurbeam`` CLI (in process, or as a subprocess where the check is on what a user sees). Also
the check that every test docs/SECURITY.md's hostile-input table names exists."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from test_shards import changed_fraction, face_image, plain_image

from blurbeam.imageio import DEFAULT_MAX_PIXELS
from blurbeam.pipelines.cli import main as cli_main
from blurbeam.shards import DEFAULT_MAX_BYTES

REPO = Path(__file__).resolve().parents[1]
YUNET = ("--detector", "yunet")
#: Files under --output that are the run's own records and reports, not anonymized data.
OWN = ("audit/", "runs/", "index/", "run.json", "report.json", "report.md")
#: What a subprocess running the CLI is given: the installed package, nothing else.
CLI = [
    sys.executable,
    "-c",
    "import sys; from blurbeam.pipelines.cli import main; sys.exit(main())",
]


# ---------------------------------------------------------------- helpers


def anonymize(capsys, inp: Path | str, out: Path | str, *flags: str) -> tuple[int, str]:
    """``blurbeam anonymize`` in process: (exit code, stderr)."""
    capsys.readouterr()
    argv = ["anonymize", "--input", str(inp), "--output", str(out), "--progress", "off"]
    rc = cli_main([*argv, *flags])
    return rc, capsys.readouterr().err


def the_error_line(err: str, command: str = "anonymize") -> str:
    """The one error line of ``err``, which must hold nothing else (no traceback, no usage)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"blurbeam {command}: error: "), err
    return lines[0]


def files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (not following symlinks) -> its bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def records(out: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """The audit records under ``out`` (of one run when ``run_id`` is given)."""
    parts = sorted((out / "audit").glob("*.parquet")) if (out / "audit").is_dir() else []
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    return [r for r in rows if run_id is None or r["run_id"] == run_id]


def data_files(out: Path) -> set[str]:
    """Absolute paths of the anonymized files under ``out`` (not its records and reports)."""
    return {str(out / rel) for rel in files(out) if not rel.startswith(OWN)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hostile_tar() -> bytes:
    """A WebDataset shard with one good sample and a member whose name escapes the shard: that
    member fails the same way on every run."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, body in (
            ("good.jpg", face_image(0)),
            ("good.json", b'{"id": 0}'),
            ("../x.jpg", face_image(1)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity (which are not JSON)."""

    def refuse(const: str) -> Any:
        raise ValueError(f"{const} in JSON")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------- item 1: originals overwritten


@pytest.mark.parametrize(
    "inp, out",
    [
        ("s", "s/."),
        ("s", "s//"),
        ("s", "./s"),
        ("s", "x/../s"),
        ("s", "link-to-s"),
        ("s/a.jpg", "s"),
    ],
)
def test_output_that_is_the_input_spelled_another_way_is_refused(
    tmp_path, monkeypatch, capsys, inp, out
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir()
    (tmp_path / "x").mkdir()
    (tmp_path / "s" / "a.jpg").write_bytes(face_image(0))
    (tmp_path / "link-to-s").symlink_to("s")
    before = files(tmp_path / "s")
    rc, err = anonymize(capsys, inp, out, *YUNET)
    assert rc == 2
    assert "the input's folder or holds it" in the_error_line(err)
    assert files(tmp_path / "s") == before  # originals byte-identical, no audit/ or run.json


# ---------------------------------------------------------------- item 4: output inside the input


@pytest.mark.parametrize("spelling", ["dotdot", "symlink"])
def test_output_inside_the_input_is_never_read_back(tmp_path, capsys, spelling):
    src = tmp_path / "in"
    (src / "out").mkdir(parents=True)
    (tmp_path / "x").mkdir()
    (src / "a.jpg").write_bytes(face_image(1))
    (src / "b.png").write_bytes(plain_image(2, "PNG"))
    if spelling == "dotdot":
        out = f"{tmp_path}/x/../in/out"
    else:
        (tmp_path / "link").symlink_to(src / "out")
        out = str(tmp_path / "link")
    inputs = {str(src / "a.jpg"), str(src / "b.png")}
    for run_id in ("first", "second"):
        rc, err = anonymize(capsys, src, out, *YUNET, "--run-id", run_id)
        assert rc == 0, err
        got = records(src / "out", run_id)
        assert {r["source_uri"] for r in got} == inputs, run_id  # not its outputs nor its audit
        assert {r["status"] for r in got} == {"ok", "no_faces"}
    assert not (src / "out" / "out").exists()


def test_symlinked_folder_inside_the_output_cannot_redirect_a_write_into_the_input(
    tmp_path, capsys
):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    original = face_image(3)
    (src / "sub" / "a.jpg").write_bytes(original)
    out.mkdir()
    (out / "sub").symlink_to(src / "sub")
    rc, err = anonymize(capsys, src, out, *YUNET, "--max-error-rate", "1")
    assert rc == 0, err
    [rec] = records(out)
    assert (rec["status"], rec["error_stage"]) == ("error", "write")
    assert "resolves outside the output" in rec["error"] and rec["output_uri"] is None
    assert files(src) == {"sub/a.jpg": original}  # unchanged, no temporary file left there


# ---------------------------------------------------------------- item 5: weak settings


WEAK = {
    "pixelate-1000-blocks": (["--method", "pixelate", "--strength", "1000"], "pixelate with 1000"),
    "gaussian-1e-9": (["--strength", "1e-9"], "gaussian strength 1e-09"),
    "bilateral": (["--method", "bilateral"], "bilateral blur keeps edges"),
    "mask-scale-1.3": (["--mask-scale", "1.3"], "mask scale 1.3"),
}


@pytest.mark.parametrize("case", list(WEAK))
def test_weak_setting_refused_unless_allowed_then_recorded(tmp_path, capsys, case):
    flags, reason = WEAK[case]
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.jpg").write_bytes(face_image(4))
    rc, err = anonymize(capsys, src, out, *YUNET, *flags)
    assert rc == 2
    line = the_error_line(err)
    assert reason in line and "--allow-weak-anonymization" in line
    assert not out.exists()

    rc, err = anonymize(capsys, src, out, *YUNET, *flags, "--allow-weak-anonymization")
    assert rc == 0, err
    summary = json.loads((out / "run.json").read_text())
    assert reason in summary["weak_anonymization"]
    [rec] = records(out)
    assert rec["status"] == "ok"
    assert json.loads(rec["method_params"])["weak_anonymization"] == summary["weak_anonymization"]


# ------------------------------------- items 7, 10, 11: one run over every kind of file a user has


MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A folder holding images without an image extension, text, a video, hidden files, a
    dangling symlink and a FIFO named like a JPEG, anonymized by a subprocess from the folder
    above it with a relative --output and one of Beam's own flags (a hung read fails the
    timeout)."""
    root = tmp_path_factory.mktemp("mixed")
    src = root / "in"
    (src / "sub").mkdir(parents=True)
    (src / ".cache").mkdir()
    (src / "photo").write_bytes(face_image(5))
    (src / "x.txt").write_bytes(face_image(6))
    (src / "sub" / "scene.png").write_bytes(plain_image(7, "PNG"))
    (src / "notes.txt").write_bytes(b"meeting notes: nothing to see\n")
    (src / "clip.mp4").write_bytes(MP4_HEAD)
    (src / ".hidden.jpg").write_bytes(face_image(8))
    (src / ".cache" / "c.jpg").write_bytes(face_image(9))
    (src / "dangling.jpg").symlink_to(root / "gone.jpg")
    os.mkfifo(src / "a.jpg")
    originals = files(src)
    argv = ["anonymize", "--input", "in", "--output", "out", "--run-id", "mixed"]
    proc = subprocess.run(
        [*CLI, *argv, "--max-error-rate", "1", "--direct_num_workers", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    by_name = {Path(r["source_uri"]).relative_to(src).as_posix(): r for r in records(root / "out")}
    return root, originals, proc, by_name


@pytest.mark.parametrize("name", ["photo", "x.txt"])
def test_image_without_an_image_extension_is_anonymized_by_its_bytes(mixed, name):
    root, originals, _, by_name = mixed
    rec = by_name[name]
    assert rec["status"] == "ok" and rec["format"] == "JPEG"
    written = (root / "out" / name).read_bytes()
    assert rec["output_sha256"] == sha(written)
    assert changed_fraction(originals[name], written, rec["faces"]) > 0.9


@pytest.mark.parametrize(
    "name, reason",
    [
        ("notes.txt", "not an image: unrecognised data"),
        (".hidden.jpg", "hidden file"),
        (".cache/c.jpg", "hidden file"),
    ],
)
def test_non_image_and_hidden_files_get_a_skipped_record_and_are_not_copied(mixed, name, reason):
    root, originals, _, by_name = mixed
    rec = by_name[name]
    assert (rec["status"], rec["output_uri"]) == ("skipped", None)
    assert reason in rec["skip_reason"]
    assert rec["source_sha256"] == sha(originals[name])
    assert not (root / "out" / name).exists()


def test_a_video_name_on_bytes_that_hold_no_video_is_an_error_and_not_copied(mixed):
    root, _, _, by_name = mixed
    rec = by_name["clip.mp4"]  # an MP4 header and nothing else
    assert (rec["status"], rec["error_stage"], rec["output_uri"]) == ("error", "video", None)
    assert rec["error"].startswith("cannot open video")
    assert not (root / "out" / "clip.mp4").exists()


def test_every_file_gets_exactly_one_record_and_originals_are_untouched(mixed):
    root, originals, proc, by_name = mixed
    assert proc.returncode == 0, proc.stderr  # --direct_num_workers went to Beam
    listed = set(originals) | {"a.jpg", "dangling.jpg"}  # + the FIFO and the dangling link
    assert set(by_name) == listed
    assert len(records(root / "out")) == len(listed)
    assert files(root / "in") == originals
    strict_json((root / "out" / "run.json").read_text())
    for rec in by_name.values():
        for column in ("detector_params", "method_params", "metadata_policy"):
            strict_json(rec[column])


def test_report_lists_every_file_and_fails_on_a_file_without_a_record(
    mixed, monkeypatch, capsys, tmp_path
):
    root, _, _, by_name = mixed
    src = root / "in"
    monkeypatch.chdir(root)  # run.json names the input as the run was given it
    assert cli_main(["report", "--output", "out", "--report-dir", str(tmp_path / "a")]) == 0
    cov = json.loads((tmp_path / "a" / "report.json").read_text())["coverage"]
    listed = {f["input"]: f["status"] for f in cov["files"]}
    assert listed == {str(src / name): r["status"] for name, r in by_name.items()}
    assert cov["missing"] == []

    late = src / "late.jpg"  # a file added after the run
    late.write_bytes(face_image(10))
    try:
        rc = cli_main(["report", "--output", "out", "--report-dir", str(tmp_path / "b")])
    finally:
        late.unlink()
    assert rc == 1
    cov = json.loads((tmp_path / "b" / "report.json").read_text())["coverage"]
    assert cov["missing"] == [str(late)]
    assert {f["input"]: f["status"] for f in cov["files"]}[str(late)] == "missing"
    assert len(cov["files"]) == len(by_name) + 1


def test_report_from_another_folder_checks_the_runs_input(mixed, monkeypatch, tmp_path):
    """run.json names the input the run read, wherever the report runs (a scheduled job)."""
    root, _, _, by_name = mixed
    monkeypatch.chdir(tmp_path)
    rc = cli_main(["report", "--output", str(root / "out"), "--report-dir", str(tmp_path)])
    cov = json.loads((tmp_path / "report.json").read_text())["coverage"]
    assert cov["checked"], cov
    assert (rc, cov["inputs"], cov["missing"]) == (0, len(by_name), [])


def test_dangling_symlink_and_fifo_get_error_records(mixed):
    _, _, _, by_name = mixed
    link, fifo = by_name["dangling.jpg"], by_name["a.jpg"]
    assert (link["status"], link["error_stage"]) == ("error", "read")
    assert "broken symbolic link" in link["error"]
    assert (fifo["status"], fifo["error_stage"]) == ("error", "read")
    assert "FIFO" in fifo["error"]


def test_output_uri_is_absolute_when_output_is_relative(mixed):
    root, _, _, by_name = mixed
    written = [r["output_uri"] for r in by_name.values() if r["output_uri"]]
    assert len(written) == 3  # photo, x.txt, sub/scene.png
    assert all(
        Path(u).is_absolute() and Path(u).parent.is_relative_to(root / "out") for u in written
    )
    assert json.loads((root / "out" / "run.json").read_text())["output"] == str(root / "out")


def test_what_a_user_sees_is_plain(mixed):
    _, _, proc, by_name = mixed
    assert "Traceback" not in proc.stderr and "apitools" not in proc.stderr
    faces = sum(r["num_faces"] or 0 for r in by_name.values())
    assert f", {faces} faces," in proc.stderr if faces != 1 else ", 1 face," in proc.stderr


# ---------------------------------------------------------------- item 8: --skip-existing


def test_skip_existing_redoes_missing_or_changed_outputs_and_never_a_done_shard(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name, data in {
        "a.jpg": face_image(11),
        "b.jpg": face_image(12),
        "c.png": plain_image(13, "PNG"),
        "hostile.tar": hostile_tar(),
    }.items():
        (src / name).write_bytes(data)
    flags = (*YUNET, "--skip-existing", "--max-error-rate", "1")
    rc, err = anonymize(capsys, src, out, *flags, "--run-id", "n1")
    assert rc == 0, err
    first = records(out, "n1")
    tar = {r["key"]: r for r in first if r["shard_uri"] == str(src / "hostile.tar")}
    assert (tar["good.jpg"]["status"], tar["../x.jpg"]["status"]) == ("ok", "error")

    (out / "a.jpg").unlink()
    (out / "b.jpg").write_bytes(plain_image(14))
    rc, err = anonymize(capsys, src, out, *flags, "--run-id", "n2")
    assert rc == 0, err
    second = records(out, "n2")
    assert sorted(Path(r["source_uri"]).name for r in second) == ["a.jpg", "b.jpg"]
    for r in second:
        assert r["status"] == "ok" and sha(Path(r["output_uri"]).read_bytes()) == r["output_sha256"]
    skipped = len(first) - len(second)
    assert f"skipped {skipped} inputs already done" in err
    good = f"{src / 'hostile.tar'}#good.jpg"
    assert [r["status"] for r in records(out) if r["source_uri"] == good] == ["ok"]

    rc, err = anonymize(capsys, src, out, *flags, "--retry-errors", "--run-id", "n3")
    assert rc == 0, err
    third = {r["key"]: r for r in records(out, "n3")}
    assert set(third) == set(tar)  # the shard with the error, whole, and nothing else
    assert (third["good.jpg"]["status"], third["../x.jpg"]["status"]) == ("ok", "error")
    assert third["good.jpg"]["num_faces"] == 1 and ", 1 face," in err
    assert f"skipped {len(first) - len(tar)} inputs already done" in err


def test_skipped_count_is_a_number_on_direct_runner(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(face_image(21))
    rc, err = anonymize(capsys, src, tmp_path / "out", *YUNET, "--skip-existing")
    assert rc == 0, err
    assert "skipped 0 inputs already done" in err, err


def test_counts_of_one_are_singular(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(face_image(22))
    rc, err = anonymize(capsys, src, tmp_path / "out", *YUNET)
    assert rc == 0, err
    [rec] = records(tmp_path / "out")
    assert rec["num_faces"] == 1
    assert "runner DirectRunner, 1 input" in err and "done: 1 input (" in err
    assert ", 1 face," in err
    # a count of one, not the tail of a rate such as "2.41 inputs/s"
    assert not re.search(r"(?<![\d.])1 (faces|inputs)\b", err), err


# ---------------------------------------------------------------- item 9: failures while writing


def test_audit_write_failure_fails_the_run_and_leaves_no_unrecorded_output(
    tmp_path, capsys, monkeypatch
):
    from blurbeam.transforms import write

    def fail(self, keyed):
        raise OSError("injected: the audit folder went read-only")

    monkeypatch.setattr(write._WriteAuditShardFn, "process", fail)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.jpg").write_bytes(face_image(15 + i))
    originals = files(src)
    out.mkdir()
    (out / "notes.md").write_text("the user's own file, older than the run")
    os.utime(out / "notes.md", (1_000_000_000, 1_000_000_000))
    rc, err = anonymize(capsys, src, out, *YUNET)
    assert rc == 1
    assert (out / "notes.md").exists()  # only this run's unrecorded outputs are removed
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("blurbeam anonymize: error: ")
    assert "injected" in errors[0] and "Traceback" not in err
    recorded = {r["output_uri"] for r in records(out) if r["output_uri"]}
    assert data_files(out) - {str(out / "notes.md")} <= recorded
    assert files(src) == originals


@pytest.mark.parametrize("where", ["a-file", "proc", "audit-is-a-file"])
def test_unwritable_output_is_a_one_line_error_before_the_pipeline_starts(tmp_path, capsys, where):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(face_image(18))
    if where == "a-file":
        out = tmp_path / "out.jpg"
        out.write_bytes(b"not a folder")
    elif where == "proc":
        out = Path("/proc/blurbeam-x")  # no one can create a folder there, not even root
    else:
        out = tmp_path / "out"
        out.mkdir()
        (out / "audit").write_bytes(b"not a folder")
    rc, err = anonymize(capsys, src, out, *YUNET)
    assert rc == 2
    line = the_error_line(err)  # nothing else: the run never started
    assert str(out) in line
    assert files(src) == {"a.jpg": face_image(18)}


# ---------------------------------------------------------------- item 10: flags and numbers


def test_misspelled_flags_are_an_error_naming_the_closest_flag(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.jpg").write_bytes(face_image(19))
    rc, err = anonymize(capsys, src, out, "--detectr", "yunet", "--strenght", "0.01")
    assert rc == 2
    line = the_error_line(err)
    assert "--detectr" in line and "did you mean --detector?" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--strength", "nan"),
        ("--strength", "inf"),
        ("--mask-scale", "nan"),
        ("--max-error-rate", "-1"),
    ],
)
def test_non_finite_or_out_of_range_numbers_are_refused_at_parse_time(
    tmp_path, capsys, flag, value
):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.jpg").write_bytes(face_image(20))
    rc, err = anonymize(capsys, src, out, *YUNET, flag, value)
    assert rc == 2
    line = the_error_line(err)
    assert f"argument {flag}" in line and repr(value) in line
    assert not out.exists()  # no audit, so no NaN in one


# ---------------------------------------------------------------- item 11: what a user reads


def test_help_describes_the_tool_names_the_detectors_and_the_limits(tmp_path):
    top = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=120)
    sub = subprocess.run([*CLI, "anonymize", "--help"], capture_output=True, text=True, timeout=120)
    for proc in (top, sub):
        assert proc.returncode == 0 and "apitools" not in proc.stdout + proc.stderr
    description = top.stdout.split("\n\n")[1]  # after the usage block
    assert "``" not in description and "face" in description
    text = " ".join(sub.stdout.split())
    for name in ("multiscale", "centerface", "yunet"):
        assert name in text
    assert f"default {DEFAULT_MAX_PIXELS:,}" in text and f"default {DEFAULT_MAX_BYTES:,}" in text


# ---------------------------------------------------------------- docs/SECURITY.md


def test_every_test_named_in_security_md_exists():
    text = (REPO / "docs" / "SECURITY.md").read_text()
    table = text.split("## Hostile inputs", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("|")][2:]  # no header
    assert len(rows) >= 30
    cited = []
    for row in rows:
        refs = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)", row)
        assert refs, f"a hostile input without a test: {row}"
        cited += refs
    defined: dict[str, set[str]] = {}
    for path, name in cited:
        if path not in defined:
            tree = ast.parse((REPO / path).read_text())
            defined[path] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert name in defined[path], f"{path}::{name} named in docs/SECURITY.md does not exist"

"""The compliance record of scheduled runs: config hashes that cover the package and the models,
chained attestations written by the pipeline, the done index, and ``blurbeam report --verify``
and coverage, as a nightly job uses them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from test_shards import face_image, plain_image, run_pipeline

from blurbeam import attest
from blurbeam.pipelines import anonymize as anon
from blurbeam.pipelines.cli import main as cli_main
from blurbeam.schemas.attestation import ATTESTATION_FIELDS
from blurbeam.shards import tar as tarfmt

DETECTOR = ("--detector", "yunet")


def build_inputs(root: Path) -> None:
    (root / "photos").mkdir(parents=True)
    for i in range(3):
        (root / "photos" / f"face{i}.jpg").write_bytes(face_image(i))
    (root / "photos" / "scene.png").write_bytes(plain_image(1, "PNG"))
    (root / "notes.txt").write_text("not an image")
    samples = {f"s{i}": {"jpg": face_image(10 + i), "json": b'{"i": %d}' % i} for i in range(2)}
    (root / "shard-0.tar").write_bytes(tarfmt.write_samples(samples))


def night(src: Path, out: Path, run_id: str, *extra: str):
    return run_pipeline(src, out, "--run-id", run_id, "--skip-existing", *DETECTOR, *extra)


def report(out: Path, *extra: str) -> tuple[int, dict]:
    rep_dir = out.parent / "rep"
    code = cli_main(["report", "--output", str(out), "--report-dir", str(rep_dir), *extra])
    return code, json.loads((rep_dir / "report.json").read_text())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def two_nights(tmp_path):
    """Night 1 on a dataset; then one input changed, one added and one output deleted; night 2."""
    src, out = tmp_path / "in", tmp_path / "out"
    build_inputs(src)
    first, _ = night(src, out, "n1")
    (src / "photos" / "face1.jpg").write_bytes(face_image(7))  # changed
    (src / "photos" / "late.jpg").write_bytes(face_image(8))  # added
    (out / "photos" / "face2.jpg").unlink()  # an output lost
    second, counters = night(src, out, "n2")
    return src, out, first, second, counters


def test_second_night_processes_exactly_what_changed_and_chains_its_attestation(two_nights):
    src, out, first, second, counters = two_nights
    assert len(first) == 7  # 4 photos, notes.txt (skipped), the 2 images of the tar shard
    photos = src / "photos"
    assert {r["source_uri"] for r in second} == {
        str(photos / "face1.jpg"),
        str(photos / "late.jpg"),
        str(photos / "face2.jpg"),
    }
    assert counters["images_skipped"] == len(first) - 2
    assert (out / "photos" / "face2.jpg").exists()

    n1 = json.loads((out / "runs" / "n1.json").read_text())
    n2 = json.loads((out / "runs" / "n2.json").read_text())
    assert set(n2) == set(ATTESTATION_FIELDS)
    assert n1["previous_run_id"] is None and n1["previous_sha256"] is None
    assert n2["previous_run_id"] == "n1" and n2["previous_sha256"] == sha(out / "runs" / "n1.json")
    assert n2["inputs_listed"] == len(first) + 1 and n2["inputs_already_done"] == len(first) - 2
    assert n2["counts"] == {"ok": 3}
    for name, digest in n2["audit_files"].items():
        assert sha(out / "audit" / name) == digest
    manifest = pq.read_table(out / "runs" / n2["manifest"]).to_pylist()
    assert len(manifest) == n2["inputs_listed"]
    face1 = next(m for m in manifest if m["input"] == str(photos / "face1.jpg"))
    assert face1["run_id"] == "n2" and face1["source_sha256"] == sha(photos / "face1.jpg")
    assert n2["config_hash"] == n1["config_hash"]
    assert n2["models"]["detector"] == n1["config"]["models"]["detector"]

    code, rep = report(out, "--verify")
    assert code == 0
    assert rep["verify"]["runs"] == ["n1", "n2"] and rep["verify"]["problems"] == []
    assert rep["verify"]["head_sha256"] == sha(out / "runs" / "n2.json")
    cov = rep["coverage"]
    assert cov["checked"] and cov["uncovered"] == [] and cov["config_hash"] == n2["config_hash"]
    assert cov["inputs"] == len(first) + 1 and cov["by_status"]["skipped"] == 1


def test_a_night_with_nothing_new_still_leaves_an_attestation(two_nights):
    src, out, first, _, _ = two_nights
    third, counters = night(src, out, "n3")
    assert third == [] and counters["images_skipped"] == len(first) + 1
    n3 = json.loads((out / "runs" / "n3.json").read_text())
    assert n3["counts"] == {} and n3["inputs_already_done"] == len(first) + 1
    assert n3["audit_files"] == {} and n3["previous_run_id"] == "n2"
    code, rep = report(out, "--verify")
    assert code == 0 and rep["verify"]["runs"] == ["n1", "n2", "n3"]


def test_an_upgrade_is_a_new_config_and_old_records_no_longer_cover(two_nights, monkeypatch):
    src, out, first, _, _ = two_nights
    monkeypatch.setattr(anon, "__version__", "9.9.9")
    upgraded, _ = night(src, out, "n3")
    assert len(upgraded) == len(first) + 1  # everything, once
    n2 = json.loads((out / "runs" / "n2.json").read_text())
    n3 = json.loads((out / "runs" / "n3.json").read_text())
    assert n3["config_hash"] != n2["config_hash"] and n3["config"]["package_version"] == "9.9.9"
    code, rep = report(out, "--verify")
    assert code == 0 and rep["coverage"]["config_hash"] == n3["config_hash"]

    # an input that appears now has records under no config; the report fails on it
    (src / "photos" / "later.jpg").write_bytes(face_image(9))
    code, rep = report(out)
    assert code == 1 and rep["coverage"]["missing"] == [str(src / "photos" / "later.jpg")]


def test_records_of_an_older_config_do_not_cover(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    build_inputs(src)
    night(src, out, "gauss")
    (src / "photos" / "face0.jpg").unlink()
    night(src, out, "pix", "--method", "pixelate")
    (src / "photos" / "face0.jpg").write_bytes(face_image(0))  # back, done only under "gauss"
    code, rep = report(out)
    files = {f["input"]: f for f in rep["coverage"]["files"]}
    assert code == 1
    assert files[str(src / "photos" / "face0.jpg")]["status"] == "old_config"


def test_rehash_finds_an_input_changed_after_its_run(two_nights):
    src, out, _, _, _ = two_nights
    (src / "photos" / "face0.jpg").write_bytes(face_image(5))
    assert report(out)[0] == 0  # names only: still covered
    code, rep = report(out, "--rehash")
    files = {f["input"]: f["status"] for f in rep["coverage"]["files"]}
    assert code == 1 and files[str(src / "photos" / "face0.jpg")] == "changed"
    assert list(files.values()).count("changed") == 1


def test_verify_catches_an_edited_audit_file_a_removed_run_and_an_edited_index(two_nights):
    src, out, _, _, _ = two_nights
    [part] = sorted((out / "audit").glob("run-n1-*.parquet"))
    table = pq.read_table(part)
    status = table.column("status").to_pylist()
    status[0] = "ok" if status[0] != "ok" else "no_faces"
    edited = table.set_column(table.schema.get_field_index("status"), "status", pa.array(status))
    pq.write_table(edited, part)
    code, rep = report(out, "--verify")
    assert code == 1
    assert any(
        f"audit file {part.name} of run n1 was changed" in p for p in rep["verify"]["problems"]
    )

    src2, out2 = out.parent / "in2", out.parent / "out2"
    build_inputs(src2)
    for run_id in ("a", "b", "c"):
        night(src2, out2, run_id)
    (out2 / "runs" / "b.json").unlink()
    problems, _ = attest.verify(str(out2))
    assert "attestation a is not on the chain that ends at c" in problems
    assert any("an earlier attestation was removed" in p for p in problems)

    # an index edited by hand is reported, and --skip-existing does not trust it
    src3, out3 = out.parent / "in3", out.parent / "out3"
    build_inputs(src3)
    night(src3, out3, "x1")
    index = out3 / "index" / "done.parquet"
    rows = pq.read_table(index).to_pylist()
    for r in rows:
        r["shard_uri"] = r["shard_uri"] + "-edited"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(index)), index)
    assert any("index/done.parquet differs" in p for p in attest.verify(str(out3))[0])
    assert attest.trusted_index(str(out3)) is None
    again, counters = night(src3, out3, "x2")
    assert again == [] and counters["images_skipped"] == 7  # from the audit history instead


def test_run_ids_are_never_reused(two_nights, capsys):
    src, out, _, _, _ = two_nights
    before = sha(out / "runs" / "n2.json")
    argv = ["anonymize", "--input", str(src), "--output", str(out), *DETECTOR, "--run-id", "n2"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "was used before" in err and "\n" not in err
    assert sha(out / "runs" / "n2.json") == before
    with pytest.raises(attest.AttestationExists):
        attest.write_once(str(out / "runs" / "n2.json"), b"{}")


def test_the_report_needs_no_run_json(two_nights):
    """On Dataflow the launcher writes no run.json: the attestation names the input."""
    src, out, _, _, _ = two_nights
    assert not (out / "run.json").exists()  # run_pipeline, like a template launch, writes none
    code, rep = report(out, "--verify")
    assert code == 0 and rep["coverage"]["checked"] and rep["coverage"]["input"] == str(src)


def test_config_hash_covers_package_version_and_models(tmp_path, monkeypatch):
    src = tmp_path / "in"
    build_inputs(src)

    def plan() -> anon.RunPlan:
        argv = ["--input", str(src), "--output", str(tmp_path / "o"), *DETECTOR]
        return anon.plan(PipelineOptions(argv).view_as(anon.AnonymizeOptions))

    base = plan()
    assert base.config["package_version"] == anon.__version__
    assert len(base.config["models"]["detector"]) == 64
    monkeypatch.setattr(anon, "__version__", "0.0.0-other")
    assert plan().ctx.config_hash != base.ctx.config_hash
    monkeypatch.undo()
    import blurbeam.detectors as detectors

    real_describe = detectors.describe
    monkeypatch.setattr(detectors, "describe", lambda spec: ("f" * 64, real_describe(spec)[1]))
    assert plan().ctx.config_hash != base.ctx.config_hash


def test_config_records_the_detectors_resolved_settings_and_hashes_its_code_defaults(
    tmp_path, monkeypatch
):
    """A default changed in the code, not in any option, is a new config (and so a resumed
    run reprocesses); run.json says what the detector ran with."""
    src = tmp_path / "in"
    build_inputs(src)

    def plan() -> anon.RunPlan:
        argv = ["--input", str(src), "--output", str(tmp_path / "o"), "--detector", "multiscale"]
        return anon.plan(PipelineOptions(argv).view_as(anon.AnonymizeOptions))

    from blurbeam.detectors import multiscale

    base = plan()
    settings = base.config["detector"]["settings"]
    tiles = multiscale.FP32_TILES if settings["base_settings"]["precision"] == "fp32" else None
    tiles = tiles or multiscale.TILES
    assert settings["full_max_pixels"] == tiles["full_max_pixels"]
    assert settings["scales"] == [0.5, 1.0, 2.0] and settings["fusion"] == "vote"
    assert settings["base_settings"]["nms_threshold"] == 0.3
    json.dumps(base.config)  # JSON as it is
    monkeypatch.setitem(multiscale.TILES, "full_max_pixels", 1_234_567)
    monkeypatch.setitem(multiscale.FP32_TILES, "full_max_pixels", 1_234_567)
    changed = plan()
    assert changed.config["detector"]["settings"]["full_max_pixels"] == 1_234_567
    assert changed.ctx.config_hash != base.ctx.config_hash


def run_with_other_launcher(tmp_path, change, clip_of=None) -> dict:
    """One face image (or with ``clip_of``, an astronaut, a short video of her) through a run
    whose plan ``change`` edited (as if another launcher had planned it; None: as planned);
    returns its one record. An edited plan writes no output."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir(parents=True)
    name = "a.jpg" if clip_of is None else "a.mp4"
    if clip_of is None:
        (src / name).write_bytes(face_image(1))
    else:
        from test_video import make_clip

        make_clip(src / name, clip_of, frames=8, size=(320, 240), audio=None)
    argv = ["--input", str(src), "--output", str(out), *DETECTOR, "--max-error-rate", "1"]
    rp = anon.plan(PipelineOptions(argv).view_as(anon.AnonymizeOptions))
    if change is not None:
        change(rp.config)
    p = beam.Pipeline()
    anon.build(p, rp)
    p.run().wait_until_finish()
    [rec] = anon.read_run_records(rp.output, rp.run_id).to_pylist()
    assert (out / name).exists() == (change is None)
    return rec


def test_a_worker_with_another_model_fails_closed(tmp_path):
    def other_model(config: dict) -> None:
        config["models"]["detector"] = "0" * 64

    rec = run_with_other_launcher(tmp_path, other_model)
    assert rec["status"] == "error" and "not the one the run was planned with" in rec["error"]


def test_a_video_worker_with_another_model_fails_closed(tmp_path, astronaut):
    def other_model(config: dict) -> None:
        config["models"]["detector"] = "0" * 64

    rec = run_with_other_launcher(tmp_path, other_model, clip_of=astronaut)
    assert rec["status"] == "error" and "not the one the run was planned with" in rec["error"]


def other_default(config: dict) -> None:
    settings = config["detector"]["settings"]
    assert settings["nms_threshold"] == 0.3  # yunet's default, resolved by the launcher
    settings["nms_threshold"] = 0.45  # the launcher's code had another default


def test_a_worker_whose_code_resolves_other_settings_fails_closed(tmp_path):
    # the same detector loaded by a run in this process first: workers reuse a loaded model
    assert run_with_other_launcher(tmp_path / "first", None)["status"] == "ok"
    rec = run_with_other_launcher(tmp_path / "second", other_default)
    assert rec["status"] == "error" and "settings differ" in rec["error"]
    assert "nms_threshold" in rec["error"]


def test_a_video_worker_whose_code_resolves_other_settings_fails_closed(tmp_path, astronaut):
    rec = run_with_other_launcher(tmp_path, other_default, clip_of=astronaut)
    assert rec["status"] == "error" and "settings differ" in rec["error"]


def test_a_corrections_file_no_attestation_names_is_ignored(tmp_path):
    """Kept reviewer corrections apply to later runs only when an attestation names them: a file
    slipped into OUTPUT/corrections/ cannot drop a detected face."""
    from blurbeam.review.corrections import FORMAT, STORED_FORMAT

    src, out = tmp_path / "in", tmp_path / "out"
    build_inputs(src)
    first, _ = night(src, out, "n1")
    face0 = next(r for r in first if r["source_uri"].endswith("face0.jpg"))
    assert face0["faces"]
    forged = {
        "format": STORED_FORMAT,
        "run_id": "forged",
        "drop_false_positives": True,
        "corrections": {
            "format": FORMAT,
            "corrections": [
                {
                    "source_uri": face0["source_uri"],
                    "source_sha256": face0["source_sha256"],
                    "width": face0["width"],
                    "height": face0["height"],
                    "missed_faces": [],
                    "false_positives": [
                        {k: f[k] for k in ("x", "y", "w", "h")} for f in face0["faces"]
                    ],
                }
            ],
        },
    }
    (out / "corrections").mkdir()
    (out / "corrections" / "forged.json").write_text(json.dumps(forged))
    again, _ = run_pipeline(src, out, "--run-id", "n2", *DETECTOR)
    redone = next(r for r in again if r["source_uri"] == face0["source_uri"])
    assert redone["num_faces"] == face0["num_faces"]  # the detection was not dropped
    problems, _ = attest.verify(str(out))
    assert any("corrections/forged.json is named by no attestation" in p for p in problems)


@pytest.mark.parametrize("name", ["haar", "yunet", "centerface", "multiscale", "none"])
def test_a_detectors_settings_do_not_change_as_it_detects(name, astronaut):
    """What the launcher records is what every image runs with: a backend that read an option
    while detecting would differ from the plan from its second image on."""
    from blurbeam.detectors import DetectorSpec, create, describe
    from blurbeam.stages import checked_model_sha256

    sha, planned = describe(DetectorSpec(name))
    det = create(DetectorSpec(name))
    for _ in range(2):
        assert checked_model_sha256(det, sha, planned) == sha
        det.detect(astronaut)
    assert det.settings() == planned

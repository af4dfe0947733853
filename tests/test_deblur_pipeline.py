"""``blurbeam deblur`` end to end on DirectRunner: restored images, one record per input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from blurbeam.lab.deblur import degrade
from blurbeam.pipelines.cli import main as cli_main
from blurbeam.schemas.deblur import DEBLUR_SCHEMA


def _blurred(rgb: np.ndarray, length: float = 9, angle: float = 30) -> np.ndarray:
    out = degrade.blur(rgb.astype(np.float32) / 255.0, degrade.motion_kernel(length, angle))
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut) -> Path:
    root = tmp_path_factory.mktemp("deblur_in")
    face = np.asarray(Image.fromarray(astronaut).crop((150, 20, 300, 170)).resize((128, 128)))
    Image.fromarray(_blurred(face)).save(root / "face.png")
    Image.fromarray(_blurred(face, 13, 100)).save(root / "sub" / "face2.jpg") if (
        root / "sub"
    ).mkdir() is None else None
    Image.fromarray(_blurred(face)[:96, :80]).save(root / "small.png")  # odd size, not square
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    return root


def _records(out: Path) -> dict[str, dict]:
    files = sorted((out / "records").glob("*.parquet"))
    assert files, "no Parquet records written"
    rows = [r for f in files for r in pq.read_table(f, schema=DEBLUR_SCHEMA).to_pylist()]
    return {Path(r["source_uri"]).name: r for r in rows}


def test_whole_image_pipeline(inputs, tmp_path):
    out = tmp_path / "out"
    rc = cli_main(["deblur", "--input", str(inputs), "--output", str(out), "--whole-image",
                   "--max-error-rate", "1", "--progress", "off"])  # fmt: skip
    assert rc == 0
    recs = _records(out)
    assert set(recs) == {"face.png", "face2.jpg", "small.png", "corrupt.jpg", "empty.png"}
    for name in ("face.png", "face2.jpg", "small.png"):
        r = recs[name]
        assert r["status"] == "ok" and r["num_faces"] == 1 and r["whole_image"]
        assert len(r["sharpness_before"]) == 1 and len(r["sharpness_after"]) == 1
        assert r["sharpness_after"][0] > r["sharpness_before"][0]  # restoration sharpens
        # the network's estimate of the blur it undid, in the source image's pixels
        assert len(r["blur_length_px"]) == len(r["blur_angle_deg"]) == 1
        assert 1.0 <= r["blur_length_px"][0] < 60 and 0 <= r["blur_angle_deg"][0] < 180
        assert r["method"] == "deblur" and len(r["model_sha256"]) == 64
        src = np.asarray(Image.open(r["source_uri"]))
        res = np.asarray(Image.open(r["output_uri"]))
        assert res.shape == src.shape and not np.array_equal(res, src)
    # face.png is the astronaut's face at 128 px blurred by 9 px of motion at 30 degrees
    est_len, est_angle = (
        recs["face.png"]["blur_length_px"][0],
        recs["face.png"]["blur_angle_deg"][0],
    )
    assert abs(est_len - 9) < 3 and abs(est_angle - 30) < 15, (est_len, est_angle)
    for name in ("corrupt.jpg", "empty.png"):
        r = recs[name]
        assert r["status"] == "error" and r["error"] and "\n" not in r["error"]
        assert r["output_uri"] is None and r["sharpness_after"] is None
        assert r["blur_length_px"] is None
    assert not (out / "corrupt.jpg").exists() and not (out / "empty.png").exists()
    assert (out / "sub" / "face2.jpg").exists()
    summary = json.loads((out / "run.json").read_text())
    assert summary["images"] == 5 and summary["status_counts"]["error"] == 2
    assert summary["faces_restored"] == 3 and summary["median_blur_length_px"] >= 1.0


def test_error_rate_fails_the_run(inputs, tmp_path):
    rc = cli_main(["deblur", "--input", str(inputs), "--output", str(tmp_path / "o"),
                   "--whole-image", "--progress", "off"])  # fmt: skip
    assert rc == 1  # two bad files, default --max-error-rate 0


def test_detected_faces_are_restored_in_place(astronaut, tmp_path):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    blurry = _blurred(astronaut, 7, 0)
    Image.fromarray(blurry).save(src_dir / "astronaut.png")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(src_dir / "flat.png")
    out = tmp_path / "out"
    rc = cli_main(["deblur", "--input", str(src_dir), "--output", str(out), "--detector", "haar",
                   "--progress", "off"])  # fmt: skip
    assert rc == 0
    recs = _records(out)
    r = recs["astronaut.png"]
    assert r["status"] == "ok" and r["num_faces"] >= 1
    assert len(r["sharpness_after"]) == r["num_faces"]
    res = np.asarray(Image.open(out / "astronaut.png"))
    changed = np.any(res != blurry, axis=2)
    f = r["faces"][0]
    cx, cy = int(f["x"] + f["w"] / 2), int(f["y"] + f["h"] / 2)
    assert changed[cy, cx]  # the face changed ...
    assert not changed[-20:, :].any()  # ... and the image far from any face did not
    assert recs["flat.png"]["status"] == "no_faces"
    assert np.array_equal(
        np.asarray(Image.open(out / "flat.png")), np.full((64, 64, 3), 128, np.uint8)
    )


def tar_names(path: Path) -> list[str]:
    import tarfile

    with tarfile.open(path) as tf:
        return tf.getnames()


def test_deblur_never_writes_over_a_tar_shard_or_the_input(tmp_path, astronaut, capsys):
    """A container shard's members share the shard's output path: deblur writes the restored
    shard whole, as a tar (never a bare image over it; tests/test_deblur_shards.py checks its
    contents), and an output that is the input's folder is refused before anything runs."""
    import io

    from blurbeam.shards import tar as tarfmt

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    buf = io.BytesIO()
    Image.fromarray(_blurred(np.asarray(Image.fromarray(astronaut).resize((128, 128))))).save(
        buf, "PNG"
    )
    shard = tarfmt.write_samples({"s0": {"png": buf.getvalue(), "json": b"{}"}})
    (src / "shard.tar").write_bytes(shard)
    argv = ["deblur", "--input", str(src), "--output", str(out), "--whole-image"]
    assert cli_main([*argv, "--max-error-rate", "1", "--progress", "off"]) == 0
    [rec] = _records(out).values()
    assert rec["status"] == "ok" and rec["output_uri"] == f"{out / 'shard.tar'}#s0.png"
    assert sorted(tar_names(out / "shard.tar")) == ["s0.json", "s0.png"]
    assert (src / "shard.tar").read_bytes() == shard

    capsys.readouterr()
    same = ["deblur", "--input", str(src), "--output", str(src / "."), "--whole-image"]
    assert cli_main(same) == 2
    assert "input's folder" in capsys.readouterr().err
    assert sorted(p.name for p in src.iterdir()) == ["shard.tar"]

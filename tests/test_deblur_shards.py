"""``blurbeam deblur`` on a WebDataset tar shard end to end: a restored tar in the input's format
(images restored, other members byte-identical, a failed image left out with its sample), one
deblur record per image, the source shard untouched."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from blurbeam.pipelines.cli import main as cli_main
from blurbeam.schemas.deblur import DEBLUR_SCHEMA
from blurbeam.shards import sha256
from blurbeam.shards import tar as tarfmt

pytest.importorskip("tensorflow")


def _blurred(rgb: np.ndarray, length: int = 9) -> np.ndarray:
    """A horizontal motion blur of ``length`` pixels (edges repeated)."""
    pad = length // 2
    padded = np.pad(rgb.astype(np.float32), ((0, 0), (pad, pad), (0, 0)), mode="edge")
    out = sum(padded[:, i : i + rgb.shape[1]] for i in range(length)) / length
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def _records(out: Path) -> dict[str, dict]:
    files = sorted((out / "records").glob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f, schema=DEBLUR_SCHEMA).to_pylist()]
    return {r["key"]: r for r in rows}


@pytest.fixture(scope="module")
def face(astronaut) -> np.ndarray:
    return np.asarray(Image.fromarray(astronaut).crop((150, 20, 300, 170)).resize((128, 128)))


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_deblur_restores_a_tar_shard_in_its_format(tmp_path, face, suffix):
    samples = {
        "s0": {"png": _encoded(_blurred(face), "PNG"), "json": b'{"id": 0}'},
        "s1": {"jpg": _encoded(_blurred(face, 13), "JPEG"), "txt": b"a caption"},
        "s2": {"jpg": b"\xff\xd8\xff\xe0 not really a jpeg", "json": b'{"id": 2}'},
    }
    shard = tarfmt.write_samples(samples)
    if suffix == ".tar.gz":
        shard = gzip.compress(shard, mtime=0)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / f"shard{suffix}").write_bytes(shard)
    argv = ["deblur", "--input", str(src), "--output", str(out), "--whole-image"]
    assert cli_main([*argv, "--max-error-rate", "1", "--progress", "off"]) == 0

    recs = _records(out)
    assert sorted(recs) == ["s0.png", "s1.jpg", "s2.jpg"]  # one record per image
    assert recs["s2.jpg"]["status"] == "error" and recs["s2.jpg"]["error_stage"] == "decode"
    raw = (out / f"shard{suffix}").read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".tar.gz")  # compressed as the input was
    written = _members(gzip.decompress(raw) if suffix == ".tar.gz" else raw)
    # the failed image's sample is left out; the other members are copied byte for byte
    assert sorted(written) == ["s0.json", "s0.png", "s1.jpg", "s1.txt"]
    assert written["s0.json"] == b'{"id": 0}' and written["s1.txt"] == b"a caption"
    for key, fmt in (("s0.png", "PNG"), ("s1.jpg", "JPEG")):
        r = recs[key]
        ext = key.split(".", 1)[1]
        assert r["status"] == "ok" and r["num_faces"] == 1 and r["whole_image"], key
        assert r["method"] == "deblur" and len(r["model_sha256"]) == 64
        assert r["sharpness_after"][0] > r["sharpness_before"][0], key  # restored, sharper
        assert r["output_uri"] == f"{out / f'shard{suffix}'}#{key}"
        assert r["output_sha256"] == sha256(written[key])
        assert r["shard_sha256"] == sha256(shard)
        assert Image.open(io.BytesIO(written[key])).format == fmt
        assert written[key] != samples[key.split(".")[0]][ext]
    assert (src / f"shard{suffix}").read_bytes() == shard  # the source is never touched


def test_deblur_with_the_detector_restores_faces_inside_a_tar(tmp_path, astronaut):
    blurry = _blurred(np.asarray(astronaut), 7)
    flat = np.full((64, 64, 3), 128, np.uint8)
    shard = tarfmt.write_samples(
        {"a": {"png": _encoded(blurry, "PNG")}, "b": {"png": _encoded(flat, "PNG")}}
    )
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "s.tar").write_bytes(shard)
    argv = ["deblur", "--input", str(src), "--output", str(out), "--progress", "off"]
    assert cli_main(argv) == 0
    recs = _records(out)
    assert recs["a.png"]["status"] == "ok" and recs["a.png"]["num_faces"] >= 1
    assert len(recs["a.png"]["sharpness_after"]) == recs["a.png"]["num_faces"]
    assert recs["b.png"]["status"] == "no_faces"
    written = _members((out / "s.tar").read_bytes())
    restored = np.asarray(Image.open(io.BytesIO(written["a.png"])))
    f = recs["a.png"]["faces"][0]
    cx, cy = int(f["x"] + f["w"] / 2), int(f["y"] + f["h"] / 2)
    assert np.any(restored[cy, cx] != blurry[cy, cx])  # the face changed ...
    assert np.array_equal(restored[-10:], blurry[-10:])  # ... the image far from it did not
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(written["b.png"]))), flat)

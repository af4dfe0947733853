"""Fail closed on image data outside the image field of a container shard: a tar member whose
bytes are an image under an unlisted extension is anonymized like the others; a Parquet column or
TFRecord feature holding image data gets its row an error record and leaves it out of the output;
--allow-image-field copies such a field through unchanged."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_shards import (
    changed_fraction,
    face_image,
    plain_image,
    run_pipeline,
    tar_members,
    tfrecord_examples,
)

from blurbeam.imageio import decode, sniff_format
from blurbeam.shards import tar as tarfmt
from blurbeam.shards import tfrecord as tfr

HEIF_LIKE = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM"])
def test_sniff_format_knows_what_pillow_writes(fmt):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(buf, fmt)
    assert sniff_format(buf.getvalue()) == fmt


@pytest.mark.parametrize(
    "data", [b"", b'{"id": 1}', b"no face here", b"P3 is a word", b"BM short", b"1", bytes(40)]
)
def test_sniff_format_leaves_other_bytes_alone(data):
    assert sniff_format(data) is None


def test_sniff_format_finds_formats_we_cannot_decode():
    assert sniff_format(HEIF_LIKE) == "HEIF"
    assert sniff_format(b"8BPS\x00\x01" + bytes(30)) == "PSD"


def build(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True)
    paths = {"tar": root / "t.tar", "parquet": root / "p.parquet", "tfrecord": root / "r.tfrecord"}
    samples = {
        "a": {"bmp": face_image(5, "BMP"), "json": b"{}"},  # unlisted extension, image bytes
        "b": {"bin": face_image(6), "cls": b"1"},
        "c": {"jpg": face_image(7), "seg.png": plain_image(7, "PNG")},
        "d": {"jpg": face_image(8), "thumb": HEIF_LIKE},  # image data we cannot decode
    }
    paths["tar"].write_bytes(tarfmt.write_samples(samples))
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(
                [
                    {"bytes": face_image(9), "path": "0.jpg"},
                    {"bytes": face_image(10), "path": "1.jpg"},
                    None,
                    {"bytes": plain_image(11), "path": "3.jpg"},
                ],
                type=image_type,
            ),
            "thumb": pa.array([face_image(12), None, plain_image(13, "PNG"), b"text"]),
            "label": pa.array([0, 1, 2, 3]),
        }
    )
    pq.write_table(table, paths["parquet"])
    examples = [
        tfr.encode_example({"image/encoded": face_image(14), "image/thumbnail": face_image(15)}),
        tfr.encode_example({"image/encoded": face_image(16), "image/class/label": [1]}),
        tfr.encode_example({"mask": plain_image(17, "PNG")}),
    ]
    paths["tfrecord"].write_bytes(tfr.write_records(examples))
    return paths


def test_no_image_data_reaches_the_output_unanonymized(tmp_path):
    paths = build(tmp_path / "in")
    out = tmp_path / "out"
    records, _ = run_pipeline(tmp_path / "in", out, "--run-id", "stray")
    got = {(Path(r["shard_uri"]).name, r["key"]): r for r in records}
    status = {k: (r["status"], r["error_stage"]) for k, r in got.items()}
    assert status == {
        ("t.tar", "a.bmp"): ("ok", None),
        ("t.tar", "b.bin"): ("ok", None),
        ("t.tar", "c.jpg"): ("ok", None),
        ("t.tar", "c.seg.png"): ("no_faces", None),
        ("t.tar", "d.jpg"): ("error", "write"),
        ("t.tar", "d.thumb"): ("error", "decode"),
        ("p.parquet", "0"): ("error", "read"),
        ("p.parquet", "1"): ("ok", None),
        ("p.parquet", "2"): ("error", "read"),
        ("p.parquet", "3"): ("no_faces", None),
        ("r.tfrecord", "0"): ("error", "read"),
        ("r.tfrecord", "1"): ("ok", None),
        ("r.tfrecord", "2"): ("error", "read"),
    }
    assert "column 'thumb' holds JPEG image data" in got[("p.parquet", "0")]["error"]
    assert "--allow-image-field thumb" in got[("p.parquet", "0")]["error"]
    assert "column 'thumb' holds PNG" in got[("p.parquet", "2")]["error"]
    assert "feature 'image/thumbnail' holds JPEG" in got[("r.tfrecord", "0")]["error"]
    assert "feature 'mask' holds PNG" in got[("r.tfrecord", "2")]["error"]

    # tar: the .bmp and .bin photos were anonymized in kind; sample d is left out
    src, dst = tar_members(paths["tar"]), tar_members(out / "t.tar")
    assert sorted(dst) == ["a.bmp", "a.json", "b.bin", "b.cls", "c.jpg", "c.seg.png"]
    for name in ("a.bmp", "b.bin"):
        assert decode(dst[name]).format == decode(src[name]).format
        assert changed_fraction(src[name], dst[name], got[("t.tar", name)]["faces"]) > 0.9
    assert dst["a.json"] == src["a.json"] and dst["b.cls"] == src["b.cls"]

    # parquet: only the rows with no stray image; tfrecord: only Example 1
    table = pq.read_table(out / "p.parquet")
    assert table.column("label").to_pylist() == [1, 3]
    assert table.column("thumb").to_pylist() == [None, b"text"]
    assert len(tfrecord_examples(out / "r.tfrecord")) == 1


def test_allowed_fields_are_copied_through_unchanged(tmp_path):
    paths = build(tmp_path / "in")
    out = tmp_path / "out"
    allow = ["--allow-image-field", "seg.png", "--allow-image-field", "thumb"]
    records, _ = run_pipeline(
        tmp_path / "in", out, "--run-id", "allow", *allow, "--allow-image-field", "mask"
    )
    status = {(Path(r["shard_uri"]).name, r["key"]): r["status"] for r in records}
    assert ("t.tar", "c.seg.png") not in status and status[("t.tar", "c.jpg")] == "ok"
    assert ("t.tar", "d.thumb") not in status and status[("t.tar", "d.jpg")] == "ok"
    assert [status[("p.parquet", k)] for k in ("0", "1", "3")] == ["ok", "ok", "no_faces"]
    assert ("p.parquet", "2") not in status and ("r.tfrecord", "2") not in status
    assert status[("r.tfrecord", "0")] == "error"  # image/thumbnail was not allowed
    src, dst = tar_members(paths["tar"]), tar_members(out / "t.tar")
    assert dst["c.seg.png"] == src["c.seg.png"] and dst["d.thumb"] == src["d.thumb"]
    s_tab, o_tab = pq.read_table(paths["parquet"]), pq.read_table(out / "p.parquet")
    assert o_tab.column("thumb").to_pylist() == s_tab.column("thumb").to_pylist()
    s_ex, o_ex = tfrecord_examples(paths["tfrecord"]), tfrecord_examples(out / "r.tfrecord")
    assert len(o_ex) == 2 and o_ex[1] == s_ex[2]

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


# Other media that can show people but that blurbeam cannot look inside: video, archives, arrays.
MP4_LIKE = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(64)
WEBM_LIKE = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + bytes(64)


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 4, 3), np.uint8))
    return buf.getvalue()


def _zip() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("face.jpg", face_image(1))
    return buf.getvalue()


def _gzip() -> bytes:
    import gzip

    return gzip.compress(face_image(2))


def _bz2() -> bytes:
    import bz2

    return bz2.compress(face_image(4))


def _tar() -> bytes:
    return tarfmt.write_samples({"x": {"jpg": face_image(3)}})


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (MP4_LIKE, "MP4/QuickTime video"),
        (b"\x00\x00\x00\x08moov" + bytes(32), "MP4/QuickTime video"),
        (WEBM_LIKE, "Matroska/WebM video"),
        (b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(32), "AVI video"),
        (b"\x00\x00\x01\xba\x44" + bytes(32), "MPEG video"),
        (b"OggS\x00\x02" + bytes(32), "Ogg media"),
        (_gzip(), "gzip-compressed"),
        (_bz2(), "bzip2-compressed"),
        (_zip(), "zip archive"),
        (_tar(), "tar archive"),
        (b"%PDF-1.7\n" + bytes(32), "PDF document"),
        (_npy(), "NumPy array"),
    ],
)
def test_sniff_opaque_finds_media_that_can_show_people(data, kind):
    from blurbeam.imageio import sniff_media, sniff_opaque

    assert sniff_format(data) is None
    assert sniff_opaque(data) == kind == sniff_media(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'{"id": 1}',
        b"no face here",
        bytes(300),
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        HEIF_LIKE,
        b"\x1f\x8b\x00\x00" + bytes(8),  # the gzip magic alone, as random floats may start
        b"BZh0",
    ],
)
def test_sniff_opaque_leaves_other_bytes_alone(data):
    from blurbeam.imageio import sniff_opaque

    assert sniff_opaque(data) is None  # HEIF is an image (sniff_format), WAV has no pixels


def build_media(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True)
    paths = {"tar": root / "m.tar", "parquet": root / "m.parquet", "tfrecord": root / "m.tfrecord"}
    samples = {
        "a": {"jpg": face_image(20), "mp4": MP4_LIKE, "json": b"{}"},  # a clip beside the photo
        "b": {"webm": WEBM_LIKE, "txt": b"caption"},  # a clip and no image at all
        "c": {"jpg": face_image(21), "crops.tar.gz": _gzip()},  # crops in an archive
        "d": {"jpg": face_image(22), "json": b"{}"},  # clean
    }
    paths["tar"].write_bytes(tarfmt.write_samples(samples))
    table = pa.table(
        {
            "image": pa.array([face_image(23), face_image(24), None]),
            "clip": pa.array([None, MP4_LIKE, _zip()]),
        }
    )
    pq.write_table(table, paths["parquet"])
    examples = [
        tfr.encode_example({"image/encoded": face_image(25), "video/encoded": WEBM_LIKE}),
        tfr.encode_example({"image/encoded": face_image(26), "crop/array": _npy()}),
        tfr.encode_example({"image/encoded": face_image(27)}),
    ]
    paths["tfrecord"].write_bytes(tfr.write_records(examples))
    return paths


def test_video_and_archives_fail_closed_in_every_shard_format(tmp_path):
    build_media(tmp_path / "in")
    out = tmp_path / "out"
    records, _ = run_pipeline(tmp_path / "in", out, "--run-id", "media")
    got = {(Path(r["shard_uri"]).name, r["key"]): r for r in records}
    status = {k: r["status"] for k, r in got.items()}
    assert status == {
        ("m.tar", "a.jpg"): "error",
        ("m.tar", "a.mp4"): "error",
        ("m.tar", "b.webm"): "error",  # no image in the sample, still one record
        ("m.tar", "c.jpg"): "error",
        ("m.tar", "c.crops.tar.gz"): "error",
        ("m.tar", "d.jpg"): "ok",
        ("m.parquet", "0"): "ok",
        ("m.parquet", "1"): "error",
        ("m.parquet", "2"): "error",  # no image in the row, still one record
        ("m.tfrecord", "0"): "error",
        ("m.tfrecord", "1"): "error",
        ("m.tfrecord", "2"): "ok",
    }
    assert "'a.mp4' holds MP4/QuickTime video data" in got[("m.tar", "a.jpg")]["error"]
    assert "--allow-image-field mp4 " in got[("m.tar", "a.mp4")]["error"]
    assert "gzip-compressed data" in got[("m.tar", "c.crops.tar.gz")]["error"]
    assert "--allow-image-field crops.tar.gz " in got[("m.tar", "c.jpg")]["error"]
    assert "column 'clip' holds MP4/QuickTime video data" in got[("m.parquet", "1")]["error"]
    assert "column 'clip' holds zip archive data" in got[("m.parquet", "2")]["error"]
    assert "feature 'video/encoded' holds Matroska/WebM video" in got[("m.tfrecord", "0")]["error"]
    assert "feature 'crop/array' holds NumPy array data" in got[("m.tfrecord", "1")]["error"]
    assert sorted(tar_members(out / "m.tar")) == ["d.jpg", "d.json"]
    assert pq.read_table(out / "m.parquet").num_rows == 1
    assert len(tfrecord_examples(out / "m.tfrecord")) == 1


def test_allowed_media_fields_are_copied_through(tmp_path):
    paths = build_media(tmp_path / "in")
    out = tmp_path / "out"
    allow = ["--allow-image-field", "mp4", "--allow-image-field", "webm"]
    records, _ = run_pipeline(tmp_path / "in", out, "--run-id", "media-ok", *allow)
    status = {(Path(r["shard_uri"]).name, r["key"]): r["status"] for r in records}
    assert status[("m.tar", "a.jpg")] == "ok" and ("m.tar", "a.mp4") not in status
    assert ("m.tar", "b.webm") not in status and status[("m.tar", "c.jpg")] == "error"
    src, dst = tar_members(paths["tar"]), tar_members(out / "m.tar")
    assert sorted(dst) == ["a.jpg", "a.json", "a.mp4", "b.txt", "b.webm", "d.jpg", "d.json"]
    assert dst["a.mp4"] == src["a.mp4"] and dst["b.webm"] == src["b.webm"]

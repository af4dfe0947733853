"""A hostile tester's container shards: image data hidden where no image is anonymized (Parquet
columns of every Arrow type that can hold bytes, a JPEG 16 bytes into a tar member, a TFRecord
feature or a Parquet value, base64 text) and gzip-compressed WebDataset shards. Every hidden face
fails closed with an error record and never reaches the output; random binary that merely holds
FF D8 FF is copied through; ``.tar.gz`` / ``.tgz`` shards are anonymized and written back
gzip-compressed. One pipeline run covers every shard; each test checks its own."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_shards import encode, face_image, run_pipeline, tfrecord_examples

from blurbeam import demo
from blurbeam.shards import ShardOptions, ShardRef, read_records
from blurbeam.shards import tar as tarfmt
from blurbeam.shards import tfrecord as tfr

JUNK = bytes(range(16))  # what precedes a hidden JPEG: offset 16, not 0


def hidden_face(seed: int) -> bytes:
    """A face JPEG that only a hostile field holds (a background no other image has)."""
    img = demo.background(320, 240, seed=500 + seed)
    demo.paste(img, demo.astronaut(), 60, 10, 200)
    return encode(img)


def floats_with_jpeg_magic() -> bytes:
    """A float32 array (an embedding) whose bytes hold FF D8 FF E0 at a nonzero offset."""
    values = np.random.default_rng(7).standard_normal(4096).astype(np.float32).tobytes()
    return values[:1000] + b"\xff\xd8\xff\xe0" + values[1004:]


def _parquet_cases() -> dict[str, tuple[pa.Array, bytes]]:
    """Column type -> (a 'thumb' column whose row 0 hides a face and row 1 does not, the secret
    bytes that must not reach the output). Where the column held the face at offset 0 before,
    blurbeam already found it in these types; at offset 16 it must search every value."""
    cases: dict[str, tuple[pa.Array, bytes]] = {}
    face = hidden_face(0)
    cases["dictionary_binary"] = (pa.array([face, b"x"]).dictionary_encode(), face)
    face = hidden_face(1)
    cases["binary_view"] = (pa.array([face, b"x"], pa.binary_view()), face)
    face = hidden_face(2)
    cases["large_binary"] = (pa.array([JUNK + face, b"x"], pa.large_binary()), face)
    face = hidden_face(3)
    cases["list_binary"] = (pa.array([[b"a", JUNK + face], [b"b"]], pa.list_(pa.binary())), face)
    face = hidden_face(4)
    nested = pa.struct([("meta", pa.struct([("crop", pa.binary()), ("n", pa.int32())]))])
    rows = [{"meta": {"crop": JUNK + face, "n": 1}}, {"meta": {"crop": b"x", "n": 2}}]
    cases["nested_struct"] = (pa.array(rows, nested), face)
    face = hidden_face(5)
    size = len(JUNK + face)
    cases["fixed_size_binary"] = (pa.array([JUNK + face, bytes(size)], pa.binary(size)), face)
    face = hidden_face(6)
    maps = [[("crop", JUNK + face)], [("crop", b"x")]]
    cases["map"] = (pa.array(maps, pa.map_(pa.string(), pa.binary())), face)
    face = hidden_face(7)
    text = base64.b64encode(face).decode()
    cases["string_base64"] = (pa.array([text, "a caption"]), text.encode())
    face = hidden_face(8)
    cases["binary_offset16"] = (pa.array([JUNK + face, b"x"]), face)
    return cases


PARQUET_CASES = _parquet_cases()


def build(root: Path) -> dict[str, bytes]:
    """Every hostile shard under ``root``; returns the secrets (bytes that must not leak)."""
    root.mkdir(parents=True)
    secrets: dict[str, bytes] = {}
    for i, (name, (thumb, secret)) in enumerate(PARQUET_CASES.items()):
        images = pa.array([face_image(i), face_image(i + 1)])
        pq.write_table(pa.table({"image": images, "thumb": thumb}), root / f"{name}.parquet")
        secrets[name] = secret
    floats = floats_with_jpeg_magic()
    pq.write_table(
        pa.table({"image": [face_image(0)], "embedding": [floats]}), root / "floats.parquet"
    )
    secrets["tar_bin"] = hidden_face(10)
    secrets["tar_json"] = hidden_face(11)
    samples = {
        "a": {"jpg": face_image(1), "bin": JUNK + secrets["tar_bin"]},
        "b": {"jpg": face_image(2), "f32": floats},
        "c": {"jpg": face_image(3), "json": json.dumps({"thumb": b64(secrets["tar_json"])})},
    }
    (root / "t.tar").write_bytes(tarfmt.write_samples(encode_samples(samples)))
    secrets["tfrecord"] = hidden_face(12)
    examples = [
        tfr.encode_example({"image/encoded": face_image(4), "crop": JUNK + secrets["tfrecord"]}),
        tfr.encode_example({"image/encoded": face_image(5), "embedding": floats}),
    ]
    (root / "r.tfrecord").write_bytes(tfr.write_records(examples))
    for suffix, seed in ((".tar.gz", 13), (".tgz", 14)):
        secret = secrets[suffix] = hidden_face(seed)
        samples = {
            "a": {"jpg": face_image(seed - 7), "json": b'{"id": 1}'},
            "b": {"jpg": face_image(seed - 5), "bin": JUNK + secret},
        }
        (root / f"w{suffix}").write_bytes(gzip.compress(tarfmt.write_samples(samples), mtime=0))
    (root / "garbage.tgz").write_bytes(gzip.compress(b"not a tar archive " * 64))
    whole = gzip.compress(tarfmt.write_samples({"a": {"jpg": face_image(6)}}), mtime=0)
    (root / "truncated.tar.gz").write_bytes(whole[: len(whole) // 2])
    return secrets


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encode_samples(samples: dict[str, dict[str, bytes | str]]) -> dict[str, dict[str, bytes]]:
    return {
        k: {e: v.encode() if isinstance(v, str) else v for e, v in s.items()}
        for k, s in samples.items()
    }


def _values(obj: object):
    """Every bytes and str value inside a decoded Parquet row (nested lists, dicts, tuples)."""
    if isinstance(obj, bytes | str):
        yield obj.encode() if isinstance(obj, str) else obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _values(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _values(v)


def output_blobs(out: Path) -> list[bytes]:
    """Every output file's bytes as a reader sees them: raw, decompressed, and every Parquet
    value decoded."""
    blobs = []
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        blobs.append(raw)
        if raw[:2] == b"\x1f\x8b":
            blobs.append(gzip.decompress(raw))
        if path.suffix == ".parquet":
            blobs += list(_values(pq.read_table(path).to_pylist()))
    return blobs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    secrets = build(root / "in")
    out = root / "out"
    records, _ = run_pipeline(root / "in", out, "--run-id", "hostile")
    by_key = {(Path(r["shard_uri"]).name, r["key"]): r for r in records}
    return root / "in", out, by_key, secrets, output_blobs(out)


def assert_not_leaked(secret: bytes, blobs: list[bytes]) -> None:
    assert not any(secret in blob for blob in blobs)


@pytest.mark.parametrize("case", list(PARQUET_CASES))
def test_parquet_column_of_every_byte_holding_type_fails_closed(run, case):
    _, out, by_key, secrets, blobs = run
    row0, row1 = by_key[(f"{case}.parquet", "0")], by_key[(f"{case}.parquet", "1")]
    assert (row0["status"], row0["error_stage"]) == ("error", "read")
    assert "column 'thumb' holds" in row0["error"] and "JPEG image" in row0["error"]
    assert row1["status"] == "ok"
    assert pq.read_table(out / f"{case}.parquet").num_rows == 1
    assert_not_leaked(secrets[case], blobs)


def test_random_floats_holding_jpeg_magic_are_copied_through(run):
    from blurbeam.imageio import find_media

    src, out, by_key, _, _ = run
    floats = floats_with_jpeg_magic()
    assert find_media(floats) is None and find_media(JUNK + floats) is None
    assert find_media(floats[:999] + hidden_face(9)) == "JPEG image"
    assert by_key[("floats.parquet", "0")]["status"] == "ok"
    assert pq.read_table(out / "floats.parquet").column("embedding").to_pylist() == [floats]
    assert by_key[("t.tar", "b.jpg")]["status"] == "ok"
    with tarfile.open(out / "t.tar") as tf:
        assert tf.extractfile("b.f32").read() == floats
    assert by_key[("r.tfrecord", "1")]["status"] == "ok"
    [written] = tfrecord_examples(out / "r.tfrecord")
    source = tfrecord_examples(src / "r.tfrecord")[1]
    assert written == tfr.replace_image(source, tfr.example_image(written))  # embedding kept


def test_tar_member_with_a_jpeg_after_16_bytes_fails_closed(run):
    _, out, by_key, secrets, blobs = run
    for key in ("a.jpg", "a.bin"):
        rec = by_key[("t.tar", key)]
        assert (rec["status"], rec["error_stage"]) == ("error", "read"), key
        assert "member 'a.bin' holds JPEG image data" in rec["error"]
        assert "--allow-image-field bin" in rec["error"]
    with tarfile.open(out / "t.tar") as tf:
        assert not any(n.startswith("a.") for n in tf.getnames())
    assert_not_leaked(secrets["tar_bin"], blobs)


def test_tar_member_with_a_base64_jpeg_in_json_fails_closed(run):
    _, _, by_key, secrets, blobs = run
    rec = by_key[("t.tar", "c.json")]
    assert rec["status"] == "error" and "base64-encoded JPEG image" in rec["error"]
    assert by_key[("t.tar", "c.jpg")]["status"] == "error"
    assert_not_leaked(b64(secrets["tar_json"]).encode(), blobs)
    assert_not_leaked(secrets["tar_json"], blobs)


def test_tfrecord_feature_with_a_jpeg_after_16_bytes_fails_closed(run):
    _, out, by_key, secrets, blobs = run
    rec = by_key[("r.tfrecord", "0")]
    assert (rec["status"], rec["error_stage"]) == ("error", "read")
    assert "feature 'crop' holds JPEG image data" in rec["error"]
    assert len(tfrecord_examples(out / "r.tfrecord")) == 1
    assert_not_leaked(secrets["tfrecord"], blobs)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz"])
def test_gzip_compressed_tar_shards_are_anonymized_and_written_back_compressed(run, suffix):
    src, out, by_key, secrets, blobs = run
    name = f"w{suffix}"
    assert by_key[(name, "a.jpg")]["status"] == "ok"
    assert by_key[(name, "b.jpg")]["status"] == "error"
    assert "member 'b.bin' holds JPEG image data" in by_key[(name, "b.bin")]["error"]
    raw = (out / name).read_bytes()
    assert raw[:2] == b"\x1f\x8b"  # gzip, as the input
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    with tarfile.open(src / name) as tf:
        original = tf.extractfile("a.jpg").read()
    assert sorted(members) == ["a.jpg", "a.json"] and members["a.json"] == b'{"id": 1}'
    assert members["a.jpg"] != original
    assert by_key[(name, "a.jpg")]["output_uri"].endswith(f"{name}#a.jpg")
    assert_not_leaked(original, blobs)
    assert_not_leaked(secrets[suffix], blobs)


def test_broken_gzip_tar_shards_get_one_error_record(run):
    _, out, by_key, _, _ = run
    for name in ("garbage.tgz", "truncated.tar.gz"):
        keys = [k for (shard, k) in by_key if shard == name]
        assert keys == [""], name
        rec = by_key[(name, "")]
        assert rec["status"] == "error" and "not a valid gzip-compressed tar shard" in rec["error"]
        assert "\n" not in rec["error"] and not (out / name).exists()


def test_gzip_tar_members_are_never_held_beyond_max_bytes(tmp_path):
    """A member that inflates past --max-bytes (a gzip bomb) is rejected without being read;
    hostile names inside a compressed shard are rejected as in a plain tar."""
    body = bytes(4_000_000)  # 4 MB of zeros: a few KB compressed
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("x.jpg", face_image(1)), ("x.bin", body), ("../y.jpg", b"1")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(buf.getvalue())
    assert path.stat().st_size < 100_000
    ref = ShardRef("tar", str(path), "bomb.tar.gz")
    records = {r.key: r for r in read_records(ref, opts=ShardOptions(max_bytes=1_000_000))}
    assert sorted(records) == ["../y.jpg", "x.bin", "x.jpg"]
    assert "larger than --max-bytes 1000000" in records["x.bin"].error
    assert records["x.jpg"].data is None and "rejected" in records["x.jpg"].error
    assert "unsafe member name" in records["../y.jpg"].error

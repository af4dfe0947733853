"""Container shard formats (WebDataset tar, Parquet, TFRecord): read, stream (read once, written
back with new image bytes), and the pipeline's per-shard path end to end, with non-image content
byte-identical and unsafe names rejected."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from blurbeam import demo
from blurbeam.imageio import decode
from blurbeam.pipelines import anonymize as anon
from blurbeam.shards import (
    ShardOptions,
    ShardRef,
    expand_input,
    file_sha256,
    get_format,
    read_records,
    sha256,
    stream_shard,
)
from blurbeam.shards import parquet as pqfmt
from blurbeam.shards import tar as tarfmt
from blurbeam.shards import tfrecord as tfr


def encode(pixels: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def face_image(seed: int, fmt: str = "JPEG") -> bytes:
    img = demo.background(320, 240, seed=seed)
    demo.paste(img, demo.astronaut(), 40 + seed * 7, 10, 200)
    return encode(img, fmt)


def plain_image(seed: int, fmt: str = "JPEG") -> bytes:
    return encode(demo.background(200, 150, seed=100 + seed), fmt)


def build_shards(root: Path) -> dict[str, Path]:
    """One shard of each container kind, plus a plain image file. Returns their paths."""
    paths = {
        "tar": root / "wds" / "shard-000000.tar",
        "parquet": root / "hf" / "train-00000-of-00001.parquet",
        "tfrecord": root / "tfr" / "data.tfrecord",
        "file": root / "plain" / "face.jpg",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    samples = {
        "s000": {"jpg": face_image(0), "json": b'{"caption": "astronaut", "id": 0}', "cls": b"1"},
        "s001": {"png": plain_image(1, "PNG"), "json": b'{"id": 1}', "txt": b"no face here"},
        "s002": {"jpg": face_image(2)[:3000], "json": b'{"id": 2}'},  # truncated: decode error
        "s003": {"webp": face_image(3, "WEBP"), "json": b'{"id": 3}', "cls": b"1"},
        # two images, one broken: the good one cannot be written without its sample
        "s004": {"jpg": face_image(4), "seg.png": plain_image(4, "PNG")[:100], "json": b"{}"},
    }
    paths["tar"].write_bytes(tarfmt.write_samples(samples))
    table = pa.table(
        {
            "image": pa.array(
                [
                    {"bytes": face_image(4), "path": "a.jpg"},
                    {"bytes": plain_image(5), "path": "b.jpg"},
                    None,
                    {"bytes": face_image(6, "PNG"), "path": "c.png"},
                ],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "label": pa.array([1, 0, 7, 1], pa.int64()),
            "caption": ["one", "two", "no image", "four"],
        }
    ).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": {}}})})
    pq.write_table(table, paths["parquet"], row_group_size=2)
    examples = [
        tfr.encode_example(
            {
                "image/encoded": face_image(7),
                "image/format": b"jpeg",
                "label": [1],
                "bbox": [0.1, 0.2, 0.5, 0.9],
            }
        ),
        tfr.encode_example({"metadata": b"no image in this one", "label": [3]}),
        tfr.encode_example({"image/encoded": plain_image(8), "label": [0]}),
    ]
    paths["tfrecord"].write_bytes(tfr.write_records(examples))
    paths["file"].write_bytes(face_image(9))
    return paths


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def tfrecord_examples(path: Path) -> list[bytes]:
    with open(path, "rb") as fh:
        return list(tfr.iter_records(fh))


def ref_of(path: Path, root: Path) -> ShardRef:
    return next(r for r in expand_input(str(root)) if r.uri == str(path))


def rewrite(
    ref: ShardRef, replaced: dict[str, tuple[str, bytes]], opts: ShardOptions | None = None
) -> bytes:
    """The shard ``ref`` streamed with each image whose key is in ``replaced`` (``key ->
    (sha256 of the bytes read, new bytes)``) swapped for its new bytes, the others failing;
    checks that every image handed over is the one ``read_records`` reads, and that the
    streamed sha256 is the file's."""
    out = Path(ref.uri).parent / "streamed" / Path(ref.uri).name
    seen: list[str] = []

    def process(rec):
        seen.append(rec.key)
        if rec.key not in replaced:
            return rec.key, None
        expected, new = replaced[rec.key]
        assert sha256(rec.data) == expected, rec.key
        return rec.key, new

    result = stream_shard(ref, opts or ShardOptions(), process, str(out))
    assert result.sha256 == file_sha256(ref.uri)
    assert [o.record.key for o in result.outcomes] == [
        r.key for r in get_format(ref.kind).read(ref, opts or ShardOptions())
    ]
    assert seen == [o.record.key for o in result.outcomes if o.record.error is None]
    assert result.published == any(k in replaced for k in seen)
    data = out.read_bytes() if result.published else b""
    out.unlink(missing_ok=True)
    return data


def changed_fraction(src: bytes, out: bytes, faces) -> float:
    a, b = decode(src).pixels.astype(int), decode(out).pixels.astype(int)
    fracs = []
    for f in faces:
        x0, y0, x1, y1 = int(f["x"]), int(f["y"]), int(f["x"] + f["w"]), int(f["y"] + f["h"])
        cx0, cy0 = x0 + (x1 - x0) // 4, y0 + (y1 - y0) // 4
        cx1, cy1 = x1 - (x1 - x0) // 4, y1 - (y1 - y0) // 4
        diff = np.abs(a[cy0:cy1, cx0:cx1] - b[cy0:cy1, cx0:cx1]).max(axis=2)
        fracs.append(float((diff > 2).mean()))
    return min(fracs)


# ---------------------------------------------------------------- the formats on their own


def test_formats_are_registered_and_matched(tmp_path):
    paths = build_shards(tmp_path)
    kinds = {Path(r.uri).name: r.kind for r in expand_input(str(tmp_path))}
    assert kinds == {
        "shard-000000.tar": "tar",
        "train-00000-of-00001.parquet": "parquet",
        "data.tfrecord": "tfrecord",
        "face.jpg": "file",
    }
    for kind, path in paths.items():
        ref = ref_of(path, tmp_path)
        records = list(read_records(ref))
        assert get_format(kind).keys(ref, ShardOptions()) == [r.key for r in records]


def test_tar_rewrite_keeps_other_members_and_drops_failed_samples(tmp_path):
    paths = build_shards(tmp_path)
    ref = ref_of(paths["tar"], tmp_path)
    records = {r.key: r for r in read_records(ref)}
    assert sorted(records) == [
        "s000.jpg",
        "s001.png",
        "s002.jpg",
        "s003.webp",
        "s004.jpg",
        "s004.seg.png",
    ]
    assert all(r.source_uri == f"{ref.uri}#{r.key}" and r.rel == ref.rel for r in records.values())
    replaced = {
        k: (sha256(r.data), b"NEW-" + k.encode()) for k, r in records.items() if k != "s002.jpg"
    }
    out = rewrite(ref, replaced)
    src, new = tar_members(paths["tar"]), tar_members_bytes(out)
    assert sorted(new) == sorted(n for n in src if not n.startswith("s002."))
    for name, body in new.items():
        assert body == (replaced[name][1] if name in replaced else src[name]), name
    with pytest.raises(AssertionError, match="s000.jpg"):  # the bytes handed over are checked
        rewrite(ref, dict(replaced, **{"s000.jpg": ("0" * 64, b"x")}))


def tar_members_bytes(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def untrusted_tar(path: Path) -> None:
    """Members with absolute and escaping names, a symlink, a duplicate, and one good sample."""
    good = face_image(0)
    with tarfile.open(path, "w") as tf:

        def add(name: str, body: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))

        add("good.jpg", good)
        add("good.json", b"{}")
        add("../../escape.jpg", good)
        add("/abs/evil.jpg", good)
        add("sub/../../up.json", b"{}")
        link = tarfile.TarInfo("linked.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
        add("linked.json", b"{}")
        add("dup.jpg", good)
        add("dup.jpg", good)


def test_tar_untrusted_names_rejected_with_a_record(tmp_path):
    path = tmp_path / "in" / "u.tar"
    path.parent.mkdir()
    untrusted_tar(path)
    ref = ref_of(path, tmp_path / "in")
    records = {r.key: r for r in read_records(ref)}
    assert records["good.jpg"].error is None and records["good.jpg"].data
    for key in ("../../escape.jpg", "/abs/evil.jpg", "sub/../../up.json"):
        assert "unsafe member name" in records[key].error, key
    assert "link or special file" in records["linked.jpg"].error
    assert "occurs 2 times" in records["dup.jpg"].error
    replaced = {"good.jpg": (sha256(records["good.jpg"].data), b"anon")}
    out = tar_members_bytes(rewrite(ref, replaced))
    assert out == {"good.jpg": b"anon", "good.json": b"{}"}


def test_parquet_struct_and_binary_columns(tmp_path):
    paths = build_shards(tmp_path)
    ref = ref_of(paths["parquet"], tmp_path)
    records = list(read_records(ref))
    assert [r.key for r in records] == ["0", "1", "3"]  # row 2 has no image
    replaced = {r.key: (sha256(r.data), f"NEW{r.key}".encode()) for r in records if r.key != "1"}
    src = pq.read_table(paths["parquet"])
    out = pq.read_table(io.BytesIO(rewrite(ref, replaced)))
    assert out.schema.equals(src.schema, check_metadata=True)
    kept = [0, 2, 3]  # row 1 failed: left out
    assert out.column("label").to_pylist() == [src.column("label")[i].as_py() for i in kept]
    assert out.column("caption").to_pylist() == [src.column("caption")[i].as_py() for i in kept]
    assert out.column("image").to_pylist() == [
        {"bytes": b"NEW0", "path": "a.jpg"},
        None,
        {"bytes": b"NEW3", "path": "c.png"},
    ]
    # a plain binary column, named by --image-column; guessing refuses when ambiguous
    binary = tmp_path / "bin" / "x.parquet"
    binary.parent.mkdir()
    pq.write_table(
        pa.table({"id": ["a", "b"], "img": [face_image(1), plain_image(2)], "raw": [b"1", b"2"]}),
        binary,
    )
    bref = ref_of(binary, tmp_path / "bin")
    with pytest.raises(pqfmt.ImageColumnError, match="--image-column"):
        list(read_records(bref))
    opts = ShardOptions(image_column="img")
    recs = list(get_format("parquet").read(bref, opts))
    new = rewrite(bref, {"1": (sha256(recs[1].data), b"N")}, opts)
    assert pq.read_table(io.BytesIO(new)).to_pylist() == [{"id": "b", "img": b"N", "raw": b"2"}]
    with pytest.raises(pqfmt.ImageColumnError, match="not binary"):
        list(get_format("parquet").read(bref, ShardOptions(image_column="id")))


def test_tfrecord_is_what_tensorflow_reads_and_writes(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "t.tfrecord"
    img = face_image(1)
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(3):
            feats = {
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i, -i])),
                "score": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5 * i])),
                "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"n%d" % i])),
            }
            if i != 1:
                feats["image/encoded"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[img])
                )
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    ref = ref_of(path, tmp_path)
    records = list(read_records(ref))
    assert [r.key for r in records] == ["0", "2"] and all(r.data == img for r in records)
    out = tmp_path / "o.tfrecord"
    out.write_bytes(rewrite(ref, {"2": (sha256(img), b"ANON")}))
    parsed = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(out))]
    assert len(parsed) == 2  # example 0 failed (not replaced): left out; 1 has no image: kept
    assert "image/encoded" not in parsed[0].features.feature
    assert parsed[1].features.feature["image/encoded"].bytes_list.value == [b"ANON"]
    assert list(parsed[1].features.feature["label"].int64_list.value) == [2, -2]
    assert parsed[1].features.feature["name"].bytes_list.value == [b"n2"]
    # our encoder agrees with TensorFlow's parser
    ours = tfr.encode_example({"image/encoded": b"x", "label": [3, -1], "score": [0.25]})
    ex = tf.train.Example.FromString(ours)
    assert ex.features.feature["label"].int64_list.value == [3, -1]
    assert ex.features.feature["score"].float_list.value == [0.25]


def test_tfrecord_corruption_is_an_error(tmp_path):
    good = tfr.write_records([tfr.encode_example({"image/encoded": b"abc"})])
    corrupt = tmp_path / "c.tfrecord"
    corrupt.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(tfr.TFRecordError, match="corrupt record data"):
        list(read_records(ShardRef("tfrecord", str(corrupt), "c.tfrecord")))
    (tmp_path / "t.tfrecord").write_bytes(good[:-3])
    with pytest.raises(tfr.TFRecordError, match="truncated"):
        list(read_records(ShardRef("tfrecord", str(tmp_path / "t.tfrecord"), "t.tfrecord")))
    two = tfr.write_records([tfr.encode_example({"image/encoded": [b"a", b"b"]})])
    (tmp_path / "two.tfrecord").write_bytes(two)
    [rec] = read_records(ShardRef("tfrecord", str(tmp_path / "two.tfrecord"), "two.tfrecord"))
    assert "holds 2 images" in rec.error


# ---------------------------------------------------------------- the pipeline, end to end


def run_pipeline(input_: Path | str, output: Path | str, *extra: str, beam_argv=()):
    argv = ["--input", str(input_), "--output", str(output), *extra]
    rp = anon.plan(PipelineOptions(argv).view_as(anon.AnonymizeOptions))
    p = beam.Pipeline(options=PipelineOptions(list(beam_argv)))
    anon.build(p, rp)
    result = p.run()
    result.wait_until_finish()
    return anon.read_run_records(rp.output, rp.run_id).to_pylist(), anon.query_counters(result)


def test_pipeline_round_trips_every_format(tmp_path):
    src = tmp_path / "in"
    paths = build_shards(src)
    out = tmp_path / "out"
    records, counters = run_pipeline(src, out, "--run-id", "fmt")
    by_uri = {r["source_uri"]: r for r in records}
    status = {(Path(r["shard_uri"]).name, r["key"]): r["status"] for r in records}
    assert status == {
        ("shard-000000.tar", "s000.jpg"): "ok",
        ("shard-000000.tar", "s001.png"): "no_faces",
        ("shard-000000.tar", "s002.jpg"): "error",
        ("shard-000000.tar", "s003.webp"): "ok",
        ("shard-000000.tar", "s004.jpg"): "error",
        ("shard-000000.tar", "s004.seg.png"): "error",
        ("train-00000-of-00001.parquet", "0"): "ok",
        ("train-00000-of-00001.parquet", "1"): "no_faces",
        ("train-00000-of-00001.parquet", "3"): "ok",
        ("data.tfrecord", "0"): "ok",
        ("data.tfrecord", "2"): "no_faces",
        ("face.jpg", ""): "ok",
    }
    assert counters["shards_written"] == 3
    s004 = by_uri[f"{paths['tar']}#s004.jpg"]
    assert s004["error_stage"] == "write" and "another image of its sample" in s004["error"]
    assert s004["output_uri"] is None and s004["num_faces"] >= 1
    assert by_uri[f"{paths['tar']}#s004.seg.png"]["error_stage"] == "decode"

    # tar: same members minus the failed sample; non-image members byte-identical
    src_m, out_m = tar_members(paths["tar"]), tar_members(out / "wds" / "shard-000000.tar")
    assert sorted(out_m) == sorted(n for n in src_m if not n.startswith(("s002.", "s004.")))
    for name, body in out_m.items():
        if tarfmt.is_image(name):
            rec = by_uri[f"{paths['tar']}#{name}"]
            assert rec["output_uri"] == f"{out / 'wds' / 'shard-000000.tar'}#{name}"
            assert rec["output_sha256"] == sha256(body)
            assert decode(body).format == decode(src_m[name]).format
            if rec["status"] == "ok":
                assert changed_fraction(src_m[name], body, rec["faces"]) > 0.9, name
        else:
            assert body == src_m[name], name

    # parquet: other columns, the struct's path field and the schema metadata unchanged
    s_tab, o_tab = (
        pq.read_table(paths["parquet"]),
        pq.read_table(out / "hf" / paths["parquet"].name),
    )
    assert o_tab.schema.equals(s_tab.schema, check_metadata=True)
    assert o_tab.drop_columns(["image"]).equals(s_tab.drop_columns(["image"]))
    for row, (s_img, o_img) in enumerate(
        zip(s_tab.column("image").to_pylist(), o_tab.column("image").to_pylist(), strict=True)
    ):
        if s_img is None:
            assert o_img is None
            continue
        assert o_img["path"] == s_img["path"]
        rec = by_uri[f"{paths['parquet']}#{row}"]
        assert rec["output_sha256"] == sha256(o_img["bytes"])
        if rec["status"] == "ok":
            assert changed_fraction(s_img["bytes"], o_img["bytes"], rec["faces"]) > 0.9

    # tfrecord: every Example equals its source with only image/encoded replaced
    s_ex, o_ex = (
        tfrecord_examples(paths["tfrecord"]),
        tfrecord_examples(out / "tfr" / "data.tfrecord"),
    )
    assert len(o_ex) == 3 and o_ex[1] == s_ex[1]
    for i in (0, 2):
        new_image = tfr.example_image(o_ex[i])
        assert o_ex[i] == tfr.replace_image(s_ex[i], new_image)
        assert by_uri[f"{paths['tfrecord']}#{i}"]["output_sha256"] == sha256(new_image)
    rec0 = by_uri[f"{paths['tfrecord']}#0"]
    assert (
        changed_fraction(tfr.example_image(s_ex[0]), tfr.example_image(o_ex[0]), rec0["faces"])
        > 0.9
    )


def test_pipeline_untrusted_tar_writes_nothing_outside_output(tmp_path):
    src = tmp_path / "deep" / "in"
    src.mkdir(parents=True)
    untrusted_tar(src / "u.tar")
    out = tmp_path / "deep" / "out"
    records, _ = run_pipeline(src, out, "--run-id", "u")
    status = {r["key"]: (r["status"], r["error_stage"]) for r in records}
    assert status["good.jpg"] == ("ok", None)
    for key in ("../../escape.jpg", "/abs/evil.jpg", "sub/../../up.json", "linked.jpg", "dup.jpg"):
        assert status[key] == ("error", "read"), key
    assert tar_members(out / "u.tar").keys() == {"good.jpg", "good.json"}
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.startswith(("deep/in/", "deep/out/")) for p in written), written
    assert not list(tmp_path.rglob("escape.jpg")) and not Path("/abs/evil.jpg").exists()


def test_pipeline_binary_parquet_column_and_unreadable_shard(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"img": [face_image(3)], "meta": ['{"k": 1}']}), src / "a.parquet")
    (src / "broken.tar").write_bytes(b"this is not a tar file" * 40)
    out = tmp_path / "out"
    records, _ = run_pipeline(src, out, "--image-column", "img", "--run-id", "b")
    by_name = {(Path(r["shard_uri"]).name, r["key"]): r for r in records}
    assert by_name[("a.parquet", "0")]["status"] == "ok"
    broken = by_name[("broken.tar", "")]
    assert broken["status"] == "error" and broken["error_stage"] == "read"
    assert "\n" not in broken["error"] and not (out / "broken.tar").exists()
    assert pq.read_table(out / "a.parquet").column("meta").to_pylist() == ['{"k": 1}']


@pytest.mark.parametrize("codec", ["none", "snappy", "zstd", "gzip"])
def test_parquet_rewrite_keeps_the_codec(codec, tmp_path):
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": [b"abc"], "x": [1]}), buf, compression=codec)
    (tmp_path / "c.parquet").write_bytes(buf.getvalue())
    ref = ShardRef("parquet", str(tmp_path / "c.parquet"), "c.parquet")
    out = rewrite(ref, {"0": (sha256(b"abc"), b"z")})
    src_codec = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata.row_group(0).column(1)
    new = pq.ParquetFile(io.BytesIO(out))
    assert new.metadata.row_group(0).column(1).compression == src_codec.compression
    assert new.read().to_pylist() == [{"image": b"z", "x": 1}]


# ---------------------------------------------------------------- streaming and atomic writes


class _CountingReader(io.RawIOBase):
    def __init__(self, fh):
        self._fh, self.bytes_read = fh, 0

    def readable(self):
        return True

    def read(self, size=-1):
        data = self._fh.read(size)
        self.bytes_read += len(data)
        return data


@pytest.mark.parametrize("kind", ["tar", "tfrecord"])
def test_shards_are_streamed_sample_by_sample(tmp_path, kind):
    """Each image is handed over as soon as its sample is read, before the rest of the shard,
    and written out before the next one is read."""
    path = tmp_path / f"big.{kind}"
    images = [face_image(i % 3) for i in range(12)]
    if kind == "tar":
        path.write_bytes(
            tarfmt.write_samples({f"s{i:02d}": {"jpg": b} for i, b in enumerate(images)})
        )
    else:
        path.write_bytes(
            tfr.write_records([tfr.encode_example({"image/encoded": b}) for b in images])
        )
    ref = ShardRef(kind, str(path), path.name)
    sink = io.BytesIO()
    with open(path, "rb") as fh:
        src = _CountingReader(fh)
        progress = []

        def process(rec):
            progress.append((src.bytes_read, sink.tell()))
            return rec.key, b"x"

        get_format(kind).transform(ref, src, sink, ShardOptions(), process)
    size = path.stat().st_size
    assert len(progress) == 12
    assert progress[0][0] < size / 4  # the first image before most of the shard was read
    assert all(
        b[1] > a[1] for a, b in zip(progress, progress[1:], strict=False)
    )  # written as it goes


def test_atomic_writer_publishes_whole_or_not_at_all(tmp_path):
    from blurbeam.shards import AtomicWriter

    target = tmp_path / "out" / "s.tar"
    w = AtomicWriter(str(target))
    w.write(b"half")
    assert not target.exists()  # nothing at the target before commit
    w.commit()
    assert target.read_bytes() == b"half" and sorted(p.name for p in target.parent.iterdir()) == [
        "s.tar"
    ]
    w = AtomicWriter(str(target))
    w.write(b"other")
    w.discard()
    assert target.read_bytes() == b"half" and len(list(target.parent.iterdir())) == 1
    # an object store: nothing visible before commit, the whole object after
    import fsspec

    mem = fsspec.filesystem("memory")
    w = AtomicWriter("memory://bucket/out/s.tar")
    w.write(b"abc")
    w.write(b"def")
    assert not mem.exists("/bucket/out/s.tar")
    w.commit()
    assert mem.cat_file("/bucket/out/s.tar") == b"abcdef"
    # a failed write is kept, later writes ignored, and commit raises it: nothing published
    w = AtomicWriter(str(tmp_path / "out" / "f.tar"))
    w.write(b"ok")
    w._fh.close()  # the next write fails
    w.write(b"more")
    assert isinstance(w.error, ValueError)
    with pytest.raises(ValueError):
        w.commit()
    assert not (tmp_path / "out" / "f.tar").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["s.tar"]

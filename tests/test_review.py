"""blurbeam review (the static review site) and anonymize --corrections, without a browser."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import apache_beam as beam
import cv2
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from blurbeam.detectors import Detector, register
from blurbeam.detectors.base import Face
from blurbeam.imageio import decode
from blurbeam.pipelines import anonymize as anon
from blurbeam.pipelines.cli import main as cli_main
from blurbeam.report import load_audit
from blurbeam.review import ORIGINALS_WARNING, build_review, page_id, sample
from blurbeam.review.corrections import FORMAT
from blurbeam.schemas.audit import AUDIT_SCHEMA
from blurbeam.shards import ShardRef, read_records

DETECTOR = "test-review-red"
ODD = 'a<b>&"c.png'  # a file name that is markup


@register
class _RedSquares(Detector):
    """Finds pure red squares; the blue channel inside one is its score (x 255)."""

    name = DETECTOR
    default_score_threshold = 0.01

    def load(self) -> None:
        self.model_sha256 = "7" * 64

    def _detect(self, rgb):
        mask = ((rgb[..., 0] > 200) & (rgb[..., 1] < 60)).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        faces = []
        for x, y, w, h, area in stats[1:n]:
            if area >= 30:
                score = float(np.median(rgb[y : y + h, x : x + w, 2])) / 255.0
                faces.append(Face(float(x), float(y), float(w), float(h), score))
        return faces


def picture(squares: list[tuple[int, int, int]], seed: int) -> np.ndarray:
    """A 160x120 noisy grey picture with 20x20 red squares at (x, y), blue = score x 255."""
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 170, size=(120, 160, 3)).astype(np.uint8)
    for x, y, blue in squares:
        img[y : y + 20, x : x + 20] = (255, 0, blue)
    return img


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def build_input(root: Path) -> Path:
    """Plain PNGs with 0-3 squares, a broken file, an awkward name, and a tar shard of two."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "none.png").write_bytes(png(picture([], 1)))
    (root / "one_low.png").write_bytes(png(picture([(10, 10, 40)], 2)))
    (root / "one_high.png").write_bytes(png(picture([(60, 40, 240)], 3)))
    (root / "three.png").write_bytes(png(picture([(5, 5, 200), (60, 5, 210), (110, 60, 220)], 4)))
    (root / "broken.png").write_bytes(png(picture([], 5))[:60])
    (root / ODD).write_bytes(png(picture([(30, 30, 150)], 6)))
    with tarfile.open(root / "shard.tar", "w") as tar:
        for key, img in (("m1", picture([(40, 40, 120)], 7)), ("m2", picture([], 8))):
            data = png(img)
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


def run_anonymize(input_: Path | str, output: Path | str, *extra: str) -> anon.RunPlan:
    argv = ["--input", str(input_), "--output", str(output), "--detector", DETECTOR, *extra]
    rp = anon.plan(PipelineOptions(argv).view_as(anon.AnonymizeOptions))
    p = beam.Pipeline(options=PipelineOptions([]))
    anon.build(p, rp)
    p.run().wait_until_finish()
    return rp


@pytest.fixture(scope="module")
def anonymized(tmp_path_factory) -> tuple[Path, Path, anon.RunPlan]:
    root = tmp_path_factory.mktemp("review")
    src = build_input(root / "in")
    out = root / "out"
    rp = run_anonymize(src, out, "--run-id", "base")
    return src, out, rp


def test_site_content(anonymized, tmp_path):
    src, out, rp = anonymized
    done = build_review(str(out), n=20)
    site = out / "review"
    index = (site / "index.html").read_text()
    records = {r["source_uri"]: r for r in load_audit(str(out)).to_pylist()}
    assert done["sampled"] == len(records)  # 20 > inputs: every input is shown
    # per run: counts, the error reason, the config hash, the version, the chain's status
    assert "base" in index and rp.ctx.config_hash in index and "verified" in index
    broken = records[str(src / "broken.png")]
    assert broken["status"] == "error" and broken["error"].split(":")[0] in index
    # plots as inline SVG; nothing fetched from elsewhere, CSS and JS inline
    assert index.count("<svg") >= 2
    assert "Faces per image (7 images)" in index and "Detection scores (7 faces)" in index
    for page in [index, *(p.read_text() for p in (site / "pages").glob("*.html"))]:
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
        assert "<script src" not in page and "<link" not in page
        assert ORIGINALS_WARNING not in page
    # the awkward file name is escaped everywhere, also inside the page's JSON
    assert ODD not in index and "a&lt;b&gt;&amp;&quot;c.png" in index
    odd = (site / "pages" / f"{page_id(str(src / ODD))}.html").read_text()
    assert "<b>" not in odd.split('id="review-data">')[1]
    # a page, an image and a thumbnail per written input; a member of the tar shard by its key
    for uri, r in records.items():
        pid = page_id(uri)
        assert (site / "pages" / f"{pid}.html").is_file()
        assert (site / "img" / f"{pid}.jpg").is_file() == (r["output_uri"] is not None)
        assert (site / "thumbs" / f"{pid}.jpg").is_file() == (r["output_uri"] is not None)
    member = str(src / "shard.tar") + "#m1.png"
    assert records[member]["num_faces"] == 1
    page = (site / "pages" / f"{page_id(member)}.html").read_text()
    data = json.loads(page.split('id="review-data">')[1].split("</script>")[0])
    assert data["image"]["source_uri"] == member
    assert data["image"]["source_sha256"] == records[member]["source_sha256"]
    assert [f["source"] for f in data["image"]["faces"]] == ["detector"]
    # the page shows the anonymized member, read from the output shard: the square is blurred
    shown = np.asarray(Image.open(site / "img" / f"{page_id(member)}.jpg").convert("RGB"))
    shown = shown[35:65, 35:65].astype(int)
    ref = ShardRef("tar", str(out / "shard.tar"), "shard.tar")
    written = {r.key: r.data for r in read_records(ref)}["m1.png"]
    blurred = decode(written).pixels[35:65, 35:65].astype(int)
    original = picture([(40, 40, 120)], 7)[35:65, 35:65].astype(int)
    assert np.abs(shown - blurred).mean() < np.abs(shown - original).mean()
    assert not (site / "orig").exists()


def test_sampling_strata():
    def rec(i: int, status: str, scores: list[float]) -> dict:
        return {
            "source_uri": f"img{i:02d}",
            "status": status,
            "num_faces": len(scores) if status != "error" else None,
            "faces": [{"score": s, "source": "detector"} for s in scores],
        }

    records = [rec(i, "ok", [0.9] * (1 + i % 3)) for i in range(20)]
    records += [rec(20, "ok", [0.31, 0.95]), rec(21, "ok", [0.2]), rec(22, "ok", [0.9] * 9)]
    records += [rec(30 + i, "error", []) for i in range(5)]
    records += [rec(40 + i, "no_faces", []) for i in range(5)]
    picked = sample(records, 8, seed=3)
    assert len(picked) == 8 and len({r["source_uri"] for _, r in picked}) == 8
    strata = {s: [r["source_uri"] for t, r in picked if t == s] for s, _ in picked}
    assert len(strata["errors"]) == 2 and all(u.startswith("img3") for u in strata["errors"])
    assert strata["lowest_score"] == ["img21", "img20"]
    assert strata["most_faces"] == ["img22", "img02"]
    assert len(strata["random"]) == 2
    assert all(r["status"] != "error" for t, r in picked if t == "random")
    assert sample(records, 8, seed=3) == picked  # deterministic for a seed
    # a stratum without records leaves its share to the random draw
    only_ok = [r for r in records if r["status"] == "no_faces"]
    assert [t for t, _ in sample(only_ok, 4)] == ["random"] * 4


def test_with_originals_warns_on_every_page(anonymized):
    src, out, _ = anonymized
    build_review(str(out), n=20, with_originals=True)
    site = out / "review"
    pages = [site / "index.html", *(site / "pages").glob("*.html")]
    assert len(pages) > 5
    for page in pages:
        assert ORIGINALS_WARNING in page.read_text(), page
    pid = page_id(str(src / "one_high.png"))
    original = np.asarray(Image.open(site / "orig" / f"{pid}.jpg").convert("RGB")).astype(int)
    # the original's square is still sharp red: it is the unblurred picture
    assert original[45:55, 65:75, 0].mean() > 200 and original[45:55, 65:75, 1].mean() < 60
    # made again without originals, the site keeps none of the earlier ones
    build_review(str(out), n=20)
    assert not (site / "orig").exists()
    for page in pages:
        assert ORIGINALS_WARNING not in page.read_text(), page


def test_memory_output(tmp_path):
    src = build_input(tmp_path / "in")
    out = "memory://review-test/out"
    run_anonymize(src, out, "--run-id", "mem")
    done = build_review(out, n=4)
    fs = fsspec.filesystem("memory")
    assert done["index"] == "memory://review-test/out/review/index.html"
    assert fs.isfile("/review-test/out/review/index.html")
    thumbs = fs.glob("/review-test/out/review/thumbs/*.jpg")
    assert done["sampled"] == 4 and len(thumbs) >= 2
    assert "mem" in fs.cat_file("/review-test/out/review/index.html").decode()


def test_review_command(anonymized, tmp_path, capsys):
    _, out, _ = anonymized
    assert cli_main(["review", "--output", str(out), "--sample", "3"]) == 0
    assert "review written to" in capsys.readouterr().err
    assert cli_main(["review", "--output", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no audit records" in err and len(err.splitlines()) == 1


def corrections_doc(entries: list[dict]) -> str:
    return json.dumps({"format": FORMAT, "corrections": entries})


def entry(src: Path, name: str, **kw) -> dict:
    data = (src / name).read_bytes()
    w, h = Image.open(io.BytesIO(data)).size
    return {
        "source_uri": str(src / name),
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "width": w,
        "height": h,
        "missed_faces": kw.get("missed", []),
        "false_positives": kw.get("fps", []),
        "note": "test",
    }


def test_corrections_rerun(tmp_path):
    src = build_input(tmp_path / "in")
    out = tmp_path / "out"
    base = run_anonymize(src, out, "--run-id", "base")
    assert "corrections" not in base.config  # runs without the flag keep their hash
    missed = {"x": 100, "y": 30, "w": 40, "h": 50}  # no square there: the detector misses it
    fp = {"x": 60, "y": 40, "w": 20, "h": 20}  # one_high's square, marked a false positive
    doc = tmp_path / "corrections.json"
    doc.write_text(
        corrections_doc(
            [
                entry(src, "none.png", missed=[missed]),
                entry(src, "one_high.png", fps=[fp]),
                {
                    "source_uri": str(src / "shard.tar") + "#m2.png",
                    "source_sha256": hashlib.sha256(png(picture([], 8))).hexdigest(),
                    "width": 160,
                    "height": 120,
                    "missed_faces": [missed],
                },
            ]
        )
    )
    rp = run_anonymize(src, out, "--run-id", "fix", "--corrections", str(doc))
    # corrections are data about single inputs: the config (and its hash) stay the run's
    assert rp.ctx.config_hash == base.ctx.config_hash
    assert rp.config["corrections"]["base_config_hash"] == base.ctx.config_hash
    records = {r["source_uri"]: r for r in anon.read_run_records(str(out), "fix").to_pylist()}
    # exactly the corrected inputs (the whole tar shard, written whole) and nothing else
    assert set(records) == {
        str(src / "none.png"),
        str(src / "one_high.png"),
        str(src / "shard.tar#m1.png"),
        str(src / "shard.tar#m2.png"),
    }
    none = records[str(src / "none.png")]
    assert none["status"] == "ok" and [f["source"] for f in none["faces"]] == ["reviewer"]
    assert none["faces"][0]["x"] == 100 and none["faces"][0]["w"] == 40
    # the reviewer's box is blurred like a detected face: the centre of the region changed
    before = picture([], 1).astype(int)
    after = decode(Path(none["output_uri"]).read_bytes()).pixels.astype(int)
    assert (np.abs(after[45:65, 110:130] - before[45:65, 110:130]).max(axis=2) > 2).mean() > 0.5
    assert np.array_equal(after[:, :40], before[:, :40])  # and the rest did not
    # the false positive stays blurred without --drop-false-positives
    high = records[str(src / "one_high.png")]
    assert [f["source"] for f in high["faces"]] == ["detector"]
    m2 = records[str(src / "shard.tar#m2.png")]
    assert [f["source"] for f in m2["faces"]] == ["reviewer"]
    member = {
        r.key: r.data for r in read_records(ShardRef("tar", str(out / "shard.tar"), "shard.tar"))
    }
    m2_out = decode(member["m2.png"]).pixels.astype(int)
    m2_in = picture([], 8).astype(int)
    assert (np.abs(m2_out[45:65, 110:130] - m2_in[45:65, 110:130]).max(axis=2) > 2).mean() > 0.5

    drop = run_anonymize(
        src, out, "--run-id", "drop", "--corrections", str(doc), "--drop-false-positives"
    )
    assert drop.ctx.config_hash == rp.ctx.config_hash
    high = {r["source_uri"]: r for r in anon.read_run_records(str(out), "drop").to_pylist()}[
        str(src / "one_high.png")
    ]
    assert high["status"] == "no_faces" and high["faces"] == []
    # the review shows the corrected run: reviewer boxes counted
    build_review(str(out), n=10)
    assert "drawn by a reviewer" in (out / "review" / "index.html").read_text()

    # the corrections are kept under the output and no later run undoes them: a nightly
    # --skip-existing run leaves the corrected image alone, the coverage is whole, and a run
    # under a new config applies the kept correction again
    assert sorted(p.name for p in (out / "corrections").iterdir()) == ["drop.json", "fix.json"]
    corrected = (out / "none.png").read_bytes()
    run_anonymize(src, out, "--run-id", "nightly", "--skip-existing")
    assert (out / "none.png").read_bytes() == corrected
    assert str(src / "none.png") not in {
        r["source_uri"] for r in anon.read_run_records(str(out), "nightly").to_pylist()
    }
    assert cli_main(["report", "--output", str(out), "--input", str(src), "--verify"]) == 0
    run_anonymize(src, out, "--run-id", "pix", "--method", "pixelate")
    pix = {r["source_uri"]: r for r in anon.read_run_records(str(out), "pix").to_pylist()}
    assert [f["source"] for f in pix[str(src / "none.png")]["faces"]] == ["reviewer"]
    assert pix[str(src / "one_high.png")]["faces"] == []  # dropped, as the last run said


def test_corrections_refused_when_input_changed(tmp_path, capsys):
    src = build_input(tmp_path / "in")
    doc = tmp_path / "corrections.json"
    box = {"x": 1, "y": 1, "w": 9, "h": 9}
    doc.write_text(corrections_doc([entry(src, "one_low.png", missed=[box])]))
    (src / "one_low.png").write_bytes(png(picture([(10, 10, 41)], 2)))  # changed after review
    argv = ["anonymize", "--input", str(src), "--output", str(tmp_path / "out")]
    argv += ["--detector", DETECTOR, "--corrections", str(doc)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(src / "one_low.png") in err and "changed since it was reviewed" in err
    assert not (tmp_path / "out" / "one_low.png").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e.update(missed_face=[]), "unknown key"),
        (lambda e: e.update(source_uri="/nowhere.png"), "not an input under --input"),
        (lambda e: e.update(missed_faces=[{"x": 500, "y": 1, "w": 9, "h": 9}]), "covers no pixel"),
        (lambda e: e.update(missed_faces=[{"x": "1", "y": 1, "w": 9, "h": 9}]), "finite number"),
    ],
)
def test_bad_corrections_one_line(tmp_path, capsys, change, message):
    src = build_input(tmp_path / "in")
    e = entry(src, "one_low.png")
    change(e)
    doc = tmp_path / "corrections.json"
    doc.write_text(corrections_doc([e]))
    argv = ["anonymize", "--input", str(src), "--output", str(tmp_path / "out")]
    assert cli_main([*argv, "--detector", DETECTOR, "--corrections", str(doc)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_old_audit_files_still_read(tmp_path):
    """An audit file written before faces had a ``source`` reads with the current schema."""
    landmark = pa.struct([("x", pa.float32()), ("y", pa.float32())])
    old_face = pa.struct(
        [(k, pa.float32()) for k in ("x", "y", "w", "h", "score")]
        + [("landmarks", pa.list_(landmark))]
    )
    old_schema = pa.schema(
        [f if f.name != "faces" else pa.field("faces", pa.list_(old_face)) for f in AUDIT_SCHEMA]
    )
    row = {name: None for name in old_schema.names}
    row.update(run_id="old", source_uri="a.png", shard_uri="a.png", key="", status="ok")
    row["faces"] = [{"x": 1, "y": 2, "w": 3, "h": 4, "score": 0.5, "landmarks": None}]
    (tmp_path / "audit").mkdir()
    pq.write_table(
        pa.Table.from_pylist([row], schema=old_schema), tmp_path / "audit" / "run-old.parquet"
    )
    faces = load_audit(str(tmp_path)).to_pylist()[0]["faces"]
    assert faces == [
        {"x": 1, "y": 2, "w": 3, "h": 4, "score": 0.5, "landmarks": None, "source": None}
    ]


def test_demo_writes_the_review_site(tmp_path):
    assert cli_main(["demo", str(tmp_path), "--detector", "yunet"]) == 0
    index = (tmp_path / "output" / "review" / "index.html").read_text()
    assert "demo" in index and "empty file (0 bytes)" in index
    assert len(list((tmp_path / "output" / "review" / "thumbs").glob("*.jpg"))) == 7


def test_correction_boxes_are_in_the_upright_frame(tmp_path):
    """A JPEG stored sideways (EXIF orientation 6): the reviewer's box, drawn on the upright
    picture the site shows, blurs that place of the upright output."""
    from blurbeam import demo

    upright = picture([], 9)  # 160 wide, 120 high as viewed
    src = tmp_path / "in"
    src.mkdir()
    (src / "sideways.jpg").write_bytes(demo.exif_rotated_jpeg_with_gps(upright))
    out = tmp_path / "out"
    run_anonymize(src, out, "--run-id", "base")
    (base,) = anon.read_run_records(str(out), "base").to_pylist()
    assert (base["width"], base["height"], base["exif_orientation"]) == (160, 120, 6)
    before = decode(Path(base["output_uri"]).read_bytes()).pixels.astype(int)
    doc = tmp_path / "corrections.json"
    box = {"x": 100, "y": 10, "w": 50, "h": 40}
    doc.write_text(corrections_doc([{**entry(src, "sideways.jpg"), "width": 160, "height": 120,
                                     "missed_faces": [box]}]))  # fmt: skip
    run_anonymize(src, out, "--run-id", "fix", "--corrections", str(doc))
    (fixed,) = anon.read_run_records(str(out), "fix").to_pylist()
    after = decode(Path(fixed["output_uri"]).read_bytes()).pixels.astype(int)
    assert after.shape[:2] == (120, 160)
    diff = np.abs(after - before).max(axis=2)
    assert (diff[20:40, 110:140] > 8).mean() > 0.5  # inside the box, upright
    assert (diff[60:, :90] > 8).mean() < 0.05  # elsewhere only JPEG re-encoding noise

"""Video in ``blurbeam anonymize`` (issue 23): a folder of images and videos (built here with
PyAV, as tests/test_video.py builds them) through the real CLI: one audit record per input,
the videos written with their frames, timestamps and audio, every frame's face blurred, the
per-frame face records, fail closed on a broken video, and --skip-existing."""

from __future__ import annotations

import fractions
import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

av = pytest.importorskip("av")

from test_shards import face_image, plain_image  # noqa: E402
from test_video import blurred_frames, frames_upright, make_clip, sharpness  # noqa: E402

from blurbeam.detectors.base import Detector  # noqa: E402
from blurbeam.pipelines.cli import main as cli_main  # noqa: E402
from blurbeam.schemas import layout  # noqa: E402
from blurbeam.schemas.audit import AUDIT_SCHEMA  # noqa: E402
from blurbeam.schemas.video import FRAME_FACE_SCHEMA  # noqa: E402
from blurbeam.video import media  # noqa: E402

SIZE = (240, 160)


def run(capsys, inp: Path, out: Path, *flags: str) -> tuple[int, str, str]:
    capsys.readouterr()
    argv = ["anonymize", "--input", str(inp), "--output", str(out), "--progress", "off"]
    rc = cli_main([*argv, *flags])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def records(out: Path, run_id: str) -> dict[str, dict[str, Any]]:
    table = pq.read_table(next((out / "audit").glob(f"run-{run_id}-*.parquet")))
    return {Path(r["source_uri"]).name: r for r in table.to_pylist()}


def data_files(out: Path) -> set[str]:
    return {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and not p.relative_to(out).as_posix().startswith(layout.OWN_FILES)
    }


def no_frames(path: Path) -> None:
    """A Matroska file with a video stream that holds no frame, and a little audio."""
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=30)
    video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
    audio = out.add_stream("pcm_s16le", rate=48000)
    out.start_encoding()
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = 48000, 0, fractions.Fraction(1, 48000)
    for packet in [*audio.encode(frame), *audio.encode()]:
        out.mux(packet)
    out.close()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, astronaut):
    """2 images, 2 videos (an mp4 with AAC, B-frames and VFR; an mkv with PCM audio) and three
    broken ones: a truncated mp4, one with zeroed bytes in its middle, an mkv without frames."""
    root = tmp_path_factory.mktemp("videos")
    src, out = root / "in", root / "out"
    (src / "sub").mkdir(parents=True)
    (src / "face.jpg").write_bytes(face_image(3))
    (src / "sub" / "plain.png").write_bytes(plain_image(4, "PNG"))
    boxes = {
        "walk.mp4": make_clip(src / "walk.mp4", astronaut, frames=24, size=SIZE, gop=8),
        "sub/pcm.mkv": make_clip(
            src / "sub" / "pcm.mkv", astronaut, frames=20, size=SIZE, audio="pcm_s16le", bframes=0
        ),
    }
    whole = (src / "walk.mp4").read_bytes()
    (src / "broken.mp4").write_bytes(whole[: len(whole) // 2])
    n = len(whole)
    (src / "mid.mp4").write_bytes(whole[: 2 * n // 5] + bytes(n // 5) + whole[3 * n // 5 :])
    no_frames(src / "empty.mkv")
    return src, out, boxes


@pytest.fixture(scope="module")
def first_run(mixed):
    src, out, _ = mixed
    rc = cli_main(
        ["anonymize", "--input", str(src), "--output", str(out), "--progress", "off"]
        + ["--run-id", "first", "--max-error-rate", "1"]
    )
    return rc, records(out, "first")


def test_every_input_gets_one_record(mixed, first_run):
    _, out, _ = mixed
    rc, by_name = first_run
    assert rc == 0
    assert {n: r["status"] for n, r in by_name.items()} == {
        "broken.mp4": "error",
        "empty.mkv": "error",
        "mid.mp4": "error",
        "face.jpg": "ok",
        "pcm.mkv": "ok",
        "plain.png": "no_faces",
        "walk.mp4": "ok",
    }
    assert by_name["face.jpg"]["video"] is None
    assert data_files(out) == {"face.jpg", "sub/plain.png", "walk.mp4", "sub/pcm.mkv"}


@pytest.mark.parametrize(
    "name, reason",
    [
        ("broken.mp4", "cannot open video: "),
        ("mid.mp4", "video decode error: "),
        ("empty.mkv", "video has no frames"),
    ],
)
def test_broken_video_is_one_error_line_and_no_output(mixed, first_run, name, reason):
    _, out, _ = mixed
    rec = first_run[1][name]
    assert rec["error_stage"] == "video" and "\n" not in rec["error"]
    assert reason in rec["error"], rec["error"]
    assert rec["output_uri"] is None and rec["video"] is None
    assert not (out / name).exists()


@pytest.mark.parametrize("name", ["walk.mp4", "sub/pcm.mkv"])
def test_video_written_with_its_frames_audio_and_every_face_blurred(mixed, first_run, name):
    src, out, boxes = mixed
    rec = first_run[1][Path(name).name]
    a, b = media.probe(str(src / name)), media.probe(str(out / name))
    assert b.frame_count == a.frame_count == len(boxes[name])
    assert [b.seconds(p) for p in b.frame_pts] == pytest.approx([a.seconds(p) for p in a.frame_pts])
    assert b.duration == pytest.approx(a.duration, abs=1e-6)
    (ai,), (bi,) = a.audio_indices, b.audio_indices
    assert media.packet_digest(str(src / name), ai) == media.packet_digest(str(out / name), bi)
    assert all(blurred_frames(src / name, out / name, boxes[name]))
    assert rec["output_sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert rec["source_sha256"] == hashlib.sha256((src / name).read_bytes()).hexdigest()
    video = rec["video"]
    assert video["frames"] == a.frame_count and video["frames_with_faces"] == a.frame_count
    assert video["codec_in"] == a.codec and video["codec_out"] == b.codec
    assert video["audio_streams"] == 1
    assert rec["num_faces"] == video["tracks"] >= 1
    assert '"crf"' in video["encode"] or '"qscale"' in video["encode"]


@pytest.mark.parametrize("name", ["walk.mp4", "sub/pcm.mkv"])
def test_per_frame_face_records(mixed, first_run, name):
    _, out, boxes = mixed
    rec = first_run[1][Path(name).name]
    path = rec["video"]["frame_faces_uri"]
    assert path == layout.video_faces(str(out), "first", rec["source_uri"])
    table = pq.read_table(path)
    assert table.schema == FRAME_FACE_SCHEMA
    assert set(table.column("source_uri").to_pylist()) == {rec["source_uri"]}
    assert set(table.column("frame_index").to_pylist()) == set(range(len(boxes[name])))
    assert table.num_rows == rec["video"]["face_boxes"]


def test_verify_checks_each_videos_per_frame_faces(mixed, first_run, tmp_path):
    """The audit record holds the sha256 of its video's per-frame face file, and
    ``report --verify`` (``attest.verify``) finds that file changed, missing, or joined by a
    file no record names, also in a copy of the output moved elsewhere."""
    import shutil

    from blurbeam import attest

    _, out, _ = mixed
    rec = first_run[1]["walk.mp4"]
    written = Path(rec["video"]["frame_faces_uri"]).read_bytes()
    assert rec["video"]["frame_faces_sha256"] == hashlib.sha256(written).hexdigest()
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    assert attest.verify(str(moved))[0] == []
    faces = Path(layout.video_faces(str(moved), "first", rec["source_uri"]))
    rel = faces.relative_to(moved).as_posix()
    table = pq.read_table(faces)
    pq.write_table(table.slice(1), faces)  # one face box fewer
    assert attest.verify(str(moved))[0] == [
        f"{rel}, the per-frame faces of a video of run first, was changed"
    ]
    stray = faces.with_name("0" * 32 + ".parquet")
    stray.write_bytes(written)
    faces.unlink()
    problems = attest.verify(str(moved))[0]
    assert f"{rel}, the per-frame faces of a video of run first, is missing" in problems
    assert (
        f"{stray.relative_to(moved).as_posix()} is named by no audit record of run first"
        in problems
    )
    assert len(problems) == 2


def test_audit_schema_and_report_account_for_every_input(mixed, first_run, capsys, tmp_path):
    _, out, _ = mixed
    table = pq.read_table(next((out / "audit").glob("run-first-*.parquet")))
    assert table.schema == AUDIT_SCHEMA
    capsys.readouterr()
    rc = cli_main(["report", "--output", str(out), "--verify", "--report-dir", str(tmp_path)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "7 inputs in 7 audit records from 1 run" in text
    assert "coverage: all 7 inputs have an audit record" in text
    assert "attestations: 1 chained run" in text and "verified" in text


def test_no_temporary_file_under_the_output(mixed, first_run):
    _, out, _ = mixed
    hidden = [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert hidden == []


def test_skip_existing_does_not_redo_the_videos(mixed, first_run, capsys):
    src, out, _ = mixed
    before = {n: (out / n).stat().st_mtime_ns for n in ("walk.mp4", "sub/pcm.mkv")}
    rc, stdout, err = run(
        capsys, src, out, "--skip-existing", "--run-id", "second", "--max-error-rate", "1"
    )
    assert rc == 0, err
    assert "skipped 7 inputs already done" in stdout + err
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before
    # an output removed since: that video is done again, the others are not
    (out / "walk.mp4").unlink()
    rc, stdout, err = run(
        capsys, src, out, "--skip-existing", "--run-id", "third", "--max-error-rate", "1"
    )
    assert rc == 0, err
    assert "skipped 6 inputs already done" in stdout + err
    assert {n: r["status"] for n, r in records(out, "third").items()} == {"walk.mp4": "ok"}
    assert (out / "walk.mp4").exists()


def test_max_frames_and_max_pixels_fail_closed(mixed, tmp_path, capsys):
    src, _, _ = mixed
    out = tmp_path / "out"
    rc, _, err = run(capsys, src, out, "--run-id", "limits", "--max-frames", "21")
    assert rc == 1  # errors above --max-error-rate 0
    by_name = records(out, "limits")
    assert "more than --max-frames 21" in by_name["walk.mp4"]["error"]
    assert by_name["pcm.mkv"]["status"] == "ok"
    assert not (out / "walk.mp4").exists()
    assert "Traceback" not in err
    rc, _, err = run(capsys, src, tmp_path / "px", "--run-id", "px", "--max-pixels", "30000")
    assert rc == 1 and "Traceback" not in err
    by_name = records(tmp_path / "px", "px")
    for name in ("walk.mp4", "pcm.mkv"):  # 240x160 = 38400 pixels a frame
        assert "exceeds --max-pixels 30000" in by_name[name]["error"]
    assert not (tmp_path / "px" / "walk.mp4").exists()
    assert not (tmp_path / "px" / "sub" / "pcm.mkv").exists()


def test_without_pyav_a_video_is_an_error_naming_the_extra(mixed, tmp_path, capsys, monkeypatch):
    import blurbeam.extras as extras

    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda module: module != "av" and real(module))
    src, _, _ = mixed
    out = tmp_path / "out"
    # the monkeypatch hides PyAV in this process only: no worker processes
    rc, _, err = run(
        capsys, src, out, "--run-id", "noav", "--max-error-rate", "1", "--direct_num_workers", "1"
    )
    assert rc == 0, err
    by_name = records(out, "noav")
    for name in ("walk.mp4", "pcm.mkv"):
        assert by_name[name]["status"] == "error"
        assert "pip install 'blurbeam[video]'" in by_name[name]["error"]
        assert "\n" not in by_name[name]["error"]
    assert by_name["face.jpg"]["status"] == "ok"
    assert data_files(out) == {"face.jpg", "sub/plain.png"}


def test_segments_across_workers_join_into_the_same_video(mixed, first_run, tmp_path, capsys):
    """Segments of about 0.25 s (keyframes every 8 frames: 3 segments of walk.mp4), kept under
    --temp_location, processed by two worker threads: the same frames, audio and blur; the
    temporary segments are gone afterwards. The corrupt clip's broken segment fails the whole
    video while its other segments succeed."""
    src, _, boxes = mixed
    out, temp = tmp_path / "out", tmp_path / "temp"
    temp.mkdir()
    rc, _, err = run(
        capsys, src, out, "--run-id", "seg", "--max-error-rate", "1",
        "--video-segment-seconds", "0.25", "--temp_location", str(temp),
        "--direct_num_workers", "2", "--direct_running_mode", "multi_threading",
    )  # fmt: skip
    assert rc == 0, err
    by_name = records(out, "seg")
    rec = by_name["walk.mp4"]
    assert rec["status"] == "ok" and rec["video"]["segments"] == 3
    # the face's track goes on across the cuts: as many tracks as in one segment
    assert rec["num_faces"] == rec["video"]["tracks"] == first_run[1]["walk.mp4"]["num_faces"]
    a, b = media.probe(str(src / "walk.mp4")), media.probe(str(out / "walk.mp4"))
    assert b.frame_pts == a.frame_pts and b.duration == pytest.approx(a.duration, abs=1e-6)
    assert media.packet_digest(str(src / "walk.mp4"), 1) == media.packet_digest(
        str(out / "walk.mp4"), 1
    )
    assert all(blurred_frames(src / "walk.mp4", out / "walk.mp4", boxes["walk.mp4"]))
    frames = pq.read_table(rec["video"]["frame_faces_uri"]).column("frame_index").to_pylist()
    assert set(frames) == set(range(a.frame_count))
    mid = by_name["mid.mp4"]
    assert mid["status"] == "error" and mid["error"].startswith("segment "), mid["error"]
    assert " of 3 failed: video decode error" in mid["error"]
    assert not (out / "mid.mp4").exists()
    assert list(temp.rglob("*")) == []


def test_whole_video_on_one_worker_gives_the_same_video(mixed, first_run, tmp_path, capsys):
    """--video-segment-seconds 0 (what a remote runner without --temp_location does): each video
    whole in one DoFn call, cut into the same segments as the segments path: the same frames,
    audio packets and face boxes (to a pixel: the detector's floating point sums may differ in
    their last bits between runs, and so may the encoded video)."""
    src, first_out, boxes = mixed
    out = tmp_path / "out"
    rc, _, err = run(
        capsys, src, out, "--run-id", "whole", "--max-error-rate", "1",
        "--video-segment-seconds", "0",
    )  # fmt: skip
    assert rc == 0, err
    by_name = records(out, "whole")
    assert {n: r["status"] for n, r in by_name.items()} == {
        n: r["status"] for n, r in first_run[1].items()
    }
    for name in ("walk.mp4", "sub/pcm.mkv"):
        rec, first = by_name[Path(name).name], first_run[1][Path(name).name]
        a, b = media.probe(str(first_out / name)), media.probe(str(out / name))
        assert (b.frame_pts, b.duration) == (a.frame_pts, a.duration)
        assert media.packet_digest(str(out / name), 1) == media.packet_digest(
            str(first_out / name), 1
        )
        assert all(blurred_frames(src / name, out / name, boxes[name]))
        whole = pq.read_table(rec["video"]["frame_faces_uri"]).to_pylist()
        segmented = pq.read_table(first["video"]["frame_faces_uri"]).to_pylist()
        assert [r["frame_index"] for r in whole] == [r["frame_index"] for r in segmented]
        for key in ("x", "y", "w", "h"):
            assert [r[key] for r in whole] == pytest.approx([r[key] for r in segmented], abs=1)
    assert by_name["mid.mp4"]["error"].startswith("video decode error")


def test_fsspec_input_output_and_temp_location(mixed, capsys):
    """Videos read from, written to and segmented under fsspec URLs (memory://)."""
    import fsspec

    src, _, boxes = mixed
    fs = fsspec.filesystem("memory")
    for name in ("walk.mp4", "face.jpg", "mid.mp4"):
        fs.pipe_file(f"/vsrc/{name}", (src / name).read_bytes())
    fs.mkdir("/vtemp")
    rc = cli_main(
        ["anonymize", "--input", "memory://vsrc", "--output", "memory://vdst", "--progress", "off"]
        + ["--run-id", "mem", "--max-error-rate", "1", "--video-segment-seconds", "0.25"]
        + ["--temp_location", "memory://vtemp"]
    )
    assert rc == 0, capsys.readouterr().err
    table = pq.read_table(fs.open("/vdst/audit/run-mem-00000-of-00001.parquet"))
    by_name = {Path(r["source_uri"]).name: r for r in table.to_pylist()}
    assert {n: r["status"] for n, r in by_name.items()} == {
        "walk.mp4": "ok",
        "face.jpg": "ok",
        "mid.mp4": "error",
    }
    rec = by_name["walk.mp4"]
    assert rec["output_uri"] == "memory://vdst/walk.mp4" and rec["video"]["segments"] == 3
    assert fs.exists(rec["video"]["frame_faces_uri"])
    assert not fs.exists("/vdst/mid.mp4")
    assert fs.find("/vtemp") == []
    fs.rm(["/vsrc", "/vdst"], recursive=True)


@pytest.mark.parametrize(
    "flags, where",
    [
        ([], "local"),
        (["--temp_location", "gs://b/tmp"], "gs://b/tmp/blurbeam-video-r"),
        (["--runner", "DataflowRunner"], None),
        (
            ["--runner", "DataflowRunner", "--temp_location", "gs://b/t/"],
            "gs://b/t/blurbeam-video-r",
        ),
        (["--video-segment-seconds", "0", "--temp_location", "gs://b/t"], None),
    ],
)
def test_segments_live_under_temp_location_or_locally_else_whole_videos(flags, where):
    import tempfile

    from apache_beam.options.pipeline_options import PipelineOptions

    from blurbeam.pipelines.anonymize import AnonymizeOptions, video_segments_dir

    options = PipelineOptions(flags)
    seconds = options.view_as(AnonymizeOptions).video_segment_seconds
    if where == "local":
        where = f"{tempfile.gettempdir()}/blurbeam-video-r"
    assert video_segments_dir(options, "r", seconds) == where


# ---------------------------------------------------------------- blurbeam stream


def covered_frames(src: Path, out: Path, boxes: list[tuple]) -> tuple[int, list[str]]:
    """(frames written, how each written frame's face was covered: "blurred" or "black"), each
    output frame matched to its source frame by timestamp; an uncovered face is "VISIBLE"."""
    a, b = media.probe(str(src)), media.probe(str(out))
    index = {p: i for i, p in enumerate(a.frame_pts)}
    source = dict(enumerate(frames_upright(src)))
    how = []
    for pts, rgb in zip(b.frame_pts, frames_upright(out), strict=True):
        i = index[pts]
        if rgb.max() < 40:
            how.append("black")
        elif sharpness(rgb, boxes[i]) < 0.25 * sharpness(source[i], boxes[i]):
            how.append("blurred")
        else:
            how.append("VISIBLE")
    return b.frame_count, how


@pytest.mark.parametrize("direction", [(1, 0), (0, 1), (0.7, 0.7)])
def test_stream_reused_boxes_cover_a_face_moving_at_the_documented_speed(direction):
    """The reuse policy's bound (blurbeam.video.stream's doc): with the default settings a face
    moving 0.15 of its box's width a frame is inside the mask of the reused boxes (at the
    anonymizer's default mask scale) at every distance up to max_age, before and after."""
    from blurbeam.blur import DEFAULT_MASK_SCALE
    from blurbeam.geometry import box_coverage, faces_mask
    from blurbeam.video.stream import StreamConfig, boxes_for

    config = StreamConfig()
    w = h = 40.0
    step = 0.15 * w
    dx, dy = direction
    width = height = 1000
    for d in range(1, config.max_age + 1):
        for seen in (0, 2 * d):  # the detection d frames before the frame, or d frames after
            face = (400.0 + dx * step * d, 400.0 + dy * step * d, w, h)
            known = {seen: [(400.0 + dx * step * seen, 400.0 + dy * step * seen, w, h)]}
            kind, boxes = boxes_for(d, known, config)
            assert kind == "reused", (d, seen)
            mask = faces_mask(boxes, width, height, scale=DEFAULT_MASK_SCALE)
            assert box_coverage(mask, face) == 1.0, (d, seen)
    assert boxes_for(config.max_age + 1, {0: [(0, 0, w, h)]}, config)[0] == "black"


def test_stream_reused_boxes_follow_a_fast_face_between_two_detections():
    """Faster than the growth covers (half its width a frame), a face moving at a steady speed
    between two detected frames is covered on every frame between them by the moved box; a
    second face far away, of another size, is not paired with it."""
    from blurbeam.blur import DEFAULT_MASK_SCALE
    from blurbeam.geometry import box_coverage, faces_mask
    from blurbeam.video.stream import StreamConfig, boxes_for

    config = StreamConfig()
    w = 40.0
    other = (900.0, 50.0, 150.0, 150.0)
    known = {0: [(100.0, 300.0, w, w), other], 8: [(100.0 + 8 * 0.5 * w, 300.0, w, w), other]}
    for i in range(1, 8):
        kind, boxes = boxes_for(i, known, config)
        mask = faces_mask(boxes, 1200, 800, scale=DEFAULT_MASK_SCALE)
        assert kind == "reused" and box_coverage(mask, (100.0 + i * 0.5 * w, 300.0, w, w)) == 1.0
        assert len(boxes) == 2 + 2 + 2  # each frame's two, and one moved box per pair
    # ahead of the last two detections, when none after is known yet
    ahead = {0: [(100.0, 300.0, w, w)], 4: [(100.0 + 4 * 0.5 * w, 300.0, w, w)]}
    for i in range(5, 9):
        mask = faces_mask(boxes_for(i, ahead, config)[1], 1200, 800, scale=DEFAULT_MASK_SCALE)
        assert box_coverage(mask, (100.0 + i * 0.5 * w, 300.0, w, w)) == 1.0


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("live") / "live.mp4"
    boxes = make_clip(path, astronaut, frames=30, size=SIZE, audio=None, vfr=False, bframes=0)
    return path, boxes


@pytest.mark.parametrize("policy", ["reuse", "black"])
def test_stream_paced_at_real_time_writes_no_face_unblurred(live_clip, tmp_path, capsys, policy):
    import time

    src, boxes = live_clip
    out = tmp_path / "out.mp4"
    capsys.readouterr()
    started = time.monotonic()
    rc = cli_main(["stream", "--input", str(src), "--output", str(out), "--policy", policy])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert rc == 0, err
    # paced: 30 frames at 30 fps are not read faster than their timestamps (a lower bound)
    assert elapsed >= media.probe(str(src)).video_seconds * 0.9
    line = err.strip().splitlines()[-1]
    counts = dict(
        (w, int(n)) for n, w in re.findall(r"(\d+) (frames in|written|dropped|black\b)", line)
    )
    assert "p95" in line and "Traceback" not in err
    assert counts["frames in"] == 30 == counts["written"] + counts["dropped"]
    written, how = covered_frames(src, out, boxes)
    assert written == counts["written"] and "VISIBLE" not in how
    assert how.count("black") == counts["black"]
    assert not [p for p in tmp_path.iterdir() if p.name != "out.mp4"]  # no partial file left


def test_stream_never_writes_over_its_input(live_clip, tmp_path, capsys):
    """The same file however --output spells it (itself, ``dir/../``, a symlink, a hard link)
    is refused on one line, exit 2, and the original is untouched."""
    import os
    import shutil

    src = tmp_path / "in.mp4"
    shutil.copyfile(live_clip[0], src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    (tmp_path / "link.mp4").symlink_to(src)
    os.link(src, tmp_path / "hard.mp4")
    spellings = [src, tmp_path / "sub" / ".." / "in.mp4", tmp_path / "link.mp4"]
    pairs = [(str(src), str(out)) for out in [*spellings, tmp_path / "hard.mp4"]]
    pairs.append((f"file://{src}", str(src)))  # FFmpeg opens a file: URL as the file itself
    for source, out in pairs:
        capsys.readouterr()
        rc = cli_main(["stream", "--input", source, "--output", out, "--no-pacing"])
        err = capsys.readouterr().err
        assert rc == 2 and "is the input itself" in err and len(err.strip().splitlines()) == 1
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before


class FailingDetector(Detector):
    """Detects with ``inner`` and fails on its ``fail_on``-th call."""

    name = "failing-test"

    def __init__(self, inner: Detector, fail_on: int) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def detect(self, rgb: np.ndarray) -> list:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("detector failed")
        return self.inner.detect(rgb)


def test_stream_detector_failure_stops_with_every_written_frame_covered(live_clip, tmp_path):
    from blurbeam.blur import BlurConfig
    from blurbeam.detectors import DetectorSpec, create
    from blurbeam.video.stream import StreamConfig, run_stream

    src, boxes = live_clip
    out = tmp_path / "out.mp4"
    detector = FailingDetector(create(DetectorSpec("multiscale")), fail_on=3)
    stats = run_stream(str(src), str(out), detector, BlurConfig(), StreamConfig())
    assert stats.error and stats.error.startswith("detector: RuntimeError: detector failed")
    written, how = covered_frames(src, out, boxes)
    assert written == stats.written and "VISIBLE" not in how


def test_an_audit_file_written_before_the_video_field_reads_with_the_schema(tmp_path):
    import pyarrow as pa

    from blurbeam.report import load_audit

    old = pa.schema([f for f in AUDIT_SCHEMA if f.name != "video"])
    (tmp_path / "audit").mkdir()
    row = {"run_id": "old", "source_uri": "/in/a.jpg", "status": "ok", "num_faces": 1}
    pq.write_table(
        pa.Table.from_pylist([row], schema=old),
        layout.part_files(layout.audit_prefix(str(tmp_path), "old"), 0, 1),
    )
    table = load_audit(str(tmp_path))
    assert table.schema == AUDIT_SCHEMA
    assert table.column("video").to_pylist() == [None]
    assert table.column("status").to_pylist() == ["ok"]


def test_a_remote_runner_without_temp_location_says_videos_are_processed_whole(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from blurbeam.pipelines import anonymize as anon
    from blurbeam.pipelines.scaffold import Launch

    (tmp_path / "in").mkdir()
    flags = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    notes = {}
    for name, extra in (("none", []), ("temp", ["--temp_location", "gs://b/t"])):
        options = PipelineOptions([*flags, "--runner", "DataflowRunner", *extra])
        rp = anon.plan(options.view_as(anon.AnonymizeOptions))
        lines = anon.COMMAND.announce(rp, Launch(options, "DataflowRunner"))
        notes[name] = [line for line in lines if "--temp_location" in line]
    assert notes["temp"] == []
    assert notes["none"] == [
        "blurbeam anonymize: note: no --temp_location: each video is processed whole on one "
        "worker, not in segments across workers"
    ]


def test_detect_every_kth_frame_still_covers_every_frame(mixed, tmp_path, capsys):
    """--video-detect-every 3: the detector runs on frames 0, 3, 6 ... only; the tracks cover
    the frames between, so every frame's face is still blurred; the setting is in the config."""
    import json
    import shutil

    src, _, boxes = mixed
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    shutil.copy(src / "walk.mp4", inp / "walk.mp4")
    rc, _, err = run(capsys, inp, out, "--run-id", "every3", "--video-detect-every", "3")
    assert rc == 0, err
    rec = records(out, "every3")["walk.mp4"]
    assert rec["status"] == "ok"
    assert all(blurred_frames(inp / "walk.mp4", out / "walk.mp4", boxes["walk.mp4"]))
    rows = pq.read_table(rec["video"]["frame_faces_uri"]).to_pylist()
    assert {r["frame_index"] for r in rows} == set(range(len(boxes["walk.mp4"])))
    detected = {r["frame_index"] for r in rows if r["source"] == "detected"}
    assert detected and all(i % 3 == 0 for i in detected)
    assert json.loads((out / layout.RUN_SUMMARY).read_text())["config"]["video_detect_every"] == 3
    assert run(capsys, inp, tmp_path / "o2", "--video-detect-every", "0")[0] == 2
    rc, _, err = run(capsys, inp, tmp_path / "o3", "--video-detect-every", "4")
    assert rc == 2 and "at most 3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o3" / "walk.mp4").exists()


def test_stream_to_standard_output_as_matroska(live_clip, tmp_path):
    """--output -: Matroska on stdout as the frames come (the summary stays on stderr), every
    frame's face blurred; the frames written are the source's, by their timestamps."""
    import subprocess
    import sys

    src, boxes = live_clip
    cmd = "import sys; from blurbeam.pipelines.cli import main; sys.exit(main())"
    run = subprocess.run(
        [sys.executable, "-c", cmd, "stream", "--input", str(src), "--output", "-", "--no-pacing"],
        capture_output=True,
        timeout=300,
    )
    err = run.stderr.decode()
    assert run.returncode == 0, err
    written = int(re.search(r"(\d+) written", err).group(1))
    out = tmp_path / "stdout.mkv"
    out.write_bytes(run.stdout)
    a, b = media.probe(str(src)), media.probe(str(out))
    assert b.frame_count == written >= 1
    source_times = [a.seconds(p) for p in a.frame_pts]
    source = frames_upright(src)
    for pts, rgb in zip(b.frame_pts, frames_upright(out), strict=True):
        i = min(range(len(source_times)), key=lambda k: abs(source_times[k] - b.seconds(pts)))
        assert abs(source_times[i] - b.seconds(pts)) < 0.002
        assert sharpness(rgb, boxes[i]) < 0.25 * sharpness(source[i], boxes[i])
    assert not list(tmp_path.glob("*.partial*"))


def test_stream_reads_a_url(live_clip, tmp_path, capsys):
    """A source FFmpeg opens by URL (here HTTP from a local server) is read like a file."""
    import functools
    import http.server
    import threading

    src, boxes = live_clip
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(src.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{src.name}"
        out = tmp_path / "out.mp4"
        capsys.readouterr()
        rc = cli_main(["stream", "--input", url, "--output", str(out), "--no-pacing"])
        err = capsys.readouterr().err
    finally:
        server.shutdown()
    assert rc == 0, err
    written, how = covered_frames(src, out, boxes)
    assert written >= 1 and "VISIBLE" not in how


def test_stream_bad_input_format_is_one_line(live_clip, tmp_path, capsys):
    capsys.readouterr()
    argv = ["stream", "--input", str(live_clip[0]), "--output", str(tmp_path / "o.mp4")]
    rc = cli_main([*argv, "--input-format", "no-such-format"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot open video" in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_videos_can_have_a_detector_of_their_own(mixed, tmp_path, capsys):
    """--video-detector centerface: the videos are searched with CenterFace (their records say
    so, with its model), the image keeps the default detector, every frame is still blurred,
    and the config records both; an unknown name is one line, exit 2."""
    import json
    import shutil

    from blurbeam.detectors import DetectorSpec, model_fingerprint
    from blurbeam.detectors.runtime import pin

    src, _, boxes = mixed
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    shutil.copy(src / "walk.mp4", inp / "walk.mp4")
    shutil.copy(src / "face.jpg", inp / "face.jpg")
    rc, _, err = run(capsys, inp, out, "--run-id", "vdet", "--video-detector", "centerface")
    assert rc == 0, err
    assert "detector multiscale, video detector centerface, method" in err.splitlines()[0]
    by_name = records(out, "vdet")
    video, image = by_name["walk.mp4"], by_name["face.jpg"]
    assert (video["status"], image["status"]) == ("ok", "ok")
    assert video["detector"] == "centerface" and image["detector"] == "multiscale"
    assert json.loads(video["detector_params"])["score_threshold"] == 0.2
    # each record names its own detector's model (both may run the same CenterFace file)
    centerface_sha = model_fingerprint(pin(DetectorSpec("centerface")))
    assert video["detector_model_sha256"] == centerface_sha
    assert image["detector_model_sha256"] == model_fingerprint(pin(DetectorSpec("multiscale")))
    assert video["config_hash"] == image["config_hash"]
    assert all(blurred_frames(inp / "walk.mp4", out / "walk.mp4", boxes["walk.mp4"]))
    config = json.loads((out / layout.RUN_SUMMARY).read_text())["config"]
    assert config["video_detector"]["name"] == "centerface"
    assert config["models"]["video_detector"] == centerface_sha
    rc, _, err = run(capsys, inp, tmp_path / "o2", "--video-detector", "nosuch")
    assert rc == 2 and "unknown detector 'nosuch'" in err and len(err.strip().splitlines()) == 1

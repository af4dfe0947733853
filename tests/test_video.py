"""Video anonymization (blurbeam.video): fidelity, blur in every frame, temporal coverage, fail
closed. The clips are built here with PyAV: scikit-image's astronaut face moving across a canvas,
with an audio track, a frame-index code in the corner (read back by the test detectors)."""

from __future__ import annotations

import fractions
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av")

from blurbeam.blur import BlurConfig  # noqa: E402
from blurbeam.detectors import DetectorSpec, Face, create  # noqa: E402
from blurbeam.detectors.base import Detector  # noqa: E402
from blurbeam.schemas.video import FRAME_FACE_SCHEMA, frame_face_rows, to_table  # noqa: E402
from blurbeam.video import media  # noqa: E402
from blurbeam.video.media import VideoError  # noqa: E402
from blurbeam.video.process import (  # noqa: E402
    VideoOptions,
    anonymize_video,
    process_segment,
)
from blurbeam.video.tracking import (  # noqa: E402
    DETECTED,
    INTERPOLATED,
    PROPAGATED,
    TrackConfig,
    track,
)

FACE = 96  # pasted face size (px)
CODE_BITS = 8  # frame index code: 8 blocks of 8x8 px in the top-left corner (upright)


# ---------------------------------------------------------------- clip building


def _face_patch(astronaut: np.ndarray) -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(astronaut[20:210, 140:330]), (FACE, FACE))


def _scene(patch: np.ndarray, i: int, size: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    w, h = size
    rng = np.random.default_rng(7)
    img = np.full((h, w, 3), 90, np.uint8)
    img[:, :, 1] = (np.arange(w) * 255 // w).astype(np.uint8)[None, :]
    img[h - 20 :, :] = rng.integers(0, 255, (20, w, 3), dtype=np.uint8)  # fixed texture
    x, y = 20 + 3 * i, (h - FACE) // 2
    img[y : y + FACE, x : x + FACE] = patch
    for b in range(CODE_BITS):
        img[0:8, 8 * b : 8 * b + 8] = 255 if (i >> b) & 1 else 0
    return img, (x, y, FACE, FACE)


def read_code(rgb: np.ndarray) -> int:
    return sum(1 << b for b in range(CODE_BITS) if rgb[2:6, 8 * b + 2 : 8 * b + 6].mean() > 128)


def make_clip(
    path: Path,
    astronaut: np.ndarray,
    *,
    frames: int = 36,
    size: tuple[int, int] = (320, 240),
    rotation: int = 0,
    audio: str | None = "aac",
    vfr: bool = True,
    bframes: int = 2,
    gop: int = 10,
    fmt: str | None = None,
    metadata: dict[str, str] | None = None,
    data_stream: bool = False,
    vcodec: str = "libx264",
) -> list[tuple]:
    """Write the clip; return each frame's face box (upright pixels)."""
    patch = _face_patch(astronaut)
    out = av.open(str(path), "w", format=fmt)
    if metadata:
        out.metadata.update(metadata)
    vs = out.add_stream(vcodec, rate=30)
    w, h = size
    vs.width, vs.height = (h, w) if rotation in (90, 270) else (w, h)
    vs.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
    vs.time_base = fractions.Fraction(1, 15360)
    vs.codec_context.gop_size = gop
    if vcodec == "libx264":
        vs.options = {"crf": "20", "preset": "fast", "bf": str(bframes), "sc_threshold": "0"}
    if rotation:
        vs.set_display_rotation(rotation)
    ast = None
    if audio:
        ast = out.add_stream(audio, rate=48000)
        ast.layout = "mono"
    ds = out.add_data_stream("bin_data") if data_stream else None
    boxes = []
    pts = 0
    for i in range(frames):
        img, box = _scene(patch, i, size)
        boxes.append(box)
        frame = av.VideoFrame.from_ndarray(media.stored(img, rotation), format="rgb24")
        frame.pts, frame.time_base = pts, vs.time_base
        pts += 1024 if vfr and i % 4 == 3 else 512
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if ast is not None:
        n = int(48000 * float(pts * vs.time_base))
        t = np.arange(n) / 48000
        sig = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        step = ast.codec_context.frame_size or 1024
        for k in range(0, n, step):
            a = av.AudioFrame.from_ndarray(sig[None, k : k + step], format="s16", layout="mono")
            a.sample_rate, a.pts, a.time_base = 48000, k, fractions.Fraction(1, 48000)
            for p in ast.encode(a):
                out.mux(p)
        for p in ast.encode():
            out.mux(p)
    if ds is not None:
        packet = av.Packet(b"GPMF telemetry with a GPS fix")
        packet.stream, packet.pts, packet.dts = ds, 0, 0
        packet.time_base, packet.duration = fractions.Fraction(1, 1000), 100
        out.mux(packet)
    out.close()
    return boxes


# ---------------------------------------------------------------- helpers


def frames_upright(path: Path) -> list[np.ndarray]:
    info = media.probe(str(path))
    return [
        media.upright(f.to_ndarray(format="rgb24"), info.rotation)
        for _, f in media.iter_frames(str(path), info, 0, info.frame_count)
    ]


def sharpness(rgb: np.ndarray, box: tuple) -> float:
    x, y, w, h = box
    inner = rgb[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4]
    return float(cv2.Laplacian(cv2.cvtColor(inner, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def blurred_frames(src: Path, out: Path, boxes: list[tuple]) -> list[bool]:
    """Per frame: is the face's inner region far less sharp in ``out`` than in ``src``."""
    return [
        sharpness(b, box) < 0.25 * sharpness(a, box)
        for a, b, box in zip(frames_upright(src), frames_upright(out), boxes, strict=True)
    ]


class CodedDetector(Detector):
    """Wraps a detector; drops every face in frames whose index code is in ``drop``."""

    name = "coded-test"

    def __init__(self, inner: Detector, drop: set[int] | None = None, fail_on: int = -1):
        self.inner, self.drop, self.fail_on = inner, drop or set(), fail_on

    def detect(self, rgb: np.ndarray) -> list[Face]:
        index = read_code(rgb)
        if index == self.fail_on:
            raise RuntimeError("detector failed")
        return [] if index in self.drop else self.inner.detect(rgb)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return create(DetectorSpec("multiscale"))


@pytest.fixture(scope="module")
def no_faces() -> Detector:
    return create(DetectorSpec("none"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut):
    """A rotated (display matrix 90), VFR, B-frame mp4 with AAC audio."""
    path = tmp_path_factory.mktemp("clip") / "phone.mp4"
    boxes = make_clip(path, astronaut, rotation=90)
    return path, boxes


@pytest.fixture(scope="module")
def anonymized(tmp_path_factory, clip, detector):
    src, _ = clip
    out = tmp_path_factory.mktemp("out") / "phone.mp4"
    result = anonymize_video(str(src), str(out), detector, BlurConfig(), VideoOptions(0.3, 4))
    return out, result


# ---------------------------------------------------------------- fidelity


def test_same_frames_timestamps_duration_size_rotation(clip, anonymized):
    src, _ = clip
    out, result = anonymized
    a, b = media.probe(str(src)), media.probe(str(out))
    assert result.segments > 2  # the clip was cut and joined
    assert a.rotation == b.rotation == 90
    assert (b.width, b.height) == (a.width, a.height) == (240, 320)
    assert b.frame_count == a.frame_count == 36
    assert [a.seconds(p) for p in a.frame_pts] == pytest.approx([b.seconds(p) for p in b.frame_pts])
    assert len(set(np.diff(a.frame_pts))) == 2  # variable frame rate, kept
    assert b.duration == pytest.approx(a.duration, abs=1e-6)
    assert b.codec == "h264"
    assert result.summary()["encode"] == {
        "codec": "libx264",
        "crf": 18,
        "preset": "veryfast",
        "bframes": 0,
    }


def test_audio_packets_identical(clip, anonymized):
    src, _ = clip
    out, result = anonymized
    assert result.join.audio_streams == 1
    (a_index,) = media.probe(str(src)).audio_indices
    (b_index,) = media.probe(str(out)).audio_indices
    assert media.packet_digest(str(src), a_index) == media.packet_digest(str(out), b_index)


def test_face_blurred_in_every_frame(clip, anonymized):
    src, boxes = clip
    out, result = anonymized
    assert all(blurred_frames(src, out, boxes))
    # away from the face the frame is the source's, up to H.264 at crf 18
    a, b = frames_upright(src)[5], frames_upright(out)[5]
    assert np.abs(a[-60:-25].astype(int) - b[-60:-25]).mean() < 4
    assert all(f.boxes for f in result.frames)


def test_frame_face_records(clip, anonymized):
    out, result = anonymized
    rows = frame_face_rows("r1", "phone.mp4", result.frames, result.info.time_base)
    table = to_table(rows)
    assert table.schema == FRAME_FACE_SCHEMA
    assert set(table.column("frame_index").to_pylist()) == set(range(36))
    assert (
        {"detected"}
        <= set(table.column("source").to_pylist())
        <= {
            "detected",
            "propagated",
            "interpolated",
        }
    )


def test_mkv_pcm_odd_size(tmp_path, astronaut, no_faces):
    src, out = tmp_path / "in.mkv", tmp_path / "out.mkv"
    make_clip(src, astronaut, frames=12, size=(321, 241), audio="pcm_s16le", bframes=0)
    result = anonymize_video(str(src), str(out), no_faces, BlurConfig(), VideoOptions(0.2, 2))
    a, b = media.probe(str(src)), media.probe(str(out))
    assert (b.width, b.height, b.frame_count) == (321, 241, 12)
    assert b.frame_pts == a.frame_pts
    assert result.join.audio_streams == 1
    assert media.packet_digest(str(src), 1) == media.packet_digest(str(out), 1)


@pytest.mark.parametrize(
    "name, vcodec, acodec, codec_out",
    [("in.avi", "mpeg4", "pcm_s16le", "mpeg4"), ("in.webm", "libvpx-vp9", "libopus", "vp9")],
)
def test_avi_and_webm(tmp_path, astronaut, no_faces, name, vcodec, acodec, codec_out):
    src, out = tmp_path / name, tmp_path / f"out{Path(name).suffix}"
    make_clip(src, astronaut, frames=12, audio=acodec, vfr=False, bframes=0, vcodec=vcodec)
    result = anonymize_video(str(src), str(out), no_faces, BlurConfig(), VideoOptions(0.2, 2))
    a, b = media.probe(str(src)), media.probe(str(out))
    assert b.codec == result.join.codec == codec_out
    assert (b.frame_count, b.frame_pts, b.time_base) == (12, a.frame_pts, a.time_base)
    assert media.packet_digest(str(src), 1) == media.packet_digest(str(out), 1)


def test_metadata_and_data_streams_dropped(tmp_path, astronaut, no_faces):
    src = tmp_path / "gopro.mp4"
    meta = {"location": "+48.8577+002.2950/", "creation_time": "2024-05-01T10:00:00Z"}
    make_clip(src, astronaut, frames=8, metadata=meta, data_stream=True)
    assert media.probe(str(src)).metadata.get("location")
    kinds = {}
    for name, keep, gps in (("plain", False, False), ("keep", True, False), ("gps", True, True)):
        out = tmp_path / f"{name}.mp4"
        options = VideoOptions(keep_metadata=keep, keep_gps=gps)
        result = anonymize_video(str(src), str(out), no_faces, BlurConfig(), options)
        info = media.probe(str(out))
        assert [s.type for s in info.streams] == ["video", "audio"]
        assert result.join.dropped_streams == ("2:data:",)
        kinds[name] = info.metadata
    assert "location" not in kinds["plain"] and "creation_time" not in kinds["plain"]
    assert "location" not in kinds["keep"] and kinds["keep"]["creation_time"].startswith("2024")
    assert kinds["gps"]["location"] == meta["location"]


def test_segments_processed_out_of_order_join(tmp_path, clip, no_faces):
    src, _ = clip
    info = media.probe(str(src))
    segments = media.plan_segments(info, 0.3, 4)
    options = VideoOptions(0.3, 4)
    paths = {}
    for seg in reversed(segments):  # as different workers might finish
        path = str(tmp_path / f"seg{seg.index}.nut")
        process_segment(str(src), info, seg, no_faces, BlurConfig(), path, options)
        paths[seg.index] = path
    out = tmp_path / "joined.mp4"
    ordered = [paths[s.index] for s in segments]
    media.join(str(src), info, ordered, str(out), "mp4")
    assert media.probe(str(out)).frame_pts == info.frame_pts
    with pytest.raises(VideoError, match="out of order"):
        media.join(str(src), info, ordered[::-1], str(tmp_path / "bad.mp4"), "mp4")
    with pytest.raises(VideoError, match="frames"):
        media.join(str(src), info, ordered[:-1], str(tmp_path / "short.mp4"), "mp4")


def test_plan_segments_at_keyframes(clip):
    info = media.probe(str(clip[0]))
    assert info.keyframes == (0, 10, 20, 30)
    segments = media.plan_segments(info, 0.3, 4)
    assert [s.start for s in segments] == [0, 10, 20, 30]
    assert [s.stop for s in segments] == [10, 20, 30, 36]
    assert [(s.context_start, s.context_stop) for s in segments][1] == (6, 24)
    assert len(media.plan_segments(info, 100.0)) == 1


# ---------------------------------------------------------------- temporal coverage


def test_tracking_covers_frames_detection_missed(tmp_path, clip, detector):
    src, boxes = clip
    drop = {0, 9, 10, 11, 17, 18, 19, 20, 21, 35}  # across segment cuts (10, 20) and both ends
    missed = CodedDetector(detector, drop)
    plain = tmp_path / "plain.mp4"
    anonymize_video(str(src), str(plain), missed, BlurConfig(), VideoOptions(0.3, 4, tracking=None))
    blurred = blurred_frames(src, plain, boxes)
    assert [i for i, b in enumerate(blurred) if not b] == sorted(drop)  # the test can fail
    tracked = tmp_path / "tracked.mp4"
    result = anonymize_video(str(src), str(tracked), missed, BlurConfig(), VideoOptions(0.3, 4))
    assert all(blurred_frames(src, tracked, boxes))
    sources = {f.index: {b.source for b in f.boxes} for f in result.frames}
    assert sources[19] == {INTERPOLATED}
    assert sources[0] == sources[35] == {PROPAGATED}


def _faces(*boxes: tuple) -> list[Face]:
    return [Face(*b, score=0.9) for b in boxes]


def test_track_links_small_boxes_by_centre_distance():
    # a 12 px face shaking 10 px a frame: IoU 0.09 between frames, one track
    detections = [_faces((100 + (10 if i % 2 else 0), 50, 12, 12)) for i in range(6)]
    assert len({b.track_id for f in track(detections, TrackConfig()) for b in f}) == 1
    unlinked = track(detections, TrackConfig(centre_gate=0.0))
    assert len({b.track_id for f in unlinked for b in f}) == 2  # one per position


def test_track_interpolates_propagates_and_never_removes():
    rng = np.random.default_rng(0)
    detections = []
    for i in range(30):
        jitter = rng.uniform(-3, 3, 2)
        faces = (
            [] if i in (10, 11, 12) else _faces((100 + 4 * i + jitter[0], 50, 40 + jitter[1], 40))
        )
        if i == 20:
            faces += _faces((300, 300, 20, 20))  # a lone detection
        detections.append(faces)
    cfg = TrackConfig(hold=3)
    out = track(detections, cfg, id_offset=7)
    held = track(detections, TrackConfig(hold=3, min_detections=1))
    for i, faces in enumerate(detections):
        for f in faces:
            assert any(
                b.source == DETECTED
                and b.x <= f.x + 1e-9
                and b.y <= f.y + 1e-9
                and b.x + b.w >= f.x + f.w - 1e-9
                and b.y + b.h >= f.y + f.h - 1e-9
                for b in out[i]
            )
    assert [b.source for b in out[11]] == [INTERPOLATED]
    assert out[11][0].x == pytest.approx(100 + 4 * 11, abs=6)
    assert {b.track_id for i in range(30) for b in out[i] if b.w > 30} == {7}
    lone = [i for i in range(30) if any(b.w < 40 for b in out[i])]
    assert lone == [20]  # a lone detection is not propagated by default
    lone = [i for i in range(30) if any(b.w < 40 for b in held[i])]
    assert lone == [17, 18, 19, 20, 21, 22, 23]  # hold frames both sides
    sizes = {round(b.w, 6) for i in range(13, 17) for b in out[i]}
    assert len(sizes) == 1  # one size over a window: no flicker


def test_track_none_is_the_detections():
    detections = [_faces((1, 2, 3, 4)), [], _faces((5, 6, 7, 8), (9, 9, 9, 9))]
    out = track(detections, None)
    assert [[(b.x, b.y, b.w, b.h, b.source) for b in f] for f in out] == [
        [(1, 2, 3, 4, DETECTED)],
        [],
        [(5, 6, 7, 8, DETECTED), (9, 9, 9, 9, DETECTED)],
    ]


# ---------------------------------------------------------------- fail closed


def _packet_span(path: Path, index: int) -> tuple[int, int]:
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
    packets.sort(key=lambda p: p.pts)
    return packets[index].pos, packets[index].size


def _fails(src: Path, tmp_path: Path, det: Detector, options: VideoOptions | None = None) -> str:
    out = tmp_path / "out" / "x.mp4"
    out.parent.mkdir(exist_ok=True)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    with pytest.raises(VideoError) as err:
        anonymize_video(str(src), str(out), det, BlurConfig(), options, workdir=str(work))
    assert not out.exists() and not os.listdir(work) and not os.listdir(out.parent)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_truncated_junk_empty_and_zero_frame_fail(tmp_path, clip, no_faces):
    data = clip[0].read_bytes()
    cases = {
        "truncated.mp4": data[: len(data) // 2],
        # fixed bytes: some random draws parse as an audio format ("no video stream")
        "junk.mp4": np.random.default_rng(0).bytes(4096),
        "empty.mp4": b"",
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        assert "cannot open video" in _fails(tmp_path / name, tmp_path, no_faces)
    # a video track without frames beside an audio track (an mp4 drops an empty track)
    zero = tmp_path / "zero.mkv"
    with av.open(str(zero), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=8000)
        audio.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 8000, 0
        for p in audio.encode(frame):
            out.mux(p)
    assert _fails(zero, tmp_path, no_faces) == "video has no frames"
    audio_only = tmp_path / "audio.mp4"
    with av.open(str(audio_only), "w") as out:
        out.add_stream("aac", rate=48000)
        out.start_encoding()
    assert _fails(audio_only, tmp_path, no_faces) == "no video stream"


def test_mid_stream_decode_error_fails(tmp_path, astronaut, no_faces):
    src = tmp_path / "corrupt.mp4"
    make_clip(src, astronaut, frames=20, audio=None, bframes=0)
    data = bytearray(src.read_bytes())
    pos, size = _packet_span(src, 13)
    data[pos + 4 : pos + size] = (
        np.random.default_rng(1).integers(0, 255, size - 4, np.uint8).tobytes()
    )
    src.write_bytes(bytes(data))
    assert _fails(src, tmp_path, no_faces).startswith("video decode error: InvalidDataError")


def test_limits(tmp_path, clip, no_faces):
    src = clip[0]
    assert "--max-pixels 1000" in _fails(src, tmp_path, no_faces, VideoOptions(max_pixels=1000))
    assert "--max-frames 10" in _fails(src, tmp_path, no_faces, VideoOptions(max_frames=10))


def test_detector_failure_writes_nothing(tmp_path, clip, no_faces):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="detector failed"):
        anonymize_video(
            str(clip[0]),
            str(out),
            CodedDetector(no_faces, fail_on=25),
            BlurConfig(),
            VideoOptions(0.3, 4),
        )
    assert not out.exists()


def test_missing_extra_is_one_line(monkeypatch):
    from blurbeam import extras

    monkeypatch.setattr(extras, "installed", lambda module: module != "av")
    with pytest.raises(
        extras.MissingExtra, match=r"^video input needs PyAV: pip install 'blurbeam\[video\]'$"
    ):
        media.load_av()


# ---------------------------------------------------------------- the benchmark's scoring


def test_bench_video_scoring():
    from benchload import load_bench

    ev = load_bench("video_eval")
    # face 1: covered, missed 3 frames in a row, covered, missed once; face 2 always covered
    states = [True, False, False, False, True, False]
    covered = {(i, 1): s for i, s in enumerate(states)}
    covered.update({(i, 2): True for i in range(6)})
    got = ev.score(covered, 6)
    assert got["face_frames"] == 12 and got["missed"] == 4
    assert got["recall"] == pytest.approx(8 / 12)
    assert got["longest_miss_run_max"] == 3
    assert ev.counted([1, 620, 0, 30, 20, 0], 640, 360, 10)  # 2/3 inside the frame
    assert not ev.counted([1, 630, 0, 30, 20, 0], 640, 360, 10)  # 1/3 inside
    assert not ev.counted([1, 10, 10, 9, 8, 0], 640, 360, 10)  # too small
    assert not ev.counted([1, 10, 10, 30, 30, 1], 640, 360, 10)  # invalid


def test_link_tracks_keeps_a_track_id_across_a_cut():
    from blurbeam.video.process import FrameBoxes, SegmentResult, link_tracks
    from blurbeam.video.tracking import TrackedBox

    def box(x: float, track: int) -> TrackedBox:
        return TrackedBox(x, 10.0, 40.0, 40.0, 0.9, DETECTED, track)

    def segment(i: int, frames: list[tuple[int, list[TrackedBox]]]) -> SegmentResult:
        seg = media.Segment(i, frames[0][0], frames[-1][0] + 1, 0, 0)
        return SegmentResult(seg, "", tuple(FrameBoxes(k, k, tuple(b)) for k, b in frames), 0)

    a = segment(0, [(0, [box(0, 0)]), (1, [box(4, 0), box(200, 1)])])
    b = segment(1, [(2, [box(8, 10), box(400, 11)]), (3, [box(12, 10)])])
    c = segment(2, [(4, [box(16, 20)])])
    frames = link_tracks([a, b, c])
    assert [[x.track_id for x in f.boxes] for f in frames] == [[0], [0, 1], [0, 11], [0], [0]]
    assert [[x.x for x in f.boxes] for f in frames] == [[0], [4, 200], [8, 400], [12], [16]]


def test_frame_rgb_and_rgb_frame_convert_like_ffmpeg_and_round_trip(astronaut):
    """Limited-range 4:2:0 frames go through OpenCV (the matrix FFmpeg's scaler uses: within a
    few levels of it), and an untouched picture survives RGB -> YUV -> RGB; other formats (full
    range, odd sides, 4:4:4) are FFmpeg's conversion exactly."""
    img = np.ascontiguousarray(cv2.resize(astronaut, (96, 64)))
    frame = media.rgb_frame(av, img, "yuv420p")
    assert frame.format.name == "yuv420p"
    ours, ffmpegs = media.frame_rgb(frame), frame.to_ndarray(format="rgb24")
    assert np.abs(ours.astype(int) - ffmpegs).max() <= 4
    again = media.frame_rgb(media.rgb_frame(av, ours, "yuv420p"))
    assert np.abs(again.astype(int) - ours).mean() < 0.1
    full = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    full.color_range = 2  # JPEG range: FFmpeg's
    others = [
        full,
        av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj420p"),
        av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv444p"),
        av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:63, :95]), format="rgb24").reformat(
            format="yuv420p"
        ),
    ]
    for f in others:
        np.testing.assert_array_equal(media.frame_rgb(f), f.to_ndarray(format="rgb24"))
    assert media.rgb_frame(av, img, "yuv444p").format.name == "rgb24"
    assert media.rgb_frame(av, np.ascontiguousarray(img[:63]), "yuv420p").format.name == "rgb24"

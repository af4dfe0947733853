"""Anonymize one video: detect, track, blur and re-encode each segment, then join. Pure code.

A segment is processed in two passes over its frames, so that memory holds one frame at a time:

1. ``detect_segment``: decode the segment's frames plus its context (``Segment.context_*``),
   turn each upright (display-matrix rotation applied) and detect faces; with
   ``detect_every`` k > 1 only every k-th frame of the video is searched.
2. ``track_segment`` links the detections into add-only tracks over the context window
   (``blurbeam.video.tracking``) and keeps the segment's own frames.
3. ``write_segment``: decode the segment's frames again, blur each one's boxes upright with
   ``blurbeam.blur.anonymize``, turn it back and encode it (``media.SegmentWriter``).

Segments are independent, so different workers can run them: ``plan_video`` probes a video and
cuts it, ``process_segment`` runs both passes over one segment, and ``join_video`` joins every
segment's file into the output once all of them succeeded. ``anonymize_video`` runs the three in
one process. Temporary files live in a temporary directory (never under the output); the
output is written only after every segment succeeded and the joined file was checked to hold
exactly the source's frames, with the source's timestamps.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blurbeam.blur import BlurConfig, anonymize
from blurbeam.detectors import Detector, Face, detect_image
from blurbeam.geometry import iou
from blurbeam.shards.files import DEFAULT_SEGMENT_SECONDS
from blurbeam.video import media
from blurbeam.video.media import EncodeSettings, Segment, VideoError, VideoInfo
from blurbeam.video.tracking import TrackConfig, TrackedBox, track

#: Track ids of segment ``i`` start at ``i * TRACK_ID_STRIDE`` (unique within a video).
TRACK_ID_STRIDE = 1_000_000


@dataclass(frozen=True)
class VideoOptions:
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    overlap: int = 10  # context frames before and after a segment for tracking across cuts
    detect_every: int = 1  # search every k-th frame only
    tracking: TrackConfig | None = field(default_factory=TrackConfig)  # None: per-frame only
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    max_pixels: int = media.DEFAULT_MAX_PIXELS
    max_frames: int = media.DEFAULT_MAX_FRAMES
    keep_metadata: bool = False
    keep_gps: bool = False

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError("detect_every must be at least 1")
        if self.detect_every > 1 and self.tracking is None:
            raise ValueError("detect_every > 1 needs tracking: the frames between stay unblurred")
        if self.overlap < 0:
            raise ValueError("overlap must not be negative")

    @property
    def track_config(self) -> TrackConfig | None:
        """``tracking`` as the run applies it: with detection on every k-th frame, a track of
        a single detection is held over the k - 1 unsearched frames either side of it."""
        if self.tracking is None or self.detect_every == 1:
            return self.tracking
        lone_hold = max(self.tracking.lone_hold, self.detect_every - 1)
        return dataclasses.replace(self.tracking, lone_hold=lone_hold)


@dataclass(frozen=True)
class FrameBoxes:
    """One frame's final boxes, in upright (displayed) pixel coordinates."""

    index: int
    pts: int
    boxes: tuple[TrackedBox, ...]


@dataclass(frozen=True)
class SegmentResult:
    segment: Segment
    path: str
    frames: tuple[FrameBoxes, ...]
    detections: int  # detected faces in the segment's own frames


@dataclass(frozen=True)
class VideoResult:
    info: VideoInfo
    frames: tuple[FrameBoxes, ...]
    detections: int
    tracks: int
    segments: int
    join: media.JoinResult
    encode: EncodeSettings
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The per-video figures an audit record holds."""
        width, height = self.info.upright_size
        return {
            "frames": self.info.frame_count,
            "duration_s": self.info.duration,
            "width": width,
            "height": height,
            "rotation": self.info.rotation,
            "codec_in": self.info.codec,
            "codec_out": self.join.codec,
            "encode": self.encode.as_dict(),
            "audio_streams": self.join.audio_streams,
            "dropped_streams": list(self.join.dropped_streams),
            "segments": self.segments,
            "faces_detected": self.detections,
            "face_boxes": sum(len(f.boxes) for f in self.frames),
            "tracks": self.tracks,
            "frames_with_faces": sum(1 for f in self.frames if f.boxes),
        }


def _searched(index: int, options: VideoOptions) -> bool:
    return index % options.detect_every == 0


def detect_segment(
    source: str, info: VideoInfo, segment: Segment, detector: Detector, options: VideoOptions
) -> list[list[Face]]:
    """Faces in each frame of ``[context_start, context_stop)`` (upright coordinates)."""
    out: list[list[Face]] = []
    for index, frame in media.iter_frames(
        source, info, segment.context_start, segment.context_stop
    ):
        if _searched(index, options):
            rgb = media.upright(media.frame_rgb(frame), info.rotation)
            out.append(detect_image(detector, rgb))
        else:
            out.append([])
    return out


def track_segment(
    info: VideoInfo, segment: Segment, detections: Sequence[Sequence[Face]], options: VideoOptions
) -> tuple[FrameBoxes, ...]:
    """The segment's own frames with their final boxes."""
    boxes = track(detections, options.track_config, id_offset=segment.index * TRACK_ID_STRIDE)
    first = segment.start - segment.context_start
    return tuple(
        FrameBoxes(i, info.frame_pts[i], tuple(boxes[first + k]))
        for k, i in enumerate(range(segment.start, segment.stop))
    )


def write_segment(
    source: str,
    info: VideoInfo,
    segment: Segment,
    frames: Sequence[FrameBoxes],
    blur: BlurConfig,
    dest: str,
    encode: EncodeSettings,
) -> None:
    """Blur and encode the segment's frames into ``dest`` (a NUT file)."""
    by_index = {f.index: f for f in frames}
    with media.SegmentWriter(dest, info, encode) as writer:
        for index, frame in media.iter_frames(source, info, segment.start, segment.stop):
            rgb = media.frame_rgb(frame)
            boxes = [(b.x, b.y, b.w, b.h) for b in by_index[index].boxes]
            if boxes:
                upright = media.upright(rgb, info.rotation)
                rgb = media.stored(anonymize(upright, boxes, blur), info.rotation)
            writer.write(index, rgb)
    if writer.frames != segment.stop - segment.start:
        raise VideoError(f"segment {segment.index} encoded {writer.frames} frames")


def process_segment(
    source: str,
    info: VideoInfo,
    segment: Segment,
    detector: Detector,
    blur: BlurConfig,
    dest: str,
    options: VideoOptions,
) -> SegmentResult:
    """Both passes over one segment; ``dest`` is the encoded segment (outside the output)."""
    detections = detect_segment(source, info, segment, detector, options)
    frames = track_segment(info, segment, detections, options)
    write_segment(source, info, segment, frames, blur, dest, options.encode)
    first = segment.start - segment.context_start
    own = detections[first : first + segment.stop - segment.start]
    return SegmentResult(segment, dest, frames, sum(len(f) for f in own))


def check_output(path: str, info: VideoInfo, options: VideoOptions) -> VideoInfo:
    """Probe the written file: it must decode and hold the source's frames and timestamps."""
    out = media.probe(path, max_pixels=options.max_pixels, max_frames=options.max_frames)
    if out.frame_count != info.frame_count:
        raise VideoError(f"output has {out.frame_count} frames, source {info.frame_count}")
    src_times = [info.seconds(p) for p in info.frame_pts]
    out_times = [out.seconds(p) for p in out.frame_pts]
    tolerance = float(max(out.time_base, info.time_base))
    if any(abs(a - b) > tolerance for a, b in zip(src_times, out_times, strict=True)):
        raise VideoError("output frame timestamps differ from the source's")
    if (out.width, out.height, out.rotation) != (info.width, info.height, info.rotation):
        raise VideoError("output frame size or rotation differs from the source's")
    return out


def for_container(options: VideoOptions, muxer: str) -> VideoOptions:
    """``options`` with the encoder the output container ``muxer`` can hold."""
    return dataclasses.replace(options, encode=media.encoder_for(muxer, options.encode))


def plan_video(source: str, options: VideoOptions) -> tuple[VideoInfo, list[Segment]]:
    """Probe ``source`` (its limits checked) and cut it into segments at keyframes."""
    info = media.probe(source, max_pixels=options.max_pixels, max_frames=options.max_frames)
    return info, media.plan_segments(info, options.segment_seconds, options.overlap)


#: IoU above which a box in the first frame of a segment continues a track of the frame before.
LINK_IOU = 0.3


def link_tracks(results: Sequence[SegmentResult]) -> tuple[FrameBoxes, ...]:
    """Every frame of the segments ``results`` (in order), with a track that goes on across
    a cut keeping the id it had before the cut: each box of a segment's first frame takes the
    track id of the box it overlaps most (IoU >= ``LINK_IOU``, each box once) in the previous
    segment's last frame. Boxes are not changed, only their ids."""
    same: dict[int, int] = {}  # a later segment's track id -> the id it continues
    for before, after in zip(results[:-1], results[1:], strict=True):
        if not before.frames or not after.frames:
            continue
        last, first = before.frames[-1], after.frames[0]
        if first.index != last.index + 1:
            continue
        free = list(last.boxes)
        for box in sorted(first.boxes, key=lambda b: -b.w * b.h):
            scores = [iou((a.x, a.y, a.w, a.h), (box.x, box.y, box.w, box.h)) for a in free]
            if scores and max(scores) >= LINK_IOU:
                match = free.pop(scores.index(max(scores)))
                same[box.track_id] = same.get(match.track_id, match.track_id)
    return tuple(
        dataclasses.replace(
            f,
            boxes=tuple(
                dataclasses.replace(b, track_id=same.get(b.track_id, b.track_id)) for b in f.boxes
            ),
        )
        for r in results
        for f in r.frames
    )


def join_video(
    source: str,
    info: VideoInfo,
    results: Sequence[SegmentResult],
    dest: str,
    muxer: str,
    options: VideoOptions,
    workdir: str | None = None,
) -> VideoResult:
    """Join every processed segment of ``source`` (``results``, in any order; their files
    local) into ``dest`` (a local path) as container ``muxer``, check the joined file against
    the source, then move it to ``dest``. ``options`` are those the segments were processed
    with (``for_container``). Raises :class:`VideoError` and leaves ``dest`` untouched on any
    failure. ``seconds`` of the result is 0: the caller times the whole."""
    results = sorted(results, key=lambda r: r.segment.index)
    with tempfile.TemporaryDirectory(prefix="blurbeam-join-", dir=workdir) as tmp:
        joined = os.path.join(tmp, "joined" + os.path.splitext(dest)[1])
        join = media.join(
            source,
            info,
            [r.path for r in results],
            joined,
            muxer,
            keep_metadata=options.keep_metadata,
            keep_gps=options.keep_gps,
        )
        check_output(joined, info, options)
        shutil.move(joined, dest)
    frames = link_tracks(results)
    tracks = {b.track_id for f in frames for b in f.boxes}
    return VideoResult(
        info=info,
        frames=frames,
        detections=sum(r.detections for r in results),
        tracks=len(tracks),
        segments=len(results),
        join=join,
        encode=options.encode,
        seconds=0.0,
    )


def anonymize_video(
    source: str,
    dest: str,
    detector: Detector,
    blur: BlurConfig,
    options: VideoOptions | None = None,
    workdir: str | None = None,
    muxer: str | None = None,
) -> VideoResult:
    """Anonymize ``source`` into ``dest`` (local paths; the container is ``muxer``, an FFmpeg
    muxer name, by default the one ``dest``'s extension names), every segment in this
    process. Raises :class:`VideoError` and leaves ``dest`` untouched on any failure."""
    started = time.perf_counter()
    muxer = muxer or media.muxer_for(dest)
    options = for_container(options or VideoOptions(), muxer)
    info, segments = plan_video(source, options)
    with tempfile.TemporaryDirectory(prefix="blurbeam-video-", dir=workdir) as tmp:
        results = [
            process_segment(
                source,
                info,
                seg,
                detector,
                blur,
                os.path.join(tmp, f"segment-{seg.index:05d}.nut"),
                options,
            )
            for seg in segments
        ]
        result = join_video(source, info, results, dest, muxer, options, workdir=tmp)
    return dataclasses.replace(result, seconds=time.perf_counter() - started)

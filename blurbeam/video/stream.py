"""Real-time anonymization of a live video source, with bounded latency. Pure code, no Beam.

Three threads share the frames:

- the **source** decodes frames and releases each at its timestamp (a file source is paced at
  its own frame rate, as a camera would deliver it); a frame's arrival time is when it was due;
- the **detector** always takes the newest frame that has arrived and detects faces in it, so
  when detection is slower than the frame rate it skips frames instead of falling behind;
- the **output** (the calling thread) takes every frame in order and writes it at most
  ``latency_s`` after its arrival, blurred with the boxes known by then:

  - the frame's own detection, when the detector reached it;
  - else, with ``policy="reuse"``, the boxes of the nearest detected frames before and after it
    (within ``max_age`` frames), each enlarged by ``grow`` per frame of distance, up to
    ``max_grow``; and each face moved along the line through two neighbouring detected frames
    (the two before it, the one before and the one after, the two after it), each box paired
    with the nearest box of a similar size, enlarged as much. With the anonymizer's mask scale
    m (1.6) a face that moves up to about m * grow / 2 of its box's width per frame stays
    covered by the enlarged boxes alone (the defaults: 0.16 widths a frame, 5 widths a second
    at 30 fps), and a face moving at a steady speed by the moved boxes; a face that turns or
    jumps beyond that, or one that enters the picture after the last detection, is not:
    ``policy="black"`` is the one that covers every case;
  - else the frame is **blacked out**: with ``policy="black"`` every frame without its own
    detection is, and with ``"reuse"`` a frame with no detection within ``max_age`` frames
    (before the first detection, or when the detector stalls or fails).

  A frame that could not be started before its deadline (the output fell behind) is dropped,
  never written late. No frame is written without passing through the blur or the black-out.

The output holds the written frames with their source timestamps (a dropped frame leaves a gap),
video only: audio is not copied in stream mode.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from blurbeam.blur import BlurConfig, anonymize
from blurbeam.detectors import Detector, detect_image
from blurbeam.errors import one_line
from blurbeam.geometry import centre, scale_box
from blurbeam.video import media
from blurbeam.video.media import EncodeSettings, VideoError

POLICIES = ("reuse", "black")


@dataclass(frozen=True)
class StreamConfig:
    latency_s: float = 0.5  # a frame is written at most this long after it arrived
    policy: str = "reuse"
    max_age: int = 10  # frames a detection may be reused for, before and after its frame
    grow: float = 0.2  # enlargement of a reused box per frame of distance (module doc)
    max_grow: float = 3.0  # cap of that enlargement (a factor): reached at max_age
    realtime: bool = True  # pace the source at its timestamps (False: as fast as it decodes)
    max_pixels: int = media.DEFAULT_MAX_PIXELS
    #: FFmpeg's input format of the source (``v4l2`` for a camera device); None: from its bytes
    source_format: str | None = None
    encode: EncodeSettings = field(
        default_factory=lambda: EncodeSettings(preset="ultrafast", crf=23)
    )

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        if self.latency_s <= 0:
            raise ValueError("latency must be positive")


@dataclass
class StreamStats:
    frames_in: int = 0
    written: int = 0
    dropped: int = 0  # not written: the output could not start them before their deadline
    fresh: int = 0  # written with their own detection
    reused: int = 0  # written with the boxes of neighbouring detections
    blacked: int = 0  # written black
    detections: int = 0  # frames the detector searched
    latencies_s: list[float] = field(default_factory=list)  # written frames: write - arrival
    error: str | None = None  # why the stream stopped early (the detector or the source)

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        return float(np.percentile(self.latencies_s, q) * 1000.0)

    def summary(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "written": self.written,
            "dropped": self.dropped,
            "fresh": self.fresh,
            "reused": self.reused,
            "blacked": self.blacked,
            "detections": self.detections,
            "latency_p50_ms": self.percentile_ms(50),
            "latency_p95_ms": self.percentile_ms(95),
            "latency_max_ms": self.percentile_ms(100),
            "error": self.error,
        }


@dataclass(frozen=True)
class _Frame:
    index: int
    pts: int
    arrival: float
    rgb: np.ndarray  # upright


class _Shared:
    """What the threads share, under one condition variable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queue: collections.deque[_Frame] = collections.deque()
        self.newest: _Frame | None = None  # for the detector
        self.boxes: dict[int, list[tuple[float, float, float, float]]] = {}
        self.searched = -1  # the highest frame index the detector finished
        self.searches = 0  # frames the detector searched
        self.source_done = False
        self.detector_done = False
        self.stop = False
        self.error: str | None = None


def boxes_for(
    index: int, boxes: dict[int, list], config: StreamConfig
) -> tuple[str, list[tuple[float, ...]]]:
    """(``fresh`` | ``reused`` | ``black``, boxes) of frame ``index`` from the detections known
    (frame index -> boxes): its own; or, with the ``reuse`` policy, those of the nearest
    detected frame before and after it within ``max_age``, enlarged, and where the lines
    through neighbouring detections put each face (module doc); else black."""
    if index in boxes:
        return "fresh", list(boxes[index])
    if config.policy == "black":
        return "black", []
    before = [k for k in boxes if index - config.max_age <= k < index]
    after = [k for k in boxes if index < k <= index + config.max_age]
    near = ([max(before)] if before else []) + ([min(after)] if after else [])
    if not near:
        return "black", []
    out = []
    for k in near:
        factor = min(config.max_grow, 1.0 + config.grow * abs(index - k))
        out += [scale_box(*b, factor) for b in boxes[k]]
    # a face moving at a steady speed: the line through two neighbouring detections puts it
    # at frame ``index``: the last two before it (ahead of them), the last before and the first
    # after (between them), the first two after it (behind them)
    sides = sorted(before)[-2:] + sorted(after)[:2]
    for k1, k2 in zip(sides, sides[1:], strict=False):
        factor = min(config.max_grow, 1.0 + config.grow * min(abs(index - k1), abs(index - k2)))
        u = (index - k1) / (k2 - k1)
        for a, b in _pairs(boxes[k1], boxes[k2]):
            box = tuple(p + (q - p) * u for p, q in zip(a, b, strict=True))
            out.append(scale_box(*box, factor))
    return "reused", out


def _pairs(first: list, second: list) -> list[tuple[tuple, tuple]]:
    """Each box of ``first`` with the box of ``second`` of a similar size (within 2x) whose
    centre is nearest to its own, if any. A wrong pairing only adds a box."""
    out = []
    for a in first:
        size, (ax, ay) = max(a[2], a[3]), centre(a)
        similar = [b for b in second if 0.5 * size <= max(b[2], b[3]) <= 2.0 * size]
        if similar:
            dist = [(bx - ax) ** 2 + (by - ay) ** 2 for bx, by in map(centre, similar)]
            out.append((a, similar[dist.index(min(dist))]))
    return out


def _source(
    path: str, shared: _Shared, config: StreamConfig, clock: Callable[[], float]
) -> tuple[int, Any, Any]:
    """Open ``path``; return (rotation, stream time base, a function that runs the source
    thread's loop)."""
    av = media.load_av()
    kwargs = {"format": config.source_format} if config.source_format else {}
    container = media._open(av, path, **kwargs)
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    stream = media._strict_decoder(container.streams.video[0])
    ctx = stream.codec_context
    if int(ctx.width or 0) * int(ctx.height or 0) > config.max_pixels:
        container.close()
        raise VideoError(f"video frame too large: exceeds --max-pixels {config.max_pixels}")
    try:
        frames = container.decode(stream)
        first = next(frames)
    except (StopIteration, av.error.FFmpegError) as exc:
        container.close()
        raise VideoError(f"cannot decode video: {one_line(exc)}") from None
    rotation = media._rotation(first)
    time_base = stream.time_base

    def run() -> None:
        start = clock()
        pts0 = first.pts or 0
        index = 0
        try:
            frame = first
            while not shared.stop:
                due = start + float((frame.pts - pts0) * time_base) if config.realtime else clock()
                rgb = media.upright(media.frame_rgb(frame), rotation)
                wait = due - clock()
                if wait > 0:
                    time.sleep(wait)
                item = _Frame(index, frame.pts, due, rgb)
                with shared.cond:
                    shared.queue.append(item)
                    shared.newest = item
                    shared.cond.notify_all()
                index += 1
                frame = next(frames, None)
                if frame is None:
                    break
                if frame.is_corrupt:
                    raise VideoError(f"frame {index} is corrupt")
        except (VideoError, av.error.FFmpegError) as exc:
            with shared.cond:
                shared.error = shared.error or f"source: {one_line(exc, with_type=False)}"
        finally:
            container.close()
            with shared.cond:
                shared.source_done = True
                shared.cond.notify_all()

    return rotation, time_base, run


def _detector_loop(shared: _Shared, detector: Detector) -> None:
    """Detect in the newest frame, again and again, until the source is done."""
    try:
        while True:
            with shared.cond:
                shared.cond.wait_for(lambda: shared.newest is not None or shared.source_done)
                item, shared.newest = shared.newest, None
                if item is None:
                    return
            faces = detect_image(detector, item.rgb)
            with shared.cond:
                shared.boxes[item.index] = [(f.x, f.y, f.w, f.h) for f in faces]
                shared.searched = item.index
                shared.searches += 1
                shared.cond.notify_all()
    except Exception as exc:  # the output blacks out every frame it has no boxes for
        with shared.cond:
            shared.error = shared.error or f"detector: {one_line(exc)}"
            shared.stop = True
    finally:
        with shared.cond:
            shared.detector_done = True
            shared.cond.notify_all()


#: ``--output`` that writes the stream to standard output, as ``STDOUT_MUXER``
STDOUT = "-"
#: Matroska: a container FFmpeg writes to a pipe (no seeking back), H.264 and rotation kept
STDOUT_MUXER = "matroska"


class _Writer:
    """The output: the upright frames turned back and encoded with their timestamps, into a
    file (its container from its extension) or a binary file object (``STDOUT_MUXER``)."""

    def __init__(
        self,
        target: str | BinaryIO,
        first: np.ndarray,
        rotation: int,
        time_base: Any,
        settings: EncodeSettings,
    ) -> None:
        av = media.load_av()
        self._av = av
        self.rotation = rotation
        muxer = media.muxer_for(target) if isinstance(target, str) else STDOUT_MUXER
        settings = media.encoder_for(muxer, settings)
        self.container = media._open(av, target, "w", format=muxer)
        stream = self.container.add_stream(settings.codec)
        h, w = media.stored(first, rotation).shape[:2]
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.codec_context.max_b_frames = 0
        opts = settings.options()
        if settings.codec == "libx264":
            opts["tune"] = "zerolatency"
        stream.options = opts
        if rotation:
            stream.set_display_rotation(rotation)
        self.stream = stream
        # the source's: a muxer may change the stream's own (Matroska's is 1/1000) once it
        # writes its header, after the first frame
        self.time_base = time_base

    def write(self, rgb: np.ndarray, pts: int) -> None:
        frame = media.rgb_frame(self._av, media.stored(rgb, self.rotation), self.stream.pix_fmt)
        frame.pts, frame.time_base = pts, self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()


def run_stream(
    source: str,
    dest: str,
    detector: Detector,
    blur: BlurConfig,
    config: StreamConfig | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> StreamStats:
    """Anonymize ``source`` (a file, a URL FFmpeg reads, or a device with
    ``config.source_format``) into ``dest`` as a live stream (module doc). ``dest`` is a local
    path, written under a temporary name and renamed when the stream ends (the container
    follows its extension), or ``STDOUT``: Matroska on standard output as the frames come.
    Raises :class:`VideoError` when the source cannot be opened; a source or detector failure
    later stops the stream with what was written so far (every frame of it blurred or black)
    and ``StreamStats.error`` set."""
    config = config or StreamConfig()
    to_stdout = dest == STDOUT
    if not to_stdout:
        media.muxer_for(dest)  # an unknown extension fails before anything runs
    shared = _Shared()
    rotation, time_base, source_loop = _source(source, shared, config, clock)
    stats = StreamStats()
    reader = threading.Thread(target=source_loop, name="blurbeam-stream-source", daemon=True)
    searcher = threading.Thread(
        target=_detector_loop, args=(shared, detector), name="blurbeam-stream-detect", daemon=True
    )
    reader.start()
    searcher.start()
    writer: _Writer | None = None
    tmp = f"{dest}.{os.getpid()}.partial{os.path.splitext(dest)[1]}"
    work_s = 0.02  # a moving average of the time to blur and write a frame
    try:
        while True:
            with shared.cond:
                shared.cond.wait_for(lambda: shared.queue or shared.source_done)
                if not shared.queue:
                    break
                item = shared.queue.popleft()
            stats.frames_in += 1
            deadline = item.arrival + config.latency_s
            with shared.cond:  # until its boxes are known (its own, or a later frame searched)
                shared.cond.wait_for(  # or there is just time left to write it
                    lambda i=item.index: (
                        i in shared.boxes or shared.searched > i or shared.detector_done
                    ),
                    timeout=max(0.0, deadline - work_s - clock()),
                )
                kind, boxes = boxes_for(item.index, shared.boxes, config)
                for k in [k for k in shared.boxes if k < item.index - config.max_age]:
                    del shared.boxes[k]
            started = clock()
            if started + work_s > deadline:
                stats.dropped += 1
                continue
            if kind == "black":
                out = np.zeros_like(item.rgb)
            elif boxes:
                out = anonymize(item.rgb, [tuple(b) for b in boxes], blur)
            else:
                out = item.rgb  # a detection found no face in this or the nearby frames
            if writer is None:
                target = sys.stdout.buffer if to_stdout else tmp
                writer = _Writer(target, item.rgb, rotation, time_base, config.encode)
            writer.write(out, item.pts)
            done = clock()
            work_s = 0.8 * work_s + 0.2 * (done - started)
            stats.latencies_s.append(done - item.arrival)
            stats.written += 1
            counter = {"fresh": "fresh", "reused": "reused", "black": "blacked"}[kind]
            setattr(stats, counter, getattr(stats, counter) + 1)
        if writer is not None:
            writer.close()
            writer = None
            if to_stdout:
                sys.stdout.buffer.flush()
            else:
                os.replace(tmp, dest)
        elif shared.error is None:
            shared.error = "no frame was written"
    finally:
        with shared.cond:
            shared.stop = True
            shared.cond.notify_all()
        reader.join()
        searcher.join()
        if writer is not None:  # stopped by an exception: no file is published
            try:
                writer.container.close()
            finally:
                if not to_stdout:  # what went out on stdout is blurred or black already
                    os.unlink(tmp)
    stats.error = shared.error
    stats.detections = shared.searches
    if stats.written == 0:
        raise VideoError(stats.error or "no frame was written")
    return stats

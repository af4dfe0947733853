"""Video containers with PyAV: probe, segment plan, decoding, segment encoding and the final join.

Pure code, no Beam. Every failure is a :class:`VideoError` with a one-line reason; a caller turns
it into an error record and writes nothing.

- ``probe`` demuxes every video packet without decoding (timestamps, durations, keyframes) and
  decodes the first frame (the codec works; the display-matrix rotation).
- ``plan_segments`` cuts the frames at keyframes into segments of about N seconds, each with a
  few frames of context before and after for tracking across the cut.
- ``iter_frames`` decodes a run of frames (by frame index, presentation order) from the keyframe
  at or before it, with the decoder set to fail on bitstream errors instead of concealing
  them; it fails when a frame is corrupt, missing, resized, or not one the probe found.
- ``frame_rgb`` and ``rgb_frame`` convert between decoded frames and RGB arrays: 8-bit 4:2:0
  frames of limited range with OpenCV (BT.601 either way, several times faster than FFmpeg's
  scaler and nearly lossless over a round trip), any other format with FFmpeg.
- ``SegmentWriter`` encodes one segment (H.264; VP9 for WebM, MPEG-4 Part 2 for AVI) with each
  frame's source timestamp into a NUT file; ``join`` checks that every timestamp maps back
  exactly to a source frame. B-frames are off, so every packet's decoding timestamp is its
  presentation timestamp and segments join in order.
- ``join`` remuxes the segments' packets (stream copy), in order, with the source's frame
  durations and rotation, plus the source's audio packets copied bit-exact, into the output
  container. Subtitle, data and attachment streams and any further video stream are dropped;
  container and stream metadata are dropped unless allow-listed keys are asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import cv2
import numpy as np

from blurbeam.shards.files import DEFAULT_MAX_FRAMES, VIDEO_MUXERS
from blurbeam.task import one_line

#: Output container (FFmpeg muxer name) per input file extension.
MUXERS = VIDEO_MUXERS
VIDEO_EXTENSIONS = tuple(MUXERS)

#: Encoder per output muxer: H.264 where it is stored with timestamps, VP9 in WebM (which holds
#: only VP8/VP9/AV1), MPEG-4 Part 2 in AVI (AVI stores no presentation timestamps, and its
#: demuxer gives H.264 frames a reorder delay that shifts them by one frame).
ENCODERS = {"webm": "libvpx-vp9", "avi": "mpeg4"}
DEFAULT_ENCODER = "libx264"

#: Container metadata keys ``join(keep_metadata=True)`` copies. Location keys never pass
#: unless ``keep_gps``.
METADATA_KEYS = (
    "creation_time",
    "date",
    "make",
    "model",
    "com.apple.quicktime.make",
    "com.apple.quicktime.model",
    "com.apple.quicktime.software",
    "com.apple.quicktime.creationdate",
)
LOCATION_KEYS = ("location", "location-eng", "com.apple.quicktime.location.ISO6709")

DEFAULT_MAX_PIXELS = 100_000_000


class VideoError(ValueError):
    """A video that cannot be anonymized; the message is one line."""

    def __init__(self, reason: str | BaseException) -> None:
        super().__init__(one_line(reason))


def load_av() -> Any:
    """The ``av`` module, or a one-line :class:`MissingExtra` naming the extra."""
    try:
        from blurbeam.extras import require
    except ImportError:  # pragma: no cover - extras.py is part of the package
        require = None
    if require is not None:
        require("av", "video", "video input")
    import av

    return av


@dataclass(frozen=True)
class StreamInfo:
    index: int
    type: str  # video, audio, subtitle, data, attachment
    codec: str


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` found. Frame indices are in presentation order; ``frame_pts`` and
    ``frame_durations`` are in ``time_base`` units of the video stream."""

    format_name: str
    video_index: int
    codec: str
    width: int  # as stored (before rotation)
    height: int
    time_base: Fraction
    frame_pts: tuple[int, ...]
    frame_durations: tuple[int, ...]
    keyframes: tuple[int, ...]  # frame indices where decoding can start (ascending; 0 first)
    rotation: int  # counter-clockwise degrees to display upright: 0, 90, 180 or 270
    duration: float | None  # container duration in seconds, when it says
    streams: tuple[StreamInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        return len(self.frame_pts)

    def seconds(self, pts: int) -> float:
        return float(pts * self.time_base)

    @property
    def video_seconds(self) -> float:
        """From the first frame's timestamp to the end of the last frame."""
        return self.seconds(self.frame_pts[-1] + self.frame_durations[-1] - self.frame_pts[0])

    @property
    def fps(self) -> float:
        return self.frame_count / self.video_seconds if self.video_seconds > 0 else 0.0

    @property
    def audio_indices(self) -> tuple[int, ...]:
        return tuple(s.index for s in self.streams if s.type == "audio")

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) as displayed."""
        return (
            (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)
        )


def _open(av: Any, path: str, mode: str = "r", **kwargs: Any) -> Any:
    try:
        return av.open(path, mode, **kwargs)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        # ValueError: an input format FFmpeg does not have
        raise VideoError(f"cannot open video: {one_line(exc)}") from None


def _rotation(frame: Any) -> int:
    degrees = float(frame.rotation or 0)
    quarter = round(degrees / 90.0)
    if abs(degrees - 90.0 * quarter) > 0.5:
        raise VideoError(f"unsupported display rotation {degrees:g} degrees")
    return int(quarter % 4) * 90


def probe(
    path: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> VideoInfo:
    """Read ``path``'s streams and every video packet's timing; decode its first frame."""
    av = load_av()
    with _open(av, path) as container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = next(
            (s for s in container.streams.video if not s.disposition & 0x400),  # attached_pic
            None,
        )
        if stream is None:
            raise VideoError("no video stream (only cover images)")
        ctx = stream.codec_context
        if ctx is None:
            raise VideoError("no decoder for the video codec")
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise VideoError("video stream has no frame size")
        if width * height > max_pixels:
            raise VideoError(
                f"video frame too large: {width}x{height} = {width * height} pixels exceeds "
                f"--max-pixels {max_pixels}"
            )
        if stream.time_base is None:
            raise VideoError("video stream has no time base")
        timing: list[tuple[int, int, bool]] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    # the demuxer's end-of-stream marker; frames an edit list cuts (decoded
                    # as references, never shown)
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    raise VideoError("video packet without a timestamp")
                timing.append((int(pts), int(packet.duration or 0), bool(packet.is_keyframe)))
                if len(timing) > max_frames:
                    raise VideoError(f"video has more than --max-frames {max_frames} frames")
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot read video packets: {one_line(exc)}") from None
        streams = tuple(
            StreamInfo(s.index, s.type, s.codec_context.name if s.codec_context else "")
            for s in container.streams
        )
        info_meta = {str(k): str(v) for k, v in container.metadata.items()}
        duration = None if container.duration is None else container.duration / 1_000_000
        start = (container.start_time or 0) / 1_000_000
        format_name = container.format.name
        video_index = stream.index
        time_base = Fraction(stream.time_base)
        codec = ctx.name
    if not timing:
        raise VideoError("video has no frames")
    timing.sort()
    pts = tuple(t[0] for t in timing)
    if len(set(pts)) != len(pts):
        raise VideoError("video has frames with the same timestamp")
    durations = [t[1] for t in timing]
    for i in range(len(durations)):  # a missing duration: the gap to the next frame
        if durations[i] <= 0:
            durations[i] = (
                pts[i + 1] - pts[i] if i + 1 < len(pts) else (pts[i] - pts[i - 1] if i else 1)
            )
    if duration is not None:
        # the last frame lasts to the container's end, so that the output's duration is the
        # source's (B-frame sources store per-packet durations in decoding order)
        end = round(Fraction(start + duration).limit_denominator(1_000_000) / time_base)
        if end > pts[-1]:
            durations[-1] = end - pts[-1]
    # frame 0 counts as a keyframe: decoding from the start of the file reaches it
    keyframes = tuple(i for i, t in enumerate(timing) if t[2] or i == 0)
    first = decode_first(path, video_index)
    return VideoInfo(
        format_name=format_name,
        video_index=video_index,
        codec=codec,
        width=width,
        height=height,
        time_base=time_base,
        frame_pts=pts,
        frame_durations=tuple(durations),
        keyframes=keyframes,
        rotation=_rotation(first),
        duration=duration,
        streams=streams,
        metadata=info_meta,
    )


def _strict_decoder(stream: Any) -> Any:
    """``stream`` set to fail on a bitstream error instead of concealing it."""
    stream.codec_context.options = {"err_detect": "explode"}
    stream.thread_type = "AUTO"
    return stream


def decode_first(path: str, video_index: int) -> Any:
    """The first decoded frame of stream ``video_index``."""
    av = load_av()
    with _open(av, path) as container:
        stream = _strict_decoder(container.streams[video_index])
        try:
            for frame in container.decode(stream):
                return frame
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode video: {one_line(exc)}") from None
    raise VideoError("no video frame decodes")


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, stop)`` are this segment's own (``start`` is a keyframe); tracking reads
    ``[context_start, context_stop)`` around them."""

    index: int
    start: int
    stop: int
    context_start: int
    context_stop: int


def plan_segments(info: VideoInfo, seconds: float = 10.0, overlap: int = 10) -> list[Segment]:
    """Cut the video at keyframes into segments of at least ``seconds`` (the last may be
    shorter; a video with no keyframe after its first is one segment)."""
    if seconds <= 0:
        raise ValueError("segment length must be positive")
    starts = [0]
    for k in info.keyframes[1:]:
        if info.seconds(info.frame_pts[k] - info.frame_pts[starts[-1]]) >= seconds:
            starts.append(k)
    n = info.frame_count
    bounds = list(zip(starts, starts[1:] + [n], strict=True))
    return [
        Segment(i, a, b, max(0, a - overlap), min(n, b + overlap))
        for i, (a, b) in enumerate(bounds)
    ]


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as displayed (``rotation``: counter-clockwise degrees)."""
    return np.ascontiguousarray(np.rot90(rgb, k=rotation // 90)) if rotation else rgb


def stored(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Inverse of ``upright``."""
    return np.ascontiguousarray(np.rot90(rgb, k=-(rotation // 90))) if rotation else rgb


#: ``VideoFrame.color_range`` of full-range (JPEG) video, which ``frame_rgb`` leaves to FFmpeg.
_FULL_RANGE = 2


def frame_rgb(frame: Any) -> np.ndarray:
    """A decoded ``VideoFrame`` as an (H, W, 3) uint8 RGB array, as stored (not turned upright).

    Limited-range 8-bit 4:2:0 (``yuv420p``, even sides; most H.264/HEVC/VP9 video) is converted
    by OpenCV with BT.601 coefficients, the matrix FFmpeg's scaler applies to video that does not
    name one; ``rgb_frame`` applies its inverse, so pixels outside the blurred faces come back
    within rounding of the decoded ones. Every other format goes through FFmpeg's scaler."""
    if (
        frame.format.name == "yuv420p"
        and frame.width % 2 == 0
        and frame.height % 2 == 0
        and frame.color_range != _FULL_RANGE
    ):
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


def rgb_frame(av: Any, rgb: np.ndarray, pix_fmt: str) -> Any:
    """A new ``VideoFrame`` for an encoder of ``pix_fmt`` from an (H, W, 3) uint8 RGB array
    (the inverse of ``frame_rgb``: OpenCV's BT.601 limited range for even-sided ``yuv420p``)."""
    h, w = rgb.shape[:2]
    if pix_fmt == "yuv420p" and h % 2 == 0 and w % 2 == 0:
        yuv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def keyframe_at_or_before(info: VideoInfo, index: int) -> int:
    return max(k for k in info.keyframes if k <= index)


def iter_frames(path: str, info: VideoInfo, start: int, stop: int) -> Iterator[tuple[int, Any]]:
    """Decode frames ``[start, stop)`` (presentation order) as PyAV ``VideoFrame`` objects,
    seeking to the keyframe at or before ``start``. Raises :class:`VideoError` on a decode
    error, a corrupt frame, or a frame the probe did not find or that never comes."""
    if not 0 <= start < stop <= info.frame_count:
        raise ValueError(f"frame range [{start}, {stop}) outside 0..{info.frame_count}")
    av = load_av()
    index_of = {p: i for i, p in enumerate(info.frame_pts)}
    wanted = stop - start
    seen = 0
    key = keyframe_at_or_before(info, start)
    with _open(av, path) as container:
        stream = _strict_decoder(container.streams[info.video_index])
        try:
            if key > 0:
                container.seek(info.frame_pts[key], stream=stream, backward=True)
            for frame in container.decode(stream):
                pts = frame.pts
                i = index_of.get(pts) if pts is not None else None
                if i is None:
                    raise VideoError(f"decoded a frame with unexpected timestamp {pts}")
                if frame.is_corrupt:
                    raise VideoError(f"frame {i} is corrupt")
                if (frame.width, frame.height) != (info.width, info.height):
                    raise VideoError(
                        f"frame {i} is {frame.width}x{frame.height}, the stream "
                        f"{info.width}x{info.height}"
                    )
                if start <= i < stop:
                    yield i, frame
                    seen += 1
                    if seen == wanted:
                        return
        except av.error.FFmpegError as exc:
            raise VideoError(f"video decode error: {one_line(exc)}") from None
    raise VideoError(f"video decoded {seen} of frames {start}..{stop - 1}")


@dataclass(frozen=True)
class EncodeSettings:
    """How segments are encoded; recorded in the audit as ``as_dict()``."""

    codec: str = DEFAULT_ENCODER
    crf: int = 18  # libx264 and libvpx-vp9
    preset: str = "veryfast"  # libx264
    qscale: int = 3  # mpeg4 (AVI): the quantizer, 2 (best) to 31

    def as_dict(self) -> dict[str, Any]:
        if self.codec == "mpeg4":
            return {"codec": self.codec, "qscale": self.qscale, "bframes": 0}
        if self.codec == "libvpx-vp9":
            return {"codec": self.codec, "crf": self.crf, "bframes": 0}
        return {"codec": self.codec, "crf": self.crf, "preset": self.preset, "bframes": 0}

    def options(self) -> dict[str, str]:
        opts = {"crf": str(self.crf), "bf": "0"}
        if self.codec == "libx264":
            opts["preset"] = self.preset
        if self.codec == "libvpx-vp9":
            opts.update({"b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"})
        if self.codec == "mpeg4":  # a constant quantizer: qmin = qmax, a bit rate never reached
            q = str(self.qscale)
            opts = {"bf": "0", "qmin": q, "qmax": q, "b": "200M"}
        return opts


def encoder_for(muxer: str, settings: EncodeSettings) -> EncodeSettings:
    """``settings`` with the codec the output container can hold."""
    codec = ENCODERS.get(muxer, settings.codec)
    return dataclasses.replace(settings, codec=codec)


class SegmentWriter:
    """Encode one segment's frames (RGB, as stored) with their source timestamps into a NUT
    file. Use as a context manager; ``write`` takes frames in presentation order."""

    def __init__(self, path: str, info: VideoInfo, settings: EncodeSettings) -> None:
        av = load_av()
        self._av = av
        self.path = path
        self.info = info
        self.frames = 0
        self._container = _open(av, path, "w", format="nut")
        try:
            stream = self._container.add_stream(settings.codec)
        except (av.error.FFmpegError, ValueError) as exc:
            self._container.close()
            raise VideoError(f"no {settings.codec} encoder: {one_line(exc)}") from None
        stream.width, stream.height = info.width, info.height
        even = info.width % 2 == 0 and info.height % 2 == 0
        stream.pix_fmt = "yuv420p" if even else "yuv444p"
        stream.time_base = info.time_base
        stream.codec_context.time_base = info.time_base
        stream.codec_context.max_b_frames = 0
        stream.options = settings.options()
        self._stream = stream

    def write(self, index: int, rgb: np.ndarray) -> None:
        frame = rgb_frame(self._av, rgb, self._stream.pix_fmt)
        frame.pts = self.info.frame_pts[index]
        frame.time_base = self.info.time_base
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def _mux(self, packets: Sequence[Any]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> None:
        try:
            self._mux(self._stream.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()


def packet_digest(path: str, stream_index: int) -> str:
    """sha256 over the payloads of every packet of a stream, in demux order (audio identity)."""
    av = load_av()
    digest = hashlib.sha256()
    with _open(av, path) as container:
        for packet in container.demux(container.streams[stream_index]):
            if packet.size:
                digest.update(bytes(packet))
    return digest.hexdigest()


def muxer_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    try:
        return MUXERS[ext]
    except KeyError:
        raise VideoError(f"no video container for extension {ext!r}") from None


def _kept_metadata(meta: dict[str, str], keep_gps: bool) -> dict[str, str]:
    keys = METADATA_KEYS + (LOCATION_KEYS if keep_gps else ())
    return {k: v for k, v in meta.items() if k in keys}


@dataclass(frozen=True)
class JoinResult:
    frames: int
    audio_streams: int
    dropped_streams: tuple[str, ...]  # "index:type:codec" of each stream left out
    codec: str


def join(
    source: str,
    info: VideoInfo,
    segments: Sequence[str],
    dest: Any,
    muxer: str,
    keep_metadata: bool = False,
    keep_gps: bool = False,
) -> JoinResult:
    """Write ``dest`` (a path or a writable binary file object) from the segment files in order
    (stream copy, each frame's source duration) and the source's audio streams (packets copied
    unchanged). Fails unless the segments hold exactly the source's frames, each once."""
    av = load_av()
    if not segments:
        raise VideoError("no segments to join")
    inputs: list[Any] = []
    src = out = None
    try:
        for path in segments:
            inputs.append(_open(av, path))
        src = _open(av, source)
        seg_streams = [c.streams.video[0] for c in inputs]
        extradata = {bytes(s.codec_context.extradata or b"") for s in seg_streams}
        if len(extradata) > 1:
            raise VideoError("segments were encoded with different codec headers")
        options = {}
        if muxer in ("mp4", "mov"):
            # the index first; QuickTime keys (com.apple.quicktime.*) written as such
            options["movflags"] = "+faststart" + ("+use_metadata_tags" if keep_metadata else "")
        out = av.open(dest, "w", format=muxer, options=options)
        video = out.add_stream_from_template(seg_streams[0])
        video.time_base = info.time_base
        if info.rotation:
            video.set_display_rotation(info.rotation)
        audio_out: dict[int, Any] = {}
        dropped: list[str] = []
        for s in src.streams:
            if s.type == "audio":
                try:
                    audio_out[s.index] = out.add_stream_from_template(s)
                except (av.error.FFmpegError, ValueError) as exc:
                    raise VideoError(
                        f"cannot copy audio stream {s.index} ({s.codec_context.name}) into "
                        f"{muxer}: {one_line(exc)}"
                    ) from None
            elif s.index != info.video_index:
                codec = s.codec_context.name if s.codec_context else ""
                dropped.append(f"{s.index}:{s.type}:{codec}")
        if keep_metadata:
            out.metadata.update(_kept_metadata(info.metadata, keep_gps))
        for s in src.streams:
            if s.index in audio_out and "language" in s.metadata:
                audio_out[s.index].metadata["language"] = s.metadata["language"]

        index_of = {p: i for i, p in enumerate(info.frame_pts)}
        written: list[int] = []

        def video_packets() -> Iterator[tuple[float, int, Any]]:
            for container, stream in zip(inputs, seg_streams, strict=True):
                scale = Fraction(stream.time_base) / info.time_base
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    pts = packet.pts * scale
                    i = index_of.get(int(pts)) if pts.denominator == 1 else None
                    if i is None:
                        raise VideoError(f"segment frame with unknown timestamp {packet.pts}")
                    if written and i != written[-1] + 1:
                        raise VideoError(f"segments out of order at frame {i}")
                    written.append(i)
                    packet.time_base = info.time_base
                    packet.pts = packet.dts = info.frame_pts[i]
                    packet.duration = info.frame_durations[i]
                    yield info.seconds(info.frame_pts[i]), 0, packet

        audio_src = [_open(av, source) for _ in audio_out]
        try:
            # one demuxer per audio stream, so that each is read in its own order
            iters = [video_packets()]
            for container, index in zip(audio_src, audio_out, strict=True):
                src_stream = container.streams[index]
                iters.append(_audio_iter(container, src_stream, index))
            for _, _, packet in heapq.merge(*iters, key=lambda t: (t[0], t[1])):
                target = video if packet.stream.type == "video" else audio_out[packet.stream.index]
                packet.stream = target
                out.mux(packet)
        finally:
            for c in audio_src:
                c.close()
        if written != list(range(info.frame_count)):
            raise VideoError(
                f"segments hold {len(written)} of the video's {info.frame_count} frames"
            )
        out.close()
        out = None
        return JoinResult(
            frames=len(written),
            audio_streams=len(audio_out),
            dropped_streams=tuple(dropped),
            codec=seg_streams[0].codec_context.name,
        )
    except av.error.FFmpegError as exc:
        raise VideoError(f"cannot write video: {one_line(exc)}") from None
    finally:
        for container in (out, src, *inputs):
            if container is not None:
                container.close()


def _audio_iter(container: Any, stream: Any, index: int) -> Iterator[tuple[float, int, Any]]:
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        ts = packet.dts if packet.dts is not None else packet.pts
        yield float((ts or 0) * stream.time_base), 1 + index, packet

"""Video files in the anonymize pipeline: Beam glue around ``blurbeam.video``, no video logic here.

``route`` tells a listed file's path: a container shard, a video (``shards.files.video_muxer``:
by its name or its bytes) or a plain file. A video is anonymized in one of two ways, both with
the process's detector (``SharedModel``, the same handler and cache as the image paths) and
both ending in the same output and record:

- segments across workers (``AnonymizeVideos`` with a segment folder): ``PlanVideoFn`` hashes
  and probes the video and cuts it at keyframes (``blurbeam.video.process.plan_video``); after a
  Reshuffle, ``ProcessSegmentFn`` runs ``process_segment`` on any worker into a segment file in
  the video's temporary folder (under ``--temp_location``, or a local temporary folder on a
  local runner: never under the output); ``GroupByKey`` brings each video's segment paths and
  results (never frame bytes) together and ``JoinVideoFn`` joins them (``join_video``) once
  every segment succeeded, then removes the temporary folder;
- whole (``AnonymizeVideoFn``, without a segment folder): one DoFn call runs
  ``anonymize_video`` in a local temporary directory of its worker.

Then the per-frame face records (``schemas/video.py``) are written at
``schemas.layout.video_faces`` and the video is published whole at its relative path under the
output. Every video gets one audit record; a video that fails anywhere (any one of its
segments included) gets an ``error`` record with a one-line reason and no output file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.metrics import Metrics

from blurbeam.blur import BlurConfig
from blurbeam.extras import MissingExtra
from blurbeam.imageio import ImageError, MetadataPolicy
from blurbeam.schemas import layout
from blurbeam.schemas.audit import validate_record
from blurbeam.shards import (
    AtomicWriter,
    ShardRef,
    UnsafePathError,
    check_target,
    hash_file,
    is_local,
    join_output,
    write_bytes,
)
from blurbeam.shards.files import video_muxer
from blurbeam.stages import checked_model_sha256
from blurbeam.task import ImageTask, RunContext
from blurbeam.transforms.models import DetectorHandler, SharedModel
from blurbeam.transforms.read import set_opencv_threads
from blurbeam.transforms.shard import is_container
from blurbeam.transforms.write import _AuditingFn

CONTAINER, VIDEO, FILE = "container", "video", "file"


def route(ref: ShardRef) -> tuple[str, ShardRef]:
    """``(path, ref)``: which path of ``transforms.anonymize.Anonymize`` takes ``ref``."""
    if is_container(ref):
        return CONTAINER, ref
    return (VIDEO if video_muxer(ref) else FILE), ref


def _reason(exc: BaseException) -> ImageError:
    """The exception as the one-line reason a task records (``ImageTask.stage`` keeps an
    ``ImageError``'s message as it is)."""
    from blurbeam.errors import one_line
    from blurbeam.video.media import VideoError

    if isinstance(exc, VideoError | MissingExtra | UnsafePathError | ImageError):
        return ImageError(str(exc))
    return ImageError(one_line(exc))


def video_options(
    max_pixels: int,
    max_frames: int | None = None,
    policy: MetadataPolicy | None = None,
    segment_seconds: float | None = None,
    detect_every: int = 1,
) -> Any:
    """The ``blurbeam.video.process.VideoOptions`` of a run: ``max_pixels`` per frame,
    ``max_frames`` per video, segments of ``segment_seconds`` (None: the defaults), the
    detector on every ``detect_every``-th frame, the container metadata kept as ``policy``
    keeps an image's."""
    from blurbeam.shards.files import DEFAULT_MAX_FRAMES, DEFAULT_SEGMENT_SECONDS
    from blurbeam.video.process import VideoOptions

    policy = policy or MetadataPolicy()
    return VideoOptions(
        segment_seconds=segment_seconds or DEFAULT_SEGMENT_SECONDS,
        max_pixels=max_pixels,
        max_frames=max_frames or DEFAULT_MAX_FRAMES,
        detect_every=detect_every,
        keep_metadata=policy.keep_metadata,
        keep_gps=policy.keep_gps,
    )


def _hash_local(path: str) -> str:
    return hash_file(fsspec.filesystem("file"), path)


def publish_file(local_path: str, uri: str) -> None:
    """Copy the local file ``local_path`` to ``uri`` so that a reader never sees half of it
    (``AtomicWriter``: a hidden temporary file renamed over the target on a local disk)."""
    writer = AtomicWriter(uri)
    try:
        with open(local_path, "rb") as fh:
            shutil.copyfileobj(fh, writer, 1 << 20)
        writer.commit()
    except BaseException:
        writer.discard()
        raise


def video_facts(result: Any, frame_faces_uri: str, frame_faces_sha256: str) -> dict[str, Any]:
    """The audit record's ``video`` struct (``schemas.audit.VIDEO``) of a
    ``blurbeam.video.process.VideoResult``."""
    s = result.summary()
    return {
        "frames": s["frames"],
        "duration_s": s["duration_s"],
        "fps": result.info.fps,
        "rotation": s["rotation"],
        "codec_in": s["codec_in"],
        "codec_out": s["codec_out"],
        "encode": json.dumps(s["encode"], sort_keys=True),
        "audio_streams": s["audio_streams"],
        "dropped_streams": s["dropped_streams"],
        "segments": s["segments"],
        "faces_detected": s["faces_detected"],
        "face_boxes": s["face_boxes"],
        "tracks": s["tracks"],
        "frames_with_faces": s["frames_with_faces"],
        "frame_faces_uri": frame_faces_uri,
        "frame_faces_sha256": frame_faces_sha256,
    }


def frame_faces_parquet(run_id: str, source_uri: str, result: Any) -> bytes:
    """The per-frame face records of one video as a Parquet file's bytes."""
    import io

    import pyarrow.parquet as pq

    from blurbeam.schemas.video import frame_face_rows, to_table

    rows = frame_face_rows(run_id, source_uri, result.frames, result.info.time_base)
    buf = io.BytesIO()
    pq.write_table(to_table(rows), buf)
    return buf.getvalue()


class _VideoFn(_AuditingFn):
    """What the video DoFns share: the detector, reading a video, publishing one and its
    audit record. ``options`` is a ``blurbeam.video.process.VideoOptions``; ``max_bytes``
    bounds the file as it bounds an image file; ``temp_dir`` is the local directory temporary
    files go in (None: the system's). A worker whose detector model or settings differ from
    the ones ``handler`` expects fails the video."""

    def __init__(
        self,
        output: str,
        ctx: RunContext,
        handler: DetectorHandler,
        blur: BlurConfig,
        options: Any,
        max_bytes: int,
        progress_dir: str | None = None,
        temp_dir: str | None = None,
        opencv_threads: int | None = None,
    ) -> None:
        super().__init__(output, ctx, progress_dir)
        self._detector = _Detector(handler, opencv_threads)
        self._blur = blur
        self._options = options
        self._max_bytes = max_bytes
        self._temp_dir = temp_dir
        self._videos = Metrics.counter("blurbeam", "videos_read")
        self._frames = Metrics.counter("blurbeam", "video_frames")
        self._bytes = Metrics.counter("blurbeam", "bytes_read")

    def setup(self) -> None:
        super().setup()
        self._detector.setup()

    def _read(self, ref: ShardRef, tmp: str, local_path: list[str]) -> dict[str, Any]:
        """The file's sha256 and size; its local path (a copy in ``tmp`` when it is not on a
        local disk) appended to ``local_path``."""
        try:
            fs, path = fsspec.core.url_to_fs(ref.uri)
            size = fs.size(path)
            if size is not None and size > self._max_bytes:
                raise ImageError(
                    f"file too large: {size} bytes exceeds --max-bytes {self._max_bytes}"
                )
            local = local_copy(ref.uri, tmp)
            sha = _hash_local(local)
        except Exception as exc:
            raise _reason(exc) from None
        size = os.path.getsize(local)
        self._bytes.inc(size)
        self._videos.inc()
        local_path.append(local)
        return {"source_sha256": sha, "shard_sha256": sha, "source_bytes": size}

    def _target(self, ref: ShardRef) -> tuple[str, str]:
        """(container, output URI) of a video: its muxer and where it is written."""
        muxer = video_muxer(ref)
        if muxer is None:
            raise ImageError("not a video any more: its first bytes changed since listing")
        out_uri = join_output(self._output, ref.rel)
        check_target(self._output, out_uri, ref.uri)
        return muxer, out_uri

    def _publish(self, ref: ShardRef, muxer: str, dest: str, result: Any) -> dict[str, Any]:
        """Write the per-frame face records, then publish the anonymized video ``dest`` (a local
        file); the record's fields. Nothing is left behind on failure."""
        faces_uri = layout.video_faces(self._output, self._ctx.run_id, ref.uri)
        out_uri = join_output(self._output, ref.rel)
        try:
            faces = frame_faces_parquet(self._ctx.run_id, ref.uri, result)
            write_bytes(faces_uri, faces)
            out_sha = _hash_local(dest)
            publish_file(dest, out_uri)
        except Exception as exc:
            _remove(faces_uri)
            raise _reason(exc) from None
        self._frames.inc(result.info.frame_count)
        width, height = result.info.upright_size
        return {
            "output_uri": out_uri,
            "output_sha256": out_sha,
            "detector_model_sha256": self._detector.model_sha256,
            "width": width,
            "height": height,
            "format": muxer,
            "video": video_facts(result, faces_uri, hashlib.sha256(faces).hexdigest()),
        }

    def _video_record(self, task: ImageTask) -> dict:
        """The audit record of a finished video task: ``ok`` when any frame had a face box,
        ``num_faces`` the face tracks (each box of each frame is in the per-frame records)."""
        record = task.audit_record(self._ctx)
        if task.video is not None and not task.failed:
            record["status"] = "ok" if task.video["face_boxes"] else "no_faces"
            record["num_faces"] = task.video["tracks"]
        validate_record(record)
        self._counters[record["status"]].inc()
        self._tick(record)
        return record


class _Detector:
    """The process's detector for a video DoFn, acquired on the first video (a run without
    videos loads nothing here) and checked against the model and settings ``handler``
    expects."""

    def __init__(self, handler: DetectorHandler, opencv_threads: int | None) -> None:
        self._shared = SharedModel(handler)
        self._expected = handler.expected_model_sha256
        self._expected_settings = handler.expected_settings
        self._opencv_threads = opencv_threads
        self._acquired = False

    def setup(self) -> None:
        set_opencv_threads(self._opencv_threads)

    @property
    def model(self) -> Any:
        if not self._acquired:
            self._shared.acquire()
            self._acquired = True
        detector = self._shared.model
        checked_model_sha256(detector, self._expected, self._expected_settings)
        return detector

    @property
    def model_sha256(self) -> str:
        return self.model.model_sha256


class AnonymizeVideoFn(_VideoFn):
    """Video ShardRef -> the anonymized video under ``output`` (same relative path) + its one
    audit record, the whole video in this DoFn call (in a local temporary directory)."""

    def process(self, ref: ShardRef):
        task = ImageTask(ref.uri, ref.uri, "", ref.rel)
        with tempfile.TemporaryDirectory(prefix="blurbeam-video-", dir=self._temp_dir) as tmp:
            local: list[str] = []  # the file's local path, once read
            task = task.stage("read", lambda t: self._read(ref, tmp, local))
            task = task.stage("video", lambda t: self._anonymize(ref, local[0], tmp))
        yield self._video_record(task)

    def _anonymize(self, ref: ShardRef, source: str, tmp: str) -> dict[str, Any]:
        from blurbeam.video.process import anonymize_video

        try:
            muxer, _ = self._target(ref)
            dest = os.path.join(tmp, "anonymized" + os.path.splitext(ref.rel)[1])
            detector = self._detector.model
            result = anonymize_video(
                source, dest, detector, self._blur, self._options, workdir=tmp, muxer=muxer
            )
        except Exception as exc:
            raise _reason(exc) from None
        return self._publish(ref, muxer, dest, result)


@dataclass(frozen=True)
class VideoJob:
    """A planned video: what every one of its segments and its join need. ``workdir`` is the
    URI of its temporary segment folder; ``options`` carry the output container's encoder."""

    ref: ShardRef
    muxer: str
    sha256: str
    size: int
    info: Any  # blurbeam.video.media.VideoInfo
    segments: tuple[Any, ...]  # blurbeam.video.media.Segment, in order
    options: Any  # blurbeam.video.process.VideoOptions
    workdir: str
    planned_ms: float


@dataclass(frozen=True)
class SegmentDone:
    """One segment after ``ProcessSegmentFn``: its result (its file in the job's workdir) or
    the one-line reason it failed."""

    job: VideoJob
    index: int
    result: Any = None  # blurbeam.video.process.SegmentResult
    error: str | None = None
    ms: float = 0.0


def segment_folder(segments_dir: str, source_uri: str) -> str:
    """The temporary segment folder of one video under the run's segment folder."""
    name = hashlib.sha256(source_uri.encode()).hexdigest()[:32]
    return f"{segments_dir.rstrip('/')}/{name}"


class PlanVideoFn(_VideoFn):
    """Video ShardRef -> ``(source URI, (VideoJob, segment index))`` for each of its segments, or
    its error record (a dict) when it cannot be read or planned. ``segments_dir``: the run's
    folder of temporary segments (a local path or an fsspec URL every worker can reach)."""

    def __init__(self, *args: Any, segments_dir: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._segments_dir = segments_dir

    def process(self, ref: ShardRef):
        from blurbeam.video.process import for_container, plan_video

        task = ImageTask(ref.uri, ref.uri, "", ref.rel)
        jobs: list[VideoJob] = []

        def plan(t: ImageTask, source: str) -> dict[str, Any]:
            try:
                muxer, _ = self._target(ref)
                options = for_container(self._options, muxer)
                info, segments = plan_video(source, options)
            except Exception as exc:
                raise _reason(exc) from None
            workdir = segment_folder(self._segments_dir, ref.uri)
            ms = sum(t.timings_ms.values())
            jobs.append(
                VideoJob(
                    ref, muxer, t.source_sha256, t.source_bytes, info, tuple(segments),
                    options, workdir, ms,
                )
            )  # fmt: skip
            return {}

        with tempfile.TemporaryDirectory(prefix="blurbeam-plan-", dir=self._temp_dir) as tmp:
            local: list[str] = []
            task = task.stage("read", lambda t: self._read(ref, tmp, local))
            task = task.stage("video", lambda t: plan(t, local[0]))
        if task.failed or not jobs:
            yield self._video_record(task)
            return
        (job,) = jobs
        for segment in job.segments:
            yield ref.uri, (job, segment.index)


class ProcessSegmentFn(beam.DoFn):
    """``(source URI, (VideoJob, segment index))`` -> ``(source URI, SegmentDone)``: the segment
    detected, tracked, blurred and encoded (``blurbeam.video.process.process_segment``) into
    its file in the job's workdir. A failure is a ``SegmentDone`` with its reason; the join
    then fails the video."""

    def __init__(
        self,
        handler: DetectorHandler,
        blur: BlurConfig,
        temp_dir: str | None = None,
        opencv_threads: int | None = None,
    ) -> None:
        self._detector = _Detector(handler, opencv_threads)
        self._blur = blur
        self._temp_dir = temp_dir
        self._segments = Metrics.counter("blurbeam", "video_segments")

    def setup(self) -> None:
        self._detector.setup()

    def process(self, element: tuple[str, tuple[VideoJob, int]]):
        from blurbeam.errors import one_line
        from blurbeam.video.process import process_segment

        key, (job, index) = element
        segment = job.segments[index]
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="blurbeam-seg-", dir=self._temp_dir) as tmp:
                source = local_copy(job.ref.uri, tmp)
                name = f"segment-{index:05d}.nut"
                fs, folder = fsspec.core.url_to_fs(job.workdir)
                local = is_local(fs)
                if local:
                    os.makedirs(folder, exist_ok=True)
                dest = os.path.join(folder if local else tmp, name)
                result = process_segment(
                    source, job.info, segment, self._detector.model, self._blur, dest, job.options
                )
                if not local:
                    fs.put_file(dest, f"{folder}/{name}")
                result = dataclasses.replace(result, path=f"{job.workdir}/{name}")
            done = SegmentDone(job, index, result, ms=(time.perf_counter() - started) * 1000)
        except Exception as exc:
            reason = str(_reason(exc)) or one_line(exc)
            done = SegmentDone(job, index, error=reason, ms=(time.perf_counter() - started) * 1000)
        self._segments.inc()
        yield key, done


class JoinVideoFn(_VideoFn):
    """``(source URI, [SegmentDone, ...])`` -> the video joined from its segments and published
    + its one audit record: an ``error`` record, nothing written, unless every segment
    succeeded. The video's temporary segment folder is removed in every case."""

    def process(self, element: tuple[str, Any]):
        _, dones = element
        dones = sorted(dones, key=lambda d: d.index)
        job = dones[0].job
        ref = job.ref
        task = ImageTask(ref.uri, ref.uri, "", ref.rel).replace(
            source_sha256=job.sha256,
            shard_sha256=job.sha256,
            source_bytes=job.size,
            timings_ms={"plan": job.planned_ms, "segments": sum(d.ms for d in dones)},
        )
        try:
            with tempfile.TemporaryDirectory(prefix="blurbeam-join-", dir=self._temp_dir) as tmp:
                task = task.stage("video", lambda t: self._join(job, dones, tmp))
        finally:
            remove_tree(job.workdir)
        yield self._video_record(task)

    def _join(self, job: VideoJob, dones: list[SegmentDone], tmp: str) -> dict[str, Any]:
        from blurbeam.video.process import join_video

        n = len(job.segments)
        failed = [d for d in dones if d.error]
        if failed:
            d = failed[0]
            raise ImageError(f"segment {d.index + 1} of {n} failed: {d.error}")
        if [d.index for d in dones] != list(range(n)):
            raise ImageError(f"{len(dones)} of the video's {n} segments came back")
        try:
            source = local_copy(job.ref.uri, tmp)
            if _hash_local(source) != job.sha256:
                raise ImageError("the video changed while it was processed")
            results = [
                dataclasses.replace(d.result, path=local_copy(d.result.path, tmp)) for d in dones
            ]
            _, out_uri = self._target(job.ref)
            dest = os.path.join(tmp, "anonymized" + os.path.splitext(job.ref.rel)[1])
            result = join_video(source, job.info, results, dest, job.muxer, job.options, tmp)
        except Exception as exc:
            raise _reason(exc) from None
        return self._publish(job.ref, job.muxer, dest, result)


def local_copy(uri: str, tmp: str) -> str:
    """A local path of ``uri``: itself on a local disk, else a copy downloaded into ``tmp``."""
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        return path
    local = os.path.join(tmp, f"{len(os.listdir(tmp))}-{posixpath.basename(path)}")
    fs.get_file(path, local)
    return local


def remove_tree(uri: str) -> None:
    """Remove a temporary folder (and, on a local disk, its parent when that is left empty)."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        if is_local(fs):
            os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # the parent holds other videos' folders, or was removed already


def _remove(uri: str) -> None:
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        fs.rm_file(path)
    except Exception:
        pass  # the file was not written


def _is_record(x: object) -> bool:
    return isinstance(x, dict)


def _not_record(x: object) -> bool:
    return not isinstance(x, dict)


class AnonymizeVideos(beam.PTransform):
    """Video ShardRefs -> their audit records. With ``segments_dir`` each video is cut into
    segments that any worker processes (``PlanVideoFn`` -> Reshuffle -> ``ProcessSegmentFn`` ->
    GroupByKey -> ``JoinVideoFn``); without it each video is anonymized whole by one DoFn
    call (``AnonymizeVideoFn``). The other arguments are ``_VideoFn``'s."""

    def __init__(
        self,
        output: str,
        ctx: RunContext,
        handler: DetectorHandler,
        blur: BlurConfig,
        options: Any,
        max_bytes: int,
        *,
        segments_dir: str | None = None,
        progress_dir: str | None = None,
        temp_dir: str | None = None,
        opencv_threads: int | None = None,
    ) -> None:
        super().__init__()
        self._args = (output, ctx, handler, blur, options, max_bytes)
        self._kwargs = {
            "progress_dir": progress_dir,
            "temp_dir": temp_dir,
            "opencv_threads": opencv_threads,
        }
        self._segments_dir = segments_dir

    def expand(self, refs):
        if self._segments_dir is None:
            return refs | "AnonymizeVideo" >> beam.ParDo(
                AnonymizeVideoFn(*self._args, **self._kwargs)
            )
        planned = refs | "PlanVideo" >> beam.ParDo(
            PlanVideoFn(*self._args, segments_dir=self._segments_dir, **self._kwargs)
        )
        _, _, handler, blur, _, _ = self._args
        segment_fn = ProcessSegmentFn(
            handler, blur, self._kwargs["temp_dir"], self._kwargs["opencv_threads"]
        )
        joined = (
            planned
            | "Segments" >> beam.Filter(_not_record)
            | "SpreadSegments" >> beam.Reshuffle()
            | "ProcessSegment" >> beam.ParDo(segment_fn)
            | "ByVideo" >> beam.GroupByKey()
            | "JoinVideo" >> beam.ParDo(JoinVideoFn(*self._args, **self._kwargs))
        )
        failed = planned | "NotPlanned" >> beam.Filter(_is_record)
        return (failed, joined) | "VideoRecords" >> beam.Flatten()

"""Video files in the anonymize pipeline: Beam glue around ``blurbeam.video``, no video logic here.

``route`` tells a listed file's path: a container shard, a video (``shards.files.video_muxer``:
by its name or its bytes) or a plain file. ``AnonymizeVideoFn`` anonymizes one whole video per
call with the process's detector (``SharedModel``, the same handler and cache as the image
paths): it hashes the file, copies it to a local temporary directory when it is not on a local
disk, runs ``blurbeam.video.process.anonymize_video`` there (segments encoded and joined in
that directory, never under the output), writes the per-frame face records
(``schemas/video.py``) at ``schemas.layout.video_faces`` and publishes the video whole at its
relative path under the output. Every video gets one audit record; a video that fails anywhere
gets an ``error`` record with a one-line reason and no output file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

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
) -> Any:
    """The ``blurbeam.video.process.VideoOptions`` of a run: ``max_pixels`` per frame,
    ``max_frames`` per video (None: the default), the container metadata kept as ``policy``
    keeps an image's."""
    from blurbeam.video.media import DEFAULT_MAX_FRAMES
    from blurbeam.video.process import VideoOptions

    policy = policy or MetadataPolicy()
    return VideoOptions(
        max_pixels=max_pixels,
        max_frames=max_frames or DEFAULT_MAX_FRAMES,
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


def video_facts(result: Any, frame_faces_uri: str) -> dict[str, Any]:
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


class AnonymizeVideoFn(_AuditingFn):
    """Video ShardRef -> the anonymized video under ``output`` (same relative path) + its one
    audit record. ``options`` is a ``blurbeam.video.process.VideoOptions``; ``max_bytes``
    bounds the file as it bounds an image file; ``temp_dir`` is the local directory the
    temporary files go in (None: the system's). With ``expected_model_sha256`` a worker whose
    detector model differs fails the video."""

    def __init__(
        self,
        output: str,
        ctx: RunContext,
        handler: DetectorHandler,
        blur: BlurConfig,
        options: Any,
        max_bytes: int,
        expected_model_sha256: str | None = None,
        progress_dir: str | None = None,
        temp_dir: str | None = None,
        opencv_threads: int | None = None,
    ) -> None:
        super().__init__(output, ctx, progress_dir)
        self._detector = SharedModel(handler)
        self._blur = blur
        self._options = options
        self._max_bytes = max_bytes
        self._expected = expected_model_sha256
        self._temp_dir = temp_dir
        self._opencv_threads = opencv_threads
        self._videos = Metrics.counter("blurbeam", "videos_read")
        self._frames = Metrics.counter("blurbeam", "video_frames")
        self._bytes = Metrics.counter("blurbeam", "bytes_read")

    def setup(self) -> None:
        super().setup()
        set_opencv_threads(self._opencv_threads)
        self._acquired = False

    def _model(self) -> Any:
        if not self._acquired:  # on the first video, so a run without videos loads nothing here
            self._detector.acquire()
            self._acquired = True
        detector = self._detector.model
        sha = detector.model_sha256
        if self._expected and sha != self._expected:
            raise RuntimeError(
                f"this worker's detector model ({sha[:16]}) is not the one the run was planned "
                f"with ({self._expected[:16]}): refusing to detect with it"
            )
        return detector

    def process(self, ref: ShardRef):
        self._videos.inc()
        task = ImageTask(ref.uri, ref.uri, "", ref.rel)
        with tempfile.TemporaryDirectory(prefix="blurbeam-video-", dir=self._temp_dir) as tmp:
            local: list[str] = []  # the file's local path, once read
            task = task.stage("read", lambda t: self._read(ref, tmp, local))
            task = task.stage("video", lambda t: self._anonymize(ref, local[0], tmp))
        yield self._video_record(task)

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
            if is_local(fs):
                local = path
            else:
                local = os.path.join(tmp, "source" + os.path.splitext(path)[1])
                fs.get_file(path, local)
            sha = _hash_local(local)
        except Exception as exc:
            raise _reason(exc) from None
        size = os.path.getsize(local)
        self._bytes.inc(size)
        local_path.append(local)
        return {"source_sha256": sha, "shard_sha256": sha, "source_bytes": size}

    def _anonymize(self, ref: ShardRef, source: str, tmp: str) -> dict[str, Any]:
        from blurbeam.video.process import anonymize_video

        faces_uri = layout.video_faces(self._output, self._ctx.run_id, ref.uri)
        written: list[str] = []
        try:
            muxer = video_muxer(ref)
            if muxer is None:
                raise ImageError("not a video any more: its first bytes changed since listing")
            out_uri = join_output(self._output, ref.rel)
            check_target(self._output, out_uri, ref.uri)
            detector = self._model()
            dest = os.path.join(tmp, "anonymized" + os.path.splitext(ref.rel)[1])
            result = anonymize_video(
                source,
                dest,
                detector,
                self._blur,
                self._options,
                workdir=tmp,
                muxer=muxer,
            )
            write_bytes(faces_uri, frame_faces_parquet(self._ctx.run_id, ref.uri, result))
            written.append(faces_uri)
            out_sha = _hash_local(dest)
            publish_file(dest, out_uri)
        except Exception as exc:
            for uri in written:
                _remove(uri)
            raise _reason(exc) from None
        self._frames.inc(result.info.frame_count)
        width, height = result.info.upright_size
        return {
            "output_uri": out_uri,
            "output_sha256": out_sha,
            "detector_model_sha256": detector.model_sha256,
            "width": width,
            "height": height,
            "format": muxer,
            "video": video_facts(result, faces_uri),
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


def _remove(uri: str) -> None:
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        fs.rm_file(path)
    except Exception:
        pass  # the file was not written

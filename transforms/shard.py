"""Container shards (tar, Parquet, TFRecord) end to end in one DoFn: a shard is read once as a
stream, each image goes through the per-image function (decode, detect, anonymize or restore,
encode) as soon as its sample is read, and the output shard is written as it goes and published
whole (``blurbeam.shards.stream_shard``). No image bytes go through a shuffle; a worker holds a
few images of a shard at a time, never the shard.

A shard is not split across workers by member ranges: a shard is the unit of parallelism. A tar
stream (gzip above all) cannot be entered in the middle without an index, the pieces would have
to be joined again into one output shard (the shuffle this path exists to avoid), and WebDataset
producers size their shards for exactly this (hundreds of MB, thousands of samples, many shards
per dataset). A dataset of fewer shards than workers leaves workers idle: reshard it first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

from apache_beam.metrics import Metrics

from blurbeam.blur import BlurConfig
from blurbeam.imageio import DEFAULT_MAX_PIXELS, MetadataPolicy
from blurbeam.shards import (
    ImageRecord,
    Outcome,
    ShardOptions,
    ShardReadError,
    ShardRef,
    UnsafePathError,
    check_target,
    file_sha256,
    get_format,
    join_output,
    member_uri,
    shard_record,
    stream_shard,
)
from blurbeam.stages import anonymize_task, decode_task, encode_task
from blurbeam.task import ImageTask, RunContext, one_line
from blurbeam.transforms.models import DetectorHandler, SharedModel
from blurbeam.transforms.read import set_opencv_threads
from blurbeam.transforms.write import _AuditingFn


class ImageFn(Protocol):
    """The per-image work of a shard DoFn: ``setup`` once per DoFn instance (models are
    acquired there), then read task -> task with ``encoded`` bytes (or failed)."""

    def setup(self) -> None: ...

    def __call__(self, task: ImageTask) -> ImageTask: ...


class AnonymizeImage:
    """Decode, detect (the process-wide detector of ``handler``), the reviewer's boxes
    (``correct``, e.g. ``blurbeam.stages.ReviewerBoxes``), anonymize, encode: the stages the
    per-file path runs as separate DoFns. ``opencv_threads``: ``cv2.setNumThreads`` per
    worker."""

    def __init__(
        self,
        handler: DetectorHandler,
        blur: BlurConfig,
        policy: MetadataPolicy,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        correct: Callable[[ImageTask], ImageTask] | None = None,
        opencv_threads: int | None = None,
    ) -> None:
        self._detector = SharedModel(handler)
        self._blur = blur
        self._policy = policy
        self._max_pixels = max_pixels
        self._correct = correct
        self._opencv_threads = opencv_threads

    def setup(self) -> None:
        set_opencv_threads(self._opencv_threads)
        self._detector.acquire()

    def __call__(self, task: ImageTask) -> ImageTask:
        task = self._detector.infer(decode_task(task, self._max_pixels))
        if self._correct is not None:
            task = self._correct(task)
        return encode_task(anonymize_task(task, self._blur), self._policy)


LEFT_OUT = "left out of the output shard: another image of its sample failed"


class StreamShardFn(_AuditingFn):
    """Container ShardRef -> the output shard under ``output`` (same relative path, the input's
    format) + one audit record per image, as ``image_fn`` made it. A failed image is left out
    with its sample (the images of the sample that succeeded get a ``write`` error saying so);
    when no image of a shard succeeded nothing is written; when the output cannot be written,
    every image that had not failed gets a ``write`` error. A shard that cannot be read as its
    format gets one error record (key ""). Records are emitted when the shard is done (each
    carries the shard's sha256, hashed while reading); until then a worker keeps each image's
    task without its pixels or bytes."""

    def __init__(
        self,
        output: str,
        ctx: RunContext,
        image_fn: ImageFn,
        opts: ShardOptions | None = None,
        progress_dir: str | None = None,
    ) -> None:
        super().__init__(output, ctx, progress_dir)
        self._image_fn = image_fn
        self._opts = opts or ShardOptions()
        self._shards = Metrics.counter("blurbeam", "shards_written")
        self._images = Metrics.counter("blurbeam", "images_read")
        self._bytes = Metrics.counter("blurbeam", "bytes_read")

    def setup(self) -> None:
        super().setup()
        self._image_fn.setup()

    def _image(self, rec: ImageRecord) -> tuple[ImageTask, bytes | None]:
        """One image: its finished task without its encoded bytes, and those bytes (None when
        it failed)."""
        self._images.inc()
        self._bytes.inc(len(rec.data or b""))
        task = self._image_fn(ImageTask.from_record(rec))
        if task.failed or task.encoded is None:
            return task.replace(encoded=None), None
        body = task.encoded
        return task.replace(encoded=None, output_sha256=hashlib.sha256(body).hexdigest()), body

    def process(self, ref: ShardRef):
        out_uri: str | None = join_output(self._output, ref.rel)
        unwritable = None
        try:
            check_target(self._output, out_uri, ref.uri)
        except UnsafePathError as exc:
            unwritable, out_uri = str(exc), None
        try:
            streamed = stream_shard(ref, self._opts, self._image, out_uri)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ShardReadError) else one_line(exc)
            task = ImageTask.from_record(shard_record(ref, reason))
            yield self._record(task.replace(shard_sha256=file_sha256(ref.uri)))
            return
        if streamed.published:
            self._shards.inc()
        failure = (unwritable or streamed.write_error) if streamed.write_error else None
        for outcome in streamed.outcomes:
            task = self._finished(outcome, out_uri or "", failure)
            yield self._record(task.replace(shard_sha256=streamed.sha256))

    @staticmethod
    def _finished(outcome: Outcome[ImageTask], out_uri: str, failure: str | None) -> ImageTask:
        task = outcome.result or ImageTask.from_record(outcome.record)
        if task.failed or task.skip_reason:
            return task
        if failure:
            return task.with_error("write", f"shard not written: {failure}")
        if not outcome.written:
            return task.with_error("write", LEFT_OUT)
        return task.replace(output_uri=member_uri(out_uri, task.key))


def is_container(ref: ShardRef) -> bool:
    """Whether ``ref`` is a container shard (tar, Parquet, TFRecord), streamed by
    ``StreamShardFn``; plain files take the per-file path."""
    return get_format(ref.kind).container

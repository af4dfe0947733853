"""Read: input spec -> shards -> image tasks."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from blurbeam.shards import (
    DEFAULT_MAX_BYTES,
    ImageRecord,
    ShardOptions,
    ShardRef,
    read_records,
    sha256,
)
from blurbeam.task import ImageTask, one_line


class _ExpandFn(beam.DoFn):
    """(slice i of n) -> every n-th shard of the sorted listing, starting at the i-th."""

    def __init__(self, spec: str, exclude: str | None, slices: int) -> None:
        self._spec = spec
        self._exclude = exclude
        self._slices = slices

    def process(self, index: int):
        from blurbeam.shards import expand_input

        for i, ref in enumerate(expand_input(self._spec, exclude=self._exclude)):
            if i % self._slices == index:
                yield ref


class ExpandInput(beam.PTransform):
    """The --input spec -> ShardRefs, reshuffled so that shards spread over all workers.

    ``slices`` > 1 lists the input in that many parallel pieces (each keeps every n-th shard of
    the sorted listing). Runners that honour Reshuffle (Direct, Dataflow, Flink) do not need it;
    on Dask, where Reshuffle is a no-op and a bag keeps the partitions of its ``Create``, the
    slices are what spreads the work over the workers.
    """

    def __init__(self, spec: str, exclude: str | None = None, slices: int = 1) -> None:
        super().__init__()
        if slices < 1:
            raise ValueError("input slices must be >= 1")
        self._spec = spec
        self._exclude = exclude
        self._slices = slices

    def expand(self, pbegin):
        return (
            pbegin
            | "Slices" >> beam.Create(list(range(self._slices)))
            | "ListShards" >> beam.ParDo(_ExpandFn(self._spec, self._exclude, self._slices))
            | "Spread" >> beam.Reshuffle()
        )


class ReadImagesFn(beam.DoFn):
    """ShardRef -> one ImageTask per image in the shard. A shard that cannot be opened at all
    still yields one task (with the error), so it is never silently lost.

    With ``skip_existing = (output, config_hash, run_id)``, each worker loads the audit history
    under ``output`` once (``blurbeam.report.done_index``: the images that already succeeded under
    this config in an earlier run) and skips an image whose URI and bytes (sha256) are there. A
    container shard is rewritten whole, so it is skipped only when every image in it is done;
    otherwise all of its images are processed again.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        image_column: str | None = None,
        skip_existing: tuple[str, str, str] | None = None,
        opencv_threads: int | None = None,
        allow_image_fields: tuple[str, ...] = (),
    ) -> None:
        self._opts = ShardOptions(
            max_bytes=max_bytes,
            image_column=image_column,
            allow_image_fields=tuple(allow_image_fields),
        )
        self._skip_existing = skip_existing
        self._skip_done: dict[str, str] = {}
        self._opencv_threads = opencv_threads
        self._read = Metrics.counter("blurbeam", "images_read")
        self._bytes = Metrics.counter("blurbeam", "bytes_read")
        self._skipped = Metrics.counter("blurbeam", "images_skipped")

    def setup(self) -> None:
        if self._opencv_threads is not None:
            import cv2  # process-wide: the detector and the blur run in this worker process

            cv2.setNumThreads(self._opencv_threads)
        if self._skip_existing is not None:
            from blurbeam.report import done_index

            self._skip_done = done_index(*self._skip_existing)

    def _done(self, rec: ImageRecord) -> bool:
        if not self._skip_done or rec.error or rec.data is None:
            return False
        return self._skip_done.get(rec.source_uri) == sha256(rec.data)

    def process(self, ref: ShardRef):
        try:
            records = list(read_records(ref, opts=self._opts))
        except Exception as exc:
            records = [ImageRecord(ref.uri, ref.uri, "", ref.rel, None, one_line(exc))]
        if self._skip_existing is not None and all(self._done(r) for r in records):
            self._skipped.inc(len(records))
            return
        for rec in records:
            self._read.inc()
            if rec.data:
                self._bytes.inc(len(rec.data))
            yield ImageTask.from_record(rec)

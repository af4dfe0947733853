"""Read: input spec -> shards -> image tasks."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from blurbeam.shards import (
    DEFAULT_MAX_BYTES,
    ImageRecord,
    ShardOptions,
    ShardRef,
    file_sha256,
    read_records,
    sha256,
)
from blurbeam.task import ImageTask, one_line


class _ExpandFn(beam.DoFn):
    """(slice i of n) -> every n-th shard of the sorted listing, starting at the i-th."""

    def __init__(self, spec: str, exclude: str | None, slices: int, every_file: bool) -> None:
        self._spec = spec
        self._exclude = exclude
        self._slices = slices
        self._every_file = every_file

    def process(self, index: int):
        from blurbeam.shards import expand_input

        refs = expand_input(self._spec, exclude=self._exclude, every_file=self._every_file)
        for i, ref in enumerate(refs):
            if i % self._slices == index:
                yield ref


class ExpandInput(beam.PTransform):
    """The --input spec -> ShardRefs, reshuffled so that shards spread over all workers.

    ``slices`` > 1 lists the input in that many parallel pieces (each keeps every n-th shard of
    the sorted listing). Runners that honour Reshuffle (Direct, Dataflow, Flink) do not need it;
    on Dask, where Reshuffle is a no-op and a bag keeps the partitions of its ``Create``, the
    slices are what spreads the work over the workers. ``every_file`` lists every file, also
    those that will only get a ``skipped`` record (``expand_input``).
    """

    def __init__(
        self, spec: str, exclude: str | None = None, slices: int = 1, every_file: bool = False
    ) -> None:
        super().__init__()
        if slices < 1:
            raise ValueError("input slices must be >= 1")
        self._spec = spec
        self._exclude = exclude
        self._slices = slices
        self._every_file = every_file

    def expand(self, pbegin):
        return (
            pbegin
            | "Slices" >> beam.Create(list(range(self._slices)))
            | "ListShards"
            >> beam.ParDo(_ExpandFn(self._spec, self._exclude, self._slices, self._every_file))
            | "Spread" >> beam.Reshuffle()
        )


class ReadImagesFn(beam.DoFn):
    """ShardRef -> one ImageTask per image in the shard. A shard that cannot be opened at all
    still yields one task (with the error), so it is never silently lost.

    With ``skip_existing = (output, config_hash, run_id)`` each worker loads the done index of
    ``output`` once (``blurbeam.report.DoneIndex``) and skips a shard (a plain file is a shard of
    one) that is done under this config: unchanged bytes (sha256 of the whole shard), a terminal
    record for each of its images (errors only without ``retry_errors``), and every output
    still there with the bytes its record names. Anything else is processed again, whole.
    For a skipped shard it yields its done-index rows (dicts) instead of tasks: they belong in
    the run's manifest, the inputs are covered. (One output with two element types, split by
    the caller, rather than tagged outputs, which the Dask runner does not keep apart.)
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        image_column: str | None = None,
        skip_existing: tuple[str, str, str] | None = None,
        opencv_threads: int | None = None,
        allow_image_fields: tuple[str, ...] = (),
        retry_errors: bool = False,
    ) -> None:
        self._opts = ShardOptions(
            max_bytes=max_bytes,
            image_column=image_column,
            allow_image_fields=tuple(allow_image_fields),
        )
        self._skip_existing = skip_existing
        self._retry_errors = retry_errors
        self._index = None
        self._opencv_threads = opencv_threads
        self._read = Metrics.counter("blurbeam", "images_read")
        self._bytes = Metrics.counter("blurbeam", "bytes_read")
        self._skipped = Metrics.counter("blurbeam", "images_skipped")

    def setup(self) -> None:
        if self._opencv_threads is not None:
            import cv2  # process-wide: the detector and the blur run in this worker process

            cv2.setNumThreads(self._opencv_threads)
        if self._skip_existing is not None:
            from blurbeam.report import load_done_index

            self._index = load_done_index(*self._skip_existing)

    def process(self, ref: ShardRef):
        try:
            records = list(read_records(ref, opts=self._opts))
        except Exception as exc:
            records = [ImageRecord(ref.uri, ref.uri, "", ref.rel, None, one_line(exc))]
        shard_sha = None
        if self._index is not None:
            shard_sha = shard_sha256(ref, records)
            if shard_sha and self._index.is_done(ref.uri, shard_sha, self._retry_errors):
                self._skipped.inc(len(records))
                yield from self._index.shards[ref.uri]
                return
        for rec in records:
            self._read.inc()
            if rec.data:
                self._bytes.inc(len(rec.data))
            yield ImageTask.from_record(rec, shard_sha or shard_sha256(ref, records))


def shard_sha256(ref: ShardRef, records: list[ImageRecord]) -> str | None:
    """The sha256 of the whole shard: of the one image's bytes for a plain file (already read),
    the file's own for a skipped file, else the shard file read again in chunks; None when it
    cannot be read."""
    if len(records) == 1 and records[0].key == "":
        rec = records[0]
        if rec.data is not None:
            return sha256(rec.data)
        if rec.sha256:
            return rec.sha256
        if rec.error is not None:
            return None
    return file_sha256(ref.uri)

"""Read: input spec -> shards (listed once) -> image tasks of plain files; the done-index check of
``--skip-existing`` for container shards, which ``transforms.shard`` then streams whole."""

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

    The input is listed once. With ``refs`` (the listing the launcher already made, on a local
    runner, or the shards a corrections run re-processes) those are the ShardRefs. Otherwise
    the pipeline lists the input itself: ``slices`` > 1 lists it in that many parallel pieces
    (each keeps every n-th shard of the sorted listing). Runners that honour Reshuffle (Direct,
    Dataflow, Flink) do not need it; on Dask, where Reshuffle is a no-op and a bag keeps the
    partitions of its ``Create``, the slices are what spreads the work over the workers.
    ``every_file`` lists every file, also those that will only get a ``skipped`` record
    (``expand_input``).
    """

    def __init__(
        self,
        spec: str,
        exclude: str | None = None,
        slices: int = 1,
        every_file: bool = False,
        refs: list[ShardRef] | None = None,
    ) -> None:
        super().__init__()
        if slices < 1:
            raise ValueError("input slices must be >= 1")
        self._spec = spec
        self._exclude = exclude
        self._slices = slices
        self._every_file = every_file
        self._refs = None if refs is None else list(refs)

    def expand(self, pbegin):
        if self._refs is not None:
            refs = pbegin | "Shards" >> beam.Create(self._refs)
        else:
            refs = (
                pbegin
                | "Slices" >> beam.Create(list(range(self._slices)))
                | "ListShards"
                >> beam.ParDo(_ExpandFn(self._spec, self._exclude, self._slices, self._every_file))
            )
        return refs | "Spread" >> beam.Reshuffle()


class _DoneIndexFn(beam.DoFn):
    """Loads the done index of ``skip_existing = (output, config_hash, run_id)`` once per worker
    (``blurbeam.report.DoneIndex``)."""

    def __init__(self, skip_existing: tuple[str, str, str] | None, retry_errors: bool) -> None:
        self._skip_existing = skip_existing
        self._retry_errors = retry_errors
        self._index = None
        self._skipped = Metrics.counter("blurbeam", "images_skipped")

    def setup(self) -> None:
        if self._skip_existing is not None:
            from blurbeam.report import load_done_index

            self._index = load_done_index(*self._skip_existing)

    def _done_rows(self, ref: ShardRef, sha: str | None) -> list[dict] | None:
        """The done-index rows of ``ref`` when it is done under this config with bytes of
        sha256 ``sha``, else None."""
        if self._index is None or not sha:
            return None
        if not self._index.is_done(ref.uri, sha, self._retry_errors):
            return None
        rows = self._index.shards[ref.uri]
        self._skipped.inc(len(rows))
        return rows


class SkipDoneShardsFn(_DoneIndexFn):
    """Container ShardRef -> the ShardRef when it is to be processed, or its done-index rows
    (dicts) when ``--skip-existing`` finds it done (``ReadImagesFn`` says when). A shard the
    index knows is hashed first, in one streamed pass, to compare its bytes; a shard it does
    not know is passed on unread."""

    def process(self, ref: ShardRef):
        rows = None
        if self._index is not None and self._index.shards.get(ref.uri):
            rows = self._done_rows(ref, file_sha256(ref.uri))
        if rows is None:
            yield ref
        else:
            yield from rows


class ReadImagesFn(_DoneIndexFn):
    """ShardRef -> one ImageTask per image in the shard (the anonymize and deblur pipelines give
    it plain files only; evaluate reads container shards through it too, whole). A shard that
    cannot be opened at all still yields one task (with the error), so it is never silently
    lost.

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
        super().__init__(skip_existing, retry_errors)
        self._opts = ShardOptions(
            max_bytes=max_bytes,
            image_column=image_column,
            allow_image_fields=tuple(allow_image_fields),
        )
        self._opencv_threads = opencv_threads
        self._read = Metrics.counter("blurbeam", "images_read")
        self._bytes = Metrics.counter("blurbeam", "bytes_read")

    def setup(self) -> None:
        super().setup()
        set_opencv_threads(self._opencv_threads)

    def process(self, ref: ShardRef):
        try:
            records = list(read_records(ref, opts=self._opts))
        except Exception as exc:
            records = [ImageRecord(ref.uri, ref.uri, "", ref.rel, None, one_line(exc))]
        shard_sha = None
        if self._index is not None:
            shard_sha = shard_sha256(ref, records)
            rows = self._done_rows(ref, shard_sha)
            if rows is not None:
                yield from rows
                return
        for rec in records:
            self._read.inc()
            if rec.data:
                self._bytes.inc(len(rec.data))
            yield ImageTask.from_record(rec, shard_sha or shard_sha256(ref, records))


def set_opencv_threads(threads: int | None) -> None:
    """``cv2.setNumThreads`` for this worker process (the detector and the blur run in it)."""
    if threads is not None:
        import cv2

        cv2.setNumThreads(threads)


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

"""Read: input spec -> shards -> image tasks."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from blurbeam.shards import DEFAULT_MAX_BYTES, ImageRecord, ShardRef, read_records
from blurbeam.task import ImageTask, one_line


class _ExpandFn(beam.DoFn):
    def __init__(self, exclude: str | None) -> None:
        self._exclude = exclude

    def process(self, spec: str):
        from blurbeam.shards import expand_input

        yield from expand_input(spec, exclude=self._exclude)


class ExpandInput(beam.PTransform):
    """The --input spec -> ShardRefs, reshuffled so that shards spread over all workers."""

    def __init__(self, spec: str, exclude: str | None = None) -> None:
        super().__init__()
        self._spec = spec
        self._exclude = exclude

    def expand(self, pbegin):
        return (
            pbegin
            | "Spec" >> beam.Create([self._spec])
            | "ListShards" >> beam.ParDo(_ExpandFn(self._exclude))
            | "Spread" >> beam.Reshuffle()
        )


class ReadImagesFn(beam.DoFn):
    """ShardRef -> one ImageTask per image in the shard. A shard that cannot be opened at all
    still yields one task (with the error), so it is never silently lost."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._read = Metrics.counter("blurbeam", "images_read")
        self._bytes = Metrics.counter("blurbeam", "bytes_read")

    def process(self, ref: ShardRef):
        try:
            records = list(read_records(ref, self._max_bytes))
        except Exception as exc:
            records = [ImageRecord(ref.uri, ref.uri, "", ref.rel, None, one_line(exc))]
        for rec in records:
            self._read.inc()
            if rec.data:
                self._bytes.inc(len(rec.data))
            yield ImageTask.from_record(rec)

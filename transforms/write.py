"""Write: anonymized plain image files (atomically, only ever from anonymized pixels) and audit
records. Container shards are written by ``transforms.shard``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from blurbeam.schemas import layout
from blurbeam.schemas.audit import AUDIT_SCHEMA, STATUSES, validate_record
from blurbeam.shards import check_target, join_output, write_bytes
from blurbeam.task import ImageTask, RunContext


class _AuditingFn(beam.DoFn):
    """Turns finished tasks into validated audit records, with status counters and the live
    progress files of local runs."""

    def __init__(self, output: str, ctx: RunContext, progress_dir: str | None = None) -> None:
        self._output = output
        self._ctx = ctx
        self._progress_dir = progress_dir
        self._counters = {s: Metrics.counter("blurbeam", f"images_{s}") for s in STATUSES}

    def setup(self) -> None:
        self._progress = {"done": 0, "faces": 0, "error": 0}
        self._last_flush = 0.0

    def _record(self, task: ImageTask) -> dict:
        record = task.audit_record(self._ctx)
        validate_record(record)
        self._counters[record["status"]].inc()
        self._tick(record)
        return record

    def _tick(self, record: dict) -> None:
        if not self._progress_dir:
            return
        self._progress["done"] += 1
        self._progress["faces"] += record["num_faces"] or 0
        self._progress["error"] += record["status"] == "error"
        now = time.monotonic()
        if now - self._last_flush >= 0.5:
            self._flush()
            self._last_flush = now

    def _flush(self) -> None:
        path = os.path.join(self._progress_dir, f"{os.getpid()}-{id(self):x}.json")
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(self._progress, fh)
            os.replace(tmp, path)
        except OSError:
            pass  # progress is best effort; the audit records are the truth

    def finish_bundle(self) -> None:
        if self._progress_dir:
            self._flush()


class WriteImageFn(_AuditingFn):
    """Writes ``task.encoded`` (anonymized bytes) under the output root and emits the task's audit
    record. A task that failed anywhere has no encoded bytes and writes nothing."""

    def process(self, task: ImageTask):
        def write(t: ImageTask) -> dict:
            if t.encoded is None:
                raise RuntimeError("no anonymized image to write")
            if t.key:  # its rel is the whole shard's: writing it here would replace the shard
                raise RuntimeError(
                    "an image inside a container shard (tar, Parquet, TFRecord) is written with "
                    "its shard (transforms.shard), never as a file of its own"
                )
            uri = join_output(self._output, t.rel)
            check_target(self._output, uri, t.source_uri)
            write_bytes(uri, t.encoded)
            return {
                "output_uri": uri,
                "output_sha256": hashlib.sha256(t.encoded).hexdigest(),
                "encoded": None,
            }

        yield self._record(task.stage("write", write))


class _WriteAuditShardFn(beam.DoFn):
    def __init__(self, prefix: str, num_shards: int) -> None:
        self._prefix = prefix
        self._num_shards = num_shards

    def process(self, keyed):
        import pyarrow as pa
        import pyarrow.parquet as pq

        shard, records = keyed
        rows = sorted(records, key=lambda r: (r["source_uri"], r["key"] or ""))
        buf = io.BytesIO()
        with pq.ParquetWriter(buf, AUDIT_SCHEMA) as writer:
            for i in range(0, len(rows), 10_000):
                writer.write_table(pa.Table.from_pylist(rows[i : i + 10_000], schema=AUDIT_SCHEMA))
        uri = layout.part_files(self._prefix, shard, self._num_shards)
        write_bytes(uri, buf.getvalue())
        yield uri


class WriteAudit(beam.PTransform):
    """Audit dicts -> Parquet part files ``OUTPUT/audit/run-<run_id>-KKKKK-of-NNNNN.parquet``.

    Records are spread over ``num_shards`` files by a stable hash of their shard's URI (so the
    records of a container shard land in one file, all or none after a crash); each file
    has a deterministic name and is written whole, so a retried bundle rewrites the same file
    instead of adding duplicates. Storage goes through fsspec like everything else.
    """

    def __init__(self, output: str, run_id: str, num_shards: int = 1) -> None:
        super().__init__()
        if num_shards < 1:
            raise ValueError("audit shards must be >= 1")
        self._prefix = layout.audit_prefix(output, run_id)
        self._num_shards = num_shards

    def expand(self, records):
        n = self._num_shards
        return (
            records
            | "ByShard" >> beam.Map(lambda r: (zlib.crc32(r["shard_uri"].encode()) % n, r))
            | "Group" >> beam.GroupByKey()
            | "WriteParquet" >> beam.ParDo(_WriteAuditShardFn(self._prefix, n))
        )

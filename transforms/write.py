"""Write: anonymized images (atomically, only ever from anonymized pixels) and audit records."""

from __future__ import annotations

import hashlib
import json
import os
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from blurbeam.schemas.audit import AUDIT_SCHEMA, validate_record
from blurbeam.shards import join_output, write_bytes
from blurbeam.task import ImageTask, RunContext


class WriteImageFn(beam.DoFn):
    """Writes ``task.encoded`` (anonymized bytes) under the output root and emits the task's audit
    record. A task that failed anywhere has no encoded bytes and writes nothing."""

    def __init__(self, output: str, ctx: RunContext, progress_dir: str | None = None) -> None:
        self._output = output
        self._ctx = ctx
        self._progress_dir = progress_dir
        self._counters = {
            s: Metrics.counter("blurbeam", f"images_{s}") for s in ("ok", "no_faces", "error")
        }

    def setup(self) -> None:
        self._progress = {"done": 0, "faces": 0, "error": 0}
        self._last_flush = 0.0

    def process(self, task: ImageTask):
        def write(t: ImageTask) -> None:
            if t.encoded is None:
                raise RuntimeError("no anonymized image to write")
            uri = join_output(self._output, t.rel)
            write_bytes(uri, t.encoded)
            t.output_uri = uri
            t.output_sha256 = hashlib.sha256(t.encoded).hexdigest()
            t.encoded = None

        task.run_stage("write", write)
        record = task.audit_record(self._ctx)
        validate_record(record)
        self._counters[record["status"]].inc()
        self._tick(record)
        yield record

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


class WriteAudit(beam.PTransform):
    """Audit dicts -> Parquet part files ``OUTPUT/audit/run-<run_id>-*.parquet``."""

    def __init__(self, output: str, run_id: str) -> None:
        super().__init__()
        self._prefix = join_output(output, f"audit/run-{run_id}")

    def expand(self, records):
        return records | "Parquet" >> beam.io.WriteToParquet(
            self._prefix, AUDIT_SCHEMA, file_name_suffix=".parquet"
        )

"""The unit of work flowing through the anonymize pipeline, and its audit record. Pure code.

Errors are data: a stage that fails calls ``fail``, which records a one-line reason and drops every
pixel buffer the task holds, so no later stage can write original pixels. Every task ends as
exactly one audit record.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from blurbeam import __version__
from blurbeam.detectors.base import Face
from blurbeam.imageio import DecodedImage
from blurbeam.shards import ImageRecord


@dataclass(frozen=True)
class RunContext:
    """What every record of one run shares."""

    run_id: str
    detector: str
    detector_params: str  # JSON
    method: str
    method_params: str  # JSON
    metadata_policy: str  # JSON
    config_hash: str


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of everything that decides the output (not the paths)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    if isinstance(exc, BaseException):
        text = " ".join(str(exc).split())
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    else:
        text = " ".join(exc.split())
    return text[:limit]


@dataclass
class ImageTask:
    source_uri: str
    shard_uri: str
    key: str
    rel: str
    data: bytes | None = None
    source_sha256: str | None = None
    source_bytes: int | None = None
    shard_sha256: str | None = None  # of the whole shard file (the image itself for plain files)
    decoded: DecodedImage | None = None
    faces: list[Face] | None = None
    anonymized: np.ndarray | None = None
    encoded: bytes | None = None
    output_uri: str | None = None
    output_sha256: str | None = None
    detector_model_sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    orientation: int | None = None
    error_stage: str | None = None
    error: str | None = None
    skip_reason: str | None = None  # the input is deliberately not processed (not an image...)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: ImageRecord) -> ImageTask:
        task = cls(rec.source_uri, rec.shard_uri, rec.key, rec.rel)
        if rec.error:
            task.fail("read", rec.error)
        elif rec.skipped:
            task.skip_reason = one_line(rec.skipped)
            task.source_sha256 = rec.sha256
        else:
            task.data = rec.data
            task.source_bytes = len(rec.data or b"")
            task.source_sha256 = hashlib.sha256(rec.data or b"").hexdigest()
        return task

    @property
    def failed(self) -> bool:
        return self.error is not None

    def fail(self, stage: str, reason: BaseException | str) -> None:
        """Record the failure and drop every pixel and byte buffer: fail closed."""
        if self.error is None:
            self.error_stage = stage
            self.error = one_line(reason) or "unknown error"
        self.data = None
        self.decoded = None
        self.anonymized = None
        self.encoded = None
        self.output_uri = None
        self.output_sha256 = None

    def run_stage(self, stage: str, fn) -> bool:
        """Run ``fn(self)`` unless the task already failed or is skipped; time it; turn
        exceptions into a failure. Returns True when the stage ran and succeeded."""
        if self.failed or self.skip_reason:
            return False
        t0 = time.perf_counter()
        try:
            fn(self)
        except Exception as exc:  # every failure becomes an audit record
            from blurbeam.imageio import ImageError

            self.fail(stage, str(exc) if isinstance(exc, ImageError) else exc)
        finally:
            self.timings_ms[stage] = (time.perf_counter() - t0) * 1000.0
        return not self.failed

    @property
    def status(self) -> str:
        if self.failed:
            return "error"
        if self.skip_reason:
            return "skipped"
        return "ok" if self.faces else "no_faces"

    def audit_record(self, ctx: RunContext) -> dict[str, Any]:
        return {
            "run_id": ctx.run_id,
            "source_uri": self.source_uri,
            "shard_uri": self.shard_uri,
            "key": self.key,
            "output_uri": self.output_uri,
            "source_sha256": self.source_sha256,
            "output_sha256": self.output_sha256,
            "source_bytes": self.source_bytes,
            "shard_sha256": self.shard_sha256,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "mode": self.mode,
            "exif_orientation": self.orientation,
            "status": self.status,
            "error_stage": self.error_stage,
            "error": self.error,
            "skip_reason": self.skip_reason,
            "num_faces": None if self.faces is None else len(self.faces),
            "faces": None if self.faces is None else [f.to_dict() for f in self.faces],
            "detector": ctx.detector,
            "detector_params": ctx.detector_params,
            "detector_model_sha256": self.detector_model_sha256,
            "method": ctx.method,
            "method_params": ctx.method_params,
            "metadata_policy": ctx.metadata_policy,
            "config_hash": ctx.config_hash,
            "package_version": __version__,
            "processed_at": datetime.now(UTC),
            "duration_ms": round(sum(self.timings_ms.values()), 3),
        }

"""The unit of work flowing through the anonymize and deblur pipelines, and its audit record.
Pure code.

An ``ImageTask`` is immutable: each stage returns a new task (``ImageTask.stage``), as Beam
requires of DoFns (they must not change their inputs). Errors are data: a stage that raises
yields a task with a one-line reason and no pixel or byte buffer left (``with_error``), so no
later stage can write original pixels. Every task ends as exactly one audit record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from blurbeam import __version__
from blurbeam.detectors.base import Face
from blurbeam.errors import one_line
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


@dataclass(frozen=True)
class Restoration:
    """What the deblur pipeline measured on one image's faces (``blurbeam.deblur.apply``)."""

    model_sha256: str
    sharpness_before: tuple[float, ...]
    sharpness_after: tuple[float, ...]
    blur_length_px: tuple[float, ...] | None  # None unless estimated for every face
    blur_angle_deg: tuple[float, ...] | None


#: The buffers ``with_error`` drops (everything that holds image data).
_BUFFERS = ("data", "decoded", "output_pixels", "encoded", "output_uri", "output_sha256")


@dataclass(frozen=True)
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
    faces: tuple[Face, ...] | None = None
    #: The pixels to encode and write: the anonymized image (anonymize) or the restored one
    #: (deblur). Only ever set by those stages, never from the source.
    output_pixels: np.ndarray | None = None
    encoded: bytes | None = None
    output_uri: str | None = None
    output_sha256: str | None = None
    detector_model_sha256: str | None = None
    restoration: Restoration | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    orientation: int | None = None
    error_stage: str | None = None
    error: str | None = None
    skip_reason: str | None = None  # the input is deliberately not processed (not an image...)
    #: Milliseconds per stage; a new mapping for each new task, never changed in place.
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    #: A video input's facts (``schemas.audit.VIDEO``); None for an image.
    video: Mapping[str, Any] | None = None

    @classmethod
    def from_record(cls, rec: ImageRecord, shard_sha256: str | None = None) -> ImageTask:
        task = cls(rec.source_uri, rec.shard_uri, rec.key, rec.rel, shard_sha256=shard_sha256)
        if rec.error:
            return task.with_error("read", rec.error)
        if rec.skipped:
            return task.replace(skip_reason=one_line(rec.skipped), source_sha256=rec.sha256)
        data = rec.data or b""
        return task.replace(
            data=rec.data,
            source_bytes=len(data),
            source_sha256=hashlib.sha256(data).hexdigest(),
        )

    def replace(self, **changes: Any) -> ImageTask:
        return dataclasses.replace(self, **changes)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def with_error(self, stage: str, reason: BaseException | str) -> ImageTask:
        """This task failed at ``stage``: the first reason is kept and every pixel and byte
        buffer is dropped (fail closed)."""
        changes: dict[str, Any] = dict.fromkeys(_BUFFERS)
        if self.error is None:
            changes.update(error_stage=stage, error=one_line(reason) or "unknown error")
        return self.replace(**changes)

    def stage(
        self, name: str, fn: Callable[[ImageTask], Mapping[str, Any]], *, timed_as: str = ""
    ) -> ImageTask:
        """The task after stage ``name``: ``fn(self)`` returns the fields it changes. Skipped
        when the task already failed or is skipped; timed (added to ``timings_ms[timed_as or
        name]``); an exception becomes ``with_error(name, ...)``."""
        if self.failed or self.skip_reason:
            return self
        t0 = time.perf_counter()
        try:
            changes = fn(self)
            task = self.replace(**changes)
        except Exception as exc:  # every failure becomes an audit record
            from blurbeam.imageio import ImageError

            task = self.with_error(name, str(exc) if isinstance(exc, ImageError) else exc)
        slot = timed_as or name
        ms = (time.perf_counter() - t0) * 1000.0
        return task.replace(
            timings_ms={**self.timings_ms, slot: self.timings_ms.get(slot, 0.0) + ms}
        )

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
            "video": None if self.video is None else dict(self.video),
        }

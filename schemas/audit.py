"""The audit record: one row per input image or video. This module is the one source of truth for its
Arrow schema; ``schemas/AUDIT.md`` documents every field."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

STATUSES = ("ok", "no_faces", "error", "skipped")
#: Statuses that end an input's processing under a config: a rerun with --skip-existing does not
#: redo them (errors only with --retry-errors).
SUCCESS = ("ok", "no_faces", "skipped")

LANDMARK = pa.struct([("x", pa.float32()), ("y", pa.float32())])
FACE = pa.struct(
    [
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("w", pa.float32()),
        ("h", pa.float32()),
        ("score", pa.float32()),
        ("landmarks", pa.list_(LANDMARK)),
        # "detector" or "reviewer" (a box added by ``anonymize --corrections``); null in audit
        # files written before the field existed (pyarrow reads them with this schema)
        ("source", pa.string()),
    ]
)

#: The facts of a video input (null for an image); ``schemas/video.py`` holds its per-frame
#: face records. Null in audit files written before the field existed (pyarrow reads them with
#: this schema).
VIDEO = pa.struct(
    [
        ("frames", pa.int64()),  # frames read and written (the same count)
        ("duration_s", pa.float64()),  # the container's duration
        ("fps", pa.float64()),  # frames over the time from the first frame to the last's end
        ("rotation", pa.int16()),  # display rotation, counter-clockwise degrees, kept
        ("codec_in", pa.string()),
        ("codec_out", pa.string()),
        ("encode", pa.string()),  # JSON: the encoder and its quality setting
        ("audio_streams", pa.int32()),  # audio streams copied packet for packet
        ("dropped_streams", pa.list_(pa.string())),  # "index:type:codec" of streams left out
        ("segments", pa.int32()),  # segments encoded and joined
        ("faces_detected", pa.int64()),  # detections over all frames
        ("face_boxes", pa.int64()),  # boxes blurred over all frames (tracked ones included)
        ("tracks", pa.int32()),
        ("frames_with_faces", pa.int64()),
        ("frame_faces_uri", pa.string()),  # the per-frame face records (schemas/video.py)
        # sha256 of that file as written: ``blurbeam report --verify`` checks it (null in audit
        # files written before the field existed)
        ("frame_faces_sha256", pa.string()),
    ]
)

AUDIT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source_uri", pa.string()),
        ("shard_uri", pa.string()),
        ("key", pa.string()),
        ("output_uri", pa.string()),
        ("source_sha256", pa.string()),
        ("output_sha256", pa.string()),
        ("source_bytes", pa.int64()),
        ("shard_sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("mode", pa.string()),
        ("exif_orientation", pa.int8()),
        ("status", pa.string()),
        ("error_stage", pa.string()),
        ("error", pa.string()),
        ("skip_reason", pa.string()),
        ("num_faces", pa.int32()),
        ("faces", pa.list_(FACE)),
        ("detector", pa.string()),
        ("detector_params", pa.string()),
        ("detector_model_sha256", pa.string()),
        ("method", pa.string()),
        ("method_params", pa.string()),
        ("metadata_policy", pa.string()),
        ("config_hash", pa.string()),
        ("package_version", pa.string()),
        ("processed_at", pa.timestamp("us", tz="UTC")),
        ("duration_ms", pa.float64()),
        ("video", VIDEO),
    ]
)

FIELD_NAMES = tuple(AUDIT_SCHEMA.names)


def validate_record(record: dict[str, Any]) -> None:
    """Raise ValueError when a record does not have exactly the schema's fields or a bad status."""
    missing = set(FIELD_NAMES) - set(record)
    extra = set(record) - set(FIELD_NAMES)
    if missing or extra:
        raise ValueError(
            f"audit record fields differ: missing={sorted(missing)} extra={sorted(extra)}"
        )
    if record["status"] not in STATUSES:
        raise ValueError(f"bad status {record['status']!r}")
    if (record["status"] == "error") != bool(record["error"]):
        raise ValueError("status 'error' and a non-empty error must go together")
    if (record["status"] == "skipped") != bool(record.get("skip_reason")):
        raise ValueError("status 'skipped' and a non-empty skip_reason must go together")

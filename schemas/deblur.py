"""The deblur record: one row per input image of ``blurbeam deblur``.

It is the audit record (``schemas.audit``: source, output, status, error, faces, detector,
timings ...) with ``method = "deblur"`` plus the restoration fields below.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from blurbeam.schemas.audit import AUDIT_SCHEMA, STATUSES
from blurbeam.schemas.audit import FIELD_NAMES as AUDIT_FIELDS

DEBLUR_FIELDS = [
    # per face, in the order of ``faces``: variance of the Laplacian of the face crop at the
    # model size (0-255 grey scale), before and after restoration
    ("sharpness_before", pa.list_(pa.float32())),
    ("sharpness_after", pa.list_(pa.float32())),
    # per face: the restoration network's estimate of the blur it undid, as the straight motion
    # blur with the same spread: its length in the source image's pixels and its direction
    # (degrees in [0, 180), counter-clockwise from the image's x axis); null when the weights'
    # network estimates no kernel
    ("blur_length_px", pa.list_(pa.float32())),
    ("blur_angle_deg", pa.list_(pa.float32())),
    ("whole_image", pa.bool_()),  # the image was restored as one pre-cropped face
    ("model_sha256", pa.string()),  # sha256 of the restoration weights file
]

DEBLUR_SCHEMA = pa.schema(list(AUDIT_SCHEMA) + [pa.field(n, t) for n, t in DEBLUR_FIELDS])
FIELD_NAMES = tuple(DEBLUR_SCHEMA.names)


def validate_record(record: dict[str, Any]) -> None:
    missing = set(FIELD_NAMES) - set(record)
    extra = set(record) - set(FIELD_NAMES)
    if missing or extra:
        raise ValueError(
            f"deblur record fields differ: missing={sorted(missing)} extra={sorted(extra)}"
        )
    if record["status"] not in STATUSES:
        raise ValueError(f"bad status {record['status']!r}")
    if (record["status"] == "error") != bool(record["error"]):
        raise ValueError("status 'error' and a non-empty error must go together")
    n = record["num_faces"]
    for key in ("sharpness_before", "sharpness_after", "blur_length_px", "blur_angle_deg"):
        if record[key] is not None and n is not None and len(record[key]) != n:
            raise ValueError(f"{key} has {len(record[key])} values for {n} faces")


__all__ = ["DEBLUR_SCHEMA", "FIELD_NAMES", "validate_record", "AUDIT_FIELDS"]

"""The per-frame face record of a video: one row per face box in one frame.

A video has one audit record (``schemas.audit``) and, beside it, these rows: every box that was
blurred in every frame, where it came from (``detected`` by the detector, ``interpolated``
between two detections of its track, or ``propagated`` before the first / after the last
detection of its track) and the track it belongs to. Boxes are in the pixels of the frame as
displayed (the container's rotation applied).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

SOURCES = ("detected", "propagated", "interpolated")

FRAME_FACE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source_uri", pa.string()),  # the video, as in its audit record
        ("frame_index", pa.int32()),  # presentation order, from 0
        ("pts", pa.int64()),  # the frame's timestamp in the video stream's time base
        ("time_s", pa.float64()),  # the same, in seconds
        ("track_id", pa.int64()),  # unique within the video
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("w", pa.float32()),
        ("h", pa.float32()),
        # the detector's score; for a propagated or interpolated box the score of the
        # detection(s) it comes from
        ("score", pa.float32()),
        ("source", pa.string()),
    ]
)

FIELD_NAMES = tuple(FRAME_FACE_SCHEMA.names)


def frame_face_rows(
    run_id: str, source_uri: str, frames: Iterable[Any], time_base: Any
) -> list[dict[str, Any]]:
    """Rows for ``frames`` (``blurbeam.video.process.FrameBoxes``); ``time_base`` is the
    video stream's (a ``Fraction``)."""
    rows = []
    for frame in frames:
        for box in frame.boxes:
            if box.source not in SOURCES:
                raise ValueError(f"bad box source {box.source!r}")
            rows.append(
                {
                    "run_id": run_id,
                    "source_uri": source_uri,
                    "frame_index": frame.index,
                    "pts": frame.pts,
                    "time_s": float(frame.pts * time_base),
                    "track_id": box.track_id,
                    "x": box.x,
                    "y": box.y,
                    "w": box.w,
                    "h": box.h,
                    "score": box.score,
                    "source": box.source,
                }
            )
    return rows


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=FRAME_FACE_SCHEMA)

"""Corrections: ``anonymize --corrections`` re-processes the reviewed inputs only, with the boxes a
reviewer drew added to the detector's.

``ReadCorrected`` reads and decodes the shards that hold the corrected inputs (every image of a
container shard, since an output shard is written whole). ``AddReviewerBoxesFn`` runs after
detection: it adds each missed face as a ``Face`` with ``source="reviewer"`` (so it goes
through the same mask scaling and blur as a detected one) and, with ``drop_false_positives``,
removes the detections the reviewer marked; without it they stay blurred."""

from __future__ import annotations

import apache_beam as beam

from blurbeam.detectors.base import Face
from blurbeam.geometry import iou
from blurbeam.review.corrections import SAME_FACE_IOU, Correction
from blurbeam.task import ImageTask
from blurbeam.transforms.image import DecodeFn
from blurbeam.transforms.read import ReadImagesFn


class ReadCorrected(beam.PTransform):
    """The shards holding corrected inputs -> decoded ImageTasks, as ``ReadImages`` gives them.
    After it is applied, ``already_done`` is an empty PCollection (nothing is skipped)."""

    def __init__(
        self,
        refs: list,
        max_pixels: int,
        max_bytes: int,
        *,
        image_column: str | None = None,
        opencv_threads: int | None = None,
        allow_image_fields: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self._refs = list(refs)
        self._max_pixels = max_pixels
        self._read = ReadImagesFn(
            max_bytes,
            image_column=image_column,
            opencv_threads=opencv_threads,
            allow_image_fields=allow_image_fields,
        )

    def expand(self, pbegin):
        self.already_done = pbegin | "NothingDone" >> beam.Create([])
        return (
            pbegin
            | "CorrectedShards" >> beam.Create(self._refs)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(self._read)
            | "Tasks" >> beam.Filter(lambda x: isinstance(x, ImageTask))
            | "Decode" >> beam.ParDo(DecodeFn(self._max_pixels))
        )


def apply_correction(task: ImageTask, c: Correction, drop_false_positives: bool) -> None:
    """Add the reviewer's boxes to ``task.faces`` (in place). Raises when the input is not the
    one reviewed (its sha256 or upright size differ): the task then fails, fail closed."""
    if task.source_sha256 != c.source_sha256:
        raise RuntimeError(
            f"the input changed since it was reviewed (sha256 {task.source_sha256}, reviewed "
            f"{c.source_sha256})"
        )
    if (task.width, task.height) != (c.width, c.height):
        raise RuntimeError(
            f"the correction's boxes are for a {c.width}x{c.height} image, the input is "
            f"{task.width}x{task.height}"
        )
    faces = list(task.faces or [])
    if drop_false_positives:
        faces = [
            f
            for f in faces
            if not any(iou((f.x, f.y, f.w, f.h), fp) >= SAME_FACE_IOU for fp in c.false_positives)
        ]
    faces += [Face(x, y, w, h, 1.0, None, "reviewer") for x, y, w, h in c.missed_faces]
    task.faces = faces


class AddReviewerBoxesFn(beam.DoFn):
    """Detected tasks -> the same tasks with their correction applied (``corrections`` maps
    the input URI, as the pipeline names it, to its correction; a correction that does not fit
    its input fails the task). ``stored`` are the corrections earlier runs kept under the
    output: each applies only while its input's sha256 is the reviewed one."""

    def __init__(
        self,
        corrections: dict[str, Correction],
        drop_false_positives: bool,
        stored: dict[str, Correction] | None = None,
    ) -> None:
        self._corrections = dict(corrections)
        self._drop = drop_false_positives
        self._stored = dict(stored or {})

    def process(self, task: ImageTask):
        c = self._corrections.get(task.source_uri)
        if c is None:  # a correction an earlier run kept: only for the bytes it reviewed
            c = self._stored.get(task.source_uri)
            if c is not None and c.source_sha256 != task.source_sha256:
                c = None
        if c is not None and task.faces is not None:
            detect_ms = task.timings_ms.get("detect", 0.0)
            # a correction that does not fit its input fails the task at the detect stage
            drop = self._drop or c.drop_false_positives
            task.run_stage("detect", lambda t: apply_correction(t, c, drop))
            task.timings_ms["detect"] += detect_ms
        yield task

"""Corrections: ``anonymize --corrections`` re-processes the reviewed inputs only, with the boxes a
reviewer drew added to the detector's.

``ReadCorrected`` reads and decodes the shards that hold the corrected inputs (every image of a
container shard, since an output shard is written whole). ``AddReviewerBoxesFn`` runs after
detection: it adds each missed face as a ``Face`` with ``source="reviewer"`` (so it goes
through the same mask scaling and blur as a detected one) and, with ``drop_false_positives``,
removes the detections the reviewer marked; without it they stay blurred."""

from __future__ import annotations

import apache_beam as beam

from blurbeam.review.corrections import Correction
from blurbeam.stages import ReviewerBoxes
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
        self._boxes = ReviewerBoxes(corrections, drop_false_positives, stored)

    def process(self, task: ImageTask):
        yield self._boxes(task)

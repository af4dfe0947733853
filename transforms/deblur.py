"""Deblur: restore the faces of decoded, detected ImageTasks; write images and deblur records.

Reuses the anonymize chain's ``ReadImages``, ``DetectFaces`` and ``EncodeFn`` (which encodes
``task.output_pixels``: here, the restored pixels). The restorer runs through ``RunInference``
behind ``RestorerHandler`` (``blurbeam.transforms.models``): one model per worker process.
"""

from __future__ import annotations

import apache_beam as beam

from blurbeam.stages import whole_image_face
from blurbeam.task import ImageTask
from blurbeam.transforms.models import Infer, RestorerHandler
from blurbeam.transforms.write import WriteImageFn


class WholeImageFaceFn(beam.DoFn):
    """--whole-image: the image is one face (no detector)."""

    def process(self, task: ImageTask):
        yield whole_image_face(task)


class WriteRestoredFn(WriteImageFn):
    """Writes the restored image (never the source bytes) and yields the deblur record."""

    def __init__(self, output: str, ctx, whole_image: bool, progress_dir: str | None = None):
        super().__init__(output, ctx, progress_dir)
        self._whole = whole_image

    def process(self, task: ImageTask):
        from blurbeam.schemas.deblur import validate_record

        for record in super().process(task):
            r = task.restoration
            measured = record["status"] != "error" and r is not None
            for name in ("sharpness_before", "sharpness_after", "blur_length_px", "blur_angle_deg"):
                values = getattr(r, name) if measured else None
                record[name] = list(values) if values is not None else None
            record["whole_image"] = self._whole
            record["model_sha256"] = r.model_sha256 if r else None
            validate_record(record)
            yield record


class RestoreAndWrite(beam.PTransform):
    """Detected tasks -> restored images under ``output`` + deblur Parquet records."""

    def __init__(
        self,
        output,
        ctx,
        weights,
        margin,
        feather,
        whole_image,
        policy,
        progress_dir=None,
        preset="default",
    ):
        super().__init__()
        self._a = (output, ctx, weights, margin, feather, whole_image, policy, progress_dir)
        self._preset = preset

    def expand(self, tasks):
        from blurbeam.schemas.deblur import DEBLUR_SCHEMA
        from blurbeam.shards import join_output
        from blurbeam.transforms.image import EncodeFn

        output, ctx, weights, margin, feather, whole, policy, progress_dir = self._a
        records = (
            tasks
            | "Restore"
            >> Infer(RestorerHandler(weights, margin, feather, whole, preset=self._preset))
            | "Encode" >> beam.ParDo(EncodeFn(policy))
            | "WriteImages" >> beam.ParDo(WriteRestoredFn(output, ctx, whole, progress_dir))
        )
        _ = records | "WriteRecords" >> beam.io.WriteToParquet(
            join_output(output, f"records/run-{ctx.run_id}"),
            DEBLUR_SCHEMA,
            file_name_suffix=".parquet",
        )
        return records

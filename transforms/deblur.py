"""Deblur: restore the faces of decoded, detected ImageTasks; write images and deblur records.

Reuses the anonymize chain's ``ReadImages``, ``DetectFaces`` and ``EncodeFn`` (which encodes
``task.anonymized``: here, the restored pixels). The restoration model is loaded once per
worker process through ``apache_beam.utils.shared.Shared``.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from blurbeam.detectors.base import Face
from blurbeam.task import ImageTask
from blurbeam.transforms.write import WriteImageFn


class _Holder:
    def __init__(self, restorer) -> None:
        self.restorer = restorer


class WholeImageFaceFn(beam.DoFn):
    """--whole-image: the image is one face (no detector)."""

    def process(self, task: ImageTask):
        def run(t: ImageTask) -> None:
            t.faces = [Face(0.0, 0.0, float(t.decoded.width), float(t.decoded.height), 1.0)]

        task.run_stage("detect", run)
        yield task


class RestoreFn(beam.DoFn):
    def __init__(
        self,
        weights: str | None,
        margin: float,
        feather: float,
        whole_image: bool,
        shared_handle: shared.Shared | None = None,
        preset: str = "default",
    ) -> None:
        self._weights = weights
        self._preset = preset
        self._margin = margin
        self._feather = feather
        self._whole = whole_image
        self._shared = shared_handle or shared.Shared()
        self._loads = Metrics.counter("blurbeam", "model_loads")
        self._restored = Metrics.counter("blurbeam", "faces_restored")
        self._loaded_here = False

    def setup(self) -> None:
        def load() -> _Holder:
            from blurbeam.deblur.model import Restorer

            holder = _Holder(Restorer(self._weights, preset=self._preset))
            self._loaded_here = True
            return holder

        tag = f"restorer:{self._weights or 'preset:' + self._preset}"
        self._holder = self._shared.acquire(load, tag=tag)

    def process(self, task: ImageTask):
        if self._loaded_here:
            self._loads.inc()
            self._loaded_here = False
        restorer = self._holder.restorer

        def run(t: ImageTask) -> None:
            from blurbeam.deblur.apply import restore_faces, restore_whole

            if t.faces is None:
                raise RuntimeError("no detection result")
            t.model_sha256 = restorer.weights_sha256
            if self._whole:
                t.anonymized, res = restore_whole(t.decoded.pixels, restorer)
                results = [res]
            elif t.faces:
                boxes = [(f.x, f.y, f.w, f.h) for f in t.faces]
                t.anonymized, results = restore_faces(
                    t.decoded.pixels, boxes, restorer, self._margin, self._feather
                )
            else:
                t.anonymized, results = t.decoded.pixels, []
            t.sharpness_before = [r.sharpness_before for r in results]
            t.sharpness_after = [r.sharpness_after for r in results]
            estimated = all(r.blur_length_px is not None for r in results)
            t.blur_length_px = [r.blur_length_px for r in results] if estimated else None
            t.blur_angle_deg = [r.blur_angle_deg for r in results] if estimated else None

        if task.run_stage("restore", run):
            self._restored.inc(len(task.sharpness_before))
        yield task


class WriteRestoredFn(WriteImageFn):
    """Writes the restored image (never the source bytes) and yields the deblur record."""

    def __init__(self, output: str, ctx, whole_image: bool, progress_dir: str | None = None):
        super().__init__(output, ctx, progress_dir)
        self._whole = whole_image

    def process(self, task: ImageTask):
        from blurbeam.schemas.deblur import validate_record

        for record in super().process(task):
            ok = record["status"] != "error"
            before = getattr(task, "sharpness_before", None)
            after = getattr(task, "sharpness_after", None)
            record.update(
                sharpness_before=before if ok else None,
                sharpness_after=after if ok else None,
                blur_length_px=getattr(task, "blur_length_px", None) if ok else None,
                blur_angle_deg=getattr(task, "blur_angle_deg", None) if ok else None,
                whole_image=self._whole,
                model_sha256=getattr(task, "model_sha256", None),
            )
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
            >> beam.ParDo(RestoreFn(weights, margin, feather, whole, preset=self._preset))
            | "Encode" >> beam.ParDo(EncodeFn(policy))
            | "WriteImages" >> beam.ParDo(WriteRestoredFn(output, ctx, whole, progress_dir))
        )
        _ = records | "WriteRecords" >> beam.io.WriteToParquet(
            join_output(output, f"records/run-{ctx.run_id}"),
            DEBLUR_SCHEMA,
            file_name_suffix=".parquet",
        )
        return records

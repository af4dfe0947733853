"""The anonymize chain as composable PTransforms: ``ReadImages`` (expand + read + decode),
``DetectFaces`` and ``AnonymizeAndWrite``. The evaluate and deblur pipelines reuse the first two."""

from __future__ import annotations

import apache_beam as beam

from blurbeam.blur import BlurConfig
from blurbeam.detectors import DetectorSpec
from blurbeam.imageio import MetadataPolicy
from blurbeam.task import RunContext
from blurbeam.transforms.detect import DetectFn
from blurbeam.transforms.image import AnonymizeFn, DecodeFn, EncodeFn
from blurbeam.transforms.read import ExpandInput, ReadImagesFn
from blurbeam.transforms.write import WriteAudit, WriteImageFn


class ReadImages(beam.PTransform):
    """--input spec -> decoded ImageTasks (failed reads/decodes travel on as failed tasks)."""

    def __init__(self, spec: str, max_pixels: int, max_bytes: int, exclude: str | None = None):
        super().__init__()
        self._spec, self._max_pixels, self._max_bytes, self._exclude = (
            spec,
            max_pixels,
            max_bytes,
            exclude,
        )

    def expand(self, pbegin):
        return (
            pbegin
            | "Expand" >> ExpandInput(self._spec, self._exclude)
            | "Read" >> beam.ParDo(ReadImagesFn(self._max_bytes))
            | "Decode" >> beam.ParDo(DecodeFn(self._max_pixels))
        )


class DetectFaces(beam.PTransform):
    def __init__(self, spec: DetectorSpec):
        super().__init__()
        self._spec = spec

    def expand(self, tasks):
        return tasks | "Detect" >> beam.ParDo(DetectFn(self._spec))


class AnonymizeAndWrite(beam.PTransform):
    """Detected tasks -> anonymized images under ``output`` + audit Parquet; returns the audit
    records PCollection (one dict per input image)."""

    def __init__(
        self,
        output: str,
        ctx: RunContext,
        blur: BlurConfig,
        policy: MetadataPolicy,
        progress_dir: str | None = None,
        audit_shards: int = 1,
    ):
        super().__init__()
        self._output, self._ctx, self._blur, self._policy = output, ctx, blur, policy
        self._progress_dir = progress_dir
        self._audit_shards = audit_shards

    def expand(self, tasks):
        records = (
            tasks
            | "Anonymize" >> beam.ParDo(AnonymizeFn(self._blur))
            | "Encode" >> beam.ParDo(EncodeFn(self._policy))
            | "WriteImages" >> beam.ParDo(WriteImageFn(self._output, self._ctx, self._progress_dir))
        )
        _ = records | "WriteAudit" >> WriteAudit(self._output, self._ctx.run_id, self._audit_shards)
        return records

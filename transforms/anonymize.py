"""The anonymize chain as composable PTransforms: ``ReadImages`` (expand + read + decode),
``DetectFaces`` and ``AnonymizeAndWrite``. The evaluate and deblur pipelines reuse the first two.

Plain image files are written one by one as they come; images from container shards (tar,
Parquet, TFRecord: their tasks have a non-empty ``key``) are grouped by shard and each output shard
is written whole, in the input's format, by ``WriteShardFn``."""

from __future__ import annotations

import apache_beam as beam

from blurbeam.blur import BlurConfig
from blurbeam.detectors import DetectorSpec
from blurbeam.imageio import MetadataPolicy
from blurbeam.shards import ShardOptions
from blurbeam.task import ImageTask, RunContext
from blurbeam.transforms.image import AnonymizeFn, DecodeFn, EncodeFn
from blurbeam.transforms.models import DetectorHandler, Infer
from blurbeam.transforms.read import ExpandInput, ReadImagesFn
from blurbeam.transforms.write import WriteAudit, WriteImageFn, WriteShardFn


class ReadImages(beam.PTransform):
    """--input spec -> decoded ImageTasks (failed reads/decodes travel on as failed tasks;
    with ``every_file`` every file under the input is a task, files that are not processed as
    ``skipped`` ones). After it is applied, ``already_done`` is the PCollection of done-index
    rows of the inputs that ``skip_existing`` found done (empty without it)."""

    def __init__(
        self,
        spec: str,
        max_pixels: int,
        max_bytes: int,
        exclude: str | None = None,
        *,
        image_column: str | None = None,
        skip_existing: tuple[str, str, str] | None = None,
        input_slices: int = 1,
        opencv_threads: int | None = None,
        allow_image_fields: tuple[str, ...] = (),
        every_file: bool = False,
        retry_errors: bool = False,
    ):
        super().__init__()
        self._every_file = every_file
        self._retry_errors = retry_errors
        self._spec, self._max_pixels, self._max_bytes, self._exclude = (
            spec,
            max_pixels,
            max_bytes,
            exclude,
        )
        self._image_column = image_column
        self._skip_existing = skip_existing
        self._input_slices = input_slices
        self._opencv_threads = opencv_threads
        self._allow_image_fields = tuple(allow_image_fields)

    def expand(self, pbegin):
        read = ReadImagesFn(
            self._max_bytes,
            image_column=self._image_column,
            skip_existing=self._skip_existing,
            opencv_threads=self._opencv_threads,
            allow_image_fields=self._allow_image_fields,
            retry_errors=self._retry_errors,
        )
        read_out = (
            pbegin
            | "Expand"
            >> ExpandInput(self._spec, self._exclude, self._input_slices, self._every_file)
            | "Read" >> beam.ParDo(read)
        )
        self.already_done = read_out | "AlreadyDone" >> beam.Filter(
            lambda x: not isinstance(x, ImageTask)
        )
        tasks = read_out | "Tasks" >> beam.Filter(lambda x: isinstance(x, ImageTask))
        return tasks | "Decode" >> beam.ParDo(DecodeFn(self._max_pixels))


class DetectFaces(beam.PTransform):
    """Faces for each task, through ``RunInference`` with ``DetectorHandler``; ``threads`` is
    each worker's thread budget for the detector's inference library (0: its default; see
    ``Detector.threads``). With ``expected_model_sha256`` a worker whose model differs fails
    every task it gets."""

    def __init__(
        self, spec: DetectorSpec, threads: int = 0, expected_model_sha256: str | None = None
    ):
        super().__init__()
        self._spec = spec
        self._threads = threads
        self._expected = expected_model_sha256

    def expand(self, tasks):
        handler = DetectorHandler(
            self._spec, threads=self._threads, expected_model_sha256=self._expected
        )
        return tasks | "Detect" >> Infer(handler)


class AnonymizeAndWrite(beam.PTransform):
    """Detected tasks -> anonymized images under ``output`` + audit Parquet; returns the audit
    records PCollection (one dict per input). After it is applied, ``audit_files`` is the
    PCollection of the audit files written."""

    def __init__(
        self,
        output: str,
        ctx: RunContext,
        blur: BlurConfig,
        policy: MetadataPolicy,
        progress_dir: str | None = None,
        audit_shards: int = 1,
        shard_options: ShardOptions | None = None,
    ):
        super().__init__()
        self._output, self._ctx, self._blur, self._policy = output, ctx, blur, policy
        self._progress_dir = progress_dir
        self._audit_shards = audit_shards
        self._shard_options = shard_options or ShardOptions()

    def expand(self, tasks):
        encoded = (
            tasks
            | "Anonymize" >> beam.ParDo(AnonymizeFn(self._blur))
            | "Encode" >> beam.ParDo(EncodeFn(self._policy))
        )
        file_records = (
            encoded
            | "PlainFiles" >> beam.Filter(lambda t: not t.key)
            | "WriteImages" >> beam.ParDo(WriteImageFn(self._output, self._ctx, self._progress_dir))
        )
        shard_records = (
            encoded
            | "InShards" >> beam.Filter(lambda t: bool(t.key))
            | "KeyByShard" >> beam.Map(lambda t: ((t.shard_uri, t.rel), t))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards"
            >> beam.ParDo(
                WriteShardFn(self._output, self._ctx, self._progress_dir, self._shard_options)
            )
        )
        records = (file_records, shard_records) | "AllRecords" >> beam.Flatten()
        self.audit_files = records | "WriteAudit" >> WriteAudit(
            self._output, self._ctx.run_id, self._audit_shards
        )
        return records

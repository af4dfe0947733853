"""Deblur: restore the faces of the input's images; write the restored images and deblur records.

``Deblur`` is the whole pipeline, applied to the pipeline root. Plain image files reuse the
anonymize chain's reading (``ExpandInput``, ``ReadImagesFn``, ``DecodeFn``) and ``EncodeFn`` (which
encodes ``task.output_pixels``: here, the restored pixels); the detector and the restorer run
through ``RunInference`` behind ``DetectorHandler`` and ``RestorerHandler``
(``blurbeam.transforms.models``): one model each per worker process. Container
shards (tar, Parquet, TFRecord) are streamed whole by ``RestoreShardFn`` (the anonymize
pipeline's ``StreamShardFn`` with ``RestoreImage`` per image): a restored shard in the input's
format, one deblur record per image.
"""

from __future__ import annotations

import apache_beam as beam

from blurbeam.detectors import DetectorSpec
from blurbeam.imageio import DEFAULT_MAX_PIXELS, MetadataPolicy
from blurbeam.shards import ShardOptions
from blurbeam.stages import decode_task, encode_task, whole_image_face
from blurbeam.task import ImageTask, RunContext
from blurbeam.transforms.models import DetectorHandler, Infer, RestorerHandler, SharedModel
from blurbeam.transforms.read import ExpandInput, ReadImagesFn
from blurbeam.transforms.shard import StreamShardFn, is_container
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

    def _record(self, task: ImageTask) -> dict:
        return deblur_record(super()._record(task), task, self._whole)


def deblur_record(record: dict, task: ImageTask, whole_image: bool) -> dict:
    """The audit ``record`` of ``task`` with the restoration fields of a deblur record."""
    from blurbeam.schemas.deblur import validate_record

    r = task.restoration
    measured = record["status"] != "error" and r is not None
    for name in ("sharpness_before", "sharpness_after", "blur_length_px", "blur_angle_deg"):
        values = getattr(r, name) if measured else None
        record[name] = list(values) if values is not None else None
    record["whole_image"] = whole_image
    record["model_sha256"] = r.model_sha256 if r else None
    validate_record(record)
    return record


class RestoreImage:
    """Decode, detect (the process-wide detector of ``detector``; None: the whole image is one
    face), restore (the process-wide restorer of ``restorer``), encode: a container shard's
    per-image work (``StreamShardFn``)."""

    def __init__(
        self,
        detector: DetectorHandler | None,
        restorer: RestorerHandler,
        policy: MetadataPolicy,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self._detector = SharedModel(detector) if detector is not None else None
        self._restorer = SharedModel(restorer)
        self._policy = policy
        self._max_pixels = max_pixels

    def setup(self) -> None:
        if self._detector is not None:
            self._detector.acquire()
        self._restorer.acquire()

    def __call__(self, task: ImageTask) -> ImageTask:
        task = decode_task(task, self._max_pixels)
        task = self._detector.infer(task) if self._detector else whole_image_face(task)
        return encode_task(self._restorer.infer(task), self._policy)


class RestoreShardFn(StreamShardFn):
    """A container shard -> the restored shard + one deblur record per image."""

    def __init__(
        self,
        output: str,
        ctx: RunContext,
        image_fn: RestoreImage,
        whole_image: bool,
        opts: ShardOptions | None = None,
        progress_dir: str | None = None,
    ) -> None:
        super().__init__(output, ctx, image_fn, opts, progress_dir)
        self._whole = whole_image

    def _record(self, task: ImageTask) -> dict:
        return deblur_record(super()._record(task), task, self._whole)


class Deblur(beam.PTransform):
    """The whole deblur pipeline, applied to the pipeline root: ``input_spec`` -> restored
    images and shards under ``output`` + deblur Parquet records under ``output/records/``;
    returns the record PCollection (one dict per input image). ``detector`` None: each input is
    one pre-cropped face (``--whole-image``)."""

    def __init__(
        self,
        *,
        input_spec: str,
        output: str,
        ctx: RunContext,
        detector: DetectorSpec | None,
        weights: str | None,
        margin: float,
        feather: float,
        policy: MetadataPolicy,
        max_pixels: int,
        max_bytes: int,
        preset: str = "default",
        progress_dir: str | None = None,
    ):
        super().__init__()
        self._input_spec, self._output, self._ctx = input_spec, output, ctx
        self._detector = DetectorHandler(detector) if detector is not None else None
        self._whole = detector is None
        self._restorer = RestorerHandler(weights, margin, feather, self._whole, preset=preset)
        self._policy, self._max_pixels, self._max_bytes = policy, max_pixels, max_bytes
        self._progress_dir = progress_dir

    def expand(self, pbegin):
        from blurbeam.schemas import layout
        from blurbeam.schemas.deblur import DEBLUR_SCHEMA
        from blurbeam.transforms.image import DecodeFn, EncodeFn

        refs = pbegin | "ListInput" >> ExpandInput(self._input_spec, self._output)
        tasks = (
            refs
            | "PlainFiles" >> beam.Filter(lambda r: not is_container(r))
            | "ReadFiles" >> beam.ParDo(ReadImagesFn(self._max_bytes))
            | "Decode" >> beam.ParDo(DecodeFn(self._max_pixels))
        )
        if self._detector is None:
            detected = tasks | "WholeImage" >> beam.ParDo(WholeImageFaceFn())
        else:
            detected = tasks | "Detect" >> Infer(self._detector)
        write = WriteRestoredFn(self._output, self._ctx, self._whole, self._progress_dir)
        file_records = (
            detected
            | "Restore" >> Infer(self._restorer)
            | "Encode" >> beam.ParDo(EncodeFn(self._policy))
            | "WriteImages" >> beam.ParDo(write)
        )
        image_fn = RestoreImage(self._detector, self._restorer, self._policy, self._max_pixels)
        stream = RestoreShardFn(
            self._output,
            self._ctx,
            image_fn,
            self._whole,
            ShardOptions(max_bytes=self._max_bytes),
            self._progress_dir,
        )
        shard_records = (
            refs
            | "ContainerShards" >> beam.Filter(is_container)
            | "StreamShards" >> beam.ParDo(stream)
        )
        records = (file_records, shard_records) | "AllRecords" >> beam.Flatten()
        _ = records | "WriteRecords" >> beam.io.WriteToParquet(
            layout.deblur_records_prefix(self._output, self._ctx.run_id),
            DEBLUR_SCHEMA,
            file_name_suffix=".parquet",
        )
        return records

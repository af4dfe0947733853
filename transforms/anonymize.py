"""The anonymize pipeline as one PTransform, ``Anonymize``, and the pieces the evaluate and deblur
pipelines reuse: ``ReadImages`` (list + read + decode) and ``DetectFaces``.

The input is listed once (``ExpandInput``), then split: plain image files go one by one through
read, decode, detect (``RunInference``), the reviewer's boxes, anonymize, encode and write;
container shards (tar, Parquet, TFRecord) are streamed whole by one DoFn each
(``transforms.shard.StreamShardFn``: read, anonymize and write member by member, no image bytes
through a shuffle); video files are anonymized in segments across workers, or whole by one
DoFn call each (``transforms.video.AnonymizeVideos``). Each gives one audit record per input
image or video."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from blurbeam.blur import BlurConfig
from blurbeam.detectors import DetectorSpec
from blurbeam.imageio import MetadataPolicy
from blurbeam.shards import OTHER_KIND, ShardOptions
from blurbeam.task import ImageTask, RunContext
from blurbeam.transforms.image import AnonymizeFn, DecodeFn, EncodeFn
from blurbeam.transforms.models import DetectorHandler, Infer
from blurbeam.transforms.read import ExpandInput, ReadImagesFn, SkipDoneShardsFn
from blurbeam.transforms.shard import AnonymizeImage, StreamShardFn, is_container
from blurbeam.transforms.video import (
    CONTAINER,
    FILE,
    VIDEO,
    AnonymizeVideos,
    route,
    video_options,
)
from blurbeam.transforms.write import WriteAudit, WriteImageFn


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


def _is_task(x: object) -> bool:
    return isinstance(x, ImageTask)


def _not_task(x: object) -> bool:
    return not isinstance(x, ImageTask)


class Anonymize(beam.PTransform):
    """The whole anonymize pipeline, applied to the pipeline root: ``input_spec`` -> anonymized
    images and shards under ``output`` + the audit Parquet files; returns the audit-record
    PCollection (one dict per input image). After it is applied, ``already_done`` is the
    PCollection of done-index rows of the inputs ``skip_existing`` found done (empty without
    it) and ``audit_files`` the PCollection of the audit files written.

    ``refs``: the ShardRefs to process, when they are already known (the launcher's listing on
    a local runner, or the shards of a corrections run); without it the pipeline lists
    ``input_spec`` itself (in ``input_slices`` pieces); with it only the paths its refs need are
    built (an input of shards only loads no per-file detector). ``corrections`` (input URI ->
    ``Correction``), ``drop_false_positives`` and ``stored_corrections`` add the reviewer's
    boxes (``blurbeam.stages.ReviewerBoxes``). The other arguments are those of ``ReadImages``,
    ``DetectFaces`` (``detector``, ``detector_threads``, ``expected_model_sha256``; with
    ``expected_settings``, the launcher's ``Detector.settings()``, a worker whose code resolves
    other settings fails every task) and of the writers; ``video``
    (``transforms.video.video_options``), ``video_segments_dir`` (segments across workers in
    that folder; None: each video whole on one worker), ``temp_dir`` and ``video_detector``
    (the videos' own detector, None: ``detector``; with its ``video_model_sha256``,
    ``video_settings`` and the ``video_ctx`` its records carry) go to
    ``transforms.video.AnonymizeVideos``, whose detector handler carries the expected model
    and settings."""

    def __init__(
        self,
        *,
        input_spec: str,
        output: str,
        ctx: RunContext,
        detector: DetectorSpec,
        blur: BlurConfig,
        policy: MetadataPolicy,
        max_pixels: int,
        max_bytes: int,
        exclude: str | None = None,
        image_column: str | None = None,
        allow_image_fields: tuple[str, ...] = (),
        skip_existing: tuple[str, str, str] | None = None,
        retry_errors: bool = False,
        every_file: bool = True,
        input_slices: int = 1,
        refs: list | None = None,
        opencv_threads: int | None = None,
        detector_threads: int = 0,
        expected_model_sha256: str | None = None,
        expected_settings: dict | None = None,
        corrections: dict | None = None,
        drop_false_positives: bool = False,
        stored_corrections: dict | None = None,
        progress_dir: str | None = None,
        audit_shards: int = 1,
        video: Any = None,
        video_segments_dir: str | None = None,
        temp_dir: str | None = None,
        video_detector: DetectorSpec | None = None,
        video_model_sha256: str | None = None,
        video_settings: dict | None = None,
        video_ctx: RunContext | None = None,
    ):
        super().__init__()
        self._input = (input_spec, exclude, input_slices, every_file, refs)
        self._output, self._ctx, self._progress_dir = output, ctx, progress_dir
        self._detector = DetectorHandler(
            detector,
            threads=detector_threads,
            expected_model_sha256=expected_model_sha256,
            expected_settings=expected_settings,
        )
        self._blur, self._policy, self._max_pixels = blur, policy, max_pixels
        self._read = ReadImagesFn(
            max_bytes,
            image_column=image_column,
            skip_existing=skip_existing,
            opencv_threads=opencv_threads,
            allow_image_fields=allow_image_fields,
            retry_errors=retry_errors,
        )
        self._skip = SkipDoneShardsFn(skip_existing, retry_errors)
        self._shard_options = ShardOptions(
            max_bytes=max_bytes,
            image_column=image_column,
            allow_image_fields=tuple(allow_image_fields),
        )
        self._opencv_threads = opencv_threads
        self._boxes = None
        if corrections or stored_corrections:
            from blurbeam.stages import ReviewerBoxes

            self._boxes = ReviewerBoxes(corrections or {}, drop_false_positives, stored_corrections)
        self._audit_shards = audit_shards
        # videos may have a detector of their own (``video_detector``, its records ``video_ctx``)
        self._video_handler = (
            DetectorHandler(
                video_detector,
                threads=detector_threads,
                expected_model_sha256=video_model_sha256,
                expected_settings=video_settings,
            )
            if video_detector is not None
            else self._detector
        )
        self._video_ctx = video_ctx or ctx
        self._video = (video, temp_dir, video_segments_dir, max_bytes)

    def expand(self, pbegin):
        routed = pbegin | "ListInput" >> ExpandInput(*self._input) | "Route" >> beam.Map(route)
        known = self._input[4]  # the ShardRefs when they are known before the pipeline runs
        records, done = [], []
        paths = (
            (FILE, lambda r: not is_container(r), self._plain_files),
            (CONTAINER, is_container, self._container_shards),
            (VIDEO, lambda r: r.kind == OTHER_KIND, self._videos),
        )
        for name, may_take, build in paths:
            if known is None or any(may_take(r) for r in known):
                refs = (
                    routed
                    | f"Take{name.title()}" >> beam.Filter(_taken_by, name)
                    | (f"{name.title()}Refs" >> beam.Values())
                )
                path_records, path_done = build(refs)
                records.append(path_records)
                done.append(path_done)
        self.already_done = (
            tuple(done) | "AlreadyDone" >> beam.Flatten()
            if done
            else pbegin | "NothingDone" >> beam.Create([])
        )
        records = (
            tuple(records) | "AllRecords" >> beam.Flatten()
            if records
            else pbegin | "NoRecords" >> beam.Create([])
        )
        self.audit_files = records | "WriteAudit" >> WriteAudit(
            self._output, self._ctx.run_id, self._audit_shards
        )
        return records

    def _plain_files(self, refs):
        """Plain image files, one by one: (audit records, done-index rows)."""
        out = refs | "ReadFiles" >> beam.ParDo(self._read)
        detected = (
            out
            | "FileTasks" >> beam.Filter(_is_task)
            | "Decode" >> beam.ParDo(DecodeFn(self._max_pixels))
            | "Detect" >> Infer(self._detector)
        )
        if self._boxes is not None:
            detected = detected | "ReviewerBoxes" >> beam.Map(self._boxes)
        records = (
            detected
            | "Anonymize" >> beam.ParDo(AnonymizeFn(self._blur))
            | "Encode" >> beam.ParDo(EncodeFn(self._policy))
            | "WriteImages" >> beam.ParDo(WriteImageFn(self._output, self._ctx, self._progress_dir))
        )
        return records, out | "FilesDone" >> beam.Filter(_not_task)

    def _container_shards(self, refs):
        """Container shards, each streamed whole: (audit records, done-index rows)."""
        out = refs | "SkipDoneShards" >> beam.ParDo(self._skip)
        image_fn = AnonymizeImage(
            self._detector,
            self._blur,
            self._policy,
            self._max_pixels,
            correct=self._boxes,
            opencv_threads=self._opencv_threads,
        )
        stream = StreamShardFn(
            self._output, self._ctx, image_fn, self._shard_options, self._progress_dir
        )
        records = (
            out
            | "ShardsToDo" >> beam.Filter(lambda x: not isinstance(x, dict))
            | "StreamShards" >> beam.ParDo(stream)
        )
        return records, out | "ShardsDone" >> beam.Filter(lambda x: isinstance(x, dict))

    def _videos(self, refs):
        """Video files, whole or in segments across workers (``transforms.video``): (audit
        records, done-index rows)."""
        options, temp_dir, segments_dir, max_bytes = self._video
        videos = AnonymizeVideos(
            self._output,
            self._video_ctx,
            self._video_handler,
            self._blur,
            options or video_options(self._max_pixels, policy=self._policy),
            max_bytes,
            segments_dir=segments_dir,
            progress_dir=self._progress_dir,
            temp_dir=temp_dir,
            opencv_threads=self._opencv_threads,
        )
        out = refs | "SkipDoneVideos" >> beam.ParDo(self._skip)
        records = (
            out
            | "VideosToDo" >> beam.Filter(lambda x: not isinstance(x, dict))
            | "Videos" >> videos
        )
        return records, out | "VideosDone" >> beam.Filter(lambda x: isinstance(x, dict))


def _taken_by(routed: tuple[str, object], path: str) -> bool:
    return routed[0] == path

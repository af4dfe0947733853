"""Decode, anonymize, encode: thin DoFns around blurbeam.imageio and blurbeam.blur."""

from __future__ import annotations

import apache_beam as beam

from blurbeam.blur import BlurConfig, anonymize
from blurbeam.imageio import DEFAULT_MAX_PIXELS, MetadataPolicy, decode, encode
from blurbeam.task import ImageTask


class DecodeFn(beam.DoFn):
    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._max_pixels = max_pixels

    def process(self, task: ImageTask):
        def run(t: ImageTask) -> None:
            img = decode(t.data, self._max_pixels)
            t.decoded = img
            t.width, t.height, t.format, t.mode = img.width, img.height, img.format, img.mode
            t.orientation = img.orientation
            t.data = None  # the raw bytes are no longer needed

        task.run_stage("decode", run)
        yield task


class AnonymizeFn(beam.DoFn):
    def __init__(self, cfg: BlurConfig) -> None:
        self._cfg = cfg

    def process(self, task: ImageTask):
        def run(t: ImageTask) -> None:
            if t.faces is None:
                raise RuntimeError("no detection result: refusing to write unchecked pixels")
            boxes = [(f.x, f.y, f.w, f.h) for f in t.faces]
            t.anonymized = (
                anonymize(t.decoded.pixels, boxes, self._cfg)
                if boxes or self._cfg.whole_image
                else t.decoded.pixels
            )

        task.run_stage("anonymize", run)
        yield task


class EncodeFn(beam.DoFn):
    def __init__(self, policy: MetadataPolicy) -> None:
        self._policy = policy

    def process(self, task: ImageTask):
        def run(t: ImageTask) -> None:
            if t.anonymized is None:
                raise RuntimeError("nothing anonymized to encode")
            t.encoded = encode(t.decoded, t.anonymized, self._policy)
            t.decoded = None
            t.anonymized = None

        task.run_stage("encode", run)
        yield task

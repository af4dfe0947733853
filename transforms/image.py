"""Decode, anonymize, encode: thin DoFns around the pure stages of ``blurbeam.stages``."""

from __future__ import annotations

import apache_beam as beam

from blurbeam.blur import BlurConfig
from blurbeam.imageio import DEFAULT_MAX_PIXELS, MetadataPolicy
from blurbeam.stages import anonymize_task, decode_task, encode_task
from blurbeam.task import ImageTask


class DecodeFn(beam.DoFn):
    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._max_pixels = max_pixels

    def process(self, task: ImageTask):
        yield decode_task(task, self._max_pixels)


class AnonymizeFn(beam.DoFn):
    def __init__(self, cfg: BlurConfig) -> None:
        self._cfg = cfg

    def process(self, task: ImageTask):
        yield anonymize_task(task, self._cfg)


class EncodeFn(beam.DoFn):
    def __init__(self, policy: MetadataPolicy) -> None:
        self._policy = policy

    def process(self, task: ImageTask):
        yield encode_task(task, self._policy)

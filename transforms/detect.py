"""Detect: faces for each decoded image, with one detector per worker process.

The model is loaded in ``DoFn.setup`` through ``apache_beam.utils.shared.Shared``, so every DoFn
instance of a worker process shares one loaded detector; the ``model_loads`` counter proves it.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from blurbeam.detectors import DetectorSpec, detect_image
from blurbeam.task import ImageTask


class _Holder:
    """Weak-referenceable box for the shared detector."""

    def __init__(self, detector) -> None:
        self.detector = detector


class DetectFn(beam.DoFn):
    def __init__(
        self,
        spec: DetectorSpec,
        shared_handle: shared.Shared | None = None,
        threads: int = 0,
        expected_model_sha256: str | None = None,
    ) -> None:
        self._spec = spec
        self._expected = expected_model_sha256
        self._threads = threads
        self._shared = shared_handle or shared.Shared()
        self._loads = Metrics.counter("blurbeam", "model_loads")
        self._faces = Metrics.counter("blurbeam", "faces")
        self._ms = Metrics.distribution("blurbeam", "detect_ms")
        self._loaded_here = False

    def setup(self) -> None:
        def load() -> _Holder:
            from blurbeam.detectors import create

            holder = _Holder(create(self._spec, threads=self._threads))
            self._loaded_here = True
            return holder

        self._holder = self._shared.acquire(load, tag=f"{self._spec!r} threads={self._threads}")

    def process(self, task: ImageTask):
        if self._loaded_here:  # metrics only count inside process(), so report the load here
            self._loads.inc()
            self._loaded_here = False
        detector = self._holder.detector

        def detect(t: ImageTask) -> None:
            t.detector_model_sha256 = detector.model_sha256
            if self._expected and detector.model_sha256 != self._expected:
                raise RuntimeError(
                    f"this worker's detector model ({detector.model_sha256[:16]}) is not the one "
                    f"the run was planned with ({self._expected[:16]}): refusing to detect with it"
                )
            t.faces = detect_image(detector, t.decoded.pixels, t.mode)

        if task.run_stage("detect", detect):
            self._faces.inc(len(task.faces))
            self._ms.update(int(task.timings_ms["detect"]))
        yield task

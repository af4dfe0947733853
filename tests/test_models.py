"""The model handlers (transforms/models.py): RunInference with a keyed handler, errors as data,
one load per worker process, and the same handler shared by a plain DoFn (SharedModel)."""

from __future__ import annotations

import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from blurbeam import detectors
from blurbeam.detectors import DetectorSpec
from blurbeam.detectors.base import Detector, Face
from blurbeam.imageio import DecodedImage
from blurbeam.task import ImageTask
from blurbeam.transforms.models import DetectorHandler, Infer, SharedModel


class _FailsOnRed(Detector):
    """A test backend: one face in the middle, and an exception on an all-red image."""

    name = "test-fails-on-red"
    default_score_threshold = 0.0

    def load(self) -> None:
        self.model_sha256 = "f" * 64

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        if (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all():
            raise RuntimeError("red image")
        h, w = rgb.shape[:2]
        return [Face(w / 4, h / 4, w / 2, h / 2, 0.9)]


@pytest.fixture(autouse=True)
def _test_backend(monkeypatch):
    """The test backend, registered for this module's tests only."""
    detectors.available()  # the real backends first
    monkeypatch.setitem(detectors._REGISTRY, _FailsOnRed.name, _FailsOnRed)


def _task(name: str, color: tuple[int, int, int]) -> ImageTask:
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:] = color
    decoded = DecodedImage(pixels=pixels, format="PNG", mode="RGB")
    return ImageTask(f"/in/{name}", f"/in/{name}", "", name, decoded=decoded, mode="RGB")


def _summary(task: ImageTask) -> tuple:
    return (task.rel, task.status, task.error_stage, len(task.faces or ()))


def test_run_inference_errors_as_data():
    spec = DetectorSpec("test-fails-on-red")
    tasks = [_task("a.png", (0, 0, 255)), _task("red.png", (255, 0, 0)), _task("b.png", (9, 9, 9))]
    with TestPipeline() as p:
        out = p | beam.Create(tasks) | Infer(DetectorHandler(spec)) | beam.Map(_summary)
        assert_that(
            out,
            equal_to(
                [
                    ("a.png", "ok", None, 1),
                    ("red.png", "error", "detect", 0),
                    ("b.png", "ok", None, 1),
                ]
            ),
        )


def test_inputs_are_not_changed_and_model_is_checked():
    spec = DetectorSpec("test-fails-on-red")
    task = _task("a.png", (0, 0, 255))
    handler = DetectorHandler(spec, expected_model_sha256="0" * 64)
    model = handler.load_model()
    (out,) = handler.run_inference([task], model)
    assert out.status == "error" and "not the one the run was planned with" in out.error
    assert out.decoded is None  # fail closed: no pixels travel on with a failed task
    assert task.faces is None and task.error is None and task.decoded is not None  # unchanged
    (ok,) = DetectorHandler(spec).run_inference([task], model)
    assert ok.detector_model_sha256 == "f" * 64 and ok.faces[0].score == pytest.approx(0.9)


def test_shared_model_loads_once_per_process():
    """Every copy of a DoFn's SharedModel (Beam unpickles one per DoFn instance) gets the same
    loaded model in a process."""
    spec = DetectorSpec("test-fails-on-red")
    first = SharedModel(DetectorHandler(spec))
    copy = pickle.loads(pickle.dumps(first))
    first.acquire()
    copy.acquire()
    assert first.model is copy.model
    assert first.infer(_task("a.png", (1, 2, 3))).status == "ok"
    with pytest.raises(RuntimeError, match="acquire"):
        SharedModel(DetectorHandler(spec)).infer(_task("a.png", (1, 2, 3)))

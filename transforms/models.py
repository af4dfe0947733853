"""Every model of the product behind a Beam ``ModelHandler``: the face detector (each backend of
``blurbeam.detectors``) and the deblur restorer. Pipelines use them through ``RunInference``
(``Infer``), which loads the model once per worker process (Beam's ``shared.Shared``) and
reports load time and latency under the ``blurbeam`` metrics namespace. A DoFn that needs a
model outside ``RunInference`` (the container-shard writer, which streams a whole shard through
one DoFn call) gets the same process-wide model from the same handler with ``SharedModel``: one
loading path, one cache.

Handlers take and return immutable ``ImageTask``s, errors as data: an element whose inference
fails comes back as a failed task (an error record). Each element is a batch of its own
(``InferEach``): images differ in size, so they do not batch.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.utils import shared

from blurbeam.detectors import DetectorSpec
from blurbeam.task import ImageTask

#: The metrics namespace of blurbeam's own counters and of RunInference's.
NAMESPACE = "blurbeam"

ModelT = TypeVar("ModelT")


class _Loaded:
    """A loaded model as the shared cache holds it (weak-referenceable), with whether its load
    was counted yet: Beam drops metrics updated outside ``process``, so the ``model_loads``
    counter is incremented by the first inference on a newly loaded model."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.counted = False


#: The models loaded in this process by ``model_id``, alive while a shared handle holds them.
_LOADED: weakref.WeakValueDictionary[str, _Loaded] = weakref.WeakValueDictionary()
_LOADING = threading.Lock()


class TaskModelHandler(ModelHandler[ImageTask, ImageTask, _Loaded], Generic[ModelT]):
    """Base of blurbeam's handlers: ``load`` builds the model, ``infer_one`` turns one task into
    the next (a failed task on error: ``ImageTask.stage`` does that), ``model_id`` names the
    model for the cache tag and the logs."""

    def __init__(self) -> None:
        super().__init__()
        self._loads = Metrics.counter(NAMESPACE, "model_loads")

    # subclasses
    def model_id(self) -> str:
        raise NotImplementedError

    def load(self) -> ModelT:
        raise NotImplementedError

    def infer_one(self, task: ImageTask, model: ModelT) -> ImageTask:
        raise NotImplementedError

    # ModelHandler
    def load_model(self) -> _Loaded:
        """The process's model of this handler: loaded once per ``model_id`` and process, so
        that ``RunInference`` and ``SharedModel`` (each a ``shared.Shared`` handle of its own,
        which Beam keys by handle, not by tag) hold the same model, not two copies."""
        with _LOADING:
            loaded = _LOADED.get(self.model_id())
            if loaded is None:
                loaded = _LOADED[self.model_id()] = _Loaded(self.load())
        return loaded

    def run_inference(
        self,
        batch: Sequence[ImageTask],
        model: _Loaded,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[ImageTask]:
        if not model.counted:
            model.counted = True
            self._loads.inc()
        return [self.infer_one(task, model.model) for task in batch]

    def get_num_bytes(self, batch: Sequence[ImageTask]) -> int:
        return sum(t.decoded.pixels.nbytes for t in batch if t.decoded is not None)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class DetectorHandler(TaskModelHandler):
    """The face detector ``spec`` names, with ``threads`` for its inference library (0: the
    library's default). With ``expected_model_sha256`` a worker whose model file differs fails
    every task it gets, and with ``expected_settings`` (the launcher's ``Detector.settings()``)
    one whose code resolves other settings does."""

    def __init__(
        self,
        spec: DetectorSpec,
        threads: int = 0,
        expected_model_sha256: str | None = None,
        expected_settings: dict | None = None,
    ) -> None:
        super().__init__()
        self._spec = spec
        self._threads = threads
        self._expected = expected_model_sha256
        self._expected_settings = expected_settings
        self._faces = Metrics.counter(NAMESPACE, "faces")
        self._ms = Metrics.distribution(NAMESPACE, "detect_ms")

    def model_id(self) -> str:
        return f"detector:{self._spec!r}:threads={self._threads}"

    def load(self):
        from blurbeam.detectors import create

        return create(self._spec, threads=self._threads)

    @property
    def expected_model_sha256(self) -> str | None:
        return self._expected

    @property
    def expected_settings(self) -> dict | None:
        return self._expected_settings

    def infer_one(self, task: ImageTask, model) -> ImageTask:
        from blurbeam.stages import detect_task

        # checked per task, not at load: a process may reuse a model another run loaded
        out = detect_task(task, model, self._expected, self._expected_settings)
        if out.faces is not None and not out.failed and task.faces is None:
            self._faces.inc(len(out.faces))
            self._ms.update(int(out.timings_ms["detect"]))
        return out


class RestorerHandler(TaskModelHandler):
    """The deblur restorer (``blurbeam.deblur.model.Restorer``: packaged weights by ``preset``
    or a weights file) applied to each task's faces, or to the whole image."""

    def __init__(
        self,
        weights: str | None,
        margin: float,
        feather: float,
        whole_image: bool,
        preset: str = "default",
    ) -> None:
        super().__init__()
        self._weights = weights
        self._preset = preset
        self._margin = margin
        self._feather = feather
        self._whole = whole_image
        self._restored = Metrics.counter(NAMESPACE, "faces_restored")

    def model_id(self) -> str:
        return f"restorer:{self._weights or 'preset:' + self._preset}"

    def load(self):
        from blurbeam.deblur.model import Restorer

        return Restorer(self._weights, preset=self._preset)

    def infer_one(self, task: ImageTask, model) -> ImageTask:
        from blurbeam.stages import restore_task

        out = restore_task(task, model, self._margin, self._feather, self._whole)
        if out.restoration is not None and not out.failed:
            self._restored.inc(len(out.restoration.sharpness_before))
        return out


class SharedModel:
    """The process-wide model of ``handler`` for a DoFn that runs it itself: call ``acquire``
    in ``setup`` and ``infer`` per task. The cache is Beam's ``shared.Shared`` keyed by
    ``handler.model_id()``, as RunInference keys its own."""

    def __init__(self, handler: TaskModelHandler) -> None:
        self._handler = handler
        self._shared = shared.Shared()
        self._loaded: _Loaded | None = None

    def acquire(self) -> None:
        self._loaded = self._shared.acquire(self._handler.load_model, tag=self._handler.model_id())

    @property
    def model(self):
        if self._loaded is None:
            raise RuntimeError("SharedModel.acquire() was not called")
        return self._loaded.model

    def infer(self, task: ImageTask) -> ImageTask:
        if self._loaded is None:
            raise RuntimeError("SharedModel.acquire() was not called")
        (out,) = self._handler.run_inference([task], self._loaded)
        return out


def _batch_of_one(element: Any) -> list[Any]:
    return [element]


def _keyed_by_source(task: ImageTask) -> tuple[str, ImageTask]:
    return task.source_uri, task


class InferEach(beam.PTransform):
    """Elements -> ``handler``'s results, through ``RunInference`` with each element as a batch
    of its own (``with_no_batching``), so RunInference applies no ``BatchElements``. That
    batcher emits its last batch from ``finish_bundle``, whose outputs Beam's DaskRunner drops
    (2.77: ``apply_dofn_to_bundle`` collects a partition's outputs before it finishes the
    bundle): it lost the last element of every Dask partition."""

    def __init__(self, handler: ModelHandler, model_identifier: str) -> None:
        super().__init__()
        self._handler = handler
        self._model_identifier = model_identifier

    def expand(self, elements):
        return (
            elements
            | "BatchOfOne" >> beam.Map(_batch_of_one)
            | "RunInference"
            >> RunInference(
                self._handler.with_no_batching(), model_identifier=self._model_identifier
            )
        )


class Infer(beam.PTransform):
    """ImageTasks -> the tasks after ``handler``'s model (``InferEach`` with a keyed handler: the
    key is the task's source URI, so each result stays with its input)."""

    def __init__(self, handler: TaskModelHandler) -> None:
        super().__init__()
        self._handler = handler

    def expand(self, tasks):
        return (
            tasks
            | "Key" >> beam.Map(_keyed_by_source)
            | "Each" >> InferEach(KeyedModelHandler(self._handler), self._handler.model_id())
            | "Tasks" >> beam.Values()
        )

"""The privacy audit's models behind Beam ``ModelHandler``s, in the style of the product's
``blurbeam.transforms.models``: SFace, the deblur attacker and YuNet for landmarks
(``face_features.AuditModels``), loaded once per worker process by ``RunInference`` (Beam's
``shared.Shared``), which also batches elements and reports load time, batch sizes and latency
under the ``privacy`` metrics namespace.

``AuditPairHandler``: an image pair of the audit -> its faces' identity features
(``image_pairs.PairOutcome``). ``SweepHandler``: a work item of the sweep -> its features
(``sweep.SweepResult``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

from apache_beam.ml.inference.base import ModelHandler

from blurbeam.lab.reid.face_features import AuditModels
from blurbeam.lab.reid.image_pairs import AuditTask, PairOutcome
from blurbeam.lab.reid.sweep import SweepItem, SweepResult

#: The metrics namespace of the audit's counters and of its RunInference steps.
NAMESPACE = "privacy"

ExampleT = TypeVar("ExampleT")
ResultT = TypeVar("ResultT")


class ReidModelHandler(ModelHandler[ExampleT, ResultT, AuditModels], Generic[ExampleT, ResultT]):
    """Base of the audit's handlers: ``load_model`` builds ``AuditModels`` (with the deblur
    attacker when ``with_deblur``; ``threads`` > 0 caps OpenCV's threads per worker process),
    ``infer_one`` turns one element into its result, ``model_id`` names the models for the
    cache tag and the metrics."""

    def __init__(self, with_deblur: bool, threads: int = 0) -> None:
        super().__init__()
        self._with_deblur = bool(with_deblur)
        self._threads = int(threads)

    # subclasses
    def infer_one(self, element: ExampleT, models: AuditModels) -> ResultT:
        raise NotImplementedError

    def model_id(self) -> str:
        deblur = "+deblur" if self._with_deblur else ""
        return f"reid:sface+yunet{deblur}:threads={self._threads}"

    # ModelHandler
    def load_model(self) -> AuditModels:
        if self._threads > 0:
            import cv2

            cv2.setNumThreads(self._threads)
        return AuditModels(self._with_deblur)

    def run_inference(
        self,
        batch: Sequence[ExampleT],
        model: AuditModels,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[ResultT]:
        return [self.infer_one(element, model) for element in batch]

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class AuditPairHandler(ReidModelHandler[AuditTask, PairOutcome]):
    """An audit image pair -> ``PairOutcome`` (``image_pairs.audit_pair``): faces of at least
    ``min_face_size`` px, the applicable attackers (only ``attackers`` when given)."""

    def __init__(
        self,
        attackers: Sequence[str] | None,
        min_face_size: float,
        with_deblur: bool,
        max_pixels: int = 100_000_000,
    ) -> None:
        super().__init__(with_deblur)
        self._attackers = list(attackers) if attackers else None
        self._min = float(min_face_size)
        self._max_pixels = int(max_pixels)

    def infer_one(self, element: AuditTask, models: AuditModels) -> PairOutcome:
        from blurbeam.lab.reid.image_pairs import audit_pair

        return audit_pair(element, models, self._attackers, self._min, self._max_pixels)


class SweepHandler(ReidModelHandler[SweepItem, SweepResult]):
    """A sweep work item -> ``SweepResult`` (``sweep.sweep_item``)."""

    def infer_one(self, element: SweepItem, models: AuditModels) -> SweepResult:
        from blurbeam.lab.reid.sweep import sweep_item

        return sweep_item(element, models)

"""``none``: no detector, for the methods that rewrite the whole image (``--method learned``).

It finds no face, so with any other method nothing would be anonymized: ``anonymize`` refuses
that combination (``check_method``), and selects this backend itself for ``--method learned``.
"""

from __future__ import annotations

import numpy as np

from blurbeam.detectors import register
from blurbeam.detectors.base import Detector, Face


def check_method(method: str, detector: str) -> str:
    """The detector a run of ``method`` uses: ``none`` for a whole-image method, else
    ``detector``, which must not be ``none`` (ValueError)."""
    from blurbeam.blur import BlurConfig

    whole = BlurConfig(method, None).whole_image if method == "learned" else False
    if whole:
        return NoDetector.name
    if detector == NoDetector.name:
        raise ValueError(
            f"--detector none finds no face: only --method learned runs without a detector, "
            f"--method {method} would leave every face as it is"
        )
    return detector


@register
class NoDetector(Detector):
    """Finds nothing; its model is none (``model_sha256`` empty)."""

    name = "none"
    default_score_threshold = 0.0

    def load(self) -> None:
        self.model_sha256 = ""

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        return []

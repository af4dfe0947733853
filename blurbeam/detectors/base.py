"""The one detector interface.

A detector turns an 8-bit RGB image (H, W, 3) into faces in that image's pixel coordinates.
Backends live one per module in this package and register themselves with ``@register``;
heavy frameworks (TensorFlow, onnxruntime) are imported inside ``load`` so that importing the
registry stays cheap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face: a box (x, y, w, h) in pixels, a score in [0, 1], optional landmarks.

    Landmarks, when the backend gives them, are five (x, y) points in the order
    right eye, left eye, nose tip, right mouth corner, left mouth corner (the subject's right
    and left, YuNet/SFace order). ``source`` is ``"detector"``, or ``"reviewer"`` for a box a
    reviewer drew on the review site (``anonymize --corrections``).
    """

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0
    landmarks: tuple[tuple[float, float], ...] | None = None
    source: str = "detector"

    def to_dict(self) -> dict[str, Any]:
        return {
            "x": float(self.x),
            "y": float(self.y),
            "w": float(self.w),
            "h": float(self.h),
            "score": float(self.score),
            "landmarks": (
                None
                if self.landmarks is None
                else [{"x": float(px), "y": float(py)} for px, py in self.landmarks]
            ),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Face:
        lms = d.get("landmarks")
        return cls(
            x=d["x"],
            y=d["y"],
            w=d["w"],
            h=d["h"],
            score=d.get("score", 1.0),
            landmarks=None if lms is None else tuple((p["x"], p["y"]) for p in lms),
            source=d.get("source") or "detector",
        )


@dataclass(frozen=True)
class DetectorSpec:
    """What to build: a registered backend name plus its options. Picklable and hashable."""

    name: str
    score_threshold: float | None = None  # None: the backend's own default
    min_face_size: float = 0.0  # drop faces whose larger side is below this, in pixels
    options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)


class Detector:
    """Base class of a face detection backend.

    Subclasses set ``name`` and ``default_score_threshold``, implement ``load`` (read model
    files, build the network) and ``_detect`` (raw faces for one RGB uint8 image). ``detect``
    applies the score threshold and minimum size shared by every backend.
    """

    name: ClassVar[str] = ""
    default_score_threshold: ClassVar[float] = 0.5
    #: True when ``_detect`` returns landmarks.
    gives_landmarks: ClassVar[bool] = False

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self.score_threshold = (
            spec.score_threshold
            if spec.score_threshold is not None
            else self.default_score_threshold
        )
        self.min_face_size = spec.min_face_size
        self.options = spec.option_dict()
        self.model_sha256 = ""
        #: The worker's thread budget for this detector's inference library (0: the library's
        #: default, usually every core). A run-time hint, not part of the spec or the config
        #: hash: results do not depend on it. Set by ``create`` before ``load``.
        self.threads = 0
        self._settings: dict[str, Any] = {}

    def option(self, key: str, default: Any = None) -> Any:
        """The option ``key`` of the spec, else ``default``; either way recorded in
        :meth:`settings`. ``load`` reads every option that changes results through here."""
        if getattr(self, "_loaded", False):  # set by ``create`` once ``load`` returns
            raise RuntimeError(
                f"{self.name}: option {key!r} read after load; read options in load, where "
                "settings() records them"
            )
        value = self.options.get(key, default)
        self._settings[key] = value
        return value

    def settings(self) -> dict[str, Any]:
        """What the loaded detector runs with, the code's defaults included (each option ``load``
        read, JSON-ready). Part of a run's config and so of its config hash: a run planned with
        other defaults is another config, and a worker whose code resolves other settings than
        the launcher's refuses to detect."""
        return {k: _json_ready(v) for k, v in sorted(self._settings.items())}

    def thread_count(self) -> int:
        """Threads to give the inference library: the ``threads`` option when set, else the
        worker's budget (``self.threads``); 0 leaves the library's default."""
        return int(self.options.get("threads", 0)) or int(self.threads)

    def load(self) -> None:
        """Load weights; sets ``self.model_sha256``. Called once per worker process."""
        raise NotImplementedError

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def release_memory(self) -> None:
        """Give back the memory the inference library kept from earlier images (results do not
        change; the next image pays to grow it again): nothing by default."""

    def detect(self, rgb: np.ndarray) -> list[Face]:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"detectors take uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
        faces = self._detect(rgb)
        return [
            f
            for f in faces
            if f.score >= self.score_threshold and max(f.w, f.h) >= self.min_face_size
        ]


def _json_ready(value: Any) -> Any:
    """``value`` with tuples as lists and numpy scalars as Python numbers, for JSON."""
    if isinstance(value, tuple | list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

"""Detector registry: one interface (``base.Detector``), one registry, one module per backend.

Backends are the modules of this package; each defines a ``Detector`` subclass decorated with
``@register``. Modules are imported on first use of the registry (cheap: heavy frameworks are
imported in ``load``). Third-party backends can register through the ``blurbeam.detectors``
entry-point group.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib.metadata import entry_points

from blurbeam.detectors.base import Detector, DetectorSpec, Face

__all__ = [
    "Detector",
    "DetectorSpec",
    "Face",
    "register",
    "available",
    "get_class",
    "create",
    "model_fingerprint",
    "describe",
    "detect_image",
]

_REGISTRY: dict[str, type[Detector]] = {}
_DISCOVERED = False


def register(cls: type[Detector]) -> type[Detector]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"detector {cls.name!r} registered twice ({existing} and {cls})")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    for ep in entry_points(group="blurbeam.detectors"):
        register(ep.load())


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_class(name: str) -> type[Detector]:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown detector {name!r}; available: {', '.join(available())}"
        ) from None


def create(spec: DetectorSpec, load: bool = True, threads: int = 0) -> Detector:
    """Build (and by default load) the detector ``spec`` names. ``threads`` is the worker's
    thread budget for the inference library (0: its default); see ``Detector.threads``."""
    det = get_class(spec.name)(spec)
    det.threads = max(0, int(threads))
    if load:
        det.load()
        det._loaded = True  # settings() is final: options are read in load only
    return det


@functools.lru_cache(maxsize=8)
def model_fingerprint(spec: DetectorSpec) -> str:
    """The sha256 of the model file(s) ``spec`` loads (``Detector.model_sha256``), found by
    loading the detector once in this process. Part of a run's config hash, so that a new model
    is a new config; workers check that they load the same model."""
    return describe(spec)[0]


def describe(spec: DetectorSpec) -> tuple[str, dict]:
    """(``model_fingerprint``, ``Detector.settings()``) of ``spec``, from one load in this
    process: what a run's config records of its detector."""
    det = create(spec, load=True)
    return det.model_sha256, det.settings()


#: Gaussian sigma (px) of the extra pass on bilevel images (see ``detect_image``).
BILEVEL_SMOOTH_SIGMA = 1.0


def detect_image(detector: Detector, pixels, mode: str | None = None) -> list[Face]:
    """The faces ``detector`` finds in decoded ``pixels`` (any depth). A bilevel image (mode
    "1", often dithered) is also searched after a light Gaussian smoothing, which turns its
    halftone dots back into grey levels (YuNet finds no face in a dithered astronaut without
    it); faces found only there are added, never removed."""
    import cv2

    from blurbeam.geometry import iou
    from blurbeam.imageio import to_rgb8

    rgb = to_rgb8(pixels)
    faces = detector.detect(rgb)
    if mode == "1":
        smooth = cv2.GaussianBlur(rgb, (0, 0), BILEVEL_SMOOTH_SIGMA)
        boxes = [(f.x, f.y, f.w, f.h) for f in faces]
        faces += [
            f
            for f in detector.detect(smooth)
            if all(iou((f.x, f.y, f.w, f.h), b) < 0.5 for b in boxes)
        ]
    return faces

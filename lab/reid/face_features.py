"""Per-image work of the audit: identity features of the original faces and of the anonymized
faces after each attacker. Pure code: no Beam.

Each face is handled in a window of ``WINDOW_SCALE`` times its box (clipped to the image), which
holds all of SFace's aligned crop and the context a deconvolution needs. The original and the
anonymized face are aligned with the *original* face's landmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from blurbeam import blur
from blurbeam.geometry import clip_rect, scale_box
from blurbeam.lab.reid.attackers import AttackContext, run_attack
from blurbeam.lab.reid.faceset import FaceSpec
from blurbeam.lab.reid.recognizer import Recognizer

WINDOW_SCALE = 2.5


@dataclass
class AttackedFace:
    """The anonymized face's feature per attacker (L2-normalised float32 (128,))."""

    features: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def face_window(
    box: Sequence[float], width: int, height: int, scale: float = WINDOW_SCALE
) -> tuple[int, int, int, int]:
    x, y, w, h = scale_box(*(float(v) for v in box[:4]), scale)
    rect = clip_rect(x, y, x + w, y + h, width, height)
    if rect is None:
        raise ValueError(f"face box {tuple(box)} is outside the {width}x{height} image")
    return rect


def original_features(
    rec: Recognizer, rgb: np.ndarray, faces: Sequence[FaceSpec]
) -> list[np.ndarray]:
    out = []
    height, width = rgb.shape[:2]
    for f in faces:
        x0, y0, x1, y1 = face_window(f.box, width, height)
        out.append(rec.feature(rgb[y0:y1, x0:x1], f.landmarks, (x0, y0)))
    return out


def attacked_features(
    rec: Recognizer,
    anonymized: np.ndarray,
    faces: Sequence[FaceSpec],
    cfg: blur.BlurConfig,
    attackers: Sequence[str],
    deblur: Callable | None = None,
) -> list[AttackedFace]:
    """For every face, the feature of its region of ``anonymized`` after each attacker."""
    height, width = anonymized.shape[:2]
    out = []
    for f in faces:
        x0, y0, x1, y1 = face_window(f.box, width, height)
        window = np.ascontiguousarray(anonymized[y0:y1, x0:x1])
        bx, by, bw, bh = (float(v) for v in f.box)
        ctx = AttackContext(cfg, (bx - x0, by - y0, bw, bh))
        res = AttackedFace()
        for a in attackers:
            t = time.perf_counter()
            est = run_attack(a, window, ctx, deblur)
            res.features[a] = rec.feature(est, f.landmarks, (x0, y0))
            res.seconds[a] = time.perf_counter() - t
        out.append(res)
    return out


def anonymize_faces(rgb: np.ndarray, faces: Sequence[FaceSpec], cfg: blur.BlurConfig) -> np.ndarray:
    """The product's anonymization of these faces: ``blur.anonymize`` on the whole image."""
    return blur.anonymize(rgb, [tuple(float(v) for v in f.box) for f in faces], cfg)


class AuditModels:
    """The models one worker process holds for the audit and the sweep: SFace (``recognizer``),
    the deblur attacker (``deblur``: with ``with_deblur``, None when its model is not available)
    and YuNet for landmarks (``detector()``, created on first use)."""

    def __init__(self, with_deblur: bool = False) -> None:
        from blurbeam.lab.reid.attackers import load_deblur

        self.recognizer = Recognizer()
        self.deblur = load_deblur() if with_deblur else None
        self._detector = None

    def detector(self):
        if self._detector is None:
            from blurbeam.detectors import DetectorSpec, create

            self._detector = create(DetectorSpec("yunet", score_threshold=0.5))
        return self._detector

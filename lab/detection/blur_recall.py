"""The privacy figures: blur recall and false-positive regions, at the anonymizer's threshold.

*Blur recall* is the fraction of labelled, valid faces (``invalid == 0``) whose larger side is at
least ``min_face`` pixels and whose box is at least ``min_coverage`` covered by the pixels the
anonymizer fully masks. The mask is built exactly as the anonymizer builds it
(:func:`blurbeam.geometry.faces_mask`: each detected box scaled about its centre by
``mask_scale``, an ellipse or a rectangle, clipped to the image).

A *false-positive region* is a detection that touches no labelled face: its IoU with every
labelled box (valid or not, any size) is below ``fp_iou`` and it contains less than
``fp_inside`` of every labelled box's area. A box around a face that the labellers drew tighter
or looser is therefore not a false positive; a blurred patch of background is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from blurbeam.blur import DEFAULT_MASK_SCALE
from blurbeam.geometry import box_coverage, faces_mask
from blurbeam.lab.detection.wider_ap import ImageGt

#: Face-size buckets (larger side, px) reported next to the overall blur recall.
SIZE_BUCKETS: tuple[tuple[float, float], ...] = ((10, 16), (16, 32), (32, 64), (64, float("inf")))


@dataclass(frozen=True)
class PrivacyConfig:
    mask_scale: float = DEFAULT_MASK_SCALE
    mask_shape: str = "ellipse"
    min_face: float = 10.0
    min_coverage: float = 0.8
    fp_iou: float = 0.3
    fp_inside: float = 0.5


@dataclass
class ImagePrivacy:
    """Per-image counts; ``sizes``/``covered`` list every counted face."""

    detections: int = 0
    false_positives: int = 0
    sizes: list[float] = field(default_factory=list)
    covered: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "detections": self.detections,
            "false_positives": self.false_positives,
            "sizes": self.sizes,
            "covered": self.covered,
        }


def false_positive_count(dets: np.ndarray, gt_boxes: np.ndarray, cfg: PrivacyConfig) -> int:
    """Detections (N, 4+) x y w h touching no labelled (M, 4) box."""
    if len(dets) == 0:
        return 0
    if len(gt_boxes) == 0:
        return len(dets)
    d = dets[:, None, :4].astype(np.float64)
    g = gt_boxes[None, :, :4].astype(np.float64)
    iw = np.clip(
        np.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - np.maximum(d[..., 0], g[..., 0]),
        0,
        None,
    )
    ih = np.clip(
        np.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - np.maximum(d[..., 1], g[..., 1]),
        0,
        None,
    )
    inter = iw * ih
    d_area = d[..., 2] * d[..., 3]
    g_area = g[..., 2] * g[..., 3]
    union = d_area + g_area - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    inside = np.where(g_area > 0, inter / np.where(g_area > 0, g_area, 1), 0.0)
    touches = (iou >= cfg.fp_iou) | (inside >= cfg.fp_inside)
    return int(np.count_nonzero(~touches.any(axis=1)))


def image_privacy(
    gt: ImageGt, dets: np.ndarray, width: int, height: int, cfg: PrivacyConfig = PrivacyConfig()
) -> ImagePrivacy:
    """Blur coverage of one image's counted faces by the mask of ``dets`` (N, 4+: x y w h ...),
    which must already be the detections the anonymizer keeps (score >= its threshold)."""
    dets = np.asarray(dets, dtype=np.float64)
    if dets.size == 0:
        dets = np.zeros((0, 4))
    out = ImagePrivacy(detections=len(dets))
    out.false_positives = false_positive_count(dets, gt.boxes, cfg)
    counted = [
        i
        for i, (_, _, w, h) in enumerate(gt.boxes)
        if not gt.invalid[i] and w > 0 and h > 0 and max(w, h) >= cfg.min_face
    ]
    if not counted:
        return out
    mask = faces_mask([tuple(b[:4]) for b in dets], width, height, cfg.mask_scale, cfg.mask_shape)
    for i in counted:
        box = tuple(float(v) for v in gt.boxes[i])
        out.sizes.append(float(max(box[2], box[3])))
        out.covered.append(box_coverage(mask, box) >= cfg.min_coverage)
    return out


def summarise(images: Iterable[ImagePrivacy]) -> dict[str, object]:
    """Blur recall overall and per size bucket, false-positive regions per image."""
    images = list(images)
    sizes = np.array([s for im in images for s in im.sizes], dtype=np.float64)
    covered = np.array([c for im in images for c in im.covered], dtype=bool)
    n = len(images)
    buckets = {}
    for lo, hi in SIZE_BUCKETS:
        sel = (sizes >= lo) & (sizes < hi)
        label = f"{int(lo)}-{int(hi)}px" if hi != float("inf") else f">={int(lo)}px"
        buckets[label] = {
            "faces": int(sel.sum()),
            "blur_recall": float(covered[sel].mean()) if sel.any() else None,
        }
    return {
        "images": n,
        "faces": int(len(sizes)),
        "faces_covered": int(covered.sum()),
        "blur_recall": float(covered.mean()) if len(covered) else None,
        "blur_recall_by_size": buckets,
        "detections_per_image": float(sum(im.detections for im in images) / n) if n else None,
        "false_positives": int(sum(im.false_positives for im in images)),
        "false_positives_per_image": (
            float(sum(im.false_positives for im in images) / n) if n else None
        ),
    }


#: Anonymize thresholds at which ``blurbeam evaluate`` also reports blur recall and false
#: positives, to choose a threshold for recall.
SWEEP_THRESHOLDS: tuple[float, ...] = (
    0.02,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
)


def threshold_sweep(
    items: Iterable[tuple[ImageGt, np.ndarray, int, int]],
    thresholds: Iterable[float] = SWEEP_THRESHOLDS,
    cfg: PrivacyConfig = PrivacyConfig(),
) -> list[dict[str, object]]:
    """Blur recall and false positives per image at each threshold, for the images given as
    (ground truth, predictions (N, 5) x y w h score, width, height)."""
    items = list(items)
    rows = []
    for t in thresholds:
        per_image = [
            image_privacy(gt, preds[preds[:, 4] >= t] if len(preds) else preds, w, h, cfg)
            for gt, preds, w, h in items
        ]
        s = summarise(per_image)
        rows.append(
            {
                "threshold": t,
                "blur_recall": s["blur_recall"],
                "false_positives_per_image": s["false_positives_per_image"],
                "detections_per_image": s["detections_per_image"],
            }
        )
    return rows

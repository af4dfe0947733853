"""The sweep's face set: real faces with boxes and five landmarks.

* WIDER FACE dev305 (``<shared>/data/widerface/dev305``): the ground-truth faces that are valid
  (``invalid`` = 0) and at least ``min_size`` px (larger side). Their landmarks come from YuNet run
  on the original image, matched to the ground-truth box by IoU (greedy, highest first, IoU >= 0.4);
  a face YuNet does not find is left out (it could not be aligned) and counted.
* The crowd photos (``<shared>/data/crowds``): no ground truth, so the YuNet faces of at least
  ``min_size`` px, with YuNet's box.

The box anonymized is the face's box (ground truth for WIDER), exactly as the product would get it
from a detector.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from blurbeam.geometry import iou

MATCH_IOU = 0.4
DEFAULT_MIN_SIZE = 40.0


@dataclass(frozen=True)
class FaceSpec:
    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]

    @property
    def size(self) -> float:
        return max(self.box[2], self.box[3])


@dataclass
class ImageFaces:
    key: str  # a stable name for the image, e.g. "widerface/0--Parade/0_Parade_Parade_0_639"
    path: str
    faces: list[FaceSpec] = field(default_factory=list)


@dataclass
class FaceSetStats:
    candidates: int = 0  # ground-truth faces that qualified by size and validity
    unmatched: int = 0  # of those, not found by YuNet (no landmarks)
    crowd_faces: int = 0


def shared_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The shared data folder: the argument, else $BLURBEAM_SHARED, else ../shared next to the
    repository; None when it does not exist."""
    cands: list[Path] = []
    if explicit:
        cands.append(Path(explicit))
    if os.environ.get("BLURBEAM_SHARED"):
        cands.append(Path(os.environ["BLURBEAM_SHARED"]))
    cands.append(Path(__file__).resolve().parents[3] / "shared")
    cands.append(Path.cwd().parent / "shared")
    for c in cands:
        if (c / "data").is_dir():
            return c
    return None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def match_landmarks(
    boxes: Sequence[Sequence[float]], detections: Sequence, min_iou: float = MATCH_IOU
) -> list[tuple[tuple[float, float], ...] | None]:
    """For each box, the landmarks of the detection that overlaps it most (greedy one-to-one by
    IoU, highest first); None when no detection with landmarks reaches ``min_iou``."""
    pairs = []
    for i, b in enumerate(boxes):
        for j, d in enumerate(detections):
            if d.landmarks is None:
                continue
            v = iou(tuple(float(t) for t in b[:4]), (d.x, d.y, d.w, d.h))
            if v >= min_iou:
                pairs.append((v, i, j))
    pairs.sort(reverse=True)
    out: list[tuple[tuple[float, float], ...] | None] = [None] * len(boxes)
    used: set[int] = set()
    for _, i, j in pairs:
        if out[i] is None and j not in used:
            out[i] = tuple((float(x), float(y)) for x, y in detections[j].landmarks)
            used.add(j)
    return out


def _detector():
    from blurbeam.detectors import DetectorSpec, create

    return create(DetectorSpec("yunet", score_threshold=0.5))


def _qualifies(box: np.ndarray, attrs: np.ndarray, min_size: float, clear_only: bool) -> bool:
    from blurbeam.lab.detection.wider_ap import ATTRIBUTES

    if attrs[ATTRIBUTES.index("invalid")] or max(box[2], box[3]) < min_size:
        return False
    if clear_only:
        return attrs[ATTRIBUTES.index("blur")] == 0 and attrs[ATTRIBUTES.index("occlusion")] < 2
    return True


def wider_faces(
    dev_dir: Path,
    min_size: float = DEFAULT_MIN_SIZE,
    stats: FaceSetStats | None = None,
    det=None,
    clear_only: bool = False,
) -> Iterable[ImageFaces]:
    """``clear_only``: only faces WIDER labels clear (blur 0) and not heavily occluded."""
    from blurbeam.lab.detection.wider_ap import parse_gt_txt

    gt = parse_gt_txt(dev_dir / "gt.txt")
    det = det or _detector()
    stats = stats if stats is not None else FaceSetStats()
    for key in sorted(gt):
        g = gt[key]
        keep = [
            i
            for i in range(len(g.boxes))
            if _qualifies(g.boxes[i], g.attributes[i], min_size, clear_only)
        ]
        if not keep:
            continue
        path = dev_dir / "images" / f"{key}.jpg"
        rgb = read_rgb(path)
        boxes = [tuple(float(v) for v in g.boxes[i]) for i in keep]
        lms = match_landmarks(boxes, det.detect(rgb))
        stats.candidates += len(boxes)
        faces = []
        for b, lm in zip(boxes, lms, strict=True):
            if lm is None:
                stats.unmatched += 1
            else:
                faces.append(FaceSpec(b, lm))
        if faces:
            yield ImageFaces(f"widerface/{key}", str(path), faces)


def crowd_faces(
    crowd_dir: Path, min_size: float = DEFAULT_MIN_SIZE, stats: FaceSetStats | None = None, det=None
) -> Iterable[ImageFaces]:
    det = det or _detector()
    stats = stats if stats is not None else FaceSetStats()
    for path in sorted(crowd_dir.glob("*.jpg")):
        rgb = read_rgb(path)
        faces = [
            FaceSpec((f.x, f.y, f.w, f.h), tuple(f.landmarks))
            for f in det.detect(rgb)
            if f.landmarks is not None and max(f.w, f.h) >= min_size
        ]
        stats.crowd_faces += len(faces)
        if faces:
            yield ImageFaces(f"crowds/{path.stem}", str(path), faces)


def sweep_face_set(
    shared: Path, min_size: float = DEFAULT_MIN_SIZE, clear_only: bool = True
) -> tuple[list[ImageFaces], FaceSetStats]:
    """WIDER dev305 ground-truth faces plus the crowd photos' faces, all >= ``min_size`` px."""
    stats = FaceSetStats()
    det = _detector()
    images = list(wider_faces(shared / "data/widerface/dev305", min_size, stats, det, clear_only))
    images += list(crowd_faces(shared / "data/crowds", min_size, stats, det))
    return images, stats

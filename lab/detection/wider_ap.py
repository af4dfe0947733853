"""WIDER FACE ground truth, prediction files and the official easy / medium / hard AP.

The AP follows the official evaluation tool (``eval_tools/evaluation.m`` of WIDER FACE and its
Python port) step by step:

* scores are min-max normalised to [0, 1] over the whole prediction set;
* per image, predictions sorted by descending score are matched one by one to the ground-truth
  box of highest IoU (boxes as inclusive pixel ranges, the tool's ``+1`` convention); a match needs
  IoU >= 0.5; when that box is not in the level's keep list the prediction is ignored (neither a
  true nor a false positive) and so is the box; otherwise the box counts as recalled the first
  time and a second prediction on it stays a proposal without recall (a false positive);
* a precision / recall curve at 1,000 thresholds ``1 - (t + 1) / 1000`` summed over images;
  recall is divided by the number of faces in the level's keep lists;
* AP is the VOC-style area under the interpolated (monotone) precision envelope.

Two corner cases where the official code divides by zero (and yields NaN) are defined here:
a threshold with no proposal at all has precision 0 (its recall is 0 too, so AP is unchanged
whenever the official tool gives a number), and a set whose scores are all equal normalises
every score to 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LEVELS: tuple[str, ...] = ("easy", "medium", "hard")
THRESH_NUM = 1000
IOU_THRESH = 0.5

#: Attribute columns of a ``gt.txt`` face line after ``x y w h``.
ATTRIBUTES: tuple[str, ...] = (
    "blur",
    "expression",
    "illumination",
    "invalid",
    "occlusion",
    "pose",
)


class WiderFormatError(ValueError):
    """A ground-truth or prediction file does not follow the WIDER FACE format."""


@dataclass
class ImageGt:
    """Labelled faces of one image: boxes (N, 4) as x, y, w, h and attributes (N, 6)."""

    boxes: np.ndarray
    attributes: np.ndarray

    @property
    def invalid(self) -> np.ndarray:
        return self.attributes[:, ATTRIBUTES.index("invalid")].astype(bool)


@dataclass
class WiderGroundTruth:
    """Boxes per image (key ``event/name`` without extension) and the keep lists per level.

    ``keep[level][key]`` holds 0-based indices into ``images[key].boxes`` of the faces that count
    at that level; the other faces of the image are ignored at that level.
    """

    images: dict[str, ImageGt]
    keep: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def face_count(self, level: str) -> int:
        return int(sum(len(k) for k in self.keep[level].values()))


def image_key(name: str) -> str:
    """``0--Parade/0_Parade_Parade_0_639.jpg`` (or a path ending so) -> ``0--Parade/0_Parade...``."""
    p = Path(name.strip().replace("\\", "/"))
    stem = p.stem if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".txt"} else p.name
    return f"{p.parent.name}/{stem}" if p.parent.name else stem


def parse_gt_txt(path: str | Path) -> dict[str, ImageGt]:
    """Read a WIDER ``gt.txt`` (name line, count line, one ``x y w h`` + 6 attributes per face).

    An image with 0 faces is followed by one all-zero line in the official files; it is skipped.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise WiderFormatError(f"cannot read ground truth {path}: {exc.strerror}") from None
    out: dict[str, ImageGt] = {}
    i = 0
    n = len(lines)
    while i < n:
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if i + 1 >= n:
            raise WiderFormatError(f"{path}:{i + 1}: image {name!r} has no face-count line")
        try:
            count = int(lines[i + 1].strip())
        except ValueError:
            raise WiderFormatError(
                f"{path}:{i + 2}: expected a face count after {name!r}, got {lines[i + 1]!r}"
            ) from None
        rows = lines[i + 2 : i + 2 + count]
        if len(rows) < count:
            raise WiderFormatError(f"{path}: image {name!r} lists {count} faces, file ends early")
        boxes = np.zeros((count, 4), dtype=np.float64)
        attrs = np.zeros((count, len(ATTRIBUTES)), dtype=np.int64)
        for j, row in enumerate(rows):
            parts = row.split()
            if len(parts) < 4:
                raise WiderFormatError(f"{path}:{i + 3 + j}: face line needs x y w h, got {row!r}")
            try:
                boxes[j] = [float(v) for v in parts[:4]]
                vals = [int(v) for v in parts[4 : 4 + len(ATTRIBUTES)]]
            except ValueError:
                raise WiderFormatError(f"{path}:{i + 3 + j}: not numbers: {row!r}") from None
            attrs[j, : len(vals)] = vals
        out[image_key(name)] = ImageGt(boxes, attrs)
        i += 2 + (count if count > 0 else 1)
    if not out:
        raise WiderFormatError(f"{path}: no images in ground truth")
    return out


def load_keep_lists(gt_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Per-level keep lists from ``wider_{easy,medium,hard}_val.mat`` (0-based indices)."""
    from scipy.io import loadmat

    gt_dir = Path(gt_dir)
    out: dict[str, dict[str, np.ndarray]] = {}
    for level in LEVELS:
        path = gt_dir / f"wider_{level}_val.mat"
        if not path.is_file():
            raise WiderFormatError(f"missing {path} (the official evaluation .mat index list)")
        try:
            mat = loadmat(str(path))
            events = mat["event_list"]
            files = mat["file_list"]
            gts = mat["gt_list"]
        except (KeyError, ValueError, OSError) as exc:
            raise WiderFormatError(f"{path} is not a WIDER evaluation .mat: {exc}") from None
        per_image: dict[str, np.ndarray] = {}
        for e in range(len(events)):
            event = str(events[e][0][0])
            names = files[e][0]
            keeps = gts[e][0]
            for j in range(len(names)):
                name = str(names[j][0][0])
                idx = np.asarray(keeps[j][0]).reshape(-1).astype(np.int64) - 1
                per_image[f"{event}/{name}"] = idx
        out[level] = per_image
    return out


def load_ground_truth(gt_txt: str | Path, mat_dir: str | Path | None = None) -> WiderGroundTruth:
    """Boxes from ``gt.txt`` plus keep lists from ``mat_dir`` (default: ``ground_truth/`` beside).

    Every image of the keep lists must be in ``gt.txt`` with a valid index range, so that a
    mismatched pair of files fails loudly instead of giving a wrong AP.
    """
    images = parse_gt_txt(gt_txt)
    mat_dir = Path(gt_txt).parent / "ground_truth" if mat_dir is None else Path(mat_dir)
    keep = load_keep_lists(mat_dir)
    for level, per_image in keep.items():
        for key, idx in per_image.items():
            gt = images.get(key)
            if gt is None:
                raise WiderFormatError(f"{level} keep list names {key}, which {gt_txt} lacks")
            if len(idx) and (idx.min() < 0 or idx.max() >= len(gt.boxes)):
                raise WiderFormatError(f"{level} keep list of {key} indexes past its faces")
    for key in images:
        for level in LEVELS:
            keep[level].setdefault(key, np.zeros(0, dtype=np.int64))
    return WiderGroundTruth(images=images, keep=keep)


# ---------------------------------------------------------------------------------------------
# Prediction files: <out>/<event>/<name>.txt with "name", count, then "x y w h score" lines.


def format_prediction(key: str, boxes: np.ndarray) -> str:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    lines = [Path(key).name, str(len(boxes))]
    lines += [f"{x:.1f} {y:.1f} {w:.1f} {h:.1f} {s:.6f}" for x, y, w, h, s in boxes]
    return "\n".join(lines) + "\n"


def parse_prediction(text: str, source: str = "<prediction>") -> np.ndarray:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise WiderFormatError(f"{source}: needs a name line and a count line")
    try:
        count = int(float(lines[1]))
        rows = [[float(v) for v in ln.split()[:5]] for ln in lines[2 : 2 + count]]
    except ValueError:
        raise WiderFormatError(f"{source}: not a WIDER prediction file") from None
    if len(rows) != count or any(len(r) != 5 for r in rows):
        raise WiderFormatError(f"{source}: expected {count} lines of x y w h score")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_predictions(pred_dir: str | Path) -> dict[str, np.ndarray]:
    """All ``*.txt`` prediction files under ``pred_dir`` keyed ``event/name`` (the
    ``predictions/`` folder ``evaluate`` writes, or any detector's WIDER-format output)."""
    out = {}
    for path in sorted(Path(pred_dir).glob("*/*.txt")):
        out[f"{path.parent.name}/{path.stem}"] = parse_prediction(path.read_text(), str(path))
    return out


# ---------------------------------------------------------------------------------------------
# The official AP.


def box_iou_plus1(pred_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """IoU matrix (P, G) of inclusive pixel boxes, the official tool's ``+1`` convention."""
    p = pred_xyxy[:, None, :]
    g = gt_xyxy[None, :, :]
    iw = np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]) + 1
    ih = np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    pa = (p[..., 2] - p[..., 0] + 1) * (p[..., 3] - p[..., 1] + 1)
    ga = (g[..., 2] - g[..., 0] + 1) * (g[..., 3] - g[..., 1] + 1)
    union = pa + ga - inter
    return np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def normalise_scores(preds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Min-max normalise column 4 over the whole set; returns copies sorted by descending score."""
    arrays = {k: np.asarray(v, dtype=np.float64).reshape(-1, 5) for k, v in preds.items()}
    scores = [a[:, 4] for a in arrays.values() if len(a)]
    out: dict[str, np.ndarray] = {}
    if not scores:
        return {k: a.copy() for k, a in arrays.items()}
    all_scores = np.concatenate(scores)
    lo, hi = float(all_scores.min()), float(all_scores.max())
    for k, a in arrays.items():
        a = a.copy()
        if len(a):
            a[:, 4] = (a[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
            a = a[np.argsort(-a[:, 4], kind="stable")]
        out[k] = a
    return out


def image_eval(
    pred: np.ndarray, gt_boxes: np.ndarray, ignore: np.ndarray, iou_thresh: float = IOU_THRESH
) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's predictions (sorted by descending score) to its boxes.

    ``ignore[i]`` is 1 for a box that counts at this level, 0 for one that is ignored (the
    official tool's naming). Returns ``pred_recall`` (boxes recalled after each prediction) and
    ``proposal_list`` (1: a proposal, -1: ignored).
    """
    p = pred[:, :4].astype(np.float64).copy()
    g = gt_boxes[:, :4].astype(np.float64).copy()
    p[:, 2:] += p[:, :2]
    g[:, 2:] += g[:, :2]
    overlaps = box_iou_plus1(p, g)
    recall_list = np.zeros(len(g))
    proposal_list = np.ones(len(p))
    pred_recall = np.zeros(len(p))
    for h in range(len(p)):
        idx = int(np.argmax(overlaps[h]))
        if overlaps[h, idx] >= iou_thresh:
            if ignore[idx] == 0:
                recall_list[idx] = -1
                proposal_list[h] = -1
            elif recall_list[idx] == 0:
                recall_list[idx] = 1
        pred_recall[h] = np.count_nonzero(recall_list == 1)
    return pred_recall, proposal_list


def thresholds(thresh_num: int = THRESH_NUM) -> np.ndarray:
    return np.array([1 - (t + 1) / thresh_num for t in range(thresh_num)])


def img_pr_info(
    pred: np.ndarray,
    proposal_list: np.ndarray,
    pred_recall: np.ndarray,
    thresh_num: int = THRESH_NUM,
) -> np.ndarray:
    """(thresh_num, 2): proposals and recalled boxes at each threshold, for one image."""
    info = np.zeros((thresh_num, 2))
    scores = pred[:, 4]
    if np.any(np.diff(scores) > 0):
        raise ValueError("predictions must be sorted by descending score")
    proposals = np.cumsum(proposal_list == 1)
    # Number of predictions with score >= each threshold (scores are sorted descending).
    n_above = np.searchsorted(-scores, -thresholds(thresh_num), side="right")
    has = n_above > 0
    info[has, 0] = proposals[n_above[has] - 1]
    info[has, 1] = pred_recall[n_above[has] - 1]
    return info


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@dataclass
class LevelResult:
    level: str
    ap: float
    precision: np.ndarray
    recall: np.ndarray
    face_count: int

    def to_dict(self) -> dict[str, object]:
        return {"ap": self.ap, "faces": self.face_count}


def evaluate_level(
    norm_preds: Mapping[str, np.ndarray],
    gt: WiderGroundTruth,
    level: str,
    iou_thresh: float = IOU_THRESH,
    thresh_num: int = THRESH_NUM,
) -> LevelResult:
    """AP of one level; ``norm_preds`` from :func:`normalise_scores` (missing image: no faces)."""
    keep = gt.keep[level]
    pr = np.zeros((thresh_num, 2))
    count_face = 0
    for key, image in gt.images.items():
        keep_index = keep.get(key, np.zeros(0, dtype=np.int64))
        count_face += len(keep_index)
        pred = norm_preds.get(key)
        if pred is None or len(pred) == 0 or len(image.boxes) == 0:
            continue
        ignore = np.zeros(len(image.boxes))
        ignore[keep_index] = 1
        pred_recall, proposal_list = image_eval(pred, image.boxes, ignore, iou_thresh)
        pr += img_pr_info(pred, proposal_list, pred_recall, thresh_num)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pr[:, 0] > 0, pr[:, 1] / np.where(pr[:, 0] > 0, pr[:, 0], 1), 0.0)
    recall = pr[:, 1] / count_face if count_face else np.zeros(thresh_num)
    return LevelResult(level, voc_ap(recall, precision), precision, recall, count_face)


def evaluate(
    preds: Mapping[str, np.ndarray],
    gt: WiderGroundTruth,
    levels: Iterable[str] = LEVELS,
    iou_thresh: float = IOU_THRESH,
    thresh_num: int = THRESH_NUM,
) -> dict[str, LevelResult]:
    """Easy / medium / hard AP of raw predictions ``{event/name: (N, 5) x y w h score}``."""
    unknown = sorted(set(preds) - set(gt.images))
    if unknown:
        raise WiderFormatError(
            f"{len(unknown)} predicted images are not in the ground truth, e.g. {unknown[0]}"
        )
    norm = normalise_scores(preds)
    return {lv: evaluate_level(norm, gt, lv, iou_thresh, thresh_num) for lv in levels}

"""High-recall detection: one or two backends at several scales, fused into one set of faces.

A face of 8-16 px is below what CenterFace or YuNet see at the image's own size; the same face
after a 2x upscale is 16-32 px, well inside their range. This meta-backend runs its ``base``
detector at each of ``scales`` (``1.0`` is the image as is; ``2.0`` upscales it, in tiles of at
most ``upscaled_max_pixels`` pixels of the upscaled image so memory stays bounded; ``0.5`` halves
it), maps every face back to image pixels, keeps from an upscaled pass only the faces that are
small in the original image (the large ones are better seen at 1x) and from a downscaled pass
only the large ones, optionally adds a second backend (``ensemble``) at 1x, and fuses the lot:
``vote`` (the default) replaces the best box of each cluster by the score-weighted mean of the
cluster's boxes and landmarks, ``nms`` keeps it as it is (on WIDER dev305 the two are within
0.003 AP; vote is ahead on hard AP and blur recall, see docs/BENCHMARKS.md).

By default the upscaled pass is restricted to where faces are (``focus``): it upscales only the
regions around the small faces the 1x pass found, even at low scores (small faces come in crowds),
which costs far less than upscaling the whole image; ``focus=False`` upscales everything.

The fused face's score follows ``score_rule`` (see :func:`cluster_score`). The default,
``agree``, combines the passes at the image's size or smaller (1x, the 0.5x pass, an ensemble)
by a noisy-or, so a large face that both the 1x and the 0.5x pass found outranks a small false
positive only one pass saw (dev305 easy AP 0.923 -> 0.945, docs/BENCHMARKS.md); the upscaled
pass only competes by its own score. The 0.5x pass costs about a quarter of the 1x pass.

The result above any score does not depend on the detector's threshold: the backends run at
``min(threshold, floor)``, focus regions come from 1x faces scoring at least ``floor``, and only
faces of at least ``floor`` are averaged by the vote. So ``blurbeam evaluate`` (which runs with a
low threshold for AP) measures exactly the faces ``anonymize`` keeps at its threshold.

Options (DetectorSpec.options), all optional: ``floor`` (0.05),
``base`` (centerface), ``base_options`` (tuple of pairs for the base), ``scales``
((0.5, 1.0, 2.0)), ``upscaled_max_face`` (32: faces from a scale > 1 pass whose larger side in
image pixels exceeds this are dropped), ``downscaled_min_face`` (48: faces from a scale < 1 pass
whose larger side in image pixels is below this are dropped), ``score_rule`` (agree | max |
first), ``confident`` (0.5, for ``first``), ``upscale_base`` (the backend for scales > 1; default ``base``),
``upscale_base_options``, ``upscaled_score_factor`` (1.0: multiplies the score of every face
of an upscaled pass before fusion, so below 1 a face only that pass found ranks after an equally
confident 1x face; how a fused face's score then uses it is ``score_rule``'s business),
``tile`` (2048, in upscaled pixels, used when ``upscaled_max_pixels`` is 0; 0 = the whole
image), ``tile_overlap`` (96; 144 for a pass in fp32),
``upscaled_max_pixels`` (2,000,000; 1,000,000 in fp32: an upscaled image or region runs on as
few equal tiles of at most this many pixels as cover it, overlapping by ``tile_overlap``; 0 =
tiles of ``tile`` px a side instead; the budget bounds a worker's memory: docs/BENCHMARKS.md),
``full_max_pixels`` (1,500,000; 1,000,000 in fp32: the 1x pass of a larger image runs on as
few equal tiles of at most this many pixels as cover it, overlapping by ``tile_overlap``, so a
worker's memory does not grow with the image; a face larger than the overlap that a seam cuts
is the 0.5x pass's. The 0.5x pass of an image whose half size exceeds the budget runs on such
tiles too, plus the whole image at a coarser scale within the budget for the faces larger than
the overlap there; 0 = the whole image at 1x, and tiles of ``tile`` px at 0.5x; each pass's
tiling defaults by the precision it runs in, :data:`FP32_TILES`), ``focus`` (True),
``focus_max_face`` (24: 1x faces at most this large make a tile upscaled), ``focus_margin``
(96 image px around them), ``ensemble`` (None, or a second backend name run at 1x),
``ensemble_options``, ``fusion`` (vote | nms), ``fusion_iou`` (0.4),
``runtime`` and ``precision`` (handed on to the CenterFace bases, see
:mod:`blurbeam.detectors.runtime`), ``upscale_precision`` (fp32 | int8 | same: the precision of
the upscaled passes' CenterFace when no ``upscale_base`` is named; ``same`` by default, the
precision of the other passes: on all 886 WIDER pool886 photos, where settings are chosen, the
int8 focus pass in 2 MP tiles against an fp32 one in 2,048 px tiles moved hard AP by -0.0010 and
blur recall by -0.0003, for 24% less detector CPU and a third of the peak memory;
docs/BENCHMARKS.md "Detector runtime and precision" has the figures, and dev305's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from blurbeam.detectors import create, register
from blurbeam.detectors.base import Detector, DetectorSpec, Face

FUSIONS = ("vote", "nms")
SCORE_RULES = ("max", "agree", "first")
#: Where a face came from, for the score rules of :func:`cluster_score`.
SOURCE_1X, SOURCE_ENSEMBLE, SOURCE_UP, SOURCE_DOWN = 0, 1, 2, 3
#: Options handed on to every CenterFace base (their ``base_options`` win).
RUNTIME_OPTIONS = ("runtime", "precision")
UPSCALE_PRECISIONS = ("fp32", "int8", "same")
#: The 1x pass of a larger image runs on tiles of at most this many pixels (``full_max_pixels``).
FULL_MAX_PIXELS = 1_500_000
#: An upscaled image or region runs on tiles of at most this many pixels (``upscaled_max_pixels``).
UPSCALED_MAX_PIXELS = 2_000_000
#: Tiles overlap by this many pixels (``tile_overlap``).
TILE_OVERLAP = 96
#: The defaults of ``full_max_pixels``, ``upscaled_max_pixels`` and ``tile_overlap`` for a pass
#: whose CenterFace runs in fp32 (a CPU without VNNI, or ``precision=fp32``). fp32 activations
#: take four times the memory of int8 ones: in the int8 tiles a worker peaked at 744 MiB.
#: Chosen on all 886 WIDER pool886 photos: the largest tiles that keep the detector's peak
#: under 420 MiB and hard AP and blur recall within .002 and .001 of fp32 in the int8 tiles
#: (docs/BENCHMARKS.md, "The fp32 path in smaller tiles").
FP32_TILES = {"full_max_pixels": 1_000_000, "upscaled_max_pixels": 1_000_000, "tile_overlap": 144}
#: After an image of more than this many 1x pixel budgets (``full_max_pixels``: where the 0.5x
#: pass runs on tiles too), the bases give back their inference memory (``release_memory``).
LARGE_IMAGE_BUDGETS = 4
#: The same defaults for every other pass (int8 CenterFace, other backends).
TILES = {
    "full_max_pixels": FULL_MAX_PIXELS,
    "upscaled_max_pixels": UPSCALED_MAX_PIXELS,
    "tile_overlap": TILE_OVERLAP,
}


def _pairs(value: Any) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        return tuple(value.items())
    return tuple((str(k), v) for k, v in value)


def boxes_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (x, y, w, h) box with (N, 4) boxes."""
    ix = np.maximum(
        0.0,
        np.minimum(box[0] + box[2], others[:, 0] + others[:, 2]) - np.maximum(box[0], others[:, 0]),
    )
    iy = np.maximum(
        0.0,
        np.minimum(box[1] + box[3], others[:, 1] + others[:, 3]) - np.maximum(box[1], others[:, 1]),
    )
    inter = ix * iy
    union = box[2] * box[3] + others[:, 2] * others[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def cluster_score(
    scores: np.ndarray, sources: np.ndarray, rule: str = "max", confident: float = 0.5
) -> float:
    """The score of one fused face from its members' ``scores`` and ``sources`` (``SOURCE_1X``,
    ``SOURCE_ENSEMBLE``, ``SOURCE_UP``: an upscaled pass, ``SOURCE_DOWN``: a downscaled pass),
    members sorted by descending score.

    ``max``: the best member's. ``agree``: a noisy-or, ``1 - prod(1 - s)``, of the best score of
    each pass at the image's size or smaller (1x, ensemble, downscaled), so a face two of them
    found ranks above a face only one found; an upscaled pass does not add to it, it only
    competes by its best score (on dev305, adding it too ranked small false positives above large
    faces: easy AP 0.930 -> 0.915 on the ``--every 5`` subset). ``first``: like ``max``, except
    that a face the 1x pass found at ``confident`` or more keeps its 1x score."""
    if rule not in SCORE_RULES:
        raise ValueError(f"unknown score rule {rule!r}; choose from {SCORE_RULES}")
    if rule == "max" or len(scores) == 1:
        return float(scores[0])
    if rule == "first":
        at_1x = scores[sources == 0]
        if len(at_1x) and at_1x[0] >= confident:
            return float(at_1x[0])
        return float(scores[0])
    same = [float(scores[sources == src].max()) for src in np.unique(sources) if src != SOURCE_UP]
    agreed = float(1.0 - np.prod([1.0 - b for b in same])) if same else 0.0
    up = scores[sources == SOURCE_UP]
    return max(agreed, float(up.max()) if len(up) else 0.0)


def fuse(
    faces: Sequence[Face],
    iou: float = 0.4,
    method: str = "vote",
    vote_min_score: float = 0.0,
    sources: Sequence[int] | None = None,
    score_rule: str = "max",
    confident: float = 0.5,
) -> list[Face]:
    """Merge overlapping detections of the same face (from several scales or backends).

    Greedy by score: the best remaining face and every face overlapping it by ``iou`` or more
    form a cluster. ``nms`` keeps the best face; ``vote`` keeps its score but averages the
    boxes (and landmarks, over the faces that have them) of the cluster's members scoring at
    least ``vote_min_score``, weighted by score. Because clusters form in score order, the faces
    above any score are the same whatever lower-scoring faces were also passed in.

    ``sources`` (one int per face, see :func:`cluster_score`) and ``score_rule`` set the fused
    face's score from its cluster's members scoring at least ``vote_min_score``; a cluster whose
    best face is below ``vote_min_score`` keeps that face's score, so the rule never lifts faces
    that only exist at a lower detector threshold.
    """
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; choose from {FUSIONS}")
    if score_rule not in SCORE_RULES:
        raise ValueError(f"unknown score rule {score_rule!r}; choose from {SCORE_RULES}")
    if not faces:
        return []
    order = sorted(range(len(faces)), key=lambda i: -faces[i].score)
    faces = [faces[i] for i in order]
    src = np.zeros(len(faces), dtype=np.int64)
    if sources is not None:
        if len(sources) != len(faces):
            raise ValueError(f"{len(sources)} sources for {len(faces)} faces")
        src = np.asarray(sources, dtype=np.int64)[order]
    boxes = np.array([[f.x, f.y, f.w, f.h] for f in faces], dtype=np.float64)
    scores = np.array([f.score for f in faces], dtype=np.float64)
    alive = np.ones(len(faces), dtype=bool)
    out: list[Face] = []
    for i in range(len(faces)):
        if not alive[i]:
            continue
        cand = np.nonzero(alive)[0]
        members = cand[boxes_iou(boxes[i], boxes[cand]) >= iou]
        members = np.union1d(members, [i])
        alive[members] = False
        best = faces[i]
        members = members[(scores[members] >= vote_min_score) | (members == i)]
        score = best.score
        if len(members) > 1 and best.score >= vote_min_score:
            score = cluster_score(scores[members], src[members], score_rule, confident)
        if method == "nms" or len(members) == 1:
            out.append(best if score == best.score else replace(best, score=score))
            continue
        wts = scores[members] / scores[members].sum() if scores[members].sum() > 0 else None
        x, y, w, h = np.average(boxes[members], axis=0, weights=wts)
        with_lm = [m for m in members if faces[m].landmarks is not None]
        lms = best.landmarks
        if with_lm:
            pts = np.array([faces[m].landmarks for m in with_lm], dtype=np.float64)
            lw = scores[with_lm]
            mean = np.average(pts, axis=0, weights=lw if lw.sum() > 0 else None)
            lms = tuple((float(px), float(py)) for px, py in mean)
        out.append(Face(float(x), float(y), float(w), float(h), score, lms))
    return out


def _tiles_for(base: Detector) -> dict[str, int]:
    """The default tiling of the passes ``base`` runs (by the precision it runs in)."""
    return FP32_TILES if getattr(base, "precision", "") == "fp32" else TILES


def _pixel_budget(options: dict[str, Any], key: str, zero_means: str) -> int | None:
    """The pixel budget option ``key`` (None when not given); ValueError unless 0 or at
    least 256 x 256."""
    if key not in options:
        return None
    value = int(float(options[key]))
    if value < 0 or 0 < value < 256 * 256:
        raise ValueError(f"{key} must be {zero_means} or at least {256 * 256:,}, got {value}")
    return value


def tiles(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) tiles of at most ``tile`` px covering the image with ``overlap``."""
    if tile <= 0 or (width <= tile and height <= tile):
        return [(0, 0, width, height)]
    step = max(1, tile - overlap)

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile, step))
        return s + [n - tile]

    return [
        (x, y, min(x + tile, width), min(y + tile, height))
        for y in starts(height)
        for x in starts(width)
    ]


def grid_tiles(
    width: int, height: int, max_pixels: int, overlap: int
) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) tiles of at most ``max_pixels`` each, as few as possible and of equal
    size, covering the image with neighbours overlapping by ``overlap`` px."""
    if width * height <= max_pixels:
        return [(0, 0, width, height)]
    best: tuple[int, int, int, int, int] | None = None  # (count, area, nx, tile w, tile h)
    for nx in range(1, 33):
        tw = -(-(width + (nx - 1) * overlap) // nx)
        for ny in range(1, 33):
            th = -(-(height + (ny - 1) * overlap) // ny)
            if tw * th <= max_pixels:
                key = (nx * ny, nx * ny * tw * th, nx, tw, th)
                if best is None or key < best:
                    best = key
                break
    if best is None:
        raise ValueError(f"no tiling of {width}x{height} into tiles of {max_pixels} pixels")
    count, _, nx, tw, th = best
    ny = count // nx

    def starts(n: int, size: int, parts: int) -> list[int]:
        if parts == 1:
            return [0]
        return [round(i * (n - size) / (parts - 1)) for i in range(parts)]

    return [
        (x, y, min(x + tw, width), min(y + th, height))
        for y in starts(height, th, ny)
        for x in starts(width, tw, nx)
    ]


def _map_face(f: Face, scale: float, dx: float, dy: float) -> Face:
    lms = None
    if f.landmarks is not None:
        lms = tuple(((px + dx) / scale, (py + dy) / scale) for px, py in f.landmarks)
    return Face((f.x + dx) / scale, (f.y + dy) / scale, f.w / scale, f.h / scale, f.score, lms)


def focus_regions(
    faces: Iterable[Face], max_face: float, margin: float, width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """Merged (x0, y0, x1, y1) image regions around small faces, each grown by ``margin``."""
    rects = []
    for f in faces:
        if max(f.w, f.h) <= max_face:
            rects.append(
                [
                    max(0, int(f.x - margin)),
                    max(0, int(f.y - margin)),
                    min(width, int(np.ceil(f.x + f.w + margin))),
                    min(height, int(np.ceil(f.y + f.h + margin))),
                ]
            )
    merged = True
    while merged and len(rects) > 1:  # merge overlapping rectangles until none overlap
        merged = False
        out: list[list[int]] = []
        for r in rects:
            for o in out:
                if r[0] < o[2] and o[0] < r[2] and r[1] < o[3] and o[1] < r[3]:
                    o[0], o[1] = min(o[0], r[0]), min(o[1], r[1])
                    o[2], o[3] = max(o[2], r[2]), max(o[3], r[3])
                    merged = True
                    break
            else:
                out.append(list(r))
        rects = out
    return [(r[0], r[1], r[2], r[3]) for r in rects]


@register
class MultiScaleDetector(Detector):
    name = "multiscale"
    default_score_threshold = 0.15
    gives_landmarks = True

    def load(self) -> None:
        o = self.options
        self._scales = tuple(float(s) for s in self.option("scales", (0.5, 1.0, 2.0)))
        if not self._scales or any(s <= 0 for s in self._scales):
            raise ValueError(f"multiscale scales must be positive, got {self._scales}")
        self._upscaled_max = float(self.option("upscaled_max_face", 32))
        self._downscaled_min = float(self.option("downscaled_min_face", 48))
        self._tile = int(self.option("tile", 2048))
        # checked before any model loads; a missing one defaults by precision (below)
        full_max = _pixel_budget(o, "full_max_pixels", "0 (no tiles)")
        up_max = _pixel_budget(o, "upscaled_max_pixels", "0 (tiles of `tile` px)")
        overlap = int(o["tile_overlap"]) if "tile_overlap" in o else None
        self._up_factor = float(self.option("upscaled_score_factor", 1.0))
        self._focus = bool(self.option("focus", True))
        self._focus_max = float(self.option("focus_max_face", 24))
        self._focus_margin = float(self.option("focus_margin", 96))
        self._fusion = str(self.option("fusion", "vote"))
        self._fusion_iou = float(self.option("fusion_iou", 0.4))
        self._floor = float(self.option("floor", 0.05))
        self._score_rule = str(self.option("score_rule", "agree"))
        self._confident = float(self.option("confident", 0.5))
        if self._score_rule not in SCORE_RULES:
            raise ValueError(f"unknown score_rule {self._score_rule!r}; choose from {SCORE_RULES}")
        inner = min(self.score_threshold, self._floor)
        if self._fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self._fusion!r}; choose from {FUSIONS}")
        base_name = str(self.option("base", "centerface"))
        if base_name == self.name:
            raise ValueError("multiscale cannot use itself as base")
        shared = {k: o[k] for k in RUNTIME_OPTIONS if k in o}

        def base_pairs(name: str, key: str) -> tuple[tuple[str, Any], ...]:
            pairs = _pairs(self.option(key))
            if name != "centerface" or not shared:
                return pairs
            return tuple(sorted({**shared, **dict(pairs)}.items()))

        # The bases get this detector's threshold so low-score faces reach the fusion.
        self._base = create(
            DetectorSpec(base_name, inner, 0.0, base_pairs(base_name, "base_options")),
            threads=self.threads,
        )
        self._up_base = self._base
        up_name = self.option("upscale_base")
        up_precision = str(self.option("upscale_precision", "same"))
        if up_precision not in UPSCALE_PRECISIONS:
            raise ValueError(
                f"unknown upscale_precision {up_precision!r}; choose from {UPSCALE_PRECISIONS}"
            )
        base_precision = getattr(self._base, "precision", "")
        if not up_name and base_precision and up_precision not in ("same", base_precision):
            pairs = dict(base_pairs(base_name, "base_options"))
            pairs["precision"] = up_precision
            self._up_base = create(
                DetectorSpec(base_name, inner, 0.0, tuple(sorted(pairs.items()))),
                threads=self.threads,
            )
        if up_name and (up_name != base_name or self.option("upscale_base_options")):
            if up_name == self.name:
                raise ValueError("multiscale cannot use itself as upscale_base")
            self._up_base = create(
                DetectorSpec(
                    str(up_name), inner, 0.0, base_pairs(str(up_name), "upscale_base_options")
                ),
                threads=self.threads,
            )
        self._ensemble: Detector | None = None
        ens = self.option("ensemble")
        if ens:
            self._ensemble = create(
                DetectorSpec(str(ens), inner, 0.0, _pairs(self.option("ensemble_options"))),
                threads=self.threads,
            )
        base_tiles = _tiles_for(self._base)
        up_tiles = _tiles_for(self._up_base)
        self._full_max_pixels = base_tiles["full_max_pixels"] if full_max is None else full_max
        self._up_max_pixels = up_tiles["upscaled_max_pixels"] if up_max is None else up_max
        self._overlap = base_tiles["tile_overlap"] if overlap is None else overlap
        self._up_overlap = up_tiles["tile_overlap"] if overlap is None else overlap
        self._settings.update(  # as resolved for the precision each pass runs in
            full_max_pixels=self._full_max_pixels,
            upscaled_max_pixels=self._up_max_pixels,
            tile_overlap=self._overlap,
            upscaled_tile_overlap=self._up_overlap,
        )
        parts = [self._base.model_sha256]
        if self._up_base is not self._base:
            parts.append(self._up_base.model_sha256)
        if self._ensemble is not None:
            parts.append(self._ensemble.model_sha256)
        self.model_sha256 = "+".join(parts)
        self.runtime = str(getattr(self._base, "runtime", ""))
        self.precision = str(getattr(self._base, "precision", ""))
        up_precision_ran = str(getattr(self._up_base, "precision", ""))
        if up_precision_ran and up_precision_ran != self.precision and 2.0 in self._scales:
            self.precision += f", upscaled {up_precision_ran}"

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        out["base_settings"] = self._base.settings()
        if self._up_base is not self._base:
            out["upscale_base_settings"] = self._up_base.settings()
        if self._ensemble is not None:
            out["ensemble_settings"] = self._ensemble.settings()
        return out

    @staticmethod
    def _on_tiles(
        base: Detector,
        img: np.ndarray,
        boxes: list[tuple[int, int, int, int]],
        scale: float,
        offset: tuple[float, float] = (0.0, 0.0),
    ) -> list[Face]:
        """``base``'s faces on each (x0, y0, x1, y1) tile of ``img`` (an image scaled by
        ``scale`` whose origin lies at ``offset`` in scaled pixels), in image coordinates."""
        faces = []
        for x0, y0, x1, y1 in boxes:
            crop = np.ascontiguousarray(img[y0:y1, x0:x1])
            faces += [
                _map_face(f, scale, offset[0] + x0, offset[1] + y0) for f in base.detect(crop)
            ]
        return faces

    def _at_scale(self, rgb: np.ndarray, scale: float) -> list[Face]:
        h, w = rgb.shape[:2]
        base = self._base if scale <= 1.0 else self._up_base
        if scale == 1.0:
            if self._full_max_pixels <= 0 or h * w <= self._full_max_pixels:
                return base.detect(rgb)
            boxes = grid_tiles(w, h, self._full_max_pixels, self._overlap)
            return self._on_tiles(base, rgb, boxes, 1.0)
        if scale < 1.0 and self._full_max_pixels > 0:
            return self._downscaled(rgb, scale)
        interp = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        big = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=interp)
        if scale > 1.0:
            boxes = self._up_tiles(big.shape[1], big.shape[0])
        else:
            boxes = tiles(big.shape[1], big.shape[0], self._tile, self._overlap)
        return self._on_tiles(base, big, boxes, scale)

    def _downscaled(self, rgb: np.ndarray, scale: float) -> list[Face]:
        """The faces of a pass at ``scale`` < 1, on tiles within the 1x pass's pixel budget.
        When the downscaled image needs tiles, a face larger than their overlap may be cut by
        every seam, so the whole image runs once more, at the largest scale within the budget
        and at most half of ``scale``, and its faces that large are added (for a 24 MP photo
        at 0.25x, where they are at least 48 px across)."""
        h, w = rgb.shape[:2]
        budget = self._full_max_pixels
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        if sh * sw <= budget:
            return self._on_tiles(self._base, small, [(0, 0, sw, sh)], scale)
        boxes = grid_tiles(sw, sh, budget, self._overlap)
        faces = self._on_tiles(self._base, small, boxes, scale)
        del small
        whole = min(math.sqrt(budget / (w * h)), scale / 2)
        cw, ch = max(1, math.floor(w * whole)), max(1, math.floor(h * whole))
        coarse = cv2.resize(rgb, (cw, ch), interpolation=cv2.INTER_AREA)
        cut = self._overlap / scale  # image px: smaller faces lie whole in some tile
        faces += [
            f
            for f in self._on_tiles(self._base, coarse, [(0, 0, cw, ch)], cw / w)
            if max(f.w, f.h) >= cut
        ]
        return faces

    def _up_tiles(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The tiles an upscaled image or region of ``width`` x ``height`` px runs on."""
        if self._up_max_pixels:
            return grid_tiles(width, height, self._up_max_pixels, self._up_overlap)
        return tiles(width, height, self._tile, self._up_overlap)

    def _in_regions(
        self, rgb: np.ndarray, scale: float, regions: list[tuple[int, int, int, int]]
    ) -> list[Face]:
        faces = []
        for x0, y0, x1, y1 in regions:
            crop = rgb[y0:y1, x0:x1]
            big = cv2.resize(
                crop,
                (round((x1 - x0) * scale), round((y1 - y0) * scale)),
                interpolation=cv2.INTER_LINEAR,
            )
            boxes = self._up_tiles(big.shape[1], big.shape[0])
            faces += self._on_tiles(self._up_base, big, boxes, scale, (x0 * scale, y0 * scale))
        return faces

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        faces = self._fused(rgb)
        h, w = rgb.shape[:2]
        if self._full_max_pixels > 0 and h * w > LARGE_IMAGE_BUDGETS * self._full_max_pixels:
            # a large photo's tiles left the inference library's buffers at their largest; give
            # them back before the image is blurred and encoded (its copies peak there)
            for base in {id(b): b for b in (self._base, self._up_base)}.values():
                base.release_memory()
        return faces

    def _fused(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        found: list[Face] = []
        sources: list[int] = []
        first = [s for s in self._scales if s <= 1.0]
        ups = [s for s in self._scales if s > 1.0]
        for s in first:
            faces = self._at_scale(rgb, s)
            if s < 1.0:
                faces = [f for f in faces if max(f.w, f.h) >= self._downscaled_min]
            found += faces
            sources += [SOURCE_1X if s == 1.0 else SOURCE_DOWN] * len(faces)
        if self._ensemble is not None:
            found += self._ensemble.detect(rgb)
            sources += [SOURCE_ENSEMBLE] * (len(found) - len(sources))
        for s in ups:
            if self._focus:
                seeds = [f for f in found if f.score >= self._floor]
                regions = focus_regions(seeds, self._focus_max, self._focus_margin, w, h)
                extra = self._in_regions(rgb, s, regions)
            else:
                extra = self._at_scale(rgb, s)
            extra = [f for f in extra if max(f.w, f.h) <= self._upscaled_max]
            if self._up_factor != 1.0:
                extra = [
                    Face(f.x, f.y, f.w, f.h, f.score * self._up_factor, f.landmarks) for f in extra
                ]
            found += extra
            sources += [SOURCE_UP] * len(extra)
        clipped, kept_sources = [], []
        for f, src in zip(found, sources, strict=True):
            x0, y0 = max(0.0, f.x), max(0.0, f.y)
            x1, y1 = min(float(w), f.x + f.w), min(float(h), f.y + f.h)
            if x1 > x0 and y1 > y0:
                clipped.append(Face(x0, y0, x1 - x0, y1 - y0, f.score, f.landmarks))
                kept_sources.append(src)
        return fuse(
            clipped,
            self._fusion_iou,
            self._fusion,
            self._floor,
            kept_sources,
            self._score_rule,
            self._confident,
        )

"""Temporal coverage: add-only face tracks over per-frame detections. Pure code.

``track`` links each frame's detections to tracks by IoU with the track's predicted box (its
last box moved by its recent velocity), or for a box of similar size by the distance of their
centres, then fills every track:

- frames between two of its detections get the linearly interpolated box (``interpolated``);
- ``hold`` frames before its first and after its last detection get the box carried on at the
  track's velocity and enlarged by ``growth`` per frame up to ``max_growth`` (``propagated``),
  for tracks of at least ``min_detections`` detections (a lone detection is more often a false
  positive, whose propagation would blur background for ``2 * hold`` frames); a shorter track
  gets ``lone_hold`` such frames instead (0 by default; with detection on every k-th frame
  only, ``VideoOptions`` sets it to k - 1: the frames nobody searched take the nearest
  searched frame's boxes);
- every box of a track is widened to the largest width and height of that track within
  ``size_window`` frames, about the same centre, so the mask does not flicker in size.

Tracking only adds: every detection is kept, and its final box contains the detected box.
Boxes are ``(x, y, w, h)`` in the frame's pixels; frames are indices into the sequence given.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blurbeam.detectors.base import Face
from blurbeam.geometry import centre, iou

DETECTED = "detected"
PROPAGATED = "propagated"
INTERPOLATED = "interpolated"
SOURCES = (DETECTED, PROPAGATED, INTERPOLATED)


@dataclass(frozen=True)
class TrackConfig:
    iou_threshold: float = 0.2  # min IoU of a detection with a track's predicted box
    max_gap: int = 10  # frames without a detection a track survives (bridged by interpolation)
    hold: int = 10  # frames a box is kept before the first and after the last detection
    growth: float = 0.02  # enlargement per propagated frame (fraction of the box)
    max_growth: float = 1.5  # cap of that enlargement
    size_window: int = 15  # frames either side whose largest box size a frame's box takes
    velocity_frames: int = 5  # detections the track's velocity is measured over
    min_detections: int = 2  # a track is propagated only with at least this many detections
    centre_gate: float = 1.0  # centre distance (in box sizes) below which similar boxes link
    lone_hold: int = 0  # ``hold`` of a track with fewer than ``min_detections`` detections


@dataclass(frozen=True)
class TrackedBox:
    x: float
    y: float
    w: float
    h: float
    score: float
    source: str  # detected, propagated or interpolated
    track_id: int


@dataclass
class _Track:
    id: int
    frames: list[int]
    boxes: list[tuple[float, float, float, float]]
    scores: list[float]

    def velocity(self, n: int) -> tuple[float, float]:
        """Centre velocity (px/frame) over the last ``n`` detections, or zero."""
        k = max(0, len(self.frames) - n)
        f0, f1 = self.frames[k], self.frames[-1]
        if f1 == f0:
            return 0.0, 0.0
        (x0, y0), (x1, y1) = centre(self.boxes[k]), centre(self.boxes[-1])
        return (x1 - x0) / (f1 - f0), (y1 - y0) / (f1 - f0)

    def first_velocity(self, n: int) -> tuple[float, float]:
        k = min(len(self.frames), n) - 1
        f0, f1 = self.frames[0], self.frames[k]
        if f1 == f0:
            return 0.0, 0.0
        (x0, y0), (x1, y1) = centre(self.boxes[0]), centre(self.boxes[k])
        return (x1 - x0) / (f1 - f0), (y1 - y0) / (f1 - f0)


def _moved(
    box: tuple[float, float, float, float], v: tuple[float, float], frames: int, scale: float
) -> tuple[float, float, float, float]:
    cx, cy = centre(box)
    cx, cy = cx + v[0] * frames, cy + v[1] * frames
    w, h = box[2] * scale, box[3] * scale
    return cx - w / 2, cy - h / 2, w, h


def _affinity(pred: tuple, box: tuple, cfg: TrackConfig) -> float:
    """How well ``box`` continues a track predicted at ``pred``: the IoU when it reaches
    ``iou_threshold``; else, for boxes of similar size (within 1.5x) whose centres are less
    than ``centre_gate`` box sizes apart (small faces under camera shake share no pixels from
    one frame to the next), a score below any IoU match that falls with the distance; else 0."""
    overlap = iou(pred, box)
    if overlap >= cfg.iou_threshold:
        return overlap
    size_p, size_b = max(pred[2], pred[3]), max(box[2], box[3])
    if min(size_p, size_b) <= 0 or max(size_p, size_b) > 1.5 * min(size_p, size_b):
        return 0.0
    (px, py), (bx, by) = centre(pred), centre(box)
    distance = ((px - bx) ** 2 + (py - by) ** 2) ** 0.5 / max(size_p, size_b)
    if distance >= cfg.centre_gate:
        return 0.0
    return cfg.iou_threshold * (1.0 - distance / cfg.centre_gate)


def _affinities(pred: np.ndarray, boxes: np.ndarray, cfg: TrackConfig) -> np.ndarray:
    """``_affinity`` of every predicted box (rows of ``pred``, T x 4) with every box (rows of
    ``boxes``, F x 4): a T x F array, each entry computed as ``_affinity`` computes it."""
    px, py, pw, ph = (pred[:, k : k + 1] for k in range(4))
    bx, by, bw, bh = (boxes[None, :, k] for k in range(4))
    ix = np.maximum(0.0, np.minimum(px + pw, bx + bw) - np.maximum(px, bx))
    iy = np.maximum(0.0, np.minimum(py + ph, by + bh) - np.maximum(py, by))
    inter = ix * iy
    union = pw * ph + bw * bh - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    size_p, size_b = np.maximum(pw, ph), np.maximum(bw, bh)
    small, large = np.minimum(size_p, size_b), np.maximum(size_p, size_b)
    similar = (small > 0) & (large <= 1.5 * small)
    # both branches of each np.where are computed: a zero size or gate divides by zero where
    # the other branch is taken
    with np.errstate(divide="ignore", invalid="ignore"):
        dx, dy = (px + pw / 2) - (bx + bw / 2), (py + ph / 2) - (by + bh / 2)
        distance = (dx**2 + dy**2) ** 0.5 / large
        near = similar & (distance < cfg.centre_gate)
        by_centre = np.where(near, cfg.iou_threshold * (1.0 - distance / cfg.centre_gate), 0.0)
    return np.where(overlap >= cfg.iou_threshold, overlap, by_centre)


def _associate(tracks: list[_Track], faces: Sequence[Face], frame: int, cfg: TrackConfig):
    """Greedy one-to-one matching of ``faces`` to live tracks by affinity with their predicted
    or last boxes: the pairs in falling order of affinity (ties: the later track, then the
    later face first), each track and face matched once."""
    if not tracks or not faces:
        return [], list(range(len(faces)))
    pred = np.array(
        [
            _moved(t.boxes[-1], t.velocity(cfg.velocity_frames), frame - t.frames[-1], 1.0)
            for t in tracks
        ],
        dtype=np.float64,
    )
    last = np.array([t.boxes[-1] for t in tracks], dtype=np.float64)
    boxes = np.array([(f.x, f.y, f.w, f.h) for f in faces], dtype=np.float64)
    # the last box too: a velocity measured on jitter (camera shake) overshoots
    score = np.maximum(_affinities(pred, boxes, cfg), _affinities(last, boxes, cfg))
    ti, fi = np.nonzero(score > 0)
    order = np.lexsort((-fi, -ti, -score[ti, fi]))
    used_t: set[int] = set()
    used_f: set[int] = set()
    matches = []
    for t, f in zip(ti[order].tolist(), fi[order].tolist(), strict=True):
        if t not in used_t and f not in used_f:
            used_t.add(t)
            used_f.add(f)
            matches.append((t, f))
    return matches, [f for f in range(len(faces)) if f not in used_f]


def build_tracks(detections: Sequence[Sequence[Face]], cfg: TrackConfig) -> list[_Track]:
    """Link detections into tracks (each detection in exactly one track)."""
    done: list[_Track] = []
    live: list[_Track] = []
    next_id = 0
    for frame, faces in enumerate(detections):
        still = []
        for t in live:
            (still if frame - t.frames[-1] <= cfg.max_gap + 1 else done).append(t)
        live = still
        matches, new = _associate(live, faces, frame, cfg)
        for ti, fi in matches:
            f = faces[fi]
            live[ti].frames.append(frame)
            live[ti].boxes.append((f.x, f.y, f.w, f.h))
            live[ti].scores.append(f.score)
        for fi in new:
            f = faces[fi]
            live.append(_Track(next_id, [frame], [(f.x, f.y, f.w, f.h)], [f.score]))
            next_id += 1
    return sorted(done + live, key=lambda t: t.id)


def _fill(t: _Track, n: int, cfg: TrackConfig) -> dict[int, tuple[tuple, float, str]]:
    """Every frame the track covers -> (box, score, source)."""
    out: dict[int, tuple[tuple, float, str]] = {}
    for k, frame in enumerate(t.frames):
        out[frame] = (t.boxes[k], t.scores[k], DETECTED)
        if k + 1 < len(t.frames):
            nxt = t.frames[k + 1]
            a, b = t.boxes[k], t.boxes[k + 1]
            for g in range(frame + 1, nxt):
                u = (g - frame) / (nxt - frame)
                box = tuple(a[j] + (b[j] - a[j]) * u for j in range(4))
                out[g] = (box, min(t.scores[k], t.scores[k + 1]), INTERPOLATED)
    hold = cfg.hold if len(t.frames) >= cfg.min_detections else cfg.lone_hold
    v_end = t.velocity(cfg.velocity_frames)
    v_start = t.first_velocity(cfg.velocity_frames)
    for d in range(1, hold + 1):
        scale = min(1.0 + cfg.growth * d, cfg.max_growth)
        after, before = t.frames[-1] + d, t.frames[0] - d
        if after < n and after not in out:
            out[after] = (_moved(t.boxes[-1], v_end, d, scale), t.scores[-1], PROPAGATED)
        if before >= 0 and before not in out:
            out[before] = (_moved(t.boxes[0], v_start, -d, scale), t.scores[0], PROPAGATED)
    return out


def _stable(filled: dict[int, tuple[tuple, float, str]], window: int) -> dict[int, tuple]:
    """Each box widened to the largest size of the track within ``window`` frames."""
    frames = sorted(filled)
    out = {}
    for f in frames:
        box, score, source = filled[f]
        lo, hi = bisect.bisect_left(frames, f - window), bisect.bisect_right(frames, f + window)
        near = [filled[g][0] for g in frames[lo:hi]]
        w = max(b[2] for b in near)
        h = max(b[3] for b in near)
        cx, cy = centre(box)
        out[f] = ((cx - w / 2, cy - h / 2, w, h), score, source)
    return out


def track(
    detections: Sequence[Sequence[Face]], cfg: TrackConfig | None = None, id_offset: int = 0
) -> list[list[TrackedBox]]:
    """Every frame's boxes after temporal coverage (``cfg`` None: the detections alone, each
    its own track). Track ids start at ``id_offset``."""
    n = len(detections)
    frames: list[list[TrackedBox]] = [[] for _ in range(n)]
    if cfg is None:
        next_id = id_offset
        for i, faces in enumerate(detections):
            for f in faces:
                frames[i].append(TrackedBox(f.x, f.y, f.w, f.h, f.score, DETECTED, next_id))
                next_id += 1
        return frames
    for t in build_tracks(detections, cfg):
        for f, (box, score, source) in _stable(_fill(t, n, cfg), cfg.size_window).items():
            frames[f].append(TrackedBox(*box, score, source, id_offset + t.id))
    return frames

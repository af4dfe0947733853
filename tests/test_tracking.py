"""Temporal coverage's association (``blurbeam.video.tracking``): the array form that scores
every track against every face equals the per-pair rule ``_affinity``, and the greedy matching
it feeds gives the tracks the per-pair matching gives. Pure code (no PyAV)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from blurbeam.detectors.base import Face
from blurbeam.video import tracking as tr


def random_box(rng: random.Random) -> tuple[float, float, float, float]:
    size = rng.choice([0.0, rng.uniform(2, 12), rng.uniform(12, 80)])
    return (rng.uniform(0, 200), rng.uniform(0, 120), size * rng.uniform(0.7, 1.3), size)


@pytest.mark.parametrize("seed", range(5))
def test_affinities_equal_the_per_pair_rule(seed):
    rng = random.Random(seed)
    cfg = tr.TrackConfig()
    pred = [random_box(rng) for _ in range(30)]
    boxes = [random_box(rng) for _ in range(40)]
    # near copies of the predictions: the IoU and the centre-distance branches both fire
    boxes += [(x + rng.uniform(-3, 3), y + rng.uniform(-3, 3), w, h) for x, y, w, h in pred]
    got = tr._affinities(np.array(pred), np.array(boxes), cfg)
    want = np.array([[tr._affinity(p, b, cfg) for b in boxes] for p in pred])
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert (want > 0).sum() > 20 and (want >= cfg.iou_threshold).sum() > 5


def per_pair_associate(tracks, faces, frame, cfg):
    """The matching rule, one pair at a time."""
    pairs = []
    for ti, t in enumerate(tracks):
        pred = tr._moved(t.boxes[-1], t.velocity(cfg.velocity_frames), frame - t.frames[-1], 1.0)
        for fi, f in enumerate(faces):
            box = (f.x, f.y, f.w, f.h)
            score = max(tr._affinity(pred, box, cfg), tr._affinity(t.boxes[-1], box, cfg))
            if score > 0:
                pairs.append((score, ti, fi))
    pairs.sort(reverse=True)
    used_t, used_f, matches = set(), set(), []
    for _, ti, fi in pairs:
        if ti not in used_t and fi not in used_f:
            used_t.add(ti)
            used_f.add(fi)
            matches.append((ti, fi))
    return matches, [fi for fi in range(len(faces)) if fi not in used_f]


@pytest.mark.parametrize("seed", range(3))
def test_tracks_equal_those_of_the_per_pair_matching(seed, monkeypatch):
    """A crowd of 25 small faces drifting under shake, some missed, for 60 frames."""
    rng = random.Random(seed)
    faces = [[rng.uniform(0, 600), rng.uniform(0, 340), rng.uniform(6, 30)] for _ in range(25)]
    detections = []
    for _ in range(60):
        shake = (rng.uniform(-4, 4), rng.uniform(-4, 4))
        frame = []
        for f in faces:
            f[0] += 0.8
            if rng.random() < 0.85:
                x, y = f[0] + shake[0], f[1] + shake[1]
                frame.append(Face(x, y, f[2], f[2] * 1.2, rng.uniform(0.2, 1.0)))
        rng.shuffle(frame)
        detections.append(frame)
    cfg = tr.TrackConfig()
    fast = tr.track(detections, cfg)
    monkeypatch.setattr(tr, "_associate", per_pair_associate)
    slow = tr.track(detections, cfg)
    assert fast == slow
    assert sum(len(f) for f in fast) >= sum(len(f) for f in detections)


def test_a_lone_detection_is_held_over_the_unsearched_frames_only_when_asked():
    """``lone_hold``: a track of one detection covers that many frames either side (growing,
    ``propagated``); with the default 0 it covers its own frame only. A track of two or more
    detections keeps ``hold``."""
    lone = Face(50.0, 40.0, 20.0, 20.0, 0.9)
    dets: list[list[Face]] = [[] for _ in range(12)]
    dets[6] = [lone]
    covered = [i for i, f in enumerate(tr.track(dets, tr.TrackConfig())) if f]
    assert covered == [6]
    frames = tr.track(dets, tr.TrackConfig(lone_hold=2))
    assert [i for i, f in enumerate(frames) if f] == [4, 5, 6, 7, 8]
    assert [b.source for b in frames[6]] == [tr.DETECTED]
    for i in (4, 5, 7, 8):
        (box,) = frames[i]
        assert box.source == tr.PROPAGATED
        # the held box contains the detected one (no velocity: it only grows about its centre)
        assert box.x <= lone.x and box.y <= lone.y
        assert box.x + box.w >= lone.x + lone.w and box.y + box.h >= lone.y + lone.h


def test_detection_on_every_kth_frame_holds_lone_detections_over_the_frames_between():
    from blurbeam.video.process import VideoOptions

    assert VideoOptions().track_config == tr.TrackConfig()
    assert VideoOptions(detect_every=3).track_config == tr.TrackConfig(lone_hold=2)
    assert VideoOptions(detect_every=2, tracking=tr.TrackConfig(lone_hold=5)).track_config == (
        tr.TrackConfig(lone_hold=5)
    )
    # every frame between two searched frames (0, 3, 6) is covered by a lone detection on 3
    dets: list[list[Face]] = [[] for _ in range(7)]
    dets[3] = [Face(10.0, 10.0, 30.0, 30.0, 0.8)]
    frames = tr.track(dets, VideoOptions(detect_every=3).track_config)
    assert [i for i, f in enumerate(frames) if f] == [1, 2, 3, 4, 5]

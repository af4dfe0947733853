"""Scoring of the privacy audit on hand-made feature sets."""

from __future__ import annotations

import numpy as np
import pytest

from blurbeam.lab.reid.scoring import own_rank, score_setting, top1_hits


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_probes_are_all_identified_and_reidentified() -> None:
    g = _unit(np.random.default_rng(0).normal(size=(50, 128)))
    s = score_setting("gaussian", 0.05, g, {"none": g.copy()})
    assert s.top1["none"].k == 50 and s.top1_any.value == 1.0
    assert s.reid.value == 1.0
    assert s.chance == pytest.approx(1 / 50)
    assert not s.passes
    # Random 128-d unit vectors are nearly orthogonal: no impostor reaches 0.363.
    assert s.impostor.value == 0.0


def test_unrelated_probes_are_at_chance() -> None:
    rng = np.random.default_rng(1)
    g = _unit(rng.normal(size=(300, 128)))
    p = _unit(rng.normal(size=(300, 128)))
    s = score_setting("gaussian", 0.25, g, {"none": p})
    assert s.top1["none"].value < 0.03
    assert s.top1["none"].lo <= 1 / 300 <= s.top1["none"].hi
    assert s.reid.value == 0.0 and s.passes


def test_worst_attacker_per_face_counts() -> None:
    rng = np.random.default_rng(2)
    g = _unit(rng.normal(size=(40, 128)))
    noise = -g  # the opposite of each face: never nearest to its own original
    # Attacker a recovers faces 0-9, attacker b faces 10-29: each alone identifies fewer faces
    # than the worst case per face.
    a = noise.copy()
    a[:10] = g[:10]
    b = noise.copy()
    b[10:30] = g[10:30]
    s = score_setting("box", 0.9, g, {"a": a, "b": b})
    assert s.top1["a"].k == 10 and s.top1["b"].k == 20
    assert s.worst_attacker == "b" and s.top1_max.k == 20
    assert s.top1_any.k == 30
    assert s.reid.k == 30
    assert s.reid_per_attacker["a"].k == 10


def test_impostor_rate_counts_other_peoples_originals_only() -> None:
    # Two groups of near-identical identities: every probe matches its group's originals.
    base = _unit(np.random.default_rng(3).normal(size=(2, 128)))
    g = np.repeat(base, 5, axis=0)  # faces 0-4 identical, 5-9 identical
    s = score_setting("pixelate", 32, g, {"none": g.copy()})
    # Each face matches the 4 others of its group out of 9 others.
    assert s.impostor.value == pytest.approx(4 / 9)
    # Ties with other gallery faces do not count as identified.
    assert s.top1["none"].k == 0


def test_top1_and_rank_helpers() -> None:
    sims = np.array([[0.9, 0.1, 0.2], [0.5, 0.4, 0.1], [np.nan, np.nan, np.nan]])
    assert list(top1_hits(sims)) == [True, False, False]
    assert list(own_rank(sims)) == [1, 2, 0]


def test_missing_probes_and_bad_shapes() -> None:
    rng = np.random.default_rng(4)
    g = _unit(rng.normal(size=(10, 128)))
    p = g.copy()
    p[3] = np.nan  # the attacker did not run on face 3
    s = score_setting("gaussian", 0.1, g, {"none": g.copy(), "x": p})
    assert s.top1["x"].n == 9 and s.top1["x"].k == 9
    assert len([r for r in s.rows if r["attacker"] == "x"]) == 9
    with pytest.raises(ValueError, match="do not match"):
        score_setting("gaussian", 0.1, g, {"none": g[:5]})
    with pytest.raises(ValueError, match="no attackers"):
        score_setting("gaussian", 0.1, g, {})


def test_gallery_only_faces_are_distractors_not_probes() -> None:
    rng = np.random.default_rng(5)
    g = _unit(rng.normal(size=(30, 128)))
    p = np.full_like(g, np.nan)
    p[:10] = g[:10]  # only the first 10 faces are probed
    s = score_setting("gaussian", 0.25, g, {"none": p})
    assert s.n_faces == 10 and s.gallery_size == 30
    assert s.top1["none"].n == 10 and s.reid.k == 10 and s.reid.n == 10
    assert s.chance == pytest.approx(1 / 30)

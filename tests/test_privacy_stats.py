"""Confidence intervals and the similarity threshold logic of the privacy audit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from blurbeam.lab.reid.intervals import bootstrap, wilson
from blurbeam.lab.reid.recognizer import COSINE_THRESHOLD, face_row, is_match


def test_wilson_matches_the_closed_form() -> None:
    # Textbook values (Newcombe 1998, table I): 81/263 -> 0.2553..0.3662; 0/10 -> 0..0.2775.
    r = wilson(81, 263)
    assert r.value == pytest.approx(81 / 263)
    assert r.lo == pytest.approx(0.2553, abs=5e-4)
    assert r.hi == pytest.approx(0.3662, abs=5e-4)
    z = wilson(0, 10)
    assert (z.value, z.lo) == (0.0, 0.0)
    assert z.hi == pytest.approx(0.2775, abs=5e-4)
    full = wilson(10, 10)
    assert full.hi == 1.0 and full.lo == pytest.approx(1 - 0.2775, abs=5e-4)


def test_wilson_interval_shrinks_with_n_and_contains_the_rate() -> None:
    widths = []
    for n in (20, 200, 2000):
        r = wilson(n // 4, n)
        assert r.lo < 0.25 < r.hi
        widths.append(r.hi - r.lo)
    assert widths[0] > widths[1] > widths[2]


def test_wilson_rejects_impossible_counts_and_handles_no_data() -> None:
    with pytest.raises(ValueError):
        wilson(5, 4)
    with pytest.raises(ValueError):
        wilson(-1, 4)
    assert math.isnan(wilson(0, 0).value)


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    rng = np.random.default_rng(1)
    values = (rng.random(300) < 0.1).astype(float)
    a = bootstrap(values, seed=3)
    b = bootstrap(values, seed=3)
    assert (a.lo, a.hi) == (b.lo, b.hi)
    assert a.value == pytest.approx(values.mean())
    assert a.lo < a.value < a.hi
    # For 0/1 data the bootstrap interval is close to Wilson's.
    w = wilson(int(values.sum()), len(values))
    assert abs(a.lo - w.lo) < 0.02 and abs(a.hi - w.hi) < 0.02


def test_threshold_logic() -> None:
    assert is_match(COSINE_THRESHOLD) is True
    assert is_match(np.nextafter(COSINE_THRESHOLD, 0)) is False
    assert is_match(float("nan")) is False
    assert list(is_match(np.array([0.9, 0.1, np.nan]))) == [True, False, False]


def test_face_row_layout() -> None:
    lms = [(10, 11), (20, 21), (30, 31), (40, 41), (50, 51)]
    row = face_row(lms, (1, 2, 3, 4))
    assert row.shape == (1, 15) and row.dtype == np.float32
    assert list(row[0, :4]) == [1, 2, 3, 4]
    assert list(row[0, 4:14]) == [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]
    with pytest.raises(ValueError, match="five"):
        face_row(lms[:4])
    with pytest.raises(ValueError, match="finite"):
        face_row([(float("nan"), 0)] + lms[1:])

"""Confidence intervals for the audit's rates.

* ``wilson``: the Wilson score interval of a binomial proportion (k successes out of n
  independent trials). Used for per-face rates: top-1 identification, verification
  re-identification. Unlike the normal approximation it behaves at k = 0 and k = n, which is where
  a good anonymizer lives (0 of 250 identified still has an upper bound of about 1.5%).
* ``bootstrap``: a percentile bootstrap over faces for rates whose trials are not independent
  (the impostor rate counts pairs, and every anonymized face enters many pairs): faces are
  resampled with replacement and the statistic recomputed. Seeded, so reports are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95% interval; ``k`` and ``n`` are counts (n = 0: no data, NaN)."""

    k: float
    n: int
    value: float
    lo: float
    hi: float

    def to_dict(self, prefix: str) -> dict[str, float | int]:
        return {
            f"{prefix}": self.value,
            f"{prefix}_lo": self.lo,
            f"{prefix}_hi": self.hi,
            f"{prefix}_k": self.k,
            f"{prefix}_n": self.n,
        }

    def fmt(self, digits: int = 1) -> str:
        if self.n == 0:
            return "n/a"
        return (
            f"{100 * self.value:.{digits}f}% "
            f"[{100 * self.lo:.{digits}f}, {100 * self.hi:.{digits}f}]"
        )


def wilson(k: int, n: int, z: float = Z95) -> Rate:
    """Wilson score interval for k successes in n trials."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        nan = float("nan")
        return Rate(0, 0, nan, nan, nan)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # Exact ends: with k = 0 the lower bound is 0, with k = n the upper bound is 1.
    if k == 0:
        lo = 0.0
    if k == n:
        hi = 1.0
    return Rate(k, n, p, lo, hi)


def bootstrap(
    per_unit: np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Rate:
    """Percentile bootstrap CI of ``statistic`` (default: the mean) over the units (rows) of
    ``per_unit``; returns a Rate with k = the statistic times n (for a mean of 0/1 values, the
    success count) and n = the number of units."""
    values = np.asarray(per_unit, dtype=np.float64)
    n = int(values.shape[0]) if values.ndim else 0
    stat = statistic or (lambda v: float(np.mean(v)))
    if n == 0:
        nan = float("nan")
        return Rate(0, 0, nan, nan, nan)
    point = float(stat(values))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.array([stat(values[i]) for i in idx], dtype=np.float64)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return Rate(point * n, n, point, float(min(lo, point)), float(max(hi, point)))

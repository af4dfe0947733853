"""Scoring: verification re-identification, impostor floor and top-1 identification.

Inputs for one setting (method x strength): the gallery ``G`` (N, 128), the L2-normalised SFace
features of the N *original* faces, and per attacker the probe features ``P[a]`` (N, 128) of the
same faces after anonymization and that attacker (row i = face i; a NaN row = the attacker did not
run on that face; a face with NaN rows for every attacker is a gallery-only distractor: it makes
identification harder but is not itself scored). Similarities are cosines (dot products).

* Verification re-identification: face i is re-identified when, under the worst attacker for it
  (the highest cosine to its own original), cos(P[a]_i, G_i) >= 0.363. Wilson 95% interval.
* Impostor rate (its floor): the same worst-attacker rule against *other* faces' originals: the
  fraction of pairs (i, j != i) with max_a cos(P[a]_i, G_j) >= 0.363. Pairs share faces, so the
  interval is a bootstrap over faces.
* Top-1 identification per attacker: face i is identified when its nearest gallery face is its own
  original; chance is 1 / N. "Any attacker" counts a face identified by at least one attacker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from blurbeam.lab.reid.intervals import Rate, bootstrap, wilson
from blurbeam.lab.reid.recognizer import COSINE_THRESHOLD, is_match

#: The targets (docs/PRIVACY.md): the defaults must pass, the weak settings must be flagged.
TARGET_TOP1 = 0.03
TARGET_REID = 0.05
WEAK_TOP1 = 0.50
MIN_GALLERY = 200


@dataclass
class SettingScore:
    method: str
    strength: float
    n_faces: int
    gallery_size: int
    attackers: list[str]
    top1: dict[str, Rate]
    top1_any: Rate
    reid: Rate  # worst attacker per face
    reid_per_attacker: dict[str, Rate]
    impostor: Rate
    mean_cosine: dict[str, float]
    rows: list[dict] = field(default_factory=list)  # per face x attacker
    mask_scale: float = 1.3

    @property
    def label(self) -> str:
        """The strength, with the mask scale when it is not the default 1.3."""
        return f"{self.strength:g}" + (
            "" if self.mask_scale == 1.3 else f" (mask {self.mask_scale:g})"
        )

    @property
    def chance(self) -> float:
        return 1.0 / self.gallery_size if self.gallery_size else float("nan")

    @property
    def worst_attacker(self) -> str:
        return max(self.attackers, key=lambda a: (self.top1[a].value, a))

    @property
    def top1_max(self) -> Rate:
        return self.top1[self.worst_attacker]

    @property
    def passes(self) -> bool:
        return self.top1_max.value <= TARGET_TOP1 and self.reid.value <= TARGET_REID

    def summary(self) -> dict:
        d: dict = {
            "method": self.method,
            "strength": float(self.strength),
            "mask_scale": float(self.mask_scale),
            "n_faces": self.n_faces,
            "gallery_size": self.gallery_size,
            "chance_top1": self.chance,
            "attackers": ",".join(self.attackers),
            "worst_attacker": self.worst_attacker,
        }
        d.update(self.top1_max.to_dict("top1_max"))
        d.update(self.top1_any.to_dict("top1_any"))
        d.update(self.reid.to_dict("reid"))
        d.update(self.impostor.to_dict("impostor"))
        for a in self.attackers:
            d.update(self.top1[a].to_dict(f"top1_{a}"))
            d[f"mean_cosine_{a}"] = self.mean_cosine[a]
        d["passes"] = bool(self.passes)
        return d


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, x / n, np.nan)


def top1_hits(sims: np.ndarray) -> np.ndarray:
    """(N, N) probe x gallery similarities -> bool (N,): is the own gallery face (the diagonal)
    strictly the most similar? Rows that are all NaN are not identified."""
    n = sims.shape[0]
    own = np.diag(sims)
    s = np.where(np.isnan(sims), -np.inf, sims).copy()
    s[np.arange(n), np.arange(n)] = -np.inf
    best_other = s.max(axis=1) if sims.shape[1] > 1 else np.full(n, -np.inf)
    return np.where(np.isnan(own), False, own > best_other)


def own_rank(sims: np.ndarray) -> np.ndarray:
    """1 + the number of other gallery faces more similar than the own one (NaN -> 0)."""
    own = np.diag(sims)
    s = np.where(np.isnan(sims), -np.inf, sims)
    ranks = 1 + (s > own[:, None]).sum(axis=1)
    return np.where(np.isnan(own), 0, ranks)


def score_setting(
    method: str,
    strength: float,
    gallery: np.ndarray,
    probes: Mapping[str, np.ndarray],
    face_ids: Sequence[str] | None = None,
    threshold: float = COSINE_THRESHOLD,
    n_boot: int = 1000,
    mask_scale: float = 1.3,
) -> SettingScore:
    g = _normalise(np.asarray(gallery, dtype=np.float64))
    n = g.shape[0]
    if n == 0:
        raise ValueError("no faces to score")
    ids = list(face_ids) if face_ids is not None else [str(i) for i in range(n)]
    attackers = list(probes)
    if not attackers:
        raise ValueError("no attackers to score")
    sims: dict[str, np.ndarray] = {}
    for a in attackers:
        p = np.asarray(probes[a], dtype=np.float64)
        if p.shape != g.shape:
            raise ValueError(f"attacker {a}: probes {p.shape} do not match gallery {g.shape}")
        sims[a] = _normalise(p) @ g.T
    stack = np.stack([sims[a] for a in attackers])  # (A, N, N)
    probed = ~np.all(np.isnan(np.stack([np.diag(x) for x in stack])), axis=0)  # (N,)
    with np.errstate(invalid="ignore"):
        worst = np.max(np.where(np.isnan(stack), -np.inf, stack), axis=0)  # (N, N)
    worst = np.where(np.isinf(worst), np.nan, worst)
    own_worst = np.diag(worst)
    reid_hits = np.asarray(is_match(own_worst, threshold))
    imp = np.where(np.isnan(worst), -np.inf, worst) >= threshold
    np.fill_diagonal(imp, False)
    per_face_imp = (imp.sum(axis=1) / max(1, n - 1))[probed]
    n_probed = int(probed.sum())

    top1: dict[str, Rate] = {}
    reid_a: dict[str, Rate] = {}
    mean_cos: dict[str, float] = {}
    any_hit = np.zeros(n, dtype=bool)
    rows: list[dict] = []
    for a in attackers:
        s = sims[a]
        hits = top1_hits(s)
        ranks = own_rank(s)
        own = np.diag(s)
        valid = ~np.isnan(own)
        any_hit |= hits
        top1[a] = wilson(int(hits[valid].sum()), int(valid.sum()))
        reid_a[a] = wilson(int((own[valid] >= threshold).sum()), int(valid.sum()))
        mean_cos[a] = float(np.nanmean(own)) if valid.any() else float("nan")
        for i in range(n):
            if not valid[i]:
                continue
            rows.append(
                {
                    "method": method,
                    "strength": float(strength),
                    "mask_scale": float(mask_scale),
                    "face_id": ids[i],
                    "attacker": a,
                    "cosine": float(own[i]),
                    "match": bool(own[i] >= threshold),
                    "rank": int(ranks[i]),
                    "top1": bool(hits[i]),
                    "gallery_size": n,
                }
            )
    return SettingScore(
        method=method,
        strength=float(strength),
        n_faces=n_probed,
        gallery_size=n,
        attackers=attackers,
        top1=top1,
        top1_any=wilson(int(any_hit[probed].sum()), n_probed),
        reid=wilson(int(reid_hits[probed].sum()), n_probed),
        reid_per_attacker=reid_a,
        impostor=bootstrap(per_face_imp, n_boot=n_boot),
        mean_cosine=mean_cos,
        rows=rows,
        mask_scale=float(mask_scale),
    )

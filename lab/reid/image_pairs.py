"""The privacy audit's units of work, how they are found and how one is audited. Pure code:
no Beam.

An ``AuditTask`` is one image pair: the original, the anonymized output, the anonymization
settings and (from the anonymize run's audit Parquet) its faces with landmarks. Without an audit
record the faces are re-detected on the original with YuNet. ``audit_pair`` turns one pair into
the identity features of its faces (``PairOutcome``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blurbeam import blur
from blurbeam.lab.reid.faceset import FaceSpec, match_landmarks


class AuditInputError(ValueError):
    """A user-facing, one-line reason why the audit cannot start."""


@dataclass(frozen=True)
class AuditTask:
    source_uri: str
    anonymized_uri: str
    method: str
    method_params: str  # JSON, as in the audit record (BlurConfig.params_json)
    faces: tuple[dict[str, Any], ...] | None = None  # audit faces; None = re-detect


@dataclass
class FaceResult:
    """What the per-image stage yields for one face."""

    face_id: str
    face_size: float
    original: np.ndarray
    attacked: dict[str, np.ndarray] = field(default_factory=dict)


#: (method, strength, mask scale) of the anonymization a face was audited under.
SettingKey = tuple[str, float, float]


@dataclass(frozen=True)
class PairOutcome:
    """What auditing one pair gave: each face under its setting, and (uri, reason) for the
    image or the faces that could not be audited (``skipped_count`` of them)."""

    faces: tuple[tuple[SettingKey, FaceResult], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    skipped_count: int = 0


def read_rgb_uri(uri: str, max_pixels: int) -> np.ndarray:
    """An image file (a local path or an fsspec URL) as uint8 RGB, decoded as the product
    decodes (EXIF orientation applied)."""
    import fsspec

    from blurbeam.imageio import decode, to_rgb8

    with fsspec.open(uri, "rb") as fh:
        data = fh.read()
    return to_rgb8(decode(data, max_pixels).pixels)


def audit_pair(
    task: AuditTask,
    models,
    attackers: Sequence[str] | None,
    min_face_size: float,
    max_pixels: int = 100_000_000,
) -> PairOutcome:
    """The identity features of ``task``'s faces of at least ``min_face_size`` px, original and
    anonymized after each applicable attacker (only ``attackers`` when given), with ``models``
    (``face_features.AuditModels``). An image that cannot be read, or whose two files differ in
    size, is skipped with a one-line reason, and so are faces without landmarks."""
    from blurbeam.errors import one_line
    from blurbeam.lab.reid.attackers import attackers_for
    from blurbeam.lab.reid.face_features import attacked_features, original_features

    uri = task.source_uri
    try:
        cfg = config_from_params(task.method, task.method_params)
        original = read_rgb_uri(uri, max_pixels)
        anonymized = read_rgb_uri(task.anonymized_uri, max_pixels)
    except Exception as exc:  # noqa: BLE001 - ImageError, OSError, bad settings: one line, go on
        return PairOutcome(skipped=((uri, one_line(exc)),), skipped_count=1)
    if original.shape != anonymized.shape:
        reason = (
            f"original {original.shape[1]}x{original.shape[0]} and anonymized "
            f"{anonymized.shape[1]}x{anonymized.shape[0]} differ in size"
        )
        return PairOutcome(skipped=((uri, reason),), skipped_count=1)
    if task.faces is None:
        raw = [
            FaceSpec((f.x, f.y, f.w, f.h), f.landmarks) if f.landmarks else (f.x, f.y, f.w, f.h)
            for f in models.detector().detect(original)
        ]
    else:
        raw = faces_from_audit(task.faces)
    big = [f for f in raw if max((f.box if isinstance(f, FaceSpec) else f)[2:4]) >= min_face_size]
    faces, unaligned = resolve_landmarks(big, original, models.detector()) if big else ([], 0)
    skipped = ((uri, f"{unaligned} face(s) without landmarks (not aligned)"),) if unaligned else ()
    if not faces:
        return PairOutcome(skipped=skipped, skipped_count=unaligned)
    wanted = attackers_for(cfg.method, deblur=models.deblur is not None)
    if attackers is not None:
        wanted = [a for a in wanted if a in attackers]
    origs = original_features(models.recognizer, original, faces)
    attacked = attacked_features(models.recognizer, anonymized, faces, cfg, wanted, models.deblur)
    key = (cfg.method, float(cfg.effective_strength), float(cfg.mask_scale))
    results = tuple(
        (key, FaceResult(f"{uri}#{i}", f.size, o, a.features))
        for i, (f, o, a) in enumerate(zip(faces, origs, attacked, strict=True))
    )
    return PairOutcome(results, skipped, unaligned)


def config_from_params(method: str, params_json: str | None) -> blur.BlurConfig:
    """The BlurConfig an audit record describes (its ``method`` and ``method_params``)."""
    try:
        p = json.loads(params_json) if params_json else {}
    except json.JSONDecodeError:
        raise AuditInputError(f"method_params is not JSON: {params_json[:80]!r}") from None
    kw: dict[str, Any] = {"method": p.get("method", method)}
    if "strength" in p and kw["method"] != "solid":
        kw["strength"] = float(p["strength"])
    for k in ("mask_scale", "mask_shape", "feather"):
        if k in p:
            kw[k] = p[k]
    if "color" in p:
        kw["color"] = tuple(int(c) for c in p["color"])
    try:
        return blur.BlurConfig(**kw)
    except (TypeError, ValueError) as exc:
        raise AuditInputError(f"bad anonymization settings in the audit record: {exc}") from None


def faces_from_audit(faces: Sequence[dict[str, Any]] | None) -> list[FaceSpec | tuple]:
    """Audit faces -> FaceSpec when they carry five landmarks, else the bare box tuple."""
    out: list[FaceSpec | tuple] = []
    for f in faces or []:
        box = (float(f["x"]), float(f["y"]), float(f["w"]), float(f["h"]))
        lms = f.get("landmarks") or []
        if len(lms) == 5:
            out.append(FaceSpec(box, tuple((float(p["x"]), float(p["y"])) for p in lms)))
        else:
            out.append(box)
    return out


def resolve_landmarks(
    faces: Sequence[FaceSpec | tuple], rgb: np.ndarray, detector
) -> tuple[list[FaceSpec], int]:
    """Faces without landmarks get those of the YuNet face on the original that overlaps them
    (IoU >= 0.4); returns (faces with landmarks, how many could not be aligned)."""
    bare = [f for f in faces if not isinstance(f, FaceSpec)]
    ready = [f for f in faces if isinstance(f, FaceSpec)]
    if not bare:
        return ready, 0
    lms = match_landmarks(bare, detector.detect(rgb))
    missing = 0
    for b, lm in zip(bare, lms, strict=True):
        if lm is None:
            missing += 1
        else:
            ready.append(FaceSpec(tuple(b), lm))
    return ready, missing


def _glob_parquet(root: str) -> list[str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(root)
    if fs.isdir(path):
        files = sorted(fs.glob(f"{path.rstrip('/')}/audit/*.parquet")) or sorted(
            fs.glob(f"{path.rstrip('/')}/*.parquet")
        )
    else:
        files = sorted(fs.glob(path))
    from blurbeam.shards import to_uri

    return [to_uri(fs, f) for f in files]


def read_audit(audit: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """Audit records (dicts) from a Parquet file, a glob, or an anonymize output directory."""
    import pyarrow.parquet as pq

    files = _glob_parquet(audit)
    if not files:
        raise AuditInputError(
            f"no audit Parquet found at {audit} (expected OUTPUT/audit/*.parquet)"
        )
    cols = ["run_id", "source_uri", "output_uri", "status", "faces", "method", "method_params"]
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            table = pq.read_table(f, columns=cols)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a one-line input error
            reason = " ".join(str(exc).split())[:200]
            raise AuditInputError(f"cannot read audit file {f}: {reason}") from None
        rows += table.to_pylist()
    if run_id:
        rows = [r for r in rows if r["run_id"] == run_id]
    return rows


def _rel_under(path: str, root: str) -> str | None:
    p, r = os.path.abspath(path), os.path.abspath(root)
    return os.path.relpath(p, r) if p == r or p.startswith(r.rstrip(os.sep) + os.sep) else None


def tasks_from_audit(
    records: Sequence[dict[str, Any]], original: str | None, anonymized: str | None
) -> tuple[list[AuditTask], list[tuple[str, str]]]:
    """(tasks, skipped (uri, reason)) for the records of an anonymize run.

    The anonymized image is the record's ``output_uri``; when it no longer exists there and
    ``--anonymized``/``--original`` are given, it is looked up at the same relative path under
    ``--anonymized``. Images inside container shards are not supported (skipped, with reason)."""
    tasks: list[AuditTask] = []
    skipped: list[tuple[str, str]] = []
    for r in records:
        src = r["source_uri"]
        if r["status"] != "ok":
            if r["status"] == "error":
                skipped.append((src, "the anonymize run failed on this image"))
            continue
        if "#" in src:
            skipped.append((src, "images inside container shards are not audited yet"))
            continue
        if original and not os.path.exists(src):
            rel = _rel_under(src, original)
            src = os.path.join(original, rel) if rel else src
        out = r["output_uri"]
        if (not out or not os.path.exists(out)) and anonymized and original:
            rel = _rel_under(r["source_uri"], original)
            if rel:
                out = os.path.join(anonymized, rel)
        if not out:
            skipped.append((src, "the audit record has no output image"))
            continue
        tasks.append(AuditTask(src, out, r["method"], r["method_params"], tuple(r["faces"] or ())))
    return tasks, skipped


def tasks_from_folders(
    original: str, anonymized: str, cfg: blur.BlurConfig
) -> Iterator[AuditTask | tuple[str, str]]:
    """Pairs of images at the same relative path (faces re-detected); a tuple for an original
    without its anonymized counterpart."""
    from blurbeam.imageio import IMAGE_EXTENSIONS

    if not os.path.isdir(original):
        raise AuditInputError(f"--original {original} is not a directory")
    if not os.path.isdir(anonymized):
        raise AuditInputError(f"--anonymized {anonymized} is not a directory")
    for root, dirs, files in os.walk(original):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            src = os.path.join(root, name)
            out = os.path.join(anonymized, os.path.relpath(src, original))
            if os.path.exists(out):
                yield AuditTask(src, out, cfg.method, cfg.params_json(), None)
            else:
                yield (src, f"no anonymized image at {out}")

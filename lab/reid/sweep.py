"""The sweep: methods x strengths over a face set, every applicable attacker, scored.

The work is resumable and incremental: features are stored per setting and attacker under
``<out>/features/<method>_<strength>/<attacker>.npy`` (row i = face i of ``faces.json``), the
originals under ``<out>/originals.npy`` (``<out>``: a local folder or an fsspec URL). A rerun
computes only what is missing, so an attacker added later (the deblur model) costs only its own
pass. What is missing runs as one Beam pipeline (``lab.transforms.reid_audit.run_sweep_pipeline``:
one work item per image and setting, the models behind ``reid_models.SweepHandler``).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from blurbeam import blur
from blurbeam.lab.reid.attackers import attackers_for
from blurbeam.lab.reid.faceset import FaceSpec, ImageFaces, read_rgb, sweep_face_set

#: (method, strength[, mask scale]) in the order they are computed: the defaults and the
#: known-weak settings first, so a partial sweep already answers the questions that matter.
DEFAULT_GRID: tuple[tuple, ...] = (
    ("gaussian", 0.25),
    ("pixelate", 6.0),
    ("gaussian", 0.35),
    ("gaussian", 0.05),
    ("pixelate", 32.0),
    ("pixelate", 4.0),
    ("gaussian", 0.25, 1.6),
    ("pixelate", 3.0),
    ("pixelate", 4.0, 1.6),
    ("pixelate", 3.0, 1.6),
    ("solid", 0.0),
    ("gaussian", 0.10),
    ("gaussian", 0.15),
    ("box", 0.9),
    ("median", 0.75),
    ("bilateral", 0.25),
    ("box", 0.9, 1.6),
    ("median", 0.75, 1.6),
    ("bilateral", 0.25, 1.6),
    ("solid", 0.0, 1.6),
    ("bilateral", 0.5),
    ("bilateral", 1.0),
    ("gaussian", 0.5),
    ("pixelate", 16.0),
    ("pixelate", 8.0),
    ("box", 0.3),
)


#: The mask scale of a grid entry that gives none (deface's 1.3), and the base of the cache's
#: directory names: other scales get a ``_mask<scale>`` suffix. Fixed here, not taken from the
#: product's default, so that cached results keep their meaning whatever that default is.
MASK_SCALE = 1.3

Setting = tuple[str, float, float]  # method, strength, mask scale


def normalise(entry: tuple) -> Setting:
    """(method, strength) or (method, strength, mask scale) -> (method, strength, mask scale)."""
    return (entry[0], float(entry[1]), float(entry[2]) if len(entry) > 2 else MASK_SCALE)


def setting_name(method: str, strength: float, mask_scale: float = MASK_SCALE) -> str:
    name = f"{method}_{strength:g}"
    return name if mask_scale == MASK_SCALE else f"{name}_mask{mask_scale:g}"


def parse_setting(text: str) -> Setting:
    """``gaussian:0.25:1.6`` -> ("gaussian", 0.25, 1.6); without the mask scale, the product's
    default mask scale; ``solid`` alone is allowed."""
    method, _, value = text.partition(":")
    method = method.strip()
    value, _, mask = value.partition(":")
    try:
        mask_scale = float(mask) if mask else blur.DEFAULT_MASK_SCALE
    except ValueError:
        raise ValueError(f"mask scale in {text!r} is not a number") from None
    if method not in blur.METHODS:
        raise ValueError(f"unknown method {method!r} in {text!r}; choose from {blur.METHODS}")
    if not value:
        if method != "solid":
            raise ValueError(f"setting {text!r} needs a strength, e.g. {method}:0.25")
        return method, 0.0, mask_scale
    try:
        strength = float(value)
    except ValueError:
        raise ValueError(f"strength in {text!r} is not a number") from None
    config(method, strength, mask_scale)  # validates
    return method, strength, mask_scale


def config(method: str, strength: float, mask_scale: float = MASK_SCALE) -> blur.BlurConfig:
    return blur.BlurConfig(method, None if method == "solid" else strength, mask_scale=mask_scale)


# --------------------------------------------------------------------------------------------
# the cache

ORIGINALS = "originals.npy"
FACES = "faces.json"


def _uri(out: str | Path, rel: str) -> str:
    from blurbeam.shards import join_output

    return join_output(str(out), rel)


def features_uri(out: str | Path, name: str, attacker: str) -> str:
    """Where the features of setting ``name`` (``setting_name``) after ``attacker`` are cached."""
    return _uri(out, f"features/{name}/{attacker}.npy")


def _exists(uri: str) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def _read(uri: str) -> bytes:
    import fsspec

    with fsspec.open(uri, "rb") as fh:
        return fh.read()


def save_npy(uri: str, array: np.ndarray) -> None:
    from blurbeam.shards import write_bytes

    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(uri, buf.getvalue())


def load_npy(uri: str) -> np.ndarray:
    return np.load(io.BytesIO(_read(uri)))


def save_faces(path: str | Path, images: Sequence[ImageFaces], meta: dict) -> None:
    from blurbeam.shards import write_bytes

    data = {
        "meta": meta,
        "images": [
            {"key": im.key, "path": im.path, "faces": [asdict(f) for f in im.faces]}
            for im in images
        ],
    }
    write_bytes(str(path), json.dumps(data, indent=1).encode())


def load_faces(path: str | Path) -> tuple[list[ImageFaces], dict]:
    data = json.loads(_read(str(path)))
    images = [
        ImageFaces(
            d["key"],
            d["path"],
            [
                FaceSpec(tuple(f["box"]), tuple(tuple(p) for p in f["landmarks"]))
                for f in d["faces"]
            ],
        )
        for d in data["images"]
    ]
    return images, data["meta"]


def face_ids(images: Sequence[ImageFaces]) -> list[str]:
    return [f"{im.key}#{i}" for im in images for i in range(len(im.faces))]


# --------------------------------------------------------------------------------------------
# work items

#: The group of the original faces' features (the settings' groups are ``setting_name``s).
ORIGINALS_GROUP = "originals"


@dataclass(frozen=True)
class SweepItem:
    """One image of the face set (``index``: its position) under one setting, for these
    ``attackers``; ``setting`` None: the original faces' features."""

    index: int
    image: ImageFaces
    setting: Setting | None = None
    attackers: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return ORIGINALS_GROUP if self.setting is None else setting_name(*self.setting)


@dataclass(frozen=True)
class SweepResult:
    """The features of one item's faces (N, 128) by attacker (``ORIGINALS_GROUP`` for the
    originals) and the seconds each attacker took on them."""

    index: int
    group: str
    features: dict[str, np.ndarray]
    seconds: dict[str, float]


def sweep_item(item: SweepItem, models) -> SweepResult:
    """Compute one work item with ``models`` (``face_features.AuditModels``)."""
    from blurbeam.lab.reid.face_features import (
        anonymize_faces,
        attacked_features,
        original_features,
    )

    image = item.image
    rgb = read_rgb(image.path)
    if item.setting is None:
        feats = np.stack(original_features(models.recognizer, rgb, image.faces))
        return SweepResult(item.index, item.group, {ORIGINALS_GROUP: feats}, {})
    if "deblur" in item.attackers and models.deblur is None:
        raise RuntimeError("the deblur attacker was asked for but its model is not available")
    cfg = config(*item.setting)
    anon = anonymize_faces(rgb, image.faces, cfg)
    res = attacked_features(
        models.recognizer, anon, image.faces, cfg, item.attackers, models.deblur
    )
    feats = {a: np.stack([r.features[a] for r in res]) for a in item.attackers}
    secs = {a: float(sum(r.seconds[a] for r in res)) for a in item.attackers}
    return SweepResult(item.index, item.group, feats, secs)


# --------------------------------------------------------------------------------------------


def prepare_face_set(
    out: str | Path, shared: Path, min_size: float, clear_only: bool, log
) -> list[ImageFaces]:
    path = _uri(out, FACES)
    want = {"min_size": min_size, "clear_only": clear_only}
    if _exists(path):
        images, meta = load_faces(path)
        if all(meta.get(k) == v for k, v in want.items()):
            return images
        log(f"face set options changed ({meta} -> {want}); rebuilding {path}")
    t = time.time()
    images, stats = sweep_face_set(shared, min_size, clear_only)
    meta = {**want, **asdict(stats), "faces": sum(len(im.faces) for im in images)}
    save_faces(path, images, meta)
    log(f"face set: {meta['faces']} faces in {len(images)} images ({time.time() - t:.0f} s)")
    return images


def run_sweep(
    out: str | Path,
    shared: Path,
    grid: Sequence[tuple] = DEFAULT_GRID,
    attackers: Sequence[str] | None = None,
    with_deblur: bool = False,
    workers: int = 1,
    min_size: float = 40.0,
    clear_only: bool = True,
    log: Callable[[str], None] = print,
    compute: bool = True,
    pipeline_args: Sequence[str] = (),
) -> tuple[list[ImageFaces], dict[Setting, dict[str, np.ndarray]], np.ndarray]:
    """Compute what is missing (unless ``compute`` is False: then only what is cached is
    returned); return (images, features per setting and attacker, originals). The missing work
    runs as one Beam pipeline (``pipeline_args``: Beam flags; DirectRunner by default, with
    ``workers`` processes)."""
    orig_uri = _uri(out, ORIGINALS)
    if not compute and not _exists(orig_uri):
        raise ValueError(f"--report-only: no sweep results under {out}")
    images = prepare_face_set(out, shared, min_size, clear_only, log)
    n = sum(len(im.faces) for im in images)
    items: list[SweepItem] = []
    if not (_exists(orig_uri) and load_npy(orig_uri).shape[0] == n):
        items += [SweepItem(i, im) for i, im in enumerate(images)]
    settings = [normalise(entry) for entry in grid]
    todo: dict[Setting, tuple[str, ...]] = {}
    for setting in settings:
        name = setting_name(*setting)
        applicable = attackers_for(setting[0], deblur=with_deblur)
        wanted = [a for a in applicable if attackers is None or a in attackers]
        missing = tuple(a for a in wanted if not _exists(features_uri(out, name, a)))
        if missing and compute:
            todo[setting] = missing
            items += [SweepItem(i, im, setting, missing) for i, im in enumerate(images)]
    if items:
        from blurbeam.lab.transforms.reid_audit import run_sweep_pipeline

        t = time.time()
        deblur = any("deblur" in missing for missing in todo.values())
        seconds = run_sweep_pipeline(items, str(out), deblur, workers, pipeline_args)
        for setting, missing in todo.items():
            name = setting_name(*setting)
            per_face = ", ".join(f"{a} {seconds.get((name, a), 0.0) / n:.2f}s" for a in missing)
            log(f"{name}: {', '.join(missing)} (per face {per_face})")
        log(f"sweep pipeline: {len(items)} work items in {time.time() - t:.0f} s")
    originals = load_npy(orig_uri)
    results: dict[Setting, dict[str, np.ndarray]] = {}
    for setting in settings:
        name = setting_name(*setting)
        applicable = attackers_for(setting[0], deblur=with_deblur)
        wanted = [a for a in applicable if attackers is None or a in attackers]
        if not compute and any(not _exists(features_uri(out, name, a)) for a in wanted):
            log(f"{name}: not complete in the cache; left out of the report")
            continue
        results[setting] = {
            a: load_npy(features_uri(out, name, a))
            for a in attackers_for(setting[0], deblur=True)
            if (attackers is None or a in attackers) and _exists(features_uri(out, name, a))
        }
    return images, results, originals

"""The sweep: methods x strengths over a face set, every applicable attacker, scored.

The work is resumable and incremental: features are stored per setting and attacker under
``<out>/features/<method>_<strength>/<attacker>.npy`` (row i = face i of ``faces.json``), the
originals under ``<out>/originals.npy``. A rerun computes only what is missing, so an attacker
added later (the deblur model) costs only its own pass. Images are spread over worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from blurbeam import blur
from blurbeam.lab.reid.attackers import attackers_for, load_deblur
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
# face set cache


def save_faces(path: Path, images: Sequence[ImageFaces], meta: dict) -> None:
    data = {
        "meta": meta,
        "images": [
            {"key": im.key, "path": im.path, "faces": [asdict(f) for f in im.faces]}
            for im in images
        ],
    }
    path.write_text(json.dumps(data, indent=1))


def load_faces(path: Path) -> tuple[list[ImageFaces], dict]:
    data = json.loads(path.read_text())
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
# worker processes

_REC = None
_DEBLUR = None


def _init_worker(threads: int) -> None:
    import cv2

    cv2.setNumThreads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def _recognizer():
    global _REC
    if _REC is None:
        from blurbeam.lab.reid.recognizer import Recognizer

        _REC = Recognizer()
    return _REC


def _deblur():
    global _DEBLUR
    if _DEBLUR is None:
        _DEBLUR = load_deblur()
        if _DEBLUR is None:
            raise RuntimeError("the deblur attacker was asked for but its model is not available")
    return _DEBLUR


def _original_task(image: ImageFaces) -> np.ndarray:
    from blurbeam.lab.reid.face_features import original_features

    rgb = read_rgb(image.path)
    return np.stack(original_features(_recognizer(), rgb, image.faces))


def _attack_task(
    args: tuple[ImageFaces, str, float, float, tuple[str, ...]],
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    from blurbeam.lab.reid.face_features import anonymize_faces, attacked_features

    image, method, strength, mask_scale, attackers = args
    cfg = config(method, strength, mask_scale)
    rgb = read_rgb(image.path)
    anon = anonymize_faces(rgb, image.faces, cfg)
    deblur = _deblur() if "deblur" in attackers else None
    res = attacked_features(_recognizer(), anon, image.faces, cfg, attackers, deblur)
    feats = {a: np.stack([r.features[a] for r in res]) for a in attackers}
    secs = {a: float(sum(r.seconds[a] for r in res)) for a in attackers}
    return feats, secs


# --------------------------------------------------------------------------------------------


def prepare_face_set(out: Path, shared: Path, min_size: float, clear_only: bool, log) -> list:
    path = out / "faces.json"
    want = {"min_size": min_size, "clear_only": clear_only}
    if path.exists():
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
    out: Path,
    shared: Path,
    grid: Sequence[tuple] = DEFAULT_GRID,
    attackers: Sequence[str] | None = None,
    with_deblur: bool = False,
    workers: int = 1,
    min_size: float = 40.0,
    clear_only: bool = True,
    log: Callable[[str], None] = print,
    compute: bool = True,
) -> tuple[list[ImageFaces], dict[Setting, dict[str, np.ndarray]], np.ndarray]:
    """Compute what is missing (unless ``compute`` is False: then only what is cached is
    returned); return (images, features per setting and attacker, originals)."""
    out.mkdir(parents=True, exist_ok=True)
    if not compute and not (out / "originals.npy").exists():
        raise ValueError(f"--report-only: no sweep results under {out}")
    images = prepare_face_set(out, shared, min_size, clear_only, log)
    n = sum(len(im.faces) for im in images)
    orig_path = out / "originals.npy"
    threads = 1 if workers > 1 else 0
    # spawn, not fork: the parent may already run OpenCV's / onnxruntime's thread pools (the
    # face set is detected here on a first run), and a forked child then hangs in them
    with ProcessPoolExecutor(
        max_workers=workers,
        initializer=_init_worker,
        initargs=(threads,),
        mp_context=multiprocessing.get_context("spawn"),
    ) as ex:
        if orig_path.exists() and np.load(orig_path).shape[0] == n:
            originals = np.load(orig_path)
        else:
            originals = np.concatenate(list(ex.map(_original_task, images, chunksize=4)))
            np.save(orig_path, originals)
        results: dict[Setting, dict[str, np.ndarray]] = {}
        for method, strength, mask_scale in map(normalise, grid):
            name = setting_name(method, strength, mask_scale)
            sdir = out / "features" / name
            if compute:
                sdir.mkdir(parents=True, exist_ok=True)
            applicable = attackers_for(method, deblur=with_deblur)
            todo_att = [a for a in applicable if attackers is None or a in attackers]
            missing = tuple(a for a in todo_att if not (sdir / f"{a}.npy").exists())
            if missing and compute:
                t = time.time()
                tasks = [(im, method, strength, mask_scale, missing) for im in images]
                parts = list(ex.map(_attack_task, tasks, chunksize=2))
                for a in missing:
                    np.save(sdir / f"{a}.npy", np.concatenate([p[0][a] for p in parts]))
                secs = {a: sum(p[1][a] for p in parts) / n for a in missing}
                log(
                    f"{name}: {', '.join(missing)} "
                    f"({time.time() - t:.0f} s; per face "
                    + ", ".join(f"{a} {s:.2f}s" for a, s in secs.items())
                    + ")"
                )
            if not compute and any(not (sdir / f"{a}.npy").exists() for a in todo_att):
                log(f"{name}: not complete in the cache; left out of the report")
                continue
            results[(method, strength, mask_scale)] = {
                a: np.load(sdir / f"{a}.npy")
                for a in attackers_for(method, deblur=True)
                if (sdir / f"{a}.npy").exists() and (attackers is None or a in attackers)
            }
    return images, results, originals

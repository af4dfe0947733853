"""Wall-clock-budgeted CPU training of the learned anonymizers (``model.ARCHS``).

The teacher learns the targets (``training_pairs.build_tiles``: blurbeam's default anonymization) with
MSE; the student learns from a mix of the teacher's output and the target
(``distill`` x MSE to the teacher + (1 - ``distill``) x MSE to the target). Tiles are split by
image: ``val_fraction`` of the images (never their tiles) are held out. The learning rate
follows a cosine over the fraction of the wall-clock budget used; validation runs every
``val_every_s`` seconds and the weights with the best validation MSE are saved as soon as they
are found, so a run cut short still leaves usable weights. The record (``<stem>.json``) holds
the configs, the parameter count, the data, steps, minutes and the validation curve: MSE and
MAE over the whole tile, MSE on the pixels the target changes (faces) and on those it keeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from blurbeam.lab.edge import training_pairs
from blurbeam.lab.edge.network import ARCHS, EdgeConfig, build

DEFAULT_FOLDERS = (
    ("../shared/data/widerface/pool886/images", 12),
    ("../shared/data/deblur/faces128_train", 1),
)


@dataclass
class TrainConfig:
    out: str
    arch: str = "teacher"
    minutes: float = 30.0  # wall clock
    tiles: str = "/tmp/blurbeam_edge_tiles.npz"  # built by training_pairs.build_tiles when absent
    folders: tuple[tuple[str, int], ...] = DEFAULT_FOLDERS
    detector: str = "multiscale"
    teacher: str | None = None  # teacher weights (.weights.h5) for a distilled student
    distill: float = 0.5
    seed: int = 0
    val_fraction: float = 0.1
    batch: int = 8
    patch: int = 128  # training crops of this side, cut at random from the 128x128 tiles
    lr: float = 1e-3
    warmup_steps: int = 100
    threads: int = 1
    val_every_s: float = 120.0
    n_val: int = 256
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose from {', '.join(ARCHS)}")
        if self.patch % 8 or not 32 <= self.patch <= 128:
            raise ValueError("--patch must be a multiple of 8 from 32 to 128")
        if self.minutes <= 0:
            raise ValueError("--minutes must be > 0")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError("--distill must be in [0, 1]")
        if self.arch == "student" and self.distill > 0 and not self.teacher:
            raise ValueError("a distilled student needs --teacher (or --distill 0)")


def _held_out(name: str, fraction: float, seed: int) -> bool:
    h = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(h[:4], "big") / 2**32 < fraction


def load_tiles(cfg: TrainConfig, log=print) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = Path(cfg.tiles)
    if not path.is_file():
        x, y, names = training_pairs.build_tiles(
            [(f, n) for f, n in cfg.folders],
            path.parent / "blurbeam_edge_boxes",
            cfg.detector,
            seed=cfg.seed,
            threads=cfg.threads,
            log=log,
        )
        np.savez(path, x=x, y=y, names=np.array(names))
    z = np.load(path)
    return z["x"], z["y"], z["names"]


def _set_threads(threads: int) -> None:
    import tensorflow as tf

    if threads:
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)


def train(cfg: TrainConfig, log=print) -> dict:
    _set_threads(cfg.threads)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"edge_{cfg.arch}"
    x, y, names = load_tiles(cfg, log)
    val = np.array([_held_out(str(n), cfg.val_fraction, cfg.seed) for n in names])
    tr_idx, va_idx = np.flatnonzero(~val), np.flatnonzero(val)
    rng = np.random.default_rng(cfg.seed)
    va_idx = np.sort(rng.choice(va_idx, min(cfg.n_val, len(va_idx)), replace=False))
    xv = x[va_idx].astype(np.float32) / 255.0
    yv = y[va_idx].astype(np.float32) / 255.0
    changed = np.abs(yv - xv).max(axis=-1, keepdims=True) > 1.5 / 255.0
    log(
        f"{len(names)} tiles from {len(set(names.tolist()))} images; "
        f"{len(tr_idx)} training, {len(va_idx)} validation tiles (of held-out images)"
    )
    arch: EdgeConfig = ARCHS[cfg.arch]
    model = build(arch, name=f"blurbeam_edge_{cfg.arch}")
    teacher = None
    if cfg.arch == "student" and cfg.distill > 0:
        teacher = build(ARCHS["teacher"], name="blurbeam_edge_teacher")
        teacher.load_weights(cfg.teacher)
    opt = keras.optimizers.Adam(cfg.lr)
    mse = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb, tb, lr):
        opt.learning_rate.assign(lr)
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = mse(yb, pred)
            if tb is not None:
                loss = (1.0 - cfg.distill) * loss + cfg.distill * mse(tb, pred)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    def validate() -> dict:
        pred = np.concatenate(
            [model(xv[i : i + 32], training=False).numpy() for i in range(0, len(xv), 32)]
        )
        err = (np.clip(pred, 0, 1) - yv) ** 2
        face = np.broadcast_to(changed, err.shape)
        return {
            "val_mse": float(err.mean()),
            "val_mae": float(np.abs(np.clip(pred, 0, 1) - yv).mean()),
            "val_mse_changed": float(err[face].mean()) if face.any() else None,
            "val_mse_kept": float(err[~face].mean()),
            "input_mse_changed": float(((xv - yv) ** 2)[face].mean()) if face.any() else None,
        }

    budget = cfg.minutes * 60.0
    t0 = time.monotonic()
    history: list[dict] = []
    best = math.inf
    steps = 0
    last_val = t0
    wpath = out / f"{stem}.weights.h5"

    def record(finished: bool) -> dict:
        return {
            "finished": finished,
            "arch": cfg.arch,
            "model": arch.to_dict(),
            "params": int(model.count_params()),
            "train_config": {**asdict(cfg), "folders": [list(f) for f in cfg.folders]},
            "tiles": {"total": len(names), "train": len(tr_idx), "val": len(va_idx)},
            "steps": steps,
            "samples": steps * cfg.batch,
            "minutes": round((time.monotonic() - t0) / 60, 2),
            "cpu_minutes": round(time.process_time() / 60, 2),
            "host": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
            "best_val_mse": best,
            "history": history,
        }

    while True:
        now = time.monotonic()
        frac = (now - t0) / budget
        if frac >= 1.0:
            break
        lr = (
            cfg.lr * min(1.0, (steps + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * frac))
        )
        idx = rng.choice(tr_idx, cfg.batch, replace=False)
        oy, ox = rng.integers(0, x.shape[1] - cfg.patch + 1, 2)
        win = (idx, slice(oy, oy + cfg.patch), slice(ox, ox + cfg.patch))
        xb = x[win].astype(np.float32) / 255.0
        yb = y[win].astype(np.float32) / 255.0
        flip = rng.random(cfg.batch) < 0.5
        xb[flip] = xb[flip, :, ::-1]
        yb[flip] = yb[flip, :, ::-1]
        tb = None
        if teacher is not None:
            tb = teacher(xb, training=False)
        loss = float(step(xb, yb, tb, np.float32(lr)))
        steps += 1
        if now - last_val >= cfg.val_every_s:
            last_val = now
            rec = {"step": steps, "minutes": round((now - t0) / 60, 2), "lr": lr, "loss": loss}
            rec.update(validate())
            history.append(rec)
            if rec["val_mse"] < best:
                best = rec["val_mse"]
                model.save_weights(str(wpath))
                rec["saved"] = True
            log(json.dumps(rec))
            (out / f"{stem}.json").write_text(json.dumps(record(False), indent=1) + "\n")
    rec = {"step": steps, "minutes": round((time.monotonic() - t0) / 60, 2), "lr": 0.0}
    rec.update(validate())
    history.append(rec)
    if rec["val_mse"] < best:
        best = rec["val_mse"]
        model.save_weights(str(wpath))
        rec["saved"] = True
    log(json.dumps(rec))
    info = record(True)
    (out / f"{stem}.json").write_text(json.dumps(info, indent=1) + "\n")
    return info

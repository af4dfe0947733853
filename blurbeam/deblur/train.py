"""Time-budgeted training of the deblurring networks on CPU.

Degradations are synthesised on the fly (``degrade.TrainDegradation``) from sharp 128x128 crops,
with flips and small random crops. Training stops after ``--minutes`` of this process's CPU
time (``clock="cpu"``, the default: on a machine shared with other jobs, two runs given the
same CPU budget got the same compute) or of wall-clock time (``clock="wall"``); the learning
rate follows a cosine over that budget, and the weights with the best validation PSNR are
kept. ``--arch original`` trains the original project's 15-layer network the original way (raw
0-255 input, MSE, Adam, 64x64 patches) under the same budget, for the benchmark.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from blurbeam.deblur import degrade
from blurbeam.deblur.data import list_images, load_stack, split


@dataclass
class TrainConfig:
    data: str
    out: str
    arch: str = "unet"  # or "original"
    minutes: float = 60.0
    clock: str = "cpu"  # "cpu": the budget is this process's CPU time; "wall": wall-clock time
    max_wall_minutes: float | None = None  # a hard wall-clock cap on top of a CPU budget
    seed: int = 0
    val_fraction: float = 0.1
    batch: int = 8
    patch: int = 64  # training patch side (the original network's input size too)
    lr: float = 1e-3
    warmup_steps: int = 200
    threads: int = 0  # 0: TensorFlow's default
    val_every_s: float = 180.0
    n_val: int = 64
    init: str | None = None  # start from these weights (continue a run) instead of at random

    def __post_init__(self):
        if self.arch not in ("unet", "original"):
            raise ValueError(f"unknown arch {self.arch!r}")
        if self.clock not in ("cpu", "wall"):
            raise ValueError(f"unknown clock {self.clock!r}")


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip, and a small random crop (88-100 % of the side) resized back."""
    if rng.random() < 0.5:
        img = img[:, ::-1]
    n = img.shape[0]
    s = int(rng.integers(int(0.88 * n), n + 1))
    if s < n:
        y, x = rng.integers(0, n - s + 1, size=2)
        img = cv2.resize(
            np.ascontiguousarray(img[y : y + s, x : x + s]), (n, n), interpolation=cv2.INTER_LINEAR
        )
    return np.ascontiguousarray(img)


def make_batch(stack: np.ndarray, rng, deg, batch: int, patch: int):
    xs, ys = [], []
    n = stack.shape[1]
    for _ in range(batch):
        clean = augment(stack[rng.integers(len(stack))].astype(np.float32) / 255.0, rng)
        blurry = deg(clean, rng)
        y, x = rng.integers(0, n - patch + 1, size=2)
        xs.append(blurry[y : y + patch, x : x + patch])
        ys.append(clean[y : y + patch, x : x + patch])
    return np.stack(xs), np.stack(ys)


def validation_set(stack: np.ndarray, n: int, seed: int):
    rng = np.random.default_rng(seed + 1000)
    clean = stack[:n].astype(np.float32) / 255.0
    blurry = np.stack([degrade.eval_motion(c, rng)[0] for c in clean])
    return blurry, clean


def psnr_batch(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((np.clip(a, 0, 1) - b) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def train(cfg: TrainConfig, log=print) -> dict:
    import tensorflow as tf

    if cfg.threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        cv2.setNumThreads(1)
    import keras

    from blurbeam.deblur.model import UNetConfig, build_original, build_unet

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    files = list_images(cfg.data)
    train_files, val_files = split(files, cfg.seed, cfg.val_fraction)
    log(f"{len(files)} images: {len(train_files)} train, {len(val_files)} held out")
    train_stack = load_stack(train_files)
    val_x, val_y = validation_set(load_stack(val_files), cfg.n_val, cfg.seed)

    original = cfg.arch == "original"
    scale = 255.0 if original else 1.0
    if original:
        model = build_original()
        loss_fn = lambda y, p: tf.reduce_mean(tf.square(y - p))  # noqa: E731
    else:
        ucfg = UNetConfig()
        model = build_unet(ucfg)

        def loss_fn(y, p):  # Charbonnier (smooth L1)
            return tf.reduce_mean(tf.sqrt(tf.square(y - p) + 1e-6))

    if cfg.init:
        model.load_weights(cfg.init)
        log(f"initialised from {cfg.init}")
    opt = keras.optimizers.Adam(learning_rate=cfg.lr)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    infer = tf.function(lambda t: model(t, training=False))

    def val_psnr():
        outs = [infer(val_x[i : i + 8] * scale).numpy() / scale for i in range(0, len(val_x), 8)]
        return psnr_batch(np.concatenate(outs), val_y)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "deblur_unet" if not original else "original_hradis15"
    wpath = out / f"{stem}.weights.h5"
    budget = cfg.minutes * 60.0
    wall_cap = cfg.max_wall_minutes * 60.0 if cfg.max_wall_minutes else math.inf
    clock = time.process_time if cfg.clock == "cpu" else time.monotonic
    c0 = clock()
    t0 = time.monotonic()
    last_val = t0
    best = -math.inf
    history = []
    steps, run_loss = 0, 0.0
    input_psnr = psnr_batch(val_x, val_y)
    log(f"validation input PSNR {input_psnr:.2f} dB; budget {cfg.minutes:.1f} min")
    while True:
        elapsed = clock() - c0
        if elapsed >= budget or time.monotonic() - t0 >= wall_cap:
            break
        frac = elapsed / budget
        lr = (
            cfg.lr
            * min(1.0, (steps + 1) / cfg.warmup_steps)
            * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        opt.learning_rate.assign(lr)
        x, y = make_batch(train_stack, rng, degrade.TrainDegradation(), cfg.batch, cfg.patch)
        loss = float(step(tf.constant(x * scale), tf.constant(y * scale)))
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {steps}")
        run_loss += loss
        steps += 1
        now = time.monotonic()
        if now - last_val >= cfg.val_every_s:
            last_val = now
            v = val_psnr()
            rec = {"step": steps, "minutes": round((now - t0) / 60, 2),
                   "budget_minutes": round((clock() - c0) / 60, 2), "lr": lr,
                   "loss": run_loss / max(1, steps), "val_psnr": round(v, 3)}  # fmt: skip
            history.append(rec)
            log(json.dumps(rec))
            if v > best:
                best = v
                model.save_weights(str(wpath))
    v = val_psnr()
    if v > best or not wpath.exists():
        best = v
        model.save_weights(str(wpath))
    info = {
        "arch": cfg.arch,
        "model": (asdict(UNetConfig()) if not original else {"first_layer": 10}),
        "params": int(model.count_params()),
        "train_config": asdict(cfg),
        "steps": steps,
        "samples_seen": steps * cfg.batch,
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "budget_clock": cfg.clock,
        "budget_minutes_used": round((clock() - c0) / 60, 2),
        "cpu_minutes": round(time.process_time() / 60, 2),
        "val_input_psnr": round(input_psnr, 3),
        "val_best_psnr": round(best, 3),
        "history": history,
        "train_files": len(train_files),
        "held_out_files": [p.name for p in val_files],
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "threads": cfg.threads,
        },  # fmt: skip
    }
    (out / f"{stem}.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"done: {steps} steps, best validation PSNR {best:.2f} dB -> {wpath}")
    return info

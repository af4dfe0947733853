"""Time-budgeted training of the deblurring networks on CPU.

Degradations are synthesised on the fly (``degrade.TrainDegradation``) from sharp 128x128 crops,
with flips and small random crops. Training stops after ``--minutes`` of this process's CPU
time (``clock="cpu"``, the default: on a machine shared with other jobs, two runs given the
same CPU budget got the same compute) or of wall-clock time (``clock="wall"``), or at the
wall-clock cap ``max_wall_minutes``, whichever comes first. The learning rate follows a cosine
over the fraction of that budget used, measured on whichever of the two clocks is further
along, so a run stopped by the wall-clock cap still ends with its learning rate annealed.
Validation (and the saved weights) use an exponential moving average of the weights
(``ema``); the weights with the best validation PSNR are saved as soon as they are found, so
a run cut short still leaves usable weights. Batches are synthesised in a background thread
while the network trains. A network that estimates the blur kernel (``UNetConfig.kernel_size``)
learns it from the kernel that made each training sample: the loss adds ``kernel_weight`` x the
estimate's squared error to the image loss. ``--arch original`` trains the original project's 15-layer network the original way (raw
0-255 input, MSE, Adam, 64x64 patches) under the same budget, for the benchmark.
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from blurbeam.lab.deblur import degrade
from blurbeam.lab.deblur.crops import list_images, load_stack, split


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
    ema: float = 0.999  # decay of the moving average of the weights that is validated and saved
    mix: str = "default"  # the degradation mix, a key of degrade.MIXES
    kernel_weight: float = 1.0  # weight of the kernel-estimate loss (networks that estimate one)

    def __post_init__(self):
        if self.arch not in ("unet", "original"):
            raise ValueError(f"unknown arch {self.arch!r}")
        if self.clock not in ("cpu", "wall"):
            raise ValueError(f"unknown clock {self.clock!r}")
        if self.mix not in degrade.MIXES:
            raise ValueError(f"unknown mix {self.mix!r}; known: {', '.join(degrade.MIXES)}")
        deg = degrade.MIXES[self.mix]
        if isinstance(deg, degrade.CircularDegradation):
            if self.arch != "unet":
                raise ValueError("the circular64 mix trains our network only")
            if self.patch != deg.size:  # a circular blur is a property of the whole image
                raise ValueError(f"the circular64 mix trains on whole {deg.size}x{deg.size} faces: "
                                 f"--patch {deg.size}")  # fmt: skip


def network_config(mix: str):
    """The network a mix trains: the default one, or for the circular64 mix (an FFT blur) the
    preset (its face size, a kernel window for its trails, circular Wiener deconvolution)."""
    from blurbeam.deblur.model import UNetConfig

    deg = degrade.MIXES[mix]
    if isinstance(deg, degrade.CircularDegradation):
        return UNetConfig(size=deg.size, kernel_size=21, wiener_boundary="wrap")
    return UNetConfig()


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


def make_batch(stack: np.ndarray, rng, deg, batch: int, patch: int, kernel_size: int = 0):
    """(blurry, clean, kernels) patches; ``kernels`` (batch, K, K) holds the kernel that blurred
    each sample (the identity for a sharp one) when ``kernel_size`` is given, else None."""
    from blurbeam.deblur.kernel import fit_kernel

    xs, ys, ks = [], [], []
    n = stack.shape[1]
    for _ in range(batch):
        face = augment(stack[rng.integers(len(stack))].astype(np.float32) / 255.0, rng)
        blurry, kernel = deg.sample(face, rng)
        clean = deg.clean_target(face)
        y, x = rng.integers(0, n - patch + 1, size=2)
        xs.append(blurry[y : y + patch, x : x + patch])
        ys.append(clean[y : y + patch, x : x + patch])
        if kernel_size:
            ks.append(fit_kernel(kernel, kernel_size))
    return np.stack(xs), np.stack(ys), (np.stack(ks) if kernel_size else None)


class BatchMaker:
    """Synthesises training batches in a background thread (OpenCV and NumPy release the GIL
    for most of the work), so that the next batch is ready when the network wants it. One
    producer with one generator: the sequence of batches is fixed by the seed."""

    def __init__(
        self,
        stack: np.ndarray,
        rng: np.random.Generator,
        batch: int,
        patch: int,
        deg: degrade.TrainDegradation | None = None,
        kernel_size: int = 0,
    ):
        self._q: queue.Queue = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._args = (stack, rng, deg or degrade.TrainDegradation(), batch, patch, kernel_size)
        self._thread = threading.Thread(target=self._run, name="deblur-batches", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = make_batch(*self._args)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the consumer
            self._error = e
            self._stop.set()

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(blurry, clean, kernels or None): see ``make_batch``."""
        while True:
            try:
                return self._q.get(timeout=0.5)
            except queue.Empty:
                if self._error is not None:
                    raise RuntimeError("batch synthesis failed") from self._error
                if not self._thread.is_alive():
                    raise RuntimeError("batch synthesis stopped") from None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def validation_set(stack: np.ndarray, n: int, seed: int, mix: str = "default"):
    """(blurry, clean) of the first ``n`` held-out crops, seeded: the benchmark's motion blur
    (``degrade.eval_motion``), or for the circular64 mix that mix's own blur."""
    rng = np.random.default_rng(seed + 1000)
    faces = stack[:n].astype(np.float32) / 255.0
    deg = degrade.MIXES[mix]
    if isinstance(deg, degrade.CircularDegradation):
        return np.stack([deg.sample(f, rng)[0] for f in faces]), np.stack(
            [deg.clean_target(f) for f in faces]
        )
    return np.stack([degrade.eval_motion(f, rng)[0] for f in faces]), faces


def compact_weights_file(path: str | Path) -> None:
    """Rewrite a Keras ``.weights.h5`` in HDF5's newest file format: the same groups, datasets
    and attributes, bit for bit, with smaller object headers (the shipped file has 110 groups
    for 52 arrays; this saves about 90 KB of 2 MB). Keras loads it as before."""
    import h5py

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w", libver="latest") as dst:
        dst.attrs.update(dict(src.attrs))

        def copy(name: str, obj) -> None:
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(dict(obj.attrs))
            else:
                dst.create_dataset(name, data=obj[()]).attrs.update(dict(obj.attrs))

        src.visititems(copy)
    os.replace(tmp, path)


def lr_at(base: float, step: int, warmup_steps: int, frac: float) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine from ``base`` to 2 % of it as the used
    fraction ``frac`` of the budget goes from 0 to 1."""
    frac = min(max(frac, 0.0), 1.0)
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    return base * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))


def psnr_batch(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((np.clip(a, 0, 1) - b) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def train(cfg: TrainConfig, log=print) -> dict:
    import tensorflow as tf

    if cfg.threads:
        cv2.setNumThreads(1)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already started in this process (e.g. under pytest)
            log(f"TensorFlow already initialised: --threads {cfg.threads} not applied")
    import keras

    from blurbeam.deblur.model import build_unet
    from blurbeam.lab.deblur.baseline import build_original

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    files = list_images(cfg.data)
    train_files, val_files = split(files, cfg.seed, cfg.val_fraction)
    log(f"{len(files)} images: {len(train_files)} train, {len(val_files)} held out")
    ucfg = network_config(cfg.mix)
    train_stack = load_stack(train_files, ucfg.size)
    val_x, val_y = validation_set(load_stack(val_files, ucfg.size), cfg.n_val, cfg.seed, cfg.mix)

    original = cfg.arch == "original"
    scale = 255.0 if original else 1.0
    kernel_size = 0 if original else ucfg.kernel_size
    if original:
        model = build_original()
        loss_fn = lambda y, p: tf.reduce_mean(tf.square(y - p))  # noqa: E731
    else:
        model = build_unet(ucfg)

        def loss_fn(y, p):  # Charbonnier (smooth L1)
            return tf.reduce_mean(tf.sqrt(tf.square(y - p) + 1e-6))

    kernel_weight = tf.constant(cfg.kernel_weight, tf.float32)

    def total_loss(x, y, k):
        """The image loss, plus the kernel estimate's squared error (summed over the kernel,
        averaged over the batch) for a network that estimates one."""
        if not kernel_size:
            return loss_fn(y, model(x, training=True)), tf.constant(0.0)
        out, k_hat = model(x, training=True)
        k_err = tf.reduce_mean(tf.reduce_sum(tf.square(k_hat - k), axis=[1, 2]))
        return loss_fn(y, out) + kernel_weight * k_err, k_err

    if cfg.init:
        model.load_weights(cfg.init)
        log(f"initialised from {cfg.init}")
    opt = keras.optimizers.Adam(learning_rate=cfg.lr)
    weights = model.trainable_variables
    ema = [tf.Variable(w, trainable=False) for w in weights] if cfg.ema else []
    averaged = list(zip(ema, weights, strict=True)) if ema else []  # (average, live) pairs
    decay = tf.constant(cfg.ema, tf.float32)

    @tf.function
    def step(x, y, k):
        with tf.GradientTape() as tape:
            loss, k_err = total_loss(x, y, k)
        grads = tape.gradient(loss, weights)
        opt.apply_gradients(zip(grads, weights, strict=True))
        for e, w in averaged:
            e.assign(decay * e + (1.0 - decay) * w)
        return loss, k_err

    run = tf.function(lambda t: model(t, training=False))

    def infer(t):
        out = run(t)
        return out[0] if kernel_size else out

    def swap_ema():
        """Exchange the live weights and their moving average (call twice to undo; nothing
        to do without an average)."""
        for e, w in averaged:
            tmp = tf.identity(w)
            w.assign(e)
            e.assign(tmp)

    def val_psnr():
        outs = [infer(val_x[i : i + 8] * scale).numpy() / scale for i in range(0, len(val_x), 8)]
        return psnr_batch(np.concatenate(outs), val_y)

    def validate_and_save(best: float) -> tuple[float, float]:
        swap_ema()
        try:
            v = val_psnr()
            if v > best or not wpath.exists():
                model.save_weights(str(wpath))
                compact_weights_file(wpath)
                best = max(best, v)
        finally:
            swap_ema()
        return v, best

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "deblur_unet" if not original else "original_hradis15"
    wpath = out / f"{stem}.weights.h5"
    budget = cfg.minutes * 60.0
    wall_cap = cfg.max_wall_minutes * 60.0 if cfg.max_wall_minutes else math.inf
    clock = time.process_time if cfg.clock == "cpu" else time.monotonic
    batches = BatchMaker(
        train_stack, rng, cfg.batch, cfg.patch, degrade.MIXES[cfg.mix], kernel_size=kernel_size
    )
    c0 = clock()
    t0 = time.monotonic()
    last_val = t0
    best = -math.inf
    history = []
    steps, run_loss, run_k_err = 0, 0.0, 0.0
    input_psnr = psnr_batch(val_x, val_y)
    log(f"validation input PSNR {input_psnr:.2f} dB; budget {cfg.minutes:.1f} min")

    def record(finished: bool) -> dict:
        return {
            "finished": finished,
            "arch": cfg.arch,
            "model": (ucfg.to_dict() if not original else {"first_layer": 10}),
            "params": int(model.count_params()),
            "train_config": asdict(cfg),
            "degradation": asdict(degrade.MIXES[cfg.mix]),
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

    try:
        while True:
            frac = max((clock() - c0) / budget, (time.monotonic() - t0) / wall_cap)
            if frac >= 1.0:
                break
            lr = lr_at(cfg.lr, steps, cfg.warmup_steps, frac)
            opt.learning_rate.assign(lr)
            x, y, k = batches.next()
            k = tf.constant(k) if k is not None else tf.zeros((1, 1, 1))
            loss, k_err = step(tf.constant(x * scale), tf.constant(y * scale), k)
            loss = float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {steps}")
            run_loss += loss
            run_k_err += float(k_err)
            steps += 1
            now = time.monotonic()
            if now - last_val >= cfg.val_every_s:
                last_val = now
                v, best = validate_and_save(best)
                rec = {"step": steps, "minutes": round((now - t0) / 60, 2),
                       "budget_minutes": round((clock() - c0) / 60, 2), "lr": lr,
                       "loss": run_loss / max(1, steps), "val_psnr": round(v, 3)}  # fmt: skip
                if kernel_size:
                    rec["kernel_sse"] = run_k_err / max(1, steps)
                history.append(rec)
                log(json.dumps(rec))
                (out / f"{stem}.json").write_text(json.dumps(record(False), indent=1) + "\n")
    finally:
        batches.close()
    v, best = validate_and_save(best)
    how = " (moving average of the weights)" if cfg.ema else ""
    log(f"final validation PSNR {v:.2f} dB{how}")
    info = record(finished=True)
    (out / f"{stem}.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"done: {steps} steps, best validation PSNR {best:.2f} dB -> {wpath}")
    return info

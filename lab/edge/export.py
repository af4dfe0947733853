"""Export a trained edge network to TFLite: fp32, and full-integer int8 calibrated on
training tiles (uint8 RGB in and out, every operator int8), and the teacher's weights to fp16.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from blurbeam.lab.edge.network import ARCHS, EdgeConfig, build
from blurbeam.lab.edge.train import TrainConfig, _held_out

#: Calibration tiles for the int8 ranges (training images only; none held out).
CALIBRATION_TILES = 400


def _fixed(cfg: EdgeConfig, weights: str):
    """The network with a static (1, tile, tile, 3) input, as TFLite's int8 kernels want."""
    import keras

    flexible = build(cfg)
    flexible.load_weights(weights)
    inp = keras.Input((cfg.tile, cfg.tile, 3), batch_size=1, name="image")
    return keras.Model(inp, flexible(inp, training=False))


def calibration_tiles(tiles: str, n: int = CALIBRATION_TILES, seed: int = 0) -> np.ndarray:
    z = np.load(tiles)
    names = z["names"]
    ok = np.flatnonzero([not _held_out(str(s), TrainConfig.val_fraction, seed) for s in names])
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(ok, min(n, len(ok)), replace=False))
    return z["x"][pick]


def to_tflite(model, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:

        def rep():
            for t in calibration:
                yield [t[None].astype(np.float32) / 255.0]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv.convert()


def save_fp16(model, path: str | Path) -> None:
    """All weights (batch-norm statistics too) as float16, in ``model.weights`` order."""
    arrays = {f"w{i:03d}": w.numpy().astype(np.float16) for i, w in enumerate(model.weights)}
    np.savez_compressed(path, **arrays)


def load_fp16(model, path: str | Path) -> None:
    z = np.load(path)
    vals = [z[f"w{i:03d}"].astype(np.float32) for i in range(len(model.weights))]
    model.set_weights(vals)


def export(weights: str, out: str, tiles: str, threads: int = 1, log=print) -> dict:
    """Write ``edge_student_fp32.tflite`` and ``edge_student_int8.tflite`` from student
    weights, or ``edge_teacher_fp16.npz`` from teacher weights (the arch is read from the
    training record beside the weights)."""
    import tensorflow as tf

    if threads:
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    wpath = Path(weights)
    if not wpath.is_file():
        raise FileNotFoundError(f"no weights at {wpath}")
    record_path = wpath.with_name(wpath.name.replace(".weights.h5", ".json"))
    arch = json.loads(record_path.read_text())["arch"] if record_path.is_file() else "student"
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    if arch == "teacher":
        model = build(ARCHS["teacher"])
        model.load_weights(str(wpath))
        dest = outdir / "edge_teacher_fp16.npz"
        save_fp16(model, dest)
        written[dest.name] = os.path.getsize(dest)
    else:
        model = _fixed(ARCHS[arch], str(wpath))
        for name, calib in (
            ("edge_student_fp32.tflite", None),
            ("edge_student_int8.tflite", calibration_tiles(tiles)),
        ):
            (outdir / name).write_bytes(to_tflite(model, calib))
            written[name] = os.path.getsize(outdir / name)
    log(json.dumps(written))
    return written

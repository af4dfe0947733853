"""The face-deblurring networks and the inference wrapper.

``build_unet`` is ours: a small residual U-Net (four scales, one residual block per scale, a
global skip so the network predicts a correction to its input). The default widths give about
0.45 M parameters and 0.55 GMAC per 128x128 face. It is fully convolutional; inputs must have
sides divisible by 8 (``Restorer`` pads).

``build_original`` is the original project's network, kept as a baseline: the 15-layer
"CNN for Direct Text Deblurring" (Hradis et al., BMVC 2015) with a 10x10 first layer, ReLU,
raw 0-255 input, 4.4 M parameters.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WEIGHTS_PACKAGE = "blurbeam.deblur.weights"
WEIGHTS_NAME = "deblur_unet.weights.h5"
CONFIG_NAME = "deblur_unet.json"


@dataclass(frozen=True)
class UNetConfig:
    widths: tuple[int, ...] = (16, 32, 64, 96)
    enc_blocks: tuple[int, ...] = (0, 1, 1, 1)
    dec_blocks: int = 1
    size: int = 128  # the face size the model is trained and run at

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return cls(
            widths=tuple(d["widths"]),
            enc_blocks=tuple(d["enc_blocks"]),
            dec_blocks=int(d["dec_blocks"]),
            size=int(d.get("size", 128)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def build_unet(cfg: UNetConfig | None = None):
    import keras
    from keras import layers

    cfg = cfg or UNetConfig()
    act = 0.1

    def resblock(x, c, name):
        y = layers.Conv2D(c, 3, padding="same", name=f"{name}_c1")(x)
        y = layers.LeakyReLU(act, name=f"{name}_a")(y)
        y = layers.Conv2D(c, 3, padding="same", name=f"{name}_c2")(y)
        return layers.Add(name=f"{name}_add")([x, y])

    inp = keras.Input((None, None, 3), name="blurry")
    x = layers.Conv2D(cfg.widths[0], 3, padding="same", name="stem")(inp)
    x = layers.LeakyReLU(act, name="stem_a")(x)
    skips = []
    for i, c in enumerate(cfg.widths):
        if i > 0:
            x = layers.Conv2D(c, 3, strides=2, padding="same", name=f"down{i}")(x)
            x = layers.LeakyReLU(act, name=f"down{i}_a")(x)
        for b in range(cfg.enc_blocks[i]):
            x = resblock(x, c, f"enc{i}_{b}")
        skips.append(x)
    for i in range(len(cfg.widths) - 2, -1, -1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{i}")(x)
        x = layers.Conv2D(cfg.widths[i], 1, name=f"up{i}_proj")(x)
        x = layers.Add(name=f"skip{i}")([x, skips[i]])
        for b in range(cfg.dec_blocks):
            x = resblock(x, cfg.widths[i], f"dec{i}_{b}")
    x = layers.Conv2D(3, 3, padding="same", name="head")(x)
    out = layers.Add(name="restored")([inp, x])
    return keras.Model(inp, out, name="blurbeam_deblur_unet")


def build_original(first: int = 10):
    """Hradis et al. 2015 layer stack (15 conv layers), first layer ``first`` x ``first``."""
    import keras
    from keras import layers

    spec = [
        (128, first), (320, 1), (320, 1), (320, 1), (128, 1), (128, 3), (512, 1), (128, 5),
        (128, 5), (128, 3), (128, 5), (128, 5), (256, 1), (64, 7),
    ]  # fmt: skip
    inp = keras.Input((None, None, 3), name="blurry_0_255")
    x = inp
    for i, (c, k) in enumerate(spec):
        x = layers.Conv2D(c, k, padding="same", activation="relu", name=f"conv{i + 1}")(x)
    out = layers.Conv2D(3, 7, padding="same", name="conv15")(x)
    return keras.Model(inp, out, name="original_hradis15")


def conv_macs(model, h: int, w: int) -> int:
    """Multiply-accumulates of the model's Conv2D layers for one h x w input."""
    import keras
    from keras import layers

    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    probe = keras.Model(model.inputs, [c.output for c in convs])
    outs = probe(np.zeros((1, h, w, 3), np.float32))
    if not isinstance(outs, list | tuple):
        outs = [outs]
    return int(
        sum(
            int(np.prod(c.kernel.shape)) * o.shape[1] * o.shape[2]
            for c, o in zip(convs, outs, strict=True)
        )
    )


def packaged_weights() -> tuple[Path, Path]:
    base = resources.files(WEIGHTS_PACKAGE)
    return Path(str(base / WEIGHTS_NAME)), Path(str(base / CONFIG_NAME))


class Restorer:
    """Runs the deblurring network on RGB faces.

    ``restore`` takes uint8 or float [0, 1] RGB images (H, W, 3) or a batch (N, H, W, 3) whose
    sides are multiples of 8 or not (reflect-padded), and returns the same dtype and shape.
    Deterministic: the same input gives the same output.
    """

    def __init__(self, weights: str | Path | None = None, config: UNetConfig | None = None):
        import tensorflow as tf

        if weights is None:
            weights, cfg_path = packaged_weights()
            if config is None and cfg_path.exists():
                config = UNetConfig.from_dict(json.loads(cfg_path.read_text())["model"])
        self.config = config or UNetConfig()
        self.weights_path = Path(weights)
        self.model = build_unet(self.config)
        self.model.load_weights(str(self.weights_path))
        from blurbeam.detectors.base import file_sha256

        self.weights_sha256 = file_sha256(self.weights_path)
        self._fn = tf.function(lambda t: self.model(t, training=False))

    @property
    def size(self) -> int:
        return self.config.size

    def restore(self, images: np.ndarray) -> np.ndarray:
        arr = np.asarray(images)
        single = arr.ndim == 3
        if single:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected RGB (H, W, 3) or (N, H, W, 3), got {arr.shape}")
        is_u8 = arr.dtype == np.uint8
        x = arr.astype(np.float32) / 255.0 if is_u8 else arr.astype(np.float32)
        h, w = x.shape[1:3]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
        y = self._fn(x).numpy()[:, :h, :w]
        y = np.clip(y, 0.0, 1.0)
        if is_u8:
            y = np.rint(y * 255.0).astype(np.uint8)
        return y[0] if single else y

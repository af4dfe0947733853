"""The face-deblurring networks and the inference wrapper.

``build_unet`` is ours: a small residual U-Net (four scales, one residual block per scale, a
global skip so the network predicts a correction to its input). With ``kernel_size > 0`` (the
default) it first estimates the blur kernel of its input from blur
statistics of the luma (``kernel.py``: difference autocorrelations and the cepstrum, then a few
convolutions and a softmax) and Wiener-deconvolves the luma with that estimate; the U-Net
restores the face from the blurry RGB plus those deconvolutions. Still blind: the kernel comes
from the input alone. About 0.48 M parameters and 0.6 GMAC per 128x128 face. Fully
convolutional; inputs must have sides divisible by 8 (``Restorer`` pads).

The original project's network, the benchmark's baseline, is ``blurbeam.lab.deblur.baseline``.
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
# packaged networks by name: "default" restores photographs (camera shake, motion blur);
# "circular64" restores 64x64 faces blurred circularly (an FFT motion blur, a one-pixel shift and
# a min-max stretch: ``blurbeam.lab.deblur.degrade.CircularDegradation``), and nothing else well
PRESETS = {"default": "deblur_unet", "circular64": "deblur_circular64"}


@dataclass(frozen=True)
class UNetConfig:
    widths: tuple[int, ...] = (16, 32, 64, 96)
    enc_blocks: tuple[int, ...] = (0, 1, 1, 1)
    dec_blocks: int = 1
    size: int = 128  # the face size the model is trained and run at
    # blur-kernel estimation (kernel.py); 0: none (the first weights' network)
    kernel_size: int = 27
    kernel_channels: int = 32
    kernel_depth: int = 2  # convolutions after the stride-2 one, before the output one
    wiener_lams: tuple[float, ...] = (0.005, 0.05)
    wiener_boundary: str = "reflect"  # or "wrap": for circularly (FFT-) blurred images

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        """A saved config; one written before kernel estimation existed has none."""
        return cls(
            widths=tuple(d["widths"]),
            enc_blocks=tuple(d["enc_blocks"]),
            dec_blocks=int(d["dec_blocks"]),
            size=int(d.get("size", 128)),
            kernel_size=int(d.get("kernel_size", 0)),
            kernel_channels=int(d.get("kernel_channels", 32)),
            kernel_depth=int(d.get("kernel_depth", 2)),
            wiener_lams=tuple(float(v) for v in d.get("wiener_lams", (0.005, 0.05))),
            wiener_boundary=str(d.get("wiener_boundary", "reflect")),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def build_unet(cfg: UNetConfig | None = None):
    """The model maps (B, H, W, 3) RGB in [0, 1] to the restored RGB; with kernel estimation
    its outputs are [restored RGB, (B, K, K) kernel estimate]."""
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
    x = inp
    if cfg.kernel_size:
        from blurbeam.deblur.kernel import layers as kernel_layers

        blur_features, kernel_softmax, wiener_luma = kernel_layers()
        kc = cfg.kernel_channels
        z = blur_features(cfg.kernel_size, name="blur_features")(inp)
        for i, stride in enumerate((1, 1, 2)):
            z = layers.Conv2D(kc, 3, strides=stride, padding="same", activation="relu",
                              name=f"kernel_c{i}")(z)  # fmt: skip
        for i in range(cfg.kernel_depth):
            z = layers.Conv2D(kc, 3, padding="same", dilation_rate=1 + (i > 0),
                              activation="relu", name=f"kernel_m{i}")(z)  # fmt: skip
        z = layers.Conv2D(1, 3, padding="same", name="kernel_logits")(z)
        kernel = kernel_softmax(name="kernel")(z)
        wiener = wiener_luma(cfg.wiener_lams, cfg.wiener_boundary, name="wiener")([inp, kernel])
        x = layers.Concatenate(name="with_wiener")([inp, wiener])
    x = layers.Conv2D(cfg.widths[0], 3, padding="same", name="stem")(x)
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
    if cfg.kernel_size:
        return keras.Model(inp, [out, kernel], name="blurbeam_deblur_unet")
    return keras.Model(inp, out, name="blurbeam_deblur_unet")


def packaged_weights(preset: str = "default") -> tuple[Path, Path]:
    """(weights, training record) of a packaged network, by its ``PRESETS`` name."""
    if preset not in PRESETS:
        raise ValueError(f"unknown deblur preset {preset!r}; known: {', '.join(PRESETS)}")
    base = resources.files(WEIGHTS_PACKAGE)
    stem = PRESETS[preset]
    return Path(str(base / f"{stem}.weights.h5")), Path(str(base / f"{stem}.json"))


def weights_config(weights: str | Path) -> UNetConfig:
    """The network config of ``NAME.weights.h5``: from the training record ``NAME.json`` that
    train-deblur writes beside it (the packaged weights have theirs), else the default."""
    cfg_path = Path(str(weights).removesuffix(".weights.h5") + ".json")
    if cfg_path.exists():
        return UNetConfig.from_dict(json.loads(cfg_path.read_text())["model"])
    return UNetConfig()


class Restorer:
    """Runs the deblurring network on RGB faces.

    ``restore`` takes uint8 or float [0, 1] RGB images (H, W, 3) or a batch (N, H, W, 3) whose
    sides are multiples of 8 or not (reflect-padded), and returns the same dtype and shape.
    Deterministic: the same input gives the same output. The network's config comes from
    ``config``, else from the training record beside the weights (``NAME.json`` for
    ``NAME.weights.h5``), else the default. Without ``weights``, the packaged network named
    ``preset`` (``PRESETS``).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        config: UNetConfig | None = None,
        preset: str = "default",
    ):
        from blurbeam.extras import require

        require("tensorflow", "deblur", "the face restorer")
        import tensorflow as tf

        if weights is None:
            weights = packaged_weights(preset)[0]
        self.config = config or weights_config(weights)
        self.weights_path = Path(weights)
        self.model = build_unet(self.config)
        self.model.load_weights(str(self.weights_path))
        from blurbeam.detectors.base import file_sha256

        self.weights_sha256 = file_sha256(self.weights_path)
        self._fn = tf.function(lambda t: self.model(t, training=False))

    @property
    def size(self) -> int:
        return self.config.size

    @property
    def estimates_kernel(self) -> bool:
        """Whether this network returns a blur-kernel estimate beside the restored image."""
        return bool(self.config.kernel_size)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self._fn(x)
        if self.estimates_kernel:
            return out[0].numpy(), out[1].numpy()
        return out.numpy(), None

    def restore(self, images: np.ndarray) -> np.ndarray:
        return self.restore_and_estimate(images)[0]

    def restore_and_estimate(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(restored images as ``restore`` returns them, the blur-kernel estimates: (K, K) per
        image, or None when the network estimates no kernel)."""
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
        y, k = self._run(x)
        y = np.clip(y[:, :h, :w], 0.0, 1.0)
        if is_u8:
            y = np.rint(y * 255.0).astype(np.uint8)
        if single:
            return y[0], (None if k is None else k[0])
        return y, k

    def estimate_kernel(self, images: np.ndarray) -> np.ndarray:
        """The network's blur-kernel estimate, (K, K) per image (float, sums to 1); a network
        without kernel estimation raises ValueError."""
        if not self.estimates_kernel:
            raise ValueError("these weights' network does not estimate the blur kernel")
        return self.restore_and_estimate(images)[1]

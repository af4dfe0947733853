"""The learned anonymizers: an image-to-image U-Net that blurs faces with no detector.

``teacher``: the face-blurring thesis's network as it describes it: 128x128 RGB in, a 3-level
encoder of 32, 64 and 128 filters (two 3x3 convolutions with batch norm and ReLU per level,
2x2 max-pooling), a 256-filter bottleneck, a decoder back up by 2x2 transposed convolutions
and skip concatenations, dropout 0.05 after the deepest encoder level and 0.2 in the
bottleneck: 1,927,075 trainable parameters (1,929,891 with the batch-norm statistics).
``student``: the same shape, narrower (16-32-48, bottleneck 64) with one convolution per
level: 132,163 trainable parameters, for the int8 edge model. Both are fully convolutional
(any input with sides divisible by 8) and map RGB in [0, 1] to RGB. One change to the thesis:
the 1x1 output convolution predicts a change that is added to the input (``residual``, zero at
initialisation) instead of a sigmoid image, so that the face-free majority of every tile is
the identity from the first step, and survives int8 rounding.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class EdgeConfig:
    widths: tuple[int, ...] = (32, 64, 128)
    bottleneck: int = 256
    convs: int = 2  # 3x3 convolutions per level
    dropout_enc: float = 0.05  # after the deepest encoder level
    dropout_mid: float = 0.2  # in the bottleneck
    tile: int = 128
    residual: bool = True  # the head's output is added to the input (a change, not an image)

    @classmethod
    def from_dict(cls, d: dict) -> EdgeConfig:
        return cls(
            widths=tuple(int(v) for v in d["widths"]),
            bottleneck=int(d["bottleneck"]),
            convs=int(d["convs"]),
            dropout_enc=float(d["dropout_enc"]),
            dropout_mid=float(d["dropout_mid"]),
            tile=int(d.get("tile", 128)),
            residual=bool(d.get("residual", True)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


TEACHER = EdgeConfig()
STUDENT = EdgeConfig(widths=(16, 32, 48), bottleneck=64, convs=1)
ARCHS = {"teacher": TEACHER, "student": STUDENT}


def build(cfg: EdgeConfig, name: str = "blurbeam_edge_unet"):
    """The Keras model of ``cfg``: (B, H, W, 3) RGB in [0, 1] -> the anonymized RGB."""
    import keras
    from keras import layers

    def block(x, c, tag):
        for i in range(cfg.convs):
            x = layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"{tag}_c{i}")(x)
            x = layers.BatchNormalization(name=f"{tag}_bn{i}")(x)
            x = layers.ReLU(name=f"{tag}_r{i}")(x)
        return x

    inp = keras.Input((None, None, 3), name="image")
    x = inp
    skips = []
    for i, c in enumerate(cfg.widths):
        x = block(x, c, f"enc{i}")
        if i == len(cfg.widths) - 1 and cfg.dropout_enc:
            x = layers.Dropout(cfg.dropout_enc, name=f"enc{i}_drop")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = block(x, cfg.bottleneck, "mid")
    if cfg.dropout_mid:
        x = layers.Dropout(cfg.dropout_mid, name="mid_drop")(x)
    for i in range(len(cfg.widths) - 1, -1, -1):
        c = cfg.widths[i]
        x = layers.Conv2DTranspose(c, 2, strides=2, name=f"up{i}")(x)
        x = layers.Concatenate(name=f"cat{i}")([x, skips[i]])
        x = block(x, c, f"dec{i}")
    if cfg.residual:
        # zero-initialised: training starts from the identity, which is right for most pixels
        x = layers.Conv2D(3, 1, kernel_initializer="zeros", name="change")(x)
        out = layers.Add(name="anonymized")([inp, x])
    else:
        out = layers.Conv2D(3, 1, activation="sigmoid", name="anonymized")(x)
    return keras.Model(inp, out, name=name)

"""The original project's network, the deblurring benchmark's baseline: the 15-layer "CNN for
Direct Text Deblurring" (Hradis et al., BMVC 2015) with a 10x10 first layer, ReLU, raw 0-255
input, 4.4 M parameters; and the multiply-accumulate count the benchmark reports per network."""

from __future__ import annotations

import numpy as np


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

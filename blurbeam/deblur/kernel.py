"""Blind blur-kernel estimation and Wiener deconvolution as Keras layers (TensorFlow; no Beam).

The deblurring network (``model.build_unet`` with ``kernel_size > 0``) estimates the blur
kernel of its input before it restores it:

1. ``BlurFeatures``: statistics of the luma that a shift-invariant blur leaves its mark on,
   each a (2K-1) x (2K-1) window around the zero lag: the autocorrelation of the luma's
   differences in four directions (for a sharp face they are close to a spike; blur spreads the
   spike into the kernel's own autocorrelation, a line twice the blur's length for straight
   motion) and the real cepstrum of the windowed luma (motion blur puts negative peaks at its
   length along its direction).
2. A few convolutions (built in ``model.py``) turn them into a K x K map; ``KernelSoftmax``
   makes it a kernel: non-negative, summing to one.
3. ``WienerLuma``: the luma deconvolved with that kernel, in the Fourier domain, once per
   regularisation weight (reflect-padded first, so the image borders do not wrap).

The network then restores the face from the blurry RGB and these deconvolutions. Nothing here
is given the true kernel: training supervises the estimate with the kernel that made each
training sample (``train.py``), and at run time the input alone decides it.
"""

from __future__ import annotations

import math

import numpy as np

LUMA = (0.299, 0.587, 0.114)
WIENER_PAD = 16  # reflect padding before the FFT (at least half the largest kernel)


def fit_kernel(kernel: np.ndarray | None, size: int) -> np.ndarray:
    """``kernel`` centred in (or cropped to) a ``size`` x ``size`` window and renormalised;
    ``None`` (no blur) is the identity: a single 1 in the centre."""
    out = np.zeros((size, size), np.float32)
    if kernel is None:
        out[size // 2, size // 2] = 1.0
        return out
    k = np.asarray(kernel, np.float32)
    s = k.shape[0]
    if k.ndim != 2 or k.shape[1] != s or s % 2 == 0:
        raise ValueError(f"kernel must be square with an odd side, got {k.shape}")
    if s <= size:
        o = (size - s) // 2
        out[o : o + s, o : o + s] = k
    else:
        o = (s - size) // 2
        out[:] = k[o : o + size, o : o + size]
    total = float(out.sum())
    if total <= 0:
        raise ValueError("kernel has no weight inside the window")
    return out / total


def describe_kernel(kernel: np.ndarray) -> tuple[float, float]:
    """(length px, angle degrees) of a blur kernel's main axis: the length of the uniform
    straight motion blur with the same spread along it (sqrt(12 x the larger variance of the
    kernel's weights); 1 px for a point), and its direction in [0, 180), counter-clockwise
    from the +x axis with y pointing up (``degrade.motion_kernel``'s angle)."""
    k = np.asarray(kernel, np.float64)
    w = k / k.sum()
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
    mx, my = (w * xs).sum(), (w * ys).sum()
    cxx = (w * (xs - mx) ** 2).sum()
    cyy = (w * (ys - my) ** 2).sum()
    cxy = (w * (xs - mx) * (ys - my)).sum()
    major = 0.5 * (cxx + cyy) + math.sqrt(0.25 * (cxx - cyy) ** 2 + cxy**2)
    theta = 0.5 * math.degrees(math.atan2(2 * cxy, cxx - cyy))  # rows grow downwards
    return max(1.0, math.sqrt(12.0 * major)), (-theta) % 180.0


def fft_flops(h: int, w: int, kernel_size: int, n_wiener: int) -> int:
    """A rough count of the real floating-point operations of the FFTs of ``BlurFeatures`` and
    ``WienerLuma`` for one h x w image (5 N log2 N per complex transform, half for a real
    one), for reporting beside the convolutions' multiply-accumulates."""

    def rfft(n: int, m: int) -> float:
        return 2.5 * n * m * math.log2(max(n * m, 2))

    ac = 2 * kernel_size - 1
    feats = 4 * 2 * rfft(h - 1 + ac, w - 1 + ac) + 2 * rfft(h, w)
    hp, wp = h + 2 * WIENER_PAD, w + 2 * WIENER_PAD
    wiener = rfft(hp, wp) + n_wiener * (rfft(hp, wp) + rfft(hp, wp))
    return int(feats + wiener)


def _layers():
    from blurbeam.extras import require

    require("tensorflow", "deblur", "the face restorer")
    import keras
    import tensorflow as tf

    luma_w = tf.constant(LUMA, tf.float32)

    def luma(x):
        return tf.tensordot(x, luma_w, [[3], [0]])

    def centre_window(r, k):
        """(B, 2k-1, 2k-1) window of a circular correlation around the zero lag."""
        r = tf.roll(r, shift=[k - 1, k - 1], axis=[1, 2])
        return r[:, : 2 * k - 1, : 2 * k - 1]

    @keras.saving.register_keras_serializable(package="blurbeam")
    class BlurFeatures(keras.layers.Layer):
        """(B, H, W, 3) RGB in [0, 1] -> (B, 2K-1, 2K-1, 5): difference autocorrelations
        (horizontal, vertical, two diagonals; each divided by its zero-lag value) and the
        cepstrum of the Hann-windowed luma."""

        def __init__(self, kernel_size: int, **kw):
            super().__init__(**kw)
            self.kernel_size = int(kernel_size)

        def get_config(self):
            return {**super().get_config(), "kernel_size": self.kernel_size}

        def _autocorr(self, d):
            k = self.kernel_size
            d = d - tf.reduce_mean(d, axis=[1, 2], keepdims=True)
            dp = tf.pad(d, [[0, 0], [0, 2 * k - 1], [0, 2 * k - 1]])  # no circular wrap
            f = tf.signal.rfft2d(dp)
            r = tf.signal.irfft2d(f * tf.math.conj(f), fft_length=tf.shape(dp)[1:3])
            r = centre_window(r, k)
            return r / (r[:, k - 1 : k, k - 1 : k] + 1e-8)

        def _cepstrum(self, y):
            h, w = tf.shape(y)[1], tf.shape(y)[2]
            win = (
                tf.signal.hann_window(h, periodic=False)[:, None]
                * tf.signal.hann_window(w, periodic=False)[None, :]
            )
            y = (y - tf.reduce_mean(y, axis=[1, 2], keepdims=True)) * win[None]
            lp = tf.math.log(tf.square(tf.abs(tf.signal.rfft2d(y))) + 1e-6)
            lp = lp - tf.reduce_mean(lp, axis=[1, 2], keepdims=True)
            c = tf.signal.irfft2d(tf.complex(lp, 0.0), fft_length=tf.stack([h, w]))
            return centre_window(c, self.kernel_size)

        def call(self, x):
            y = luma(tf.cast(x, tf.float32))
            diffs = [
                y[:, :-1, 1:] - y[:, :-1, :-1],
                y[:, 1:, :-1] - y[:, :-1, :-1],
                y[:, 1:, 1:] - y[:, :-1, :-1],
                y[:, 1:, :-1] - y[:, :-1, 1:],
            ]
            return tf.stack([self._autocorr(d) for d in diffs] + [self._cepstrum(y)], axis=-1)

    @keras.saving.register_keras_serializable(package="blurbeam")
    class KernelSoftmax(keras.layers.Layer):
        """(B, K, K, 1) logits -> (B, K, K) kernel: non-negative, each summing to one."""

        def call(self, z):
            s = tf.shape(z)
            flat = tf.reshape(z, [s[0], s[1] * s[2]])
            return tf.reshape(tf.nn.softmax(flat, axis=-1), [s[0], s[1], s[2]])

    @keras.saving.register_keras_serializable(package="blurbeam")
    class WienerLuma(keras.layers.Layer):
        """[(B, H, W, 3) RGB, (B, K, K) kernel] -> (B, H, W, len(lams)): the luma Wiener-
        deconvolved by each sample's kernel, conj(K) Y / (|K|^2 + lam), once per ``lam``.
        ``boundary``: "reflect" pads the luma by reflection first (a camera's blur does not
        wrap around); "wrap" deconvolves the image as it is, circularly (for images that were
        blurred circularly, by an FFT, as some synthetic datasets are)."""

        def __init__(self, lams: tuple[float, ...], boundary: str = "reflect", **kw):
            super().__init__(**kw)
            if boundary not in ("reflect", "wrap"):
                raise ValueError(f"unknown boundary {boundary!r}")
            self.lams = tuple(float(v) for v in lams)
            self.boundary = boundary

        def get_config(self):
            return {**super().get_config(), "lams": list(self.lams), "boundary": self.boundary}

        def call(self, inputs):
            x, k = inputs
            y = luma(tf.cast(x, tf.float32))
            p = WIENER_PAD if self.boundary == "reflect" else 0
            yp = tf.pad(y, [[0, 0], [p, p], [p, p]], mode="REFLECT")
            h, w = tf.shape(yp)[1], tf.shape(yp)[2]
            ks = tf.shape(k)[1]
            kp = tf.pad(k, [[0, 0], [0, h - ks], [0, w - ks]])
            kp = tf.roll(kp, shift=[-(ks // 2), -(ks // 2)], axis=[1, 2])  # centre at (0, 0)
            kf = tf.signal.rfft2d(kp)
            yf = tf.signal.rfft2d(yp)
            power = tf.square(tf.abs(kf))
            outs = []
            for lam in self.lams:
                filt = tf.math.conj(kf) / tf.complex(power + lam, 0.0)
                out = tf.signal.irfft2d(yf * filt, fft_length=tf.stack([h, w]))
                outs.append(out[:, p : h - p, p : w - p])
            return tf.stack(outs, axis=-1)

    return BlurFeatures, KernelSoftmax, WienerLuma


_CACHE: dict[str, tuple] = {}


def layers():
    """(BlurFeatures, KernelSoftmax, WienerLuma), defined once (TensorFlow imported lazily)."""
    if "layers" not in _CACHE:
        _CACHE["layers"] = _layers()
    return _CACHE["layers"]

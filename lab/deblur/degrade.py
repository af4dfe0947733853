"""Synthetic degradations for training and evaluating face deblurring.

All functions take a ``numpy.random.Generator`` so that every degradation is reproducible from
a seed. Images are float32 RGB in [0, 1], shape (H, W, 3). Blur is applied with
``cv2.filter2D`` and reflected borders; kernels are float32, non-negative, summing to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


def _splat(points: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly splat (x, y) points (centred at 0) into a size x size kernel."""
    k = np.zeros((size, size), np.float64)
    c = (size - 1) / 2.0
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = pts[:, 0] + c, pts[:, 1] + c
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        np.add.at(k, (yi[ok], xi[ok]), wgt[ok])
    s = k.sum()
    if s <= 0:
        k[size // 2, size // 2] = 1.0
        s = 1.0
    return (k / s).astype(np.float32)


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Straight, uniform motion blur of ``length`` pixels at ``angle_deg`` (anti-aliased)."""
    return bent_kernel(length, angle_deg, 0.0)


def shake_kernel(rng: np.random.Generator, max_extent: float) -> np.ndarray:
    """Camera-shake kernel: a random-walk trajectory with inertia and occasional jerks,
    scaled so that its larger extent is ``max_extent`` pixels (after Boracchi and Foi 2012)."""
    n = 64
    v = rng.normal(size=2)
    v /= np.linalg.norm(v) + 1e-8
    pos = np.zeros(2)
    pts = [pos.copy()]
    for _ in range(n - 1):
        v = 0.7 * v + 0.5 * rng.normal(size=2)
        if rng.random() < 0.05:  # a jerk
            v = v + 2.0 * rng.normal(size=2)
        v /= np.linalg.norm(v) + 1e-8
        pos = pos + v
        pts.append(pos.copy())
    pts = np.asarray(pts)
    pts -= (pts.max(0) + pts.min(0)) / 2.0
    extent = float(np.abs(pts).max()) * 2.0
    pts *= (max_extent - 1.0) / max(extent, 1e-6)
    # dense sampling along the path so the kernel is continuous
    seg = np.linspace(0, 1, 8, endpoint=False)[None, :, None]
    dense = (pts[:-1, None, :] + seg * (pts[1:] - pts[:-1])[:, None, :]).reshape(-1, 2)
    dense = np.concatenate([dense, pts[-1:]], axis=0)
    size = int(math.ceil(max_extent)) + 2
    size += 1 - size % 2
    return _splat(np.asarray(dense), size)


def gaussian_kernel(sigma: float) -> np.ndarray:
    r = int(math.ceil(3 * sigma))
    g = cv2.getGaussianKernel(2 * r + 1, sigma).astype(np.float64)
    k = g @ g.T
    return (k / k.sum()).astype(np.float32)


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve (true convolution, kernel flipped) each channel, reflected borders."""
    return cv2.filter2D(img, -1, kernel[::-1, ::-1].copy(), borderType=cv2.BORDER_REFLECT)


def add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return img
    return img + rng.normal(0.0, sigma, img.shape).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encode failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def quantize(img: np.ndarray) -> np.ndarray:
    """Round to 8 bits, as a stored image would be."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.float32) / 255.0


@dataclass(frozen=True)
class TrainDegradation:
    """The training mix (issue 5): straight motion blur 5-21 px at a random angle, camera shake,
    Gaussian sigma 1-3, straight motion blur softened by a small Gaussian (sigma 0.5-1.5: a
    thick trail, as motion blur made at a higher resolution and resized looks), or none; then
    Gaussian noise sigma 0-5/255 and, sometimes, JPEG 60-95.

    With probability ``p_lowres`` the blurred face is reduced to half size (area) before the
    noise and JPEG, and upscaled back with bicubic interpolation, as the pipeline does with faces
    smaller than the model: the network learns to restore faces that reach it upscaled too."""

    p_motion: float = 0.40
    p_shake: float = 0.20
    p_gauss: float = 0.12
    p_motion_gauss: float = 0.13  # the rest (0.15) is no blur: sharp faces must be left alone
    motion_len: tuple[float, float] = (5.0, 21.0)
    shake_extent: tuple[float, float] = (5.0, 21.0)
    gauss_sigma: tuple[float, float] = (1.0, 3.0)
    soften_sigma: tuple[float, float] = (0.5, 1.5)
    noise_max: float = 5.0 / 255.0
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)
    p_lowres: float = 0.15

    def clean_target(self, img: np.ndarray) -> np.ndarray:
        """What the network is to return for the face ``img``: the face itself."""
        return img

    def kernel(self, rng: np.random.Generator) -> np.ndarray | None:
        u = rng.random()
        if u < self.p_motion:
            return motion_kernel(rng.uniform(*self.motion_len), rng.uniform(0, 180))
        u -= self.p_motion
        if u < self.p_shake:
            return shake_kernel(rng, rng.uniform(*self.shake_extent))
        u -= self.p_shake
        if u < self.p_gauss:
            return gaussian_kernel(rng.uniform(*self.gauss_sigma))
        u -= self.p_gauss
        if u < self.p_motion_gauss:
            m = motion_kernel(rng.uniform(*self.motion_len), rng.uniform(0, 180))
            return soften(m, rng.uniform(*self.soften_sigma))
        return None

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.sample(img, rng)[0]

    def sample(
        self, img: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(degraded image, the blur kernel that made it, or None when it is not blurred). A
        half-size face keeps the kernel of its blur: its loss of detail is not in it."""
        k = self.kernel(rng)
        out = blur(img, k) if k is not None else img.copy()
        lowres = rng.random() < self.p_lowres
        h, w = img.shape[:2]
        if lowres:
            out = cv2.resize(out, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        out = add_noise(out, rng.uniform(0, self.noise_max), rng)
        if rng.random() < self.p_jpeg:
            out = jpeg(
                np.clip(out, 0, 1),
                int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)),
            )
        out = quantize(out)
        if lowres:
            out = quantize(np.clip(cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1))
        return out, k


def soften(kernel: np.ndarray, sigma: float) -> np.ndarray:
    """``kernel`` convolved with a Gaussian of ``sigma`` (the support grows to hold it)."""
    g = gaussian_kernel(sigma)
    r = g.shape[0] // 2
    k = cv2.filter2D(np.pad(kernel, r), -1, g, borderType=cv2.BORDER_CONSTANT)
    k = np.clip(k, 0, None)
    return (k / k.sum()).astype(np.float32)


def eval_motion(
    img: np.ndarray, rng: np.random.Generator, length=(9.0, 15.0), noise: float = 2.0 / 255.0
) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark degradation: motion blur 9-15 px at a random angle plus noise sigma 2/255.
    Returns (degraded image, the true kernel)."""
    k = motion_kernel(rng.uniform(*length), rng.uniform(0, 180))
    return quantize(add_noise(blur(img, k), noise, rng)), k


def bent_kernel(
    length: float, angle_deg: float, bend: float, offset: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """A motion trail ``length`` px long at ``angle_deg`` whose middle is bowed ``bend`` px off
    the straight line (a parabola; 0 is ``motion_kernel``'s straight trail), its centre moved
    by ``offset`` (dx, dy) px: a blur that also shifts the image by a fraction of a pixel."""
    length = max(float(length), 1.0)
    size = int(math.ceil(length + 2 * abs(bend) + 2 * max(abs(offset[0]), abs(offset[1])))) + 2
    size += 1 - size % 2
    n = max(int(length * 8), 2)
    t = np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, n)
    s = bend * (1.0 - (2.0 * t / max(length - 1, 1.0)) ** 2)  # 0 at the ends, ``bend`` mid-way
    s -= s.mean()
    a = math.radians(angle_deg)
    u, v = np.array([math.cos(a), -math.sin(a)]), np.array([math.sin(a), math.cos(a)])
    pts = t[:, None] * u + s[:, None] * v + np.asarray(offset, np.float64)
    return _splat(pts, size)


def circular_blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel circularly (through the FFT, the kernel's centre at the origin):
    what leaves past one edge comes back at the opposite one. Not what a camera does; what
    a dataset blurred by an FFT looks like (the original notebook's pairs are)."""
    h, w = img.shape[:2]
    ks = kernel.shape[0]
    if ks > min(h, w):
        raise ValueError(f"a {ks}x{ks} kernel does not fit a {h}x{w} image")
    kp = np.zeros((h, w), np.float64)
    kp[:ks, :ks] = kernel
    kf = np.fft.rfft2(np.roll(kp, (-(ks // 2), -(ks // 2)), axis=(0, 1)))
    out = np.fft.irfft2(np.fft.rfft2(img, axes=(0, 1)) * kf[..., None], s=(h, w), axes=(0, 1))
    return out.astype(np.float32)


def minmax(img: np.ndarray) -> np.ndarray:
    """Stretched to span [0, 1] exactly (all channels together), as the notebook stored both
    images of a pair; a flat image is returned unchanged."""
    lo, hi = float(img.min()), float(img.max())
    if hi - lo < 1e-6:
        return img
    return ((img - lo) / (hi - lo)).astype(np.float32)


@dataclass(frozen=True)
class CircularDegradation:
    """The circular64 recipe: the original notebook's synthetic blur, as ``kernelfit`` recovers
    it from its 10 pairs (docs/BENCHMARKS.md): 64x64 faces, both images min-max stretched to [0, 1]; a motion trail
    a ninth to a fifth of the face long, a little thick and bent, that also moves the image by
    one pixel up and to the left; convolved circularly, by an FFT. The "circular64" preset is
    trained on it and restores images made this way; nothing of the 10 pairs themselves is
    used but these fitted properties. Photographs are the default network's work."""

    size: int = 64
    length: tuple[float, float] = (7.0, 13.0)
    bend: tuple[float, float] = (0.0, 2.0)  # px the trail's middle bows off the straight line
    p_shake: float = 0.2  # a random-walk trail instead (extent ``shake_extent``)
    shake_extent: tuple[float, float] = (7.0, 14.0)
    thickness: tuple[float, float] = (0.3, 1.0)  # Gaussian sigma softening the trail
    # every one of the pairs' fitted blurs also moves the image by 1 px up and to the left
    # (0.93-1.09 px on each axis): the notebook's kernel was off centre by one pixel
    shift: int = 1
    offset_sd: float = 0.1  # sub-pixel jitter of the trail's centre
    p_sharp: float = 0.05
    noise: tuple[float, float] = (0.5 / 255.0, 2.0 / 255.0)  # Gaussian sigma, after the stretch

    def clean_target(self, img: np.ndarray) -> np.ndarray:
        """What the network is to return for the face ``img``: its stretched version."""
        return minmax(img)

    def kernel(self, rng: np.random.Generator) -> np.ndarray | None:
        if rng.random() < self.p_sharp:
            return None
        if rng.random() < self.p_shake:
            k = shake_kernel(rng, rng.uniform(*self.shake_extent))
        else:
            off = tuple(rng.normal(0.0, self.offset_sd, 2))
            bend = rng.uniform(*self.bend) * rng.choice((-1.0, 1.0))
            k = bent_kernel(rng.uniform(*self.length), rng.uniform(0, 180), bend, off)
        k = soften(k, rng.uniform(*self.thickness))
        if self.shift:  # the kernel's weight moved up-left: the blurred image moves that way
            k = np.roll(np.pad(k, self.shift), (-self.shift, -self.shift), axis=(0, 1))
        return k

    def sample(
        self, img: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(degraded image, the kernel that blurred it or None) for a clean face ``img`` of
        ``size`` x ``size`` (stretch it with ``clean_target`` for the training target)."""
        if img.shape[:2] != (self.size, self.size):
            raise ValueError(f"the circular64 blur is made on {self.size}x{self.size} faces")
        clean = minmax(img)
        k = self.kernel(rng)
        out = circular_blur(clean, k) if k is not None else clean.copy()
        out = add_noise(minmax(out), rng.uniform(*self.noise), rng)
        return quantize(out), k


# Named training mixes (``blurbeam train-deblur --mix``). "default" is the mix above; "motion"
# keeps every degradation of the issue but gives straight motion blur, the benchmark's blur, a
# larger share (0.55 straight, 0.12 softened) at the expense of shake, Gaussian, no-blur and
# half-size faces (a 10-minute pilot: +0.54 dB on the motion validation set; PROVENANCE.md).
# "circular64" is another kind of data altogether (``CircularDegradation``).
MIXES: dict[str, TrainDegradation | CircularDegradation] = {
    "default": TrainDegradation(),
    "motion": TrainDegradation(
        p_motion=0.55, p_shake=0.15, p_gauss=0.08, p_motion_gauss=0.12, p_lowres=0.10
    ),
    # the original notebook's FFT blur on 64x64 faces: the "circular64" preset's training data
    "circular64": CircularDegradation(),
}

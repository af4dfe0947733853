"""Side-by-side benchmark of face deblurring (issue 5).

Held-out crops (the training split's validation 10 %), each degraded once with a seeded
motion blur of 9-15 px at a random angle plus Gaussian noise sigma 2/255, stored as 8-bit.
Methods: the blurry input; scikit-image Wiener and Richardson-Lucy given the TRUE kernel (their
one parameter tuned on training crops, not on the test set); the original 15-layer network
retrained under our budget (when its weights are given); ours. Also: the same crops with no
blur (noise only: does the network leave sharp faces alone?) and the original notebook's 10
CelebA pairs, with what those pairs are made of (``kernelfit``) and oracle deconvolutions.
PSNR and SSIM from scikit-image on 8-bit outputs; time per face is the median of batch-1 calls.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from blurbeam.lab.deblur import degrade
from blurbeam.lab.deblur.crops import list_images, load_stack, read_rgb, split
from blurbeam.lab.deblur.metrics import psnr, ssim


def _per_channel(fn, img: np.ndarray, pad: int) -> np.ndarray:
    p = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.stack([fn(p[..., c]) for c in range(3)], axis=-1)
    return out[pad:-pad, pad:-pad] if pad else out


def wiener(img: np.ndarray, kernel: np.ndarray, balance: float) -> np.ndarray:
    from skimage.restoration import wiener as sk_wiener

    return _per_channel(lambda ch: sk_wiener(ch, kernel, balance, clip=False), img, kernel.shape[0])


def richardson_lucy(img: np.ndarray, kernel: np.ndarray, num_iter: int) -> np.ndarray:
    from skimage.restoration import richardson_lucy as sk_rl

    return _per_channel(
        lambda ch: sk_rl(np.clip(ch, 1e-4, 1.0), kernel, num_iter=num_iter, clip=False),
        img,
        kernel.shape[0],
    )


@dataclass
class MethodResult:
    name: str
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    note: str = ""

    def summary(self) -> dict:
        return {
            "method": self.name,
            "n": len(self.psnr),
            "psnr": round(float(np.mean(self.psnr)), 3) if self.psnr else None,
            "ssim": round(float(np.mean(self.ssim)), 4) if self.ssim else None,
            "ms_per_face_median": round(float(np.median(self.ms)), 2) if self.ms else None,
            "note": self.note,
        }


def _score(res: MethodResult, fn: Callable, cases, timed: bool = True):
    for blurry, clean, kernel in cases:
        t0 = time.perf_counter()
        out = fn(blurry, kernel)
        dt = (time.perf_counter() - t0) * 1000
        out = degrade.quantize(np.clip(out, 0, 1))
        res.psnr.append(psnr(clean, out))
        res.ssim.append(ssim(clean, out))
        if timed:
            res.ms.append(dt)
    return res


def _tune(fn, grid, cases) -> tuple[object, float]:
    best = None
    for g in grid:
        v = float(np.mean([psnr(c, np.clip(fn(b, k, g), 0, 1)) for b, c, k in cases]))
        if best is None or v > best[1]:
            best = (g, v)
    return best


class OriginalNet:
    """The original 15-layer network: raw 0-255 input and output."""

    def __init__(self, weights: str | Path):
        import tensorflow as tf

        from blurbeam.lab.deblur.baseline import build_original

        self.model = build_original()
        self.model.load_weights(str(weights))
        self._fn = tf.function(lambda t: self.model(t, training=False))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self._fn(img[None].astype(np.float32) * 255.0).numpy()[0] / 255.0


def held_out_cases(
    data: str, seed: int = 0, val_fraction: float = 0.1, limit: int | None = None
) -> tuple[list[Path], np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The benchmark's test set: the crops held out by the training split, each degraded once
    (seed ``seed + 2000``) by ``degrade.eval_motion``. Returns the training files, the clean
    crops (float [0, 1]) and (blurry, clean, true kernel) cases."""
    train_files, test_files = split(list_images(data), seed, val_fraction)
    if limit:
        test_files = test_files[:limit]
    clean = load_stack(test_files).astype(np.float32) / 255.0
    rng = np.random.default_rng(seed + 2000)
    cases = []
    for c in clean:
        b, k = degrade.eval_motion(c, rng)
        cases.append((b, c, k))
    return train_files, clean, cases


def run_benchmark(
    data: str,
    seed_pairs: str | None = None,
    original_weights: str | None = None,
    weights: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    limit: int | None = None,
    skip_classical: bool = False,
    reuse_original: str | None = None,
    circular64_weights: str | None = None,
    log=print,
) -> dict:
    """``reuse_original``: instead of running the original network again (about 3 s per face on
    2 cores), take its rows from an earlier ``results.json`` of this benchmark; refused unless
    that run's protocol (seed, split, number of crops, degradation) is this one's.
    ``circular64_weights``: the circular64 preset's weights (default: the packaged ones, when
    installed), scored on the 10 pairs and on the held-out crops blurred by its recipe."""
    from blurbeam.deblur.kernel import fft_flops
    from blurbeam.deblur.model import Restorer, build_unet
    from blurbeam.lab.deblur.baseline import conv_macs

    train_files, clean, cases = held_out_cases(data, seed, val_fraction, limit)
    rng_sharp = np.random.default_rng(seed + 3000)
    sharp_cases = [
        (degrade.quantize(degrade.add_noise(c, 2 / 255, rng_sharp)), c, None) for c in clean
    ]
    sharp_clean_cases = [(c, c, None) for c in clean]

    ours = Restorer(weights)
    ours.restore(cases[0][0])  # warm-up (tracing)
    ours_fn = lambda b, k: ours.restore(b)  # noqa: E731
    results: dict[str, dict] = {}
    log(f"{len(cases)} held-out crops from {data}")

    results["input"] = _score(
        MethodResult("blurry input"), lambda b, k: b, cases, timed=False
    ).summary()
    log(json.dumps(results["input"]))
    if not skip_classical:
        rng_t = np.random.default_rng(seed + 4000)
        tune_clean = load_stack(train_files[:16]).astype(np.float32) / 255.0
        tune = []
        for c in tune_clean:
            b, k = degrade.eval_motion(c, rng_t)
            tune.append((b, c, k))
        bal, _ = _tune(wiener, [0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0], tune)
        res = _score(MethodResult("Wiener, true kernel"), lambda b, k: wiener(b, k, bal), cases)
        res.note = f"balance={bal} (tuned on 16 training crops)"
        results["wiener"] = res.summary()
        log(json.dumps(results["wiener"]))
        it, _ = _tune(richardson_lucy, [5, 10, 20, 30, 50], tune)
        res = _score(
            MethodResult("Richardson-Lucy, true kernel"),
            lambda b, k: richardson_lucy(b, k, it),
            cases,
        )
        res.note = f"num_iter={it} (tuned on 16 training crops)"
        results["richardson_lucy"] = res.summary()
        log(json.dumps(results["richardson_lucy"]))
    orig = None
    reused = None
    if reuse_original and not original_weights:
        reused = load_reused_original(reuse_original, protocol(seed, val_fraction, len(cases)))
        results["original"] = reused["held_out"]
        log(json.dumps(results["original"]))
    if original_weights:
        orig = OriginalNet(original_weights)
        orig(cases[0][0])
        res = _score(MethodResult("original 15-layer CNN, retrained"), lambda b, k: orig(b), cases)
        res.note = f"weights {Path(original_weights).name}"
        results["original"] = res.summary()
        log(json.dumps(results["original"]))
    res = _score(MethodResult("ours"), ours_fn, cases)
    res.note = f"weights sha256 {ours.weights_sha256[:12]}"
    results["ours"] = res.summary()
    log(json.dumps(results["ours"]))

    sharp = {
        "input_noise2": _score(
            MethodResult("sharp + noise 2/255: input"), lambda b, k: b, sharp_cases, False
        ).summary(),
        "ours_noise2": _score(
            MethodResult("sharp + noise 2/255: ours"), ours_fn, sharp_cases, False
        ).summary(),
        "ours_clean": _score(
            MethodResult("sharp, no noise: ours"), ours_fn, sharp_clean_cases, False
        ).summary(),
    }
    log(json.dumps(sharp))

    # batch-1 timing on a fixed face, after warm-up
    face = cases[0][0]
    for _ in range(5):
        ours.restore(face)
    ts, cpu = [], []
    for _ in range(100):
        t0, c0 = time.perf_counter(), time.process_time()
        ours.restore(face)
        ts.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    net = build_unet(ours.config)
    model_info = {
        "load_average_1min": round(os.getloadavg()[0], 2),
        "params": int(net.count_params()),
        "gmac_128": round(conv_macs(net, 128, 128) / 1e9, 3),
        # the FFTs of the kernel estimation and the Wiener deconvolution (not multiply-adds)
        "fft_mflop_128": round(
            fft_flops(128, 128, ours.config.kernel_size, len(ours.config.wiener_lams)) / 1e6, 1
        )
        if ours.config.kernel_size
        else 0.0,
        "ms_median_batch1_100_runs": round(float(np.median(ts)), 2),
        # CPU time of the whole process per call (all threads): on a busy machine this is the
        # figure that does not depend on what else runs; wall time on idle cores is at most this
        "cpu_ms_median_batch1_100_runs": round(float(np.median(cpu)), 2),
    }
    log(json.dumps(model_info))

    circular64 = load_circular64(circular64_weights)
    circular64_rows = None
    if circular64 is not None:
        circular64_rows = circular64_benchmark(data, ours, circular64, seed, val_fraction, limit)
        log(json.dumps(circular64_rows))
    pairs = pair_fits = None
    if seed_pairs and Path(seed_pairs).is_dir():
        pairs, pair_fits = seed_pair_benchmark(seed_pairs, ours, orig, circular64)
        if reused is not None and reused.get("seed_pairs") is not None:
            pairs["original"] = reused["seed_pairs"]
        log(json.dumps(pairs))
    return {"held_out": results, "sharp": sharp, "model": model_info, "seed_pairs": pairs,
            "seed_pair_fits": pair_fits, "circular64_held_out": circular64_rows,
            "protocol": protocol(seed, val_fraction, len(cases))}  # fmt: skip


def restore_resized(restorer, img: np.ndarray) -> np.ndarray:
    """``img`` restored as the pipeline restores a face of another size: resized (bicubic) to
    the network's size, restored, resized back (area)."""
    h, w = img.shape[:2]
    s = restorer.size
    big = restorer.restore(cv2.resize(img, (s, s), interpolation=cv2.INTER_CUBIC))
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)


def load_circular64(weights: str | None = None):
    """the circular64 preset's Restorer: ``weights``, else the packaged ones (None when this
    installation has none)."""
    from blurbeam.deblur.model import Restorer, packaged_weights

    if weights is None:
        weights = str(packaged_weights("circular64")[0])
        if not Path(weights).is_file():
            return None
    return Restorer(weights)


def circular64_benchmark(
    data: str, ours, circular64, seed: int = 0, val_fraction: float = 0.1, limit: int | None = None
) -> dict:
    """The held-out crops at the circular64 preset's size, each blurred once by its recipe
    (``degrade.CircularDegradation``, seed ``seed + 5000``; the target is the stretched face):
    the input, the default network (resized to its size and back) and the circular64 preset.
    More faces than the 10 pairs, from the same recipe."""
    s = circular64.size
    _, test_files = split(list_images(data), seed, val_fraction)
    if limit:
        test_files = test_files[:limit]
    deg = degrade.CircularDegradation(size=s)
    rng = np.random.default_rng(seed + 5000)
    cases = []
    for face in load_stack(test_files, s).astype(np.float32) / 255.0:
        b, k = deg.sample(face, rng)
        cases.append((b, deg.clean_target(face), k))

    rows = {
        "input": _score(MethodResult("blurry input"), lambda b, k: b, cases, False),
        "ours_resized": _score(
            MethodResult(f"ours, default ({s}->{ours.size}->{s})"),
            lambda b, k: restore_resized(ours, b),
            cases,
            False,
        ),
        "circular64": _score(
            MethodResult(f"ours, circular64 preset ({s}x{s})"),
            lambda b, k: circular64.restore(b),
            cases,
        ),
    }
    rows["circular64"].note = f"weights sha256 {circular64.weights_sha256[:12]}"
    return {k: v.summary() for k, v in rows.items()}


def protocol(seed: int, val_fraction: float, n: int) -> dict:
    return {"seed": seed, "val_fraction": val_fraction, "n": n,
            "degradation": "motion blur 9-15 px, random angle, + noise sigma 2/255, 8-bit"}  # fmt: skip


def load_reused_original(path: str | Path, expected_protocol: dict) -> dict:
    """The original network's rows (held-out and seed pairs) from an earlier results.json."""
    path = Path(path)
    try:
        earlier = json.loads(path.read_text())
        row = dict(earlier["held_out"]["original"])
        got = earlier["protocol"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: no original-network results to reuse ({e})") from e
    if got != expected_protocol:
        raise ValueError(f"{path}: its protocol {got} is not this run's {expected_protocol}")
    row["note"] = f"{row.get('note', '')}; reused from {path.name}, not re-run".lstrip("; ")
    pairs = (earlier.get("seed_pairs") or {}).get("original")
    if pairs is not None:
        pairs = dict(pairs, note=f"reused from {path.name}, not re-run")
    return {"held_out": row, "seed_pairs": pairs}


ORACLE_BALANCES = (0.001, 0.003, 0.01, 0.03, 0.1)


def seed_pair_benchmark(folder: str, ours, orig=None, circular64=None) -> tuple[dict, list[dict]]:
    """The original notebook's 10 CelebA pairs (64x64). Ours runs as the pipeline does on a face
    of another size: resized to the model size (128), restored, resized back; the circular64
    preset (``circular64``, when given) runs on them as they are.

    Also what the pairs are made of (``kernelfit``): each pair's blur kernel, contrast gain and
    offset fitted from its clean image, which boundary rule reproduces the border band, Wiener
    deconvolution given all of that (oracle rows: the balance is picked on the pairs
    themselves), and ours on the clean image re-blurred by the fitted kernel as a physical blur
    would be (reflected borders, no contrast change). Returns the rows and the per-pair fits."""
    from blurbeam.lab.deblur import kernelfit

    folder = Path(folder)
    names = sorted(p.name for p in (folder / "clean").iterdir())

    rows = {"input": MethodResult("blurry input"), "ours_resized": MethodResult("ours (64->128->64)"),
            "ours_native": MethodResult("ours at 64x64")}  # fmt: skip
    if orig is not None:
        rows["original"] = MethodResult("original 15-layer CNN, retrained (64x64)")
    if circular64 is not None:
        rows["circular64"] = MethodResult(
            "ours, circular64 preset (trained on the pairs' circular blur)"
        )
        rows["circular64"].note = f"weights sha256 {circular64.weights_sha256[:12]}"
    oracle = {b: {bal: MethodResult("") for bal in ORACLE_BALANCES} for b in ("wrap", "reflect")}
    rows["physical_input"] = MethodResult("clean re-blurred by the fitted kernel, reflected: input")
    rows["physical_ours"] = MethodResult("clean re-blurred by the fitted kernel, reflected: ours")
    fits = []
    for n in names:
        c = read_rgb(folder / "clean" / n).astype(np.float32) / 255.0
        b = read_rgb(folder / "blurry" / n).astype(np.float32) / 255.0
        fit = kernelfit.fit_linear_blur(c, b)
        plain = kernelfit.FittedBlur(fit.kernels, np.ones(3), np.zeros(3), fit.fit_psnr)
        physical = degrade.quantize(np.clip(kernelfit.predict(c, plain, "reflect"), 0, 1))
        fits.append({"pair": n, "interior_fit_psnr": round(fit.fit_psnr, 2),
                     "border_fit_psnr_wrap": round(kernelfit.border_psnr(c, b, fit, "wrap"), 2),
                     "border_fit_psnr_reflect": round(kernelfit.border_psnr(c, b, fit, "reflect"), 2),
                     "gain": round(float(fit.gain.mean()), 3), "extent_px": fit.extent(),
                     "shift_px": [round(v, 2) for v in fit.centre()]})  # fmt: skip
        outs = {"input": b, "ours_resized": restore_resized(ours, b), "ours_native": ours.restore(b),
                "physical_input": physical, "physical_ours": restore_resized(ours, physical)}  # fmt: skip
        if orig is not None:
            outs["original"] = orig(b)
        if circular64 is not None:
            outs["circular64"] = circular64.restore(b)
        for boundary, by_balance in oracle.items():
            for bal, res in by_balance.items():
                o = degrade.quantize(np.clip(kernelfit.oracle_wiener(b, fit, bal, boundary), 0, 1))
                res.psnr.append(psnr(c, o))
                res.ssim.append(ssim(c, o))
        for k, o in outs.items():
            o = degrade.quantize(np.clip(o, 0, 1))
            rows[k].psnr.append(psnr(c, o))
            rows[k].ssim.append(ssim(c, o))
    labels = {"wrap": "circular, as the pairs were made", "reflect": "reflected borders"}
    for boundary, by_balance in oracle.items():
        bal, best = max(by_balance.items(), key=lambda kv: np.mean(kv[1].psnr))
        best.name = f"oracle: Wiener, each pair's fitted kernel and stretch, {labels[boundary]}"
        best.note = f"balance={bal}"
        rows[f"oracle_wiener_{boundary}"] = best
    return {k: v.summary() for k, v in rows.items()}, fits


def check_targets(r: dict) -> list[tuple[str, bool, str]]:
    """Each target of the benchmark (issue 5) as (name, met, the figure)."""
    h = r["held_out"]
    o = h["ours"]
    checks = [
        (
            "PSNR >= input + 5 dB",
            o["psnr"] >= h["input"]["psnr"] + 5,
            f"{o['psnr']:.2f} vs {h['input']['psnr']:.2f} + 5",
        ),
        ("SSIM >= 0.85", o["ssim"] >= 0.85, f"{o['ssim']:.3f}"),
    ]
    if "original" in h:
        checks.append(("PSNR >= original + 1.5 dB", o["psnr"] >= h["original"]["psnr"] + 1.5,
                       f"{o['psnr']:.2f} vs {h['original']['psnr']:.2f}"))  # fmt: skip
    if "wiener" in h:
        checks.append(("PSNR >= Wiener (true kernel) + 1 dB", o["psnr"] >= h["wiener"]["psnr"] + 1,
                       f"{o['psnr']:.2f} vs {h['wiener']['psnr']:.2f}"))  # fmt: skip
    s = r["sharp"]
    drop = s["input_noise2"]["psnr"] - s["ours_noise2"]["psnr"]
    checks.append(("sharp (+noise 2/255) PSNR drop <= 0.5 dB", drop <= 0.5, f"drop {drop:.2f} dB"))
    if r.get("seed_pairs"):
        pairs = r["seed_pairs"]
        v = pairs["ours_resized"]["psnr"]
        if "circular64" in pairs:
            nb = pairs["circular64"]["psnr"]
            checks.append(("10 original pairs >= 25 dB (circular64 preset)", nb >= 25,
                           f"{nb:.2f} dB; default network {v:.2f} dB"))  # fmt: skip
        else:
            checks.append(("10 original pairs >= 25 dB", v >= 25, f"{v:.2f} dB"))
    ms = r["model"]["ms_median_batch1_100_runs"]
    cpu_ms = r["model"].get("cpu_ms_median_batch1_100_runs")
    checks.append(("<= 25 ms per face (wall)", ms <= 25, f"{ms:.1f} ms wall, {cpu_ms} ms CPU"))
    return checks


def fit_summary(fits: list[dict]) -> str:
    def span(key: str) -> str:
        vals = [f[key] for f in fits]
        return f"{min(vals)}-{max(vals)}"

    def shift(axis: int) -> str:
        vals = [f["shift_px"][axis] for f in fits]
        return f"{min(vals)}-{max(vals)}"

    return (
        f"What the pairs are made of (a 15x15 kernel, gain and offset fitted per channel from each "
        f"clean image): the fit reproduces the blurry interior at {span('interior_fit_psnr')} dB "
        f"and the border band at {span('border_fit_psnr_wrap')} dB with circular convolution "
        f"against {span('border_fit_psnr_reflect')} dB with reflected borders; contrast gain "
        f"{span('gain')}; kernel extent {span('extent_px')} px on the 64 px face"
        + (
            f"; the blurry image moved up {shift(0)} px and left {shift(1)} px."
            if all("shift_px" in f for f in fits)
            else "."
        )
    )


def to_markdown(r: dict) -> str:
    lines = ["| method | PSNR (dB) | SSIM | ms / face (median) | note |", "|---|---|---|---|---|"]
    for v in r["held_out"].values():
        ms = "" if v["ms_per_face_median"] is None else f"{v['ms_per_face_median']:.1f}"
        lines.append(f"| {v['method']} | {v['psnr']:.2f} | {v['ssim']:.3f} | {ms} | {v['note']} |")
    lines += ["", "| sharp inputs (no blur) | PSNR (dB) | SSIM |", "|---|---|---|"]
    for v in r["sharp"].values():
        lines.append(f"| {v['method']} | {v['psnr']:.2f} | {v['ssim']:.3f} |")
    if r.get("seed_pairs"):
        lines += [
            "",
            "| original notebook's 10 pairs (64x64) | PSNR (dB) | SSIM |",
            "|---|---|---|",
        ]
        for v in r["seed_pairs"].values():
            lines.append(f"| {v['method']} | {v['psnr']:.2f} | {v['ssim']:.3f} |")
        if r.get("seed_pair_fits"):
            lines += ["", fit_summary(r["seed_pair_fits"])]
    if r.get("circular64_held_out"):
        n = r["circular64_held_out"]["input"]["n"]
        lines += ["", f"| held-out crops blurred the circular64 way ({n}) | PSNR (dB) | SSIM "
                  "| ms / face (median) |", "|---|---|---|---|"]  # fmt: skip
        for v in r["circular64_held_out"].values():
            ms = "" if v["ms_per_face_median"] is None else f"{v['ms_per_face_median']:.1f}"
            lines.append(f"| {v['method']} | {v['psnr']:.2f} | {v['ssim']:.3f} | {ms} |")
    m = r["model"]
    lines += [
        "",
        f"Ours: {m['params']:,} parameters, {m['gmac_128']} GMAC per 128x128 face"
        f"{' (+ ' + str(m['fft_mflop_128']) + ' MFLOP of FFTs)' if m.get('fft_mflop_128') else ''}, "
        f"{m['ms_median_batch1_100_runs']} ms median wall time per face (batch 1, 100 runs; 1-min "
        f"load average {m.get('load_average_1min')} on this 2-core machine), "
        f"{m.get('cpu_ms_median_batch1_100_runs')} ms median process CPU time per face.",
        "",
        "| target | met | value |",
        "|---|---|---|",
    ]
    for name, ok, val in check_targets(r):
        lines.append(f"| {name} | {'yes' if ok else 'NO'} | {val} |")
    return "\n".join(lines) + "\n"

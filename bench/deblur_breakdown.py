"""Where the face-deblurring network's gain comes from, and what a flip ensemble would add.

    python bench/deblur_breakdown.py [--data DIR] [--weights FILE] [--lengths 5,9,12,15,21]
        [--json OUT.json]

Two tables, printed as Markdown, on the crops the training split holds out (seed 0):

1. **Gain by blur length.** Each held-out crop blurred by straight motion of one fixed length at
   a random angle plus noise sigma 2/255 (8-bit), for each length in ``--lengths``: mean PSNR of
   the input and of the network's output. The issue's benchmark draws 9-15 px.
2. **Flip ensembles** on the benchmark's own test set (``evaluate.held_out_cases``, the cases
   ``blurbeam evaluate-deblur`` scores): the network once, and the mean of its outputs on the
   face and its mirror images (2 or 4 passes), each undone. Every pass costs the network's
   GMACs again, so the ensembles are reported, not shipped: two passes already exceed the
   issue's 1 GMAC per face.

PSNR and SSIM as in ``blurbeam evaluate-deblur`` (scikit-image, outputs rounded to 8 bits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blurbeam.lab.deblur import degrade  # noqa: E402
from blurbeam.lab.deblur.benchmark import held_out_cases  # noqa: E402
from blurbeam.lab.deblur.crops import DEFAULT_TRAIN_DIR  # noqa: E402
from blurbeam.lab.deblur.metrics import psnr, ssim  # noqa: E402

FLIPS = {  # name -> the flips whose outputs are averaged (axes of an (N, H, W, C) batch)
    "once": [()],
    "2 passes (+ mirror)": [(), (2,)],
    "4 passes (+ mirror, upside down, both)": [(), (2,), (1,), (1, 2)],
}


def restore_all(restorer, x: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([restorer.restore(x[i : i + batch]) for i in range(0, len(x), batch)])


def scores(clean: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    out = [degrade.quantize(np.clip(o, 0, 1)) for o in out]
    return (
        float(np.mean([psnr(c, o) for c, o in zip(clean, out, strict=True)])),
        float(np.mean([ssim(c, o) for c, o in zip(clean, out, strict=True)])),
    )


def by_length(restorer, clean: np.ndarray, lengths: list[float], seed: int) -> list[dict]:
    rows = []
    for length in lengths:
        rng = np.random.default_rng(seed + 5000 + int(round(length * 10)))
        x = np.stack([degrade.eval_motion(c, rng, length=(length, length))[0] for c in clean])
        p_in, s_in = scores(clean, x)
        p_out, s_out = scores(clean, restore_all(restorer, x))
        rows.append({"length_px": length, "input_psnr": round(p_in, 2),
                     "ours_psnr": round(p_out, 2), "gain_db": round(p_out - p_in, 2),
                     "input_ssim": round(s_in, 3), "ours_ssim": round(s_out, 3)})  # fmt: skip
    return rows


def flip_ensembles(restorer, cases, gmac: float) -> list[dict]:
    x = np.stack([b for b, _, _ in cases])
    clean = np.stack([c for _, c, _ in cases])
    outs = {(): restore_all(restorer, x)}
    rows = []
    p_in, _ = scores(clean, x)
    for name, flips in FLIPS.items():
        for axes in flips:
            if axes not in outs:
                outs[axes] = np.flip(restore_all(restorer, np.flip(x, axes)), axes)
        mean = np.mean([outs[a] for a in flips], axis=0)
        p, s = scores(clean, mean)
        rows.append({"passes": name, "psnr": round(p, 2), "gain_db": round(p - p_in, 2),
                     "ssim": round(s, 3), "gmac_per_face": round(gmac * len(flips), 2)})  # fmt: skip
    return rows


def to_markdown(length_rows: list[dict], flip_rows: list[dict], n: int, sha: str) -> str:
    lines = [f"Held-out crops: {n}; weights sha256 {sha[:12]}", "",
             "| motion blur (px) | input PSNR | ours PSNR | gain (dB) | input SSIM | ours SSIM |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in length_rows:
        lines.append(f"| {r['length_px']:g} | {r['input_psnr']:.2f} | {r['ours_psnr']:.2f} | "
                     f"{r['gain_db']:+.2f} | {r['input_ssim']:.3f} | {r['ours_ssim']:.3f} |")  # fmt: skip
    lines += ["", "| benchmark test set (9-15 px + noise 2/255) | PSNR | gain (dB) | SSIM | GMAC / face |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in flip_rows:
        lines.append(f"| {r['passes']} | {r['psnr']:.2f} | {r['gain_db']:+.2f} | "
                     f"{r['ssim']:.3f} | {r['gmac_per_face']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_TRAIN_DIR, help="the face crops (seeded split)")
    ap.add_argument("--weights", default=None, help="default: the packaged weights")
    ap.add_argument("--lengths", default="5,9,12,15,21", help="motion blur lengths in px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    try:
        lengths = [float(v) for v in args.lengths.split(",") if v.strip()]
        _, clean, cases = held_out_cases(args.data, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from blurbeam.deblur.model import Restorer, build_unet
    from blurbeam.lab.deblur.baseline import conv_macs

    restorer = Restorer(args.weights)
    gmac = conv_macs(build_unet(restorer.config), 128, 128) / 1e9
    length_rows = by_length(restorer, clean, lengths, args.seed)
    flip_rows = flip_ensembles(restorer, cases, gmac)
    print(to_markdown(length_rows, flip_rows, len(clean), restorer.weights_sha256))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "by_length": length_rows,
                    "flip_ensembles": flip_rows,
                    "weights_sha256": restorer.weights_sha256,
                },
                indent=1,
            )  # fmt: skip
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

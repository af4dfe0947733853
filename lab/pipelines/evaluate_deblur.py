"""``blurbeam evaluate-deblur``: PSNR / SSIM / ms per face of ours against the baselines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from blurbeam.lab.deblur.crops import DEFAULT_SEED_PAIRS, DEFAULT_TRAIN_DIR

    p.add_argument(
        "--data",
        default=DEFAULT_TRAIN_DIR,
        help="face crops; the seeded 10%% split is the test set",
    )
    p.add_argument(
        "--seed-pairs", default=DEFAULT_SEED_PAIRS, help="folder with clean/ and blurry/"
    )
    p.add_argument("--weights", default=None, help="our weights (default: the packaged ones)")
    p.add_argument(
        "--original-weights", default=None, help="the retrained original network's weights"
    )
    p.add_argument(
        "--circular64-weights",
        default=None,
        help="the circular64 preset's weights (default: the packaged ones, when installed)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=None, help="only the first N held-out crops")
    p.add_argument("--skip-classical", action="store_true", help="no Wiener / Richardson-Lucy")
    p.add_argument(
        "--reuse-original",
        default=None,
        metavar="RESULTS_JSON",
        help="take the original network's rows from an earlier results.json of the same protocol "
        "instead of running it again (ignored with --original-weights)",
    )
    p.add_argument("--out", default=None, help="write results.json and results.md here")


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    if beam_args:
        print(f"unknown arguments: {' '.join(beam_args)}", file=sys.stderr)
        return 2
    from blurbeam.lab.deblur.benchmark import run_benchmark, to_markdown

    try:
        r = run_benchmark(
            args.data,
            seed_pairs=args.seed_pairs,
            original_weights=args.original_weights,
            weights=args.weights,
            seed=args.seed,
            val_fraction=args.val_fraction,
            limit=args.limit,
            skip_classical=args.skip_classical,
            reuse_original=args.reuse_original,
            circular64_weights=args.circular64_weights,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = to_markdown(r)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(r, indent=1) + "\n")
        (out / "results.md").write_text(md)
    return 0

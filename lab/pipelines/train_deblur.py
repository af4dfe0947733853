"""``blurbeam train-deblur``: train the face-deblurring network (or the original baseline) on CPU."""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    from blurbeam.lab.deblur.crops import DEFAULT_TRAIN_DIR

    p.add_argument("--data", default=DEFAULT_TRAIN_DIR, help="folder of sharp face crops (128x128)")
    p.add_argument("--out", required=True, help="folder for the weights and the training record")
    p.add_argument("--arch", choices=["unet", "original"], default="unet",
                   help="ours (unet) or the original project's 15-layer network")  # fmt: skip
    p.add_argument("--minutes", type=float, default=60.0, help="training budget in minutes")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="what --minutes measures: this process's CPU time (default; fair on a "
                   "shared machine) or wall-clock time")  # fmt: skip
    p.add_argument("--max-wall-minutes", type=float, default=None, help="hard wall-clock cap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=None, help="default 8 (original: 4)")
    p.add_argument("--patch", type=int, default=None, help="patch side (default 64)")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (original: 1e-4)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all)")
    p.add_argument("--val-every", type=float, default=None, help="seconds between validations")
    p.add_argument("--init", default=None, help="start from these weights (continue training)")
    p.add_argument(
        "--n-val", type=int, default=None, help="validation crops (default 64; original 8)"
    )
    from blurbeam.lab.deblur.degrade import MIXES

    p.add_argument("--mix", choices=list(MIXES), default="default",
                   help="degradation mix (degrade.MIXES; motion: more straight motion blur; "
                   "circular64: the original notebook's FFT blur on whole 64x64 faces, the "
                   "circular64 preset's training data: needs --patch 64)")  # fmt: skip
    p.add_argument("--kernel-weight", type=float, default=1.0,
                   help="weight of the blur-kernel estimate's loss (default 1)")  # fmt: skip
    p.add_argument(
        "--ema",
        type=float,
        default=None,
        help="decay of the weights' moving average that is validated and saved (default 0.999; "
        "0: none)",
    )


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    if beam_args:
        print(f"unknown arguments: {' '.join(beam_args)}", file=sys.stderr)
        return 2
    from blurbeam.lab.deblur.train import train

    try:
        cfg = _config(args)
    except ValueError as e:
        print(f"blurbeam train-deblur: error: {e}", file=sys.stderr)
        return 2
    t0 = time.strftime("%H:%M:%S")
    try:
        train(cfg, log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
    except FileNotFoundError as e:
        print(f"blurbeam train-deblur: error: {e}", file=sys.stderr)
        return 2
    print(f"started {t0}, finished {time.strftime('%H:%M:%S')}")
    return 0


def _config(args: argparse.Namespace):
    """The training config of the command line (ValueError for a bad combination)."""
    from blurbeam.lab.deblur.train import TrainConfig

    orig = args.arch == "original"
    return TrainConfig(
        data=args.data,
        out=args.out,
        arch=args.arch,
        minutes=args.minutes,
        clock=args.clock,
        max_wall_minutes=args.max_wall_minutes,
        seed=args.seed,
        val_fraction=args.val_fraction,
        batch=args.batch or (4 if orig else 8),
        patch=args.patch or 64,
        lr=args.lr or (1e-4 if orig else 1e-3),
        threads=args.threads,
        val_every_s=args.val_every or (1200.0 if orig else 180.0),
        n_val=args.n_val or (8 if orig else 64),
        init=args.init,
        ema=0.999 if args.ema is None else args.ema,
        mix=args.mix,
        kernel_weight=args.kernel_weight,
    )

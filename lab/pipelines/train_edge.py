"""``blurbeam train-edge``: train the learned (detector-free) anonymizer on CPU, or export it.

``--arch teacher`` trains the thesis's U-Net on blurbeam's own default anonymization of the
training images; ``--arch student --teacher W`` distils it into the small edge network;
``--export W`` writes the TFLite models (fp32 and full-integer int8) of a trained student.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    from blurbeam.lab.edge.network import ARCHS

    p.add_argument("--out", required=True, help="folder for the weights and the training record")
    p.add_argument("--arch", choices=list(ARCHS), default="teacher")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    p.add_argument(
        "--tiles",
        default="/tmp/blurbeam_edge_tiles.npz",
        help="cache of the training tiles (built from --data when absent)",
    )
    p.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="FOLDER:TILES",
        help="image folder and tiles per image (repeatable; default: "
        "../shared/data/widerface/pool886/images:12 and ../shared/data/deblur/faces128_train:1)",
    )
    p.add_argument("--detector", default="multiscale", help="detector that makes the targets")
    p.add_argument("--teacher", default=None, help="teacher weights for a distilled student")
    p.add_argument("--distill", type=float, default=0.5, help="weight of the teacher's output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128, help="training crop side (32-128)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    p.add_argument("--val-every", type=float, default=120.0, help="seconds between validations")
    p.add_argument(
        "--export",
        default=None,
        metavar="WEIGHTS",
        help="export these student weights to TFLite (fp32 and int8) into --out, no training",
    )


def _folders(specs: list[str] | None) -> tuple[tuple[str, int], ...] | None:
    if not specs:
        return None
    out = []
    for s in specs:
        folder, sep, n = s.rpartition(":")
        if not sep or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--data {s!r}: expected FOLDER:TILES_PER_IMAGE")
        out.append((folder, int(n)))
    return tuple(out)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    if beam_args:
        print(
            f"blurbeam train-edge: error: unknown arguments: {' '.join(beam_args)}", file=sys.stderr
        )
        return 2
    from blurbeam.lab.edge.train import TrainConfig, train

    def log(m: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)

    try:
        if args.export:
            from blurbeam.lab.edge.export import export

            export(args.export, args.out, args.tiles, threads=args.threads, log=log)
            return 0
        folders = _folders(args.data)
        cfg = TrainConfig(
            out=args.out,
            arch=args.arch,
            minutes=args.minutes,
            tiles=args.tiles,
            detector=args.detector,
            teacher=args.teacher,
            distill=args.distill,
            seed=args.seed,
            batch=args.batch,
            patch=args.patch,
            lr=args.lr,
            threads=args.threads,
            val_every_s=args.val_every,
            **({"folders": folders} if folders else {}),
        )
        train(cfg, log=log)
    except (ValueError, FileNotFoundError) as e:
        print(f"blurbeam train-edge: error: {e}", file=sys.stderr)
        return 2
    return 0

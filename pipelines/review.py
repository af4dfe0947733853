"""``blurbeam review --output OUT``: a self-contained HTML review site under ``OUT/review``.

Per-run counts, errors, config, versions and the attestation chain's status, detection plots,
and a stratified sample of anonymized images, each on a page where a reviewer can draw missed
faces, mark false positives and export ``corrections.json`` for ``blurbeam anonymize
--corrections``. Reads the audit records and only the sampled images; originals only with
``--with-originals``. Exit 2 on bad arguments or an output without audit records.
"""

from __future__ import annotations

import argparse
import sys

from blurbeam.pipelines.scaffold import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="the --output of the anonymize runs")
    parser.add_argument(
        "--sample",
        type=positive_int,
        default=48,
        help="images to show: errors, lowest-scoring detections, most faces, random (default 48)",
    )
    parser.add_argument(
        "--with-originals",
        action="store_true",
        help="also copy the original (identifiable) images into the site; every page says so",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the random draw (default 0)"
    )


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from blurbeam.errors import one_line
    from blurbeam.pipelines.report import has_audit
    from blurbeam.review import build_review

    output = args.output.rstrip("/") or "/"
    if not has_audit(output, "blurbeam review"):
        return 2
    try:
        done = build_review(output, args.sample, args.with_originals, args.seed)
    except (OSError, ValueError) as exc:
        print(f"blurbeam review: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(
        f"review written to {done['index']}: {done['sampled']} images sampled "
        f"({', '.join(f'{k} {v}' for k, v in done['by_stratum'].items())}), {done['files']} "
        f"files, {done['bytes'] / 1e6:.1f} MB, {done['seconds']:.1f} s"
        + (" (holds identifiable originals)" if args.with_originals else ""),
        file=sys.stderr,
    )
    return 0

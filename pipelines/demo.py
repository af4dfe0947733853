"""``blurbeam demo OUTDIR``: build a sample dataset from pictures installed packages ship, anonymize
it with the default settings, and write a before/after contact sheet and the review site
(``blurbeam review``: OUTDIR/output/review/index.html)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXPECTED_ERRORS = {"truncated.jpg", "empty.png"}


#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "outdir", help="folder for the sample input, the output and the contact sheet"
    )
    parser.add_argument(
        "--detector", default=None, help="face detector (default: anonymize's default)"
    )
    parser.add_argument("--method", default=None, help="anonymization method (default: gaussian)")


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from blurbeam.demo import build_dataset, contact_sheet
    from blurbeam.imageio import ImageError, decode
    from blurbeam.pipelines import anonymize

    out = Path(args.outdir).resolve()
    src, dst = out / "input", out / "output"
    if dst.exists():  # the demo's own output from an earlier demo: run ids are never reused
        import shutil

        shutil.rmtree(dst)
    build_dataset(src)
    argv = [
        "--input",
        str(src),
        "--output",
        str(dst),
        "--max-error-rate",
        "1.0",
        "--run-id",
        "demo",
    ]
    if args.detector:
        argv += ["--detector", args.detector]
    if args.method:
        argv += ["--method", args.method]
    parser = argparse.ArgumentParser(prog="blurbeam anonymize")
    anonymize.add_arguments(parser)
    a_args, extra = parser.parse_known_args(argv)
    code = anonymize.run(a_args, extra + list(beam_args))
    if code != 0:
        return code
    table = anonymize.read_run_records(str(dst), "demo").to_pylist()
    pairs = []
    unexpected = []
    for rec in sorted(table, key=lambda r: r["source_uri"]):
        name = Path(rec["source_uri"]).name
        try:
            before = decode(Path(rec["source_uri"]).read_bytes()).pixels
        except ImageError:
            before = None
        after = decode(Path(rec["output_uri"]).read_bytes()).pixels if rec["output_uri"] else None
        label = f"{name}: {rec['status']}" + (
            f" ({rec['num_faces']} faces)" if rec["num_faces"] else ""
        )
        if rec["status"] == "error":
            label = f"{name}: error: {rec['error']}"
            if name not in EXPECTED_ERRORS:
                unexpected.append(label)
        if before is not None or after is not None:
            pairs.append((label, before, after))
    sheet = out / "contact_sheet.png"
    contact_sheet(pairs, sheet)
    from blurbeam.review import build_review

    site = build_review(str(dst))
    print(f"\nsample input:     {src}", file=sys.stderr)
    print(f"anonymized:       {dst}", file=sys.stderr)
    print(
        f"audit records:    {dst / 'audit'} (Parquet), summary {dst / 'run.json'}", file=sys.stderr
    )
    print(f"before/after:     {sheet}", file=sys.stderr)
    print(f"review site:      {site['index']} (open it in a browser)", file=sys.stderr)
    print(
        "(truncated.jpg and empty.png are broken on purpose: they get error records, no output)",
        file=sys.stderr,
    )
    if unexpected:
        print("unexpected errors:\n  " + "\n  ".join(unexpected), file=sys.stderr)
        return 1
    return 0

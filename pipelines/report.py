"""``blurbeam report``: what every run under an output directory did, and proof of coverage.

Reads every audit Parquet file under ``--output`` (all runs) and prints per-run totals, the
errors with their reasons, the images with faces, the detector and method of each run, and every
input image that has no audit record at all. Writes ``report.json`` and ``report.md`` next to the
audit (or under ``--report-dir``). Exit code 1 when an input has no audit record (or, with
``--fail-on-error``, when an input's latest record is an error), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="the --output of the anonymize runs")
    parser.add_argument(
        "--input",
        default=None,
        help="the inputs to check coverage against (default: the input named in run.json)",
    )
    parser.add_argument(
        "--image-column",
        default=None,
        help="Parquet shards: the image column, as for anonymize (default: run.json's)",
    )
    parser.add_argument(
        "--allow-image-field",
        action="append",
        default=None,
        help="as for anonymize (repeatable; default: run.json's)",
    )
    parser.add_argument(
        "--report-dir", default=None, help="where report.json and report.md go (default: --output)"
    )
    parser.add_argument(
        "--fail-on-error",
        action="store_true",
        help="exit 1 when an input's latest record is an error",
    )
    parser.add_argument("--limit", type=int, default=10, help="lines per list on the terminal")


def _run_json(output: str) -> dict:
    """The latest run's ``run.json`` under ``output`` ({} when there is none)."""
    import fsspec

    from blurbeam.shards import join_output

    try:
        fs, path = fsspec.core.url_to_fs(join_output(output, "run.json"))
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError, OSError):
        return {}


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from blurbeam.report import audit_files, build_report, to_text, write_report
    from blurbeam.shards import ShardOptions

    if beam_args:
        print(f"blurbeam report: error: unknown arguments {' '.join(beam_args)}", file=sys.stderr)
        return 2
    output = args.output.rstrip("/") or "/"
    try:
        files = audit_files(output)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"blurbeam report: error: cannot list {output!r}: {exc}", file=sys.stderr)
        return 2
    if not files:
        print(f"blurbeam report: error: no audit records under {output!r}/audit", file=sys.stderr)
        return 2
    last = _run_json(output)
    config = last.get("config") or {}
    spec = args.input or last.get("input")
    shard_opts = ShardOptions(
        image_column=args.image_column or config.get("image_column"),
        allow_image_fields=tuple(args.allow_image_field or config.get("allow_image_fields") or ()),
    )
    rep = build_report(output, spec, shard_opts)
    print(to_text(rep, args.limit))
    json_uri, md_uri = write_report(rep, args.report_dir or output)
    print(f"report written to {json_uri} and {md_uri}", file=sys.stderr)
    if rep["coverage"].get("missing"):
        return 1
    if args.fail_on_error and rep["latest_status"]["error"]:
        return 1
    return 0

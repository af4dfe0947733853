"""``blurbeam report``: what every run under an output directory did, and proof of coverage.

Reads every audit Parquet file under ``--output`` (all runs) and prints per-run totals, the
errors with their reasons, the images with faces, the detector and method of each run, and every
input (every file under ``--input``) with its latest status, and those with no audit record at
all. Writes ``report.json`` and ``report.md`` next to the audit (or under ``--report-dir``). Exit
code 1 when an input has no audit record, when coverage cannot be checked (no ``--input`` and no
run.json naming one), or when the error rate is above ``--max-error-rate`` (``--fail-on-error``:
any error); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys

from blurbeam.pipelines.scaffold import fraction


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
        help="exit 1 when an input's latest record is an error (same as --max-error-rate 0)",
    )
    parser.add_argument(
        "--max-error-rate",
        type=fraction,
        default=None,
        help="exit 1 when the fraction of inputs whose latest record is an error (skipped "
        "files not counted) is above this (default: errors do not change the exit code)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the chain of run attestations under OUTPUT/runs and every audit file, "
        "manifest and the done index they name; exit 1 on any mismatch",
    )
    parser.add_argument(
        "--rehash",
        action="store_true",
        help="hash every input again and count one whose bytes changed since its record as "
        "not covered (reads the whole input)",
    )
    parser.add_argument("--limit", type=int, default=10, help="lines per list on the terminal")


def _run_json(output: str) -> dict:
    """The latest run's ``run.json`` under ``output`` ({} when there is none)."""
    import fsspec

    from blurbeam.schemas import layout

    try:
        fs, path = fsspec.core.url_to_fs(layout.run_summary(output))
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError, OSError):
        return {}


def has_audit(output: str, prog: str) -> bool:
    """Whether ``output`` holds audit files; else says why on one line (the caller exits 2)."""
    from blurbeam.errors import one_line
    from blurbeam.report import audit_files

    try:
        files = audit_files(output)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"{prog}: error: cannot list {output!r}: {one_line(exc)}", file=sys.stderr)
        return False
    if not files:
        print(f"{prog}: error: no audit records under {output!r}/audit", file=sys.stderr)
    return bool(files)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from blurbeam.report import build_report, to_text, write_report
    from blurbeam.shards import ShardOptions

    output = args.output.rstrip("/") or "/"
    if not has_audit(output, "blurbeam report"):
        return 2
    from blurbeam.attest import head, verify

    newest = head(output)
    att = newest[0] if newest else {}
    last = att or _run_json(output)
    config = last.get("config") or {}
    spec = args.input or last.get("input")
    shard_opts = ShardOptions(
        image_column=args.image_column or config.get("image_column"),
        allow_image_fields=tuple(args.allow_image_field or config.get("allow_image_fields") or ()),
    )
    rep = build_report(output, spec, shard_opts, att.get("config_hash"), args.rehash)
    if args.verify:
        problems, chain = verify(output)
        rep["verify"] = {"problems": problems, **chain}
    print(to_text(rep, args.limit))
    json_uri, md_uri = write_report(rep, args.report_dir or output)
    print(f"report written to {json_uri} and {md_uri}", file=sys.stderr)
    failures = []
    cov = rep["coverage"]
    if not cov["checked"]:
        failures.append("coverage could not be checked: pass --input")
    elif cov["uncovered"]:
        failures.append(f"{len(cov['uncovered'])} of {cov['inputs']} inputs are not covered")
    limit = 0.0 if args.fail_on_error else args.max_error_rate
    s = cov["by_status"] if cov["checked"] else rep["latest_status"]
    errors = s.get("error", 0)
    attempted = sum(n for k, n in s.items() if k not in ("skipped", "missing", "old_config"))
    rate = errors / attempted if attempted else 0.0
    if limit is not None and rate > limit:
        failures.append(f"error rate {rate:.3f} ({errors} errors) is above {limit:g}")
    if args.verify and rep["verify"]["problems"]:
        failures += [f"verify: {p}" for p in rep["verify"]["problems"]]
    for failure in failures:
        print(f"blurbeam report: FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0

"""The compliance view of an output directory: every audit record of every run. Pure code.

``done_index`` tells ``--skip-existing`` which images already succeeded under a config;
``build_report`` gives the per-run totals, the errors with their reasons, the images with faces,
the detector and method of each run, and every input that has no audit record at all (the proof
that nothing was skipped, across runs); ``to_text`` and ``to_markdown`` render it.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from blurbeam.schemas.audit import AUDIT_SCHEMA
from blurbeam.shards import (
    InputError,
    ShardOptions,
    expand_input,
    get_format,
    join_output,
    member_uri,
)

SUCCESS = ("ok", "no_faces")


def audit_files(output: str) -> list[str]:
    """Every audit Parquet file under ``output`` (all runs), as URIs."""
    fs, path = fsspec.core.url_to_fs(output)
    files = sorted(fs.glob(f"{path.rstrip('/')}/audit/run-*.parquet"))
    return [f if "://" not in output else fs.unstrip_protocol(f) for f in files]


def load_audit(output: str, columns: list[str] | None = None) -> pa.Table:
    """All audit records under ``output``; an empty table when there are none."""
    schema = (
        AUDIT_SCHEMA if columns is None else pa.schema([AUDIT_SCHEMA.field(c) for c in columns])
    )
    tables = []
    for uri in audit_files(output):
        fs, path = fsspec.core.url_to_fs(uri)
        with fs.open(path, "rb") as fh:
            tables.append(pq.read_table(fh, columns=columns, schema=AUDIT_SCHEMA))
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


@functools.lru_cache(maxsize=4)
def done_index(output: str, config_hash: str, run_id: str = "") -> dict[str, str]:
    """``source_uri -> source_sha256`` of the images that succeeded (ok or no_faces) under
    ``config_hash`` in a run other than ``run_id``."""
    table = load_audit(output, ["run_id", "source_uri", "source_sha256", "status", "config_hash"])
    done: dict[str, str] = {}
    for r in table.to_pylist():
        if r["status"] in SUCCESS and r["config_hash"] == config_hash and r["run_id"] != run_id:
            done[r["source_uri"]] = r["source_sha256"]
    return done


def list_inputs(
    spec: str, exclude: str | None = None, opts: ShardOptions | None = None
) -> list[str]:
    """The source URI of every image the input holds, as the pipeline names them. A shard that
    cannot be listed stands for itself (the pipeline gives it one error record too)."""
    opts = opts or ShardOptions()
    uris = []
    for ref in expand_input(spec, exclude=exclude):
        try:
            keys = get_format(ref.kind).keys(ref, opts)
        except Exception:
            keys = [""]
        uris += [ref.uri if key == "" else member_uri(ref.uri, key) for key in keys]
    return uris


def _run_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        runs[r["run_id"]].append(r)
    out = []
    for run_id, rs in runs.items():
        status = Counter(r["status"] for r in rs)
        first = rs[0]
        times = [r["processed_at"] for r in rs if r["processed_at"] is not None]
        out.append(
            {
                "run_id": run_id,
                "started": min(times).isoformat() if times else None,
                "finished": max(times).isoformat() if times else None,
                "images": len(rs),
                "ok": status["ok"],
                "no_faces": status["no_faces"],
                "error": status["error"],
                "faces": sum(r["num_faces"] or 0 for r in rs),
                "detector": first["detector"],
                "detector_params": first["detector_params"],
                "method": first["method"],
                "method_params": first["method_params"],
                "config_hash": first["config_hash"],
                "package_version": first["package_version"],
            }
        )
    return sorted(out, key=lambda r: (r["started"] or "", r["run_id"]))


def build_report(
    output: str, input_spec: str | None = None, opts: ShardOptions | None = None
) -> dict[str, Any]:
    """The report of every run under ``output``. With ``input_spec``, every input image is
    checked for at least one audit record; the missing ones are listed."""
    rows = load_audit(output).to_pylist()
    rows.sort(key=lambda r: (r["processed_at"] or datetime.min.replace(tzinfo=UTC), r["run_id"]))
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        latest[r["source_uri"]] = r
    status = Counter(r["status"] for r in latest.values())
    errors: dict[tuple[str, str], list[str]] = defaultdict(list)
    for uri, r in latest.items():
        if r["status"] == "error":
            errors[(r["error_stage"] or "", r["error"] or "")].append(uri)
    with_faces = sorted(uri for uri, r in latest.items() if r["status"] == "ok")
    coverage: dict[str, Any] = {"checked": False}
    if input_spec:
        try:
            inputs = list_inputs(input_spec, exclude=output, opts=opts)
            missing = sorted(set(inputs) - set(latest))
            coverage = {
                "checked": True,
                "input": input_spec,
                "inputs": len(set(inputs)),
                "covered": len(set(inputs)) - len(missing),
                "missing": missing,
            }
        except InputError as exc:
            coverage = {"checked": False, "input": input_spec, "reason": str(exc)}
    return {
        "output": output,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": len(rows),
        "images": len(latest),
        "latest_status": {s: status.get(s, 0) for s in ("ok", "no_faces", "error")},
        "faces": sum(r["num_faces"] or 0 for r in latest.values()),
        "runs": _run_summaries(rows),
        "errors": [
            {"stage": stage, "reason": reason, "count": len(uris), "inputs": sorted(uris)}
            for (stage, reason), uris in sorted(errors.items(), key=lambda kv: -len(kv[1]))
        ],
        "images_with_faces": with_faces,
        "coverage": coverage,
    }


def _coverage_line(rep: dict[str, Any]) -> str:
    cov = rep["coverage"]
    if not cov["checked"]:
        why = cov.get("reason", "no --input given and no run.json names one")
        return f"coverage not checked: {why}"
    if cov["missing"]:
        return f"coverage: {len(cov['missing'])} of {cov['inputs']} inputs have NO audit record"
    return f"coverage: all {cov['inputs']} inputs have an audit record"


def to_text(rep: dict[str, Any], limit: int = 10) -> str:
    s = rep["latest_status"]
    lines = [
        f"blurbeam report for {rep['output']}",
        f"{rep['images']} images in {rep['records']} audit records from {len(rep['runs'])} runs; "
        f"latest status: {s['ok']} with faces, {s['no_faces']} without, {s['error']} errors; "
        f"{rep['faces']} faces",
        "runs:",
    ]
    for r in rep["runs"]:
        lines.append(
            f"  {r['run_id']}  {r['started'] or '?'}  {r['images']} images "
            f"(ok {r['ok']}, no_faces {r['no_faces']}, error {r['error']}), {r['faces']} faces, "
            f"detector {r['detector']}, method {r['method']}, config {r['config_hash']}"
        )
    if rep["errors"]:
        lines.append("errors (latest record of each input):")
        for e in rep["errors"][:limit]:
            lines.append(f"  x{e['count']} [{e['stage']}] {e['reason']}  e.g. {e['inputs'][0]}")
    lines.append(_coverage_line(rep))
    for uri in rep["coverage"].get("missing", [])[:limit]:
        lines.append(f"  missing: {uri}")
    return "\n".join(lines)


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(rep: dict[str, Any]) -> str:
    s = rep["latest_status"]
    out = [
        f"# blurbeam report: `{rep['output']}`",
        "",
        f"Generated {rep['generated_at']}. {rep['images']} images, {rep['records']} audit "
        f"records, {len(rep['runs'])} runs. Latest status: {s['ok']} with faces, "
        f"{s['no_faces']} without, {s['error']} errors; {rep['faces']} faces.",
        "",
        "## Runs",
        "",
        "| run | started | images | ok | no_faces | error | faces | detector | method | config |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in rep["runs"]:
        out.append(
            "| "
            + " | ".join(
                _md_cell(v)
                for v in (
                    r["run_id"],
                    r["started"],
                    r["images"],
                    r["ok"],
                    r["no_faces"],
                    r["error"],
                    r["faces"],
                    f"{r['detector']} {r['detector_params']}",
                    f"{r['method']} {r['method_params']}",
                    r["config_hash"],
                )
            )
            + " |"
        )
    out += ["", "## Errors", ""]
    if rep["errors"]:
        out += ["| count | stage | reason | inputs |", "| ---: | --- | --- | --- |"]
        for e in rep["errors"]:
            out.append(
                f"| {e['count']} | {_md_cell(e['stage'])} | {_md_cell(e['reason'])} | "
                + "<br>".join(_md_cell(u) for u in e["inputs"])
                + " |"
            )
    else:
        out.append("None.")
    out += ["", "## Coverage", "", _coverage_line(rep) + "."]
    missing = rep["coverage"].get("missing", [])
    if missing:
        out += [""] + [f"- `{u}`" for u in missing]
    out += ["", f"## Images with faces ({len(rep['images_with_faces'])})", ""]
    out += [f"- `{u}`" for u in rep["images_with_faces"]] or ["None."]
    return "\n".join(out) + "\n"


def write_report(rep: dict[str, Any], directory: str) -> tuple[str, str]:
    """``report.json`` and ``report.md`` under ``directory`` (any fsspec URL)."""
    from blurbeam.shards import write_bytes

    json_uri = join_output(directory, "report.json")
    md_uri = join_output(directory, "report.md")
    write_bytes(json_uri, json.dumps(rep, indent=2).encode())
    write_bytes(md_uri, to_markdown(rep).encode())
    return json_uri, md_uri

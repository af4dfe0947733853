"""The compliance view of an output directory: every audit record of every run. Pure code.

``done_index`` tells ``--skip-existing`` which images already succeeded under a config;
``build_report`` gives the per-run totals, the errors with their reasons, the images with faces,
the detector and method of each run, and every input that has no audit record at all (the proof
that nothing was skipped, across runs); ``to_text`` and ``to_markdown`` render it.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from blurbeam.schemas import layout
from blurbeam.schemas.attestation import INDEX_COLUMNS
from blurbeam.schemas.audit import AUDIT_SCHEMA, STATUSES, SUCCESS
from blurbeam.shards import (
    InputError,
    ShardOptions,
    ShardRef,
    expand_input,
    file_sha256,
    get_format,
    kind_of,
    member_uri,
    read_records,
    sha256,
)


def audit_files(output: str, run_id: str | None = None) -> list[str]:
    """The audit Parquet files of ``run_id`` under ``output`` (every run's by default), as URIs."""
    fs, path = fsspec.core.url_to_fs(output)
    files = sorted(fs.glob(layout.audit_glob(path, run_id)))
    return [f if "://" not in output else fs.unstrip_protocol(f) for f in files]


def load_audit(
    output: str, columns: list[str] | None = None, run_id: str | None = None
) -> pa.Table:
    """The audit records of ``run_id`` under ``output`` (every run's by default); an empty
    table when there are none."""
    schema = (
        AUDIT_SCHEMA if columns is None else pa.schema([AUDIT_SCHEMA.field(c) for c in columns])
    )
    tables = []
    for uri in audit_files(output, run_id):
        fs, path = fsspec.core.url_to_fs(uri)
        with fs.open(path, "rb") as fh:
            tables.append(pq.read_table(fh, columns=columns, schema=AUDIT_SCHEMA))
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


def output_file(record: dict[str, Any]) -> str | None:
    """The file an audit record's output lives in: the output shard for a container member."""
    uri = record.get("output_uri")
    if not uri:
        return None
    key = record.get("key") or ""
    return uri[: -len(key) - 1] if key and uri.endswith("#" + key) else uri


def _intact(records: list[dict[str, Any]]) -> bool:
    """Whether every written output of ``records`` (one shard's) still holds the bytes its
    record names: a plain file hashed whole, a container shard read by its format."""
    written = [r for r in records if r["output_uri"]]
    if not written:
        return True
    path = output_file(written[0])
    try:
        fs, local = fsspec.core.url_to_fs(path)
        if all(r["key"] == "" for r in written):
            return sha256(fs.cat_file(local)) == written[0]["output_sha256"]
        ref = ShardRef(kind_of(path), path, posixpath.basename(local))
        found = {rec.key: sha256(rec.data) for rec in read_records(ref) if rec.data is not None}
        return all(found.get(r["key"]) == r["output_sha256"] for r in written)
    except Exception:  # gone, unreadable or corrupt: redo it
        return False


class DoneIndex:
    """What ``--skip-existing`` needs to know about earlier runs under one config: for each
    shard (a plain file is a shard of one), the records of the latest run that processed it."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        latest: dict[str, tuple[Any, str]] = {}
        for r in rows:
            when = (r["processed_at"] or datetime.min.replace(tzinfo=UTC), r["run_id"])
            if r["shard_uri"] not in latest or when > latest[r["shard_uri"]]:
                latest[r["shard_uri"]] = when
        self.shards: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            if latest[r["shard_uri"]][1] == r["run_id"]:
                self.shards[r["shard_uri"]].append(r)

    def is_done(self, shard_uri: str, shard_sha256: str, retry_errors: bool = False) -> bool:
        """Whether the shard needs no processing: its bytes are those the records were made
        from, every record is terminal (``ok``, ``no_faces``, ``skipped``; an error unless
        ``retry_errors`` or it happened while writing), and its outputs are intact."""
        records = self.shards.get(shard_uri)
        if not records:
            return False
        for r in records:
            sha = r["shard_sha256"] or (r["source_sha256"] if r["key"] == "" else None)
            if sha != shard_sha256:
                return False
            if r["status"] == "error" and (retry_errors or r["error_stage"] == "write"):
                return False
            if r["status"] not in SUCCESS and r["status"] != "error":
                return False
        return _intact([r for r in records if r["status"] in ("ok", "no_faces")])


def history_index_rows(output: str) -> list[dict[str, Any]]:
    """Done-index rows built from the whole audit history under ``output`` (for an output
    that has no ``index/done.parquet`` yet): the records of the latest run per shard and
    config."""
    table = load_audit(output, list(INDEX_COLUMNS))
    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in table.to_pylist():
        by_config[r["config_hash"]].append(r)
    rows = []
    for config_rows in by_config.values():
        for shard_rows in DoneIndex(config_rows).shards.values():
            rows += shard_rows
    return rows


def load_done_index(output: str, config_hash: str, run_id: str = "") -> DoneIndex:
    """The ``DoneIndex`` of the runs under ``output`` other than ``run_id``, under
    ``config_hash``: from ``index/done.parquet`` (one small file kept by every run) when it is
    the one the newest attestation names, else from the whole audit history."""
    from blurbeam.attest import trusted_index

    rows = trusted_index(output)
    if rows is None:
        rows = history_index_rows(output)
    return DoneIndex([r for r in rows if r["config_hash"] == config_hash and r["run_id"] != run_id])


def unaccounted_outputs(output: str, since: float | None = None) -> list[str]:
    """Files under ``output`` that no audit record names as its output (nor are the run's own
    records and reports), modified at or after ``since`` (a Unix time) when given."""
    fs, root = fsspec.core.url_to_fs(output)
    root = root.rstrip("/")
    if not fs.exists(root):
        return []
    table = load_audit(output, ["output_uri", "key"])
    accounted = {fsspec.core.url_to_fs(f)[1] for f in map(output_file, table.to_pylist()) if f}
    out = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        rel = posixpath.relpath(path, root)
        if rel.startswith(layout.OWN_FILES) or rel in layout.OWN_FILES or path in accounted:
            continue
        if posixpath.basename(path).startswith("."):  # write_bytes' temporary files
            continue
        if since is not None:
            mtime = info.get("mtime") or info.get("created") or info.get("LastModified")
            if isinstance(mtime, datetime):
                mtime = mtime.timestamp()
            if not isinstance(mtime, int | float) or mtime < since - 1:
                continue  # older than the run, or of unknown age: not the run's to remove
        out.append(path if "://" not in output else fs.unstrip_protocol(path))
    return out


def remove_unaccounted_outputs(output: str, since: float | None = None) -> list[str]:
    """Remove ``unaccounted_outputs`` (anonymized copies that a failed run wrote before it
    could record them) and return them."""
    removed = unaccounted_outputs(output, since)
    for uri in removed:
        fs, path = fsspec.core.url_to_fs(uri)
        fs.rm_file(path)
    return removed


def list_inputs(
    spec: str, exclude: str | None = None, opts: ShardOptions | None = None
) -> list[tuple[str, str]]:
    """``(source URI, shard URI)`` of every input the input spec holds (every file, and each
    image inside a container shard), as the pipeline names them. A shard that cannot be listed
    stands for itself (the pipeline gives it one error record too)."""
    opts = opts or ShardOptions()
    uris = []
    for ref in expand_input(spec, exclude=exclude, every_file=True):
        try:
            keys = get_format(ref.kind).keys(ref, opts)
        except Exception:
            keys = [""]
        uris += [(ref.uri if key == "" else member_uri(ref.uri, key), ref.uri) for key in keys]
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
                "skipped": status["skipped"],
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


#: Coverage statuses that leave an input uncovered.
UNCOVERED = ("missing", "old_config", "changed")


def _coverage(
    rows: list[dict[str, Any]],
    input_spec: str,
    output: str,
    opts: ShardOptions | None,
    config_hash: str | None,
    rehash: bool,
) -> dict[str, Any]:
    """Each current input's status: its latest record's under ``config_hash`` (the newest
    attestation's config), else ``old_config`` (records under other configs only) or
    ``missing`` (no record); with ``rehash``, ``changed`` when its shard's bytes are no longer
    those the record was made from."""
    latest: dict[str, dict[str, Any]] = {}
    current: dict[str, dict[str, Any]] = {}
    for r in rows:  # sorted by time: the last one wins
        latest[r["source_uri"]] = r
        if config_hash is None or r["config_hash"] == config_hash:
            current[r["source_uri"]] = r
    inputs = sorted(set(list_inputs(input_spec, exclude=output, opts=opts)))
    shard_sha = {shard: file_sha256(shard) for _, shard in inputs} if rehash else {}
    files = []
    for uri, shard in inputs:
        r = current.get(uri)
        if r is None:
            old = latest.get(uri)
            status, reason = (
                ("missing", "no audit record")
                if old is None
                else ("old_config", f"processed only under config {old['config_hash']}")
            )
        elif rehash and (r["shard_sha256"] or r["source_sha256"]) != shard_sha.get(shard):
            status, reason = "changed", "the input's bytes changed after its record was made"
        else:
            status, reason = r["status"], r["error"] or r.get("skip_reason") or ""
        files.append({"input": uri, "status": status, "reason": reason})
    uncovered = [f["input"] for f in files if f["status"] in UNCOVERED]
    return {
        "checked": True,
        "input": input_spec,
        "config_hash": config_hash,
        "rehashed": rehash,
        "inputs": len(files),
        "covered": len(files) - len(uncovered),
        "by_status": dict(Counter(f["status"] for f in files)),
        "missing": [f["input"] for f in files if f["status"] == "missing"],
        "uncovered": uncovered,
        "files": files,
    }


def build_report(
    output: str,
    input_spec: str | None = None,
    opts: ShardOptions | None = None,
    config_hash: str | None = None,
    rehash: bool = False,
) -> dict[str, Any]:
    """The report of every run under ``output``. With ``input_spec``, every current input is
    checked for a record under ``config_hash`` (default: any config) and listed with its
    status; ``rehash`` also hashes every input to find the ones changed since their record."""
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
            coverage = _coverage(rows, input_spec, output, opts, config_hash, rehash)
        except InputError as exc:
            coverage = {"checked": False, "input": input_spec, "reason": str(exc)}
    return {
        "output": output,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": len(rows),
        "images": len(latest),
        "latest_status": {s: status.get(s, 0) for s in STATUSES},
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
    counts = ", ".join(f"{s} {n}" for s, n in sorted(cov.get("by_status", {}).items()))
    under = f" under config {cov['config_hash']}" if cov.get("config_hash") else ""
    if cov["uncovered"]:
        return (
            f"coverage: {len(cov['uncovered'])} of {cov['inputs']} inputs are NOT covered"
            f"{under} ({counts})"
        )
    return f"coverage: all {cov['inputs']} inputs have an audit record{under} ({counts})"


def _n(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def to_text(rep: dict[str, Any], limit: int = 10) -> str:
    s = rep["latest_status"]
    lines = [
        f"blurbeam report for {rep['output']}",
        f"{_n(rep['images'], 'input')} in {_n(rep['records'], 'audit record')} from "
        f"{_n(len(rep['runs']), 'run')}; "
        f"latest status: {s['ok']} with faces, {s['no_faces']} without, {_n(s['error'], 'error')}, "
        f"{s['skipped']} skipped; {_n(rep['faces'], 'face')}",
        "runs:",
    ]
    for r in rep["runs"]:
        lines.append(
            f"  {r['run_id']}  {r['started'] or '?'}  {_n(r['images'], 'input')} "
            f"(ok {r['ok']}, no_faces {r['no_faces']}, error {r['error']}, skipped {r['skipped']}), "
            f"{_n(r['faces'], 'face')}, "
            f"detector {r['detector']}, method {r['method']}, config {r['config_hash']}"
        )
    if rep["errors"]:
        lines.append("errors (latest record of each input):")
        for e in rep["errors"][:limit]:
            lines.append(f"  x{e['count']} [{e['stage']}] {e['reason']}  e.g. {e['inputs'][0]}")
    lines.append(_coverage_line(rep))
    if "verify" in rep:
        v = rep["verify"]
        lines.append(
            f"attestations: {_n(len(v['runs']), 'chained run')}, head {v['head']} "
            f"sha256 {v['head_sha256']}: "
            + ("verified" if not v["problems"] else f"{len(v['problems'])} PROBLEMS")
        )
        lines += [f"  problem: {p}" for p in v["problems"][:limit]]
    status = {f["input"]: f["status"] for f in rep["coverage"].get("files", [])}
    for uri in rep["coverage"].get("uncovered", [])[:limit]:
        lines.append(f"  {status[uri]}: {uri}")
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
        "| run | started | inputs | ok | no_faces | error | skipped | faces | detector | method | config |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
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
                    r["skipped"],
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
    files = rep["coverage"].get("files", [])
    if files:
        out += ["", "| input | status | reason |", "| --- | --- | --- |"]
        out += [
            f"| `{_md_cell(f['input'])}` | {f['status']} | {_md_cell(f['reason'])} |" for f in files
        ]
    out += ["", f"## Images with faces ({len(rep['images_with_faces'])})", ""]
    out += [f"- `{u}`" for u in rep["images_with_faces"]] or ["None."]
    return "\n".join(out) + "\n"


def write_report(rep: dict[str, Any], directory: str) -> tuple[str, str]:
    """``report.json`` and ``report.md`` under ``directory`` (any fsspec URL)."""
    from blurbeam.shards import write_bytes

    json_uri, md_uri = layout.report_files(directory)
    write_bytes(json_uri, json.dumps(rep, indent=2).encode())
    write_bytes(md_uri, to_markdown(rep).encode())
    return json_uri, md_uri

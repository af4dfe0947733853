"""The compliance record of an output: run attestations in a hash chain, input manifests and the
done index (``schemas/attestation.py``). Pure code: no Beam.

``finalize_run`` is what the pipeline's last step calls once every audit file of the run is
written; ``verify`` is ``blurbeam report --verify``: it walks the chain and checks every file the
attestations name. What the chain proves: no attestation was edited or removed except possibly
the newest one (nothing after it names its hash: keep the ``head`` sha256 that ``verify`` prints
somewhere else, e.g. the scheduler's log, to anchor it), and no audit file was edited, removed or
added after its run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from blurbeam import __version__
from blurbeam.schemas import layout
from blurbeam.schemas.attestation import (
    ATTESTATION_VERSION,
    INDEX_COLUMNS,
    INDEX_SCHEMA,
    MANIFEST_SCHEMA,
    validate_attestation,
)
from blurbeam.schemas.audit import AUDIT_SCHEMA
from blurbeam.shards import is_local, write_bytes


class ErrorRateExceeded(RuntimeError):
    """The run's error rate is above its --max-error-rate (raised after the attestation)."""


class AttestationExists(RuntimeError):
    """A run id was used before: its attestation is never overwritten."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cat(uri: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.cat_file(path)


def attestation_uri(output: str, run_id: str) -> str:
    return layout.attestation(output, run_id)


def write_once(uri: str, data: bytes) -> None:
    """Publish ``data`` at ``uri`` unless something is there already (then AttestationExists,
    unless it holds exactly ``data``: a retried step). Local files are published with a hard
    link, which fails atomically when the name exists."""
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            with open(path, "rb") as fh:
                same = fh.read() == data
            if not same:
                raise AttestationExists(f"{uri} exists: run ids are never reused") from None
        finally:
            os.unlink(tmp)
        return
    if fs.exists(path):
        if fs.cat_file(path) != data:
            raise AttestationExists(f"{uri} exists: run ids are never reused")
        return
    fs.pipe_file(path, data)


def run_id_used(output: str, run_id: str) -> bool:
    """Whether ``output`` already holds an attestation or audit files of ``run_id``."""
    fs, root = fsspec.core.url_to_fs(output)
    root = root.rstrip("/")
    return fs.exists(layout.attestation(root, run_id)) or bool(
        fs.glob(layout.audit_glob(root, run_id))
    )


def load_attestations(output: str) -> dict[str, tuple[dict[str, Any], str]]:
    """``run_id -> (attestation, sha256 of its file)`` of every attestation under ``output``."""
    fs, root = fsspec.core.url_to_fs(output)
    out = {}
    for path in sorted(fs.glob(layout.attestation_glob(root))):
        data = fs.cat_file(path)
        try:
            doc = json.loads(data)
        except ValueError:
            doc = {"run_id": posixpath.basename(path)[: -len(".json")], "unreadable": True}
        out[doc.get("run_id") or posixpath.basename(path)] = (doc, sha256_bytes(data))
    return out


def chain(attestations: dict[str, tuple[dict[str, Any], str]]) -> list[str]:
    """Run ids from the first attestation to the head, following ``previous_run_id``; the head
    is the newest attestation that no other names as its previous one."""
    named = {doc.get("previous_run_id") for doc, _ in attestations.values()}
    heads = [r for r in attestations if r not in named]
    if not heads:
        return []
    head = max(heads, key=lambda r: (attestations[r][0].get("created_at") or "", r))
    order, seen = [], set()
    while head in attestations and head not in seen:
        seen.add(head)
        order.append(head)
        head = attestations[head][0].get("previous_run_id")
    return order[::-1]


def head(output: str) -> tuple[dict[str, Any], str] | None:
    """The newest attestation of the chain and its sha256, or None."""
    atts = load_attestations(output)
    order = chain(atts)
    return atts[order[-1]] if order else None


def _table_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def index_row(record: dict[str, Any]) -> dict[str, Any]:
    """The done-index row of an audit record."""
    return {c: record.get(c) for c in INDEX_COLUMNS}


def trusted_index(output: str) -> list[dict[str, Any]] | None:
    """The done index, only when it is byte for byte the one the newest attestation names
    (else None: an edited index, or one left by a run that did not finish, is not trusted)."""
    newest = head(output)
    if newest is None:
        return None
    fs, path = fsspec.core.url_to_fs(layout.done_index(output))
    if not fs.exists(path):
        return None
    data = fs.cat_file(path)
    if sha256_bytes(data) != newest[0].get("index_sha256"):
        return None
    return pq.read_table(io.BytesIO(data), schema=INDEX_SCHEMA).to_pylist()


def attested_corrections(output: str) -> dict[str, bytes]:
    """``run_id -> bytes`` of each kept corrections file that an attestation on the chain names
    with its sha256; any other file under ``corrections/`` (a run that did not finish, or one
    put there by hand) is left out."""
    atts = load_attestations(output)
    fs, root = fsspec.core.url_to_fs(output)
    out = {}
    for run_id in chain(atts):
        digest = atts[run_id][0].get("corrections_sha256")
        path = layout.corrections(root, run_id)
        if digest and fs.exists(path):
            data = fs.cat_file(path)
            if sha256_bytes(data) == digest:
                out[run_id] = data
    return out


def merge_index(old: Iterable[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with every (shard, config) that ``new`` has records for replaced by them."""
    replaced = {(r["shard_uri"], r["config_hash"]) for r in new}
    rows = [r for r in old if (r["shard_uri"], r["config_hash"]) not in replaced] + list(new)
    return sorted(rows, key=lambda r: (r["shard_uri"], r["config_hash"], r["key"] or ""))


def finalize_run(
    output: str,
    run_id: str,
    input_spec: str,
    config: dict[str, Any],
    config_hash: str,
    records: list[dict[str, Any]],
    already_done: list[dict[str, Any]],
    audit_files: list[str],
    max_error_rate: float,
    base_index: Iterable[dict[str, Any]] = (),
    corrections: bytes | None = None,
) -> dict[str, Any]:
    """Write the run's manifest, the updated done index and the run's attestation, chained to
    the current head; return the attestation. ``records`` are this run's index rows, and
    ``already_done`` the index rows of the inputs ``--skip-existing`` found done; ``base_index``
    the index rows this run's update to (``trusted_index``, else rebuilt from the audit
    history); ``corrections`` the reviewer corrections a corrections run keeps under
    ``corrections/<run_id>.json`` (named in the attestation by sha256). Raises ErrorRateExceeded
    after writing when the run's error rate is above ``max_error_rate``."""
    previous = head(output)
    manifest = sorted(
        (
            {"input": r["source_uri"], "shard_uri": r["shard_uri"],
             "source_sha256": r["source_sha256"], "shard_sha256": r["shard_sha256"],
             "status": r["status"], "run_id": r["run_id"]}
            for r in [*records, *already_done]
        ),
        key=lambda m: m["input"],
    )  # fmt: skip
    manifest_name = f"{run_id}.manifest.parquet"
    manifest_bytes = _table_bytes(manifest, MANIFEST_SCHEMA)
    write_once(layout.manifest(output, manifest_name), manifest_bytes)

    if corrections is not None:
        write_once(layout.corrections(output, run_id), corrections)
    index_bytes = _table_bytes(merge_index(base_index, records), INDEX_SCHEMA)
    write_bytes(layout.done_index(output), index_bytes)

    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    attempted = len(records) - counts.get("skipped", 0)
    error_rate = counts.get("error", 0) / attempted if attempted else 0.0
    audit = {posixpath.basename(u): sha256_bytes(_cat(u)) for u in sorted(audit_files)}
    doc = {
        "attestation_version": ATTESTATION_VERSION,
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "package_version": __version__,
        "input": input_spec,
        "output": output,
        "config_hash": config_hash,
        "config": config,
        "models": config.get("models", {}),
        "counts": dict(sorted(counts.items())),
        "inputs_listed": len(manifest),
        "inputs_already_done": len(already_done),
        "error_rate": error_rate,
        "max_error_rate": max_error_rate,
        "manifest": manifest_name,
        "manifest_sha256": sha256_bytes(manifest_bytes),
        "audit_files": audit,
        "index_sha256": sha256_bytes(index_bytes),
        "corrections_sha256": sha256_bytes(corrections) if corrections is not None else None,
        "previous_run_id": previous[0]["run_id"] if previous else None,
        "previous_sha256": previous[1] if previous else None,
    }
    validate_attestation(doc)
    write_once(attestation_uri(output, run_id), json.dumps(doc, indent=2).encode())
    if error_rate > max_error_rate:
        raise ErrorRateExceeded(
            f"error rate {error_rate:.3f} ({counts.get('error', 0)} of {attempted} images) "
            f"exceeds max_error_rate {max_error_rate:g}; the attestation "
            f"{layout.attestation('', run_id)} and the audit under "
            f"{layout.under(output, layout.AUDIT_DIR)} say why"
        )
    return doc


def _check_video_faces(
    fs: Any, root: str, run_id: str, audit_bytes: bytes, named: set[str]
) -> list[str]:
    """Check the per-frame face file of every video record in one audit file against the
    sha256 the record holds (the file is found under ``root`` by the record's run and source,
    wherever the output was moved); add each file's path to ``named``."""
    columns = ["run_id", "source_uri", "video"]
    schema = pa.schema([AUDIT_SCHEMA.field(c) for c in columns])
    rows = pq.read_table(io.BytesIO(audit_bytes), columns=columns, schema=schema).to_pylist()
    problems = []
    for row in rows:
        video = row["video"]
        if not video or not video.get("frame_faces_uri"):
            continue  # an image, or a video that failed
        path = layout.video_faces(root, row["run_id"], row["source_uri"])
        named.add(path)
        if not video.get("frame_faces_sha256"):
            continue  # a record from before the field existed: nothing to check against
        rel = posixpath.relpath(path, root)
        if not fs.exists(path):
            problems.append(f"{rel}, the per-frame faces of a video of run {run_id}, is missing")
        elif sha256_bytes(fs.cat_file(path)) != video["frame_faces_sha256"]:
            problems.append(f"{rel}, the per-frame faces of a video of run {run_id}, was changed")
    return problems


def verify(output: str) -> tuple[list[str], dict[str, Any]]:
    """Check the chain of attestations under ``output`` and every file they name. Returns the
    problems (empty: verified) and a summary (runs in chain order, head sha256)."""
    problems: list[str] = []
    atts = load_attestations(output)
    order = chain(atts)
    summary: dict[str, Any] = {"runs": order, "head": None, "head_sha256": None}
    if not atts:
        return ["no attestation under runs/: nothing proves what ran"], summary
    summary["head"], summary["head_sha256"] = order[-1], atts[order[-1]][1]
    for run_id in sorted(set(atts) - set(order)):
        problems.append(f"attestation {run_id} is not on the chain that ends at {order[-1]}")
    fs, root = fsspec.core.url_to_fs(output)
    root = root.rstrip("/")
    named_audit: set[str] = set()
    named_faces: set[str] = set()  # the per-frame face files the audit records name, as paths
    for i, run_id in enumerate(order):
        doc, _ = atts[run_id]
        if doc.get("unreadable"):
            problems.append(f"attestation {run_id} is not valid JSON")
            continue
        try:
            validate_attestation(doc)
        except ValueError as exc:
            problems.append(f"attestation {run_id}: {exc}")
            continue
        expected_prev = order[i - 1] if i else None
        if doc["previous_run_id"] != expected_prev:
            problems.append(f"attestation {run_id} names {doc['previous_run_id']} before it")
        if i:
            if doc["previous_sha256"] != atts[order[i - 1]][1]:
                problems.append(
                    f"attestation {order[i - 1]} was changed after {run_id} chained to it"
                )
        elif doc["previous_sha256"] is not None or doc["previous_run_id"] is not None:
            problems.append(
                f"the first attestation {run_id} names a previous run "
                f"{doc['previous_run_id']}: an earlier attestation was removed"
            )
        for name, sha in doc["audit_files"].items():
            named_audit.add(name)
            path = layout.under(root, f"{layout.AUDIT_DIR}/{name}")
            if not fs.exists(path):
                problems.append(f"audit file {name} of run {run_id} is missing")
                continue
            data = fs.cat_file(path)
            if sha256_bytes(data) != sha:
                problems.append(f"audit file {name} of run {run_id} was changed")
            else:
                problems += _check_video_faces(fs, root, run_id, data, named_faces)
        for path in sorted(fs.glob(layout.video_faces_glob(root, run_id))):
            if path.rstrip("/") not in named_faces:
                problems.append(
                    f"{posixpath.relpath(path, root)} is named by no audit record of run {run_id}"
                )
        if doc["corrections_sha256"] is not None:
            cpath = layout.corrections(root, run_id)
            if not fs.exists(cpath):
                problems.append(f"corrections of run {run_id} are missing")
            elif sha256_bytes(fs.cat_file(cpath)) != doc["corrections_sha256"]:
                problems.append(f"corrections of run {run_id} were changed")
        mpath = layout.manifest(root, doc["manifest"])
        if not fs.exists(mpath):
            problems.append(f"manifest of run {run_id} is missing")
        elif sha256_bytes(fs.cat_file(mpath)) != doc["manifest_sha256"]:
            problems.append(f"manifest of run {run_id} was changed")
    attested = {r for r in order if atts[r][0].get("corrections_sha256")}
    for path in sorted(fs.glob(layout.corrections_glob(root))):
        if posixpath.basename(path)[: -len(".json")] not in attested:
            problems.append(
                f"{layout.CORRECTIONS_DIR}/{posixpath.basename(path)} is named by no attestation "
                "(later runs ignore it)"
            )
    for path in sorted(fs.glob(layout.audit_glob(root))):
        name = posixpath.basename(path)
        if name not in named_audit:
            problems.append(
                f"audit file {name} is named by no attestation (a run that did not finish, or "
                "a file added afterwards)"
            )
    head_doc = atts[order[-1]][0]
    ipath = layout.done_index(root)
    if not fs.exists(ipath):
        problems.append(f"{layout.INDEX_FILE} is missing")
    elif sha256_bytes(fs.cat_file(ipath)) != head_doc.get("index_sha256"):
        problems.append(
            f"{layout.INDEX_FILE} differs from what the newest run left (edited, or a later "
            "run did not finish)"
        )
    return problems, summary

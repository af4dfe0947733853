"""The run attestation, its input manifest and the done index: the one source of truth for their
fields. ``schemas/AUDIT.md`` documents them.

Every anonymize run writes, from inside the pipeline, after its audit files:

- ``OUTPUT/runs/<run_id>.json``: the attestation (``ATTESTATION_FIELDS``), written once and never
  overwritten; ``previous_sha256`` is the sha256 of the attestation before it, so the runs form a
  hash chain that ``blurbeam report --verify`` checks;
- ``OUTPUT/runs/<run_id>.manifest.parquet`` (``MANIFEST_SCHEMA``): one row per input the run
  listed, processed or found already done, with the sha256 it had;
- ``OUTPUT/index/done.parquet`` (``INDEX_SCHEMA``): for each shard and config, the records of the
  latest run that processed it; ``--skip-existing`` reads this instead of the whole audit history.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

ATTESTATION_VERSION = 1

#: field -> what it holds
ATTESTATION_FIELDS: dict[str, str] = {
    "attestation_version": "format version of this file",
    "run_id": "the run",
    "created_at": "when the pipeline wrote it (UTC, ISO 8601)",
    "package_version": "blurbeam version that ran",
    "input": "the --input spec",
    "output": "the output location (canonical)",
    "config_hash": "hash of every setting that decides the output, package version and models",
    "config": "those settings",
    "models": "sha256 of each model the run was planned with",
    "counts": "records this run wrote, per status",
    "inputs_listed": "inputs in the manifest (processed now or already done)",
    "inputs_already_done": "inputs skipped by --skip-existing as done under this config",
    "error_rate": "errors / inputs this run processed that are not skipped files",
    "max_error_rate": "the run's --max-error-rate",
    "manifest": "file name of the manifest, under runs/",
    "manifest_sha256": "sha256 of the manifest file",
    "audit_files": "each audit file this run wrote (name under audit/) -> its sha256",
    "index_sha256": "sha256 of index/done.parquet as this run left it",
    "corrections_sha256": "sha256 of corrections/<run_id>.json a corrections run kept (else null)",
    "previous_run_id": "the attestation before this one (null for the first)",
    "previous_sha256": "sha256 of that attestation's file (null for the first)",
}

MANIFEST_SCHEMA = pa.schema(
    [
        ("input", pa.string()),  # source_uri
        ("shard_uri", pa.string()),
        ("source_sha256", pa.string()),
        ("shard_sha256", pa.string()),
        ("status", pa.string()),
        ("run_id", pa.string()),  # the run whose record covers it
    ]
)

INDEX_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source_uri", pa.string()),
        ("shard_uri", pa.string()),
        ("key", pa.string()),
        ("source_sha256", pa.string()),
        ("shard_sha256", pa.string()),
        ("status", pa.string()),
        ("error_stage", pa.string()),
        ("output_uri", pa.string()),
        ("output_sha256", pa.string()),
        ("config_hash", pa.string()),
        ("processed_at", pa.timestamp("us", tz="UTC")),
    ]
)

INDEX_COLUMNS = tuple(INDEX_SCHEMA.names)


def validate_attestation(doc: dict[str, Any]) -> None:
    """Raise ValueError unless ``doc`` has exactly the attestation's fields."""
    missing = set(ATTESTATION_FIELDS) - set(doc)
    extra = set(doc) - set(ATTESTATION_FIELDS)
    if missing or extra:
        raise ValueError(
            f"attestation fields differ: missing={sorted(missing)} extra={sorted(extra)}"
        )

"""Where blurbeam keeps its own files under an output: every reader and writer builds these
paths here.

``root`` is the output as given (a local path or an fsspec URL) or its path on a filesystem
(what ``fsspec.core.url_to_fs`` returns); the result is the same kind. Anonymized copies keep
their input's relative paths beside these::

    OUTPUT/
      audit/run-<run_id>-KKKKK-of-NNNNN.parquet   audit records (schemas/audit.py)
      run.json                                     the latest run's summary (the launcher)
      runs/<run_id>.json                           attestation (schemas/attestation.py)
      runs/<manifest name>                         the run's input manifest
      index/done.parquet                           the done index (--skip-existing)
      corrections/<run_id>.json                    reviewer corrections a run applied
      review/                                      the review site (blurbeam review)
      report.json, report.md                       blurbeam report --write
      records/run-<run_id>-KKKKK-of-NNNNN.parquet  deblur records (schemas/deblur.py)
      video-faces/run-<run_id>/<id>.parquet         per-frame face records of one video
                                                   (schemas/video.py; <id> from its source URI)
"""

from __future__ import annotations

import hashlib

AUDIT_DIR = "audit"
RUNS_DIR = "runs"
INDEX_DIR = "index"
CORRECTIONS_DIR = "corrections"
REVIEW_DIR = "review"
DEBLUR_RECORDS_DIR = "records"
VIDEO_FACES_DIR = "video-faces"
RUN_SUMMARY = "run.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
INDEX_FILE = f"{INDEX_DIR}/done.parquet"

#: What under an anonymize output is blurbeam's own record, not anonymized data.
OWN_FILES = (
    f"{AUDIT_DIR}/", f"{RUNS_DIR}/", f"{INDEX_DIR}/", f"{CORRECTIONS_DIR}/", f"{REVIEW_DIR}/",
    f"{VIDEO_FACES_DIR}/", RUN_SUMMARY, REPORT_JSON, REPORT_MD,
)  # fmt: skip


def under(root: str, rel: str) -> str:
    """``rel`` (a fixed name of this module, ``/``-separated) under ``root``; ``rel`` itself
    when ``root`` is empty (a path relative to the output, for messages)."""
    return f"{root.rstrip('/')}/{rel}" if root else rel


def part_files(prefix: str, shard: int, num_shards: int) -> str:
    """Part file ``shard`` of ``num_shards`` of a record set written under ``prefix``."""
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}.parquet"


def audit_prefix(root: str, run_id: str) -> str:
    """The prefix of one run's audit part files (``part_files`` completes it)."""
    return under(root, f"{AUDIT_DIR}/run-{run_id}")


def audit_glob(root: str, run_id: str | None = None) -> str:
    """Glob of the audit part files of ``run_id``; without it, of every run (any
    ``run-*.parquet``, also files named before the part numbering)."""
    if run_id is None:
        return under(root, f"{AUDIT_DIR}/run-*.parquet")
    return f"{audit_prefix(root, run_id)}-*.parquet"


def deblur_records_prefix(root: str, run_id: str) -> str:
    return under(root, f"{DEBLUR_RECORDS_DIR}/run-{run_id}")


def deblur_records_glob(root: str, run_id: str) -> str:
    return f"{deblur_records_prefix(root, run_id)}-*.parquet"


def video_faces(root: str, run_id: str, source_uri: str) -> str:
    """The per-frame face records of the video ``source_uri`` in run ``run_id`` (one file per
    video, named by the sha256 of its URI, so a retried step rewrites the same file)."""
    name = hashlib.sha256(source_uri.encode()).hexdigest()[:32]
    return under(root, f"{VIDEO_FACES_DIR}/run-{run_id}/{name}.parquet")


def video_faces_glob(root: str, run_id: str) -> str:
    return under(root, f"{VIDEO_FACES_DIR}/run-{run_id}/*.parquet")


def run_summary(root: str) -> str:
    """``run.json``: the summary the launcher writes after its run."""
    return under(root, RUN_SUMMARY)


def attestation(root: str, run_id: str) -> str:
    return under(root, f"{RUNS_DIR}/{run_id}.json")


def attestation_glob(root: str) -> str:
    return under(root, f"{RUNS_DIR}/*.json")


def manifest(root: str, name: str) -> str:
    """The input manifest an attestation names (``name`` as the attestation gives it)."""
    return under(root, f"{RUNS_DIR}/{name}")


def done_index(root: str) -> str:
    return under(root, INDEX_FILE)


def corrections(root: str, run_id: str) -> str:
    return under(root, f"{CORRECTIONS_DIR}/{run_id}.json")


def corrections_glob(root: str) -> str:
    return under(root, f"{CORRECTIONS_DIR}/*.json")


def review_site(root: str) -> str:
    """The folder of the review site (``index.html`` and its pages)."""
    return under(root, REVIEW_DIR)


def report_files(root: str) -> tuple[str, str]:
    """``report.json`` and ``report.md`` of ``blurbeam report`` under ``root``."""
    return under(root, REPORT_JSON), under(root, REPORT_MD)

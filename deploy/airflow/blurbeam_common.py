"""What the blurbeam DAGs share (blurbeam_nightly.py, blurbeam_nightly_dataflow.py); no DAG here.

Deployment settings, read when the DAG files are parsed (set them alike on the DAG processor and
the workers):

- ``BLURBEAM_PYTHON``: the interpreter with blurbeam installed (default ``python3``); it runs the
  pipeline launcher and ``blurbeam report``.
- ``BLURBEAM_AIRFLOW_RETRIES`` (default 2) and ``BLURBEAM_AIRFLOW_RETRY_DELAY_S`` (default 600).

Per run, from Airflow Variables: ``blurbeam_input``, ``blurbeam_output`` and optionally
``blurbeam_max_error_rate`` (default 0.01): the fraction of failed images above which anonymize
(DirectRunner, Dask, Flink) and the report fail the run. Failed images never reach the output.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from datetime import datetime, timedelta
from typing import Any

PYTHON = os.environ.get("BLURBEAM_PYTHON", "python3")
RETRIES = int(os.environ.get("BLURBEAM_AIRFLOW_RETRIES", "2"))
RETRY_DELAY = timedelta(seconds=int(os.environ.get("BLURBEAM_AIRFLOW_RETRY_DELAY_S", "600")))

INPUT = "{{ var.value.blurbeam_input }}"
OUTPUT = "{{ var.value.blurbeam_output }}"
MAX_ERROR_RATE = "{{ var.value.get('blurbeam_max_error_rate', '0.01') }}"
#: blurbeam's --run-id of this try of the task: each retry writes its own audit files
RUN_ID = "{{ blurbeam_run_id(dag_run.run_id, ti.try_number) }}"


def blurbeam_run_id(dag_run_id: str, try_number: int) -> str:
    """``airflow-<run>-<hash>-try<N>``: letters, digits, '.', '_' and '-' only, at most 128
    characters (blurbeam's --run-id rule), one per DAG run and try."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", dag_run_id).strip("-._")[:80]
    digest = hashlib.sha256(dag_run_id.encode()).hexdigest()[:10]
    return f"airflow-{readable}-{digest}-try{int(try_number)}"


def dag_kwargs(dag_id: str, description: str) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "description": description,
        "schedule": "0 2 * * *",
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {"retries": RETRIES, "retry_delay": RETRY_DELAY},
        "user_defined_macros": {"blurbeam_run_id": blurbeam_run_id},
        "tags": ["privacy", "blurbeam"],
    }


def report_task():
    """``blurbeam report --verify``: fails on an input without an audit record, a broken
    attestation chain or an error rate above the limit. It runs after a failed anonymize too
    (trigger rule all_done), so the report of what happened is written either way."""
    from airflow.providers.standard.operators.bash import BashOperator

    command = (
        f"{shlex.quote(PYTHON)} -m blurbeam.pipelines.cli report "
        '--output "$BLURBEAM_OUTPUT" --input "$BLURBEAM_INPUT" --verify '
        '--max-error-rate "$BLURBEAM_MAX_ERROR_RATE"'
    )
    return BashOperator(
        task_id="report",
        bash_command=command,
        env={
            "BLURBEAM_INPUT": INPUT,
            "BLURBEAM_OUTPUT": OUTPUT,
            "BLURBEAM_MAX_ERROR_RATE": MAX_ERROR_RATE,
        },
        append_env=True,
        trigger_rule="all_done",
        retries=0,
    )


def fail_if_any_failed(*upstream) -> None:
    """A last task that fails when any task of the run failed. Airflow judges a DAG run by its
    leaf tasks only, and the report (trigger rule all_done) is a leaf that can succeed after a
    failed anonymize: without this task such a run would be green."""
    from airflow.sdk import task

    @task(task_id="fail_if_any_failed", trigger_rule="one_failed", retries=0)
    def check() -> None:
        raise RuntimeError("a task of this run failed: see anonymize and report")

    gate = check()
    for t in upstream:
        t >> gate
    return gate

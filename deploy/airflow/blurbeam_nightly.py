"""Airflow DAG: the nightly privacy-compliance job.

Anonymize whatever is new or changed since the last run (``--skip-existing``), then write the
report; the report task fails when an input has no audit record. Set the Airflow Variables
``blurbeam_input`` and ``blurbeam_output`` (e.g. ``gs://data/raw``, ``gs://data/anonymized``) and
optionally ``blurbeam_runner_args`` (e.g. ``--runner DataflowRunner --project P --region R
--temp_location gs://B/tmp --sdk_container_image IMAGE``; default: DirectRunner on the worker).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

ANONYMIZE = (
    "blurbeam anonymize --input '{{ var.value.blurbeam_input }}' "
    "--output '{{ var.value.blurbeam_output }}' --skip-existing --progress off "
    "--run-id 'airflow-{{ ts_nodash }}' "
    "{{ var.value.get('blurbeam_runner_args', '') }}"
)
REPORT = (
    "blurbeam report --output '{{ var.value.blurbeam_output }}' "
    "--input '{{ var.value.blurbeam_input }}'"
)

with DAG(
    dag_id="blurbeam_nightly",
    description="Anonymize new images and prove every input has an audit record",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["privacy", "blurbeam"],
) as dag:
    anonymize = BashOperator(task_id="anonymize", bash_command=ANONYMIZE)
    report = BashOperator(task_id="report", bash_command=REPORT, trigger_rule="all_done")
    anonymize >> report

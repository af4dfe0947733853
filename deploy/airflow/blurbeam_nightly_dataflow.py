"""Airflow DAG ``blurbeam_nightly_dataflow``: the nightly privacy-compliance job on Dataflow.

Launches the Flex Template that deploy/dataflow/build.sh builds with DataflowStartFlexTemplateOperator
(apache-airflow-providers-google) and waits for the job; killing the task cancels the job. Then
``blurbeam report --verify`` checks coverage and the error rate on the Airflow worker (the
template launcher returns before the job ends, so the error rate is judged there); the DAG run
fails when the job or the report fails. Settings: blurbeam_common.py; Variables
``blurbeam_input`` and ``blurbeam_output`` (gs://), ``blurbeam_gcp_project``,
``blurbeam_gcp_region`` and ``blurbeam_template`` (the template path build.sh prints,
gs://BUCKET/templates/blurbeam-anonymize-VERSION.json).
"""

from __future__ import annotations

from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from airflow.sdk import DAG
from blurbeam_common import (
    INPUT,
    MAX_ERROR_RATE,
    OUTPUT,
    RUN_ID,
    dag_kwargs,
    fail_if_any_failed,
    report_task,
)

with DAG(
    **dag_kwargs(
        "blurbeam_nightly_dataflow",
        "Anonymize new images on Dataflow and prove every input has an audit record",
    )
) as dag:
    anonymize = DataflowStartFlexTemplateOperator(
        task_id="anonymize",
        project_id="{{ var.value.blurbeam_gcp_project }}",
        location="{{ var.value.blurbeam_gcp_region }}",
        body={
            "launchParameter": {
                # append_job_name adds a unique suffix
                "jobName": "blurbeam-nightly",
                "containerSpecGcsPath": "{{ var.value.blurbeam_template }}",
                # template parameters (deploy/dataflow/metadata.json): strings, booleans as "true"
                "parameters": {
                    "input": INPUT,
                    "output": OUTPUT,
                    "skip_existing": "true",
                    "max_error_rate": MAX_ERROR_RATE,
                    "run_id": RUN_ID,
                    "worker_threads": "1",
                },
            }
        },
        append_job_name=True,
        wait_until_finished=True,
        deferrable=False,
        cancel_on_kill=True,
        drain_pipeline=False,
        cancel_timeout=600,
    )
    report = report_task()
    anonymize >> report
    fail_if_any_failed(anonymize, report)

"""Airflow DAGs: the nightly privacy-compliance job on DirectRunner, Dask or Flink.

One DAG per runner (``blurbeam_nightly_direct``, ``blurbeam_nightly_dask``,
``blurbeam_nightly_flink``; Dataflow: blurbeam_nightly_dataflow.py); unpause the one you use.
Each anonymizes what is new or changed since the last run (``--skip-existing``) with
BeamRunPythonPipelineOperator (apache-airflow-providers-apache-beam), then runs ``blurbeam report
--verify``; the DAG run fails when anonymize fails (error rate above ``blurbeam_max_error_rate``,
bad arguments, a crash) or the report does (an input without a record). Settings:
blurbeam_common.py. Runner Variables: ``blurbeam_dask_scheduler`` (e.g. ``tcp://dask:8786``),
``blurbeam_flink_job_endpoint`` (e.g. ``flink-job-server:8099``; SDK workers as in
deploy/flink, at localhost:50000 of each task manager).

The launcher runs on the Airflow worker with ``BLURBEAM_PYTHON``: DirectRunner does the work
there; Dask and Flink only submit and wait, and input and output must be storage every worker
reaches (s3://, gs://). A killed task ends the launcher (and with it the DirectRunner workers;
Dask drops the work of a client that is gone); a Flink job keeps running and must be cancelled in
Flink (web UI or ``flink cancel``).
"""

from __future__ import annotations

from pathlib import Path

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.sdk import DAG
from blurbeam_common import (
    INPUT,
    MAX_ERROR_RATE,
    OUTPUT,
    PYTHON,
    RUN_ID,
    dag_kwargs,
    fail_if_any_failed,
    report_task,
)

ENTRY = str(Path(__file__).with_name("anonymize_entry.py"))

# runner name -> (Beam runner, its options)
RUNNERS: dict[str, tuple[str, dict[str, str]]] = {
    "direct": (
        "DirectRunner",
        {
            "direct_num_workers": "{{ var.value.get('blurbeam_direct_num_workers', '1') }}",
            "direct_running_mode": "multi_processing",
        },
    ),
    "dask": (
        "DaskRunner",
        {"dask_client_address": "{{ var.value.blurbeam_dask_scheduler }}", "worker_threads": "1"},
    ),
    "flink": (
        "PortableRunner",
        {
            "job_endpoint": "{{ var.value.blurbeam_flink_job_endpoint }}",
            "environment_type": "EXTERNAL",
            "environment_config": "localhost:50000",
            "sdk_worker_parallelism": "2",
            "worker_threads": "1",
        },
    ),
}

for name, (runner, runner_options) in RUNNERS.items():
    with DAG(
        **dag_kwargs(
            f"blurbeam_nightly_{name}",
            f"Anonymize new images ({runner}) and prove every input has an audit record",
        )
    ) as dag:
        anonymize = BeamRunPythonPipelineOperator(
            task_id="anonymize",
            runner=runner,
            py_file=ENTRY,
            py_interpreter=PYTHON,
            default_pipeline_options=runner_options,
            pipeline_options={
                "input": INPUT,
                "output": OUTPUT,
                "skip_existing": True,
                "max_error_rate": MAX_ERROR_RATE,
                "run_id": RUN_ID,
                "progress": "off",
            },
        )
        report = report_task()
        anonymize >> report
        fail_if_any_failed(anonymize, report)
    globals()[dag.dag_id] = dag

"""Finalize: the run's last step, once every audit file is written: the input manifest, the
done index and the attestation (``blurbeam.attest.finalize_run``), written by the pipeline so
that every runner (Dataflow, Flink, Dask) leaves them, also for a run that found nothing new.
With ``fail_on_error_rate`` it fails the job when the error rate is above ``--max-error-rate``,
after writing them (a Flex Template, whose launcher does not wait for the job). A corrections
run also keeps its corrections under ``OUTPUT/corrections/<run_id>.json`` here."""

from __future__ import annotations

from typing import Any

import apache_beam as beam


class _FinalizeFn(beam.DoFn):
    def __init__(self, output: str, run_id: str, input_spec: str, config: dict[str, Any],
                 config_hash: str, max_error_rate: float, fail_on_error_rate: bool,
                 corrections: bytes | None = None) -> None:  # fmt: skip
        self._args = (output, run_id, input_spec, config, config_hash)
        self._corrections = corrections
        self._max_error_rate = max_error_rate
        self._fail = fail_on_error_rate

    def process(self, _, records, already_done, audit_files):
        from blurbeam.attest import ErrorRateExceeded, finalize_run, trusted_index
        from blurbeam.report import history_index_rows

        output = self._args[0]
        base = trusted_index(output)
        if base is None:
            base = history_index_rows(output)
        try:
            doc = finalize_run(
                *self._args,
                records=list(records),
                already_done=list(already_done),
                audit_files=list(audit_files),
                max_error_rate=self._max_error_rate,
                base_index=base,
                corrections=self._corrections,
            )
        except ErrorRateExceeded:
            if self._fail:
                raise
            return
        yield doc["run_id"]


class FinalizeRun(beam.PTransform):
    """(pipeline, this run's audit records, index rows of inputs already done, the audit files
    written) -> the run id, once its attestation is written."""

    def __init__(self, records, already_done, audit_files, *, output: str, run_id: str,
                 input_spec: str, config: dict[str, Any], config_hash: str,
                 max_error_rate: float, fail_on_error_rate: bool = False,
                 corrections: bytes | None = None) -> None:  # fmt: skip
        super().__init__()
        self._records = records
        self._done = already_done
        self._audit = audit_files
        self._fn = _FinalizeFn(
            output, run_id, input_spec, config, config_hash, max_error_rate, fail_on_error_rate,
            corrections,
        )  # fmt: skip

    def expand(self, pbegin):
        from blurbeam.attest import index_row

        rows = self._records | "IndexRows" >> beam.Map(index_row)
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Attest"
            >> beam.ParDo(
                self._fn,
                beam.pvalue.AsList(rows),
                beam.pvalue.AsList(self._done),
                beam.pvalue.AsList(self._audit),
            )
        )

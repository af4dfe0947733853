"""Beam transforms of the privacy audit: image pairs -> per-face features (RunInference with
``reid_models.AuditPairHandler``) -> scores -> report; and the sweep's pipeline (RunInference
with ``reid_models.SweepHandler`` -> the feature cache)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from blurbeam.lab.reid.image_pairs import AuditTask, PairOutcome
from blurbeam.lab.reid.sweep import SweepItem
from blurbeam.lab.transforms.reid_models import NAMESPACE, AuditPairHandler, SweepHandler
from blurbeam.transforms.models import InferEach

SKIPPED = "skipped"
#: The metrics namespace of the sweep's seconds per group and attacker.
SWEEP_NAMESPACE = "privacy_sweep"


class SplitOutcomeFn(beam.DoFn):
    """PairOutcome -> ((method, strength, mask scale), FaceResult) per face; ``skipped``
    (uri, reason) for the image or the faces that could not be audited."""

    def __init__(self) -> None:
        self._faces = Metrics.counter(NAMESPACE, "faces_audited")
        self._skipped = Metrics.counter(NAMESPACE, "skipped")

    def process(self, outcome: PairOutcome):
        if outcome.skipped_count:
            self._skipped.inc(outcome.skipped_count)
        for skipped in outcome.skipped:
            yield beam.pvalue.TaggedOutput(SKIPPED, skipped)
        for key, face in outcome.faces:
            self._faces.inc()
            yield key, face


class ScoreSettingFn(beam.DoFn):
    """((method, strength, mask scale), [FaceResult]) -> (SettingScore, {face_id: face size})."""

    def process(self, element):
        import numpy as np

        from blurbeam.lab.reid.scoring import score_setting

        (method, strength, mask_scale), results = element
        results = sorted(results, key=lambda r: r.face_id)
        attackers = sorted({a for r in results for a in r.attacked})
        gallery = np.stack([r.original for r in results])
        probes = {}
        for a in attackers:
            probes[a] = np.stack(
                [r.attacked.get(a, np.full(gallery.shape[1], np.nan)) for r in results]
            )
        ids = [r.face_id for r in results]
        score = score_setting(method, strength, gallery, probes, ids, mask_scale=mask_scale)
        yield score, {r.face_id: r.face_size for r in results}


class WriteReportFn(beam.DoFn):
    """All scores (one element: the list) -> the Parquet, JSON, Markdown and PNG outputs."""

    def __init__(self, output: str, title: str) -> None:
        self._output = output
        self._title = title

    def process(self, scored, skipped):
        from blurbeam.lab.reid.audit_report import write_outputs

        sizes: dict[str, float] = {}
        for _, s in scored:
            sizes.update(s)
        scores = sorted((s for s, _ in scored), key=lambda s: (s.method, s.mask_scale, s.strength))
        notes = []
        if skipped:
            notes.append(f"{len(skipped)} image(s) or face group(s) skipped; first reasons:")
            notes += [f"- `{os.path.basename(u)}`: {r}" for u, r in sorted(skipped)[:10]]
        if not scores:
            notes.append("No face could be audited.")
        yield write_outputs(self._output, scores, sizes, self._title, notes)


def build(p: beam.Pipeline, tasks: Sequence[AuditTask], pre_skipped, opts) -> beam.PCollection:
    """The privacy-audit pipeline on ``p``; returns a PCollection with the output paths."""
    handler = AuditPairHandler(opts.attackers, opts.min_face_size, opts.deblur)
    evaluated = (
        p
        | "Tasks" >> beam.Create(list(tasks))
        | "Spread" >> beam.Reshuffle()
        | "Evaluate" >> InferEach(handler, handler.model_id())
        | "Split" >> beam.ParDo(SplitOutcomeFn()).with_outputs(SKIPPED, main="faces")
    )
    skipped = (
        evaluated[SKIPPED],
        p | "PreSkipped" >> beam.Create(list(pre_skipped)),
    ) | "AllSkipped" >> beam.Flatten()
    scored = (
        evaluated.faces
        | "BySetting" >> beam.GroupByKey()
        | "Score" >> beam.ParDo(ScoreSettingFn())
        | "AllScores" >> beam.combiners.ToList()
    )
    return scored | "Write" >> beam.ParDo(
        WriteReportFn(opts.output, opts.title), beam.pvalue.AsList(skipped)
    )


class WriteSweepFeaturesFn(beam.DoFn):
    """(group, [SweepResult]) -> the group's cached features, one ``.npy`` per attacker with
    row i = face i of the face set; the seconds each attacker took go to a distribution metric
    named ``<group>/<attacker>`` (microseconds)."""

    def __init__(self, out: str) -> None:
        self._out = out

    def process(self, element):
        import numpy as np

        from blurbeam.lab.reid.sweep import (
            ORIGINALS,
            ORIGINALS_GROUP,
            features_uri,
            save_npy,
        )
        from blurbeam.shards import join_output

        group, results = element
        results = sorted(results, key=lambda r: r.index)
        for attacker in results[0].features:
            rows = np.concatenate([r.features[attacker] for r in results])
            if group == ORIGINALS_GROUP:
                save_npy(join_output(self._out, ORIGINALS), rows)
            else:
                save_npy(features_uri(self._out, group, attacker), rows)
            seconds = sum(r.seconds.get(attacker, 0.0) for r in results)
            Metrics.distribution(SWEEP_NAMESPACE, f"{group}/{attacker}").update(
                int(round(seconds * 1e6))
            )


def build_sweep(
    p: beam.Pipeline, items: Sequence[SweepItem], out: str, with_deblur: bool, threads: int = 0
) -> beam.PCollection:
    """The sweep's missing work on ``p``: every item through ``SweepHandler``'s models, then
    each group (the originals, or one setting) written to the cache under ``out``."""
    handler = SweepHandler(with_deblur, threads)
    return (
        p
        | "Items" >> beam.Create(list(items))
        | "Spread" >> beam.Reshuffle()
        | "Features" >> InferEach(handler, handler.model_id())
        | "ByGroup" >> beam.Map(lambda r: (r.group, r))
        | "Gather" >> beam.GroupByKey()
        | "Write" >> beam.ParDo(WriteSweepFeaturesFn(out))
    )


def run_sweep_pipeline(
    items: Sequence[SweepItem],
    out: str,
    with_deblur: bool,
    workers: int = 1,
    pipeline_args: Sequence[str] = (),
) -> dict[tuple[str, str], float]:
    """Run ``build_sweep`` (DirectRunner unless ``pipeline_args`` say otherwise; ``workers`` > 1:
    that many worker processes, one OpenCV thread each) and return the seconds per (group,
    attacker)."""
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    direct = {}
    if workers > 1:
        direct = {"direct_num_workers": workers, "direct_running_mode": "multi_processing"}
    p = beam.Pipeline(options=PipelineOptions(list(pipeline_args), **direct))
    build_sweep(p, items, out, with_deblur, threads=1 if workers > 1 else 0)
    result = p.run()
    result.wait_until_finish()
    seconds: dict[tuple[str, str], float] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(SWEEP_NAMESPACE))
    for dist in query["distributions"]:
        group, _, attacker = dist.key.metric.name.rpartition("/")
        value = dist.committed if dist.committed is not None else dist.attempted
        seconds[(group, attacker)] = value.sum / 1e6
    return seconds

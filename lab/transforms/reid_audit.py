"""Beam transforms of the privacy audit: image pairs -> per-face features -> scores -> report."""

from __future__ import annotations

import os
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from blurbeam.lab.reid.image_pairs import AuditTask, FaceResult

SKIPPED = "skipped"


def _read_rgb(uri: str, max_pixels: int):
    import fsspec

    from blurbeam.imageio import decode, to_rgb8

    with fsspec.open(uri, "rb") as fh:
        data = fh.read()
    return to_rgb8(decode(data, max_pixels).pixels)


class EvaluateImageFn(beam.DoFn):
    """AuditTask -> ((method, strength, mask scale), FaceResult) per face; ``skipped`` (uri, reason) for
    images or faces that cannot be audited. SFace (and YuNet, the deblur model when asked for)
    are loaded once per worker."""

    def __init__(
        self,
        attackers: Sequence[str] | None,
        min_face_size: float,
        with_deblur: bool,
        max_pixels: int = 100_000_000,
    ) -> None:
        self._attackers = list(attackers) if attackers else None
        self._min = float(min_face_size)
        self._with_deblur = with_deblur
        self._max_pixels = max_pixels
        self._faces = Metrics.counter("privacy", "faces_audited")
        self._skipped = Metrics.counter("privacy", "skipped")

    def setup(self) -> None:
        from blurbeam.lab.reid.attackers import load_deblur
        from blurbeam.lab.reid.recognizer import Recognizer

        self._rec = Recognizer()
        self._det = None
        self._deblur = load_deblur() if self._with_deblur else None

    def _detector(self):
        if self._det is None:
            from blurbeam.detectors import DetectorSpec, create

            self._det = create(DetectorSpec("yunet", score_threshold=0.5))
        return self._det

    def process(self, task: AuditTask):
        from blurbeam.lab.reid.attackers import attackers_for
        from blurbeam.lab.reid.face_features import attacked_features, original_features
        from blurbeam.lab.reid.faceset import FaceSpec
        from blurbeam.lab.reid.image_pairs import (
            AuditInputError,
            config_from_params,
            faces_from_audit,
            resolve_landmarks,
        )
        from blurbeam.task import one_line

        try:
            cfg = config_from_params(task.method, task.method_params)
            original = _read_rgb(task.source_uri, self._max_pixels)
            anonymized = _read_rgb(task.anonymized_uri, self._max_pixels)
        except (AuditInputError, OSError, ValueError) as exc:
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(SKIPPED, (task.source_uri, one_line(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - ImageError and friends: one line, go on
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(SKIPPED, (task.source_uri, one_line(exc)))
            return
        if original.shape != anonymized.shape:
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(
                SKIPPED,
                (
                    task.source_uri,
                    f"original {original.shape[1]}x{original.shape[0]} and anonymized "
                    f"{anonymized.shape[1]}x{anonymized.shape[0]} differ in size",
                ),
            )
            return
        if task.faces is None:
            raw = [
                FaceSpec((f.x, f.y, f.w, f.h), f.landmarks) if f.landmarks else (f.x, f.y, f.w, f.h)
                for f in self._detector().detect(original)
            ]
        else:
            raw = faces_from_audit(task.faces)
        big = [f for f in raw if max((f.box if isinstance(f, FaceSpec) else f)[2:4]) >= self._min]
        faces, unaligned = resolve_landmarks(big, original, self._detector()) if big else ([], 0)
        if unaligned:
            self._skipped.inc(unaligned)
            yield beam.pvalue.TaggedOutput(
                SKIPPED, (task.source_uri, f"{unaligned} face(s) without landmarks (not aligned)")
            )
        if not faces:
            return
        wanted = attackers_for(cfg.method, deblur=self._deblur is not None)
        if self._attackers is not None:
            wanted = [a for a in wanted if a in self._attackers]
        origs = original_features(self._rec, original, faces)
        attacked = attacked_features(self._rec, anonymized, faces, cfg, wanted, self._deblur)
        key = (cfg.method, float(cfg.effective_strength), float(cfg.mask_scale))
        for i, (f, o, a) in enumerate(zip(faces, origs, attacked, strict=True)):
            self._faces.inc()
            yield key, FaceResult(f"{task.source_uri}#{i}", f.size, o, a.features)


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
    evaluated = (
        p
        | "Tasks" >> beam.Create(list(tasks))
        | "Spread" >> beam.Reshuffle()
        | "Evaluate"
        >> beam.ParDo(
            EvaluateImageFn(opts.attackers, opts.min_face_size, opts.deblur)
        ).with_outputs(SKIPPED, main="faces")
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

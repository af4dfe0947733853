"""Scoring detections: detected ImageTasks -> WIDER prediction files and per-image scores, then the set's
AP, blur recall and false positives. Reads and detects with the anonymize transforms
(``ReadImages``, ``DetectFaces``); only the scoring is here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from blurbeam.lab.detection.blur_recall import ImagePrivacy, PrivacyConfig, image_privacy
from blurbeam.lab.detection.wider_ap import ImageGt, format_prediction, image_key
from blurbeam.task import ImageTask


@dataclass(frozen=True)
class ScoreConfig:
    """How one image is scored: the anonymizer's threshold and mask, where predictions go."""

    predictions_dir: str
    anonymize_threshold: float
    privacy: PrivacyConfig


class ScoreImageFn(beam.DoFn):
    """One detected task -> its prediction file and a JSON-able record:
    ``key, labelled, error, width, height, preds [[x, y, w, h, score]...], privacy, timings``."""

    def __init__(self, gt_images: dict[str, ImageGt], cfg: ScoreConfig) -> None:
        self._gt = gt_images
        self._cfg = cfg
        self._scored = Metrics.counter("blurbeam", "images_scored")
        self._unlabelled = Metrics.counter("blurbeam", "images_unlabelled")

    def process(self, task: ImageTask):
        from blurbeam.shards import join_output, write_bytes

        key = image_key(task.rel)
        gt = self._gt.get(key)
        rec: dict[str, Any] = {
            "key": key,
            "rel": task.rel,
            "labelled": gt is not None,
            "error": task.error,
            "error_stage": task.error_stage,
            "width": task.width,
            "height": task.height,
            "timings_ms": dict(task.timings_ms),
            "preds": [],
            "landmarks": 0,
            "privacy": None,
        }
        if gt is None:
            self._unlabelled.inc()
        if task.failed or task.faces is None:
            yield rec
            return
        faces = sorted(task.faces, key=lambda f: -f.score)
        preds = np.array([[f.x, f.y, f.w, f.h, f.score] for f in faces], dtype=np.float64)
        preds = preds.reshape(-1, 5)
        rec["preds"] = preds.tolist()
        rec["landmarks"] = sum(1 for f in faces if f.landmarks is not None)
        write_bytes(
            join_output(self._cfg.predictions_dir, key + ".txt"),
            format_prediction(key, preds).encode(),
        )
        if gt is not None:
            kept = preds[preds[:, 4] >= self._cfg.anonymize_threshold]
            priv = image_privacy(gt, kept, int(task.width), int(task.height), self._cfg.privacy)
            rec["privacy"] = priv.to_dict()
            self._scored.inc()
        yield rec


def privacy_from_record(rec: dict[str, Any]) -> ImagePrivacy:
    p = rec["privacy"]
    return ImagePrivacy(p["detections"], p["false_positives"], list(p["sizes"]), list(p["covered"]))


class ScoreImages(beam.PTransform):
    """Detected tasks -> per-image records (prediction files written on the way)."""

    def __init__(self, gt_images: dict[str, ImageGt], cfg: ScoreConfig) -> None:
        super().__init__()
        self._gt, self._cfg = gt_images, cfg

    def expand(self, tasks):
        return tasks | "Score" >> beam.ParDo(ScoreImageFn(self._gt, self._cfg))


def records_to_jsonl(records: list[dict[str, Any]]) -> bytes:
    rows = sorted(records, key=lambda r: r["key"])
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()

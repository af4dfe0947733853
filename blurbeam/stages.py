"""The per-image stages of the anonymize and deblur pipelines, as pure functions on immutable
``ImageTask``s: each takes a task and returns the next one (a failed stage returns a failed task,
never raises). Beam's DoFns (``blurbeam.transforms``) and the container-shard writer call these;
nothing here knows of Beam.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from blurbeam.blur import BlurConfig, anonymize
from blurbeam.detectors import detect_image
from blurbeam.detectors.base import Detector, Face
from blurbeam.geometry import iou
from blurbeam.imageio import DEFAULT_MAX_PIXELS, MetadataPolicy, decode, encode
from blurbeam.review.corrections import SAME_FACE_IOU, Correction
from blurbeam.task import ImageTask


def decode_task(task: ImageTask, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageTask:
    """Decode ``task.data``; the raw bytes are dropped once decoded."""

    def run(t: ImageTask) -> dict[str, Any]:
        img = decode(t.data, max_pixels)
        return {
            "decoded": img,
            "width": img.width,
            "height": img.height,
            "format": img.format,
            "mode": img.mode,
            "orientation": img.orientation,
            "data": None,
        }

    return task.stage("decode", run)


def checked_model_sha256(
    detector: Detector,
    expected_model_sha256: str | None,
    expected_settings: dict[str, Any] | None = None,
) -> str:
    """``detector``'s model sha256; a ``RuntimeError`` when ``expected_model_sha256`` is given
    and differs, or ``expected_settings`` (the launcher's ``Detector.settings()``) is given and
    the detector resolved others: a worker never detects with a model or settings the run was
    not planned with."""
    sha = detector.model_sha256
    if expected_settings is not None:
        ran = detector.settings()
        if ran != expected_settings:
            keys = sorted(
                k
                for k in set(ran) | set(expected_settings)
                if ran.get(k) != expected_settings.get(k)
            )
            raise RuntimeError(
                f"this worker's detector settings differ from the ones the run was planned with "
                f"({', '.join(keys)}): refusing to detect with them"
            )
    if expected_model_sha256 and sha != expected_model_sha256:
        raise RuntimeError(
            f"this worker's detector model ({sha[:16]}) is not the one the run was planned "
            f"with ({expected_model_sha256[:16]}): refusing to detect with it"
        )
    return sha


def detect_task(
    task: ImageTask,
    detector: Detector,
    expected_model_sha256: str | None = None,
    expected_settings: dict[str, Any] | None = None,
) -> ImageTask:
    """The faces ``detector`` finds in the decoded image. With ``expected_model_sha256`` (and
    ``expected_settings``) a detector whose model file (or settings) differ fails the task
    (``checked_model_sha256``)."""

    def run(t: ImageTask) -> dict[str, Any]:
        sha = checked_model_sha256(detector, expected_model_sha256, expected_settings)
        faces = detect_image(detector, t.decoded.pixels, t.mode)
        return {"faces": tuple(faces), "detector_model_sha256": sha}

    return task.stage("detect", run)


def whole_image_face(task: ImageTask) -> ImageTask:
    """The whole image is one face (deblur's ``--whole-image``: no detector)."""

    def run(t: ImageTask) -> dict[str, Any]:
        return {"faces": (Face(0.0, 0.0, float(t.decoded.width), float(t.decoded.height), 1.0),)}

    return task.stage("detect", run)


def apply_correction(task: ImageTask, c: Correction, drop_false_positives: bool) -> dict[str, Any]:
    """The task's faces with the reviewer's boxes added (and, with ``drop_false_positives``, the
    detections the reviewer marked removed). Raises when the input is not the one reviewed (its
    sha256 or upright size differ): the task then fails, fail closed."""
    if task.source_sha256 != c.source_sha256:
        raise RuntimeError(
            f"the input changed since it was reviewed (sha256 {task.source_sha256}, reviewed "
            f"{c.source_sha256})"
        )
    if (task.width, task.height) != (c.width, c.height):
        raise RuntimeError(
            f"the correction's boxes are for a {c.width}x{c.height} image, the input is "
            f"{task.width}x{task.height}"
        )
    faces = list(task.faces or [])
    if drop_false_positives:
        faces = [
            f
            for f in faces
            if not any(iou((f.x, f.y, f.w, f.h), fp) >= SAME_FACE_IOU for fp in c.false_positives)
        ]
    faces += [Face(x, y, w, h, 1.0, None, "reviewer") for x, y, w, h in c.missed_faces]
    return {"faces": tuple(faces)}


class ReviewerBoxes:
    """Detected task -> the task with its correction applied. ``corrections`` maps the input
    URI, as the pipeline names it, to its correction (one that does not fit its input fails the
    task, at the detect stage); ``stored`` are the corrections earlier runs kept under the
    output: each applies only while its input's sha256 is the reviewed one."""

    def __init__(
        self,
        corrections: Mapping[str, Correction],
        drop_false_positives: bool,
        stored: Mapping[str, Correction] | None = None,
    ) -> None:
        self._corrections = dict(corrections)
        self._drop = drop_false_positives
        self._stored = dict(stored or {})

    def __call__(self, task: ImageTask) -> ImageTask:
        c = self._corrections.get(task.source_uri)
        if c is None:
            c = self._stored.get(task.source_uri)
            if c is not None and c.source_sha256 != task.source_sha256:
                c = None
        if c is None or task.faces is None:
            return task
        drop = self._drop or c.drop_false_positives
        return task.stage("detect", lambda t: apply_correction(t, c, drop))


def anonymize_task(task: ImageTask, cfg: BlurConfig) -> ImageTask:
    """The anonymized pixels. A task without a detection result fails: unchecked pixels are
    never written."""

    def run(t: ImageTask) -> dict[str, Any]:
        if t.faces is None:
            raise RuntimeError("no detection result: refusing to write unchecked pixels")
        boxes = [(f.x, f.y, f.w, f.h) for f in t.faces]
        pixels = t.decoded.pixels
        return {
            "output_pixels": anonymize(pixels, boxes, cfg) if boxes or cfg.whole_image else pixels
        }

    return task.stage("anonymize", run)


def encode_task(task: ImageTask, policy: MetadataPolicy) -> ImageTask:
    """``output_pixels`` encoded in the source's format; the pixel buffers are dropped."""

    def run(t: ImageTask) -> dict[str, Any]:
        if t.output_pixels is None:
            raise RuntimeError("nothing anonymized to encode")
        encoded = encode(t.decoded, t.output_pixels, policy)
        return {"encoded": encoded, "decoded": None, "output_pixels": None}

    return task.stage("encode", run)


def anonymize_encoded(
    task: ImageTask,
    detector: Detector,
    cfg: BlurConfig,
    policy: MetadataPolicy,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    expected_model_sha256: str | None = None,
    correct: Callable[[ImageTask], ImageTask] | None = None,
) -> ImageTask:
    """Read bytes -> anonymized, encoded bytes: decode, detect, (``correct``: e.g. a
    ``ReviewerBoxes``), anonymize, encode."""
    task = decode_task(task, max_pixels)
    task = detect_task(task, detector, expected_model_sha256)
    if correct is not None:
        task = correct(task)
    return encode_task(anonymize_task(task, cfg), policy)


def restore_task(
    task: ImageTask, restorer: Any, margin: float, feather: float, whole_image: bool
) -> ImageTask:
    """The deblur restorer (``blurbeam.deblur.model.Restorer``) applied to each detected face,
    or to the whole image: ``output_pixels`` holds the restored image, ``restoration`` what was
    measured."""
    from blurbeam.deblur.apply import restore_faces, restore_whole
    from blurbeam.task import Restoration

    def run(t: ImageTask) -> dict[str, Any]:
        if t.faces is None:
            raise RuntimeError("no detection result")
        pixels = t.decoded.pixels
        if whole_image:
            restored, res = restore_whole(pixels, restorer)
            results = [res]
        elif t.faces:
            boxes = [(f.x, f.y, f.w, f.h) for f in t.faces]
            restored, results = restore_faces(pixels, boxes, restorer, margin, feather)
        else:
            restored, results = pixels, []
        estimated = all(r.blur_length_px is not None for r in results)
        return {
            "output_pixels": restored,
            "restoration": Restoration(
                model_sha256=restorer.weights_sha256,
                sharpness_before=tuple(r.sharpness_before for r in results),
                sharpness_after=tuple(r.sharpness_after for r in results),
                blur_length_px=tuple(r.blur_length_px for r in results) if estimated else None,
                blur_angle_deg=tuple(r.blur_angle_deg for r in results) if estimated else None,
            ),
        }

    return task.stage("restore", run)

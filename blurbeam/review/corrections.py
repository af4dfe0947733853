"""Reviewer corrections: the ``corrections.json`` a review page exports, checked against the
inputs before ``anonymize --corrections`` re-processes them. Pure code.

The file is ``{"format": FORMAT, "corrections": [entry, ...]}`` (``output``, ``run_id`` and
``exported_at`` may say where it came from), each entry::

    {"source_uri": ..., "source_sha256": ..., "width": W, "height": H,
     "missed_faces": [{"x", "y", "w", "h"}, ...], "false_positives": [{"x", "y", "w", "h"}, ...],
     "note": "..."}

Boxes are in the source image's upright pixel frame (after EXIF orientation: the frame of the
audit's ``faces``, of size ``width`` x ``height``). Keys are an allow-list: a misspelled key
would silently drop a box, so anything unknown is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import fsspec

FORMAT = "blurbeam-corrections/1"
STORED_FORMAT = "blurbeam-stored-corrections/1"

_TOP_KEYS = {"format", "corrections", "output", "run_id", "exported_at"}
_ENTRY_KEYS = {
    "source_uri",
    "source_sha256",
    "width",
    "height",
    "missed_faces",
    "false_positives",
    "note",
}
_BOX_KEYS = {"x", "y", "w", "h", "score", "source"}
#: Two boxes with at least this intersection over union are the same face.
SAME_FACE_IOU = 0.5


class CorrectionsError(ValueError):
    """The corrections file is unusable or does not match the inputs (one-line message)."""


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Correction:
    """One reviewed input: boxes to add (missed faces) and detections marked false positives."""

    source_uri: str
    source_sha256: str
    width: int
    height: int
    missed_faces: tuple[Box, ...]
    false_positives: tuple[Box, ...]
    note: str = ""
    #: From a stored corrections file (``load_stored``): the run that applied it dropped the
    #: detections marked false positives, so later runs do too.
    drop_false_positives: bool = False


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CorrectionsError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _box(raw: Any, where: str, width: int, height: int) -> Box:
    if not isinstance(raw, dict):
        raise CorrectionsError(f"{where}: a box is an object with x, y, w, h")
    unknown = set(raw) - _BOX_KEYS
    if unknown:
        raise CorrectionsError(f"{where}: unknown key(s) {sorted(unknown)}")
    x, y, w, h = (_number(raw.get(k), f"{where}.{k}") for k in ("x", "y", "w", "h"))
    # clipped to the image: a box drawn past an edge covers the part inside it
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise CorrectionsError(
            f"{where}: box ({x:g}, {y:g}, {w:g}, {h:g}) covers no pixel of the "
            f"{width}x{height} image"
        )
    return (x0, y0, x1 - x0, y1 - y0)


def _entry(raw: Any, i: int) -> Correction:
    where = f"corrections[{i}]"
    if not isinstance(raw, dict):
        raise CorrectionsError(f"{where}: expected an object")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise CorrectionsError(f"{where}: unknown key(s) {sorted(unknown)}")
    uri, sha = raw.get("source_uri"), raw.get("source_sha256")
    if not isinstance(uri, str) or not uri:
        raise CorrectionsError(f"{where}: source_uri is missing")
    where = f"correction for {uri!r}"
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise CorrectionsError(f"{where}: source_sha256 must be 64 lowercase hex digits")
    size = []
    for k in ("width", "height"):
        v = raw.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CorrectionsError(f"{where}: {k} must be a whole number >= 1, got {v!r}")
        size.append(v)
    boxes: dict[str, tuple[Box, ...]] = {}
    for k in ("missed_faces", "false_positives"):
        items = raw.get(k, [])
        if not isinstance(items, list):
            raise CorrectionsError(f"{where}: {k} must be a list of boxes")
        boxes[k] = tuple(_box(b, f"{where}: {k}[{j}]", *size) for j, b in enumerate(items))
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise CorrectionsError(f"{where}: note must be text")
    return Correction(uri, sha, size[0], size[1], boxes["missed_faces"], boxes["false_positives"], note)  # fmt: skip


def parse(data: bytes, name: str = "corrections") -> tuple[Correction, ...]:
    """The corrections in a ``corrections.json`` document; raises CorrectionsError."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorrectionsError(f"{name} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorrectionsError(f'{name} is not a corrections file (no "format": "{FORMAT}")')
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise CorrectionsError(f"{name}: unknown key(s) {sorted(unknown)}")
    entries = doc.get("corrections")
    if not isinstance(entries, list) or not entries:
        raise CorrectionsError(f"{name} holds no corrections")
    out = tuple(_entry(raw, i) for i, raw in enumerate(entries))
    seen: set[str] = set()
    for c in out:
        if c.source_uri in seen:
            raise CorrectionsError(f"{name}: {c.source_uri!r} is corrected twice; merge its boxes")
        seen.add(c.source_uri)
    return out


def load(uri: str) -> tuple[tuple[Correction, ...], str]:
    """The corrections in the file at ``uri`` (any fsspec URL) and the file's sha256."""
    import hashlib

    try:
        fs, path = fsspec.core.url_to_fs(uri)
        data = fs.cat_file(path)
    except (OSError, ValueError) as exc:
        raise CorrectionsError(f"cannot read --corrections {uri!r}: {exc}") from None
    return parse(data, f"--corrections {uri!r}"), hashlib.sha256(data).hexdigest()


def match_inputs(
    corrections: tuple[Correction, ...], refs: list[Any], opts: Any = None
) -> tuple[list[Any], dict[str, Correction]]:
    """The shards (``ShardRef``s from the input listing) that hold the corrected inputs, and
    each correction under the URI the pipeline gives its input, after
    checking that each correction names an input and that the input's bytes still hash to the
    reviewed sha256. Inputs are compared as canonical places (plain files) or canonical shard
    plus key (images in container shards). Raises CorrectionsError naming the input."""
    from blurbeam.shards import canonical, get_format, member_uri, read_records, sha256

    by_place = {canonical(r.uri): r for r in refs}
    needed: dict[str, Any] = {}
    by_input: dict[str, Correction] = {}
    for c in corrections:
        ref, key = by_place.get(_place(c.source_uri)), ""
        if ref is None and "#" in c.source_uri:
            shard, key = c.source_uri.rsplit("#", 1)
            ref = by_place.get(_place(shard))
            if ref is not None and not get_format(ref.kind).container:
                ref = None
        if ref is None:
            raise CorrectionsError(
                f"correction for {c.source_uri!r}: not an input under --input (review and "
                "correct the same input)"
            )
        try:
            found = [r for r in read_records(ref, opts=opts) if r.key == key]
        except Exception as exc:
            raise CorrectionsError(
                f"correction for {c.source_uri!r}: cannot read it: {exc}"
            ) from None
        data = found[0].data if found else None
        if data is None:
            raise CorrectionsError(
                f"correction for {c.source_uri!r}: the input holds no such image"
            )
        if sha256(data) != c.source_sha256:
            raise CorrectionsError(
                f"correction for {c.source_uri!r} refused: the input changed since it was "
                f"reviewed (sha256 {sha256(data)[:16]}..., reviewed {c.source_sha256[:16]}...)"
            )
        needed[ref.uri] = ref
        task_uri = member_uri(ref.uri, key) if key else ref.uri
        if task_uri in by_input:
            raise CorrectionsError(f"correction for {c.source_uri!r}: its input is corrected twice")
        by_input[task_uri] = c
    return [needed[u] for u in sorted(needed)], by_input


def _place(uri: str) -> str:
    from blurbeam.shards import canonical

    try:
        return canonical(uri)
    except Exception:
        return uri


@dataclass(frozen=True)
class CorrectionPlan:
    """What ``anonymize --corrections`` re-processes: the shards holding the corrected inputs,
    each correction under its input's URI, and the corrections file's sha256 (in the config)."""

    uri: str
    sha256: str
    refs: tuple[Any, ...]
    by_input: dict[str, Correction]
    drop_false_positives: bool

    def config(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "drop_false_positives": self.drop_false_positives}

    def stored(self, run_id: str) -> bytes:
        """The document ``OUTPUT/corrections/<run_id>.json`` keeps, so that every later run
        applies these corrections again (``load_stored``)."""
        fs, path = fsspec.core.url_to_fs(self.uri)
        return json.dumps(
            {"format": STORED_FORMAT, "run_id": run_id, "sha256": self.sha256,
             "drop_false_positives": self.drop_false_positives,
             "corrections": json.loads(fs.cat_file(path))},
            indent=2,
        ).encode()  # fmt: skip


def plan_corrections(
    uri: str, input_spec: str, output: str, drop_false_positives: bool, opts: Any = None
) -> CorrectionPlan:
    """Load ``uri`` and match it against the inputs under ``input_spec`` (``output`` left out,
    as the run lists them); raises CorrectionsError (a ValueError) with a one-line reason."""
    from blurbeam.shards import InputError, expand_input

    corrections, digest = load(uri)
    try:
        refs = list(expand_input(input_spec, exclude=output, every_file=True))
    except InputError as exc:
        raise CorrectionsError(str(exc)) from None
    needed, by_input = match_inputs(corrections, refs, opts)
    return CorrectionPlan(uri, digest, tuple(needed), by_input, drop_false_positives)


def load_stored(output: str) -> dict[str, Correction]:
    """Every correction kept under ``OUTPUT/corrections/`` by earlier corrections runs whose
    attestation names the file by its sha256 (``blurbeam.attest.attested_corrections``: a file
    no attestation names is ignored, so nobody can slip in a correction that drops a
    detection), by the input URI it names; a later run's correction of an input replaces an
    earlier one. A run applies them to the inputs whose bytes are still the reviewed ones, so a
    correction is not undone by a later run (``--skip-existing``, a new config, a rerun)."""
    import dataclasses

    from blurbeam.attest import attested_corrections

    out: dict[str, Correction] = {}
    for run_id, data in attested_corrections(output).items():  # in chain order
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise CorrectionsError(
                f"kept corrections of run {run_id} are unreadable: {exc}"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != STORED_FORMAT:
            raise CorrectionsError(f"kept corrections of run {run_id} are not {STORED_FORMAT}")
        drop = bool(doc.get("drop_false_positives"))
        for c in parse(json.dumps(doc["corrections"]).encode(), f"kept corrections {run_id}"):
            out[c.source_uri] = dataclasses.replace(c, drop_false_positives=drop)
    return out

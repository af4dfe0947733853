"""The review site: a self-contained static HTML report of an output directory. Pure code.

``build_review(output)`` writes ``OUTPUT/review/index.html`` (per-run counts, error reasons,
config, versions, the attestation chain's status, faces-per-image and score histograms as inline
SVG, and a stratified sample of anonymized images as thumbnails with every box outlined), a page
per sampled image at full size where a reviewer can draw missed faces, mark false positives and
export ``corrections.json`` (``blurbeam.review.corrections``), and the images those pages show.
Everything goes through fsspec, so the site can live in a bucket; CSS and JS are inlined, so it
works from a file:// URL with no server and nothing fetched.

It reads the audit records (through ``blurbeam.report``) and, of the images, only the sampled
ones. Originals are read and shown only with ``with_originals``; every page then says that the
site holds identifiable images.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from html import escape
from importlib import resources
from typing import Any

import fsspec

from blurbeam import __version__
from blurbeam.review import svg

THUMB_SIDE = 240
#: Larger images are shown scaled down (boxes stay in the source frame); keeps the site small.
MAX_SIDE = 2048
STRATA = ("errors", "lowest_score", "most_faces", "random")
STRATUM_TITLES = {
    "errors": "errors",
    "lowest_score": "lowest-scoring detection",
    "most_faces": "most faces",
    "random": "random",
}
ORIGINALS_WARNING = (
    "This review holds identifiable images: it was generated with --with-originals and shows "
    "the original, unblurred pictures. Share and store it as you would the original data."
)
_COLUMNS = [
    "run_id",
    "source_uri",
    "shard_uri",
    "key",
    "output_uri",
    "source_sha256",
    "width",
    "height",
    "status",
    "error_stage",
    "error",
    "skip_reason",
    "num_faces",
    "faces",
    "config_hash",
    "processed_at",
]


def page_id(source_uri: str) -> str:
    return hashlib.sha256(source_uri.encode()).hexdigest()[:16]


def _static(name: str) -> str:
    return resources.files("blurbeam.review").joinpath("static", name).read_text()


def latest_records(output: str) -> list[dict[str, Any]]:
    """The latest audit record of each input under ``output`` (all runs)."""
    from blurbeam.report import load_audit

    rows = load_audit(output, _COLUMNS).to_pylist()
    floor = datetime.min.replace(tzinfo=UTC)
    rows.sort(key=lambda r: (r["processed_at"] or floor, r["run_id"]))
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        latest[r["source_uri"]] = r
    return [latest[u] for u in sorted(latest)]


def _detector_scores(r: dict[str, Any]) -> list[float]:
    return [f["score"] for f in r["faces"] or [] if (f.get("source") or "detector") == "detector"]


def sample(records: list[dict[str, Any]], n: int, seed: int = 0) -> list[tuple[str, dict]]:
    """Up to ``n`` records as ``(stratum, record)``: a quarter each (rounded up) of errors,
    images with the lowest-scoring detection and images with the most faces, the rest drawn at
    random from the other anonymized images; a stratum with too few records leaves its share
    to the random draw. No record appears twice."""
    rng = random.Random(seed)
    share = math.ceil(n / 4)
    written = [r for r in records if r["status"] in ("ok", "no_faces")]
    with_faces = [r for r in written if _detector_scores(r)]
    errors = [r for r in records if r["status"] == "error"]
    rng.shuffle(errors)
    candidates = {
        "errors": errors,
        "lowest_score": sorted(
            with_faces, key=lambda r: (min(_detector_scores(r)), r["source_uri"])
        ),
        "most_faces": sorted(written, key=lambda r: (-(r["num_faces"] or 0), r["source_uri"])),
    }
    taken: list[tuple[str, dict]] = []
    seen: set[str] = set()
    for stratum in ("errors", "lowest_score", "most_faces"):
        count = 0
        for r in candidates[stratum]:
            if count >= share or len(taken) >= n:
                break
            if stratum == "most_faces" and not r["num_faces"]:
                break
            if r["source_uri"] not in seen:
                seen.add(r["source_uri"])
                taken.append((stratum, r))
                count += 1
    rest = [r for r in written if r["source_uri"] not in seen]
    for r in rng.sample(rest, min(len(rest), n - len(taken))):
        taken.append(("random", r))
    return taken


class _Writer:
    """Writes files under ``OUTPUT/review`` through fsspec and counts what it wrote."""

    def __init__(self, output: str) -> None:
        from blurbeam.schemas import layout

        self.root = layout.review_site(output)
        self.files = 0
        self.bytes = 0

    def clear(self) -> None:
        """Remove an earlier review: its pages and images (originals among them, when it was
        made with --with-originals) must not outlive it."""
        fs, path = fsspec.core.url_to_fs(self.root)
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def write(self, rel: str, data: bytes | str) -> None:
        from blurbeam.shards import join_output, write_bytes

        blob = data.encode() if isinstance(data, str) else data
        write_bytes(join_output(self.root, rel), blob)
        self.files += 1
        self.bytes += len(blob)


def _read_member(shard: str, key: str, cache: dict[str, dict[str, bytes]]) -> bytes | None:
    """The bytes of image ``key`` of container shard ``shard``, read through its format."""
    import posixpath

    from blurbeam.shards import ShardRef, kind_of, read_records

    if shard not in cache:
        ref = ShardRef(kind_of(shard), shard, posixpath.basename(fsspec.core.url_to_fs(shard)[1]))
        cache[shard] = {r.key: r.data for r in read_records(ref) if r.data is not None}
    return cache[shard].get(key)


def _read_file(uri: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.cat_file(path)


def _rgb8(data: bytes):
    from blurbeam.imageio import decode, to_rgb8

    return to_rgb8(decode(data).pixels)


def _jpeg(rgb, max_side: int, quality: int = 88, faces: list[dict] | None = None) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.fromarray(rgb)
    scale = min(1.0, max_side / max(img.size))
    if scale < 1.0:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.LANCZOS)
    if faces:
        draw = ImageDraw.Draw(img)
        for f in faces:
            x0, y0 = f["x"] * scale, f["y"] * scale
            x1, y1 = x0 + f["w"] * scale, y0 + f["h"] * scale
            reviewer = (f.get("source") or "detector") == "reviewer"
            colour = (32, 128, 255) if reviewer else (0, 224, 0)
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
            label = "reviewer" if reviewer else f"{f['score']:.2f}"
            draw.text((x0 + 2, max(0.0, y0 - 11)), label, fill=colour)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _head(title: str, with_originals: bool) -> str:
    warning = f'<div class="warning">{escape(ORIGINALS_WARNING)}</div>' if with_originals else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_static('review.css')}</style></head><body>"
        f"{warning}"
    )


def _tail(data: dict[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e")
    blob = blob.replace("&", "\\u0026")
    return (
        f'<script type="application/json" id="review-data">{blob}</script>'
        f"<script>{_static('review.js')}</script></body></html>\n"
    )


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in header), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, v in enumerate(row):
            cls = ' class="n"' if i in numeric else ""
            out.append(f"<td{cls}>{escape('' if v is None else str(v))}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _chain_html(output: str) -> str:
    from blurbeam.attest import verify

    try:
        problems, summary = verify(output)
    except Exception as exc:  # an unreadable chain is reported, not hidden
        from blurbeam.task import one_line

        return f'<p class="bad">attestation chain could not be checked: {escape(one_line(exc))}</p>'
    if not summary["runs"]:
        return f'<p class="bad">{escape(problems[0] if problems else "no attestation")}</p>'
    head = (
        f"{len(summary['runs'])} chained run(s), newest <code>{escape(summary['head'])}</code>, "
        f"sha256 <code>{escape(summary['head_sha256'])}</code>: "
    )
    if not problems:
        return f'<p>{head}<span class="ok">verified</span> (as <code>blurbeam report --verify</code>)</p>'
    items = "".join(f"<li>{escape(p)}</li>" for p in problems[:50])
    more = f"<li>... {len(problems) - 50} more</li>" if len(problems) > 50 else ""
    return f'<p>{head}<span class="bad">{len(problems)} problem(s)</span></p><ul>{items}{more}</ul>'


def build_review(
    output: str, n: int = 48, with_originals: bool = False, seed: int = 0
) -> dict[str, Any]:
    """Write the review site under ``OUTPUT/review``; returns what was written (the index's URI,
    files, bytes, sampled images, seconds). Raises ValueError when ``output`` has no audit."""
    from blurbeam.attest import head
    from blurbeam.report import build_report, output_file

    t0 = time.monotonic()
    rep = build_report(output)
    if not rep["records"]:
        raise ValueError(f"no audit records under {output!r}/audit")
    records = latest_records(output)
    newest = head(output)
    att = newest[0] if newest else {}
    config = att.get("config")
    run_id = att.get("run_id") or (rep["runs"][-1]["run_id"] if rep["runs"] else "")
    picked = sample(records, n, seed)
    w = _Writer(output)
    w.clear()
    member_cache: dict[str, dict[str, bytes]] = defaultdict(dict)
    source_cache: dict[str, dict[str, bytes]] = defaultdict(dict)
    cards: dict[str, list[str]] = defaultdict(list)
    for stratum, r in picked:
        pid = page_id(r["source_uri"])
        shown = _image_page(w, output, run_id, stratum, r, pid, with_originals,
                            member_cache, source_cache, output_file)  # fmt: skip
        cards[stratum].append(_card(stratum, r, pid, shown))
    w.write("index.html", _index(rep, records, att, config, cards, output, run_id, with_originals))
    return {
        "index": f"{w.root.rstrip('/')}/index.html",
        "files": w.files,
        "bytes": w.bytes,
        "sampled": len(picked),
        "by_stratum": {s: len(cards[s]) for s in STRATA},
        "seconds": round(time.monotonic() - t0, 2),
    }


def _card(stratum: str, r: dict[str, Any], pid: str, shown: bool) -> str:
    if shown:
        pic = f'<img src="thumbs/{pid}.jpg" alt="anonymized thumbnail" loading="lazy">'
    else:
        why = r["error"] or "no anonymized image to show"
        pic = f'<div class="noimg">{escape(why)}</div>'
    faces = r["num_faces"]
    scores = _detector_scores(r)
    info = f"{r['status']}" + (f", {faces} face(s)" if faces else "")
    if scores:
        info += f", lowest score {min(scores):.2f}"
    return (
        f'<div class="card"><a href="pages/{pid}.html">{pic}</a>'
        f'<span class="stratum">{escape(STRATUM_TITLES[stratum])}</span> {escape(info)}<br>'
        f'<a class="uri" href="pages/{pid}.html">{escape(r["source_uri"])}</a></div>'
    )


def _image_page(
    w: _Writer,
    output: str,
    run_id: str,
    stratum: str,
    r: dict[str, Any],
    pid: str,
    with_originals: bool,
    member_cache: dict[str, dict[str, bytes]],
    source_cache: dict[str, dict[str, bytes]],
    output_file,
) -> bool:
    """Write the sampled image's page (and its images); True when an anonymized image is
    shown. Only anonymized pixels are read unless ``with_originals``."""
    from blurbeam.task import one_line

    faces = [dict(f, source=f.get("source") or "detector") for f in r["faces"] or []]
    notes: list[str] = []
    anonymized = original = None
    if r["output_uri"]:
        try:
            data = (
                _read_member(output_file(r), r["key"], member_cache)
                if r["key"]
                else _read_file(r["output_uri"])
            )
            if data is None:
                raise ValueError(f"{r['key']!r} is not in the output shard")
            rgb = _rgb8(data)
            w.write(f"img/{pid}.jpg", _jpeg(rgb, MAX_SIDE))
            w.write(f"thumbs/{pid}.jpg", _jpeg(rgb, THUMB_SIDE, 85, faces))
            anonymized = f"../img/{pid}.jpg"
        except Exception as exc:
            notes.append(f"the anonymized image cannot be shown: {one_line(exc)}")
    if with_originals:
        try:
            data = (
                _read_member(r["shard_uri"], r["key"], source_cache)
                if r["key"]
                else _read_file(r["source_uri"])
            )
            if data is None:
                raise ValueError(f"{r['key']!r} is not in the input shard")
            if hashlib.sha256(data).hexdigest() != r["source_sha256"]:
                notes.append("the original changed since this record was made")
            w.write(f"orig/{pid}.jpg", _jpeg(_rgb8(data), MAX_SIDE))
            original = f"../orig/{pid}.jpg"
        except Exception as exc:
            notes.append(f"the original cannot be shown: {one_line(exc)}")
    title = f"blurbeam review: {r['source_uri']}"
    body = [
        _head(title, with_originals),
        '<p><a href="../index.html">&larr; review index</a></p>',
        f"<h1>{escape(r['source_uri'])}</h1>",
        _table(
            ["status", "sampled as", "faces", "size", "run", "source sha256", "output"],
            [
                [
                    r["status"] + (f" ({r['error_stage']}: {r['error']})" if r["error"] else ""),
                    STRATUM_TITLES[stratum],
                    r["num_faces"],
                    f"{r['width']}x{r['height']}" if r["width"] else None,
                    r["run_id"],
                    r["source_sha256"],
                    r["output_uri"],
                ]
            ],
        ),
    ]
    body += [f'<p class="bad">{escape(n)}</p>' for n in notes]
    shown = anonymized or original
    if shown and r["width"] and r["height"]:
        toggle = (
            '<button id="toggle-original">show original (identifiable)</button>'
            if anonymized and original
            else ""
        )
        body += [
            "<h2>Image</h2>",
            "<p>Green: detected faces (hover for the score; click one to mark it as a false "
            "positive, shown dashed red). Drag on the image to draw a box around a missed face "
            "(blue). Then export <code>corrections.json</code> and run <code>blurbeam anonymize "
            "--corrections corrections.json</code> with the same --input and --output.</p>",
            f'<div class="tools">{toggle}<button id="export">export corrections.json</button>'
            '<button id="clear">clear this image\'s corrections</button> '
            'false positives marked: <span id="fp-count">0</span></div>',
            f'<div id="stage"><img id="photo" src="{escape(shown)}" alt="image" draggable="false">'
            f'<svg id="overlay" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {r["width"]} {r["height"]}" preserveAspectRatio="none"></svg></div>',
            '<h2>Missed faces drawn</h2><ul id="missed-list"></ul>',
            '<p><label>Reviewer note<br><textarea id="note"></textarea></label></p>',
        ]
    if faces:
        body.append("<h2>Faces in the record</h2>")
        body.append(
            _table(
                ["#", "x", "y", "w", "h", "score", "source"],
                [
                    [
                        i,
                        f"{f['x']:.1f}",
                        f"{f['y']:.1f}",
                        f"{f['w']:.1f}",
                        f"{f['h']:.1f}",
                        f"{f['score']:.3f}",
                        f["source"],
                    ]
                    for i, f in enumerate(faces)
                ],  # fmt: skip
                {0, 1, 2, 3, 4, 5},
            )
        )
    image = None
    if shown and r["width"] and r["height"]:
        image = {
            "source_uri": r["source_uri"],
            "source_sha256": r["source_sha256"],
            "width": r["width"],
            "height": r["height"],
            "faces": [{k: f[k] for k in ("x", "y", "w", "h", "score", "source")} for f in faces],
            "anonymized": anonymized,
            "original": original,
        }
    data = {"output": output, "run_id": run_id, "image": image}
    w.write(f"pages/{pid}.html", "".join(body) + _tail(data))
    return anonymized is not None


def _index(
    rep: dict[str, Any],
    records: list[dict[str, Any]],
    att: dict[str, Any],
    config: dict[str, Any] | None,
    cards: dict[str, list[str]],
    output: str,
    run_id: str,
    with_originals: bool,
) -> str:
    s = rep["latest_status"]
    written = [r for r in records if r["status"] in ("ok", "no_faces")]
    scores = [x for r in written for x in _detector_scores(r)]
    reviewer = sum(
        1 for r in written for f in r["faces"] or [] if (f.get("source") or "") == "reviewer"
    )
    body = [
        _head(f"blurbeam review: {output}", with_originals),
        f"<h1>blurbeam review of <code>{escape(output)}</code></h1>",
        f"<p>Generated {escape(datetime.now(UTC).isoformat(timespec='seconds'))} by blurbeam "
        f"{escape(__version__)} from the audit records: {rep['images']} inputs in "
        f"{rep['records']} records from {len(rep['runs'])} run(s). Latest status: "
        f"<b>{s['ok']}</b> with faces, <b>{s['no_faces']}</b> without, <b>{s['error']}</b> "
        f"errors, <b>{s['skipped']}</b> skipped; <b>{rep['faces']}</b> faces"
        + (f" ({reviewer} drawn by a reviewer)" if reviewer else "")
        + ".</p>",
        "<h2>Attestation chain</h2>",
        _chain_html(output),
        "<h2>Runs</h2>",
        _table(
            [
                "run",
                "started",
                "inputs",
                "ok",
                "no_faces",
                "error",
                "skipped",
                "faces",
                "detector",
                "method",
                "config",
                "version",
            ],
            [
                [
                    r["run_id"],
                    r["started"],
                    r["images"],
                    r["ok"],
                    r["no_faces"],
                    r["error"],
                    r["skipped"],
                    r["faces"],
                    r["detector"],
                    r["method"],
                    r["config_hash"],
                    r["package_version"],
                ]
                for r in rep["runs"]
            ],  # fmt: skip
            {2, 3, 4, 5, 6, 7},
        ),
    ]
    body.append("<h2>Errors (latest record of each input)</h2>")
    if rep["errors"]:
        body.append(
            _table(
                ["count", "stage", "reason", "e.g."],
                [[e["count"], e["stage"], e["reason"], e["inputs"][0]] for e in rep["errors"]],
                {0},
            )
        )
    else:
        body.append("<p>None.</p>")
    body += [
        "<h2>Detections</h2>",
        '<div class="charts">',
        svg.faces_per_image([r["num_faces"] or 0 for r in written]),
        svg.score_histogram(scores),
        "</div>",
        "<h2>Sample</h2>",
        f"<p>{sum(len(c) for c in cards.values())} images: errors, the lowest-scoring "
        "detections, the most faces, and a random draw. "
        + ("Originals are included." if with_originals else "Only anonymized pixels are shown.")
        + " Open an image to draw missed faces or mark false positives.</p>",
        '<p>Corrections kept in this browser: <span id="stored-count">0</span> '
        '<button id="export-all">export corrections.json</button></p>',
    ]
    for stratum in STRATA:
        if cards.get(stratum):
            body.append(f"<h3>{escape(STRATUM_TITLES[stratum])} ({len(cards[stratum])})</h3>")
            body.append('<div class="grid">' + "".join(cards[stratum]) + "</div>")
    if config is not None:
        body += [
            f"<h2>Config of the newest run <code>{escape(att.get('run_id', ''))}</code></h2>",
            f"<details><summary>config {escape(att.get('config_hash', ''))} (every setting "
            "that decides the output)</summary>"
            f"<pre>{escape(json.dumps(config, indent=2, sort_keys=True))}</pre></details>",
        ]
    return "".join(body) + _tail({"output": output, "run_id": run_id, "image": None})

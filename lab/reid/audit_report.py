"""Outputs of an audit or a sweep: Parquet rows per face x attacker, a summary per method and
strength (Parquet + JSON), a Markdown report and a plot of top-1 identification against
strength per method."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from blurbeam.lab.reid.recognizer import COSINE_THRESHOLD
from blurbeam.lab.reid.scoring import (
    MIN_GALLERY,
    TARGET_REID,
    TARGET_TOP1,
    WEAK_TOP1,
    SettingScore,
)

ROW_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("strength", pa.float64()),
        ("mask_scale", pa.float64()),
        ("face_id", pa.string()),
        ("face_size", pa.float64()),
        ("attacker", pa.string()),
        ("cosine", pa.float64()),
        ("match", pa.bool_()),
        ("rank", pa.int32()),
        ("top1", pa.bool_()),
        ("gallery_size", pa.int32()),
    ]
)

STRENGTH_MEANS = {
    "gaussian": "sigma / face size",
    "bilateral": "sigma / face size",
    "box": "kernel / face size",
    "median": "kernel / face size",
    "pixelate": "blocks across the face (fewer = stronger)",
    "solid": "-",
}


def rows_table(scores: Sequence[SettingScore], face_size: Mapping[str, float]) -> pa.Table:
    rows = []
    for s in scores:
        for r in s.rows:
            rows.append({**r, "face_size": float(face_size.get(r["face_id"], math.nan))})
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


#: The files ``write_outputs`` writes under the output, by kind.
OUTPUT_FILES = {
    "rows": "privacy_rows.parquet",
    "summary": "privacy_summary.parquet",
    "summary_json": "privacy_summary.json",
    "report": "PRIVACY_REPORT.md",
    "plot": "top1_vs_strength.png",
}


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_outputs(
    out: str,
    scores: Sequence[SettingScore],
    face_size: Mapping[str, float],
    title: str,
    notes: Sequence[str] = (),
) -> dict[str, str]:
    """Writes ``OUTPUT_FILES`` under ``out`` (a local folder or an fsspec URL); returns their
    URIs by kind."""
    from blurbeam.shards import join_output, write_bytes

    uris = {kind: join_output(out, name) for kind, name in OUTPUT_FILES.items()}
    summaries = [s.summary() for s in scores]
    contents = {
        "rows": _parquet_bytes(rows_table(scores, face_size)),
        "summary": _parquet_bytes(pa.Table.from_pylist(summaries)),
        "summary_json": json.dumps(summaries, indent=1, default=_json_default).encode(),
        "plot": plot_top1(scores),
        "report": markdown(scores, title, notes, plot_name=OUTPUT_FILES["plot"]).encode(),
    }
    for kind, data in contents.items():
        write_bytes(uris[kind], data)
    return uris


def _json_default(o):
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def _pct(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{100 * x:.{digits}f}%"


def verdict(s: SettingScore) -> str:
    if s.passes:
        return "pass"
    if s.top1_max.value >= WEAK_TOP1:
        return "FAIL (weak)"
    return "fail"


def markdown_table(scores: Sequence[SettingScore]) -> str:
    head = (
        "| method | strength | faces | top-1 worst attacker [95% CI] | worst attacker | "
        "top-1 any attacker | chance | verification re-id (worst) [95% CI] | impostor rate | "
        "verdict |\n"
        "|---|---:|---:|---|---|---|---:|---|---|---|\n"
    )
    lines = []
    for s in sorted(scores, key=lambda s: (s.method, s.mask_scale, s.strength)):
        lines.append(
            f"| {s.method} | {s.label} | {s.n_faces} | {s.top1_max.fmt()} | "
            f"{s.worst_attacker} | {s.top1_any.fmt()} | {_pct(s.chance, 2)} | {s.reid.fmt()} | "
            f"{s.impostor.fmt(2)} | {verdict(s)} |"
        )
    return head + "\n".join(lines) + "\n"


def attacker_table(scores: Sequence[SettingScore]) -> str:
    attackers: list[str] = []
    for s in scores:
        attackers += [a for a in s.attackers if a not in attackers]
    head = "| method | strength | " + " | ".join(attackers) + " |\n"
    head += "|---|---:|" + "---:|" * len(attackers) + "\n"
    lines = []
    for s in sorted(scores, key=lambda s: (s.method, s.mask_scale, s.strength)):
        cells = [_pct(s.top1[a].value) if a in s.top1 else "-" for a in attackers]
        lines.append(f"| {s.method} | {s.label} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def markdown(
    scores: Sequence[SettingScore], title: str, notes: Sequence[str] = (), plot_name: str = ""
) -> str:
    parts = [f"# {title}\n"]
    parts += [f"{n}\n" for n in notes]
    small = [s for s in scores if s.gallery_size < MIN_GALLERY]
    if small:
        parts.append(
            f"**Warning:** gallery of {small[0].gallery_size} faces, fewer than {MIN_GALLERY}: "
            "top-1 identification is easier than with a large gallery and its chance level is "
            "high; read these rates with that in mind.\n"
        )
    parts.append(
        f"Identity model: SFace (OpenCV), same person when cosine >= {COSINE_THRESHOLD}. "
        "Anonymized faces are aligned with the original face's landmarks. Targets: top-1 "
        f"identification <= {_pct(TARGET_TOP1, 0)} under every attacker and verification "
        f"re-identification <= {_pct(TARGET_REID, 0)} under the worst attacker; a setting with "
        f">= {_pct(WEAK_TOP1, 0)} top-1 is flagged weak. Intervals: Wilson 95% (bootstrap over "
        "faces for the impostor rate).\n"
    )
    parts.append("## Summary per method and strength\n")
    parts.append(markdown_table(scores))
    parts.append("\n## Top-1 identification per attacker\n")
    parts.append(attacker_table(scores))
    if plot_name:
        parts.append(f"\n![top-1 identification against strength]({plot_name})\n")
    return "\n".join(parts)


def plot_top1(scores: Sequence[SettingScore]) -> bytes:
    """Top-1 identification (worst attacker and no attacker, 95% CI) against strength, one panel
    per method with more than one strength; wider-mask variants as extra points; PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({s.method for s in scores if s.method != "solid"}) or ["solid"]
    ncols = min(3, len(methods))
    nrows = int(math.ceil(len(methods) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False)
    for ax, method in zip(axes.flat, methods, strict=False):
        mine = [s for s in scores if s.method == method]
        masks = sorted({s.mask_scale for s in mine})
        for mask in masks:
            ss = sorted((s for s in mine if s.mask_scale == mask), key=lambda s: s.strength)
            x = [s.strength for s in ss]
            suffix = "" if mask == 1.3 else f", mask {mask:g}"
            series = [("worst attacker", lambda s: s.top1_max, "o-")]
            if mask == 1.3:
                series.append(("no attacker", lambda s: s.top1.get("none", s.top1_max), "s--"))
            for label, get, style in series:
                y = [100 * get(s).value for s in ss]
                lo = [100 * (get(s).value - get(s).lo) for s in ss]
                hi = [100 * (get(s).hi - get(s).value) for s in ss]
                ax.errorbar(x, y, yerr=[lo, hi], fmt=style, capsize=3, label=label + suffix)
        base = sorted(mine, key=lambda s: s.strength)
        ax.plot([s.strength for s in base], [100 * s.chance for s in base], "k:", label="chance")
        ax.axhline(100 * TARGET_TOP1, color="g", ls="--", lw=0.8, label="target")
        ax.set_title(method)
        ax.set_xlabel(f"strength ({STRENGTH_MEANS.get(method, '')})", fontsize=8)
        ax.set_ylabel("top-1 identification (%)")
        ax.set_ylim(0, 100)
        if method == "pixelate":
            ax.set_xscale("log")
            ticks = sorted({s.strength for s in mine})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(methods) :]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()

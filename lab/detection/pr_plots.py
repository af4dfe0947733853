"""Precision-recall plots (matplotlib, no display needed)."""

from __future__ import annotations

import io

from blurbeam.lab.detection.wider_ap import LevelResult


def pr_curve_png(result: LevelResult, label: str = "") -> bytes:
    """The level's precision-recall curve as PNG bytes (written by the caller through fsspec)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    name = f"{label} " if label else ""
    ax.plot(result.recall, result.precision, lw=2, label=f"{name}AP {result.ap:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"WIDER FACE {result.level} ({result.face_count} faces)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

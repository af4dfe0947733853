"""Precision-recall plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from blurbeam.lab.detection.wider_ap import LevelResult


def save_pr_curve(result: LevelResult, path: str | Path, label: str = "") -> Path:
    """Write the level's precision-recall curve as a PNG; returns the path."""
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path

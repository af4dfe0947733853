"""Inline SVG bar charts for the review site (no plotting library at review time). Pure code."""

from __future__ import annotations

from html import escape


def bar_chart(
    labels: list[str],
    counts: list[int],
    title: str,
    x_label: str,
    width: int = 460,
    height: int = 220,
    color: str = "#3b6ea8",
) -> str:
    """A bar chart as an ``<svg>`` element: one bar per label, its count above it."""
    left, right, top, bottom = 44, 10, 28, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts, default=0) or 1
    n = max(len(counts), 1)
    step = plot_w / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" class="chart-title">'
        f"{escape(title)}</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#555"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#555"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" class="tick">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" class="tick">0</text>',
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" '
        f'class="axis">{escape(x_label)}</text>',
    ]
    label_every = max(1, -(-n // 12))
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        h = plot_h * count / peak
        x = left + i * step
        y = top + plot_h - h
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{escape(label)}: {count}</title></rect>'
        )
        if count:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{y - 2:.1f}" text-anchor="middle" '
                f'class="count">{count}</text>'
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f'class="tick">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def faces_per_image(num_faces: list[int], cap: int = 10) -> str:
    """Histogram of faces per image, the last bar ``cap`` or more."""
    counts = [0] * (cap + 1)
    for n in num_faces:
        counts[min(n, cap)] += 1
    labels = [str(i) for i in range(cap)] + [f"{cap}+"]
    return bar_chart(labels, counts, f"Faces per image ({len(num_faces)} images)", "faces")


def score_histogram(scores: list[float], bins: int = 20) -> str:
    """Histogram of detection scores over [0, 1]."""
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, max(0, int(s * bins)))] += 1
    labels = [f"{i / bins:.2f}" for i in range(bins)]
    return bar_chart(
        labels, counts, f"Detection scores ({len(scores)} faces)", "score", color="#a85b3b"
    )

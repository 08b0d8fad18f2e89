"""A benchmark report drawn as a PNG: each figure as a small panel, ours beside the reference.

One panel per figure, because a case's figures have different units and scales (ops/s in
millions beside KiB per connection): each panel has its own axis in the figure's unit, a bar
for ours and a grey bar for the reference measured in the same run, both labelled with their
value, and a title giving the ratio and the issue's target where there is one. A figure that
could not be measured says so in its panel instead of drawing a bar of zero.

matplotlib draws it, through its object API and the Agg canvas: no pyplot, so no global
figure state and no GUI backend whatever the environment says. Its import costs about 0.8 s
and 56 MB, and drawing 17 panels about 2 s (the 2-CPU machine of docs/benchmarks.md, loaded),
paid once after the case has measured, never during a measurement; that is why the import
sits in :func:`draw_report`.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from xiaozhi_bench.runner import Figure, Report, format_number

__all__ = ["ChartsUnavailable", "draw_report"]

_COLUMNS = 3
_OURS, _REFERENCE = "#1f77b4", "#a0a0a0"
_PANEL_INCHES = (4.6, 1.55)  # width, height of one figure's panel
_DPI = 100


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed: the JSON is written, the chart is not."""


def _measured(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _title(figure: Figure) -> str:
    extras = []
    if figure.ratio is not None and math.isfinite(figure.ratio):
        extras.append(f"ratio {figure.ratio:.2f}")
    if figure.target:
        extras.append(f"target {figure.target}")
    title = figure.name + (f"  ({', '.join(extras)})" if extras else "")
    return "\n".join(textwrap.wrap(title, 44)[:3])  # a long reference label moves the axes right


def draw_report(report: Report, path: Path) -> Path:
    """Draw ``report`` into the PNG at ``path`` (its folder must exist); return ``path``.

    Raises:
        ChartsUnavailable: matplotlib is missing; the message says how to install it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as Canvas
        from matplotlib.ticker import EngFormatter
    except ImportError as err:
        raise ChartsUnavailable(
            f"{path.name}: matplotlib is not installed ({err}); "
            "pip install 'xiaozhi-hub[bench]' draws the charts"
        ) from err

    count = max(1, len(report.figures))
    columns = min(_COLUMNS, count)
    rows = math.ceil(count / columns)
    width, height = _PANEL_INCHES
    canvas = Canvas(figsize=(width * columns, height * rows + 0.7), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(canvas)
    canvas.suptitle(
        f"xiaozhi bench {report.case}  {report.started_at}  (ours: blue; reference: grey, "
        "measured in the same run)",
        fontsize=10,
    )
    axes = canvas.subplots(rows, columns, squeeze=False).flatten()
    for ax, figure in zip(axes, report.figures, strict=False):
        ax.set_title(_title(figure), fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        bars = [("ours", figure.value, _OURS)]
        if figure.reference is not None:
            bars.append((figure.reference_name or "reference", figure.reference, _REFERENCE))
        labels = ["\n".join(textwrap.wrap(label, 24)) for label, _, _ in bars]
        values = [value if _measured(value) else 0.0 for _, value, _ in bars]
        positions = list(range(len(bars)))[::-1]  # ours on top
        ax.barh(positions, values, color=[color for _, _, color in bars], height=0.6)
        ax.set_yticks(positions, labels)
        ax.set_xlabel(figure.unit, fontsize=7)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 1.5M, not an axis offset of 1e6
        top = max(values) if any(values) else 1.0
        ax.set_xlim(0, top * 1.35)
        for position, (_, value, _) in zip(positions, bars, strict=True):
            text = f"{format_number(value)} {figure.unit}" if _measured(value) else "not measured"
            ax.text(top * 0.01 if not _measured(value) else value, position, f" {text}",
                    va="center", fontsize=7)  # fmt: skip
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[len(report.figures) :]:
        ax.set_visible(False)
    canvas.savefig(path, format="png")
    return path

"""The report's plots: lines by series over a shared x axis, and grouped bars. PNG, no display."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Row = dict[str, Any]


def lines(
    rows: list[Row],
    x: str,
    y: str | Callable[[Row], float | None],
    label: Callable[[Row], str],
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    log_x: bool = True,
    log_y: bool = False,
) -> Path:
    """One line per label, through (row[x], y) for every row with a value."""
    value = (lambda row: row.get(y)) if isinstance(y, str) else y
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if (point := value(row)) is not None:
            series.setdefault(label(row), []).append((row[x], point))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, points in sorted(series.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    if log_x:
        axes.set_xscale("log")
    if log_y:
        axes.set_yscale("log")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(True, which="both", alpha=0.3)
    if series:
        axes.legend()
    return _save(figure, path)


def bars(
    rows: list[Row],
    group: str,
    series: str,
    value: Callable[[Row], float | None],
    path: Path,
    title: str,
    ylabel: str,
    group_label: Callable[[Any], str] = str,
) -> Path:
    """Bars of value, grouped by row[group], one colour per row[series]."""
    names = list(dict.fromkeys(row[series] for row in rows))
    groups = sorted({row[group] for row in rows})
    width = 0.8 / max(len(names), 1)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for index, name in enumerate(names):
        heights = [
            next((value(r) or 0 for r in rows if r[series] == name and r[group] == g), 0)
            for g in groups
        ]
        axes.bar([g + index * width for g in range(len(groups))], heights, width, label=name)
    axes.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))])
    labels = [group_label(g) for g in groups]
    # Long names (deploy steps) would run into each other on a flat axis.
    slanted = any(len(text) > 12 for text in labels) and len(labels) > 4
    axes.set_xticklabels(labels, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    axes.set(ylabel=ylabel, title=title)
    axes.grid(True, axis="y", alpha=0.3)
    if names:
        axes.legend(fontsize="small")
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

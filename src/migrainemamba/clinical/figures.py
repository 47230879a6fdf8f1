"""Figures of the clinician report, as PNG bytes.

matplotlib's object API (``Figure``, rendered by Agg) rather than pyplot: no
global figure state and no backend switch, so requests served on several threads
can draw at once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

# calendar cell states, in colour order
NOT_LOGGED, LOGGED, MEDICATED, MIGRAINE, MIGRAINE_MEDICATED, OUTSIDE = range(6)
CALENDAR_COLOURS = ["#f2f2f2", "#cfe8cf", "#f6d58e", "#e8846b", "#a4262c", "#ffffff"]
CALENDAR_LABELS = [
    "not logged",
    "logged, no migraine",
    "acute medication",
    "migraine",
    "migraine + acute medication",
]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130, bbox_inches="tight")
    return buffer.getvalue()


def _months(start: date, end: date) -> list[date]:
    months, current = [], start.replace(day=1)
    while current <= end:
        months.append(current)
        current = (current + timedelta(days=32)).replace(day=1)
    return months


def attack_calendar(
    start: date, end: date, logged: set[date], migraine: set[date], medicated: set[date]
) -> bytes:
    """One row per month, one cell per day: logged, migraine, acute medication."""
    months = _months(start, end)
    grid = np.full((len(months), 31), OUTSIDE)
    for i, month in enumerate(months):
        for d in range(31):
            try:
                day = month.replace(day=d + 1)
            except ValueError:
                continue
            if not start <= day <= end:
                continue
            state = NOT_LOGGED
            if day in logged:
                state = LOGGED
            if day in medicated:
                state = MEDICATED
            if day in migraine:
                state = MIGRAINE_MEDICATED if day in medicated else MIGRAINE
            grid[i, d] = state
    fig = Figure(figsize=(8.0, 0.35 * len(months) + 1.0))
    ax = fig.subplots()
    ax.imshow(grid, cmap=ListedColormap(CALENDAR_COLOURS), vmin=0, vmax=5, aspect="auto")
    ax.set_yticks(range(len(months)), [f"{m:%b %Y}" for m in months], fontsize=8)
    ax.set_xticks(range(0, 31, 5), [str(d + 1) for d in range(0, 31, 5)], fontsize=8)
    ax.set_xticks(np.arange(-0.5, 31, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(months), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in CALENDAR_COLOURS[:5]]
    ax.legend(
        handles,
        CALENDAR_LABELS,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=3,
        fontsize=7,
        frameon=False,
    )
    ax.set_title("Attack calendar (day of month)", fontsize=10)
    return _png(fig)


def monthly_days(months: Sequence[dict[str, Any]]) -> bytes:
    """Migraine, headache and acute-medication days per month, with the ICHD-3 day thresholds."""
    labels = [f"{m['month']:%b %y}" for m in months]
    x = np.arange(len(months))
    fig = Figure(figsize=(8.0, 3.0))
    ax = fig.subplots()
    width = 0.27
    ax.bar(
        x - width,
        [m["migraine_days"] for m in months],
        width,
        label="migraine days",
        color="#a4262c",
    )
    ax.bar(x, [m["headache_days"] for m in months], width, label="headache days", color="#e8846b")
    ax.bar(
        x + width,
        [m["acute_medication_days"] for m in months],
        width,
        label="acute medication days",
        color="#f0b429",
    )
    ax.axhline(10, color="#555", linestyle="--", linewidth=0.8)
    ax.axhline(15, color="#555", linestyle=":", linewidth=0.8)
    ax.text(
        len(months) - 0.5, 10.2, "10 d: triptan/opioid/ergot/combination", fontsize=6, ha="right"
    )
    ax.text(
        len(months) - 0.5, 15.2, "15 d: simple analgesics; headache days", fontsize=6, ha="right"
    )
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("days per month", fontsize=8)
    ax.set_ylim(0, 31)
    ax.legend(fontsize=7, ncol=3, loc="upper left", frameon=False)
    ax.set_title("Monthly migraine and acute-medication days", fontsize=10)
    return _png(fig)


def questionnaire_history(points: Sequence[dict[str, Any]], start: date, end: date) -> bytes:
    """MIDAS and HIT-6 scores over the period, with the grade bands (dashed)."""
    fig = Figure(figsize=(8.0, 2.6))
    axes = fig.subplots(1, 2)
    for ax, instrument, bands, top in (
        (axes[0], "MIDAS", (5, 10, 20), 60),
        (axes[1], "HIT-6", (49, 55, 59), 78),
    ):
        series = [p for p in points if p["instrument"] == instrument]
        for b in bands:
            ax.axhline(b + 0.5, color="#bbb", linewidth=0.7, linestyle="--")
        if series:
            ax.plot(
                [p["date"] for p in series],
                [p["score"] for p in series],
                marker="o",
                color="#1f4e79",
            )
            ax.set_ylim(
                36 if instrument == "HIT-6" else 0, max(top, max(p["score"] for p in series) + 5)
            )
        else:
            ax.text(0.5, 0.5, "none submitted", transform=ax.transAxes, ha="center", fontsize=8)
        ax.set_xlim(start, end)
        ax.set_title(instrument, fontsize=9)
        ax.tick_params(labelsize=7)
        fig.autofmt_xdate()
    return _png(fig)

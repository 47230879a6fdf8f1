"""The evaluation table as Markdown (for reports, notes and the README)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrainemamba.features import PHASES

COLUMNS = ("auc", "within_person_auc", "brier_skill", "ece", "within_person_risk_corr")


def _cell(values: Mapping[str, float], key: str) -> str:
    if key not in values:
        return "–"
    if f"{key}_lo" in values:
        return f"{values[key]:.3f} [{values[key + '_lo']:.3f}, {values[key + '_hi']:.3f}]"
    return f"{values[key]:.3f}"


def markdown_table(scores: Mapping[str, Any], population: str = "all") -> str:
    header = (
        "| phase | model | days | onsets | pooled AUC | within-person AUC | Brier skill | ECE "
        "| within-person risk corr | lift captured (AUC) |"
    )
    lines = [header, "|" + "---|" * 10]
    for phase in PHASES:
        for model, values in sorted(scores.get(population, {}).get(phase, {}).items()):
            lines.append(
                f"| {phase} | {model} | {int(values.get('n_days', 0))} | {int(values.get('n_onsets', 0))} | "
                + " | ".join(_cell(values, k) for k in COLUMNS)
                + f" | {_cell(values, 'lift_captured_auc')} |"
            )
        oracle = next(iter(scores.get(population, {}).get(phase, {}).values()), {})
        if "oracle_auc" in oracle:
            lines.append(
                f"| {phase} | *oracle* | | | {_cell(oracle, 'oracle_auc')} | {_cell(oracle, 'oracle_within_person_auc')} "
                f"| {_cell(oracle, 'oracle_brier_skill')} | {_cell(oracle, 'oracle_ece')} "
                f"| {_cell(oracle, 'oracle_within_person_risk_corr')} | 1 |"
            )
    return "\n".join(lines)


def paired_table(scores: Mapping[str, Any], population: str = "all") -> str:
    """Each model minus each other model, paired 95% intervals (lower ECE is better)."""
    lines = [
        "| phase | model | vs | Δ pooled AUC | Δ within-person AUC | Δ Brier skill | Δ ECE | Δ within-person risk corr |",
        "|" + "---|" * 8,
    ]
    for phase in PHASES:
        models = scores.get(population, {}).get(phase, {})
        for model, values in sorted(models.items()):
            for other in sorted(models):
                if f"auc_minus_{other}" in values:
                    cells = " | ".join(_cell(values, f"{m}_minus_{other}") for m in COLUMNS)
                    lines.append(f"| {phase} | {model} | {other} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    report = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "data/evaluation/report.json").read_text())
    for population in ("all", "cold_start"):
        print(f"\n### {population}\n")
        print(markdown_table(report["scores"], population))
        print()
        print(paired_table(report["scores"], population))

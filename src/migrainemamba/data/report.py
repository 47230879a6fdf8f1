"""Data-quality report for a prepared cohort: figures, JSON and headline metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.metrics import (
    expected_calibration_error,
    pooled_auc,
    within_person_auc,
)

DAYS_PER_MONTH = 30.44
# Headache days per month in people with migraine: AMPP 2005 (docs/clinical_sources.md).
AMPP_BANDS: tuple[tuple[str, float, float, float], ...] = (
    ("0_3", 0.0, 4.0, 0.68),
    ("4_7", 4.0, 8.0, 0.18),
    ("8_14", 8.0, 15.0, 0.08),
    ("15_plus", 15.0, float("inf"), 0.07),
)
MIN_REPORTED_DAYS_FOR_BANDS = 28


def band_shares(attack_days_per_month: np.ndarray) -> dict[str, float]:
    values = np.asarray(attack_days_per_month, float)
    if len(values) == 0:
        return {name: float("nan") for name, *_ in AMPP_BANDS}
    return {name: float(((values >= lo) & (values < hi)).mean()) for name, lo, hi, _ in AMPP_BANDS}


def logged_attack_days_per_month(daily_logs: pl.DataFrame) -> pl.DataFrame:
    """Per user: attack days per month over the days with a reported outcome."""
    return (
        daily_logs.filter(pl.col("migraine_occurred").is_not_null())
        .group_by("user_id")
        .agg(
            reported_days=pl.len(),
            attack_days_per_month=pl.col("migraine_occurred").mean() * DAYS_PER_MONTH,
        )
        .sort("user_id")
    )


def diary_stats(cohort: PreparedCohort) -> dict[str, Any]:
    logs = cohort.daily_logs
    spans = logs.group_by("user_id").agg(
        logged=pl.len(), span=(pl.col("date").max() - pl.col("date").min()).dt.total_days() + 1
    )
    return {
        "n_users": cohort.users.height,
        "n_users_with_logs": spans.height,
        "n_log_rows": logs.height,
        "n_quarantined_rows": cohort.quarantine.height,
        "missing_day_share": float(1 - spans["logged"].sum() / max(spans["span"].sum(), 1)),
        "median_diary_days": float(spans["span"].median() or 0),
        "share_users_90_days": float((spans["span"] >= 90).mean()),
        "outcome_unreported_share": float(logs["migraine_occurred"].is_null().mean()),
        "attack_day_share": float(logs["migraine_occurred"].mean() or 0),
    }


def truth_metrics(cohort: PreparedCohort) -> dict[str, Any]:
    """How well the generating probability and the oracle forecast the simulated onsets."""
    assert cohort.truth_days is not None and cohort.truth_users is not None
    days = cohort.truth_days.filter(pl.col("eligible"))
    y = days["onset"].to_numpy()
    user = days["user_id"].to_numpy()
    out: dict[str, Any] = {"onset_rate": float(y.mean())}
    for name in ("p_true", "p_oracle"):
        p = days[name].to_numpy()
        out[f"auc_{name}"] = pooled_auc(y, p)
        out[f"within_person_auc_{name}"], _ = within_person_auc(user, y, p)
        out[f"ece_{name}"] = expected_calibration_error(y, p, n_bins=10)
        out[f"ece_quantile20_{name}"] = expected_calibration_error(y, p, n_bins=20, strategy="quantile")
    out["band_shares_true"] = band_shares(cohort.truth_users["attack_days_per_month"].to_numpy())
    return out


def quality_report(cohort: PreparedCohort) -> dict[str, Any]:
    per_user = logged_attack_days_per_month(cohort.daily_logs).filter(
        pl.col("reported_days") >= MIN_REPORTED_DAYS_FOR_BANDS
    )
    report: dict[str, Any] = {
        "diary": diary_stats(cohort),
        "band_shares_ampp": {name: share for name, _, _, share in AMPP_BANDS},
        "band_shares_logged": band_shares(per_user["attack_days_per_month"].to_numpy()),
        "band_users_logged": per_user.height,
        "quarantine_reasons": (
            cohort.quarantine.group_by("reason").len().sort("len", descending=True).head(20).to_dicts()
            if cohort.quarantine.height
            else []
        ),
    }
    if cohort.simulated:
        report["truth"] = truth_metrics(cohort)
    return report


def plot_frequency(cohort: PreparedCohort, path: Path) -> None:
    """Attack days per month: histogram, and band shares against AMPP."""
    per_user = logged_attack_days_per_month(cohort.daily_logs).filter(
        pl.col("reported_days") >= MIN_REPORTED_DAYS_FOR_BANDS
    )
    fig, (ax_hist, ax_bands) = plt.subplots(1, 2, figsize=(11, 4))
    series = {"logged diary": per_user["attack_days_per_month"].to_numpy()}
    if cohort.truth_users is not None:
        series["simulated truth"] = cohort.truth_users["attack_days_per_month"].to_numpy()
    bins = np.arange(0, 26, 1)
    for label, values in series.items():
        ax_hist.hist(np.clip(values, 0, 25), bins=bins, alpha=0.55, label=label)
    ax_hist.set(xlabel="attack days per month", ylabel="users", title="Attack frequency per person")
    ax_hist.legend()
    names = [name for name, *_ in AMPP_BANDS]
    x = np.arange(len(names))
    width = 0.8 / (len(series) + 1)
    ax_bands.bar(x, [share for *_, share in AMPP_BANDS], width, label="AMPP 2005", color="grey")
    for i, (label, values) in enumerate(series.items(), start=1):
        ax_bands.bar(x + i * width, list(band_shares(values).values()), width, label=label)
    ax_bands.set_xticks(x + width * len(series) / 2, names)
    ax_bands.set(xlabel="attack days per month", ylabel="share of users", title="Bands vs epidemiology")
    ax_bands.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timelines(cohort: PreparedCohort, path: Path, n_users: int = 4, seed: int = 0) -> None:
    """A few diaries: logged days, attacks, stress and sleep (and p_oracle when simulated)."""
    logs = cohort.daily_logs
    counts = logs.group_by("user_id").agg(n=pl.len(), attacks=pl.col("migraine_occurred").sum())
    pool = counts.filter((pl.col("n") >= 60) & (pl.col("attacks") >= 3))
    if pool.height == 0:
        pool = counts
    chosen = pool.sample(min(n_users, pool.height), seed=seed)["user_id"].sort().to_list()
    fig, axes = plt.subplots(len(chosen), 1, figsize=(12, 2.3 * max(len(chosen), 1)), squeeze=False)
    for ax, user in zip(axes[:, 0], chosen, strict=True):
        rows = logs.filter(pl.col("user_id") == user).sort("date")
        start = rows["date"].min()
        day = (rows["date"] - start).dt.total_days().to_numpy()
        attack = rows["migraine_occurred"].fill_null(False).to_numpy()
        ax.bar(day[attack], np.ones(attack.sum()) * 10, width=1.0, color="tab:red", alpha=0.3, label="attack day")
        ax.plot(day, rows["stress_level"].to_numpy(), ".", ms=3, color="tab:orange", label="stress (1-10)")
        ax.plot(day, rows["sleep_hours"].to_numpy(), ".", ms=3, color="tab:blue", label="sleep (h)")
        ax.set_ylim(0, 12)
        ax.set_ylabel(user)
        if cohort.truth_days is not None:
            truth = cohort.truth_days.filter(pl.col("user_id") == user, pl.col("date") <= rows["date"].max())
            tday = (truth["date"] - start).dt.total_days().to_numpy()
            right = ax.twinx()
            right.plot(tday, truth["p_oracle"].to_numpy(), lw=0.8, color="black", label="p_oracle")
            right.set_ylim(0, 1)
            right.set_ylabel("p_oracle")
    axes[0, 0].legend(loc="upper left", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("diary day")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_oracle_reliability(cohort: PreparedCohort, path: Path, n_bins: int = 15) -> None:
    assert cohort.truth_days is not None
    days = cohort.truth_days.filter(pl.col("eligible"))
    y = days["onset"].to_numpy().astype(float)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name in ("p_true", "p_oracle"):
        p = days[name].to_numpy()
        edges = np.quantile(p, np.linspace(0, 1, n_bins + 1))
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
        ax.plot(
            [p[idx == b].mean() for b in range(n_bins)],
            [y[idx == b].mean() for b in range(n_bins)],
            "o-", ms=3, label=name,
        )
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="forecast", ylabel="observed onset rate", title="Simulator truth: reliability", xlim=(0, 0.8), ylim=(0, 0.8))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figures(cohort: PreparedCohort, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "attack_frequency.png", out_dir / "timelines.png"]
    plot_frequency(cohort, paths[0])
    plot_timelines(cohort, paths[1])
    if cohort.simulated:
        paths.append(out_dir / "oracle_reliability.png")
        plot_oracle_reliability(cohort, paths[-1])
    return paths

"""CPU cost of the personal model for one user, and the personalize stage on a cohort.

- online update after one new outcome (the posterior of one person, 180 days of diary);
- one full refit of that person (Newton to the Laplace mode on their 180 days);
- one person's forecast end to end replaying the diary (diary rows -> features ->
  population offset -> prequential posterior -> forecast), 180 days of diary;
- the service's stored state (``service.personal_state``): moving it over one new outcome
  (features of the diary + ``PersonalModel.resume`` by one day), with a weekly refit due, and
  rebuilding it from the whole diary (a stale state); the forecast from a stored state; the
  forecast's explanation replaying the diary and from the stored state (what the service does);
- the stage's own timings (``metrics/personalize.json`` of the cohort given by --metrics).

The user and the model come from a trained personal model (``--model``, default
data/models/personal) and a prepared cohort (``--prepared``). Writes benchmarks/results/personal.json.
Run: python benchmarks/bench_personal.py [--reps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl

from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.features import build_features
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.bayes_logistic import Rows, fit_laplace, online_update
from migrainemamba.models.personal import Diaries, PersonalModel, personalise_user

OUT = Path(__file__).parent / "results" / "personal.json"
DIARY_DAYS = 180


def _median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--model", default="data/models/personal")
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--metrics", default="metrics/personalize.json")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    model = PersonalModel.load(args.model)
    cohort = PreparedCohort.read(Path(args.prepared))
    counts = cohort.daily_logs.group_by("user_id").len()
    uid = counts.filter(pl.col("len") >= DIARY_DAYS + 1).sort("user_id")["user_id"][0]
    user = cohort.users.filter(pl.col("user_id") == uid)
    logs = cohort.daily_logs.filter(pl.col("user_id") == uid).sort("date").head(DIARY_DAYS + 1)
    history, today = logs.head(DIARY_DAYS), logs["date"][DIARY_DAYS]
    features = build_features(user, history)
    diaries, _ = Diaries.from_features(features, model.offset(features), model.design(features))
    labelled = ~np.isnan(diaries.y)
    rows = Rows(diaries.x[labelled], diaries.offset[labelled], diaries.y[labelled], diaries.group[labelled], 1)
    k = len(model.prior_var)
    before = rows.subset(np.arange(len(rows.y)) < len(rows.y) - 1)
    state = fit_laplace(before, np.zeros(k), model.prior_var)
    last = slice(len(rows.y) - 1, None)
    results = {
        "user_id": uid,
        "diary_days": DIARY_DAYS,
        "labelled_days": int(labelled.sum()),
        "terms": k,
        "online_update_after_an_outcome_ms": _median_ms(lambda: online_update(state, rows.x[last], rows.offset[last], rows.y[last]), args.reps),
        "full_refit_ms": _median_ms(lambda: fit_laplace(rows, np.zeros(k), model.prior_var), args.reps),
        "forecast_end_to_end_ms": _median_ms(lambda: personalise_user(model, user, history, [today]), max(5, args.reps // 5)),
    }
    # the service's stored state: grid days 0..n-1 are the 180 diary days (consecutive: +1 for today)
    n = features.height
    week = (n // model.config.refit_every_days) * model.config.refit_every_days
    yesterday, before_week = model.resume(features, None, n - 1), model.resume(features, None, week - 1)
    target = pl.DataFrame({"user_id": [uid], "date": [today]})
    with_today = build_features(user, history, forecast_dates=target)
    stored = model.resume(features, None, n)
    today_batch = ForecastBatch(user, history, target, precomputed=with_today)
    results |= {
        "service_state_update_after_an_outcome_ms": _median_ms(
            lambda: model.resume(build_features(user, history), yesterday, n), args.reps
        ),
        "service_state_update_with_weekly_refit_ms": _median_ms(
            lambda: model.resume(build_features(user, history), before_week, week), args.reps
        ),
        "service_state_rebuild_ms": _median_ms(lambda: model.resume(build_features(user, history), None, n), max(5, args.reps // 5)),
        "service_forecast_from_stored_state_ms": _median_ms(
            lambda: model.last_day(with_today, model.resume(with_today, stored, n)).probability, args.reps
        ),
        # the forecast's explanation (every group): replaying the diary, or from the resumed state
        # (what the service does since the forecast hook explains; the offset model's own explain included)
        "explain_replaying_the_diary_ms": _median_ms(lambda: model.explain(today_batch, top_k=None), max(5, args.reps // 5)),
        "service_explain_from_stored_state_ms": _median_ms(
            lambda: model.explain_last(today_batch, model.last_day(with_today, model.resume(with_today, stored, n))), args.reps
        ),
    }
    metrics_path = Path(args.metrics)
    if metrics_path.is_file():
        results["stage"] = json.loads(metrics_path.read_text()).get("timings", {})
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""The service side of the clinical diary: a user's rows from the database into ``migrainemamba.clinical``.

- :func:`summary_for`: the monthly summary, the ICHD-3 overuse check and the
  preventive before/after of one user (``GET /clinical/summary``).
- :func:`report_for`: the clinician report's data; the trigger map is the
  service's own insights at the time of the report (the serving model's
  explanations and the diary's onset rates), labelled with that source.
- CLI: ``python -m migrainemamba.service.clinical --user-id U --format pdf --out report.pdf
  [--start YYYY-MM-DD] [--end YYYY-MM-DD]`` renders a report from the service's
  database (``DATABASE_URL`` / ``.env``, as the service), offline.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from migrainemamba.clinical.overuse import check_overuse
from migrainemamba.clinical.questionnaires import score_stored
from migrainemamba.clinical.report import (
    ReportData,
    TriggerItem,
    build_report,
    render_html,
    render_pdf,
)
from migrainemamba.clinical.summary import monthly_summary, preventive_effect
from migrainemamba.data.schema import ACUTE_MEDICATION_CLASSES
from migrainemamba.service import clinical_crud, crud
from migrainemamba.service import insights as service_insights
from migrainemamba.service.forecasting import Forecaster, logs_frame, users_frame
from migrainemamba.service.models_db import User
from migrainemamba.service.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_REPORT_DAYS = 183  # about six months, what a clinic visit usually reviews


def default_period(start: date | None, end: date | None, today: date) -> tuple[date, date]:
    end = end or today
    return start or end - timedelta(days=DEFAULT_REPORT_DAYS - 1), end


def summary_for(
    session: Session, user: User, start: date | None, end: date | None
) -> dict[str, Any]:
    logs = logs_frame(crud.all_logs(session, user.user_id))
    meds = clinical_crud.medications_frame(clinical_crud.list_medications(session, user.user_id))
    summary = monthly_summary(logs, meds, start, end)
    overuse = check_overuse(summary, user.user_id)
    months = [
        {
            **{
                k: m[k]
                for k in (
                    "month",
                    "days_in_month",
                    "days_logged",
                    "migraine_days",
                    "headache_days",
                    "acute_medication_days",
                    "attacks",
                    "attacks_treated",
                    "mean_relief_2h",
                )
            },
            "coverage": round(m["coverage"], 3),
            "medication_days_by_class": {c: m[f"days_{c}"] for c in ACUTE_MEDICATION_CLASSES},
        }
        for m in summary.to_dicts()
    ]
    upto_end = logs if end is None else logs.filter(logs["date"] <= end)
    meds_end = meds if end is None else meds.filter(meds["date"] <= end)
    return {
        "user_id": user.user_id,
        "start": start,
        "end": end,
        "months": months,
        "overuse": overuse.as_dict(),
        "preventives": preventive_effect(upto_end, meds_end).to_dicts(),
    }


def _trigger_items(insight: dict[str, Any]) -> list[TriggerItem]:
    items = [
        TriggerItem(
            name=t["name"],
            role="raises risk (model)",
            evidence=f"model: raises the forecast's odds x{t['odds_multiplier']:.2f} on average; among the day's "
            f"top 3 factors on {t['days_in_top']} days",
        )
        for t in insight["model_triggers"]
    ]
    for t in insight["diary_triggers"]:
        rr = t["relative_risk"]
        if rr is None or t["days_present"] < service_insights.MIN_DAYS_PRESENT or rr == 1:
            continue
        # a diary association with a smoothed ratio, not an established effect: said so
        role = "more attacks with it (diary)" if rr > 1 else "fewer attacks with it (diary)"
        items.append(
            TriggerItem(
                name=f"{t['name']} ({t['trigger'].replace('_', ' ')})",
                role=role,
                evidence=f"diary: attack onset on {t['onsets_present']} of {t['days_present']} days with it "
                f"vs {t['onsets_absent']} of {t['days_absent']} without (relative risk {rr:.2f})",
            )
        )
    return items


def _accuracy(session: Session, user_id: str, start: date, end: date, settings: Settings) -> dict[str, Any]:
    """The track record of the forecasts of ``start..end`` (``insights.track_record``, as the
    accuracy route), with the number of stored forecasts."""
    rows = crud.list_predictions(session, user_id, start, end)
    return {"n_predictions": len(rows), **service_insights.track_record_of(rows, settings, end)}


def report_for(
    session: Session,
    user: User,
    forecaster: Forecaster,
    settings: Settings,
    start: date,
    end: date,
    today: date,
) -> ReportData:
    users = users_frame(user)
    logs = logs_frame(crud.all_logs(session, user.user_id))
    meds = clinical_crud.medications_frame(clinical_crud.list_medications(session, user.user_id))
    questionnaires = [
        {
            "date": q.date,
            "instrument": q.instrument,
            "score": q.score,
            "grade": q.grade,
            "meaning": score_stored(q.instrument, q.answers).meaning,
        }
        for q in clinical_crud.list_questionnaires(session, user.user_id)
    ]
    insight = service_insights.triggers(
        forecaster, users, logs.filter(logs["date"] <= end), end, settings.insights_window_days
    )
    explains = (
        f"explanations of the serving model {insight['model_name']} {insight['model_version']} over the "
        f"{insight['window_days']} days to {end}"
        if insight["model_explains"]
        else f"the serving model ({insight['model_name']}) gives no explanations"
    )
    source = (
        f"MigraineMamba insights as of {today}: {explains}; diary onset rates with and without each "
        f"clinical trigger over the diary up to {end} (factors with at least "
        f"{service_insights.MIN_DAYS_PRESENT} days present)"
    )
    profile = {
        "age": user.age,
        "gender": user.gender,
        "attacks/month at onboarding": user.attacks_per_month,
    }  # type: ignore[attr-defined]
    return build_report(
        user.user_id,
        profile,
        logs,
        meds,
        questionnaires,
        start,
        end,
        today,
        _trigger_items(insight),
        source,
        _accuracy(session, user.user_id, start, end, settings),
    )


def render(data: ReportData, fmt: str) -> bytes:
    return render_pdf(data) if fmt == "pdf" else render_html(data).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Render a clinician report from the service's database."
    )
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--format", choices=("html", "pdf"), default="pdf")
    parser.add_argument("--start", type=date.fromisoformat, default=None)
    parser.add_argument("--end", type=date.fromisoformat, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from migrainemamba.service.db import make_engine, make_sessionmaker

    settings = Settings()
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    start, end = default_period(args.start, args.end, today)
    if start > end:
        parser.error(f"--start {start} is after --end {end}")
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            user = crud.get_user(session, args.user_id)
            if user is None:
                log.error("user %r not found in %s", args.user_id, engine.url.render_as_string())
                return 2
            data = report_for(
                session, user, Forecaster.from_settings(settings), settings, start, end, today
            )
    finally:
        engine.dispose()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(render(data, args.format))
    log.info("wrote %s (%s, %s to %s)", args.out, args.format, start, end)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The clinician report: one user and period, as HTML and as PDF, rendered offline.

Sections: diary adherence; attack calendar; monthly migraine, headache and
acute-medication days with the ICHD-3 medication-overuse check; acute
medication by class and relief; preventive treatment before/after; MIDAS and
HIT-6 history; the trigger and protector map (as given by the caller, labelled
with its source); forecast accuracy.

:func:`build_report` computes everything from contract tables plus what only the
caller knows (the trigger map and the stored forecasts' accuracy: the service
passes its own insights). :func:`render_html` uses Jinja2 with autoescaping and
inlines the figures as PNG data URIs; :func:`render_pdf` uses ReportLab (pure
Python, no system libraries) with the same figures and tables, so the PDF's text
carries the user's numbers.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl
from jinja2 import Environment, select_autoescape

from migrainemamba.clinical import figures
from migrainemamba.clinical.overuse import HEADACHE_DAYS_MIN, RULES, OveruseResult, check_overuse
from migrainemamba.clinical.summary import monthly_summary, preventive_effect
from migrainemamba.data.schema import ACUTE_MEDICATION_CLASSES, RELIEF_LEVELS

CLASS_LABELS = {
    "triptan": "triptans",
    "ergot": "ergots",
    "opioid": "opioids",
    "combination_analgesic": "combination analgesics",
    "simple_analgesic": "simple analgesics / NSAIDs",
    "gepant": "gepants",
    "ditan": "ditans",
    "other": "other acute",
}


@dataclass
class TriggerItem:
    name: str
    role: str  # e.g. "trigger (model)", "more attacks with it (diary)", "fewer attacks with it (diary)"
    evidence: str


@dataclass
class ReportData:
    user_id: str
    start: date
    end: date
    generated_on: date
    profile: dict[str, Any]
    adherence: dict[str, Any]
    months: list[dict[str, Any]]
    overuse: OveruseResult
    acute_by_class: list[dict[str, Any]]
    preventives: list[dict[str, Any]]
    questionnaires: list[dict[str, Any]]
    triggers: list[TriggerItem]
    trigger_source: str
    accuracy: dict[str, Any] | None
    calendar: dict[str, set[date]] = field(default_factory=dict)


def _adherence(logs: pl.DataFrame, meds: pl.DataFrame, start: date, end: date) -> dict[str, Any]:
    days = (end - start).days + 1
    logged = set(logs["date"].to_list()) | set(meds["date"].to_list())
    reported = logs.filter(pl.col("migraine_occurred").is_not_null()).height
    gap, longest = 0, 0
    for k in range(days):
        gap = 0 if start + timedelta(days=k) in logged else gap + 1
        longest = max(longest, gap)
    return {
        "days_in_period": days,
        "days_logged": len(logged),
        "share_logged": round(len(logged) / days, 3) if days else 0.0,
        "outcome_reported_days": reported,
        "longest_gap_days": longest,
    }


def _acute_by_class(meds: pl.DataFrame, migraine_days: set[date]) -> list[dict[str, Any]]:
    acute = meds.filter(pl.col("purpose") == "acute")
    out = []
    for c in ACUTE_MEDICATION_CLASSES:
        rows = acute.filter(pl.col("medication_class") == c)
        if rows.is_empty():
            continue
        relief = rows["relief_2h"].drop_nulls()
        out.append(
            {
                "class": CLASS_LABELS[c],
                "names": ", ".join(sorted(set(rows["name"].to_list()))),
                "intakes": rows.height,
                "days": rows["date"].n_unique(),
                "on_migraine_days": sum(d in migraine_days for d in set(rows["date"].to_list())),
                "mean_relief_2h": round(float(relief.mean()), 2) if relief.len() else None,
                "pain_free_share": round(float((relief == 3).mean()), 2) if relief.len() else None,
            }
        )
    return out


def build_report(
    user_id: str,
    profile: dict[str, Any],
    daily_logs: pl.DataFrame,
    medications: pl.DataFrame,
    questionnaires: list[dict[str, Any]],
    start: date,
    end: date,
    generated_on: date,
    triggers: list[TriggerItem],
    trigger_source: str,
    accuracy: dict[str, Any] | None,
) -> ReportData:
    """Everything the report shows for ``start``..``end`` (inclusive), from contract tables."""
    in_period = (pl.col("date") >= start) & (pl.col("date") <= end)
    logs = daily_logs.filter(in_period)
    meds = medications.filter(in_period)
    summary = monthly_summary(logs, meds)
    months = summary.to_dicts()
    overuse = check_overuse(summary, user_id)
    migraine = set(logs.filter(pl.col("migraine_occurred").fill_null(False))["date"].to_list())
    medicated = set(meds.filter(pl.col("purpose") == "acute")["date"].to_list())
    preventives = [
        p
        for p in preventive_effect(
            daily_logs.filter(pl.col("date") <= end), medications.filter(pl.col("date") <= end)
        ).to_dicts()
    ]
    return ReportData(
        user_id=user_id,
        start=start,
        end=end,
        generated_on=generated_on,
        profile=profile,
        adherence=_adherence(logs, meds, start, end),
        months=months,
        overuse=overuse,
        acute_by_class=_acute_by_class(meds, migraine),
        preventives=preventives,
        questionnaires=[q for q in questionnaires if start <= q["date"] <= end],
        triggers=triggers,
        trigger_source=trigger_source,
        accuracy=accuracy,
        calendar={
            "logged": set(logs["date"].to_list()) | set(meds["date"].to_list()),
            "migraine": migraine,
            "medicated": medicated,
        },
    )


# ------------------------------------------------------------------ tables


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def month_table(data: ReportData) -> list[list[str]]:
    """One row per month; a days column for each acute class used in the period."""
    used = [c for c in ACUTE_MEDICATION_CLASSES if any(m[f"days_{c}"] for m in data.months)]
    header = ["Month", "Logged", "Migraine d", "Headache d", "Acute med d"]
    header += [f"{CLASS_LABELS[c][0].upper()}{CLASS_LABELS[c][1:]} d" for c in used]
    header += ["Attacks", "Treated", "Relief"]
    rows = [header]
    for m in data.months:
        rows.append(
            [
                f"{m['month']:%b %Y}",
                f"{m['days_logged']}/{m['days_in_month']}",
                str(m["migraine_days"]),
                str(m["headache_days"]),
                str(m["acute_medication_days"]),
                *(str(m[f"days_{c}"]) for c in used),
                str(m["attacks"]),
                str(m["attacks_treated"]),
                _fmt(m["mean_relief_2h"]),
            ]
        )
    return rows


def overuse_lines(data: ReportData) -> list[str]:
    level = {"none": "Overuse check", "watch": "WATCH", "overuse": "WARNING"}[data.overuse.level]
    lines = [f"{level}: {data.overuse.message}."]
    lines.append(
        f"Rules (ICHD-3 8.2, regular overuse for > 3 months with >= {HEADACHE_DAYS_MIN} headache days/month): "
        + "; ".join(f"{r.code} {r.name} >= {r.threshold} d/month" for r in RULES)
        + f". Months assessed (>= 2/3 of days logged): {data.overuse.months_assessed}."
    )
    return lines


def _relief_legend() -> str:
    return ", ".join(f"{k} {v}" for k, v in RELIEF_LEVELS.items())


# -------------------------------------------------------------------- HTML

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Headache diary report {{ d.user_id }} {{ d.start }} to {{ d.end }}</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.warning { background: #fbe3e4; border-left: 4px solid #a4262c; padding: 0.5em; }
.watch { background: #fff4d6; border-left: 4px solid #f0b429; padding: 0.5em; }
.none { background: #e8f3e8; border-left: 4px solid #3c8d3c; padding: 0.5em; }
.source { color: #666; font-size: 0.85em; }
</style></head><body>
<h1>Headache diary report</h1>
<p>User {{ d.user_id }} &middot; period {{ d.start }} to {{ d.end }} &middot; generated {{ d.generated_on }}
{% if d.profile %}&middot; {% for k, v in d.profile.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}</p>

<h2>Diary adherence</h2>
<p>{{ d.adherence.days_logged }} of {{ d.adherence.days_in_period }} days logged ({{ "%.0f"|format(100 * d.adherence.share_logged) }}%),
outcome reported on {{ d.adherence.outcome_reported_days }} days, longest gap {{ d.adherence.longest_gap_days }} days.</p>

<h2>Attack calendar</h2>
<img alt="attack calendar" src="data:image/png;base64,{{ img.calendar }}" width="100%">

<h2>Monthly migraine and acute-medication days</h2>
<table><tr>{% for cell in months[0] %}<th>{{ cell }}</th>{% endfor %}</tr>
{% for row in months[1:] %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>
<p class="source">Headache days: migraine days plus days with an acute medication (the diary has no separate headache field). Counts are of logged days.</p>
<img alt="monthly days" src="data:image/png;base64,{{ img.monthly }}" width="100%">

<h2>Medication-overuse check (ICHD-3)</h2>
<div class="{{ {'overuse': 'warning', 'watch': 'watch', 'none': 'none'}[d.overuse.level] }}">
{% for line in overuse %}<p>{{ line }}</p>{% endfor %}</div>

<h2>Acute medication</h2>
{% if d.acute_by_class %}<table><tr><th>Class</th><th>Drugs</th><th>Intakes</th><th>Days</th><th>On migraine days</th><th>Mean relief 2 h</th><th>Pain free 2 h</th></tr>
{% for c in d.acute_by_class %}<tr><td>{{ c["class"] }}</td><td>{{ c.names }}</td><td>{{ c.intakes }}</td><td>{{ c.days }}</td><td>{{ c.on_migraine_days }}</td><td>{{ fmt(c.mean_relief_2h, 2) }}</td><td>{{ fmt(c.pain_free_share, 2) }}</td></tr>{% endfor %}</table>
<p class="source">Relief 2 h after intake: {{ relief_legend }}.</p>{% else %}<p>No acute medication logged.</p>{% endif %}

<h2>Preventive treatment</h2>
{% if d.preventives %}<table><tr><th>Drug</th><th>Class</th><th>Start</th><th>Migraine d/30 before</th><th>Logged before</th><th>Migraine d/30 after</th><th>Logged after</th></tr>
{% for p in d.preventives %}<tr><td>{{ p.name }}</td><td>{{ p.medication_class }}</td><td>{{ p.start }}</td><td>{{ fmt(p.migraine_days_per_30_before) }}</td><td>{{ p.days_logged_before }}</td><td>{{ fmt(p.migraine_days_per_30_after) }}</td><td>{{ p.days_logged_after }}</td></tr>{% endfor %}</table>
<p class="source">Migraine days per 30 logged days in the 90 days before the first dose and the 90 days from it on.</p>{% else %}<p>No preventive medication logged.</p>{% endif %}

<h2>MIDAS and HIT-6</h2>
{% if d.questionnaires %}<table><tr><th>Date</th><th>Instrument</th><th>Score</th><th>Grade</th></tr>
{% for q in d.questionnaires %}<tr><td>{{ q.date }}</td><td>{{ q.instrument }}</td><td>{{ q.score }}</td><td>{{ q.grade }}</td></tr>{% endfor %}</table>{% else %}<p>No questionnaire submitted in this period.</p>{% endif %}
<img alt="questionnaires" src="data:image/png;base64,{{ img.questionnaires }}" width="100%">

<h2>Triggers and protectors</h2>
<p class="source">Source: {{ d.trigger_source }}</p>
{% if d.triggers %}<table><tr><th>Factor</th><th>Role</th><th>Evidence</th></tr>
{% for t in d.triggers %}<tr><td>{{ t.name }}</td><td>{{ t.role }}</td><td>{{ t.evidence }}</td></tr>{% endfor %}</table>{% else %}<p>Not enough diary yet to name triggers.</p>{% endif %}

<h2>Forecast accuracy</h2>
{% if d.accuracy and d.accuracy.n_scored %}<p>{{ d.accuracy.n_scored }} scored forecasts of {{ d.accuracy.n_predictions }}: accuracy {{ fmt(d.accuracy.accuracy, 2) }},
Brier score {{ fmt(d.accuracy.brier_score, 3) }} (skill against the patient's own onset rate {{ fmt(d.accuracy.brier_skill, 2) }}), mean forecast {{ fmt(d.accuracy.mean_probability, 3) }} vs observed onset rate {{ fmt(d.accuracy.observed_onset_rate, 3) }}. {{ d.accuracy.statement }}</p>
{% else %}<p>No scored forecast in this period.</p>{% endif %}
</body></html>
"""


def _figures(data: ReportData) -> dict[str, bytes]:
    return {
        "calendar": figures.attack_calendar(data.start, data.end, **data.calendar),
        "monthly": figures.monthly_days(data.months),
        "questionnaires": figures.questionnaire_history(data.questionnaires, data.start, data.end),
    }


def render_html(data: ReportData) -> str:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    images = {k: base64.b64encode(v).decode() for k, v in _figures(data).items()}
    return env.from_string(_HTML).render(
        d=data,
        img=images,
        months=month_table(data),
        overuse=overuse_lines(data),
        fmt=_fmt,
        relief_legend=_relief_legend(),
    )


# --------------------------------------------------------------------- PDF


def render_pdf(data: ReportData) -> bytes:
    """The same report as a PDF (A4), via ReportLab's platypus layout."""
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["BodyText"].clone("small", fontSize=7.5, leading=9)
    width = A4[0] - 3 * cm

    def para(text: str, style: Any = body) -> Paragraph:
        return Paragraph(escape(text), style)

    def table(rows: list[list[str]], widths: list[float] | None = None) -> Table:
        t = Table(
            [[Paragraph(escape(c), small) for c in r] for r in rows], colWidths=widths, repeatRows=1
        )
        t.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        return t

    def image(png: bytes) -> Image:
        img = Image(io.BytesIO(png))
        scale = width / img.imageWidth
        img.drawWidth, img.drawHeight = width, img.imageHeight * scale
        return img

    figs = _figures(data)
    a = data.adherence
    story: list[Any] = [
        Paragraph("Headache diary report", styles["Title"]),
        para(
            f"User {data.user_id} - period {data.start} to {data.end} - generated {data.generated_on}"
            + (
                ""
                if not data.profile
                else " - " + ", ".join(f"{k} {v}" for k, v in data.profile.items())
            )
        ),
        Paragraph("Diary adherence", styles["Heading2"]),
        para(
            f"{a['days_logged']} of {a['days_in_period']} days logged ({100 * a['share_logged']:.0f}%), outcome reported on "
            f"{a['outcome_reported_days']} days, longest gap {a['longest_gap_days']} days."
        ),
        Paragraph("Attack calendar", styles["Heading2"]),
        image(figs["calendar"]),
        Paragraph("Monthly migraine and acute-medication days", styles["Heading2"]),
        table(month_table(data)),
        para(
            "Headache days: migraine days plus days with an acute medication (the diary has no separate headache "
            "field). Counts are of logged days.",
            small,
        ),
        image(figs["monthly"]),
        Paragraph("Medication-overuse check (ICHD-3)", styles["Heading2"]),
        *[para(line) for line in overuse_lines(data)],
        Paragraph("Acute medication", styles["Heading2"]),
    ]
    if data.acute_by_class:
        rows = [
            [
                "Class",
                "Drugs",
                "Intakes",
                "Days",
                "On migraine days",
                "Mean relief 2 h",
                "Pain free 2 h",
            ]
        ]
        rows += [
            [
                c["class"],
                c["names"],
                str(c["intakes"]),
                str(c["days"]),
                str(c["on_migraine_days"]),
                _fmt(c["mean_relief_2h"], 2),
                _fmt(c["pain_free_share"], 2),
            ]
            for c in data.acute_by_class
        ]
        story += [table(rows), para(f"Relief 2 h after intake: {_relief_legend()}.", small)]
    else:
        story.append(para("No acute medication logged."))
    story.append(Paragraph("Preventive treatment", styles["Heading2"]))
    if data.preventives:
        rows = [
            [
                "Drug",
                "Class",
                "Start",
                "Migraine d/30 before",
                "Logged before",
                "Migraine d/30 after",
                "Logged after",
            ]
        ]
        rows += [
            [
                p["name"],
                p["medication_class"],
                str(p["start"]),
                _fmt(p["migraine_days_per_30_before"]),
                str(p["days_logged_before"]),
                _fmt(p["migraine_days_per_30_after"]),
                str(p["days_logged_after"]),
            ]
            for p in data.preventives
        ]
        story += [
            table(rows),
            para(
                "Migraine days per 30 logged days, 90 days before the first dose and 90 days from it on.",
                small,
            ),
        ]
    else:
        story.append(para("No preventive medication logged."))
    story.append(Paragraph("MIDAS and HIT-6", styles["Heading2"]))
    if data.questionnaires:
        rows = [["Date", "Instrument", "Score", "Grade"]]
        rows += [
            [str(q["date"]), q["instrument"], str(q["score"]), q["grade"]]
            for q in data.questionnaires
        ]
        story.append(table(rows))
    else:
        story.append(para("No questionnaire submitted in this period."))
    story += [
        image(figs["questionnaires"]),
        Paragraph("Triggers and protectors", styles["Heading2"]),
        para(f"Source: {data.trigger_source}", small),
    ]
    if data.triggers:
        rows = [["Factor", "Role", "Evidence"]] + [
            [t.name, t.role, t.evidence] for t in data.triggers
        ]
        story.append(table(rows, [4 * cm, 2.5 * cm, width - 6.5 * cm]))
    else:
        story.append(para("Not enough diary yet to name triggers."))
    story.append(Paragraph("Forecast accuracy", styles["Heading2"]))
    acc = data.accuracy
    if acc and acc.get("n_scored"):
        story.append(
            para(
                f"{acc['n_scored']} scored forecasts of {acc['n_predictions']}: accuracy {_fmt(acc['accuracy'], 2)}, Brier score "
                f"{_fmt(acc['brier_score'], 3)} (skill against the patient's own onset rate {_fmt(acc.get('brier_skill'), 2)}), "
                f"mean forecast {_fmt(acc['mean_probability'], 3)} vs observed onset rate "
                f"{_fmt(acc['observed_onset_rate'], 3)}. {acc.get('statement', '')}"
            )
        )
    else:
        story.append(para("No scored forecast in this period."))
    story.append(Spacer(1, 0.5 * cm))

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=1.5 * cm,
        rightMargin=1.5 * cm,
        topMargin=1.5 * cm,
        bottomMargin=1.5 * cm,
        title=f"Headache diary report {data.user_id}",
        author="MigraineMamba",
        invariant=1,
    )
    doc.build(story)
    return buffer.getvalue()

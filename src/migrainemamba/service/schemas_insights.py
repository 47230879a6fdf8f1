"""Response shapes of the insights that rest on ``migrainemamba.insights``: the forecast track
record, discovered patterns and what-if recommendations (docs in the pure functions)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class CalibrationBand(BaseModel):
    band: str = Field(description="minimal / low / moderate / high (the service's risk thresholds)")
    days: int
    onsets: int
    mean_forecast: float | None
    observed_rate: float | None


class HitsAndMisses(BaseModel):
    level: str
    threshold: float = Field(description="a forecast 'says attack' at probability >= this")
    hits: int
    misses: int
    false_alarms: int
    correct_quiet_days: int
    sensitivity: float | None
    false_alarm_rate: float | None


class WeekRecord(BaseModel):
    start: date
    end: date
    scored_days: int
    onsets: int
    mean_forecast: float | None
    brier_score: float | None


class TrackRecord(BaseModel):
    n_scored: int = Field(description="forecasts whose day has a scorable outcome (onset known)")
    onsets: int
    n_correct: int
    accuracy: float | None = Field(description="(hits + quiet days) / scored days at the moderate threshold")
    brier_score: float | None = Field(description="mean (probability - onset)^2 over scored days")
    brier_reference: float | None = Field(
        description="Brier score of always forecasting your own onset rate over the same days"
    )
    brier_skill: float | None = Field(description="1 - brier_score / brier_reference; null when too few days")
    mean_probability: float | None
    observed_onset_rate: float | None
    calibration: list[CalibrationBand]
    hits_and_misses: list[HitsAndMisses]
    weeks: list[WeekRecord] = Field(description="7-day blocks ending today, newest first")
    enough_data: bool
    statement: str


class PatternEvidence(BaseModel):
    days_with: int
    onsets_with: int
    days_without: int
    onsets_without: int


class PatternOut(BaseModel):
    kind: str = Field(description="day_of_week, cycle_phase, lagged, pair or streak")
    key: str
    description: str
    odds_ratio: float
    interval: list[float | None] = Field(description="[low, high] of the odds ratio, FCR-adjusted (see fdr_method)")
    interval_level: float
    rate_with: float | None
    rate_without: float | None
    p_value: float
    q_value: float = Field(description="Benjamini-Hochberg adjusted p-value over the patterns tried")
    evidence: PatternEvidence


class PatternsOut(BaseModel):
    user_id: str
    labelled_days: int
    onsets: int
    patterns_tried: int
    fdr_level: float
    fdr_method: str
    enough_data: bool
    statement: str
    patterns: list[PatternOut]


class WhatIfOut(BaseModel):
    group: str
    name: str
    change: str = Field(description="the change to your diary the counterfactual forecast assumes")
    contribution_log_odds: float | None = Field(
        description="what this habit adds to the forecast's log-odds (the model's explanation); null if the model gives none"
    )
    risk_now: float = Field(description="the model's forecast for the day as things stand")
    risk_if_changed: float = Field(description="the model's forecast for the day with the change")
    sentence: str


class WhatIfSet(BaseModel):
    day: date = Field(description="the forecast day the what-ifs are about (tomorrow)")
    assumption: str
    model_name: str
    model_version: str
    risk_now: float | None
    items: list[WhatIfOut]

"""Response schemas of the personal trigger map (``/insights/triggers``, ``service.personal_map``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from migrainemamba.service.schemas import TriggersOut


class MapTrigger(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    trigger: str = Field(description="the trigger as the map defines it (features.retrospective)")
    group: str
    name: str
    association: Literal["trigger", "protective", "no_association", "not_enough_data"] = Field(
        alias="class", description="the class rule of models.trigger_map"
    )
    log_odds_ratio: float
    odds_ratio: float = Field(description="your odds of an attack on days with it / without it")
    odds_ratio_lo: float = Field(description="lower end of the interval (see personal_map.interval)")
    odds_ratio_hi: float
    days_exposed: int = Field(description="your labelled days with the trigger")
    onsets_after_exposure: int = Field(description="attacks that began on such days")
    more_attacks_needed: int | None = Field(
        description="not_enough_data only: about how many more attacks would settle it "
        "(personal_map.attacks_needed_rule; 101 means more than 100); null: never exposed, or settled"
    )
    note: str


class PriorTrigger(BaseModel):
    trigger: str
    group: str
    name: str
    odds_ratio: float = Field(description="clinical studies' within-person odds ratio")
    basis: str


class PersonalMapOut(BaseModel):
    phase: str = Field(description="today's forecast phase; the personal map from 31+")
    days_logged: int = Field(description="diary days before today")
    personal_from_days_logged: int
    method: Literal["personal", "n_of_1"] | None = Field(
        description="personal: all triggers in one Bayesian model with the population prior; "
        "n_of_1: each trigger alone (no personal model routed); null before day 31"
    )
    basis: str = Field(description="what the list rests on: your diary, or the clinical prior")
    interval: str | None
    attacks_needed_rule: str
    labelled_days: int | None = None
    attacks: int | None = None
    triggers: list[MapTrigger] = Field(description="day 31 on: the map, triggers first")
    clinical_prior: list[PriorTrigger] = Field(description="before day 31: the clinical prior, labelled as such")


class PersonalTriggersOut(TriggersOut):
    personal_map: PersonalMapOut

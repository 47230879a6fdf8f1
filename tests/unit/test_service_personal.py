"""The personal model in the service: its per-user state, kept on outcomes, equals the offline pipeline.

In-process (TestClient, tmp SQLite), with a small personal model fitted here on a simulated
cohort (the offset is the clinical-prior logistic: fast) and routed to every phase, so the
state is exercised from day 1. "Today" moves forward day by day (the dependency is
overridden), so the stored state is resumed incrementally as a person lives their diary:
morning fields, today's forecast, the rest of the day, the outcome.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from migrainemamba.data.schema import MORNING_FIELDS, OUTCOME_FIELDS, USER_COLUMNS
from migrainemamba.data.simulator import simulate_cohort
from migrainemamba.features import PHASES, build_features
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.bayes_logistic import Rows, fit_laplace
from migrainemamba.models.personal import PersonalConfig, PersonalModel, UserState
from migrainemamba.models.prior import PriorLogistic
from migrainemamba.models.trigger_map import ClassRule, MapRows, estimate_map_prior
from migrainemamba.release.routing import Route
from migrainemamba.service import personal_state
from migrainemamba.service.deps import get_today
from migrainemamba.service.forecasting import Forecaster
from tests.conftest import simulator_config
from tests.unit.test_service_support import make_client, make_settings

EXACT = 1e-6  # served vs offline forecast
# |online - full Laplace refit| of the posterior mean after the online updates since the last
# weekly refit (at most 6): the single-update tolerance of test_personal (5e-3) accumulated
ONLINE_VS_REFIT = 6 * 5e-3
WALK_DAYS = 45


@pytest.fixture(scope="module")
def fitted():
    cohort = simulate_cohort(simulator_config(n_users=60, n_days=120, seed=5))
    features = build_features(cohort.users, cohort.daily_logs)
    targets = features.filter(pl.col("scorable")).select("user_id", "date")
    batch = ForecastBatch(cohort.users, cohort.daily_logs, targets, precomputed=features)
    offset = PriorLogistic({"perimenstrual": 2.04, "heavy_alcohol": 2.08, "night_snack": 0.6})
    offset.fit(batch)
    model = PersonalModel(PersonalConfig(), offset)
    model.fit(batch)
    model.map_setup = (estimate_map_prior(MapRows.build(features, cohort.daily_logs)), ClassRule(z=1.0))
    return cohort, model


def _window(cohort, days: int) -> tuple[dict[str, Any], pl.DataFrame]:
    """A person with ``days`` consecutive logged days with known outcomes and at least 3 attacks."""
    logs = cohort.daily_logs.sort("user_id", "date")
    for (user_id,), rows in logs.group_by("user_id", maintain_order=True):
        rows = rows.filter(pl.col("migraine_occurred").is_not_null())
        dates = rows["date"].to_list()
        for start in range(len(dates) - days + 1):
            if (dates[start + days - 1] - dates[start]).days == days - 1:
                window = rows.slice(start, days)
                if window["migraine_occurred"].sum() >= 3:
                    user = cohort.users.filter(pl.col("user_id") == user_id).row(0, named=True)
                    return user, window
                break
    raise AssertionError("no simulated person with a long enough window")


def _json(row: dict[str, Any], names) -> dict[str, Any]:
    out = {}
    for name in names:
        value = row[name]
        if value is not None:
            out[name] = value.isoformat() if isinstance(value, date) else value
    return out


def _offline(model: PersonalModel, users: pl.DataFrame, logs: pl.DataFrame, day: date) -> float:
    target = pl.DataFrame({"user_id": [users["user_id"][0]], "date": [day]})
    return float(model.predict(ForecastBatch(users, logs, target))[0])


def _forecaster(model: PersonalModel, tmp_path) -> Forecaster:
    routes = {p: Route(p, "personal", "7", model, "personal/7") for p in PHASES}
    return Forecaster(routes, make_settings(tmp_path), source="test")


def _onboard(client, sim_user: dict[str, Any], shift: timedelta) -> tuple[str, dict[str, str], dict[str, Any]]:
    profile = {c.name: sim_user[c.name] for c in USER_COLUMNS if c.name != "user_id"}
    if profile["cycle_start_day"] is not None:
        profile["cycle_start_day"] = profile["cycle_start_day"] + shift
    created = client.post("/users/onboarding", json=_json(profile, profile))
    assert created.status_code == 201, created.text
    body = created.json()
    return body["user"]["user_id"], {"Authorization": f"Bearer {body['access_token']}"}, profile


def _state(client, user_id: str):
    with client.app.state.runtime.sessions() as session:
        row = personal_state.get_state(session, user_id)
        if row is not None:
            session.expunge(row)
        return row


def test_served_personal_forecasts_equal_the_offline_pipeline_day_by_day(fitted, tmp_path, monkeypatch):
    """A person lives 45 days: each morning's forecast equals the offline prequential one (1e-6);
    after each outcome the stored state is the resumed loop's, equal to a rebuild from the diary,
    and within the stated tolerance of a full Laplace refit on every labelled day."""
    cohort, model = fitted
    sim_user, window = _window(cohort, WALK_DAYS)
    first_day = date(2024, 1, 1)
    shift = first_day - window["date"][0]
    settings = make_settings(tmp_path)
    starts: list[int | None] = []  # where each resumption started (None: rebuilt from day 0)
    resume = model.resume

    def spy(grid, state, stop):
        starts.append(None if state is None else state.through)
        return resume(grid, state, stop)

    monkeypatch.setattr(model, "resume", spy)
    with make_client(settings, today=first_day, forecaster=_forecaster(model, tmp_path)) as client:
        user_id, headers, profile = _onboard(client, sim_user, shift)
        users = pl.DataFrame([{**sim_user, **profile, "user_id": user_id}], schema=cohort.users.schema)
        diary = window.with_columns(pl.col("date") + shift, pl.lit(user_id).alias("user_id"))
        rest = [c for c in diary.columns if c not in ("user_id", "date", *MORNING_FIELDS, *OUTCOME_FIELDS)]
        served, population = [], []
        for k in range(WALK_DAYS):
            row = diary.row(k, named=True)
            day = row["date"]
            client.app.dependency_overrides[get_today] = lambda day=day: day
            morning = client.post("/logs/submit", json={"user_id": user_id, "date": day.isoformat(), **_json(row, MORNING_FIELDS)}, headers=headers)
            assert morning.status_code == 201, morning.text
            got = client.get(f"/predictions/{user_id}", headers=headers)
            assert got.status_code == 200, got.text
            body = got.json()
            expected = _offline(model, users, diary.head(k + 1), day)
            assert abs(body["probability"] - expected) <= EXACT, (k, body["probability"], expected)
            assert (body["model_name"], body["model_version"]) == ("personal", "7")
            served.append(body["probability"])
            grid = build_features(users, diary.head(k + 1))
            population.append(float(1 / (1 + np.exp(-model.offset(grid.tail(1))[0]))))
            # the rest of the day, then its outcome: the state moves to tomorrow
            day_fields = client.post("/logs/submit", json={"user_id": user_id, "date": day.isoformat(), **_json(row, rest)}, headers=headers)
            assert day_fields.status_code == 200, day_fields.text
            outcome = client.put(f"/logs/outcome/{user_id}/{day.isoformat()}", json=_json(row, OUTCOME_FIELDS), headers=headers)
            assert outcome.status_code == 200, outcome.text
            state = _state(client, user_id)
            assert state is not None and state.through_date == day + timedelta(days=1) and state.through_day == k + 1
            if k == 35:  # a morning field of today edited after its outcome: the forecast follows,
                # computed from a rebuild in memory; the state already past today is kept
                sleep = (row["sleep_hours"] or 7.0) - 2.0
                edit = {"user_id": user_id, "date": day.isoformat(), "sleep_hours": sleep}
                assert client.post("/logs/submit", json=edit, headers=headers).status_code == 200
                redo = client.get(f"/predictions/{user_id}", headers=headers)
                assert redo.headers["X-Forecast"] == "new"
                diary = diary.with_columns(
                    pl.when(pl.col("date") == day).then(sleep).otherwise(pl.col("sleep_hours")).alias("sleep_hours")
                )
                assert abs(redo.json()["probability"] - _offline(model, users, diary.head(k + 1), day)) <= EXACT
                assert _state(client, user_id).updated_at == state.updated_at
        # incremental: rebuilt once (the first forecast), then resumed from the stored state
        # rebuilds: the first forecast; the re-forecast of day 35 after its outcome (the stored state is
        # past it: rebuilt in memory); day 36's forecast (the edit changed a day that state absorbed)
        assert starts.count(None) == 3 and len(starts) == 2 * WALK_DAYS + 1, starts
        monkeypatch.undo()
        # the stored state = the loop rebuilt from the whole diary, and close to a full refit
        grid = build_features(users, diary)
        rebuilt = model.resume(grid, None, WALK_DAYS)
        np.testing.assert_allclose(state.mean, rebuilt.mean, atol=1e-9)
        np.testing.assert_allclose(state.cov, rebuilt.cov, atol=1e-9)
        assert state.refits == WALK_DAYS // 7 and state.updates == int(grid["onset"].is_not_null().sum())
        diaries = model.one_diary(grid)
        labelled = ~np.isnan(diaries.y)
        rows = Rows(diaries.x[labelled], diaries.offset[labelled], diaries.y[labelled], diaries.group[labelled], 1)
        full = fit_laplace(rows, np.zeros(len(model.prior_var)), model.prior_var)
        assert np.max(np.abs(np.array(state.mean) - full.mean[0])) < ONLINE_VS_REFIT
    # days 1-30 (30 days logged before at most 29): the population forecast, exactly; then personal
    np.testing.assert_allclose(served[:30], population[:30], atol=1e-12)
    assert np.max(np.abs(np.array(served[30:]) - np.array(population[30:]))) > 1e-4


def test_a_past_diary_edit_rebuilds_the_state_and_the_forecast_follows_the_diary(fitted, tmp_path):
    cohort, model = fitted
    sim_user, window = _window(cohort, 40)
    today = date(2024, 3, 1)
    shift = today - window["date"][-1]
    forecaster = _forecaster(model, tmp_path)
    with make_client(make_settings(tmp_path), today=today, forecaster=forecaster) as client:
        user_id, headers, profile = _onboard(client, sim_user, shift)
        users = pl.DataFrame([{**sim_user, **profile, "user_id": user_id}], schema=cohort.users.schema)
        diary = window.with_columns(pl.col("date") + shift, pl.lit(user_id).alias("user_id"))
        for row in diary.head(39).iter_rows(named=True):  # 39 full days, in date order
            fields = [c for c in diary.columns if c not in ("user_id",)]
            assert client.post("/logs/submit", json={"user_id": user_id, **_json(row, fields)}, headers=headers).status_code == 201
        before = _state(client, user_id)
        assert before is not None and before.through_date == today
        first = client.get(f"/predictions/{user_id}", headers=headers).json()
        assert abs(first["probability"] - _offline(model, users, diary.head(39), today)) <= EXACT
        # an edit of day 3 (no outcome change): the stored state no longer matches the diary
        edited_day = diary["date"][2]
        heavy = {"user_id": user_id, "date": edited_day.isoformat(), "alcohol_drinks": 7, "sleep_hours": 3.0}
        assert client.post("/logs/submit", json=heavy, headers=headers).status_code == 200
        stale = _state(client, user_id)
        assert stale.inputs_fingerprint == before.inputs_fingerprint  # nothing recomputed on a non-outcome write
        again = client.get(f"/predictions/{user_id}", headers=headers)
        assert again.headers["X-Forecast"] == "new"
        edited = diary.head(39).with_columns(
            pl.when(pl.col("date") == edited_day).then(7).otherwise(pl.col("alcohol_drinks")).alias("alcohol_drinks"),
            pl.when(pl.col("date") == edited_day).then(3.0).otherwise(pl.col("sleep_hours")).alias("sleep_hours"),
        )
        expected = _offline(model, users, edited, today)
        assert abs(again.json()["probability"] - expected) <= EXACT
        assert abs(expected - first["probability"]) > 1e-9  # the edit mattered
        rebuilt = _state(client, user_id)
        assert rebuilt.inputs_fingerprint != before.inputs_fingerprint
        # a state of another model version is never resumed
        with client.app.state.runtime.sessions() as session:
            row = personal_state.get_state(session, user_id)
            row.mean = [m + 1.0 for m in row.mean]  # corrupt it, and say it is another model's
            row.model_version = "6"
            session.commit()
        client.post("/logs/submit", json={"user_id": user_id, "date": today.isoformat(), "sleep_hours": 6.5}, headers=headers)
        third = client.get(f"/predictions/{user_id}", headers=headers).json()
        edited_today = pl.concat([edited, pl.DataFrame([{**{c: None for c in edited.columns}, "user_id": user_id, "date": today, "sleep_hours": 6.5}], schema=edited.schema)])
        assert abs(third["probability"] - _offline(model, users, edited_today, today)) <= EXACT


def test_the_state_is_exported_and_erased_with_the_user(fitted, tmp_path):
    cohort, model = fitted
    sim_user, window = _window(cohort, 10)
    today = date(2024, 3, 1)
    shift = today - window["date"][-1]
    with make_client(make_settings(tmp_path), today=today, forecaster=_forecaster(model, tmp_path)) as client:
        user_id, headers, _ = _onboard(client, sim_user, shift)
        diary = window.with_columns(pl.col("date") + shift)
        for row in diary.iter_rows(named=True):
            fields = [c for c in diary.columns if c != "user_id"]
            client.post("/logs/submit", json={"user_id": user_id, **_json(row, fields)}, headers=headers)
        export = client.get(f"/users/export/{user_id}", headers=headers).json()
        states = export["tables"]["personal_states"]
        assert len(states) == 1 and states[0]["through_date"] == (today + timedelta(days=1)).isoformat()
        assert len(states[0]["mean"]) == len(model.config.terms) == len(states[0]["terms"])
        erased = client.delete(f"/users/{user_id}", headers=headers).json()
        assert erased["deleted"]["personal_states"] == 1
        assert _state(client, user_id) is None


def test_without_a_personal_route_no_state_is_kept(fitted, tmp_path):
    cohort, _ = fitted
    sim_user, window = _window(cohort, 5)
    today = date(2024, 3, 1)
    with make_client(make_settings(tmp_path), today=today) as client:  # built-in base rate everywhere
        user_id, headers, _ = _onboard(client, sim_user, today - window["date"][-1])
        row = window.row(4, named=True)
        body = {"user_id": user_id, **_json(row, [c for c in window.columns if c != "user_id"]), "date": today.isoformat()}
        assert client.post("/logs/submit", json=body, headers=headers).status_code == 201
        assert _state(client, user_id) is None


def test_resuming_a_state_equals_the_cohort_pass(fitted):
    """UserState at any day, resumed to a later day, = the state the cohort loop holds there."""
    cohort, model = fitted
    uid = cohort.users["user_id"][3]
    users = cohort.users.filter(pl.col("user_id") == uid)
    grid = build_features(users, cohort.daily_logs.filter(pl.col("user_id") == uid))
    whole = model.resume(grid, None, 60)
    for cut in (0, 13, 14, 20, 59):
        part = model.resume(grid, model.resume(grid, None, cut), 60)
        np.testing.assert_allclose(part.mean, whole.mean, atol=1e-9)
        assert isinstance(part, UserState) and part.through == 60


# ------------------------------------------------------------------ the trigger map


def _alcohol_diary(user_id: str, end: date, days: int, exposure: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``days`` ordinary days ending ``end``: 6 drinks (or ``exposure``) every 6th evening, an
    attack the next day; a few attacks without it. Exactly one strong trigger (the day before)."""
    from tests.unit.test_service_support import full_day

    out = []
    for k in range(days):
        day = end - timedelta(days=days - 1 - k)
        values: dict[str, Any] = {"menstruating": None}
        if k % 6 == 2:
            values |= exposure or {"alcohol_drinks": 6}
        if (k % 6 == 3 and k % 12 != 9) or k % 23 == 11:  # most mornings after, and a few others
            values |= {"migraine_occurred": True, "migraine_severity": 6, "migraine_duration_hours": 8.0}
        out.append(full_day(user_id, day, **values))
    return out


def test_the_trigger_map_ranks_a_single_strong_trigger_first_after_90_days(fitted, tmp_path):
    _, model = fitted
    today = date(2024, 6, 1)
    no_cycle = {"has_menstrual_cycle": False, "cycle_start_day": None, "gender": "M"}
    with make_client(make_settings(tmp_path), today=today, forecaster=_forecaster(model, tmp_path)) as client:
        user_id, headers = _onboard_profile(client, no_cycle)
        diary = _alcohol_diary(user_id, today - timedelta(days=1), 90)
        for k, day in enumerate(diary):
            if k == 29:  # 29 days logged: still the clinical prior, labelled, without the cycle
                early = client.get(f"/insights/triggers/{user_id}", headers=headers).json()["personal_map"]
                assert early["phase"] == "15-30" and early["triggers"] == [] and early["method"] is None
                prior = early["clinical_prior"]
                assert prior and all(t["basis"] == "clinical prior (not yet your own data)" for t in prior)
                assert "perimenstrual" not in {t["trigger"] for t in prior}
            assert client.post("/logs/submit", json=day, headers=headers).status_code == 201
        body = client.get(f"/insights/triggers/{user_id}", headers=headers)
        assert body.status_code == 200, body.text
        block = body.json()["personal_map"]
    assert block["phase"] == "31+" and block["method"] == "personal" and block["days_logged"] == 90
    assert block["clinical_prior"] == []
    names = [t["trigger"] for t in block["triggers"]]
    assert names[0] == "heavy_alcohol" and block["triggers"][0]["class"] == "trigger", block["triggers"][:3]
    first = block["triggers"][0]
    assert first["odds_ratio_lo"] > 1 and first["odds_ratio_lo"] <= first["odds_ratio"] <= first["odds_ratio_hi"]
    # 15 mornings after drinking; one (day 81) follows an attack day, so it is not labelled
    assert first["days_exposed"] == 14 and first["onsets_after_exposure"] >= 8  # 8 planned (+ chance)
    assert "perimenstrual" not in names  # never a trigger this person cannot have
    assert sum(t["class"] == "trigger" for t in block["triggers"]) == 1
    for t in block["triggers"]:
        if t["class"] == "not_enough_data" and t["days_exposed"] > 0:
            assert t["more_attacks_needed"] is not None and t["more_attacks_needed"] >= 0
            assert "more attack" in t["note"] or "keep logging" in t["note"]
        elif t["class"] != "not_enough_data":
            assert t["more_attacks_needed"] is None


def test_a_diary_contradicting_the_prior_moves_the_map_away_from_it(fitted, tmp_path):
    """Night snacks are protective in the clinical prior (OR 0.6) and the map's prior centre is
    the cohort's; this person's attacks follow their night snacks: their map moves up, far from
    the prior centre, and calls it a trigger."""
    _, model = fitted
    prior, _rule = model.map_setup
    from migrainemamba.features.retrospective import TRIGGER_NAMES

    centre = float(prior.mean[1 + TRIGGER_NAMES.index("night_snack")])
    today = date(2024, 6, 1)
    with make_client(make_settings(tmp_path), today=today, forecaster=_forecaster(model, tmp_path)) as client:
        user_id, headers = _onboard_profile(client, {"has_menstrual_cycle": False, "cycle_start_day": None, "gender": "M"})
        for day in _alcohol_diary(user_id, today - timedelta(days=1), 90, exposure={"had_snack": True}):
            assert client.post("/logs/submit", json=day, headers=headers).status_code == 201
        block = client.get(f"/insights/triggers/{user_id}", headers=headers).json()["personal_map"]
    snack = next(t for t in block["triggers"] if t["trigger"] == "night_snack")
    assert snack["log_odds_ratio"] > centre + 0.5 and snack["odds_ratio_lo"] > 1, (snack, centre)  # measured +0.95
    assert snack["class"] == "trigger" and block["triggers"][0]["trigger"] == "night_snack"


def _onboard_profile(client, overrides: dict[str, Any]) -> tuple[str, dict[str, str]]:
    from tests.unit.test_service_support import onboard

    return onboard(client, **overrides)


def test_more_attacks_needed_follows_the_stated_rule():
    from migrainemamba.service.personal_map import more_attacks_needed

    rule = ClassRule(z=1.0, min_onsets_exposed=2, no_association_or=2.0)
    # settled already: no attack needed
    assert more_attacks_needed(1.0, 0.5, 20, 5, 100, rule) == 0
    # a log OR of 0.3 with sd 0.6, exposed on 20% of days: sd must reach max(0.3, log2-0.3)=0.393
    need = more_attacks_needed(0.3, 0.6, 20, 2, 100, rule)
    expected = (1 / 0.39315**2 - 1 / 0.6**2) / (0.2 * 0.8)
    assert abs(need - expected) <= 1.0
    # a wider interval needs more attacks; never exposed: cannot be said
    assert more_attacks_needed(0.3, 1.2, 20, 2, 100, rule) > need
    assert more_attacks_needed(0.3, 0.6, 0, 0, 100, rule) is None
    # a positive estimate also needs min_onsets_exposed onsets after exposure
    assert more_attacks_needed(1.0, 0.5, 10, 0, 100, rule) >= 2 / 0.1 - 1e-9


def test_concurrent_outcomes_leave_a_state_equal_to_a_rebuild(fitted, tmp_path):
    concurrent_outcomes_leave_a_state_equal_to_a_rebuild(fitted, tmp_path, None)


def concurrent_outcomes_leave_a_state_equal_to_a_rebuild(fitted, tmp_path, database_url: str | None) -> None:
    """Outcomes of 30 days sent at once from 6 threads, in shuffled order: the writers of one
    person are serialised, so the stored state ends as the loop over the final diary; the
    state is exported with the user and erased with them. (On PostgreSQL too:
    tests/integration/test_personal_state_db.py.)"""
    from concurrent.futures import ThreadPoolExecutor

    cohort, model = fitted
    sim_user, window = _window(cohort, 30)
    today = date(2024, 3, 1)
    shift = today - timedelta(days=1) - window["date"][-1]
    overrides = {} if database_url is None else {"database_url": database_url}
    settings = make_settings(tmp_path, **overrides)
    with make_client(settings, today=today, forecaster=_forecaster(model, tmp_path)) as client:
        user_id, headers, profile = _onboard(client, sim_user, shift)
        users = pl.DataFrame([{**sim_user, **profile, "user_id": user_id}], schema=cohort.users.schema)
        diary = window.with_columns(pl.col("date") + shift, pl.lit(user_id).alias("user_id"))
        no_outcome = [c for c in diary.columns if c not in ("user_id", *OUTCOME_FIELDS)]
        for row in diary.iter_rows(named=True):
            assert client.post("/logs/submit", json={"user_id": user_id, **_json(row, no_outcome)}, headers=headers).status_code == 201
        assert _state(client, user_id) is None  # no outcome yet: nothing to learn from
        rows = list(diary.iter_rows(named=True))
        np.random.default_rng(0).shuffle(rows)

        def put(row: dict[str, Any]) -> int:
            url = f"/logs/outcome/{user_id}/{row['date'].isoformat()}"
            return client.put(url, json=_json(row, OUTCOME_FIELDS), headers=headers).status_code

        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(put, rows)) == {200}
        state = _state(client, user_id)
        exported = client.get(f"/users/export/{user_id}", headers=headers).json()["tables"]["personal_states"]
        assert [r["inputs_fingerprint"] for r in exported] == [state.inputs_fingerprint]
        assert client.delete(f"/users/{user_id}", headers=headers).json()["deleted"]["personal_states"] == 1
        assert _state(client, user_id) is None
    assert state.through_date == diary["date"].max() + timedelta(days=1)
    assert state.inputs_fingerprint == personal_state.inputs_fingerprint(users, diary, state.through_date)
    rebuilt = model.resume(build_features(users, diary), None, state.through_day)
    np.testing.assert_allclose(state.mean, rebuilt.mean, atol=1e-9)
    np.testing.assert_allclose(state.cov, rebuilt.cov, atol=1e-9)


def test_personal_explanations_add_up_to_the_personal_forecast(fitted):
    """All groups' log-odds (the offset's, here none, plus the person's terms) + the offset = the
    personal logit; before day 31 the person's terms are silent."""
    cohort, model = fitted
    uid = cohort.daily_logs.group_by("user_id").len().sort("len", "user_id", descending=True)["user_id"][0]
    users = cohort.users.filter(pl.col("user_id") == uid)
    logs = cohort.daily_logs.filter(pl.col("user_id") == uid)
    grid = build_features(users, logs)
    targets = grid.filter(pl.col("scorable")).select("user_id", "date")
    batch = ForecastBatch(users, logs, targets, precomputed=grid)
    items = model.explain(batch, top_k=None)
    p = model.predict(batch)
    offset = model.offset(batch.features())
    logged = batch.features()["days_logged_before"].to_numpy()
    total = np.array([sum(e["log_odds"] for e in day) for day in items])
    np.testing.assert_allclose(total + offset, np.log(p) - np.log1p(-p), atol=1e-9)
    assert all(day == [] for day, n in zip(items, logged, strict=True) if n < 30)
    late = [day for day, n in zip(items, logged, strict=True) if n >= 30]
    assert late and all(any(e["group"] == "person" for e in day) for day in late)
    assert all(e["group"] != "cycle" or users["has_menstrual_cycle"][0] for day in late for e in day)


def test_a_what_if_through_the_forecaster_reads_the_state_and_never_writes_it(fitted, tmp_path):
    """``Forecaster.forecast(..., predict=StatefulPredict(session, user, persist=False))`` on a
    changed diary (a what-if) equals the offline forecast of that diary; the stored state stays."""
    from migrainemamba.service import crud
    from migrainemamba.service.forecasting import logs_frame, users_frame

    cohort, model = fitted
    sim_user, window = _window(cohort, 36)
    today = date(2024, 3, 1)
    shift = today - timedelta(days=1) - window["date"][-1]
    forecaster = _forecaster(model, tmp_path)
    with make_client(make_settings(tmp_path), today=today, forecaster=forecaster) as client:
        user_id, headers, _ = _onboard(client, sim_user, shift)
        diary = window.with_columns(pl.col("date") + shift)
        for row in diary.iter_rows(named=True):
            client.post("/logs/submit", json={"user_id": user_id, **_json(row, [c for c in diary.columns if c != "user_id"])}, headers=headers)
        before = _state(client, user_id)
        with client.app.state.runtime.sessions() as session:
            user = crud.get_user(session, user_id)
            users, logs = users_frame(user), logs_frame(crud.all_logs(session, user_id))
            for changed in (
                logs.with_columns(stress_level=pl.lit(9, dtype=logs["stress_level"].dtype)),  # every past day: stale
                pl.concat([logs, logs.tail(1).with_columns(pl.lit(today).alias("date"), sleep_hours=pl.lit(4.0))]),  # today only
            ):
                what_if = forecaster.forecast(users, changed, today, predict=personal_state.StatefulPredict(session, user_id, persist=False))
                assert abs(what_if.probability - _offline(model, users, changed, today)) <= EXACT
            session.rollback()
        after = _state(client, user_id)
    assert (after.updated_at, after.inputs_fingerprint, after.mean) == (before.updated_at, before.inputs_fingerprint, before.mean)


def _lived(client, cohort, days: int, today: date):
    """A person whose ``days``-day window ends today, every day before today logged in full
    (outcomes included): their state is through today. Returns (user_id, headers, users, diary)."""
    sim_user, window = _window(cohort, days)
    shift = today - window["date"][-1]
    user_id, headers, profile = _onboard(client, sim_user, shift)
    users = pl.DataFrame([{**sim_user, **profile, "user_id": user_id}], schema=cohort.users.schema)
    diary = window.with_columns(pl.col("date") + shift, pl.lit(user_id).alias("user_id"))
    fields = [c for c in diary.columns if c != "user_id"]
    for row in diary.head(days - 1).iter_rows(named=True):
        assert client.post("/logs/submit", json={"user_id": user_id, **_json(row, fields)}, headers=headers).status_code == 201
    return user_id, headers, users, diary


def _assert_state_is_a_rebuild(model: PersonalModel, state, users: pl.DataFrame, diary: pl.DataFrame) -> None:
    grid = build_features(users, diary.filter(pl.col("date") < state.through_date))
    rebuilt = PersonalModel.resume(model, grid, None, state.through_day)  # the class's: a test's spy on the model sees nothing
    np.testing.assert_allclose(state.mean, rebuilt.mean, atol=1e-9)
    np.testing.assert_allclose(state.cov, rebuilt.cov, atol=1e-9)
    assert state.inputs_fingerprint == personal_state.inputs_fingerprint(users, diary, state.through_date)


def _counted(what: str) -> float:
    """The service's ``migrainemamba_personal_state_<what>_total`` counter (in-process registry)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(f"migrainemamba_personal_state_{what}_total") or 0.0


def test_a_failing_state_update_never_fails_the_outcome_write(fitted, tmp_path, monkeypatch, caplog):
    """Fault injection: the state update fails on bad data (a singular Hessian in the refit) on a
    stored state whose numbers are wrong but plausible. The outcome writes (PUT and a submit
    carrying an outcome) still answer 200 and are stored, the state is dropped and the failure
    logged; the next forecast rebuilds the state and equals the offline pipeline (a kept state
    would have misled it). A malformed stored state (NaN, wrong shape) is rebuilt by the outcome itself."""
    cohort, model = fitted
    today = date(2024, 3, 1)
    with make_client(make_settings(tmp_path), today=today, forecaster=_forecaster(model, tmp_path)) as client:
        user_id, headers, users, diary = _lived(client, cohort, 36, today)
        with client.app.state.runtime.sessions() as session:
            row = personal_state.get_state(session, user_id)
            assert row.through_date == today
            row.mean = [m + 1.0 for m in row.mean]  # wrong, but passes every check: only dropping it helps
            session.commit()

        def broken(*args, **kwargs):
            raise np.linalg.LinAlgError("injected: singular Hessian in the weekly refit")

        monkeypatch.setattr(model, "resume", broken)
        dropped, rebuilt = _counted("dropped"), _counted("rebuilt")
        yesterday = diary.row(34, named=True)
        flipped = {"migraine_occurred": not yesterday["migraine_occurred"]}
        with caplog.at_level("ERROR", logger=personal_state.__name__):
            put = client.put(f"/logs/outcome/{user_id}/{yesterday['date'].isoformat()}", json=flipped, headers=headers)
            assert put.status_code == 200, put.text
            again = {"user_id": user_id, "date": yesterday["date"].isoformat(), **_json(yesterday, OUTCOME_FIELDS)}
            submit = client.post("/logs/submit", json=again, headers=headers)
            assert submit.status_code == 200, submit.text
        failures = [r for r in caplog.records if "not updated after an outcome" in r.getMessage()]
        assert len(failures) == 2 and all(r.exc_info is not None for r in failures)
        assert _counted("dropped") == dropped + 2  # each drop is counted for /metrics
        monkeypatch.undo()
        assert _state(client, user_id) is None
        stored = client.get(f"/logs/history/{user_id}", headers=headers).json()["logs"][0]
        assert (stored["date"], stored["migraine_occurred"]) == (yesterday["date"].isoformat(), yesterday["migraine_occurred"])
        # the next forecast rebuilds the state from the diary and equals the offline pipeline
        got = client.get(f"/predictions/{user_id}", headers=headers)
        assert got.status_code == 200 and got.headers["X-Forecast"] == "new", got.text
        assert _counted("rebuilt") == rebuilt + 1
        past = diary.head(35)
        assert abs(got.json()["probability"] - _offline(model, users, past, today)) <= EXACT
        state = _state(client, user_id)
        assert state.through_date == today
        _assert_state_is_a_rebuild(model, state, users, past)
        # a malformed stored state is not resumed: today's outcome rebuilds it, no failure
        with client.app.state.runtime.sessions() as session:
            personal_state.get_state(session, user_id).cov = [[float("nan")]]
            session.commit()
        caplog.clear()
        done = diary.row(35, named=True)
        put = client.put(f"/logs/outcome/{user_id}/{today.isoformat()}", json=_json(done, OUTCOME_FIELDS), headers=headers)
        assert put.status_code == 200, put.text
        assert not [r for r in caplog.records if "not updated after an outcome" in r.getMessage()]
        state = _state(client, user_id)
        assert state.through_date == today + timedelta(days=1)
        outcome_only = pl.concat([past, pl.DataFrame([{**{c: None for c in diary.columns}, "user_id": user_id, "date": today, **{f: done[f] for f in OUTCOME_FIELDS}}], schema=diary.schema)])
        _assert_state_is_a_rebuild(model, state, users, outcome_only)


def _absorb(client, forecaster: Forecaster, user_id: str) -> bool:
    """``absorb_outcome`` over the stored diary in a writer transaction, committed."""
    from migrainemamba.service import crud
    from migrainemamba.service.db import begin_writer
    from migrainemamba.service.forecasting import logs_frame, users_frame

    with client.app.state.runtime.sessions() as session:
        begin_writer(session)
        users, logs = users_frame(crud.get_user(session, user_id)), logs_frame(crud.all_logs(session, user_id))
        done = personal_state.absorb_outcome(session, user_id, forecaster, users, logs)
        session.commit()
    return done


def test_a_corrupt_stored_state_is_rebuilt_by_the_next_outcome(fitted, tmp_path, monkeypatch, caplog):
    """A stored row whose numbers or terms are not what the model can resume (ragged, not numbers,
    infinite, terms not a list) is neither resumed nor a failure: the update rebuilds it from day 0
    and stores the loop's state over the diary."""
    cohort, model = fitted
    today = date(2024, 3, 1)
    forecaster = _forecaster(model, tmp_path)
    starts: list[int | None] = []
    resume = model.resume

    def spy(grid, state, stop):
        starts.append(None if state is None else state.through)
        return resume(grid, state, stop)

    k = len(model.config.terms)
    corruptions = {
        "cov": [[1.0] * k, [1.0]],  # ragged
        "mean": ["a"] * k,  # not numbers
        "terms": 5,  # not a list
    }
    with make_client(make_settings(tmp_path), today=today, forecaster=forecaster) as client:
        user_id, _, users, diary = _lived(client, cohort, 36, today)
        monkeypatch.setattr(model, "resume", spy)
        for column, value in [*corruptions.items(), ("mean", [float("inf")] * k)]:
            with client.app.state.runtime.sessions() as session:
                setattr(personal_state.get_state(session, user_id), column, value)
                session.commit()
            starts.clear()
            caplog.clear()
            assert _absorb(client, forecaster, user_id), column
            assert starts == [None], (column, starts)  # rebuilt from day 0, not resumed
            assert not [r for r in caplog.records if "not updated after an outcome" in r.getMessage()]
            state = _state(client, user_id)
            assert state.through_date == today
            _assert_state_is_a_rebuild(model, state, users, diary.head(35))


def test_only_bad_data_is_absorbed_other_errors_fail_the_outcome_write(fitted, tmp_path, monkeypatch):
    """A programming error in the state update propagates (the stored state is not dropped); a
    database outage inside it answers 503 with Retry-After and the outcome is not written."""
    from sqlalchemy.exc import OperationalError

    cohort, model = fitted
    today = date(2024, 3, 1)
    forecaster = _forecaster(model, tmp_path)
    with make_client(make_settings(tmp_path), today=today, forecaster=forecaster) as client:
        user_id, headers, _, diary = _lived(client, cohort, 36, today)
        before = _state(client, user_id)

        def bug(*args, **kwargs):
            raise TypeError("injected programming error")

        monkeypatch.setattr(model, "resume", bug)
        with pytest.raises(TypeError, match="injected programming error"):
            _absorb(client, forecaster, user_id)
        assert _state(client, user_id).updated_at == before.updated_at  # kept: nothing was committed

        def outage(*args, **kwargs):
            raise OperationalError("SELECT 1", None, ConnectionError("injected: server closed the connection"))

        monkeypatch.setattr(model, "resume", outage)
        yesterday = diary.row(34, named=True)
        flipped = {"migraine_occurred": not yesterday["migraine_occurred"]}
        put = client.put(f"/logs/outcome/{user_id}/{yesterday['date'].isoformat()}", json=flipped, headers=headers)
        assert put.status_code == 503 and put.headers["Retry-After"], put.text
        monkeypatch.undo()
        stored = client.get(f"/logs/history/{user_id}", headers=headers).json()["logs"][0]
        assert (stored["date"], stored["migraine_occurred"]) == (yesterday["date"].isoformat(), yesterday["migraine_occurred"])
        assert _state(client, user_id).updated_at == before.updated_at


def test_a_late_outcome_rebuilds_the_state_and_the_next_forecast_follows_it(fitted, tmp_path, monkeypatch):
    """An outcome of a day the state has passed (here changed: day 26 of 35) makes the stored state
    stale: the outcome's update rebuilds it from day 0 (not resumed from the stale one), and the
    next forecast, resumed from it, equals the offline pipeline on the changed diary."""
    cohort, model = fitted
    today = date(2024, 3, 1)
    starts: list[int | None] = []
    resume = model.resume

    def spy(grid, state, stop):
        starts.append(None if state is None else state.through)
        return resume(grid, state, stop)

    with make_client(make_settings(tmp_path), today=today, forecaster=_forecaster(model, tmp_path)) as client:
        user_id, headers, users, diary = _lived(client, cohort, 36, today)
        past = diary.head(35)
        first = client.get(f"/predictions/{user_id}", headers=headers).json()
        before = _state(client, user_id)
        assert before.through_date == today
        monkeypatch.setattr(model, "resume", spy)
        late = past.row(25, named=True)
        flipped = not late["migraine_occurred"]
        put = client.put(f"/logs/outcome/{user_id}/{late['date'].isoformat()}", json={"migraine_occurred": flipped}, headers=headers)
        assert put.status_code == 200, put.text
        assert starts == [None]  # rebuilt from day 0, not resumed from the stale state
        changed = past.with_columns(
            pl.when(pl.col("date") == late["date"]).then(flipped).otherwise(pl.col("migraine_occurred")).alias("migraine_occurred"),
            *[pl.when(pl.col("date") == late["date"]).then(None).otherwise(pl.col(f)).alias(f) for f in OUTCOME_FIELDS[1:]],
        )
        state = _state(client, user_id)
        assert state.through_date == today and state.inputs_fingerprint != before.inputs_fingerprint
        _assert_state_is_a_rebuild(model, state, users, changed)
        again = client.get(f"/predictions/{user_id}", headers=headers)
        assert again.headers["X-Forecast"] == "new"
        assert starts == [None, 35]  # the forecast resumed the rebuilt state
        expected = _offline(model, users, changed, today)
        assert abs(again.json()["probability"] - expected) <= EXACT
        assert abs(expected - first["probability"]) > 1e-9  # the late outcome mattered


def test_the_forecast_is_explained_from_the_state_it_resumed(fitted, tmp_path, monkeypatch):
    """With the personal family routed, a forecast resumes the stored state once and explains
    itself from it (no replay): the same explanation items as the replaying ``explain``, and all
    groups plus the offset add up to the forecast's logit (1e-9)."""
    from migrainemamba.service import crud
    from migrainemamba.service.forecasting import logs_frame, model_predict, users_frame

    cohort, model = fitted
    today = date(2024, 3, 1)
    forecaster = _forecaster(model, tmp_path)
    with make_client(make_settings(tmp_path), today=today, forecaster=forecaster) as client:
        user_id, _, users, _ = _lived(client, cohort, 40, today)
        with client.app.state.runtime.sessions() as session:
            logs = logs_frame(crud.all_logs(session, user_id))
            users = users_frame(crud.get_user(session, user_id))
            replayed = forecaster.forecast(users, logs, today, predict=model_predict)
            calls = {"resume": 0}
            resume = model.resume

            def counted(*args, **kwargs):
                calls["resume"] += 1
                return resume(*args, **kwargs)

            def no_replay(*args, **kwargs):
                raise AssertionError("the forecast replayed the diary to explain itself")

            monkeypatch.setattr(model, "resume", counted)
            monkeypatch.setattr(model, "explain", no_replay)
            hook = personal_state.StatefulPredict(session, user_id, persist=False)
            served = forecaster.forecast(users, logs, today, predict=hook)
            monkeypatch.undo()
            assert calls["resume"] == 1 and not hook.rebuilt
            session.rollback()
    assert served.history_days >= 30 and served.contributions  # the personal terms speak
    assert served.probability == replayed.probability and served.contributions == replayed.contributions
    # every group (not only the habits shown) + the offset = the forecast's logit
    grid = build_features(users, logs, forecast_dates=pl.DataFrame({"user_id": [user_id], "date": [today]}))
    state = model.resume(grid, None, grid.height - 1)
    batch = ForecastBatch(users, logs, pl.DataFrame({"user_id": [user_id], "date": [today]}), precomputed=grid)
    items = model.explain_last(batch, model.last_day(grid, state))
    logit = np.log(served.probability) - np.log1p(-served.probability)
    assert abs(sum(e["log_odds"] for e in items) + model.offset(grid.tail(1))[0] - logit) <= 1e-9
    replay = model.explain(batch, top_k=None)[0]
    assert [e["group"] for e in items] == [e["group"] for e in replay]
    np.testing.assert_allclose([e["log_odds"] for e in items], [e["log_odds"] for e in replay], atol=1e-9)


@pytest.fixture(scope="module")
def on_foundation(fitted):
    """The personal model as it serves: on a (small) LightGBM foundation's log-odds, with a
    personal weight on its recent-attacks effect (``configs/personal``)."""
    from migrainemamba.models.foundation import FoundationModel
    from tests.unit.test_foundation import foundation_config

    cohort, _ = fitted
    features = build_features(cohort.users, cohort.daily_logs)
    targets = features.filter(pl.col("scorable")).select("user_id", "date")
    batch = ForecastBatch(cohort.users, cohort.daily_logs, targets, precomputed=features)
    foundation = FoundationModel(foundation_config(num_threads=1, num_boost_round=60))
    foundation.fit(batch)
    model = PersonalModel(PersonalConfig(weighted_effects=("recent_attacks",)), foundation)
    model.fit(batch)
    return cohort, model


def test_the_served_forecast_and_explanation_are_the_replays_to_the_bit(on_foundation):
    """The service's forecast of a day (resumed from a stored state at 0, 1 or 3 days before it, or
    at it; :meth:`PersonalModel.last_day`, one offset run on the day) and its explanation equal the
    replay of the whole diary (``predict``, ``explain``: the computation the service's used to match
    to the bit) exactly, on every day of a simulated diary, before and after day 31."""
    cohort, model = on_foundation
    uid = cohort.daily_logs.group_by("user_id").len().sort("len", "user_id", descending=True)["user_id"][0]
    users = cohort.users.filter(pl.col("user_id") == uid)
    logs = cohort.daily_logs.filter(pl.col("user_id") == uid).sort("date").head(45)
    for day in logs["date"].to_list()[1:]:
        target = pl.DataFrame({"user_id": [uid], "date": [day]})
        history = logs.filter(pl.col("date") < day)
        grid = build_features(users, history, forecast_dates=target)
        batch = ForecastBatch(users, history, target, precomputed=grid)
        stop = grid.height - 1
        expected_p, expected_items = float(model.predict(batch)[0]), model.explain(batch, top_k=None)[0]
        for cut in sorted({0, max(stop - 3, 0), max(stop - 1, 0), stop}):
            state = model.resume(grid, model.resume(grid, None, cut) if cut else None, stop)
            served = model.last_day(grid, state)
            assert served.probability == expected_p, (day, cut)
            assert model.explain_last(batch, served) == expected_items, (day, cut)


def test_a_forecast_runs_the_population_model_once_on_its_day(fitted, tmp_path, monkeypatch):
    """GET /predictions with the personal family serving: the population (offset) model's log-odds
    of the forecast day are computed once per request (the forecast and its explanation share them;
    the resumption reads only the days before it), the stored state at the day or behind it."""
    cohort, model = fitted
    today = date(2024, 3, 1)
    with make_client(make_settings(tmp_path), today=today, forecaster=_forecaster(model, tmp_path)) as client:
        user_id, headers, _, _ = _lived(client, cohort, 36, today)
        for day in (today, today + timedelta(days=3)):  # the stored state is at today
            runs: list[int] = []
            logit = model.offset_model.logit

            def spy(features, day=day, logit=logit, runs=runs):
                runs.append(int((features["date"] == day).sum()))
                return logit(features)

            monkeypatch.setattr(model.offset_model, "logit", spy)
            client.app.dependency_overrides[get_today] = lambda day=day: day
            got = client.get(f"/predictions/{user_id}", headers=headers)
            monkeypatch.undo()
            assert got.status_code == 200 and got.headers["X-Forecast"] == "new", got.text
            assert got.json()["date"] == day.isoformat()
            assert sum(runs) == 1, (day, runs)

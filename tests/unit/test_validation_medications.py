"""The medications table of the data contract: validation, quarantine reasons, the real-data import."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from migrainemamba.data.io import load_real
from migrainemamba.data.prepare import PreparedCohort, prepare_cohort
from migrainemamba.data.schema import MEDICATION_CLASSES, MEDICATIONS_SCHEMA
from migrainemamba.data.validation import DataContractError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "diary"


def test_real_import_reads_an_optional_medications_file():
    data = load_real(
        FIXTURES / "users.csv", FIXTURES / "daily_logs.csv", FIXTURES / "medications.csv"
    )
    meds = data.medications
    assert meds is not None and meds.schema == pl.Schema(MEDICATIONS_SCHEMA)
    # two intakes of one drug on one day are two rows, not duplicates
    assert meds.height == 4 and meds.filter(pl.col("name") == "sumatriptan").height == 2
    assert meds["time"].to_list() == ["07:45", "15:10", None, "21:00"]
    reasons = dict(
        zip(
            data.quarantine.filter(pl.col("table") == "medications")["row_number"].to_list(),
            data.quarantine.filter(pl.col("table") == "medications")["reason"].to_list(),
            strict=True,
        )
    )
    assert reasons == {
        5: "time: '7:5' does not match ^([01][0-9]|2[0-3]):[0-5][0-9]$",
        6: "medication_class: 'nsaid' is not one of " + "/".join(MEDICATION_CLASSES),
        7: "relief_2h: given for a preventive dose (relief is rated for acute intakes only)",
        8: "user_id: 'u9' is not a known user",
        9: "dose_mg: 'ten' is not a number; relief_2h: 4 is outside 0..3",
    }


def test_without_a_medications_file_there_is_no_medications_table():
    assert load_real(FIXTURES / "users.csv", FIXTURES / "daily_logs.csv").medications is None


def test_a_medications_file_with_a_wrong_column_stops_with_its_name(tmp_path):
    bad = tmp_path / "medications.csv"
    bad.write_text("user_id,date,time,drug,medication_class,purpose,dose_mg,relief_2h\n")
    with pytest.raises(
        DataContractError, match="missing required column.*'name'.*unknown column.*'drug'"
    ):
        load_real(FIXTURES / "users.csv", FIXTURES / "daily_logs.csv", bad)


def test_prepare_stage_writes_the_medications_of_a_real_cohort(tmp_path):
    cfg = {
        "source": "real",
        "users_path": str(FIXTURES / "users.csv"),
        "daily_logs_path": str(FIXTURES / "daily_logs.csv"),
        "medications_path": str(FIXTURES / "medications.csv"),
    }
    cohort = prepare_cohort(cfg)
    cohort.write(tmp_path)
    again = PreparedCohort.read(tmp_path)
    assert again.medications is not None and again.medications.height == 4
    assert again.truth_medication_users is None
    assert (again.quarantine["table"] == "medications").sum() == 5
    # without the file: no medications table is written (and none is left from before)
    prepare_cohort({**cfg, "medications_path": None}).write(tmp_path)
    assert PreparedCohort.read(tmp_path).medications is None

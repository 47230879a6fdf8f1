"""How well the ICHD-3 overuse check finds a simulated cohort's over-users (the simulator's truth).

``python -m migrainemamba.clinical.agreement [--prepared data/prepared] [--out file.json]``
reads a prepared simulated cohort (``daily_logs``, ``medications``,
``truth_medication_users``) and prints the rates as JSON.

The rule needs more than 3 assessable months of diary, so the rates are given
for the people who have them (``assessable``) and, for completeness, for all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl

from migrainemamba.clinical.overuse import MIN_MONTHS, check_cohort
from migrainemamba.clinical.summary import monthly_summary


def overuse_agreement(
    daily_logs: pl.DataFrame, medications: pl.DataFrame, truth_medication_users: pl.DataFrame
) -> dict[str, Any]:
    """Flag rates (``overuse``, ``watch``) among simulated over-users and among the others."""
    flags = check_cohort(monthly_summary(daily_logs, medications))
    joined = truth_medication_users.join(flags, on="user_id", how="left").with_columns(
        pl.col("months_assessed").fill_null(0), pl.col("level").fill_null("none")
    )

    def rates(frame: pl.DataFrame) -> dict[str, Any]:
        n = frame.height
        return {
            "n": n,
            "flagged_overuse": int((frame["level"] == "overuse").sum()),
            "flagged_watch": int((frame["level"] == "watch").sum()),
            "overuse_rate": float((frame["level"] == "overuse").mean()) if n else None,
            "watch_rate": float((frame["level"] == "watch").mean()) if n else None,
        }

    assessable = joined.filter(pl.col("months_assessed") >= MIN_MONTHS)
    by_pattern = {
        str(pattern): rates(part)
        for (pattern,), part in assessable.filter(pl.col("overuser"))
        .partition_by("overuse_pattern", as_dict=True)
        .items()
    }
    return {
        "min_assessable_months": MIN_MONTHS,
        "assessable": {
            "overusers": rates(assessable.filter(pl.col("overuser"))),
            "others": rates(assessable.filter(~pl.col("overuser"))),
            "overusers_by_pattern": dict(sorted(by_pattern.items())),
        },
        "all": {
            "overusers": rates(joined.filter(pl.col("overuser"))),
            "others": rates(joined.filter(~pl.col("overuser"))),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    tables = {}
    for name in ("daily_logs", "medications", "truth_medication_users"):
        path = args.prepared / f"{name}.parquet"
        if not path.is_file():
            parser.error(f"{path} is missing: a simulated cohort from the prepare stage is needed")
        tables[name] = pl.read_parquet(path)
    result = overuse_agreement(
        tables["daily_logs"], tables["medications"], tables["truth_medication_users"]
    )
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

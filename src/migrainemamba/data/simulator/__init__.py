"""Clinically grounded cohort simulator (docs/architecture.md §3).

`simulate_cohort(config)` returns the two contract tables plus the ground truth
the real world never gives: each person's trigger sensitivities and, per
user-day, `p_true` (the probability that generated the outcome) and `p_oracle`
(the best forecast possible from what is known on the morning of that day).
"""

from migrainemamba.data.simulator.cohort import SimulatedCohort, simulate_cohort
from migrainemamba.data.simulator.config import SimulatorConfig

__all__ = ["SimulatedCohort", "SimulatorConfig", "simulate_cohort"]

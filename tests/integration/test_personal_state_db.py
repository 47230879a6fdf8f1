"""The personal model's stored state on each backend (SQLite, PostgreSQL): concurrent outcomes of
one person leave the state the loop computes from the final diary; export and erasure cover it."""

from __future__ import annotations

import pytest

from tests.integration.test_service_db import database_url  # noqa: F401 - the per-backend fixture
from tests.unit.test_service_personal import (
    concurrent_outcomes_leave_a_state_equal_to_a_rebuild,
    fitted,  # noqa: F401 - the small personal model
)

pytestmark = pytest.mark.integration


def test_concurrent_outcomes_on_each_backend(fitted, tmp_path, database_url):  # noqa: F811
    concurrent_outcomes_leave_a_state_equal_to_a_rebuild(fitted, tmp_path, database_url)

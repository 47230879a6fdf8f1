"""Every table of the service on one metadata: ``models_db`` (users, diary, forecasts) and
``models_clinical`` (medications, questionnaires), ``models_personal`` (the personal model's state). Alembic and the schema test read ``Base`` from
here, so no table is left out of a migration.
"""

from __future__ import annotations

from migrainemamba.service import (
    models_clinical,  # noqa: F401 - registers its tables on Base
    models_personal,  # noqa: F401 - registers personal_states on Base
)
from migrainemamba.service.models_db import Base

__all__ = ["Base"]

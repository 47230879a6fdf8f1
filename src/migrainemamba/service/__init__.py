"""The serving stage (docs/architecture.md §6): REST API, database, forecasting seam.

- ``settings``: one pydantic-settings class (environment / ``.env``)
- ``db``, ``models_db``, ``alembic/``: engine and sessions, tables, migrations
- ``schemas``: request/response models generated from ``data.schema``
- ``security``, ``deps``: tokens and the typed dependencies (SessionDep, OwnedUser, ...)
- ``crud``: the data layer; ``routes/``: thin routes over it
- ``forecasting``: routing table phase -> model, one user's forecast
- ``insights``, ``weather``: trigger/weekly/recommendation computations, optional pressure
- ``runtime``, ``app``: per-process state and ``create_app(settings)``
- ``service``: the BentoML service mounting the app at ``/api/v1``
"""

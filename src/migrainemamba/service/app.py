"""The FastAPI app factory: ``create_app(settings)``.

Routes (relative to the mount point, ``/api/v1`` in the BentoML service):

- ``/users``: ``POST /onboarding``, ``GET|PUT /profile/{user_id}``
- ``/logs``: ``POST /submit``, ``GET /history/{user_id}``, ``PUT /outcome/{user_id}/{date}``
- ``/predictions``: ``GET /{user_id}`` (today), ``GET /history/{user_id}``, ``GET /accuracy/{user_id}``
- ``/insights``: ``GET /triggers/{user_id}``, ``/weekly-stats/{user_id}``, ``/recommendations/{user_id}``
- the clinical diary: ``/medications`` (``POST /log``, ``GET /history/{user_id}``,
  ``PUT|DELETE /{user_id}/{medication_id}``), ``/questionnaires`` (``POST /midas``, ``POST /hit6``,
  ``GET /history/{user_id}``), ``GET /clinical/summary/{user_id}``, ``GET /reports/{user_id}``,
  ``GET /users/export/{user_id}``, ``DELETE /users/{user_id}``
- ``GET /health`` (the process is up), ``GET /ready`` (database migrated and reachable,
  models loaded; 503 otherwise), ``GET /docs`` (Swagger UI from local files, works
  offline), ``GET /openapi.json``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, OperationalError

from migrainemamba.service.forecasting import Forecaster
from migrainemamba.service.routes import (
    account,
    clinical,
    insights,
    logs,
    medications,
    predictions,
    questionnaires,
    users,
)
from migrainemamba.service.runtime import Runtime
from migrainemamba.service.schemas import ReadinessOut
from migrainemamba.service.settings import Settings
from migrainemamba.service.weather import PressureProvider

log = logging.getLogger(__name__)

API_VERSION = "1"


def swagger_static_dir() -> Path | None:
    """Swagger UI's JS and CSS as shipped inside BentoML (served locally so /docs works offline)."""
    spec = find_spec("bentoml")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "_internal" / "server" / "static_content"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _add_docs(app: FastAPI) -> None:
    static = swagger_static_dir()
    if static is None:
        log.warning(
            "Swagger UI files not found: /docs is unavailable (the schema stays at /openapi.json)"
        )
        return
    app.mount("/docs-static", StaticFiles(directory=static), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - docs",
            swagger_js_url=f"{root}/docs-static/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs-static/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs-static/favicon-light-32x32.png",
        )


def create_app(
    settings: Settings,
    *,
    forecaster: Forecaster | None = None,
    weather: PressureProvider | None = None,
) -> FastAPI:
    """The API over ``settings``; ``forecaster`` and ``weather`` replace the ones settings would build."""
    runtime = Runtime(settings, forecaster=forecaster, weather=weather)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        yield
        runtime.close()

    app = FastAPI(
        title="MigraineMamba",
        version=API_VERSION,
        description="Daily migraine-onset forecasts, diary, and personal trigger insights.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    for module in (users, account, logs, medications, questionnaires, predictions, insights, clinical):
        app.include_router(module.router)

    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error: %s", exc)
        return JSONResponse({"detail": "database unavailable, try again later"}, status_code=503)

    @app.get("/health", tags=["status"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["status"],
        response_model=ReadinessOut,
        responses={503: {"model": ReadinessOut}},
    )
    def ready() -> JSONResponse:
        """Readiness: the database is reachable and migrated, and each phase has a loaded model."""
        status = runtime.readiness()
        return JSONResponse(
            ReadinessOut(**status).model_dump(mode="json"),
            status_code=200 if status["ready"] else 503,
        )

    _add_docs(app)
    return app

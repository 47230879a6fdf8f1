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
  models loaded; 503 otherwise; details only for ``OPERATOR_TOKEN``), ``GET /docs``
  (Swagger UI from local files, works offline), ``GET /openapi.json``.

Every request passes ``hygiene.InputHygiene`` first (non-finite numbers, lone
surrogates, control characters, body size, content type), and every status a
route can answer is in the OpenAPI schema (``errors.document_common_responses``):
routes added to the app get both without declaring anything.
"""

from __future__ import annotations

import hmac
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

from migrainemamba.service.errors import document_common_responses, install_error_handlers
from migrainemamba.service.forecasting import Forecaster
from migrainemamba.service.hygiene import InputHygiene
from migrainemamba.service.metrics import service_metrics
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
        service_metrics()  # in the worker, after BentoML set up multiprocess metrics: shown at 0
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
    app.add_middleware(InputHygiene, api=app, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    for module in (users, account, logs, medications, questionnaires, predictions, insights, clinical):
        app.include_router(module.router)

    install_error_handlers(app)

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
    def ready(request: Request) -> JSONResponse:
        """Readiness: the database is reachable and migrated, and each phase has a loaded model.

        The public body says only ``ready``; the details (database backend, revision,
        error, models and their paths) need ``Authorization: Bearer <OPERATOR_TOKEN>``.
        """
        status = runtime.readiness()
        if not status["ready"]:
            log.warning("not ready: database %s, models %s", status["database"], status["models"])
        body = status if _is_operator(request, settings) else {"ready": status["ready"]}
        return JSONResponse(
            ReadinessOut(**body).model_dump(mode="json", exclude_none=True),
            status_code=200 if status["ready"] else 503,
        )

    _add_docs(app)
    document_common_responses(app)
    return app


def _is_operator(request: Request, settings: Settings) -> bool:
    if settings.operator_token is None:
        return False
    sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(sent.encode(), settings.operator_token.get_secret_value().encode())

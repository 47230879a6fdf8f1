"""Errors as HTTP answers, and the same answers documented in OpenAPI for every route.

- Database unavailable (connection refused or timed out, statement or lock
  timeout, pool exhausted, not migrated yet): 503 with ``Retry-After``.
- A value the database refuses (``DataError``; input hygiene should have
  caught it first): 422, never a 500.
- A write whose merged diary day would contradict itself (``crud.DayInconsistent``):
  409, ``detail[].loc`` naming the field.
- FastAPI's validation errors: 422 with a bounded, JSON-safe echo
  (``hygiene.bounded_errors``).

``document_common_responses`` adds to each operation of the OpenAPI schema
every status it can answer besides its own: 401/403/404 for operations behind
the bearer token (404 unknown user, 403 someone else's), 413/415 for those
with a body, 422 and 503 everywhere (hygiene checks every query). Routes
added later get the same by being in the app.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from migrainemamba.service.crud import DayInconsistent
from migrainemamba.service.db import DatabaseNotReady
from migrainemamba.service.hygiene import bounded_errors

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "2"
UNAVAILABLE = "database unavailable, try again later"

_MESSAGE = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
COMMON_RESPONSES: dict[str, str] = {
    "401": "missing, malformed, expired or foreign bearer token",
    "403": "the token belongs to another user",
    "404": "unknown user (or resource)",
    "413": "request body larger than the limit",
    "415": "request body is not application/json",
    "422": "invalid input: detail[].loc names the field",
    "503": "database unavailable or not ready: retry after Retry-After seconds",
}


def install_error_handlers(app: FastAPI) -> None:
    async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        detail = str(exc) if isinstance(exc, DatabaseNotReady) else UNAVAILABLE
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})

    for error in (DatabaseNotReady, OperationalError, InterfaceError, DisconnectionError, PoolTimeout):
        app.add_exception_handler(error, database_unavailable)

    async def database_refused(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return await database_unavailable(_request, exc)
        log.warning("database refused a value: %s", str(exc).splitlines()[0])
        return JSONResponse(
            {"detail": [{"type": "value_error", "loc": ["body"], "msg": "a value cannot be stored (e.g. a control character)"}]},
            status_code=422,
        )

    app.add_exception_handler(DataError, database_refused)

    async def day_inconsistent(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DayInconsistent)
        error = {"type": "day_inconsistent", "loc": ["body", exc.field], "msg": str(exc)}
        return JSONResponse({"detail": [error]}, status_code=409)

    app.add_exception_handler(DayInconsistent, day_inconsistent)

    async def validation_failed(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": bounded_errors(exc.errors())}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation_failed)


def _response(description: str, code: str) -> dict[str, Any]:
    if code == "422":
        schema = {"$ref": "#/components/schemas/HTTPValidationError"}
    else:
        schema = {"$ref": "#/components/schemas/Message"}
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if code == "503":
        out["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}
    return out


def document_common_responses(app: FastAPI) -> None:
    """Make ``app.openapi()`` list every status each operation can answer (module docstring)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Message"] = _MESSAGE
        components.setdefault(
            "HTTPValidationError",
            {
                "type": "object",
                "properties": {"detail": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}},
            },
        )
        components.setdefault(
            "ValidationError",
            {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["loc", "msg", "type"],
            },
        )
        for item in schema.get("paths", {}).values():
            for method, operation in item.items():
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                codes = ["422", "503"]
                if operation.get("security"):
                    codes += ["401", "403", "404"]
                if "requestBody" in operation:
                    codes += ["413", "415"]
                responses = operation.setdefault("responses", {})
                for code in codes:
                    responses.setdefault(code, _response(COMMON_RESPONSES[code], code))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

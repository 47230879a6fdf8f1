"""Input hygiene for every route, present and future: one ASGI middleware in front of the app.

It runs before routing and validation, so a route gets it by being in the app;
nothing has to be declared per route or per schema. It answers, naming the
field in FastAPI's own 422 shape (``detail[].loc`` = ``["body", "field", ...]``,
``["path", "user_id"]`` or ``["query", "start"]``):

- 422 for a number that is not finite (``NaN``, ``Infinity``, ``-Infinity``, or a
  literal that overflows like ``1e309``), a string (or key) with a lone surrogate
  (``"\\ud800"``) or a control character (C0 other than tab, newline, carriage
  return; DEL), in the JSON body; control characters in path and query
  parameters (none allowed there); a body that is not JSON or not UTF-8.
  PostgreSQL cannot store NUL in text and JSON output cannot carry a lone
  surrogate, so these are rejected on every backend alike.
- 413 for a body over ``max_body_bytes``.
- 415 for a body (or a POST/PUT/PATCH) whose ``Content-Type`` is not JSON.

Error bodies are bounded: at most ``MAX_ERRORS`` errors, each echoing at most
``MAX_ECHO_CHARS`` characters of its input (``bounded_errors``, also used by the
app's handler of FastAPI's own validation errors).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ERRORS = 10
MAX_ECHO_CHARS = 80
DEFAULT_MAX_BODY_BYTES = 256 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# in JSON strings: C0 controls but tab, LF, CR; DEL; lone surrogates
_BAD_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# in path and query parameters: every C0 control, DEL, lone surrogates
_BAD_IN_PARAM = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


class _NonFinite:
    """Stands for a ``NaN`` / ``Infinity`` literal while the body is walked."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _describe_char(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate (U+{code:04X})"
    return f"a control character (U+{code:04X})"


def _echo(value: Any) -> Any:
    """A JSON-safe, bounded echo of an input value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # a huge integer echoes as its size (str() of it may even fail)
        return value if abs(value) < 10**15 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, _NonFinite):
        return value.literal
    if isinstance(value, str):
        text = value[:MAX_ECHO_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
        return text + ("..." if len(value) > MAX_ECHO_CHARS else "")
    if isinstance(value, dict):
        return f"<object with {len(value)} keys>"
    if isinstance(value, list | tuple):
        return f"<array of {len(value)} items>"
    return f"<{type(value).__name__}>"


def bounded_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI-shaped error items, JSON-safe and bounded in number and size."""
    out = []
    for error in list(errors)[:MAX_ERRORS]:
        item = {
            "type": str(error.get("type", "value_error")),
            "loc": [p if isinstance(p, int) else _echo(str(p)) for p in error.get("loc", ())],
            "msg": str(error.get("msg", ""))[: 4 * MAX_ECHO_CHARS]
            .encode("utf-8", "backslashreplace")
            .decode("utf-8"),
        }
        if "input" in error:
            item["input"] = _echo(error["input"])
        out.append(item)
    return out


def _walk(value: Any, loc: tuple[str | int, ...]) -> Iterator[dict[str, Any]]:
    """Errors for every non-finite number and bad string (or key) inside ``value``."""
    if isinstance(value, _NonFinite) or (isinstance(value, float) and not math.isfinite(value)):
        yield {
            "type": "finite_number",
            "loc": loc,
            "msg": "Input should be a finite number (NaN, Infinity and overflowing literals like 1e309 are not allowed)",
            "input": value,
        }
    elif isinstance(value, str):
        found = _BAD_IN_TEXT.search(value)
        if found:
            yield {
                "type": "string_character",
                "loc": loc,
                "msg": f"String contains {_describe_char(found.group())}, which is not allowed",
                "input": value,
            }
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _BAD_IN_TEXT.search(key)
            if found:
                yield {
                    "type": "string_character",
                    "loc": (*loc, key),
                    "msg": f"Key contains {_describe_char(found.group())}, which is not allowed",
                    "input": key,
                }
            yield from _walk(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*loc, index))


def body_errors(body: bytes) -> list[dict[str, Any]]:
    """The hygiene errors of a JSON body (an unparsable body is one error)."""
    try:
        document = json.loads(body, parse_constant=_NonFinite)
    except UnicodeDecodeError as exc:
        return [{"type": "json_invalid", "loc": ("body",), "msg": f"Body is not UTF-8: {exc.reason} at byte {exc.start}", "input": None}]
    except json.JSONDecodeError as exc:
        return [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": f"JSON decode error: {exc.msg}", "input": None}]
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        return [{"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {str(exc)[:200]}", "input": None}]
    return list(_walk(document, ("body",)))


def _param_errors(where: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    errors = []
    for name, value in params:
        found = _BAD_IN_PARAM.search(value) or _BAD_IN_PARAM.search(name)
        if found:
            errors.append(
                {
                    "type": "string_character",
                    "loc": (where, name),
                    "msg": f"Parameter contains {_describe_char(found.group())}, which is not allowed",
                    "input": value,
                }
            )
    return errors


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _json_response(status: int, content: dict[str, Any]) -> tuple[int, bytes]:
    return status, json.dumps(content, ensure_ascii=True).encode()


class InputHygiene:
    """ASGI middleware: see the module docstring. ``api`` is the app whose routes name path parameters."""

    def __init__(self, app: ASGIApp, api: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.api = api
        self.max_body_bytes = max_body_bytes
        self._compiled: list[re.Pattern[str]] | None = None

    def _templates(self) -> list[re.Pattern[str]]:
        """Path templates of the app's operations (its OpenAPI schema), fewest parameters first."""
        if self._compiled is None:
            paths = sorted(self.api.openapi().get("paths", {}), key=lambda p: (p.count("{"), p))
            self._compiled = [compile_path(p)[0] for p in paths]
        return self._compiled

    def _path_params(self, scope: Scope) -> list[tuple[str, str]]:
        path = scope.get("path", "")
        if not _BAD_IN_PARAM.search(path):
            return []
        relative = path.removeprefix(scope.get("root_path", "").rstrip("/")) or "/"
        for template in self._templates():
            found = template.match(relative)
            if found:
                return list(found.groupdict().items())
        return [("path", path)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors = _param_errors("path", self._path_params(scope))
        query = scope.get("query_string", b"").decode("latin-1")
        errors += _param_errors("query", parse_qsl(query, keep_blank_values=True))
        if errors:
            await self._reply(send, *_json_response(422, {"detail": bounded_errors(errors)}))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        content_type = headers.get("content-type", "")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reply(send, *self._too_large())
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._reply(send, *self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if (body or (scope["method"] in BODY_METHODS and content_type)) and not _is_json(content_type):
            detail = f"Content-Type must be application/json, got {_echo(content_type) or 'none'!s}"
            await self._reply(send, *_json_response(415, {"detail": detail}))
            return
        if body:
            errors = body_errors(body)
            if errors:
                await self._reply(send, *_json_response(422, {"detail": bounded_errors(errors)}))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> tuple[int, bytes]:
        return _json_response(413, {"detail": f"Body larger than {self.max_body_bytes} bytes"})

    @staticmethod
    async def _reply(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

"""Typed dependencies, declared once: each route's signature says what it needs.

Authorization order for a route that names a user: no or bad token -> 401;
unknown user -> 404; a valid token of another user -> 403.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from migrainemamba.service import crud
from migrainemamba.service.db import SessionDep, is_writer
from migrainemamba.service.forecasting import Forecaster
from migrainemamba.service.models_db import User
from migrainemamba.service.runtime import Runtime
from migrainemamba.service.schemas import USER_ID_PATTERN
from migrainemamba.service.security import InvalidToken, verify_access_token
from migrainemamba.service.settings import Settings


async def get_runtime(request: Request) -> Runtime:
    # the light dependencies are async: no thread-pool hop each (they do no I/O once started)
    runtime = request.app.state.runtime
    runtime.start()
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_forecaster(runtime: RuntimeDep) -> Forecaster:
    return runtime.forecaster


SettingsDep = Annotated[Settings, Depends(get_settings)]
ForecasterDep = Annotated[Forecaster, Depends(get_forecaster)]


async def get_today(settings: SettingsDep) -> date:
    """'Today' in the service's TIMEZONE (tests override this dependency)."""
    return datetime.now(ZoneInfo(settings.timezone)).date()


TodayDep = Annotated[date, Depends(get_today)]

_bearer = HTTPBearer(auto_error=False, description="the access_token returned by onboarding")


async def get_token_subject(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The user id of a valid bearer token, else 401."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <access_token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return verify_access_token(credentials.credentials, runtime.secret)
    except InvalidToken as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"invalid token: {exc}",
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc


TokenSubject = Annotated[str, Depends(get_token_subject)]


def authorize(session: Session, subject: str, user_id: str) -> User:
    """The user ``user_id`` if the token belongs to them: 404 if unknown, 403 if someone else's.

    In a writer's transaction (``db``) the user's row stays locked until the request ends, so
    the writes of one person are serialised and counters computed from their rows are exact.
    """
    user = crud.get_user(session, user_id, lock=is_writer(session) and subject == user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {user_id!r} not found")
    if subject != user_id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this token does not grant access to user {user_id!r}"
        )
    return user


# user ids are issued by onboarding (uuid hex); a path id outside this shape is a 422 naming it
UserIdPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=USER_ID_PATTERN, description="the user's id")
]


def get_owned_user(user_id: UserIdPath, subject: TokenSubject, session: SessionDep) -> User:
    """The path's ``{user_id}``, checked against the token."""
    return authorize(session, subject, user_id)


OwnedUser = Annotated[User, Depends(get_owned_user)]


# How far back a diary day (or a period start) may be entered. Bounded because a
# forecast builds a day-by-day grid from the first diary day: a typo like
# 0001-01-01 would otherwise make every request for that user slow.
MAX_DAYS_BACK = 730


def reject_future(value: date | None, today: date, loc: tuple[str, ...], max_days_back: int = MAX_DAYS_BACK) -> None:
    """A 422 shaped like FastAPI's own, naming the field, for a date after today or too far back."""
    if value is None:
        return
    problem = None
    if value > today:
        problem = ("date_in_future", f"Date {value.isoformat()} is in the future (today is {today.isoformat()})")
    elif (today - value).days > max_days_back:
        problem = ("date_too_old", f"Date {value.isoformat()} is more than {max_days_back} days before today")
    if problem:
        error: dict[str, Any] = {"type": problem[0], "loc": loc, "msg": problem[1], "input": value.isoformat()}
        raise RequestValidationError([error])

"""Users: onboarding (returns the access token), profile read and update."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from migrainemamba.service import crud
from migrainemamba.service.db import SessionDep
from migrainemamba.service.deps import ForecasterDep, OwnedUser, RuntimeDep, TodayDep, reject_future
from migrainemamba.service.schemas import OnboardingResponse, UserCreate, UserProfile, UserUpdate
from migrainemamba.service.security import create_access_token

router = APIRouter(prefix="/users", tags=["users"])


@router.post("/onboarding", status_code=status.HTTP_201_CREATED, response_model=OnboardingResponse)
def onboarding(
    body: UserCreate,  # type: ignore[valid-type]
    session: SessionDep,
    runtime: RuntimeDep,
    forecaster: ForecasterDep,
    today: TodayDep,
) -> OnboardingResponse:
    """Create a user; the response carries the access token every other route needs."""
    reject_future(body.cycle_start_day, today, ("body", "cycle_start_day"))
    user = crud.create_user(session, body.model_dump(), forecaster)
    session.commit()
    token = create_access_token(
        user.user_id, runtime.secret, timedelta(days=runtime.settings.token_ttl_days)
    )
    return OnboardingResponse(user=UserProfile.model_validate(user), access_token=token)


@router.get("/profile/{user_id}", response_model=UserProfile)
def get_profile(user: OwnedUser) -> UserProfile:  # type: ignore[valid-type]
    return UserProfile.model_validate(user)


@router.put("/profile/{user_id}", response_model=UserProfile)
def update_profile(
    body: UserUpdate,  # type: ignore[valid-type]
    user: OwnedUser,
    session: SessionDep,
    today: TodayDep,
) -> UserProfile:  # type: ignore[valid-type]
    """Change the fields sent (others stay); bmi is recomputed from height and weight."""
    changes = body.model_dump(exclude_unset=True)
    reject_future(changes.get("cycle_start_day"), today, ("body", "cycle_start_day"))
    crud.update_user(session, user, changes)
    session.commit()
    return UserProfile.model_validate(user)

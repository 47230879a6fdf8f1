"""Data portability and erasure: export all of a user's rows (JSON, or CSV files in a zip); delete the user."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Response

from migrainemamba.service import clinical_crud
from migrainemamba.service.db import SessionDep
from migrainemamba.service.deps import OwnedUser
from migrainemamba.service.schemas_clinical import ErasureOut

router = APIRouter(prefix="/users", tags=["users"])


def _cell(value: Any) -> Any:
    """CSV cell: lists and objects (symptoms, answers, triggers) as JSON text, null as empty."""
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else value


def _zip(export: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, rows in export["tables"].items():
            text = io.StringIO()
            columns = list(rows[0]) if rows else export["columns"][name]
            writer = csv.DictWriter(text, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
            archive.writestr(f"{name}.csv", text.getvalue())
        manifest = {k: v for k, v in export.items() if k != "tables"}
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
    return buffer.getvalue()


@router.get(
    "/export/{user_id}",
    response_class=Response,
    responses={200: {"content": {"application/json": {}, "application/zip": {}}}},
)
def export(
    user: OwnedUser, session: SessionDep, format: Literal["json", "zip"] = "json"
) -> Response:
    """Everything stored about the user: profile, diary, medications, questionnaires, forecasts.

    ``format=json``: one document (``tables``: rows per table, ``counts``); ``format=zip``: one
    CSV file per table (lists as JSON text) and ``manifest.json`` with the counts.
    """
    tables = clinical_crud.export_user(session, user.user_id)
    document = {
        "user_id": user.user_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "counts": {name: len(rows) for name, rows in tables.items()},
        "columns": {t.name: list(t.c.keys()) for t in clinical_crud.owned_tables()},
        "tables": tables,
    }
    filename = f"migrainemamba-export-{user.user_id}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "zip":
        return Response(_zip(document), media_type="application/zip", headers=headers)
    return Response(json.dumps(document), media_type="application/json", headers=headers)


@router.delete("/{user_id}", response_model=ErasureOut)
def erase(user: OwnedUser, session: SessionDep) -> ErasureOut:
    """Delete the user and every row that belongs to them. Their token stops working (the
    user no longer exists: every route answers 404). This cannot be undone: export first."""
    user_id = user.user_id
    deleted = clinical_crud.erase_user(session, user_id)
    session.commit()
    return ErasureOut(user_id=user_id, deleted=deleted)

"""The BentoML service: the FastAPI app mounted at ``/api/v1``.

Run: ``bentoml serve migrainemamba.service.service:MigraineMamba`` (settings from
the environment / ``.env``, see ``.env.example``). BentoML adds ``/healthz``,
``/livez``, ``/readyz`` (which asks :meth:`MigraineMamba.__is_ready__`: database
migrated and reachable, every phase routed to a loaded model) and Prometheus
``/metrics``; the API's own docs are at ``/api/v1/docs`` (local files, offline).

Creating the app here touches nothing: the database is migrated and the
routing table's models are loaded when a worker starts (the app's lifespan).
Each worker keeps its state in the database, so ``workers: N`` is safe. When
models are packaged into the bento, declare them at class level
(``bentoml.models.BentoModel``) and write the routing table from them.
"""

from __future__ import annotations

import os

import bentoml

from migrainemamba.runtime import TELEMETRY_OFF
from migrainemamba.service.app import create_app
from migrainemamba.service.settings import Settings

for _key, _value in TELEMETRY_OFF.items():
    os.environ.setdefault(_key, _value)

app = create_app(Settings())


@bentoml.service(name="migrainemamba", traffic={"timeout": 60})
@bentoml.asgi_app(app, path="/api/v1")
class MigraineMamba:
    """Daily migraine-onset forecasts, diary and insights (REST under /api/v1)."""

    def __is_ready__(self) -> bool:
        return bool(app.state.runtime.readiness()["ready"])

"""The service's own Prometheus metrics, beside BentoML's request metrics at ``/metrics``.

Created on first use, never at import: a BentoML worker sets ``PROMETHEUS_MULTIPROC_DIR`` after
it imports the service module, and a metric created before that would live in one process's
memory, invisible to ``/metrics`` (``bentoml.metrics``' note). The app's lifespan creates them
when a worker starts, so a scrape shows them at 0 before anything happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class ServiceMetrics:
    personal_state_dropped: Any  # prometheus_client.Counter
    personal_state_rebuilt: Any


@cache
def service_metrics() -> ServiceMetrics:
    import prometheus_client  # deferred: see the module's docstring

    return ServiceMetrics(
        personal_state_dropped=prometheus_client.Counter(
            "migrainemamba_personal_state_dropped",
            "Personal states dropped after an outcome because the update failed on the data "
            "(the next forecast rebuilds them; the log line 'not updated after an outcome' has the traceback)",
        ),
        personal_state_rebuilt=prometheus_client.Counter(
            "migrainemamba_personal_state_rebuilt",
            "Personal states rebuilt from the diary at a forecast because none was stored or it was stale",
        ),
    )

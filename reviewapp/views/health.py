"""GET /healthz: database, broker and worker status as JSON; 503 when one is down."""

import logging
import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ..celery import app as celery_app
from ..runtime import broker_ping

__all__ = ["PROBE_HEADER", "healthz"]

logger = logging.getLogger(__name__)

# loupe_run's readiness probe sends this: its 503s while the children start are expected.
PROBE_HEADER = "X-Loupe-Probe"


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # any failure is the answer here, not an error
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result = {"ok": True, "ms": round(1000 * (time.perf_counter() - started), 1)}
    if detail:
        result.update(detail)
    return result


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def _broker():
    broker_ping(settings.CELERY_BROKER_URL)
    return {"embedded": settings.USE_EMBEDDED_REDIS}


# Every queue needs a consumer, or its jobs wait forever.
QUEUES = ("default", "training")


def _workers():
    replies = celery_app.control.inspect(timeout=1.0).active_queues() or {}
    if not replies:
        raise RuntimeError("no Celery worker answered; start one with `make run`")
    consumed = {queue["name"] for queues in replies.values() for queue in queues or ()}
    missing = [name for name in QUEUES if name not in consumed]
    if missing:
        raise RuntimeError(
            f"no worker consumes the {', '.join(missing)} queue(s); start one with "
            f"`celery -A reviewapp worker -Q {','.join(missing)}`"
        )
    return {"count": len(replies), "names": sorted(replies), "queues": sorted(consumed)}


@never_cache
@require_GET
def healthz(request):
    checks = {"database": _timed(_database), "broker": _timed(_broker)}
    # Workers can only answer through a live broker.
    checks["worker"] = (
        _timed(_workers) if checks["broker"]["ok"] else {"ok": False, "error": "broker is down"}
    )
    healthy = all(check["ok"] for check in checks.values())
    response = JsonResponse(
        {"status": "ok" if healthy else "degraded", **checks}, status=200 if healthy else 503
    )
    if not healthy:
        # A 503 here is an answer, not a server error: django.request must not log it as one.
        response._has_been_logged = True
        failing = "; ".join(f"{name}: {c['error']}" for name, c in checks.items() if not c["ok"])
        starting = request.headers.get(PROBE_HEADER) == "startup"
        logger.log(logging.DEBUG if starting else logging.WARNING, "healthz degraded: %s", failing)
    return response

"""GET /metrics: Prometheus's text format, for a scraper holding LOUPE_METRICS_TOKEN."""

import hmac

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseForbidden
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .. import metrics as loupe_metrics

__all__ = ["metrics"]


def _bearer_token(request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@never_cache
@require_GET
def metrics(request):
    expected = settings.LOUPE_METRICS_TOKEN
    if not expected:
        raise Http404("Metrics are off: LOUPE_METRICS_TOKEN is not set.")
    # Bytes: compare_digest refuses str with characters outside ASCII.
    if not hmac.compare_digest(_bearer_token(request).encode(), expected.encode()):
        return HttpResponseForbidden(
            "A bearer token is needed: Authorization: Bearer <LOUPE_METRICS_TOKEN>\n",
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(loupe_metrics.scrape(), content_type=loupe_metrics.CONTENT_TYPE_LATEST)

"""Webhooks: a project's signed POSTs of its events, and each webhook's delivery log.

Every operation needs ``reviewapp.approve_model`` (403 otherwise). The secret is returned once,
by the create; a refused URL, event or secret answers 400 naming the field.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import Http404
from ninja import Field, Query, Router, Schema, Status

from .. import webhooks as hooks
from ..events import EVENTS
from ..models import Webhook, WebhookDelivery
from .auth import require_perm
from .common import (
    MAX_ID,
    InputSchema,
    PageQuery,
    absolute_reverse,
    api_enum,
    db_id,
    page_of,
    page_schema,
    project_or_404,
)
from .errors import ERROR_RESPONSES

__all__ = ["router"]

router = Router(tags=["webhooks"])

PERM = "reviewapp.approve_model"
DELIVERIES_MAX_LIMIT = 100
_EVENTS_HELP = f"Event names, at least one of: {', '.join(EVENTS)}."


class WebhookIn(InputSchema):
    url: str = Field(description="http(s) URL that receives the POSTs; not Loupe itself.")
    events: list[str] = Field(description=_EVENTS_HELP)
    secret: str | None = Field(
        None, description="Signs each body (16-200 characters); omitted: one is made."
    )


class WebhookPatch(InputSchema):
    url: str | None = None
    events: list[str] | None = Field(None, description=_EVENTS_HELP)
    active: bool | None = Field(
        None, description="true turns a webhook back on and forgets its failures."
    )
    secret: str | None = Field(None, description="A new secret; it is not returned.")


class WebhookOut(Schema):
    id: int
    project: str  # the project's slug
    url: str
    events: list[str]
    active: bool
    consecutive_failures: int = Field(description="Failed deliveries in a row.")
    disabled_reason: str
    created_by: str | None  # username
    created_at: datetime
    deliveries_url: str | None
    page_url: str | None


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="Returned only now: verify X-Loupe-Signature with it.")


DeliveryStatus = api_enum(WebhookDelivery.Status, "WebhookDeliveryStatus")


class DeliveryOut(Schema):
    id: int
    delivery_id: UUID = Field(description="The X-Loupe-Delivery header of each attempt.")
    event: str
    status: DeliveryStatus
    attempts: int
    response_status: int | None = Field(description="The last attempt's HTTP status.")
    error: str
    payload: dict[str, Any]
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryPageOut(Schema):
    items: list[DeliveryOut]
    next: str | None = Field(description="URL of the next (older) page; null on the last page.")


class DeliveryFilters(Schema):
    before: int | None = Field(
        None, ge=1, le=MAX_ID, description="Cursor: only deliveries with a smaller id."
    )
    limit: int = Field(hooks.DELIVERY_LOG_SIZE, ge=1, le=DELIVERIES_MAX_LIMIT)


def _webhook_out(request, webhook: Webhook) -> dict:
    return {
        "id": webhook.pk,
        "project": webhook.project.slug,
        "url": webhook.url,
        "events": webhook.events,
        "active": webhook.active,
        "consecutive_failures": webhook.consecutive_failures,
        "disabled_reason": webhook.disabled_reason,
        "created_by": webhook.created_by.get_username() if webhook.created_by else None,
        "created_at": webhook.created_at,
        "deliveries_url": absolute_reverse(
            request, "api:webhook_deliveries", webhook_id=webhook.pk
        ),
        "page_url": absolute_reverse(request, "project-webhooks", slug=webhook.project.slug),
    }


def _delivery_out(delivery: WebhookDelivery) -> dict:
    return {
        "id": delivery.pk,
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "response_status": delivery.response_status,
        "error": delivery.error,
        "payload": delivery.payload,
        "created_at": delivery.created_at,
        "last_attempt_at": delivery.last_attempt_at,
        "next_attempt_at": delivery.next_attempt_at,
        "delivered_at": delivery.delivered_at,
    }


def _webhook_or_404(webhook_id: int) -> Webhook:
    webhook = (
        Webhook.objects.select_related("project", "created_by").filter(pk=db_id(webhook_id)).first()
    )
    if webhook is None:
        raise Http404(f"No webhook {webhook_id}.")
    return webhook


WebhookPageOut = page_schema(WebhookOut, "WebhookPageOut")


@router.get("/projects/{slug}/webhooks", response={200: WebhookPageOut, **ERROR_RESPONSES})
def webhook_list(request, slug: str, paging: Query[PageQuery]):
    """The project's webhooks, oldest first, without their secrets; follow ``next``."""
    require_perm(request, PERM, "manage webhooks")
    project = project_or_404(slug)
    webhooks, next_url = page_of(
        request, hooks.webhook_list(project=project), offset=paging.offset, limit=paging.limit
    )
    return {"items": [_webhook_out(request, w) for w in webhooks], "next": next_url}


@router.post("/projects/{slug}/webhooks", response={201: WebhookCreatedOut, **ERROR_RESPONSES})
def webhook_create(request, slug: str, payload: WebhookIn):
    """Add a webhook; the answer holds its secret, the only time it is returned."""
    require_perm(request, PERM, "manage webhooks")
    project = project_or_404(slug)
    webhook = hooks.webhook_create(
        project=project,
        url=payload.url,
        events=payload.events,
        secret=payload.secret,
        actor=request.auth,
        app_url=request.build_absolute_uri("/"),
    )
    return Status(201, {**_webhook_out(request, webhook), "secret": webhook.secret})


@router.patch("/webhooks/{webhook_id}", response={200: WebhookOut, **ERROR_RESPONSES})
def webhook_update(request, webhook_id: int, payload: WebhookPatch):
    """Change the URL, the events, the secret, or turn the webhook off or back on."""
    require_perm(request, PERM, "manage webhooks")
    webhook = hooks.webhook_update(
        webhook=_webhook_or_404(webhook_id),
        **payload.dict(exclude_unset=True),
        actor=request.auth,
        app_url=request.build_absolute_uri("/"),
    )
    return _webhook_out(request, webhook)


@router.delete("/webhooks/{webhook_id}", response={204: None, **ERROR_RESPONSES})
def webhook_delete(request, webhook_id: int):
    """Delete the webhook and its delivery log."""
    require_perm(request, PERM, "manage webhooks")
    hooks.webhook_delete(webhook=_webhook_or_404(webhook_id))
    return Status(204, None)


@router.get("/webhooks/{webhook_id}/deliveries", response={200: DeliveryPageOut, **ERROR_RESPONSES})
def webhook_deliveries(request, webhook_id: int, filters: Query[DeliveryFilters]):
    """The webhook's deliveries, newest first; follow ``next`` for older ones."""
    require_perm(request, PERM, "manage webhooks")
    webhook = _webhook_or_404(webhook_id)
    page = hooks.delivery_list(webhook=webhook, before=filters.before, limit=filters.limit)
    next_url = None
    if page.next_cursor is not None:
        query = request.GET.copy()
        query["before"] = str(page.next_cursor)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"items": [_delivery_out(d) for d in page.deliveries], "next": next_url}

"""The caller's notifications: a keyset-paged list, and marking one read.

Notifications are the caller's own, like API tokens: any authenticated user reads and
marks theirs, no model permission is needed, and another user's id is a 404.
"""

from datetime import datetime

from ninja import Field, Query, Router, Schema
from pydantic import field_validator

from .. import notifications
from ..models import Notification
from .common import MAX_ID, db_id
from .errors import ERROR_RESPONSES

__all__ = ["router"]

router = Router(tags=["notifications"])

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class NotificationOut(Schema):
    id: int
    kind: str = Field(description="An event name such as 'run.succeeded', 'guardrail.paused'.")
    message: str
    link: str = Field(description="The page it is about, a path on this site; '' for none.")
    project: str | None = Field(description="The project's slug; null if it is about none.")
    created_at: datetime
    read_at: datetime | None
    read: bool


class NotificationPageOut(Schema):
    items: list[NotificationOut]
    next: str | None = Field(description="URL of the next (older) page; null on the last page.")


class NotificationFilters(Schema):
    unread: bool | None = Field(
        None, description="true: only unread ones; false: only read ones; omitted: all."
    )
    before: int | None = Field(
        None, ge=1, le=MAX_ID, description="Cursor: only notifications older than this id."
    )
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)

    @field_validator("unread", "before", mode="before")
    @classmethod
    def empty_means_omitted(cls, value, info):
        # A form sends "unread=" for "all"; treat it as not sent.
        if value == "":
            return cls.model_fields[info.field_name].default
        return value


def notification_out(notification: Notification) -> dict:
    return {
        "id": notification.pk,
        "kind": notification.kind,
        "message": notification.message,
        "link": notification.link,
        "project": notification.project.slug if notification.project_id else None,
        "created_at": notification.created_at,
        "read_at": notification.read_at,
        "read": notification.is_read,
    }


@router.get("/notifications", response={200: NotificationPageOut, **ERROR_RESPONSES})
def notification_list(request, filters: Query[NotificationFilters]):
    """Your notifications, newest first; follow ``next`` for older ones (no total is counted)."""
    page = notifications.notification_list(
        user=request.auth, unread=filters.unread, before=filters.before, limit=filters.limit
    )
    next_url = None
    if page.next_cursor is not None:
        query = request.GET.copy()
        query["before"] = str(page.next_cursor)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"items": [notification_out(n) for n in page.notifications], "next": next_url}


@router.post("/notifications/{id}/read", response={200: NotificationOut, **ERROR_RESPONSES})
def notification_read(request, id: int):
    """Mark one of your notifications read (reading it again keeps the first time)."""
    notification = notifications.notification_mark_read(
        user=request.auth, notification_id=db_id(id)
    )
    return notification_out(notification)

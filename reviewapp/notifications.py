"""In-app notifications, and email for those who opt in: the services and selectors.

``notify`` writes notifications in the caller's transaction (so a rolled-back change tells
nobody) and emails the users who opted in once it commits; the bell, the Notifications page
and the API read and mark them with the functions below. A user only ever sees their own.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from .models import Notification, NotificationPreference

__all__ = [
    "APPROVE_PERM",
    "NotificationPage",
    "approvers",
    "link_is_safe",
    "notification_get",
    "notification_list",
    "notification_mark_read",
    "notification_open",
    "notification_preference_get",
    "notification_preference_set",
    "notification_unread_count",
    "notifications_mark_all_read",
    "notify",
]

logger = logging.getLogger(__name__)

APPROVE_PERM = "reviewapp.approve_model"
MESSAGE_MAX = Notification._meta.get_field("message").max_length
LINK_MAX = Notification._meta.get_field("link").max_length
SUBJECT_MAX = 120


# Services ------------------------------------------------------------------------------


def notify(
    users: Iterable, *, kind: str, message: str, link: str = "", project=None
) -> list[Notification]:
    """Tell each of ``users`` once (None and inactive ones skipped); email those who opted in."""
    if link and (len(link) > LINK_MAX or not link_is_safe(link)):
        # A link nobody may follow is worse than none: the item still opens the list.
        logger.warning("Notification %r: dropped the link %r (not a path on this site)", kind, link)
        link = ""
    seen, rows = set(), []
    for user in users:
        if user is None or not user.is_active or user.pk in seen:
            continue
        seen.add(user.pk)
        rows.append(
            Notification(
                user=user, kind=kind, message=message[:MESSAGE_MAX], link=link, project=project
            )
        )
    created = Notification.objects.bulk_create(rows)
    emailed = _email_recipients(created)
    if emailed:
        # After the commit: a rolled-back change must not have told anyone by email.
        transaction.on_commit(lambda: _email_send(emailed), robust=True)
    return created


def _email_recipients(created: list[Notification]) -> list[Notification]:
    """The notifications whose user opted in to email and has an address."""
    if not created:
        return []
    wanted = set(
        NotificationPreference.objects.filter(
            user_id__in=[n.user_id for n in created], email=True
        ).values_list("user_id", flat=True)
    )
    return [n for n in created if n.user_id in wanted and n.user.email]


def _email_send(notifications: list[Notification]) -> None:
    """One email per notification; a failure is logged, and the notification stays in-app."""
    for notification in notifications:
        try:
            send_mail(
                subject=_email_subject(notification),
                message=_email_body(notification),
                from_email=None,  # DEFAULT_FROM_EMAIL
                recipient_list=[notification.user.email],
            )
        except Exception:
            # The change that notified is committed; a mail server down must not undo it.
            logger.exception(
                "Could not email notification %s to user %s", notification.pk, notification.user_id
            )
            continue
        notification.emailed_at = timezone.now()
        Notification.objects.filter(pk=notification.pk).update(emailed_at=notification.emailed_at)


def _email_subject(notification: Notification) -> str:
    # A header holds one line: a newline in the message would make send_mail refuse it.
    line = " ".join(notification.message.split())
    if len(line) > SUBJECT_MAX:
        line = line[: SUBJECT_MAX - 1] + "…"
    return f"[Loupe] {line}"


def _email_body(notification: Notification) -> str:
    base = settings.LOUPE_BASE_URL
    # Through the open link, so reading the email's page marks the notification read.
    opened = base + reverse("notification-open", args=[notification.pk])
    return (
        f"{notification.message}\n\n"
        f"Open it: {opened}\n\n"
        "You get these emails because you turned them on. Turn them off on your "
        f"Notifications page: {base}{reverse('notifications')}\n"
    )


def notification_mark_read(*, user, notification_id: int) -> Notification:
    """Mark one of ``user``'s notifications read (the first reading's time is kept)."""
    notification = notification_get(user=user, notification_id=notification_id)
    if notification.read_at is None:
        now = timezone.now()
        Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(read_at=now)
        notification.read_at = now
    return notification


def notification_open(*, user, notification_id: int) -> str:
    """Mark one of ``user``'s notifications read; its link, or "" if it has no safe one."""
    notification = notification_mark_read(user=user, notification_id=notification_id)
    return notification.link if link_is_safe(notification.link) else ""


def notifications_mark_all_read(*, user) -> int:
    """Mark every unread notification of ``user`` read; how many there were."""
    return Notification.objects.filter(user=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )


def notification_preference_set(*, user, email: bool) -> NotificationPreference:
    """Turn ``user``'s notification emails on or off."""
    preference, _ = NotificationPreference.objects.update_or_create(
        user=user, defaults={"email": email}
    )
    return preference


# Selectors -----------------------------------------------------------------------------


def approvers(project=None) -> QuerySet:
    """Active users who may approve versions: by a group, directly, or as superusers."""
    # Permissions are site-wide today; ``project`` lets callers say whom it is about.
    return (
        get_user_model()
        .objects.with_perm(
            APPROVE_PERM,
            is_active=True,
            include_superusers=True,
            backend="django.contrib.auth.backends.ModelBackend",
        )
        .order_by("pk")
    )


def link_is_safe(link: str) -> bool:
    """A path on this site ("/runs/5/"): never another host, a scheme or "//host"."""
    return link.startswith("/") and url_has_allowed_host_and_scheme(link, allowed_hosts=None)


def notification_unread_count(*, user, at_most: int | None = None) -> int:
    """How many of ``user``'s notifications are unread, counting no further than ``at_most``."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if at_most is None:
        return unread.count()
    # The bell is on every page: a probe of at most a few index rows, never a COUNT of all.
    return len(unread.values_list("pk", flat=True)[:at_most])


@dataclass
class NotificationPage:
    notifications: list[Notification]  # newest first
    next_cursor: int | None  # pass as ``before`` for the next page
    has_previous: bool


def notification_list(
    *, user, unread: bool | None = None, before: int | None = None, limit: int = 50
) -> NotificationPage:
    """``user``'s notifications newest first, by keyset on id; ``unread`` True/False filters."""
    qs = Notification.objects.filter(user=user)
    if unread is not None:
        qs = qs.filter(read_at__isnull=unread)
    if before:
        qs = qs.filter(id__lt=before)
    rows = list(qs.select_related("project").order_by("-id")[: limit + 1])
    next_cursor = rows[limit - 1].pk if len(rows) > limit else None
    return NotificationPage(
        notifications=rows[:limit], next_cursor=next_cursor, has_previous=bool(before)
    )


def notification_get(*, user, notification_id: int) -> Notification:
    """One of ``user``'s notifications; 404 for anyone else's, as for one that does not exist."""
    try:
        return Notification.objects.select_related("project").get(pk=notification_id, user=user)
    except Notification.DoesNotExist:
        raise Http404(f"No notification {notification_id} of yours.") from None


def notification_preference_get(*, user) -> NotificationPreference:
    """``user``'s preference; an unsaved default (no email) if they never chose."""
    preference = NotificationPreference.objects.filter(user=user).first()
    return preference or NotificationPreference(user=user)

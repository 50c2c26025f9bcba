"""In-app notifications, and email for those who opt in. (Being built: see issue 13.)"""

from collections.abc import Iterable

from .models import Notification

__all__ = ["notify"]


def notify(users: Iterable, *, kind: str, message: str, link: str = "", project=None) -> list:
    seen, rows = set(), []
    for user in users:
        if user is None or not user.is_active or user.pk in seen:
            continue
        seen.add(user.pk)
        rows.append(
            Notification(user=user, kind=kind, message=message[:300], link=link, project=project)
        )
    return Notification.objects.bulk_create(rows)

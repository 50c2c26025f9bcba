"""What happened in a project, told once: to the people concerned and to its webhooks.

Services call ``emit`` where something a team waits for happens (a run ended, an audit
finished, a version was approved or moved, a guardrail paused a rollout, the policy started
a run). ``emit`` writes the notifications and queues the webhook deliveries in the caller's
transaction, so a rolled-back change tells nobody; then it sends the ``emitted`` signal,
which the retraining policy listens to for its follow-ups (so training never imports it).
"""

from collections.abc import Iterable

from django.dispatch import Signal
from django.utils import timezone

from . import notifications, webhooks
from .models.webhooks import EVENTS

__all__ = ["EVENTS", "emit", "emitted"]


# sender: the event name; kwargs: project, data.
emitted = Signal()


def emit(
    event: str,
    *,
    project,
    data: dict,
    message: str,
    link: str = "",
    users: Iterable = (),
) -> None:
    """Notify ``users`` (each once; None and inactive ones skipped) and the webhooks."""
    if event not in EVENTS:
        raise ValueError(f"Unknown event {event!r}; one of {', '.join(EVENTS)}.")
    notifications.notify(users, kind=event, message=message, link=link, project=project)
    payload = {
        "event": event,
        "project": {"slug": project.slug, "name": project.name},
        "created_at": timezone.now().isoformat(),
        "message": message,
        "data": data,
    }
    webhooks.deliveries_queue(project=project, event=event, payload=payload)
    emitted.send(sender=event, project=project, data=data)

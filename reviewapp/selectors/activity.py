"""Activity: the label-event log with its filters, per-reviewer counts, policy runs."""

from dataclasses import dataclass

from django.db.models import Count, OuterRef, Q

from ..models import LabelEvent, Project, TrainingRun
from .review import attach_undos

__all__ = [
    "EventPage",
    "ReviewerCounts",
    "SYSTEM_ACTOR",
    "label_event_actors",
    "label_event_first_since",
    "label_event_list",
    "policy_runs_recent",
    "reviewer_counts",
]


SYSTEM_ACTOR = "system"  # the activity filter's value for events no person made


@dataclass
class EventPage:
    events: list  # LabelEvent, newest first
    next_cursor: int | None  # pass as ``before`` for the next page
    has_previous: bool


def label_event_list(
    *,
    project: Project,
    action: str = "",
    actor: int | str | None = None,
    before: int | None = None,
    limit: int = 50,
    since_id: int | None = None,
) -> EventPage:
    """A project's label events newest first, by keyset on id: one query, no COUNT, no OFFSET.

    ``actor`` is a user id, or ``"system"`` for events without a person (imports, scripts).
    """
    qs = LabelEvent.objects.filter(project=project)
    if action:
        qs = qs.filter(action=action)
    if actor == SYSTEM_ACTOR:
        qs = qs.filter(actor__isnull=True)
    elif actor not in (None, ""):
        qs = qs.filter(actor_id=actor)
    if before:
        qs = qs.filter(id__lt=before)
    if since_id is not None:
        qs = qs.filter(id__gte=since_id)
    # The image itself is not joined: its id is enough for the thumbnail and the link.
    events = list(
        qs.select_related("actor", "from_category", "to_category").order_by("-id")[: limit + 1]
    )
    next_cursor = events[limit - 1].pk if len(events) > limit else None
    events = attach_undos(events[:limit])
    return EventPage(events=events, next_cursor=next_cursor, has_previous=bool(before))


def label_event_first_since(since) -> int | None:
    """The id of the first label event at or after ``since``, on the created_at index: a
    period becomes an id bound that the (project, -id) indexes can use."""
    return (
        LabelEvent.objects.filter(created_at__gte=since)
        .order_by("created_at", "id")
        .values_list("id", flat=True)
        .first()
    )


@dataclass
class ReviewerCounts:
    actor_id: int
    username: str
    decisions: int  # label, relabel, confirm, delete, restore
    relabels: int
    undone: int  # of those decisions, the ones undone later (by anyone)


def reviewer_counts(
    *, project: Project, actor: int | str | None = None, since_id: int | None = None
) -> list[ReviewerCounts]:
    """Per person: decisions, relabels and decisions later undone, from ``since_id`` on
    (None: all time), for one person or everyone; one grouped query."""
    if actor == SYSTEM_ACTOR:
        return []  # the system makes imports and merges, not review decisions
    qs = LabelEvent.objects.filter(
        project=project, actor__isnull=False, action__in=LabelEvent.DECISIONS
    )
    if actor not in (None, ""):
        qs = qs.filter(actor_id=actor)
    if since_id is not None:
        qs = qs.filter(id__gte=since_id)
    rows = (
        qs.values_list("actor_id", "actor__username")
        .annotate(
            decisions=Count("id"),
            relabels=Count("id", filter=Q(action=LabelEvent.Action.RELABEL)),
            undone=Count("id", filter=Q(undone_by__isnull=False)),
        )
        .order_by("actor__username")
    )
    return [ReviewerCounts(*row) for row in rows]


def policy_runs_recent(*, project: Project, limit: int = 5) -> list:
    """The latest runs the retraining policy started, for the project's history."""
    return list(
        TrainingRun.objects.filter(project=project, trigger=TrainingRun.Trigger.POLICY)
        .defer("snapshot")
        .order_by("-id")[:limit]
    )


def label_event_actors(*, project: Project) -> list:
    """The people who changed something in this project, by username (one indexed probe each)."""
    from django.contrib.auth import get_user_model
    from django.db.models import Exists

    acted = LabelEvent.objects.filter(project=project, actor=OuterRef("pk"))
    return list(get_user_model().objects.filter(Exists(acted)).order_by("username"))

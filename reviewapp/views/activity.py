"""A project's activity feed (every label event) and its trash (deleted images)."""

from datetime import timedelta

from django.utils import timezone
from django.views.decorators.http import require_GET

from .. import selectors
from ..models import LabelEvent
from .common import login_required, positive_int, project_for, render_page

__all__ = ["project_activity", "project_trash"]

ACTIVITY_PAGE_SIZE = 50
TRASH_PAGE_SIZE = 48
PERIODS = {"1d": ("Last 24 hours", 1), "7d": ("Last 7 days", 7), "30d": ("Last 30 days", 30)}
NO_EVENT_ID = 2**63 - 1  # a period without events: an id bound no event reaches


@require_GET
@login_required
def project_activity(request, slug):
    project = project_for(request, slug, "reviewapp.view_labelevent")
    people = selectors.label_event_actors(project=project)
    # Unknown filter values are dropped, not errors: a stale bookmark still opens.
    action = request.GET.get("action", "")
    action = action if action in LabelEvent.Action.values else ""
    actor, actor_name = request.GET.get("actor", ""), ""
    if actor != selectors.SYSTEM_ACTOR:
        person = {p.pk: p for p in people}.get(positive_int(actor))
        actor = person.pk if person else ""
        actor_name = person.get_username() if person else ""
    period = request.GET.get("period", "")
    period = period if period in PERIODS else ""
    since_id = None
    if period:
        since = timezone.now() - timedelta(days=PERIODS[period][1])
        since_id = selectors.label_event_first_since(since) or NO_EVENT_ID
    before = positive_int(request.GET.get("before"))
    page = selectors.label_event_list(
        project=project,
        action=action,
        actor=actor,
        before=before,
        limit=ACTIVITY_PAGE_SIZE,
        since_id=since_id,
    )
    context = {
        "project": project,
        "page": page,
        "people": people,
        "actions": LabelEvent.Action.choices,
        "shown": {
            "action": action,
            "action_label": LabelEvent.Action(action).label if action else "",
            "actor": str(actor),
            "actor_name": actor_name,
            "period": period,
            "period_label": PERIODS[period][0] if period else "",
        },
        "periods": [(value, label) for value, (label, _) in PERIODS.items()],
        # Every action counts here: the columns already split decisions by kind.
        "reviewer_counts": selectors.reviewer_counts(
            project=project, actor=actor, since_id=since_id
        ),
        "system_actor": selectors.SYSTEM_ACTOR,
        "cursor": before,
        "policy_runs": selectors.policy_runs_recent(project=project),
    }
    return render_page(request, "reviewapp/activity.html", "activity-list", context)


@require_GET
@login_required
def project_trash(request, slug):
    project = project_for(request, slug, "reviewapp.view_image")
    before = positive_int(request.GET.get("before"))
    page = selectors.image_trash_list(project=project, before=before, limit=TRASH_PAGE_SIZE)
    context = {
        "project": project,
        "page": page,
        "page_size": TRASH_PAGE_SIZE,
        "cursor": before,
        "can_restore": request.user.has_perm("reviewapp.change_image"),
        # A restore posts back here, to this very page of the trash.
        "here": request.get_full_path(),
    }
    return render_page(request, "reviewapp/trash.html", "trash-grid", context)

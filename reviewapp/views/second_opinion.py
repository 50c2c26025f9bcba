"""The Second opinion queue: relabels waiting for another reviewer to agree or override."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from .. import second_opinion, services
from ..models import SecondOpinion
from .common import is_htmx, login_required, project_for, render_page, require_perm

__all__ = ["second_opinion_queue", "second_opinion_resolve"]

DONE = {
    SecondOpinion.Status.AGREED: "Agreed: relabeled",
    SecondOpinion.Status.OVERRIDDEN: "Overridden",
    SecondOpinion.Status.WITHDRAWN: "Withdrawn",
}


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@require_GET
@login_required
def second_opinion_queue(request, slug):
    project = project_for(request, slug, "reviewapp.view_image")
    if request.GET.get("part") == "link" and is_htmx(request):
        context = {
            "project": project,
            "pending_opinions": second_opinion.pending_count(project=project),
        }
        return render_page(request, "reviewapp/second_opinion.html", "second-opinion-link", context)
    opinions = list(second_opinion.pending_list(project=project)[:200])
    context = {
        "project": project,
        "opinions": opinions,
        "n_pending": second_opinion.pending_count(project=project),
        "categories": list(project.categories.all()),
        "can_decide": request.user.has_perm("reviewapp.change_image"),
        "rate": second_opinion.agreement_rate(project=project),
    }
    return render_page(request, "reviewapp/second_opinion.html", "opinion-list", context)


@require_POST
@login_required
def second_opinion_resolve(request, pk):
    """Agree, override (keep the label or choose another) or withdraw; answers the card."""
    require_perm(request.user, "reviewapp.change_image")
    opinion = get_object_or_404(SecondOpinion.objects.select_related("project"), pk=pk)
    project = opinion.project
    action = request.POST.get("action", "")
    label = None
    if label_id := _int_or_none(request.POST.get("label")):
        label = project.categories.filter(pk=label_id).first()
    status, error = 200, ""
    try:
        opinion = second_opinion.second_opinion_resolve(
            opinion_id=opinion.pk,
            actor=request.user,
            action=action,
            revision=_int_or_none(request.POST.get("revision")),
            label=label,
        )
    except services.StaleRevision as exc:
        status, error = 409, str(exc)
    except ValidationError as exc:
        status, error = 400, " ".join(exc.messages)
    if not is_htmx(request):
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"Second opinion #{opinion.pk}: {DONE[opinion.status]}.")
        return redirect(reverse("second-opinion-queue", kwargs={"slug": project.slug}))
    opinion = SecondOpinion.objects.select_related(
        "image__label", "from_category", "to_category", "proposed_by", "resolved_by", "version"
    ).get(pk=opinion.pk)
    context = {
        "project": project,
        "opinion": opinion,
        "categories": list(project.categories.all()),
        "can_decide": True,
        "error": error,
        "done": "" if error else DONE.get(opinion.status, ""),
    }
    return render_page(
        request, "reviewapp/second_opinion.html", "opinion-card", context, status=status
    )

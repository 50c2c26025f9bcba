"""The Label queue: unlabeled images with the model's suggestion, in the order a labeler picks."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from .. import claims, labeling, preferences, selectors
from ..models import Image, ModelVersion, QueueClaim, Suggestion
from .common import login_required, project_for, render_page

__all__ = [
    "label_accept",
    "label_accept_above",
    "label_card_context",
    "label_card_response",
    "label_claims_release",
    "label_claims_renew",
    "label_queue",
]

STRATEGY_LABELS = {
    "uncertainty": "Most uncertain first",
    "diverse": "Uncertain and diverse",
    "confident": "Most confident first (fast accept-all)",
    "random": "Random",
}


def label_url(project, **params) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    url = reverse("label-queue", kwargs={"slug": project.slug})
    return f"{url}?{query}" if query else url


def _strategy(request) -> str:
    value = request.GET.get("strategy") or request.POST.get("strategy") or ""
    return value if value in labeling.STRATEGIES else labeling.DEFAULT_STRATEGY


@require_GET
@login_required
def label_queue(request, slug):
    project = project_for(request, slug, "reviewapp.view_image")
    strategy = _strategy(request)
    queue = labeling.label_queue(project=project, user=request.user, strategy=strategy)
    context = {
        "project": project,
        "queue": queue,
        "strategy": strategy,
        "strategies": [(s, STRATEGY_LABELS[s]) for s in labeling.STRATEGIES],
        "categories": list(project.categories.all()),
        "can_decide": request.user.has_perm("reviewapp.change_image"),
        "auto_advance": preferences.reviewer_preference_get(user=request.user).auto_advance,
        "here": label_url(project, strategy=strategy),
    }
    preview = request.GET.get("min_confidence")
    if preview not in (None, "") and queue.version is not None:
        try:
            threshold = float(preview)
            count, sample = labeling.suggestions_above(
                version=queue.version, min_confidence=threshold
            )
        except (ValueError, ValidationError):
            messages.error(request, "The confidence must be a number between 0 and 1.")
        else:
            context["preview"] = {"threshold": threshold, "count": count, "sample": sample}
    return render_page(request, "reviewapp/label_queue.html", "label-list", context)


def label_card_context(request, image: Image, version: ModelVersion | None, **extra) -> dict:
    image = Image.objects.select_related("label", "project").get(pk=image.pk)
    suggestion = None
    if version is not None:
        suggestion = (
            Suggestion.objects.filter(version=version, image=image)
            .select_related("predicted")
            .first()
        )
    image.recent_events = selectors.image_recent_decisions(image)
    return {
        "project": image.project,
        "image": image,
        "suggestion": suggestion,
        "version": version,
        "categories": list(image.project.categories.all()),
        "can_decide": request.user.has_perm("reviewapp.change_image"),
        "claimed_by": request.user.get_username(),
        **extra,
    }


def label_card_response(request, image: Image, version, *, status=200, **extra):
    """A Label queue card after a decision on it (the review views' decide and undo)."""
    claims.claims_renew(project=image.project, user=request.user, queue=QueueClaim.Queue.LABEL)
    context = label_card_context(request, image, version, **extra)
    return render_page(request, "reviewapp/label_queue.html", "label-card", context, status=status)


def _selected(request) -> list[tuple[int, int]]:
    pairs = []
    for value in request.POST.getlist("selected"):
        image_id, _, revision = value.partition(":")
        if image_id.isdigit() and revision.isdigit():
            pairs.append((int(image_id), int(revision)))
    return pairs


def _report(request, results) -> None:
    done = sum(r.ok for r in results)
    if results:
        level = messages.success if done == len(results) else messages.warning
        level(request, f"{done} of {len(results)} suggestion(s) accepted.")
        for result in results:
            if not result.ok:
                messages.warning(request, f"Image #{result.image_id}: {result.message}")
    else:
        messages.info(request, "Select one or more cards first.")


@require_POST
@login_required
def label_accept(request, slug):
    """Accept the suggestion of each selected card."""
    project = project_for(request, slug, "reviewapp.change_image")
    version = labeling.latest_version(project)
    if version is None:
        messages.error(request, "There are no suggestions yet: train a model first.")
    else:
        pairs = _selected(request)
        in_project = set(
            project.images.filter(pk__in=[p for p, _ in pairs]).values_list("pk", flat=True)
        )
        _report(
            request,
            labeling.suggestions_accept(
                version=version, actor=request.user, images=[p for p in pairs if p[0] in in_project]
            ),
        )
    return redirect(label_url(project, strategy=_strategy(request)))


@require_POST
@login_required
def label_accept_above(request, slug):
    """Accept every suggestion at or above a confidence, after the preview said how many."""
    project = project_for(request, slug, "reviewapp.change_image")
    version = labeling.latest_version(project)
    try:
        threshold = float(request.POST.get("min_confidence", ""))
        expected = int(request.POST.get("expected", "-1"))
    except ValueError:
        messages.error(request, "The confidence must be a number between 0 and 1.")
        return redirect(label_url(project, strategy=_strategy(request)))
    if version is None:
        messages.error(request, "There are no suggestions yet: train a model first.")
        return redirect(label_url(project))
    try:
        count, _ = labeling.suggestions_above(version=version, min_confidence=threshold)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(label_url(project, strategy=_strategy(request)))
    if count != expected:
        # The set changed since the preview (someone labeled meanwhile): look again first.
        messages.warning(
            request,
            f"{count} suggestion(s) are now at or above {threshold:.0%}, not the {expected} "
            "you saw; check the preview again.",
        )
        return redirect(label_url(project, strategy=_strategy(request), min_confidence=threshold))
    _report(
        request,
        labeling.suggestions_accept(version=version, actor=request.user, min_confidence=threshold),
    )
    return redirect(label_url(project, strategy=_strategy(request)))


@require_POST
@login_required
def label_claims_renew(request, slug):
    """The page is still open: keep its cards."""
    project = project_for(request, slug, "reviewapp.view_image")
    renewed = claims.claims_renew(project=project, user=request.user, queue=QueueClaim.Queue.LABEL)
    return HttpResponse(status=204, headers={"X-Claims-Renewed": str(renewed)})


@require_POST
@login_required
def label_claims_release(request, slug):
    """The labeler left the queue: give the cards back to the others."""
    project = project_for(request, slug, "reviewapp.view_image")
    loaded = parse_datetime(request.POST.get("loaded_at", ""))
    claims.claims_release(
        project=project, user=request.user, queue=QueueClaim.Queue.LABEL, claimed_before=loaded
    )
    # Sent by navigator.sendBeacon as the page goes away: nobody reads the answer.
    return HttpResponse(status=204)

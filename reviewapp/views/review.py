"""The review queue: a model version's highest-loss images, decided on one card at a time."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_POST

from .. import claims, drilldown, preferences, second_opinion, selectors, services
from ..models import (
    AuditScore,
    Category,
    Image,
    ImageScore,
    LabelAudit,
    ModelVersion,
    Project,
    QueueClaim,
    SecondOpinion,
)
from ..selectors import ReviewFilters
from .common import login_required, project_for, render_page, require_perm
from .focus import decision_response as focus_decision_response
from .labeling import label_card_context, label_card_response

__all__ = [
    "image_decide",
    "image_undo",
    "review_bulk",
    "review_claims_release",
    "review_claims_renew",
    "review_queue",
    "review_url",
]

PAGE_SIZE = 24
DONE_MESSAGES = {
    "confirm": "label confirmed",
    "label": "labeled",
    "relabel": "relabeled",
    "delete": "moved to the trash",
    "restore": "restored from the trash",
}
REVIEW_QUEUE = QueueClaim.Queue.REVIEW
FILTER_PARAMS = ("version", "label", "predicted", "split", "reviewed", "flagged", "min_loss")


def review_url(project: Project, **params) -> str:
    """The review queue's URL with the given filters (None and "" left out)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    url = reverse("review-queue", kwargs={"slug": project.slug})
    return f"{url}?{query}" if query else url


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _version_for(project: Project, value) -> ModelVersion | None:
    pk = _int_or_none(value)
    if pk is not None:
        version = project.model_versions.filter(pk=pk).first()
        if version is None:
            raise Http404(f"No model version {pk} in project '{project.slug}'.")
        return version
    return selectors.model_version_latest(project=project)


def _filters(params, categories: dict[int, Category]) -> tuple[ReviewFilters, dict]:
    """Filters from the query string; unknown values are dropped, not errors."""
    label, predicted = _int_or_none(params.get("label")), _int_or_none(params.get("predicted"))
    split = params.get("split", "")
    reviewed = {"yes": True, "no": False}.get(params.get("reviewed", ""))
    filters = ReviewFilters(
        label=label if label in categories else None,
        predicted=predicted if predicted in categories else None,
        split=split if split in Image.Split.values else "",
        reviewed=reviewed,
        flagged_only=params.get("flagged") == "1",
        min_loss=_float_or_none(params.get("min_loss")),
    )
    shown = {
        "label": filters.label or "",
        "predicted": filters.predicted or "",
        "split": filters.split,
        "reviewed": params.get("reviewed", "") if reviewed is not None else "",
        "flagged": "1" if filters.flagged_only else "",
        "min_loss": params.get("min_loss", "") if filters.min_loss is not None else "",
    }
    return filters, shown


def _sweep_context(project: Project, version: ModelVersion, filters, shown: dict) -> dict:
    """The drill-down sweep's place and next cell, when the queue shows one confused cell."""
    if filters.label is None or filters.predicted is None:
        return {}
    sweep = drilldown.confusion_sweep(
        version=version, label_id=filters.label, predicted_id=filters.predicted
    )
    if sweep is None:
        return {}
    upcoming = sweep.next
    next_cell_url = None
    if upcoming is not None:
        cell = {"label": upcoming.actual.pk, "predicted": upcoming.predicted.pk}
        next_cell_url = review_url(project, version=version.pk, **{**shown, **cell})
    return {"sweep": sweep, "next_cell_url": next_cell_url}


@require_GET
@login_required
def review_queue(request, slug):
    project = project_for(request, slug, "reviewapp.view_imagescore")
    version = _version_for(project, request.GET.get("version"))
    categories = list(project.categories.all())
    by_id = {c.pk: c for c in categories}
    filters, shown = _filters(request.GET, by_id)
    context = {
        "project": project,
        "version": version,
        "versions": list(project.model_versions.only("pk", "number", "stage")),
        "categories": categories,
        "shown": shown,
        "can_decide": request.user.has_perm("reviewapp.change_image"),
        "auto_advance": preferences.reviewer_preference_get(user=request.user).auto_advance,
    }
    if version is not None and request.GET.get("part") == "progress" and request.htmx:
        context.update(
            progress=selectors.review_progress(version=version, filters=filters),
            here=review_url(project, version=version.pk, **shown),
        )
        return render_page(request, "reviewapp/review.html", "review-progress", context)
    if version is not None:
        # A reviewer skips the cards others hold and claims this page's first ones; a
        # read-only viewer sees every card and claims none.
        deciding = context["can_decide"]
        held = claims.claims_now(project=project, user=request.user, queue=REVIEW_QUEUE)
        page = selectors.review_page(
            version=version,
            filters=filters,
            after=request.GET.get("after", ""),
            limit=PAGE_SIZE,
            exclude=held.others if deciding else (),
        )
        claimed = _claim_page(request, project, page, held.mine) if deciding else 0
        if project.second_opinion:
            second_opinion.attach_pending([s.image for s in page.scores])
            context["pending_opinions"] = second_opinion.pending_count(project=project)
        context.update(
            page=page,
            claimed=claimed,
            claims_loaded_at=timezone.now(),
            claimed_by_others=held.by_others,
            trust=selectors.model_version_trust(version=version),
            progress=selectors.review_progress(version=version, filters=filters),
            next_url=(
                review_url(project, version=version.pk, **shown, after=page.next_cursor)
                if page.next_cursor
                else None
            ),
            here=review_url(project, version=version.pk, **shown),
            first_page=not request.GET.get("after"),
        )
        context.update(_sweep_context(project, version, filters, shown))
    return render_page(request, "reviewapp/review.html", "review-list", context)


def _claim_page(request, project: Project, page, held: list[int]) -> int:
    """Claim the page's first cards (the project's claim size) for the reviewer and give back
    the ones held before; a card another reviewer took in the same instant leaves the page."""
    wanted = [s.image_id for s in page.scores[: project.claim_size]]
    mine = claims.claims_hold(
        project=project, user=request.user, queue=REVIEW_QUEUE, image_ids=wanted, held=held
    )
    lost = set(wanted) - mine
    if lost:
        page.scores = [s for s in page.scores if s.image_id not in lost]
    return len(mine)


@require_POST
@login_required
def review_claims_renew(request, slug):
    """The review page is still open: keep its cards."""
    project = project_for(request, slug, "reviewapp.view_imagescore")
    renewed = claims.claims_renew(project=project, user=request.user, queue=REVIEW_QUEUE)
    return HttpResponse(status=204, headers={"X-Claims-Renewed": str(renewed)})


@require_POST
@login_required
def review_claims_release(request, slug):
    """The reviewer left the queue: give the cards back to the others."""
    project = project_for(request, slug, "reviewapp.view_imagescore")
    loaded = parse_datetime(request.POST.get("loaded_at", ""))
    claims.claims_release(
        project=project, user=request.user, queue=REVIEW_QUEUE, claimed_before=loaded
    )
    # Sent by navigator.sendBeacon as the page goes away: nobody reads the answer.
    return HttpResponse(status=204)


def _card_context(request, image: Image, version: ModelVersion | None, **extra) -> dict:
    score = None
    if extra.get("audit") is not None:
        # A card of a label audit's queue shows the audit's out-of-fold score.
        score = (
            AuditScore.objects.filter(audit=extra["audit"], image=image)
            .select_related("label", "predicted")
            .first()
        )
    elif version is not None:
        score = (
            ImageScore.objects.filter(version=version, image=image)
            .select_related("label", "predicted")
            .first()
        )
    image = Image.objects.select_related("label", "project").get(pk=image.pk)
    image.recent_events = selectors.image_recent_decisions(image)
    if image.project.second_opinion:
        second_opinion.attach_pending([image])
    if score is not None:
        score.image = image
    return {
        "project": image.project,
        "image": image,
        "score": score,
        "version": version,
        "categories": list(image.project.categories.all()),
        "can_decide": request.user.has_perm("reviewapp.change_image"),
        **extra,
    }


def _card_response(request, image, version, *, status=200, **extra):
    if not request.htmx:
        if extra.get("error"):
            messages.error(request, extra["error"])
        elif done := extra.get("done"):
            messages.success(request, f"Image #{image.pk}: {done}.")
        return redirect(_safe_next(request) or image.get_absolute_url())
    if request.POST.get("queue") == "label":
        extra.pop("audit", None)
        return label_card_response(request, image, version, status=status, **extra)
    if request.POST.get("view") == "focus" and request.POST.get("card") == "label":
        # A focus view over a Label queue card: that queue's claims and card.
        extra.pop("audit", None)
        claims.claims_renew(project=image.project, user=request.user, queue=QueueClaim.Queue.LABEL)
        return focus_decision_response(
            request, image, version, status=status, card_context=label_card_context, **extra
        )
    if extra.get("audit") is None:
        # Working in the review queue keeps its claimed cards.
        claims.claims_renew(project=image.project, user=request.user, queue=REVIEW_QUEUE)
    if request.POST.get("view") in ("focus", "thumb"):
        return focus_decision_response(
            request, image, version, status=status, card_context=_card_context, **extra
        )
    context = _card_context(request, image, version, **extra)
    return render_page(request, "reviewapp/review.html", "review-card", context, status=status)


def _posted_version(request, image: Image) -> ModelVersion | None:
    pk = _int_or_none(request.POST.get("version"))
    if pk is None:
        return None
    return ModelVersion.objects.filter(pk=pk, project_id=image.project_id).first()


def _posted_audit(request, image: Image) -> LabelAudit | None:
    pk = _int_or_none(request.POST.get("audit"))
    if pk is None:
        return None
    return LabelAudit.objects.filter(pk=pk, project_id=image.project_id).first()


def _decision(request, pk, apply, **shown):
    """Apply one decision to image ``pk`` and answer with its card; refusals go on the card."""
    require_perm(request.user, "reviewapp.change_image")
    image = get_object_or_404(Image, pk=pk)
    version = _posted_version(request, image)
    shown["audit"] = _posted_audit(request, image)
    audit = {"audit": shown["audit"]}
    revision = _int_or_none(request.POST.get("revision"))
    if revision is None:
        return _card_response(
            request,
            image,
            version,
            status=400,
            error="The form did not say which revision.",
            **audit,
        )
    try:
        event = apply(image, version, revision)
    except services.StaleRevision as exc:
        return _card_response(request, image, version, status=409, error=str(exc), **audit)
    except ValidationError as exc:
        return _card_response(
            request, image, version, status=400, error=" ".join(exc.messages), **audit
        )
    if isinstance(event, SecondOpinion):
        to = event.to_category.name if event.to_category else "?"
        shown["done"] = f"relabel to {to} proposed: waiting for a second opinion"
        shown.pop("decided", None)
        shown["proposed"] = True
    done = shown.pop("done", None) or DONE_MESSAGES.get(event.action, "saved")
    response = _card_response(request, image, version, done=done, **shown)
    response["HX-Trigger"] = "review-decided"  # the progress line counts again
    return response


@require_POST
@login_required
def image_decide(request, pk):
    # A class button sends only its label: that is a relabel.
    action = request.POST.get("action") or ("relabel" if request.POST.get("label") else "")

    def apply(image, version, revision):
        label = None
        if action == "relabel":
            label = Category.objects.filter(
                pk=_int_or_none(request.POST.get("label")), project_id=image.project_id
            ).first()
        # Under the project's second-opinion rule a relabel becomes a proposal.
        return second_opinion.image_decide_or_propose(
            image_id=image.pk,
            action=action,
            actor=request.user,
            revision=revision,
            label=label,
            version=version,
        )

    return _decision(request, pk, apply, decided=True)


@require_POST
@login_required
def image_undo(request, pk):
    def apply(image, version, revision):
        return services.image_decision_undo(
            image_id=image.pk, actor=request.user, revision=revision
        )

    return _decision(request, pk, apply, undone=True, done="decision undone")


@require_POST
@login_required
def review_bulk(request, slug):
    """One decision for the selected cards; each card stands or fails alone."""
    project = project_for(request, slug, "reviewapp.change_image")
    version = _version_for(project, request.POST.get("version"))
    pairs = []
    for value in request.POST.getlist("selected"):
        image_id, _, revision = value.partition(":")
        if _int_or_none(image_id) is not None and _int_or_none(revision) is not None:
            pairs.append((int(image_id), int(revision)))
    action = request.POST.get("action", "")
    label = None
    if action == "relabel":
        label = project.categories.filter(pk=_int_or_none(request.POST.get("label"))).first()
        if label is None:
            messages.error(request, "Pick the class to relabel the selected images as.")
            pairs = []
    in_project = set(
        project.images.filter(pk__in=[p for p, _ in pairs]).values_list("pk", flat=True)
    )
    results = second_opinion.images_decide_or_propose(
        images=[p for p in pairs if p[0] in in_project],
        action=action,
        actor=request.user,
        label=label,
        version=version,
    )
    done = sum(r.ok for r in results)
    proposed = sum(r.proposed for r in results)
    if results:
        level = messages.success if done == len(results) else messages.warning
        if proposed < len(results):
            level(request, f"{done - proposed} of {len(results)} selected image(s) updated.")
        if proposed:
            messages.info(
                request, f"{proposed} relabel(s) wait for a second opinion from another reviewer."
            )
        for result in results:
            if not result.ok:
                messages.warning(request, f"Image #{result.image_id}: {result.message}")
    elif not pairs and action != "relabel":
        messages.info(request, "Select one or more cards first.")
    return redirect(_safe_next(request) or review_url(project, version=version and version.pk))


def _safe_next(request) -> str:
    """The local page to go back to after a plain form post; never another site."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return ""

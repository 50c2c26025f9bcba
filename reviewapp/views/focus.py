"""The focus view: one image large, with every class's probability, its history and the
card's actions; shown in a dialog over the review queue and the image browser."""

from django.http import Http404
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET

from .. import second_opinion, selectors
from ..focus import image_focus as focus_read
from ..models import Image, ModelVersion, Project
from .common import is_htmx, login_required, positive_int, project_for, render_page
from .media import BROWSER_FORMATS

__all__ = ["decision_response", "image_focus"]

PERM = "reviewapp.view_imagescore"  # it shows scores, as the review queue does
# The cards a focus view opens over: a review card, a Label queue card, an image browser card.
CARDS = ("review", "label", "thumb")
# A queue's card partial, rendered with that queue's own ``card_context``.
QUEUE_CARDS = {
    "review": "reviewapp/review.html#review-card",
    "label": "reviewapp/label_queue.html#label-card",
}


def _version(project: Project, value) -> ModelVersion | None:
    """The version named by ``value`` (404 if not the project's), or the latest."""
    if (pk := positive_int(value)) is not None:
        version = project.model_versions.filter(pk=pk).first()
        if version is None:
            raise Http404(f"No model version {pk} in project '{project.slug}'.")
        return version
    return selectors.model_version_latest(project=project)


def _context(request, project, image_id, version, params, **extra) -> dict:
    """What the focus partial needs; ``params``: its neighbours and origin, from the client."""
    focus = focus_read(project=project, image_id=image_id, version=version)
    image = focus.image
    focus_url = reverse("image-focus", kwargs={"slug": project.slug, "pk": image.pk})
    query = f"?version={version.pk}" if version is not None else ""
    return {
        "project": project,
        "image": image,
        "focus": focus,
        "score": focus.score,
        "version": version,
        "categories": focus.categories,
        "can_decide": request.user.has_perm("reviewapp.change_image"),
        "shows_original": image.format in BROWSER_FORMATS,
        # The page's order, not the server's: the client knows which cards it shows.
        "prev_id": positive_int(params.get("prev_id")),
        "next_id": positive_int(params.get("next_id")),
        "card": params.get("card") if params.get("card") in CARDS else "",
        "suggestion": focus.suggestion,
        "focus_query": query,
        "focus_url": f"{focus_url}{query}",
        "in_dialog": is_htmx(request),  # the page itself has nothing to close
        **extra,
    }


@require_GET
@login_required
def image_focus(request, slug, pk):
    project = project_for(request, slug, PERM)
    version = _version(project, request.GET.get("version"))
    context = _context(request, project, pk, version, request.GET)
    return render_page(request, "reviewapp/image_focus.html", "focus-view", context)


def decision_response(
    request, image: Image, version: ModelVersion | None, *, status, card_context, **extra
):
    """The answer to a decision made in a focus view or an image browser card (htmx only).

    ``view=focus``: the focus partial again, and, when it was opened over a review card
    (``card=review``), a Label queue card (``card=label``) or an image browser card
    (``card=thumb``), that one too, out of band; ``card_context`` is the card's own context
    (views/review.py and views/labeling.py own their cards).
    ``view=thumb``: the image browser's card alone.
    """
    extra.pop("audit", None)
    project = Project.objects.get(pk=image.project_id)
    if request.POST.get("view") == "thumb":
        context = _thumb_context(request, project, image.pk, **extra)
        return render(request, "reviewapp/image_browser.html#image-thumb", context, status=status)
    context = _context(request, project, image.pk, version, request.POST, **extra)
    response = render(request, "reviewapp/image_focus.html#focus-view", context, status=status)
    # The card or thumbnail the view was opened from shows the decision too, out of band.
    card = context["card"]
    if card in QUEUE_CARDS and (card == "label" or context["score"] is not None):
        html = render_to_string(
            QUEUE_CARDS[card],
            {**card_context(request, image, version, **extra), "oob": True},
            request=request,
        )
        response.content += html.encode()
    elif card == "thumb":
        thumb = render_to_string(
            "reviewapp/image_browser.html#image-thumb",
            _thumb_context(request, project, image.pk, oob=True),
            request=request,
        )
        response.content += thumb.encode()
    return response


def _thumb_context(request, project: Project, image_id: int, **extra) -> dict:
    image = Image.objects.select_related("label").get(pk=image_id)
    if project.second_opinion:
        second_opinion.attach_pending([image])
    return {
        "project": project,
        "image": image,
        "categories": list(project.categories.all()),
        "can_decide": request.user.has_perm("reviewapp.change_image"),
        "back_url": reverse("image-browser", kwargs={"slug": project.slug}),
        **extra,
    }

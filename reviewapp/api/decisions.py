"""Review decisions: confirm, relabel, delete, restore or undo, one image or many; audit trails.

Every decision carries the image's ``revision`` as the caller last saw it; a stale one is
refused with 409 and the image's current state, so two reviewers never overwrite each other.
"""

from datetime import datetime
from typing import Literal

from django.core.exceptions import ValidationError
from django.http import Http404
from ninja import Field, Query, Router, Schema, Status

from .. import second_opinion, services
from ..models import Category, Image, LabelEvent, ModelVersion, Project, SecondOpinion
from .auth import require_perm
from .common import Id, InputSchema, PageQuery, db_id, page_of, page_schema, project_or_404
from .errors import ERROR_RESPONSES
from .images import ImageOut, image_out
from .second_opinions import SecondOpinionOut, second_opinion_out

__all__ = ["router"]

router = Router(tags=["decisions"])

UNDO = "undo"
MAX_BULK = 1000


class DecisionIn(InputSchema):
    action: Literal[(*services.DECISION_ACTIONS, UNDO)] = Field(
        description="undo reverts the image's latest decision that still stands."
    )
    revision: int = Field(description="The image's revision as you saw it; stale: 409.")
    label: str | None = Field(None, description="The new category's name; relabel only.")
    version: Id | None = Field(
        None, description="The id of the model version whose queue you decided in."
    )
    note: str = Field("", max_length=1000, description="Kept in the audit trail.")


class BulkItemIn(InputSchema):
    id: Id
    revision: int


ACCEPT = "accept_suggestion"


class BulkDecisionIn(InputSchema):
    action: Literal[(*services.DECISION_ACTIONS, ACCEPT)] = Field(
        description="accept_suggestion labels each image with the suggestion of ``version`` "
        "(default: the latest), for the images sent or, with ``min_confidence``, for every "
        "unlabeled image suggested at least that confidently."
    )
    label: str | None = Field(None, description="The new category's name; relabel only.")
    version: Id | None = Field(
        None, description="The id of the model version whose queue you decided in."
    )
    images: list[BulkItemIn] = Field(
        default_factory=list, max_length=MAX_BULK, description="Needed but for min_confidence."
    )
    min_confidence: float | None = Field(
        None, ge=0.0, le=1.0, description="accept_suggestion only: instead of ``images``."
    )


class LabelEventOut(Schema):
    id: int
    action: LabelEvent.Action
    from_: str | None = Field(alias="from", description="The label before; null: unlabeled.")
    to: str | None = Field(description="The label after; null: unlabeled.")
    actor: str | None = Field(description="Username; null for the system or a deleted user.")
    note: str
    created_at: datetime
    version_id: int | None
    undo_of: int | None = Field(description="For an undo: the id of the event it reverted.")
    undone_by: int | None = Field(description="The id of the undo that reverted this event.")


class DecisionOut(Schema):
    image: ImageOut = Field(description="The image's new state.")
    event: LabelEventOut = Field(description="The event the decision wrote.")


class ProposedOut(Schema):
    image: ImageOut = Field(description="The image, its label unchanged for now.")
    second_opinion: SecondOpinionOut = Field(
        description="The pending relabel (as GET /projects/{slug}/second-opinions lists it): "
        "the project's rule wants another reviewer to agree first."
    )


class StaleOut(Schema):
    detail: str
    image: ImageOut = Field(description="The image as it is now: decide again from this.")


class BulkResultOut(Schema):
    image_id: int
    ok: bool
    message: str = Field(description="Why it was refused; empty when applied.")
    event_id: int | None
    second_opinion_id: int | None = Field(
        None, description="Set when the relabel waits for a second reviewer instead."
    )


class BulkDecisionOut(Schema):
    results: list[BulkResultOut] = Field(description="One per image sent, in the same order.")
    applied: int
    refused: int
    proposed: int = Field(0, description="Relabels waiting for a second reviewer.")


def _event_out(event: LabelEvent, *, undone_by: int | None = None) -> dict:
    return {
        "id": event.pk,
        "action": event.action,
        "from": event.from_category.name if event.from_category_id else None,
        "to": event.to_category.name if event.to_category_id else None,
        "actor": event.actor.get_username() if event.actor_id else None,
        "note": event.note,
        "created_at": event.created_at,
        "version_id": event.version_id,
        "undo_of": event.undo_of_id,
        "undone_by": undone_by,
    }


def _image_or_404(image_id: int) -> Image:
    image = Image.objects.select_related("project", "label").filter(pk=db_id(image_id)).first()
    if image is None:
        raise Http404(f"No image {image_id}.")
    return image


def _label_for(project: Project, action: str, name: str | None) -> Category | None:
    """The category a relabel names; a 400 naming the project's classes otherwise."""
    if action != "relabel":
        if name:
            # Refused, not ignored: "confirm" with a label would confirm whatever label the
            # image has, which need not be the one the client meant.
            raise ValidationError(
                {"label": f"A label is only sent with 'relabel', not '{action}'."}
            )
        return None
    category = project.categories.filter(name=name).first() if name else None
    if category is None:
        problem = (
            f"No category '{name}' in project '{project.slug}'."
            if name
            else "Relabel needs the new label."
        )
        valid = ", ".join(f"'{n}'" for n in project.categories.values_list("name", flat=True))
        raise ValidationError({"label": f"{problem} Valid labels: {valid or 'none yet'}."})
    return category


def _version_for(project: Project, version_id: int | None) -> ModelVersion | None:
    if version_id is None:
        return None
    version = ModelVersion.objects.select_related("project").filter(pk=version_id).first()
    if version is None:
        raise ValidationError({"version": f"No model version {version_id}."})
    if version.project_id != project.pk:
        raise ValidationError(
            {
                "version": f"Model version {version_id} belongs to project "
                f"'{version.project.slug}', not '{project.slug}'."
            }
        )
    return version


@router.post(
    "/images/{image_id}/decisions",
    response={200: DecisionOut, 202: ProposedOut, 409: StaleOut, **ERROR_RESPONSES},
    by_alias=True,
)
def image_decide(request, image_id: int, payload: DecisionIn):
    """Decide on one image: confirm, relabel (to ``label``), delete, restore, or undo.

    409 if ``revision`` is stale: nothing is applied and the body carries the image as it is
    now. An undo takes only ``revision``: it records the reverted decision's model version
    and a note of its own. Under the project's second-opinion rule a relabel of a labeled
    image answers 202: it waits for another reviewer (``/second-opinions/{id}``).
    """
    require_perm(request, "reviewapp.change_image", "decide on images")
    image = _image_or_404(image_id)
    project = image.project
    try:
        if payload.action == UNDO:
            sent = [f for f in ("label", "version", "note") if getattr(payload, f)]
            if sent:
                raise ValidationError(
                    {f: "An undo takes only 'revision'; leave this out." for f in sent}
                )
            event = services.image_decision_undo(
                image_id=image.pk, actor=request.auth, revision=payload.revision
            )
        else:
            event = second_opinion.image_decide_or_propose(
                image_id=image.pk,
                action=payload.action,
                actor=request.auth,
                revision=payload.revision,
                label=_label_for(project, payload.action, payload.label),
                version=_version_for(project, payload.version),
                note=payload.note,
            )
    except services.StaleRevision as exc:
        current = exc.image
        current.project = project
        return Status(409, {"detail": str(exc), "image": image_out(request, current)})
    if isinstance(event, SecondOpinion):
        opinion = SecondOpinion.objects.select_related(
            "image__project", "image__label", "from_category", "to_category", "proposed_by"
        ).get(pk=event.pk)
        body = second_opinion_out(request, opinion)
        return Status(202, {"image": body["image"], "second_opinion": body})
    return {
        "image": image_out(request, _image_or_404(image_id)),
        "event": _event_out(event),
    }


@router.post(
    "/projects/{slug}/decisions",
    response={200: BulkDecisionOut, **ERROR_RESPONSES},
)
def images_decide(request, slug: str, payload: BulkDecisionIn):
    """One decision for many images of the project; each is applied or refused on its own.

    A refused image (stale revision, impossible action, not in this project) is a result
    with ``ok`` false and a message, not an error. Undo one image at a time.
    """
    require_perm(request, "reviewapp.change_image", "decide on images")
    project = project_or_404(slug)
    if payload.action == ACCEPT:
        return _suggestions_accept(request, project, payload)
    if payload.min_confidence is not None:
        raise ValidationError({"min_confidence": f"Only with '{ACCEPT}'."})
    if not payload.images:
        raise ValidationError({"images": "Send at least one image."})
    label = _label_for(project, payload.action, payload.label)
    version = _version_for(project, payload.version)
    ids = [item.id for item in payload.images]
    in_project = set(project.images.filter(pk__in=ids).values_list("pk", flat=True))
    decided = iter(
        second_opinion.images_decide_or_propose(
            images=[(i.id, i.revision) for i in payload.images if i.id in in_project],
            action=payload.action,
            actor=request.auth,
            label=label,
            version=version,
        )
    )
    results = []
    for item in payload.images:
        if item.id in in_project:
            result = next(decided)  # images_decide answers in the order it was given
            results.append(
                {
                    "image_id": result.image_id,
                    "ok": result.ok,
                    "message": result.message,
                    "event_id": result.event_id,
                    "second_opinion_id": result.opinion_id,
                }
            )
        else:
            results.append(
                {
                    "image_id": item.id,
                    "ok": False,
                    "message": f"No image {item.id} in project '{slug}'; nothing was applied.",
                    "event_id": None,
                }
            )
    return _bulk_out(results)


def _bulk_out(results: list[dict]) -> dict:
    accepted = sum(r["ok"] for r in results)
    proposed = sum(r.get("second_opinion_id") is not None for r in results)
    return {
        "results": results,
        "applied": accepted - proposed,
        "refused": len(results) - accepted,
        "proposed": proposed,
    }


def _suggestions_accept(request, project: Project, payload: BulkDecisionIn) -> dict:
    from .. import labeling

    if payload.label:
        raise ValidationError({"label": f"'{ACCEPT}' takes each image's suggestion, no label."})
    if bool(payload.images) == (payload.min_confidence is not None):
        raise ValidationError(
            {"images": f"'{ACCEPT}' takes either images or min_confidence, not both or none."}
        )
    version = _version_for(project, payload.version) or labeling.latest_version(project)
    if version is None:
        raise ValidationError({"version": "The project has no model version: no suggestions."})
    pairs = [(i.id, i.revision) for i in payload.images]
    in_project = set(
        project.images.filter(pk__in=[p for p, _ in pairs]).values_list("pk", flat=True)
    )
    outside = [p for p, _ in pairs if p not in in_project]
    decided = labeling.suggestions_accept(
        version=version,
        actor=request.auth,
        images=[p for p in pairs if p[0] in in_project] if pairs else None,
        min_confidence=payload.min_confidence,
    )
    results = [
        {"image_id": r.image_id, "ok": r.ok, "message": r.message, "event_id": r.event_id}
        for r in decided
    ] + [
        {
            "image_id": pk,
            "ok": False,
            "message": f"No image {pk} in project '{project.slug}'; nothing was applied.",
            "event_id": None,
        }
        for pk in outside
    ]
    return _bulk_out(results)


LabelEventPageOut = page_schema(LabelEventOut, "LabelEventPageOut")


@router.get(
    "/images/{image_id}/history",
    response={200: LabelEventPageOut, **ERROR_RESPONSES},
    by_alias=True,
)
def image_history(request, image_id: int, paging: Query[PageQuery]):
    """The image's audit trail, newest first: import, decisions and undos; follow ``next``."""
    require_perm(request, "reviewapp.view_image", "view images")
    if not Image.objects.filter(pk=db_id(image_id)).exists():
        raise Http404(f"No image {image_id}.")
    events, next_url = page_of(
        request,
        LabelEvent.objects.filter(image_id=image_id)
        .select_related("actor", "from_category", "to_category", "undone_by")
        .order_by("-id"),
        offset=paging.offset,
        limit=paging.limit,
    )
    undone_by = {e.pk: e.undone_by.pk for e in events if hasattr(e, "undone_by")}
    return {
        "items": [_event_out(e, undone_by=undone_by.get(e.pk)) for e in events],
        "next": next_url,
    }

"""Second opinions: relabels waiting for another reviewer, and resolving them.

Under a project's ``second_opinion`` rule a relabel of a labeled image (``POST
/images/{id}/decisions`` answers 202) waits here; another reviewer agrees or overrides, the
proposer may withdraw. Agree and override carry the image's ``revision``: stale, 409.
"""

from datetime import datetime
from typing import Literal

from django.core.exceptions import ValidationError
from django.http import Http404
from ninja import Field, Query, Router, Schema, Status

from .. import second_opinion, services
from ..models import SecondOpinion
from .auth import require_perm
from .common import (
    InputSchema,
    PageQuery,
    api_enum,
    db_id,
    page_of,
    page_schema,
    project_or_404,
)
from .errors import ERROR_RESPONSES
from .images import ImageOut, image_out

__all__ = ["SecondOpinionOut", "router", "second_opinion_out"]

router = Router(tags=["second opinions"])

SecondOpinionStatus = api_enum(SecondOpinion.Status, "SecondOpinionStatus")


class SecondOpinionOut(Schema):
    id: int
    image: ImageOut = Field(description="The image as it is now; agree with its revision.")
    status: SecondOpinionStatus
    from_: str | None = Field(alias="from", description="The label when it was proposed.")
    to: str | None = Field(description="The proposed label; null if that class was deleted.")
    proposed_by: str | None = Field(description="Username; null for a deleted user.")
    version_id: int | None = Field(description="The version whose queue it was proposed in.")
    note: str
    created_at: datetime
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_event_id: int | None = Field(
        description="The label event that applied the outcome, if the label changed or was "
        "confirmed."
    )


class SecondOpinionIn(InputSchema):
    action: Literal[second_opinion.ACTIONS] = Field(
        description="agree: apply the proposed relabel; override: keep the label, or set "
        "``label``; withdraw: the proposer takes it back."
    )
    revision: int | None = Field(
        None, description="The image's revision as you saw it (agree, override); stale: 409."
    )
    label: str | None = Field(None, description="override only: the class to set instead.")


class StaleOpinionOut(Schema):
    detail: str
    image: ImageOut = Field(description="The image as it is now: decide again from this.")


def second_opinion_out(request, opinion: SecondOpinion) -> dict:
    def name(user):
        return user.get_username() if user is not None else None

    return {
        "id": opinion.pk,
        "image": image_out(request, opinion.image),
        "status": opinion.status,
        "from": opinion.from_category.name if opinion.from_category_id else None,
        "to": opinion.to_category.name if opinion.to_category_id else None,
        "proposed_by": name(opinion.proposed_by),
        "version_id": opinion.version_id,
        "note": opinion.note,
        "created_at": opinion.created_at,
        "resolved_by": name(opinion.resolved_by),
        "resolved_at": opinion.resolved_at,
        "resolution_event_id": opinion.resolution_id,
    }


def _opinion(pk: int) -> SecondOpinion:
    opinion = (
        SecondOpinion.objects.select_related(
            "project",
            "image__project",
            "image__label",
            "from_category",
            "to_category",
            "proposed_by",
            "resolved_by",
        )
        .filter(pk=db_id(pk))
        .first()
    )
    if opinion is None:
        raise Http404(f"No second opinion {pk}.")
    return opinion


SecondOpinionPageOut = page_schema(SecondOpinionOut, "SecondOpinionPageOut")


@router.get(
    "/projects/{slug}/second-opinions",
    response={200: SecondOpinionPageOut, **ERROR_RESPONSES},
    by_alias=True,
)
def second_opinion_list(request, slug: str, paging: Query[PageQuery]):
    """The project's relabels waiting for a second reviewer, oldest first; follow ``next``."""
    require_perm(request, "reviewapp.view_image", "view images")
    project = project_or_404(slug)
    opinions, next_url = page_of(
        request,
        second_opinion.pending_list(project=project).select_related(
            "image__project", "resolved_by"
        ),
        offset=paging.offset,
        limit=paging.limit,
    )
    return {"items": [second_opinion_out(request, o) for o in opinions], "next": next_url}


@router.post(
    "/second-opinions/{opinion_id}",
    response={200: SecondOpinionOut, 409: StaleOpinionOut, **ERROR_RESPONSES},
    by_alias=True,
)
def second_opinion_resolve(request, opinion_id: int, payload: SecondOpinionIn):
    """Agree, override (keep the label, or ``label``) or withdraw a pending relabel.

    The proposer cannot agree with or override their own proposal (400), only withdraw it.
    409 if ``revision`` is stale: nothing is applied and the body carries the image now.
    """
    require_perm(request, "reviewapp.change_image", "decide on images")
    opinion = _opinion(opinion_id)
    label = None
    if payload.label:
        if payload.action != "override":
            raise ValidationError({"label": "Only 'override' takes a label."})
        label = opinion.project.categories.filter(name=payload.label).first()
        if label is None:
            valid = ", ".join(
                f"'{n}'" for n in opinion.project.categories.values_list("name", flat=True)
            )
            raise ValidationError(
                {"label": f"No category '{payload.label}' in this project. Valid: {valid}."}
            )
    try:
        second_opinion.second_opinion_resolve(
            opinion_id=opinion.pk,
            actor=request.auth,
            action=payload.action,
            revision=payload.revision,
            label=label,
        )
    except services.StaleRevision as exc:
        current = exc.image
        current.project = opinion.project
        return Status(409, {"detail": str(exc), "image": image_out(request, current)})
    return second_opinion_out(request, _opinion(opinion.pk))

"""Approval and rollout: approve, reject, move a version between stages, roll a project back.

Every write needs the ``reviewapp.approve_model`` permission (403 otherwise). A refused change
answers 400 with the reason; a version that changed meanwhile answers 409.
"""

from datetime import datetime
from typing import Literal

from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from .. import rollout
from ..models import ModelVersion, RolloutEvent
from ..rollout import RolloutConflict, RolloutError
from .auth import require_perm
from .common import (
    InputSchema,
    PageQuery,
    absolute_reverse,
    page_of,
    page_schema,
    project_or_404,
    version_or_404,
)
from .errors import ERROR_RESPONSES, ErrorOut

__all__ = ["router"]

router = Router(tags=["rollout"])

PERM = "reviewapp.approve_model"
RESPONSES = {**ERROR_RESPONSES, 409: ErrorOut}


class ApproveIn(InputSchema):
    note: str = Field(description="Why you approve it; it goes into the version's timeline.")
    override_reason: str = Field(
        "", description="Required when too few of its flagged images were reviewed."
    )
    accuracy_reason: str = Field(
        "",
        description="Required when its validation accuracy is below the live version's by "
        "more than the project's approval tolerance (0.01 = 1 point).",
    )


class RejectIn(InputSchema):
    note: str = Field(description="Why you reject it.")


class StageIn(InputSchema):
    stage: Literal["shadow", "limited", "live"]
    share: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Percent of traffic for limited; omitted: the next rollout step. 100: live.",
    )
    reason: str = Field(
        "",
        description="Kept on the timeline. Required for a move past the next rung while a "
        "version is live: from approved straight to limited or live (skipping shadow), or past "
        "a rollout step.",
    )
    from_stage: Literal[tuple(ModelVersion.Stage.values)] | None = Field(
        None, description="The stage you saw; if the version has moved on since, 409."
    )


class RollbackIn(InputSchema):
    reason: str = ""


class RolloutEventOut(Schema):
    id: int
    version_id: int
    version: str  # "v3"
    from_stage: ModelVersion.Stage
    to_stage: ModelVersion.Stage
    traffic_share: int
    actor: str | None = Field(description="Username; null when the system made the change.")
    reason: str
    created_at: datetime


class VersionStateOut(Schema):
    id: int
    project: str
    number: int
    label: str
    stage: ModelVersion.Stage
    traffic_share: int
    paused_reason: str
    url: str | None
    timeline: list[RolloutEventOut]


class RollbackOut(Schema):
    project: str
    live: VersionStateOut | None
    events: list[RolloutEventOut] = Field(description="The changes the rollback made.")


def _event_out(event: RolloutEvent) -> dict:
    return {
        "id": event.pk,
        "version_id": event.version_id,
        "version": event.version.label,
        "from_stage": event.from_stage,
        "to_stage": event.to_stage,
        "traffic_share": event.traffic_share,
        "actor": event.actor.get_username() if event.actor else None,
        "reason": event.reason,
        "created_at": event.created_at,
    }


def _state_out(request, version: ModelVersion) -> dict:
    version.refresh_from_db()
    return {
        "id": version.pk,
        "project": version.project.slug,
        "number": version.number,
        "label": version.label,
        "stage": version.stage,
        "traffic_share": version.traffic_share,
        "paused_reason": version.paused_reason,
        "url": absolute_reverse(request, "model-version-approval", pk=version.pk),
        "timeline": [_event_out(e) for e in rollout.rollout_event_list(version=version)],
    }


def _refused(exc: RolloutError) -> HttpError:
    return HttpError(409 if isinstance(exc, RolloutConflict) else 400, str(exc))


@router.post("/model-versions/{version_id}/approve", response={200: VersionStateOut, **RESPONSES})
def model_version_approve(request, version_id: int, payload: ApproveIn):
    """Approve a candidate version; low review coverage needs ``override_reason``, accuracy
    below live's by more than the project's tolerance needs ``accuracy_reason``."""
    require_perm(request, PERM, "approve model versions")
    version = version_or_404(version_id)
    try:
        rollout.version_approve(
            version=version,
            actor=request.auth,
            note=payload.note,
            override_reason=payload.override_reason,
            accuracy_reason=payload.accuracy_reason,
        )
    except RolloutError as exc:
        raise _refused(exc) from None
    return _state_out(request, version)


@router.post("/model-versions/{version_id}/reject", response={200: VersionStateOut, **RESPONSES})
def model_version_reject(request, version_id: int, payload: RejectIn):
    """Reject a version that serves no traffic (a candidate, approved or in shadow)."""
    require_perm(request, PERM, "reject model versions")
    version = version_or_404(version_id)
    try:
        rollout.version_reject(version=version, actor=request.auth, note=payload.note)
    except RolloutError as exc:
        raise _refused(exc) from None
    return _state_out(request, version)


@router.post("/model-versions/{version_id}/stage", response={200: VersionStateOut, **RESPONSES})
def model_version_stage(request, version_id: int, payload: StageIn):
    """Move a version to shadow, limited (a share of traffic) or live.

    Limited again raises the share to the next rollout step (or ``share``); 100 makes it live
    and retires the previous live version. Refused while a guardrail is exceeded, and, while a
    version is live, a move that skips shadow or a rollout step is refused without a ``reason``.
    """
    require_perm(request, PERM, "roll out model versions")
    version = version_or_404(version_id)
    if payload.from_stage and payload.from_stage != version.stage:
        raise HttpError(
            409,
            f"{version.label} is {version.get_stage_display().lower()}, not "
            f"{payload.from_stage}: it changed since you looked.",
        )
    try:
        rollout.version_stage_set(
            version=version,
            stage=payload.stage,
            share=payload.share,
            actor=request.auth,
            reason=payload.reason,
        )
    except RolloutError as exc:
        raise _refused(exc) from None
    return _state_out(request, version)


@router.post("/projects/{slug}/rollback", response={200: RollbackOut, **RESPONSES})
def project_rollback(request, slug: str, payload: RollbackIn):
    """Return all traffic to the previous live version, from a limited or a fresh live one.

    Send ``{}``, or ``{"reason": "..."}`` to record why.
    """
    require_perm(request, PERM, "roll back model versions")
    project = project_or_404(slug)
    try:
        events = rollout.project_rollback(
            project=project, actor=request.auth, reason=payload.reason
        )
    except RolloutError as exc:
        raise _refused(exc) from None
    live = rollout.version_live(project=project)
    return {
        "project": project.slug,
        "live": _state_out(request, live) if live else None,
        "events": [_event_out(e) for e in events],
    }


RolloutEventPageOut = page_schema(RolloutEventOut, "RolloutEventPageOut")


@router.get(
    "/model-versions/{version_id}/timeline", response={200: RolloutEventPageOut, **RESPONSES}
)
def model_version_timeline(request, version_id: int, paging: Query[PageQuery]):
    """The version's approval and stage changes, oldest first; follow ``next``."""
    require_perm(request, "reviewapp.view_modelversion", "view model versions")
    version = version_or_404(version_id)
    events, next_url = page_of(
        request,
        rollout.rollout_event_queryset(version=version),
        offset=paging.offset,
        limit=paging.limit,
    )
    return {"items": [_event_out(e) for e in events], "next": next_url}

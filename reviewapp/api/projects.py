"""/projects: list, create, read with counts, change settings."""

from typing import Literal

from django.db import transaction
from ninja import Field, Query, Router, Schema, Status

from .. import policy, selectors, services
from ..models import Project
from .auth import require_perm
from .common import InputSchema, PageQuery, page_of, page_schema, project_or_404
from .errors import ERROR_RESPONSES

__all__ = ["project_out", "router"]

router = Router(tags=["projects"])


class ProjectSettings(Schema):
    image_size: int
    resize_method: Project.ResizeMethod
    augment: bool
    valid_pct: float
    split_seed: int


class ProjectOut(Schema):
    id: int
    name: str
    slug: str
    description: str
    settings: ProjectSettings
    # The retraining policy: off while both thresholds are null.
    retrain_after_decisions: int | None = Field(
        description="Retrain after this many review decisions since the latest version's data."
    )
    retrain_after_images: int | None = Field(
        description="Retrain after this many newly labeled images (labeling included)."
    )
    retrain_min_hours: int = Field(description="At most one policy run per this many hours.")
    retrain_audit: str = Field(description="'' (none), 'fast' or 'full': audit after a run.")
    retrain_shadow: bool = Field(description="Shadow the new version when it beats live.")
    second_opinion: bool = Field(
        description="A relabel waits for a second reviewer to agree (the Second opinion queue)."
    )


class ClassCountOut(Schema):
    category_id: int | None
    name: str
    train: int
    valid: int
    total: int


class CountsOut(Schema):
    classes: list[ClassCountOut]
    train: int
    valid: int
    total: int
    deleted: int


class ProjectDetailOut(ProjectOut):
    counts: CountsOut


class ProjectSettingsIn(InputSchema):
    """DataBlock settings; the model checks their ranges. Omitted or null: unchanged/default."""

    description: str | None = None
    image_size: int | None = None
    resize_method: Literal[tuple(Project.ResizeMethod.values)] | None = None
    augment: bool | None = None
    valid_pct: float | None = None
    split_seed: int | None = None
    second_opinion: bool | None = Field(
        None, description="A relabel waits until a second reviewer agrees or overrides it."
    )


class ProjectIn(ProjectSettingsIn):
    name: str
    slug: str = ""


class ProjectPatch(ProjectSettingsIn):
    name: str | None = None
    # The policy: null clears a threshold (both null: the policy is off).
    retrain_after_decisions: int | None = None
    retrain_after_images: int | None = None
    retrain_min_hours: int | None = None
    retrain_audit: str | None = None
    retrain_shadow: bool | None = None


def project_out(project: Project) -> dict:
    return {
        "id": project.pk,
        "name": project.name,
        "slug": project.slug,
        "description": project.description,
        "settings": {name: getattr(project, name) for name in ProjectSettings.model_fields},
        **{name: getattr(project, name) for name in policy.POLICY_FIELDS},
        "second_opinion": project.second_opinion,
    }


def _given(payload: Schema) -> dict:
    return {k: v for k, v in payload.dict(exclude_unset=True).items() if v is not None}


ProjectPageOut = page_schema(ProjectOut, "ProjectPageOut")


@router.get("/projects", response={200: ProjectPageOut, **ERROR_RESPONSES})
def project_list(request, paging: Query[PageQuery]):
    """The projects, by name; follow ``next`` for more."""
    require_perm(request, "reviewapp.view_project", "view projects")
    projects, next_url = page_of(
        request, Project.objects.order_by("name", "id"), offset=paging.offset, limit=paging.limit
    )
    return {"items": [project_out(p) for p in projects], "next": next_url}


@router.post("/projects", response={201: ProjectOut, **ERROR_RESPONSES})
def project_create(request, payload: ProjectIn):
    """Create a project; the slug is derived from the name unless given."""
    require_perm(request, "reviewapp.add_project", "create projects")
    project = services.project_create(actor=request.auth, **_given(payload))
    return Status(201, project_out(project))


@router.get("/projects/{slug}", response={200: ProjectDetailOut, **ERROR_RESPONSES})
def project_detail(request, slug: str):
    """A project with its active images counted per class and split."""
    require_perm(request, "reviewapp.view_project", "view projects")
    project = project_or_404(slug)
    counts = selectors.project_counts(project=project).as_dict()
    return {**project_out(project), "counts": counts}


@router.patch("/projects/{slug}", response={200: ProjectOut, **ERROR_RESPONSES})
def project_update(request, slug: str, payload: ProjectPatch):
    """Change a project's name or settings; a new split seed or share re-splits every image."""
    require_perm(request, "reviewapp.change_project", "change projects")
    project = project_or_404(slug)
    sent = payload.dict(exclude_unset=True)
    policy_fields = {name: sent.pop(name) for name in policy.POLICY_FIELDS if name in sent}
    with transaction.atomic():
        project = services.project_update(
            project=project, **{k: v for k, v in sent.items() if v is not None}
        )
        if policy_fields:
            project = policy.policy_update(project=project, **policy_fields)
    return project_out(project)

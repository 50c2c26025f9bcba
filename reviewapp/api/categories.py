"""/projects/{slug}/categories: the classes a project's images are labeled with."""

from django.core.exceptions import ValidationError
from ninja import Query, Router, Schema, Status

from .. import services
from ..models import Category
from .auth import require_perm
from .common import (
    Id,
    InputSchema,
    PageQuery,
    category_or_404,
    page_of,
    page_schema,
    project_or_404,
)
from .errors import ERROR_RESPONSES

__all__ = ["category_out", "router"]

router = Router(tags=["categories"])


class CategoryOut(Schema):
    id: int
    name: str
    hotkey: str
    position: int


class CategoryIn(InputSchema):
    name: str
    hotkey: str | None = None  # omitted: hotkeys.hotkey_for_new picks; "": none


class CategoryPatch(InputSchema):
    name: str | None = None
    hotkey: str | None = None  # "": remove the hotkey
    position: int | None = None


class MergeIn(InputSchema):
    into: Id  # id of the category that receives the images


class MergeOut(Schema):
    moved: int
    into: CategoryOut


def category_out(category: Category) -> dict:
    return {
        "id": category.pk,
        "name": category.name,
        "hotkey": category.hotkey,
        "position": category.position,
    }


CategoryPageOut = page_schema(CategoryOut, "CategoryPageOut")


@router.get("/projects/{slug}/categories", response={200: CategoryPageOut, **ERROR_RESPONSES})
def category_list(request, slug: str, paging: Query[PageQuery]):
    """The project's categories in their order (the hotkeys' order); follow ``next``."""
    require_perm(request, "reviewapp.view_project", "view projects")
    project = project_or_404(slug)
    categories, next_url = page_of(
        request,
        project.categories.order_by("position", "name", "id"),
        offset=paging.offset,
        limit=paging.limit,
    )
    return {"items": [category_out(c) for c in categories], "next": next_url}


@router.post("/projects/{slug}/categories", response={201: CategoryOut, **ERROR_RESPONSES})
def category_create(request, slug: str, payload: CategoryIn):
    """Add a category at the end; it gets the next free hotkey unless one is given."""
    require_perm(request, "reviewapp.add_category", "add categories")
    project = project_or_404(slug)
    category = services.category_create(project=project, name=payload.name, hotkey=payload.hotkey)
    return Status(201, category_out(category))


@router.patch(
    "/projects/{slug}/categories/{category_id}", response={200: CategoryOut, **ERROR_RESPONSES}
)
def category_update(request, slug: str, category_id: int, payload: CategoryPatch):
    """Rename a category, change its hotkey ("" for none) or its position."""
    require_perm(request, "reviewapp.change_category", "change categories")
    category = category_or_404(project_or_404(slug), category_id)
    category = services.category_update(
        category=category, name=payload.name, hotkey=payload.hotkey, position=payload.position
    )
    return category_out(category)


@router.post(
    "/projects/{slug}/categories/{category_id}/merge",
    response={200: MergeOut, **ERROR_RESPONSES},
)
def category_merge(request, slug: str, category_id: int, payload: MergeIn):
    """Relabel every image of this category as ``into`` (each move logged), then delete it."""
    require_perm(request, "reviewapp.delete_category", "merge categories")
    project = project_or_404(slug)
    source = category_or_404(project, category_id)
    target = project.categories.filter(pk=payload.into).first()
    if target is None:
        # The target comes from the body: a bad request, not a missing resource.
        names = ", ".join(f"{c.pk} ({c.name})" for c in project.categories.exclude(pk=source.pk))
        raise ValidationError(
            {"into": f"No category {payload.into} in project '{slug}'; valid ids: {names or '-'}."}
        )
    moved = services.category_merge(source=source, target=target, actor=request.auth)
    target.refresh_from_db()
    return {"moved": moved, "into": category_out(target)}


@router.delete("/projects/{slug}/categories/{category_id}", response={204: None, **ERROR_RESPONSES})
def category_delete(request, slug: str, category_id: int):
    """Delete a category that labels no image; merge one that does."""
    require_perm(request, "reviewapp.delete_category", "delete categories")
    category = category_or_404(project_or_404(slug), category_id)
    services.category_delete(category=category)
    return Status(204, None)

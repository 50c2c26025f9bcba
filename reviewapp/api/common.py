"""Lookups and types the resource routers share."""

import enum
from typing import Annotated

from django.db import models
from django.http import Http404
from django.urls import NoReverseMatch, reverse
from ninja import Field, Schema
from pydantic import ConfigDict, create_model, field_validator

from ..models import Category, ModelVersion, Project

__all__ = [
    "MAX_ID",
    "Id",
    "InputSchema",
    "PageQuery",
    "absolute_reverse",
    "api_enum",
    "category_or_404",
    "db_id",
    "page_of",
    "page_schema",
    "project_or_404",
]

# A BigAutoField's range: a larger id would overflow the database driver, not miss.
MAX_ID = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def db_id(value: int) -> int:
    """``value`` if a row could have that id, else 0, an id no row has (so: a 404)."""
    return value if 1 <= value <= MAX_ID else 0


def api_enum(choices: type[models.TextChoices], name: str) -> type[enum.Enum]:
    """``choices`` under its own OpenAPI name; ninja names an enum after its class, and
    several models have one called ``Status``."""
    return enum.Enum(name, {m.name: m.value for m in choices}, type=str, module=__name__)


class InputSchema(Schema):
    """A request body; an unknown field is refused, so a typo is not silently ignored.

    Strict: JSON ``false`` is not the integer 0, nor ``"3"`` the integer 3 (what the
    schema says). Enums are ``Literal`` here, since strict pydantic wants enum instances.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def fits_the_database(cls, value):
        # Any integer may reach a column: past 64 bits the driver overflows (a 500).
        if isinstance(value, int) and not -MAX_ID - 1 <= value <= MAX_ID:
            raise ValueError(f"Must be between {-MAX_ID - 1} and {MAX_ID}.")
        return value


def project_or_404(slug: str) -> Project:
    try:
        return Project.objects.get(slug=slug)
    except Project.DoesNotExist:
        raise Http404(f"No project '{slug}'.") from None


def category_or_404(project: Project, category_id: int) -> Category:
    try:
        return project.categories.get(pk=db_id(category_id))
    except Category.DoesNotExist:
        raise Http404(f"No category {category_id} in project '{project.slug}'.") from None


def version_or_404(version_id: int) -> ModelVersion:
    """The model version with its project (every answer names the project's slug)."""
    version = ModelVersion.objects.select_related("project").filter(pk=db_id(version_id)).first()
    if version is None:
        raise Http404(f"No model version {version_id}.")
    return version


def absolute_reverse(request, name: str, **kwargs) -> str | None:
    """The absolute URL of a named route, or None while that route does not exist."""
    try:
        return request.build_absolute_uri(reverse(name, kwargs=kwargs))
    except NoReverseMatch:
        return None


# Paged lists ------------------------------------------------------------------------
# Every list answers {"items": [...], "next": URL or null}; these page by offset, the
# way the version scores do (the image, notification and delivery lists use a keyset
# ``before`` id in their ``next`` instead: they grow at the front while one reads them).
PAGE_DEFAULT_LIMIT = 100
PAGE_MAX_LIMIT = 500
PAGE_MAX_OFFSET = 100_000


class PageQuery(Schema):
    limit: int = Field(PAGE_DEFAULT_LIMIT, ge=1, le=PAGE_MAX_LIMIT)
    offset: int = Field(
        0, ge=0, le=PAGE_MAX_OFFSET, description="Skip this many; follow ``next`` instead."
    )


def page_schema(item: type[Schema], name: str) -> type[Schema]:
    """The ``{items, next}`` schema of a list of ``item``, under its own OpenAPI name."""
    return create_model(
        name,
        __base__=Schema,
        items=(list[item], ...),
        next=(str | None, Field(description="URL of the next page; null on the last page.")),
    )


def page_of(request, rows, *, offset: int, limit: int, max_offset: int = PAGE_MAX_OFFSET):
    """One page of ``rows`` (a queryset or a list) and the URL of the next page or None.

    One row more than asked tells whether there is a next page, without a COUNT; ``next``
    keeps the request's other parameters.
    """
    end = offset + limit
    page = list(rows[offset : end + 1])
    next_url = None
    if len(page) > limit and end <= max_offset:
        query = request.GET.copy()
        query["offset"] = str(end)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return page[:limit], next_url

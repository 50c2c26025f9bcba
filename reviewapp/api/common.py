"""Lookups the resource routers share."""

from django.http import Http404
from django.urls import NoReverseMatch, reverse
from ninja import Schema
from pydantic import ConfigDict

from ..models import Category, Project

__all__ = ["InputSchema", "absolute_reverse", "category_or_404", "project_or_404"]


class InputSchema(Schema):
    """A request body; an unknown field is refused, so a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def project_or_404(slug: str) -> Project:
    try:
        return Project.objects.get(slug=slug)
    except Project.DoesNotExist:
        raise Http404(f"No project '{slug}'.") from None


def category_or_404(project: Project, category_id: int) -> Category:
    try:
        return project.categories.get(pk=category_id)
    except Category.DoesNotExist:
        raise Http404(f"No category {category_id} in project '{project.slug}'.") from None


def absolute_reverse(request, name: str, **kwargs) -> str | None:
    """The absolute URL of a named route, or None while that route does not exist."""
    try:
        return request.build_absolute_uri(reverse(name, kwargs=kwargs))
    except NoReverseMatch:
        return None

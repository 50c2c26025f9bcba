"""Project writes: create, update, and the re-split of its images when the split changes."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from ..models import Image, Project

__all__ = ["SPLIT_FIELDS", "project_create", "project_update"]


def _unique_slug(name: str) -> str:
    base = slugify(name)[:70] or "project"
    slug, n = base, 2
    while Project.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@transaction.atomic
def project_create(*, name: str, actor=None, slug: str = "", **fields) -> Project:
    """Create a project; the slug is derived from the name unless given."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A project needs a name."})
    if slug and Project.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"The slug '{slug}' is already taken."})
    project = Project(name=name, slug=slug or _unique_slug(name), created_by=actor, **fields)
    project.full_clean()
    project.save()
    return project


SPLIT_FIELDS = ("split_seed", "valid_pct")


@transaction.atomic
def project_update(*, project: Project, **fields) -> Project:
    """Change a project's settings; a new seed or share re-splits every image."""
    resplit = any(
        name in fields and fields[name] != getattr(project, name) for name in SPLIT_FIELDS
    )
    for name, value in fields.items():
        setattr(project, name, value)
    project.full_clean()
    project.save()
    if resplit:
        _project_resplit(project)
    return project


def _project_resplit(project: Project) -> None:
    changed = []
    for image in project.images.only("id", "sha256", "split").iterator(chunk_size=2000):
        split = project.split_for(image.sha256)
        if split != image.split:
            image.split = split
            changed.append(image)
    Image.objects.bulk_update(changed, ["split"], batch_size=1000)

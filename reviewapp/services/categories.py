"""Category writes: create with a free hotkey, rename, merge into another, delete."""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from .. import hotkeys
from ..models import Category, Image, LabelEvent, Project

__all__ = [
    "category_create",
    "category_delete",
    "category_get_or_create",
    "category_merge",
    "category_update",
]


def _free_hotkey(project: Project, name: str) -> str:
    used = set(project.categories.exclude(hotkey="").values_list("hotkey", flat=True))
    return hotkeys.hotkey_for_new(name, used)


def _check_hotkey(hotkey: str) -> None:
    if problem := hotkeys.hotkey_problem(hotkey):
        raise ValidationError({"hotkey": problem})


def _clean_category_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "A category needs a name."})
    if len(name) > 100:
        raise ValidationError({"name": "A category name has at most 100 characters."})
    if "/" in name:
        raise ValidationError({"name": "A category name cannot contain '/'."})
    return name


@transaction.atomic
def category_create(*, project: Project, name: str, hotkey: str | None = None) -> Category:
    """Add a category at the end; it gets the next free hotkey unless one is given."""
    name = _clean_category_name(name)
    if project.categories.filter(name=name).exists():
        raise ValidationError({"name": f"'{name}' already exists in this project."})
    hotkey = _free_hotkey(project, name) if hotkey is None else hotkey.strip()
    _check_hotkey(hotkey)
    if hotkey and project.categories.filter(hotkey=hotkey).exists():
        raise ValidationError({"hotkey": f"Hotkey {hotkey} is already used."})
    position = (project.categories.aggregate(m=Max("position"))["m"] or 0) + 1
    category = Category(project=project, name=name, hotkey=hotkey, position=position)
    category.full_clean()
    category.save()
    return category


def category_get_or_create(*, project: Project, name: str) -> Category:
    name = _clean_category_name(name)
    try:
        return project.categories.get(name=name)
    except Category.DoesNotExist:
        pass
    try:
        return category_create(project=project, name=name)
    except (ValidationError, IntegrityError):
        # Another process created it meanwhile.
        return project.categories.get(name=name)


@transaction.atomic
def category_update(
    *,
    category: Category,
    name: str | None = None,
    hotkey: str | None = None,
    position: int | None = None,
) -> Category:
    """Rename a category, change its hotkey ('' for none) or its position."""
    siblings = Category.objects.filter(project_id=category.project_id).exclude(pk=category.pk)
    if name is not None:
        name = _clean_category_name(name)
        if siblings.filter(name=name).exists():
            raise ValidationError(
                {"name": f"'{name}' already exists; merge the two categories instead."}
            )
        category.name = name
    if hotkey is not None:
        hotkey = hotkey.strip()
        _check_hotkey(hotkey)
        if hotkey and siblings.filter(hotkey=hotkey).exists():
            taken = siblings.get(hotkey=hotkey)
            raise ValidationError({"hotkey": f"Hotkey {hotkey} is already used by '{taken}'."})
        category.hotkey = hotkey
    if position is not None:
        category.position = position
    category.full_clean()
    category.save()
    return category


@transaction.atomic
def category_merge(*, source: Category, target: Category, actor=None) -> int:
    """Move every image of ``source`` to ``target``, log each move, delete ``source``."""
    if source.project_id != target.project_id:
        raise ValidationError("Both categories must belong to the same project.")
    if source.pk == target.pk:
        raise ValidationError("A category cannot be merged into itself.")
    images = list(Image.objects.select_for_update().filter(label=source).only("id"))
    note = f"merged category '{source.name}' into '{target.name}'"
    LabelEvent.objects.bulk_create(
        [
            LabelEvent(
                project_id=source.project_id,
                image_id=image.pk,
                actor=actor,
                action=LabelEvent.Action.RELABEL,
                from_category=source,
                to_category=target,
                note=note,
            )
            for image in images
        ],
        batch_size=1000,
    )
    Image.objects.filter(label=source).update(
        label=target, revision=F("revision") + 1, updated_at=timezone.now()
    )
    if source.hotkey and not target.hotkey:
        target.hotkey, source.hotkey = source.hotkey, ""
        source.save(update_fields=["hotkey"])
        target.save(update_fields=["hotkey"])
    source.delete()
    return len(images)


@transaction.atomic
def category_delete(*, category: Category) -> None:
    """Delete an empty category; one with images must be merged instead."""
    count = category.images.count()
    if count:
        raise ValidationError(
            f"'{category.name}' still labels {count} image(s); merge it into another "
            "category instead."
        )
    category.delete()

"""Projects and categories: creation, settings, hotkeys, merge."""

import pytest
from django.core.exceptions import ValidationError

from reviewapp import services
from reviewapp.models import Category, Image, LabelEvent
from reviewapp.selectors import image_list, project_counts
from tests.factories import CategoryFactory, ProjectFactory, UserFactory, make_image

pytestmark = pytest.mark.django_db


def test_project_create_derives_a_unique_slug():
    first = services.project_create(name="Bear Classifier")
    second = services.project_create(name="Bear classifier")

    assert (first.slug, second.slug) == ("bear-classifier", "bear-classifier-2")


def test_project_create_rejects_bad_settings():
    with pytest.raises(ValidationError) as exc:
        services.project_create(name="x", valid_pct=0.9)
    assert "valid_pct" in exc.value.message_dict


def test_changing_the_seed_resplits_every_image():
    project = ProjectFactory(split_seed=1)
    images = [make_image(project) for _ in range(40)]
    before = {i.pk: i.split for i in images}

    services.project_update(project=project, split_seed=2)

    after = dict(Image.objects.values_list("id", "split"))
    assert after != before
    assert all(after[i.pk] == project.split_for(i.sha256) for i in images)


def test_categories_get_the_next_free_hotkey():
    project = ProjectFactory()
    names = [f"class {n}" for n in range(12)]
    hotkeys = [services.category_create(project=project, name=n).hotkey for n in names]

    # 1-9, then 0, then the letters the queues do not use as action keys.
    assert hotkeys == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "a", "b"]


def test_a_class_named_by_a_digit_gets_that_digit():
    """The digits demo: class "0" gets key 0 ... "9" gets key 9."""
    project = ProjectFactory()
    hotkeys = [services.category_create(project=project, name=str(n)).hotkey for n in range(10)]

    assert hotkeys == [str(n) for n in range(10)]


def test_category_duplicate_name_and_hotkey_are_refused():
    project = ProjectFactory()
    services.category_create(project=project, name="black", hotkey="1")
    other = services.category_create(project=project, name="grizzly", hotkey="2")

    with pytest.raises(ValidationError, match="already exists"):
        services.category_create(project=project, name="black")
    with pytest.raises(ValidationError, match="already used by 'black'"):
        services.category_update(category=other, hotkey="1")
    with pytest.raises(ValidationError, match="merge"):
        services.category_update(category=other, name="black")


def test_merge_moves_images_and_logs_each_move():
    project = ProjectFactory()
    user = UserFactory()
    source = CategoryFactory(project=project, name="grizly", hotkey="3")
    target = CategoryFactory(project=project, name="grizzly")
    moved = [make_image(project, source) for _ in range(3)]

    count = services.category_merge(source=source, target=target, actor=user)

    assert count == 3
    assert not Category.objects.filter(pk=source.pk).exists()
    for image in moved:
        image.refresh_from_db()
        assert image.label == target and image.revision == 2
        event = image.events.get(action="relabel")
        assert event.actor == user and event.to_category == target
        assert "grizly" in event.note
    target.refresh_from_db()
    assert target.hotkey == "3"


def test_delete_refuses_a_category_with_images():
    project = ProjectFactory()
    category = CategoryFactory(project=project)
    make_image(project, category)

    with pytest.raises(ValidationError, match="merge it"):
        services.category_delete(category=category)
    assert Category.objects.filter(pk=category.pk).exists()


def test_project_counts_per_class_and_split():
    project = ProjectFactory()
    black, teddy = CategoryFactory(project=project), CategoryFactory(project=project)
    images = [make_image(project, black) for _ in range(6)] + [make_image(project, teddy)]
    make_image(project)  # unlabeled
    Image.objects.filter(pk=images[0].pk).update(status="deleted")

    counts = project_counts(project=project)

    rows = {row.name: (row.train, row.valid) for row in counts.rows}
    expected_black = Image.objects.filter(label=black, status="active")
    assert rows[black.name] == (
        expected_black.filter(split="train").count(),
        expected_black.filter(split="valid").count(),
    )
    assert sum(rows[black.name]) == 5 and sum(rows[teddy.name]) == 1
    assert sum(rows["(unlabeled)"]) == 1
    assert counts.total == 7 and counts.deleted == 1


def test_image_list_pages_by_cursor_without_overlap():
    project = ProjectFactory()
    made = {make_image(project).pk for _ in range(7)}

    seen, cursor, pages = [], None, 0
    while True:
        page = image_list(project=project, before=cursor, limit=3)
        seen += [i.pk for i in page.images]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert pages == 3 and len(seen) == len(set(seen)) == 7 and set(seen) == made
    assert seen == sorted(seen, reverse=True)


def test_label_events_are_kept_for_every_import():
    project = ProjectFactory()
    make_image(project)
    make_image(project)

    assert LabelEvent.objects.filter(project=project, action="import").count() == 2


@pytest.mark.django_db
def test_deleting_a_project_takes_its_labeled_images_but_a_used_category_stays_protected():
    from django.db.models import RestrictedError

    from reviewapp.models import Category, Image, Project
    from tests.factories import CategoryFactory, ProjectFactory, make_image

    project = ProjectFactory()
    category = CategoryFactory(project=project)
    make_image(project, category)

    with pytest.raises(RestrictedError):
        category.delete()

    project.delete()
    assert not Project.objects.filter(pk=project.pk).exists()
    assert not Image.objects.exists() and not Category.objects.exists()

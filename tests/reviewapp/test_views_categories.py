"""The categories page: add, rename, hotkeys, order, merge, delete; rows swap in place."""

import re

import pytest
from django.urls import reverse

from reviewapp.models import Category, Image, LabelEvent
from tests.factories import (
    CategoryFactory,
    ProjectFactory,
    UserFactory,
    approver,
    make_image,
    reviewer,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'


def html(response) -> str:
    return response.content.decode()


@pytest.fixture
def project():
    return ProjectFactory()


@pytest.fixture
def cat(project):
    return CategoryFactory(project=project, name="cat", hotkey="1", position=1)


@pytest.fixture
def dog(project):
    return CategoryFactory(project=project, name="dog", hotkey="2", position=2)


def row_url(name, category):
    return reverse(name, args=[category.project.slug, category.pk])


def row_data(category, **changes):
    data = {"name": category.name, "hotkey": category.hotkey, "position": category.position}
    data.update(changes)
    return data


# Page ---------------------------------------------------------------------------


def test_category_list_access(client, project):
    url = reverse("category-list", args=[project.slug])
    assert client.get(url)["Location"].startswith(reverse("login"))
    client.force_login(UserFactory())
    assert client.get(url).status_code == 403


def test_category_list_shows_rows_with_counts_for_reviewer(client, project, cat, dog):
    make_image(project, cat)
    make_image(project, cat)
    client.force_login(reviewer())
    page = html(client.get(reverse("category-list", args=[project.slug])))
    assert LAYOUT in page
    assert f'id="category-row-{cat.pk}"' in page and f'id="category-row-{dog.pk}"' in page
    assert page.index(f'id="category-row-{cat.pk}"') < page.index(f'id="category-row-{dog.pk}"')
    assert "2 images" in page and "0 images" in page
    assert 'id="category-create"' in page
    # Reviewers may not delete or merge.
    assert "Merge…" not in page and row_url("category-delete", cat) not in page


def test_category_list_offers_merge_and_delete_to_approver(client, project, cat):
    client.force_login(approver())
    page = html(client.get(reverse("category-list", args=[project.slug])))
    assert row_url("category-merge", cat) in page
    assert row_url("category-delete", cat) in page


def test_category_list_htmx_returns_only_the_section(client, project, cat):
    client.force_login(reviewer())
    page = html(client.get(reverse("category-list", args=[project.slug]), **HTMX))
    assert page.lstrip().startswith('<section id="category-section"')
    assert LAYOUT not in page


# Add ----------------------------------------------------------------------------


def test_category_add_with_htmx_redraws_the_section(client, project, cat):
    client.force_login(reviewer())
    response = client.post(
        reverse("category-create", args=[project.slug]), {"name": "bird", "hotkey": ""}, **HTMX
    )
    bird = Category.objects.get(project=project, name="bird")
    page = html(response)
    assert response.status_code == 200
    assert page.lstrip().startswith('<section id="category-section"')
    assert f'id="category-row-{bird.pk}"' in page
    assert bird.hotkey == "2"  # blank: the next free digit
    assert bird.position == 2


def test_category_add_without_htmx_redirects(client, project):
    client.force_login(reviewer())
    response = client.post(
        reverse("category-create", args=[project.slug]), {"name": "bird", "hotkey": "5"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("category-list", args=[project.slug])
    assert Category.objects.get(project=project, name="bird").hotkey == "5"


def test_category_add_duplicate_name_shows_error_and_keeps_input(client, project, cat):
    client.force_login(reviewer())
    response = client.post(
        reverse("category-create", args=[project.slug]), {"name": "cat", "hotkey": "7"}, **HTMX
    )
    page = html(response)
    assert "&#x27;cat&#x27; already exists in this project." in page
    assert 'name="hotkey" value="7"' in page
    assert Category.objects.filter(project=project).count() == 1


def test_category_add_hotkey_conflict_is_refused(client, project, cat):
    client.force_login(reviewer())
    response = client.post(
        reverse("category-create", args=[project.slug]), {"name": "bird", "hotkey": "1"}, **HTMX
    )
    assert "Hotkey 1 is already used." in html(response)
    assert not Category.objects.filter(name="bird").exists()


def test_category_add_refused_without_permission(client, project):
    client.force_login(UserFactory())
    response = client.post(reverse("category-create", args=[project.slug]), {"name": "bird"})
    assert response.status_code == 403
    assert not Category.objects.exists()


# Update -------------------------------------------------------------------------


def test_category_rename_swaps_only_its_row(client, cat):
    client.force_login(reviewer())
    response = client.post(row_url("category-update", cat), row_data(cat, name="kitten"), **HTMX)
    page = html(response)
    assert response.status_code == 200
    assert page.lstrip().startswith(f'<li id="category-row-{cat.pk}"')
    assert LAYOUT not in page
    assert 'value="kitten"' in page and "Saved" in page
    cat.refresh_from_db()
    assert cat.name == "kitten"


def test_category_rename_to_existing_name_shows_error_in_row(client, cat, dog):
    client.force_login(reviewer())
    response = client.post(row_url("category-update", cat), row_data(cat, name="dog"), **HTMX)
    page = html(response)
    assert page.lstrip().startswith(f'<li id="category-row-{cat.pk}"')
    assert "&#x27;dog&#x27; already exists; merge the two categories instead." in page
    assert 'value="dog"' in page  # what was typed stays in the box
    assert "category-row--error" in page
    cat.refresh_from_db()
    assert cat.name == "cat"


def test_category_hotkey_conflict_shows_error_and_keeps_input(client, cat, dog):
    client.force_login(reviewer())
    response = client.post(
        row_url("category-update", dog), row_data(dog, name="doggo", hotkey="1"), **HTMX
    )
    page = html(response)
    assert "Hotkey 1 is already used by &#x27;cat&#x27;." in page
    assert 'value="doggo"' in page and 'name="hotkey" value="1"' in page
    dog.refresh_from_db()
    assert (dog.name, dog.hotkey) == ("dog", "2")


def test_category_hotkey_refuses_an_action_key_with_its_action(client, cat):
    client.force_login(reviewer())
    response = client.post(row_url("category-update", cat), row_data(cat, hotkey="x"), **HTMX)
    assert "&#x27;x&#x27; is the review queues&#x27; key to delete (to the trash)" in html(response)
    cat.refresh_from_db()
    assert cat.hotkey == "1"


@pytest.mark.parametrize("key", ["0", "a", "z"])
def test_category_hotkey_may_be_0_or_a_free_letter(client, cat, key):
    client.force_login(reviewer())
    response = client.post(row_url("category-update", cat), row_data(cat, hotkey=key), **HTMX)
    assert response.status_code == 200 and "Saved" in html(response)
    cat.refresh_from_db()
    assert cat.hotkey == key


def test_category_hotkey_input_lets_0_and_letters_through(client, cat):
    """The old pattern [1-9] made the browser refuse 0 ("Please match the requested format")."""
    client.force_login(reviewer())
    page = html(client.get(reverse("category-list", args=[cat.project.slug])))
    patterns = set(re.findall(r'name="hotkey"[^>]*pattern="([^"]+)"', page))
    assert patterns == {"[0-9a-z]"}
    assert "except c, j, k, n, o, s, u, x" in page


def test_category_hotkey_upper_case_is_refused(client, cat):
    client.force_login(reviewer())
    response = client.post(row_url("category-update", cat), row_data(cat, hotkey="A"), **HTMX)
    assert "A hotkey is one digit (0-9) or one lower-case letter." in html(response)


def test_category_hotkey_can_be_cleared(client, cat):
    client.force_login(reviewer())
    client.post(row_url("category-update", cat), row_data(cat, hotkey=""), **HTMX)
    cat.refresh_from_db()
    assert cat.hotkey == ""


def test_category_reorder_redraws_the_list_in_the_new_order(client, cat, dog):
    client.force_login(reviewer())
    response = client.post(row_url("category-update", cat), row_data(cat, position=9), **HTMX)
    page = html(response)
    assert response["HX-Retarget"] == "#category-section"
    assert page.lstrip().startswith('<section id="category-section"')
    assert page.index(f'id="category-row-{dog.pk}"') < page.index(f'id="category-row-{cat.pk}"')
    cat.refresh_from_db()
    assert cat.position == 9


def test_category_update_without_htmx_redirects_or_shows_full_page(client, cat, dog):
    client.force_login(reviewer())
    ok = client.post(row_url("category-update", cat), row_data(cat, name="kitty"))
    assert ok.status_code == 302
    bad = client.post(row_url("category-update", dog), row_data(dog, name="kitty"))
    page = html(bad)
    assert bad.status_code == 200
    assert LAYOUT in page and "already exists" in page


def test_category_of_another_project_is_404(client, cat):
    other = ProjectFactory()
    client.force_login(reviewer())
    url = reverse("category-update", args=[other.slug, cat.pk])
    assert client.post(url, row_data(cat)).status_code == 404


def test_category_update_refused_without_permission(client, cat):
    client.force_login(UserFactory())
    response = client.post(row_url("category-update", cat), row_data(cat, name="x"))
    assert response.status_code == 403


# Merge --------------------------------------------------------------------------


def test_category_merge_asks_for_confirmation_first(client, project, cat, dog):
    for _ in range(3):
        make_image(project, cat)
    client.force_login(approver())
    response = client.get(row_url("category-merge", cat))
    page = html(response)
    assert response.status_code == 200
    assert "relabels <strong>3 images</strong>" in page
    assert "cannot be split back automatically" in page
    assert f'<option value="{dog.pk}"' in page and f'<option value="{cat.pk}"' not in page
    assert Category.objects.filter(pk=cat.pk).exists()


def test_category_merge_relabels_images_and_logs_each(client, project, cat, dog):
    images = [make_image(project, cat) for _ in range(3)]
    user = approver()
    client.force_login(user)
    response = client.post(row_url("category-merge", cat), {"target": dog.pk})
    assert response.status_code == 302
    assert response["Location"] == reverse("category-list", args=[project.slug])
    assert not Category.objects.filter(pk=cat.pk).exists()
    assert set(Image.objects.filter(label=dog).values_list("pk", flat=True)) == {
        i.pk for i in images
    }
    events = LabelEvent.objects.filter(action=LabelEvent.Action.RELABEL, to_category=dog)
    assert events.count() == 3 and {e.actor for e in events} == {user}
    page = html(client.get(response["Location"]))
    assert "3 image(s) relabelled" in page


def test_category_merge_refused_to_reviewer(client, cat, dog):
    client.force_login(reviewer())
    assert client.get(row_url("category-merge", cat)).status_code == 403
    assert client.post(row_url("category-merge", cat), {"target": dog.pk}).status_code == 403
    assert Category.objects.filter(pk=cat.pk).exists()


def test_category_merge_into_another_projects_category_is_refused(client, cat, dog):
    stranger = CategoryFactory()
    client.force_login(approver())
    response = client.post(row_url("category-merge", cat), {"target": stranger.pk})
    assert response.status_code == 200
    assert "Select a valid choice." in html(response)
    assert Category.objects.filter(pk=cat.pk).exists()


# Delete -------------------------------------------------------------------------


def test_category_delete_of_empty_category_removes_its_row(client, cat):
    client.force_login(approver())
    response = client.post(row_url("category-delete", cat), **HTMX)
    assert response.status_code == 200
    assert response.content == b""
    assert not Category.objects.filter(pk=cat.pk).exists()


def test_category_delete_with_images_is_refused_in_the_row(client, project, cat):
    make_image(project, cat)
    client.force_login(approver())
    response = client.post(row_url("category-delete", cat), **HTMX)
    page = html(response)
    assert page.lstrip().startswith(f'<li id="category-row-{cat.pk}"')
    assert "still labels 1 image(s); merge it into another category instead." in page
    assert Category.objects.filter(pk=cat.pk).exists()


def test_category_delete_with_images_without_htmx_reports_error(client, project, cat):
    make_image(project, cat)
    client.force_login(approver())
    response = client.post(row_url("category-delete", cat), follow=True)
    assert "merge it into another category instead" in html(response)
    assert Category.objects.filter(pk=cat.pk).exists()


def test_category_delete_refused_to_reviewer(client, cat):
    client.force_login(reviewer())
    assert client.post(row_url("category-delete", cat)).status_code == 403
    assert Category.objects.filter(pk=cat.pk).exists()

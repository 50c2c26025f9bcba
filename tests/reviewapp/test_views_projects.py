"""Project list, project creation, the demo button, the project page and its settings."""

import re

import pytest
from django.urls import reverse

from reviewapp import demo, enqueue
from reviewapp.models import Image, Project
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


# Project list ---------------------------------------------------------------------


def test_project_list_sends_anonymous_to_login(client):
    response = client.get(reverse("project-list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_project_list_refuses_user_without_group(client):
    client.force_login(UserFactory())
    response = client.get(reverse("project-list"))
    assert response.status_code == 403
    page = html(response)
    assert "You cannot do this" in page
    assert "<code>reviewapp.view_project</code>" in page
    assert "You are in no group yet." in page
    assert "<em>approvers</em> or <em>reviewers</em>" in page


def test_403_names_the_missing_permission_and_keeps_the_project_nav(client):
    project = ProjectFactory(name="Bears")
    client.force_login(reviewer())
    response = client.get(reverse("project-settings", args=[project.slug]))
    assert response.status_code == 403
    page = html(response)
    assert "<code>reviewapp.change_project</code>" in page
    # A reviewer is not told to join the group she is in.
    assert "You are in <em>reviewers</em>, which does not include it." in page
    assert "add you to <em>approvers</em>" in page
    assert 'class="project-nav"' in page and "Back to Bears" in page


def test_project_list_shows_projects_with_active_image_counts(client):
    project = ProjectFactory(name="Bears")
    make_image(project)
    gone = make_image(project)
    Image.objects.filter(pk=gone.pk).update(status=Image.Status.DELETED)
    client.force_login(reviewer())
    response = client.get(reverse("project-list"))
    assert response.status_code == 200
    page = html(response)
    assert LAYOUT in page
    assert f'href="{project.get_absolute_url()}"' in page
    assert "<strong>1</strong> image" in page
    # Reviewers cannot create projects: no form, no demo button.
    assert reverse("project-create") not in page


def test_empty_project_list_offers_the_demo_to_approvers(client):
    client.force_login(approver())
    page = html(client.get(reverse("project-list")))
    assert "Add the digits demo project" in page
    assert reverse("demo-project-create") in page
    assert reverse("project-create") in page


def test_demo_button_stays_once_other_projects_exist(client):
    ProjectFactory(name="Birds")
    client.force_login(approver())
    page = html(client.get(reverse("project-list")))
    assert "Add the digits demo project" in page
    assert reverse("demo-project-create") in page


def test_demo_button_is_disabled_with_a_link_once_the_demo_exists(client):
    demo_project, _ = demo.demo_project_create()
    client.force_login(approver())
    page = html(client.get(reverse("project-list")))
    assert reverse("demo-project-create") not in page
    assert 'disabled aria-describedby="demo-exists"' in page
    assert f'Already added: <a href="{demo_project.get_absolute_url()}"' in page


def test_project_create_makes_the_project_and_opens_it(client):
    user = approver()
    client.force_login(user)
    response = client.post(
        reverse("project-create"),
        {
            "name": "Grizzly or black",
            "description": "Bears",
            "image_size": 192,
            "resize_method": "squish",
            "augment": "on",
            "valid_pct": 0.25,
            "split_seed": 7,
        },
    )
    project = Project.objects.get(name="Grizzly or black")
    assert response.status_code == 302
    assert response["Location"] == project.get_absolute_url()
    assert project.slug == "grizzly-or-black"
    assert (project.image_size, project.resize_method, project.augment) == (192, "squish", True)
    assert (project.valid_pct, project.split_seed, project.created_by) == (0.25, 7, user)


def test_project_create_with_taken_slug_shows_error_and_keeps_input(client):
    ProjectFactory(slug="bears")
    client.force_login(approver())
    response = client.post(
        reverse("project-create"),
        {
            "name": "More bears",
            "slug": "bears",
            "description": "keep me",
            "image_size": 224,
            "resize_method": "crop",
            "valid_pct": 0.2,
            "split_seed": 42,
        },
    )
    assert response.status_code == 200
    page = html(response)
    assert "The slug &#x27;bears&#x27; is already taken." in page
    assert 'value="More bears"' in page
    assert "keep me" in page
    assert Project.objects.filter(name="More bears").count() == 0


def test_project_create_with_invalid_values_shows_each_error(client):
    client.force_login(approver())
    response = client.post(
        reverse("project-create"),
        {
            "name": "",
            "image_size": 8,
            "resize_method": "stretch",
            "valid_pct": 0.9,
            "split_seed": 1,
        },
    )
    page = html(response)
    assert response.status_code == 200
    assert "This field is required." in page
    assert "Ensure this value is greater than or equal to 16." in page
    assert "Select a valid choice." in page
    assert "Ensure this value is less than or equal to 0.5." in page
    assert 'value="8"' in page
    # DataBlock errors open the collapsed settings so they can be seen.
    assert re.search(r'<details class="disclosure"\s+open>', page)
    assert not Project.objects.exists()


def test_project_create_by_reviewer_is_refused(client):
    client.force_login(reviewer())
    response = client.post(reverse("project-create"), {"name": "Nope"})
    assert response.status_code == 403
    assert not Project.objects.exists()


def test_demo_button_creates_demo_and_queues_its_import_after_commit(
    client, enqueued, django_capture_on_commit_callbacks
):
    client.force_login(approver())
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(reverse("demo-project-create"))
    project = Project.objects.get(slug=demo.DEMO_SLUG)
    assert response.status_code == 302
    assert response["Location"] == project.get_absolute_url()
    assert len(callbacks) == 1
    assert enqueued == [(enqueue.DEMO_BUILD, (project.pk,))]
    assert project.categories.count() == 10

    # The project page shows the import arriving and polls while it runs.
    page = html(client.get(response["Location"]))
    assert "Importing the demo digits" in page
    assert 'hx-trigger="every 1s"' in page


def test_demo_button_twice_does_not_queue_again(
    client, enqueued, django_capture_on_commit_callbacks
):
    demo.demo_project_create()
    client.force_login(approver())
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("demo-project-create"))
    assert response.status_code == 302
    assert enqueued == []
    assert Project.objects.filter(slug=demo.DEMO_SLUG).count() == 1


def test_demo_button_refused_to_reviewer(client):
    client.force_login(reviewer())
    assert client.post(reverse("demo-project-create")).status_code == 403
    assert not Project.objects.exists()


# Project page ---------------------------------------------------------------------


def test_project_detail_sends_anonymous_to_login(client):
    project = ProjectFactory()
    response = client.get(reverse("project-detail", args=[project.slug]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_project_detail_refuses_user_without_group(client):
    project = ProjectFactory()
    client.force_login(UserFactory())
    assert client.get(reverse("project-detail", args=[project.slug])).status_code == 403


def test_project_detail_unknown_slug_is_404(client):
    client.force_login(reviewer())
    assert client.get(reverse("project-detail", args=["nope"])).status_code == 404


def _expected_counts(project):
    counts = {}
    for image in Image.objects.filter(project=project, status=Image.Status.ACTIVE):
        key = (image.label.name if image.label else "(unlabeled)", image.split)
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_project_detail_counts_match_the_images(client):
    project = ProjectFactory()
    cats = CategoryFactory(project=project, name="cat", position=1)
    dogs = CategoryFactory(project=project, name="dog", position=2)
    for _ in range(7):
        make_image(project, cats)
    for _ in range(4):
        make_image(project, dogs)
    make_image(project)
    deleted = [make_image(project, cats), make_image(project, dogs)]
    Image.objects.filter(pk__in=[i.pk for i in deleted]).update(status=Image.Status.DELETED)

    client.force_login(reviewer())
    response = client.get(reverse("project-detail", args=[project.slug]))
    assert response.status_code == 200
    page = html(response)
    expected = _expected_counts(project)
    browser = reverse("image-browser", args=[project.slug])
    for name, label in (("cat", cats.pk), ("dog", dogs.pk), ("(unlabeled)", "none")):
        for split in ("train", "valid"):
            n = expected.get((name, split), 0)
            assert f'aria-label="{name}, {split}: {n}"' in page
            assert f'href="{browser}?label={label}&amp;split={split}"' in page
    train = sum(n for (_, split), n in expected.items() if split == "train")
    valid = sum(n for (_, split), n in expected.items() if split == "valid")
    assert train + valid == 12
    assert f'href="{browser}?split=train">{train}</a>' in page
    assert f'href="{browser}?split=valid">{valid}</a>' in page
    assert f'href="{browser}">12</a>' in page
    assert f'href="{browser}?status=deleted">2 images</a>' in page
    # Nothing is being imported: no polling.
    assert "every 1s" not in page


def test_project_detail_shows_settings_and_upload_panel(client):
    project = ProjectFactory(image_size=160, split_seed=9)
    client.force_login(approver())
    page = html(client.get(reverse("project-detail", args=[project.slug])))
    assert "160 × 160 px" in page
    assert "<dd>9</dd>" in page
    settings_url = reverse("project-settings", args=[project.slug])
    assert f'href="{settings_url}"' in page and f'hx-get="{settings_url}"' in page
    assert 'enctype="multipart/form-data"' in page
    assert reverse("image-upload", args=[project.slug]) in page


def test_project_detail_hides_settings_edit_from_reviewer(client):
    project = ProjectFactory()
    client.force_login(reviewer())
    page = html(client.get(reverse("project-detail", args=[project.slug])))
    assert reverse("project-settings", args=[project.slug]) not in page


def test_project_detail_htmx_returns_only_the_counts(client):
    project = ProjectFactory()
    make_image(project)
    client.force_login(reviewer())
    response = client.get(reverse("project-detail", args=[project.slug]), **HTMX)
    page = html(response)
    assert response.status_code == 200
    assert page.lstrip().startswith('<section id="project-counts"')
    assert LAYOUT not in page and "<html" not in page
    assert "HX-Request" in response["Vary"]


# Settings -------------------------------------------------------------------------


def test_project_settings_refused_to_reviewer(client):
    project = ProjectFactory()
    client.force_login(reviewer())
    url = reverse("project-settings", args=[project.slug])
    assert client.get(url).status_code == 403
    assert client.post(url, {"name": "x"}).status_code == 403


def test_project_settings_htmx_returns_the_form_partial_with_warning(client):
    project = ProjectFactory()
    client.force_login(approver())
    response = client.get(reverse("project-settings", args=[project.slug]), **HTMX)
    page = html(response)
    assert page.lstrip().startswith('<section id="project-settings-form"')
    assert LAYOUT not in page
    assert "re-splits every image" in page
    assert f'value="{project.name}"' in page


def test_project_settings_change_of_seed_resplits_images(client):
    project = ProjectFactory(valid_pct=0.2, split_seed=1)
    images = [make_image(project) for _ in range(30)]
    before = {i.pk: i.split for i in images}
    client.force_login(approver())
    response = client.post(
        reverse("project-settings", args=[project.slug]),
        {
            "name": project.name,
            "image_size": 128,
            "resize_method": "pad",
            "valid_pct": 0.5,
            "split_seed": 2,
        },
    )
    assert response.status_code == 302
    assert response["Location"] == project.get_absolute_url()
    project.refresh_from_db()
    assert (project.valid_pct, project.split_seed, project.image_size) == (0.5, 2, 128)
    assert project.augment is False  # an unticked box
    after = dict(Image.objects.filter(project=project).values_list("id", "split"))
    assert after != before
    for image in Image.objects.filter(project=project):
        assert image.split == project.split_for(image.sha256)
    page = html(client.get(response["Location"]))
    assert "Every image was re-assigned to train or valid." in page


def test_project_settings_invalid_input_is_kept_and_nothing_changes(client):
    project = ProjectFactory(valid_pct=0.2)
    client.force_login(approver())
    response = client.post(
        reverse("project-settings", args=[project.slug]),
        {
            "name": "Renamed",
            "image_size": 224,
            "resize_method": "crop",
            "valid_pct": 0.75,
            "split_seed": 3,
        },
    )
    page = html(response)
    assert response.status_code == 200
    assert "Ensure this value is less than or equal to 0.5." in page
    assert 'value="Renamed"' in page and 'value="0.75"' in page
    project.refresh_from_db()
    assert project.name != "Renamed"
    assert project.valid_pct == 0.2

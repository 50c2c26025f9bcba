"""Auto-advance: a visible toggle on the queues, remembered per reviewer."""

import pytest
from django.test import Client
from django.urls import reverse

from reviewapp import preferences
from reviewapp.models import ReviewerPreference
from tests.factories import ProjectFactory, UserFactory, reviewer

pytestmark = pytest.mark.django_db

URL = reverse("reviewer-auto-advance")
HTMX = {"HTTP_HX_REQUEST": "true"}


def test_default_is_on_and_reading_writes_nothing():
    rita = reviewer()
    assert preferences.reviewer_preference_get(user=rita).auto_advance is True
    assert not ReviewerPreference.objects.exists()


def test_toggle_off_then_on_through_htmx(client):
    rita = reviewer()
    client.force_login(rita)

    off = client.post(URL, {}, **HTMX)  # an unticked box sends nothing

    assert off.status_code == 200
    body = off.content.decode()
    assert 'id="auto-advance"' in body and 'id="site-header"' not in body
    assert "data-auto-advance checked" not in body and "Saved" in body
    assert ReviewerPreference.objects.get(user=rita).auto_advance is False

    client.post(URL, {"auto_advance": "1"}, **HTMX)
    assert ReviewerPreference.objects.get(user=rita).auto_advance is True
    assert ReviewerPreference.objects.count() == 1


def test_each_queue_shows_the_saved_choice(client):
    rita = reviewer()
    project = ProjectFactory()
    preferences.reviewer_preference_update(user=rita, auto_advance=False)
    client.force_login(rita)

    for name in ("review-queue", "label-queue"):
        page = client.get(reverse(name, args=[project.slug])).content.decode()
        if name == "review-queue":
            # No model yet: the review page still offers the toggle in its header.
            assert 'id="auto-advance"' in page
        assert 'name="auto_advance" value="1" data-auto-advance>' in page, name


def test_plain_form_post_goes_back_to_the_queue(client):
    client.force_login(reviewer())
    project = ProjectFactory()
    queue = reverse("label-queue", args=[project.slug])

    response = client.post(URL, {"next": queue})
    assert (response.status_code, response["Location"]) == (302, queue)
    outside = client.post(URL, {"next": "https://example.org/"})
    assert outside["Location"] == reverse("project-list")


def test_needs_login_permission_post_and_csrf():
    anonymous = Client()
    assert anonymous.post(URL, {}).status_code == 302
    viewer = Client()
    viewer.force_login(UserFactory())  # in no group: cannot decide, so nothing to advance
    assert viewer.post(URL, {}).status_code == 403
    rita = reviewer()
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(rita)
    assert checked.post(URL, {}).status_code == 403
    assert checked.get(URL).status_code == 405
    assert not ReviewerPreference.objects.exists()

"""The focus view: its permission, its partial (probabilities, history), decisions made in it,
and confirm/relabel from the image browser's cards and the image page."""

import re

import pytest
from django.urls import reverse

from reviewapp.models import Image, ImageScore, LabelEvent, QueueClaim
from tests.factories import (
    CategoryFactory,
    ProjectFactory,
    UserFactory,
    make_image,
    reviewer,
    scored_version,
    suggested_version,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'


def html(response) -> str:
    return response.content.decode()


@pytest.fixture
def world():
    """Two classes, three images; v1 scores them with uneven probabilities."""
    project = ProjectFactory(slug="bears")
    black = CategoryFactory(project=project, name="black", hotkey="1")
    grizzly = CategoryFactory(project=project, name="grizzly", hotkey="2")
    images = [make_image(project, grizzly), make_image(project, black), make_image(project, black)]
    version = scored_version(project, [(image, black, 1.0) for image in images])
    # scored_version orders its vocab by name: black, grizzly.
    ImageScore.objects.filter(version=version, image=images[0]).update(probabilities=[0.8, 0.2])
    return project, version, black, grizzly, images


@pytest.fixture
def rita(client):
    client.force_login(reviewer(username="rita"))
    return client


def focus_url(project, image, **params) -> str:
    url = reverse("image-focus", args=[project.slug, image.pk])
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}?{query}" if query else url


def decide(client, image, **data):
    image.refresh_from_db()
    payload = {"revision": image.revision, **data}
    return client.post(reverse("image-decide", args=[image.pk]), payload, **HTMX)


def test_focus_needs_login_and_permission(client, world):
    project, version, _, _, images = world
    url = focus_url(project, images[0], version=version.pk)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    client.force_login(UserFactory())
    assert client.get(url, **HTMX).status_code == 403


def test_reviewer_gets_only_the_partial_over_htmx(rita, world):
    project, version, _, _, images = world
    response = rita.get(focus_url(project, images[0], version=version.pk), **HTMX)
    assert response.status_code == 200
    body = html(response)
    assert body.lstrip().startswith('<section id="focus-view"')
    assert LAYOUT not in body
    # Without htmx the same URL is a page of its own.
    assert LAYOUT in html(rita.get(focus_url(project, images[0], version=version.pk)))


def test_another_projects_image_or_version_is_404(rita, world):
    project, version, black, _, _ = world
    other = ProjectFactory(slug="elsewhere")
    stranger = make_image(other, CategoryFactory(project=other, name="owl"))
    assert rita.get(focus_url(project, stranger, version=version.pk), **HTMX).status_code == 404
    other_version = scored_version(other, [(stranger, stranger.label, 0.5)])
    image = Image.objects.filter(project=project).first()
    assert rita.get(focus_url(project, image, version=other_version.pk)).status_code == 404


def bars(body: str) -> list[tuple[str, str]]:
    """(class name, shown probability) per bar, in the order shown."""
    found = re.findall(
        r'<li class="prob-bar[^"]*">\s*<span class="prob-bar__name">(?:<kbd>\w</kbd> )?(\w+)'
        r'.*?<span class="prob-bar__value[^"]*">([^<]+)</span>',
        body,
        flags=re.S,
    )
    return [(name, value.strip()) for name, value in found]


def test_partial_shows_every_class_probability_highest_first(rita, world):
    project, version, black, grizzly, images = world
    body = html(rita.get(focus_url(project, images[0], version=version.pk), **HTMX))
    assert bars(body) == [("black", "80.0%"), ("grizzly", "20.0%")]
    assert "width: 80%" in body and "width: 20%" in body
    # A class added after the version was trained has a bar without a probability.
    CategoryFactory(project=project, name="panda", hotkey="3")
    body = html(rita.get(focus_url(project, images[0], version=version.pk), **HTMX))
    assert bars(body) == [("black", "80.0%"), ("grizzly", "20.0%"), ("panda", "—")]


def test_partial_without_a_score_says_so(rita, world):
    project, version, _, _, images = world
    ImageScore.objects.filter(image=images[1]).delete()
    body = html(rita.get(focus_url(project, images[1], version=version.pk), **HTMX))
    assert "v1 has not scored this image." in body
    assert 'class="prob-bars"' not in body


def test_partial_shows_the_history_newest_first_with_undone_marked(rita, world):
    project, version, black, grizzly, images = world
    image = images[0]
    decide(rita, image, label=black.pk, version=version.pk)
    image.refresh_from_db()
    rita.post(reverse("image-undo", args=[image.pk]), {"revision": image.revision}, **HTMX)
    decide(rita, image, action="confirm", version=version.pk)
    body = html(rita.get(focus_url(project, image, version=version.pk), **HTMX))
    history = re.search(r"data-focus-history>(.*?)</ul>", body, flags=re.S)[1]
    items = re.findall(r"<li( class=\"undone\")?>(\w+)", history)
    assert items == [("", "Confirm"), ("", "Undo"), (' class="undone"', "Relabel")]
    assert "Import" not in history


def test_neighbours_from_the_client_become_prev_and_next_links(rita, world):
    project, version, _, _, images = world
    url = focus_url(
        project, images[1], version=version.pk, prev_id=images[0].pk, next_id=images[2].pk
    )
    body = html(rita.get(url, **HTMX))
    prev_href = reverse("image-focus", args=[project.slug, images[0].pk])
    next_href = reverse("image-focus", args=[project.slug, images[2].pk])
    assert f'href="{prev_href}?version={version.pk}" data-focus-step="-1"' in body
    assert f'href="{next_href}?version={version.pk}" data-focus-step="1"' in body
    # Nonsense neighbours are left out, not errors.
    body = html(rita.get(focus_url(project, images[1], prev_id="x", next_id="-3"), **HTMX))
    assert "data-focus-step" not in body


def test_focus_reads_a_fixed_number_of_queries(rita, world, django_assert_max_num_queries):
    """Session and permissions (4), project, version, then image, classes, score, events."""
    project, version, _, _, images = world
    with django_assert_max_num_queries(10):
        rita.get(focus_url(project, images[0], version=version.pk), **HTMX)


def test_relabel_in_the_focus_view_answers_with_the_view_and_the_card(rita, world):
    project, version, black, grizzly, images = world
    image = images[0]
    response = decide(
        rita,
        image,
        label=black.pk,
        version=version.pk,
        view="focus",
        card="review",
        next_id=images[1].pk,
    )
    assert response.status_code == 200
    body = html(response)
    assert body.lstrip().startswith('<section id="focus-view"')
    assert '<span class="saved" role="status">Saved</span>' in body
    assert f'name="next_id" value="{images[1].pk}"' in body
    # The queue's card, out of band, with the new label.
    card = re.search(r'<article id="review-card-(\d+)" hx-swap-oob="true"', body)
    assert card and int(card[1]) == image.pk
    image.refresh_from_db()
    assert image.label == black and image.revision == 2
    assert f'name="revision" value="{image.revision}"' in body
    assert response["HX-Trigger"] == "review-decided"


@pytest.fixture
def unlabeled(world):
    """An unlabeled image that v2 suggests grizzly for, at 70 %."""
    project, _, black, grizzly, _ = world
    image = make_image(project)
    version = suggested_version(project, [(image, grizzly, 0.7, 0.4)])
    return project, version, black, grizzly, image


def test_an_unlabeled_image_shows_its_suggestion_bars_and_an_accept_key(rita, unlabeled):
    project, version, black, grizzly, image = unlabeled
    response = rita.get(focus_url(project, image, version=version.pk, card="label"), **HTMX)

    body = html(response)
    assert "<dt>Suggested</dt><dd><strong>grizzly</strong> 70%" in body
    bars = re.findall(r'<span class="prob-bar__value">([^<]+)</span>', body)
    assert bars == ["70.0%", "30.0%"]  # grizzly, then black
    assert f'name="label" value="{grizzly.pk}" class="button button--primary" data-key="c"' in body
    assert 'aria-label="Label as"' in body and "Confirm" not in body
    assert 'name="card" value="label"' in body


def test_a_label_from_the_focus_view_answers_with_the_label_card_and_renews_the_claim(
    rita, unlabeled
):
    project, version, black, grizzly, image = unlabeled
    rita.get(reverse("label-queue", args=[project.slug]))  # claims the card
    claim = QueueClaim.objects.get(image=image, queue=QueueClaim.Queue.LABEL)
    QueueClaim.objects.filter(pk=claim.pk).update(expires_at=claim.expires_at.replace(year=2001))

    response = decide(rita, image, label=grizzly.pk, version=version.pk, view="focus", card="label")

    assert response.status_code == 200
    body = html(response)
    assert body.lstrip().startswith('<section id="focus-view"')
    card = re.search(r'<article id="label-card-(\d+)" hx-swap-oob="true"', body)
    assert card and int(card[1]) == image.pk
    assert '<article id="review-card-' not in body  # not the review queue's card
    image.refresh_from_db()
    assert image.label == grizzly
    assert LabelEvent.objects.filter(image=image, action="label", version=version).exists()
    renewed = QueueClaim.objects.filter(pk=claim.pk).values_list("expires_at", flat=True).first()
    assert renewed is None or renewed.year > 2001  # a claim on a labeled card may be gone


def test_a_stale_decision_in_the_focus_view_is_refused_and_shows_the_current_state(rita, world):
    project, version, black, grizzly, images = world
    image = images[0]
    stale = image.revision
    decide(rita, image, label=black.pk, version=version.pk)  # someone else, meanwhile
    response = rita.post(
        reverse("image-decide", args=[image.pk]),
        {"revision": stale, "label": grizzly.pk, "version": version.pk, "view": "focus"},
        **HTMX,
    )
    assert response.status_code == 409
    body = html(response)
    assert 'class="notice notice--error focus-view__error"' in body
    assert f'Image #{image.pk} <span class="muted">black</span>' in body
    assert "hx-swap-oob" not in body  # not opened over a card: nothing else to update
    assert Image.objects.get(pk=image.pk).label == black


def test_undo_in_the_focus_view(rita, world):
    project, version, black, _, images = world
    image = images[0]
    decide(rita, image, label=black.pk, version=version.pk)
    image.refresh_from_db()
    response = rita.post(
        reverse("image-undo", args=[image.pk]),
        {"revision": image.revision, "version": version.pk, "view": "focus"},
        **HTMX,
    )
    assert response.status_code == 200
    assert '<span class="saved" role="status">Undone</span>' in html(response)
    assert Image.objects.get(pk=image.pk).label.name == "grizzly"


def test_image_browser_cards_confirm_and_relabel(rita, world):
    project, version, black, grizzly, images = world
    grid = html(rita.get(reverse("image-browser", args=[project.slug])))
    assert f'id="image-thumb-{images[0].pk}"' in grid and 'name="view" value="thumb"' in grid
    image = images[0]
    response = decide(rita, image, label=black.pk, action="relabel", view="thumb")
    assert response.status_code == 200
    body = html(response)
    assert body.lstrip().startswith(f'<li id="image-thumb-{image.pk}"')
    assert '<span class="thumb__label">black</span>' in body
    response = decide(rita, image, action="confirm", view="thumb")
    assert LabelEvent.objects.filter(image=image).latest("id").action == "confirm"
    # A stale revision is refused on the card.
    response = rita.post(
        reverse("image-decide", args=[image.pk]),
        {"revision": 1, "label": grizzly.pk, "action": "relabel", "view": "thumb"},
        **HTMX,
    )
    assert response.status_code == 409
    assert "thumb__error" in html(response)
    assert Image.objects.get(pk=image.pk).label == black


def test_image_page_confirms_and_relabels_with_a_plain_form(rita, world):
    project, version, black, grizzly, images = world
    image = images[0]
    page = html(rita.get(image.get_absolute_url()))
    assert "Confirm grizzly" in page and 'id="image-relabel"' in page
    url = reverse("image-decide", args=[image.pk])
    next_url = image.get_absolute_url()
    response = rita.post(
        url, {"revision": 1, "label": black.pk, "action": "relabel", "next": next_url}
    )
    assert response.status_code == 302 and response["Location"] == next_url
    assert Image.objects.get(pk=image.pk).label == black
    # The same form, now stale: refused, and the message says so.
    response = rita.post(url, {"revision": 1, "action": "confirm", "next": next_url}, follow=True)
    assert Image.objects.get(pk=image.pk).revision == 2
    assert "notice" in html(response) or "messages" in html(response)
    assert not LabelEvent.objects.filter(image=image, action="confirm").exists()

"""The review queue: ordering, filters, card actions through htmx, conflicts, undo, bulk."""

import re

import pytest
from django.urls import reverse

from reviewapp.models import Image, LabelEvent, TrainingRun
from tests.factories import (
    CategoryFactory,
    ProjectFactory,
    UserFactory,
    make_image,
    reviewer,
    scored_version,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'


def html(response) -> str:
    return response.content.decode()


def card_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'<article id="review-card-(\d+)"', html(response))]


@pytest.fixture
def queue():
    """Six images, two classes; v1 got the first two wrong, with the highest losses."""
    project = ProjectFactory()
    grizzly = CategoryFactory(project=project, name="grizzly", hotkey="1")
    black = CategoryFactory(project=project, name="black", hotkey="2")
    images = []
    for n in range(6):
        image = make_image(project, grizzly if n % 2 == 0 else black)
        Image.objects.filter(pk=image.pk).update(split="valid" if n < 3 else "train")
        image.refresh_from_db()
        images.append(image)
    losses = [6.0, 5.0, 0.6, 0.3, 0.2, 0.1]
    scores = [
        (image, (black if image.label == grizzly else grizzly) if n < 2 else image.label, loss)
        for n, (image, loss) in enumerate(zip(images, losses, strict=True))
    ]
    version = scored_version(project, scores)
    return project, version, grizzly, black, images


@pytest.fixture
def rita(client):
    client.force_login(reviewer(username="rita"))
    return client


def queue_url(project, **params) -> str:
    url = reverse("review-queue", args=[project.slug])
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}?{query}" if query else url


def decide(client, image, **data):
    image.refresh_from_db()
    payload = {"revision": image.revision, **data}
    return client.post(reverse("image-decide", args=[image.pk]), payload, **HTMX)


def test_queue_needs_login_and_permission(client, queue):
    project = queue[0]
    assert client.get(queue_url(project)).status_code == 302
    client.force_login(UserFactory())
    assert client.get(queue_url(project)).status_code == 403
    image = queue[4][0]
    assert decide(client, image, action="delete").status_code == 403
    assert Image.objects.get(pk=image.pk).status == Image.Status.ACTIVE


def test_queue_shows_the_latest_version_highest_loss_first(rita, queue):
    project, version, _, _, images = queue

    response = rita.get(queue_url(project))

    page = html(response)
    assert card_ids(response) == [image.pk for image in images]
    assert "<strong>0</strong> of 2 flagged reviewed" in page  # the two predicted wrong
    assert "in-sample (train)" in page
    assert 'src="/static/js/review.js"' in page


def test_filters_by_class_split_and_minimum_loss(rita, queue):
    project, version, grizzly, black, images = queue

    by_class = card_ids(rita.get(queue_url(project, label=grizzly.pk)))
    by_split = card_ids(rita.get(queue_url(project, split="train")))
    by_loss = card_ids(rita.get(queue_url(project, min_loss="4.5")))
    by_predicted = card_ids(rita.get(queue_url(project, predicted=grizzly.pk, label=black.pk)))

    assert by_class == [images[0].pk, images[2].pk, images[4].pk]
    assert by_split == [images[3].pk, images[4].pk, images[5].pk]
    assert by_loss == [images[0].pk, images[1].pk]
    assert by_predicted == [images[1].pk]


def test_an_htmx_filter_change_returns_only_the_list(rita, queue):
    project = queue[0]

    response = rita.get(queue_url(project, split="valid"), **HTMX)

    page = html(response)
    assert LAYOUT not in page and page.strip().startswith('<section id="review-list"')
    assert len(card_ids(response)) == 3


def test_pages_go_on_by_keyset_without_repeats(rita, queue, monkeypatch):
    from reviewapp.views import review

    monkeypatch.setattr(review, "PAGE_SIZE", 4)
    project, _, _, _, images = queue

    first = rita.get(queue_url(project))
    next_url = re.search(r'href="([^"]*after=[^"]*)"', html(first)).group(1).replace("&amp;", "&")
    second = rita.get(next_url)

    assert card_ids(first) + card_ids(second) == [image.pk for image in images]


def test_relabel_from_a_card_saves_at_once_and_returns_the_card(rita, queue):
    project, version, grizzly, black, images = queue
    image = images[0]  # grizzly, predicted black

    response = decide(rita, image, label=black.pk, version=version.pk)

    page = html(response)
    assert response.status_code == 200 and LAYOUT not in page
    assert page.strip().startswith(f'<article id="review-card-{image.pk}"')
    assert "Saved" in page and "<strong>black</strong>" in page
    image.refresh_from_db()
    assert image.label == black and image.reviewed_at is not None
    event = image.events.latest("id")
    assert (event.action, event.version_id, event.actor.username) == ("relabel", version.pk, "rita")


def test_confirm_and_delete_from_a_card(rita, queue):
    _, _, _, _, images = queue

    decide(rita, images[2], action="confirm")
    decide(rita, images[3], action="delete")

    assert images[2].events.latest("id").action == LabelEvent.Action.CONFIRM
    assert Image.objects.get(pk=images[3].pk).status == Image.Status.DELETED


def test_decisions_survive_a_filter_switch_and_count_in_progress(rita, queue):
    project, _, grizzly, black, images = queue
    decide(rita, images[0], label=black.pk)
    decide(rita, images[1], action="confirm")

    rita.get(queue_url(project, label=grizzly.pk))  # switch filters
    page = html(rita.get(queue_url(project)))

    assert "<strong>2</strong> of 2 flagged reviewed" in page
    assert Image.objects.get(pk=images[0].pk).label == black
    assert html(rita.get(queue_url(project, reviewed="no"))).count("<article") == 4


def test_a_stale_action_is_refused_with_the_current_label(rita, queue, client):
    _, _, grizzly, black, images = queue
    image = images[0]
    seen = image.revision
    other = reviewer(username="otto")
    client.force_login(other)
    decide(client, image, label=black.pk)

    response = rita.post(
        reverse("image-decide", args=[image.pk]),
        {"revision": seen, "action": "delete"},
        **HTMX,
    )

    page = html(response)
    assert response.status_code == 409
    assert "changed by otto (relabel)" in page and "now labeled &#x27;black&#x27;" in page
    assert "<strong>black</strong>" in page  # the card shows the current state
    assert Image.objects.get(pk=image.pk).status == Image.Status.ACTIVE


def test_undo_from_a_card_reverts_and_keeps_the_card(rita, queue):
    _, _, grizzly, black, images = queue
    image = images[0]
    decide(rita, image, label=black.pk)
    image.refresh_from_db()

    response = rita.post(
        reverse("image-undo", args=[image.pk]), {"revision": image.revision}, **HTMX
    )

    assert response.status_code == 200 and "Undone" in html(response)
    image.refresh_from_db()
    assert image.label == grizzly and image.reviewed_at is None


def test_an_impossible_action_shows_its_reason_on_the_card(rita, queue):
    image = queue[4][0]
    decide(rita, image, action="delete")

    response = decide(rita, image, action="delete")

    assert response.status_code == 400 and "already in the trash" in html(response)


def test_a_plain_form_post_redirects_back_with_a_message(rita, queue):
    project, _, _, black, images = queue
    image = images[1]
    back = queue_url(project, split="valid")

    response = rita.post(
        reverse("image-decide", args=[image.pk]),
        {"revision": image.revision, "action": "confirm", "next": back},
    )

    assert response.status_code == 302 and response["Location"] == back
    evil = rita.post(
        reverse("image-decide", args=[image.pk]),
        {"revision": 1, "action": "confirm", "next": "https://evil.example/"},
    )
    assert evil["Location"] == image.get_absolute_url()


def test_bulk_relabel_applies_to_the_selected_and_reports_stale_ones(rita, queue):
    project, version, grizzly, black, images = queue
    fresh, stale = images[2], images[4]

    response = rita.post(
        reverse("review-bulk", args=[project.slug]),
        {
            "version": version.pk,
            "action": "relabel",
            "label": black.pk,
            "selected": [f"{fresh.pk}:{fresh.revision}", f"{stale.pk}:{stale.revision + 1}"],
            "next": queue_url(project),
        },
        follow=True,
    )

    page = html(response)
    assert "1 of 2 selected image(s) updated." in page
    assert f"Image #{stale.pk}: Image #{stale.pk} was changed" in page
    assert Image.objects.get(pk=fresh.pk).label == black
    assert Image.objects.get(pk=stale.pk).label == grizzly


def test_bulk_ignores_images_of_other_projects(rita, queue):
    project, version, _, _, _ = queue
    stranger = make_image(ProjectFactory(), None)

    rita.post(
        reverse("review-bulk", args=[project.slug]),
        {"version": version.pk, "action": "delete", "selected": [f"{stranger.pk}:1"]},
    )

    assert Image.objects.get(pk=stranger.pk).status == Image.Status.ACTIVE


def test_queue_query_count_does_not_grow_with_the_page(rita, queue, django_assert_max_num_queries):
    project, version, _, black, images = queue
    for image in images:
        decide(rita, image, action="confirm")

    # Claiming the page's first cards costs a fixed six (read, savepoint, clear, insert,
    # renew, release), whatever the page's size.
    with django_assert_max_num_queries(14 + 6):
        response = rita.get(queue_url(project))
    assert len(card_ids(response)) == 6


def test_an_unknown_version_is_404_and_no_version_explains(rita, queue):
    project = queue[0]
    assert rita.get(queue_url(project, version=999999)).status_code == 404
    empty = ProjectFactory()

    page = html(rita.get(queue_url(empty)))

    assert "There is no model to review with yet" in page


def test_retrain_queues_a_run_with_the_last_settings(rita, queue, enqueued):
    project, version, _, _, _ = queue
    last = TrainingRun.objects.create(
        project=project, status="succeeded", config={"epochs": 7, "image_size": 48}
    )
    version.run = last
    version.save()

    response = rita.post(reverse("training-run-retrain", args=[project.slug]))

    run = TrainingRun.objects.latest("id")
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    assert run.config["epochs"] == 7 and run.config["image_size"] == 48


def test_a_decision_tells_the_progress_line_to_count_again(rita, queue):
    project, version, _, black, images = queue

    response = decide(rita, images[0], label=black.pk)
    assert response["HX-Trigger"] == "review-decided"

    progress = rita.get(queue_url(project, version=version.pk, part="progress"), **HTMX)
    page = html(progress)
    assert page.strip().startswith('<div id="review-progress"')
    assert "<strong>1</strong> of 2 flagged reviewed" in page and "<article" not in page


def test_a_plain_restore_says_it_worked(rita, queue):
    project, _, _, _, images = queue
    image = images[5]
    decide(rita, image, action="delete")
    image.refresh_from_db()
    trash = reverse("project-trash", args=[project.slug])

    response = rita.post(
        reverse("image-decide", args=[image.pk]),
        {"revision": image.revision, "action": "restore", "next": trash},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == trash
    assert f"Image #{image.pk}: restored from the trash." in html(response)


def test_an_undo_without_a_revision_says_so(rita, queue):
    image = queue[4][0]
    decide(rita, image, action="confirm")

    response = rita.post(reverse("image-undo", args=[image.pk]), {}, **HTMX)

    assert response.status_code == 400
    assert "did not say which revision" in html(response)
    assert image.events.latest("id").action == LabelEvent.Action.CONFIRM


@pytest.mark.parametrize(
    "scope",
    [
        {},
        {"split": "valid"},
        {"split": "train"},
        {"label": "grizzly"},
        {"label": "black", "split": "valid"},
        {"predicted": "grizzly"},
        {"label": "grizzly", "predicted": "black", "split": "valid"},
    ],
)
def test_progress_adds_up_the_kept_flag_counts_as_a_count_would(queue, scope):
    """The counts kept when a version is scored give what counting its scores gives."""
    from reviewapp.selectors import ReviewFilters, review_progress

    project, version, grizzly, black, images = queue
    by_name = {"grizzly": grizzly.pk, "black": black.pk}
    filters = ReviewFilters(
        label=by_name.get(scope.get("label")),
        predicted=by_name.get(scope.get("predicted")),
        split=scope.get("split", ""),
    )
    LabelEvent.objects.all().delete()
    Image.objects.filter(pk=images[0].pk).update(reviewed_at="2026-01-01T00:00Z")
    kept = review_progress(version=version, filters=filters)
    version.flag_counts = None  # as a version scored before the counts were kept
    counted = review_progress(version=version, filters=filters)

    assert kept == counted
    if not scope:
        assert (kept.flagged, kept.reviewed) == (2, 1)  # the two predicted wrong

"""Labeling new images: suggestions after training, the Label queue's orders, claims, bulk
accept, undo, the API and the pages."""

from datetime import timedelta

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from reviewapp import enqueue, labeling, services, training
from reviewapp.models import Image, LabelEvent, QueueClaim, Suggestion, TrainingRun
from tests.factories import (
    TINY_TRAINING,
    CategoryFactory,
    ProjectFactory,
    make_image,
    reviewer,
    suggested_version,
    trainable_project,
)
from tests.images import image_bytes
from trainer.suggest import EMBEDDING_DIM

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    """Two classes and six unlabeled images with suggestions of known confidence."""
    project = ProjectFactory(claim_size=3)
    cat = CategoryFactory(project=project, name="cat")
    dog = CategoryFactory(project=project, name="dog")
    images = [make_image(project) for _ in range(6)]
    # confidence, margin: image 0 is the least sure, image 5 the surest.
    rows = [
        (image, cat if n % 2 else dog, 0.5 + n * 0.09, 0.05 + n * 0.15)
        for n, image in enumerate(images)
    ]
    version = suggested_version(project, rows)
    return project, version, images, {"cat": cat, "dog": dog}


def queue_ids(project, user, strategy, **kwargs):
    queue = labeling.label_queue(project=project, user=user, strategy=strategy, **kwargs)
    return [card.image.pk for card in queue.cards]


# Scoring after training ------------------------------------------------------------------


def test_a_run_suggests_labels_for_every_active_unlabeled_image():
    project = trainable_project(per_class=6)
    loose = [make_image(project, None, color=(220, 40, 40), size=(24, 20)) for _ in range(3)]
    deleted = make_image(project, None)
    Image.objects.filter(pk=deleted.pk).update(status=Image.Status.DELETED)
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    phases = []

    training.training_run_execute(run_id=run.pk, on_progress=lambda r: phases.append(r.phase))

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    assert TrainingRun.Phase.SUGGESTING in phases
    suggestions = {s.image_id: s for s in Suggestion.objects.filter(version=run.version)}
    assert set(suggestions) == {image.pk for image in loose}
    for s in suggestions.values():
        assert sum(s.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert s.confidence == pytest.approx(max(s.probabilities))
        top = sorted(s.probabilities)
        assert s.margin == pytest.approx(top[-1] - top[-2], abs=1e-6)
        assert s.predicted.name in {"red", "blue"}
        assert len(np.frombuffer(bytes(s.embedding), dtype=np.float32)) == EMBEDDING_DIM
    assert sorted(s.diverse_rank for s in suggestions.values()) == [0, 1, 2]
    run.version.refresh_from_db()
    assert run.version.suggestion_centres
    assert labeling.suggestion_counts(run.version)[0][1] >= 1


def test_images_uploaded_later_are_scored_by_the_latest_version_in_a_job(
    enqueued, django_capture_on_commit_callbacks
):
    project = trainable_project(per_class=6)
    make_image(project, None)
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    training.training_run_execute(run_id=run.pk)

    with django_capture_on_commit_callbacks(execute=True):
        results = services.uploads_ingest(
            project=project, uploads=[("new.png", _file(image_bytes(seed=999)))]
        )

    assert enqueued.ids(enqueue.SUGGESTIONS_REFRESH) == [project.pk]
    assert labeling.suggestions_refresh(project_id=project.pk) == 1
    new = Suggestion.objects.get(image_id=results[0].image_id)
    assert new.version == run.version
    assert labeling.suggestions_refresh(project_id=project.pk) == 0  # nothing left to do
    ranks = Suggestion.objects.filter(version=run.version).values_list("diverse_rank", flat=True)
    assert sorted(ranks) == [0, 1]


def test_labeled_uploads_queue_no_suggestion_job(enqueued, django_capture_on_commit_callbacks):
    project = trainable_project(per_class=2)
    suggested_version(project, [])

    with django_capture_on_commit_callbacks(execute=True):
        services.uploads_ingest(
            project=project,
            uploads=[("new.png", _file(image_bytes(seed=998)))],
            label=project.categories.first(),
        )

    assert enqueued.ids(enqueue.SUGGESTIONS_REFRESH) == []


def _file(data):
    import io

    return io.BytesIO(data)


# Orders ---------------------------------------------------------------------------------


def test_each_strategy_orders_the_cards(world):
    project, version, images, _ = world
    ids = [image.pk for image in images]
    user = reviewer()

    def first(strategy):
        QueueClaim.objects.all().delete()
        return queue_ids(project, user, strategy, limit=6)

    assert first("uncertainty") == ids  # smallest margin first
    assert first("confident") == ids[::-1]  # highest confidence first
    assert first("diverse") == ids  # diverse_rank as stored
    assert first("random") == ids[::-1]  # random_key as stored


def test_an_unknown_strategy_names_the_valid_ones(world):
    project, *_ = world

    with pytest.raises(ValidationError, match="uncertainty, diverse, confident, random"):
        labeling.label_queue(project=project, user=reviewer(), strategy="loudest")


def test_without_a_version_the_queue_is_upload_order_without_suggestions():
    project = ProjectFactory()
    images = [make_image(project) for _ in range(3)]

    queue = labeling.label_queue(project=project, user=reviewer())

    assert [c.image.pk for c in queue.cards] == [i.pk for i in images]
    assert queue.version is None and all(c.suggestion is None for c in queue.cards)


def test_a_labeled_image_leaves_the_queue_and_an_undo_brings_it_back(world):
    project, version, images, cats = world
    user = reviewer()
    image = images[0]

    services.image_decide(
        image_id=image.pk, action="relabel", actor=user, revision=image.revision, label=cats["cat"]
    )
    assert image.pk not in queue_ids(project, user, "uncertainty", limit=6)
    assert not QueueClaim.objects.filter(image=image).exists()

    image.refresh_from_db()
    services.image_decision_undo(image_id=image.pk, actor=user, revision=image.revision)
    assert queue_ids(project, user, "uncertainty", limit=6)[0] == image.pk


# Claims ---------------------------------------------------------------------------------


def test_two_labelers_never_get_the_same_cards(world):
    project, version, images, _ = world
    ann, bob = reviewer(), reviewer()

    first = queue_ids(project, ann, "uncertainty")
    second = queue_ids(project, bob, "uncertainty")

    assert first == [i.pk for i in images[:3]]  # the claim size
    assert second == [i.pk for i in images[3:]]
    queue = labeling.label_queue(project=project, user=bob, strategy="uncertainty")
    assert queue.claimed_by_others == [(ann.username, 3)]
    assert queue_ids(project, ann, "uncertainty") == first  # reopening keeps them


def test_a_claim_expires_and_the_cards_go_to_others(world):
    project, version, images, _ = world
    ann, bob = reviewer(), reviewer()
    queue_ids(project, ann, "uncertainty")
    QueueClaim.objects.filter(user=ann).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert queue_ids(project, bob, "uncertainty") == [i.pk for i in images[:3]]


def test_leaving_releases_the_cards_unless_a_newer_page_claimed_them(world, client):
    project, version, images, _ = world
    ann, bob = reviewer(), reviewer()
    client.force_login(ann)
    page = client.get(reverse("label-queue", args=[project.slug]))
    loaded = page.context["queue"].loaded_at
    client.get(reverse("label-queue", args=[project.slug]))  # a reload claims them afresh

    late = client.post(
        reverse("label-claims-release", args=[project.slug]), {"loaded_at": loaded.isoformat()}
    )

    assert late.status_code == 204
    assert QueueClaim.objects.filter(user=ann).count() == 3
    client.post(reverse("label-claims-release", args=[project.slug]))
    assert not QueueClaim.objects.filter(user=ann).exists()
    assert queue_ids(project, bob, "uncertainty") == [i.pk for i in images[:3]]


def test_working_renews_the_claim(world, client):
    project, version, images, _ = world
    ann = reviewer()
    queue_ids(project, ann, "uncertainty")
    QueueClaim.objects.update(expires_at=timezone.now() + timedelta(seconds=5))
    client.force_login(ann)

    response = client.post(reverse("label-claims-renew", args=[project.slug]))

    assert response.status_code == 204
    expiry = QueueClaim.objects.order_by("expires_at").first().expires_at
    assert expiry > timezone.now() + timedelta(minutes=project.claim_minutes - 1)


def test_a_decision_on_someone_elses_card_works_and_names_the_holder(world):
    project, version, images, cats = world
    ann, bob = reviewer(), reviewer()
    queue_ids(project, ann, "uncertainty")
    image = images[0]

    event = services.image_decide(
        image_id=image.pk, action="relabel", actor=bob, revision=image.revision, label=cats["dog"]
    )

    assert event.action == LabelEvent.Action.LABEL and event.claimed_by == ann
    mine = services.image_decide(
        image_id=images[1].pk,
        action="relabel",
        actor=ann,
        revision=images[1].revision,
        label=cats["dog"],
    )
    assert mine.claimed_by is None


# Accepting suggestions -------------------------------------------------------------------


def test_accept_every_suggestion_above_a_confidence_after_a_preview(world, client):
    project, version, images, cats = world
    client.force_login(reviewer())
    url = reverse("label-queue", args=[project.slug])

    preview = client.get(url, {"min_confidence": "0.75"}).context["preview"]
    assert preview["count"] == 3 and len(preview["sample"]) == 3  # 0.77, 0.86 and 0.95
    response = client.post(
        reverse("label-accept-above", args=[project.slug]),
        {"min_confidence": "0.75", "expected": "3"},
    )

    assert response.status_code == 302
    labeled = {i.pk: i.label_id for i in Image.objects.filter(label__isnull=False)}
    expected = {
        s.image_id: s.predicted_id for s in version.suggestions.filter(confidence__gte=0.75)
    }
    assert labeled == expected
    events = LabelEvent.objects.filter(action=LabelEvent.Action.LABEL)
    assert events.count() == 3 and all(e.version_id == version.pk for e in events)


def test_accept_above_refuses_when_the_set_changed_since_the_preview(world, client):
    project, version, images, cats = world
    client.force_login(reviewer())

    response = client.post(
        reverse("label-accept-above", args=[project.slug]),
        {"min_confidence": "0.8", "expected": "7"},
    )

    assert response.status_code == 302 and "min_confidence=0.8" in response["Location"]
    assert not Image.objects.filter(label__isnull=False).exists()


def test_accept_the_selected_cards_and_refuse_a_stale_one(world, client):
    project, version, images, cats = world
    client.force_login(reviewer())
    a, b = images[0], images[1]

    client.post(
        reverse("label-accept", args=[project.slug]),
        {"selected": [f"{a.pk}:{a.revision}", f"{b.pk}:{b.revision - 1}"]},
    )

    a.refresh_from_db()
    b.refresh_from_db()
    assert a.label_id == version.suggestions.get(image=a).predicted_id
    assert b.label_id is None  # stale revision: refused


def test_labeling_a_card_with_a_stale_revision_is_409_with_the_current_card(world, client):
    project, version, images, cats = world
    client.force_login(reviewer())
    image = images[0]

    response = client.post(
        reverse("image-decide", args=[image.pk]),
        {"label": cats["cat"].pk, "revision": image.revision - 1, "queue": "label"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 409
    body = response.content.decode()
    assert f'id="label-card-{image.pk}"' in body and "review-card__error" in body


def test_labeling_a_card_answers_with_the_label_card(world, client):
    project, version, images, cats = world
    client.force_login(reviewer())
    image = images[0]

    response = client.post(
        reverse("image-decide", args=[image.pk]),
        {"label": cats["dog"].pk, "revision": image.revision, "queue": "label",
         "version": version.pk},
        headers={"HX-Request": "true"},
    )  # fmt: skip

    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith(f'<article id="label-card-{image.pk}"')
    assert "Saved" in body and 'data-key="u"' in body


# The page ---------------------------------------------------------------------------------


def test_label_queue_page_shows_suggestions_and_counts(world, client):
    project, version, images, cats = world
    other = reviewer()
    queue_ids(project, other, "uncertainty")
    client.force_login(reviewer())

    page = client.get(reverse("label-queue", args=[project.slug]), {"strategy": "confident"})

    body = page.content.decode()
    assert page.status_code == 200
    assert "6</strong> unlabeled images" in body and "6 with a suggestion" in body
    assert f"Claimed by others:\n        {other.username} (3)" in body
    assert body.count("data-accept") == 3  # the three cards nobody else holds
    assert f'id="label-card-{images[5].pk}"' in body


def test_the_queue_counts_stop_at_the_cap_and_say_so(world, client, monkeypatch):
    project, *_ = world
    monkeypatch.setattr(labeling, "QUEUE_COUNT_CAP", 4)
    client.force_login(reviewer())

    body = client.get(reverse("label-queue", args=[project.slug])).content.decode()
    api = client.get(f"/api/v1/projects/{project.slug}/labeling-queue").json()

    assert "more than 4</strong> unlabeled images" in body
    assert "more than 4 with a suggestion" in body
    assert (api["unlabeled"], api["unlabeled_more"]) == (4, True)
    assert (api["suggested"], api["suggested_more"]) == (4, True)
    monkeypatch.setattr(labeling, "QUEUE_COUNT_CAP", 6)  # exactly as many: no "more"
    api = client.get(f"/api/v1/projects/{project.slug}/labeling-queue").json()
    assert (api["unlabeled"], api["unlabeled_more"]) == (6, False)


def test_project_and_version_pages_count_the_suggestions(world, client):
    project, version, images, _ = world
    client.force_login(reviewer())

    project_page = client.get(reverse("project-detail", args=[project.slug])).content.decode()
    version_page = client.get(reverse("model-version", args=[version.pk])).content.decode()

    assert "6</strong> unlabeled images" in project_page
    assert "6</strong> with a suggestion" in project_page
    assert reverse("label-queue", args=[project.slug]) in project_page
    assert "Suggestions for unlabeled images" in version_page
    assert '<th scope="row">cat</th><td class="num">3</td>' in version_page


# The API ---------------------------------------------------------------------------------


@pytest.fixture
def api(client):
    def call(user, method, path, **kwargs):
        client.force_login(user)
        return getattr(client, method)(f"/api/v1{path}", content_type="application/json", **kwargs)

    return call


def test_api_queue_pages_and_claims_like_the_page(world, api):
    project, version, images, cats = world
    user = reviewer()

    first = api(
        user, "get", f"/projects/{project.slug}/labeling-queue?limit=2&strategy=uncertainty"
    )

    body = first.json()
    assert first.status_code == 200
    assert [i["image_id"] for i in body["items"]] == [images[0].pk, images[1].pk]
    item = body["items"][0]
    assert set(item) >= {"image_id", "suggested_label", "confidence", "margin", "entropy",
                         "claimed_by", "revision"}  # fmt: skip
    assert item["claimed_by"] == user.username and item["suggested_label"] == "dog"
    assert item["probabilities"]["dog"] == pytest.approx(0.5)
    assert body["next"] and "offset=2" in body["next"]
    assert QueueClaim.objects.filter(user=user).count() == 2
    second = api(user, "get", body["next"].split("/api/v1", 1)[1]).json()
    assert [i["image_id"] for i in second["items"]] == [images[2].pk, images[3].pk]


def test_api_refuses_an_unknown_strategy_with_the_valid_names(world, api):
    project, *_ = world

    response = api(reviewer(), "get", f"/projects/{project.slug}/labeling-queue?strategy=loud")

    assert response.status_code == 400
    assert "uncertainty, diverse, confident, random" in response.json()["detail"]


def test_api_labels_an_unlabeled_image_and_409s_a_stale_revision(world, api):
    project, version, images, cats = world
    image, user = images[0], reviewer()

    done = api(user, "post", f"/images/{image.pk}/decisions",
               data={"action": "relabel", "label": "cat", "revision": image.revision})  # fmt: skip
    stale = api(user, "post", f"/images/{image.pk}/decisions",
                data={"action": "relabel", "label": "dog", "revision": image.revision})  # fmt: skip

    assert done.status_code == 200 and done.json()["event"]["action"] == "label"
    assert stale.status_code == 409 and stale.json()["image"]["label"] == "cat"


def test_api_bulk_accepts_suggestions_by_confidence_or_by_image(world, api):
    project, version, images, cats = world
    user = reviewer()

    above = api(user, "post", f"/projects/{project.slug}/decisions",
                data={"action": "accept_suggestion", "min_confidence": 0.9})  # fmt: skip
    one = [{"id": images[0].pk, "revision": images[0].revision}]
    picked = api(user, "post", f"/projects/{project.slug}/decisions",
                 data={"action": "accept_suggestion", "images": one})  # fmt: skip
    neither = api(user, "post", f"/projects/{project.slug}/decisions",
                  data={"action": "accept_suggestion"})  # fmt: skip

    assert above.status_code == 200 and above.json()["applied"] == 1  # 0.95 only
    assert picked.json()["applied"] == 1
    images[0].refresh_from_db()
    assert images[0].label == cats["dog"]
    assert neither.status_code == 400


def test_api_schema_lists_the_labeling_queue(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]

    assert "/api/v1/projects/{slug}/labeling-queue" in paths

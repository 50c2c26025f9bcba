"""Teams: review-queue claims, per-reviewer counts on the History page, and the second
opinion rule (services, pages, API, the approval page's agreement rate)."""

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from reviewapp import second_opinion, selectors, services
from reviewapp.models import Image, LabelEvent, QueueClaim, SecondOpinion
from tests.factories import (
    CategoryFactory,
    ProjectFactory,
    approver,
    make_image,
    reviewer,
    scored_version,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
API = "/api/v1"
Status = SecondOpinion.Status


def html(response) -> str:
    return response.content.decode()


def card_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'<article id="review-card-(\d+)"', html(response))]


def fresh(image) -> Image:
    image.refresh_from_db()
    return image


@pytest.fixture
def w():
    """Six labeled images scored by v1, a project with the second-opinion rule on."""
    project = ProjectFactory(slug="bears", second_opinion=True, claim_size=2)
    grizzly = CategoryFactory(project=project, name="grizzly", hotkey="1")
    black = CategoryFactory(project=project, name="black", hotkey="2")
    teddy = CategoryFactory(project=project, name="teddy", hotkey="3")
    images = [make_image(project, grizzly if n % 2 == 0 else black) for n in range(6)]
    losses = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    version = scored_version(
        project, [(image, image.label, loss) for image, loss in zip(images, losses, strict=True)]
    )
    return SimpleNamespace(
        project=project,
        grizzly=grizzly,
        black=black,
        teddy=teddy,
        images=images,
        version=version,
        ann=reviewer(username="ann"),
        bob=reviewer(username="bob"),
    )


def propose(w, image, label=None, actor=None) -> SecondOpinion:
    return second_opinion.image_decide_or_propose(
        image_id=image.pk,
        action="relabel",
        actor=actor or w.ann,
        revision=fresh(image).revision,
        label=label or w.black,
        version=w.version,
    )


# Services ------------------------------------------------------------------------------


def test_a_relabel_under_the_rule_proposes_and_keeps_the_label(w):
    image = w.images[0]
    before = fresh(image).revision

    opinion = propose(w, image)

    assert isinstance(opinion, SecondOpinion) and opinion.status == Status.PENDING
    assert (opinion.from_category, opinion.to_category, opinion.proposed_by) == (
        w.grizzly,
        w.black,
        w.ann,
    )
    image = fresh(image)
    assert image.label == w.grizzly and image.revision == before
    assert not image.events.filter(action=LabelEvent.Action.RELABEL).exists()


def test_with_the_rule_off_a_relabel_applies_at_once(w):
    w.project.second_opinion = False
    w.project.save()
    image = w.images[0]

    event = propose(w, image)

    assert isinstance(event, LabelEvent) and event.action == LabelEvent.Action.RELABEL
    assert fresh(image).label == w.black
    assert not SecondOpinion.objects.exists()


def test_a_first_label_and_a_confirm_apply_at_once_under_the_rule(w):
    unlabeled = make_image(w.project)
    event = propose(w, unlabeled, label=w.teddy)
    assert isinstance(event, LabelEvent) and fresh(unlabeled).label == w.teddy
    same = propose(w, w.images[0], label=w.grizzly)
    assert isinstance(same, LabelEvent) and same.action == LabelEvent.Action.CONFIRM


def test_agreeing_applies_the_relabel_with_a_label_event_naming_both(w):
    image = w.images[0]
    opinion = propose(w, image)

    done = second_opinion.second_opinion_agree(
        opinion_id=opinion.pk, actor=w.bob, revision=fresh(image).revision
    )

    assert done.status == Status.AGREED and done.resolved_by == w.bob
    assert fresh(image).label == w.black
    event = done.resolution
    assert event.action == LabelEvent.Action.RELABEL and event.actor == w.bob
    assert event.version == w.version
    assert "proposed by ann" in event.note and "agreed by bob" in event.note


def test_the_proposer_cannot_agree_with_themselves(w):
    image = w.images[0]
    opinion = propose(w, image)

    with pytest.raises(ValidationError, match="another reviewer has to agree"):
        second_opinion.second_opinion_agree(
            opinion_id=opinion.pk, actor=w.ann, revision=fresh(image).revision
        )
    assert fresh(image).label == w.grizzly
    assert SecondOpinion.objects.get(pk=opinion.pk).status == Status.PENDING


def test_overriding_keeps_the_label_as_a_confirm(w):
    image = w.images[0]
    opinion = propose(w, image)

    done = second_opinion.second_opinion_override(
        opinion_id=opinion.pk, actor=w.bob, revision=fresh(image).revision
    )

    assert done.status == Status.OVERRIDDEN
    assert fresh(image).label == w.grizzly
    assert done.resolution.action == LabelEvent.Action.CONFIRM and done.resolution.actor == w.bob


def test_overriding_with_another_class_relabels_to_it(w):
    image = w.images[0]
    opinion = propose(w, image)

    done = second_opinion.second_opinion_override(
        opinion_id=opinion.pk, actor=w.bob, revision=fresh(image).revision, label=w.teddy
    )

    assert done.status == Status.OVERRIDDEN and fresh(image).label == w.teddy
    assert done.resolution.to_category == w.teddy


def test_only_the_proposer_withdraws(w):
    image = w.images[0]
    opinion = propose(w, image)

    with pytest.raises(ValidationError, match="Only ann"):
        second_opinion.second_opinion_withdraw(opinion_id=opinion.pk, actor=w.bob)
    done = second_opinion.second_opinion_withdraw(opinion_id=opinion.pk, actor=w.ann)

    assert done.status == Status.WITHDRAWN and fresh(image).label == w.grizzly
    with pytest.raises(ValidationError, match="already withdrawn"):
        second_opinion.second_opinion_agree(
            opinion_id=opinion.pk, actor=w.bob, revision=fresh(image).revision
        )


def test_a_stale_revision_is_refused_and_nothing_applies(w):
    image = w.images[0]
    opinion = propose(w, image)
    seen = fresh(image).revision
    services.image_decide(image_id=image.pk, action="confirm", actor=w.ann, revision=seen)

    with pytest.raises(services.StaleRevision):
        second_opinion.second_opinion_agree(opinion_id=opinion.pk, actor=w.bob, revision=seen)
    with pytest.raises(services.StaleRevision):
        second_opinion.second_opinion_propose(
            image_id=image.pk, actor=w.bob, revision=seen, label=w.teddy
        )
    assert fresh(image).label == w.grizzly
    assert SecondOpinion.objects.get(pk=opinion.pk).status == Status.PENDING


def test_someone_elses_pending_relabel_is_not_replaced_but_ones_own_is(w):
    image = w.images[0]
    first = propose(w, image)

    with pytest.raises(ValidationError, match="already waits for a second opinion"):
        propose(w, image, label=w.teddy, actor=w.bob)
    again = propose(w, image, label=w.teddy)

    assert again.pk == first.pk and again.to_category == w.teddy


def test_agreement_rate_counts_agreed_of_resolved(w):
    a = propose(w, w.images[0])
    second_opinion.second_opinion_agree(
        opinion_id=a.pk, actor=w.bob, revision=fresh(w.images[0]).revision
    )
    b = propose(w, w.images[2])
    second_opinion.second_opinion_override(
        opinion_id=b.pk, actor=w.bob, revision=fresh(w.images[2]).revision
    )
    c = propose(w, w.images[4])
    second_opinion.second_opinion_withdraw(opinion_id=c.pk, actor=w.ann)
    propose(w, w.images[1], label=w.grizzly)

    rate = second_opinion.agreement_rate(project=w.project, version=w.version)

    assert (rate.agreed, rate.overridden, rate.pending, rate.rate) == (1, 1, 1, 0.5)


# Pages ---------------------------------------------------------------------------------


def decide(client, image, **data):
    payload = {"revision": fresh(image).revision, "version": "", **data}
    return client.post(reverse("image-decide", args=[image.pk]), payload, **HTMX)


def test_a_relabel_card_says_it_waits_and_the_queue_resolves_it(w, client):
    image = w.images[0]
    client.force_login(w.ann)
    card = decide(client, image, label=w.black.pk)
    assert card.status_code == 200
    assert "Waiting for a second opinion" in html(card) and 'id="site-header"' not in html(card)
    assert fresh(image).label == w.grizzly

    client.force_login(w.bob)
    queue = client.get(reverse("second-opinion-queue", args=[w.project.slug]))
    opinion = SecondOpinion.objects.get()
    page = html(queue)
    assert f'id="opinion-card-{opinion.pk}"' in page and "Agree: black" in page
    assert "1 relabel waiting" in page
    resolved = client.post(
        reverse("second-opinion-resolve", args=[opinion.pk]),
        {"action": "agree", "revision": fresh(image).revision},
        **HTMX,
    )

    assert resolved.status_code == 200 and "Agreed" in html(resolved)
    assert 'id="site-header"' not in html(resolved)
    assert fresh(image).label == w.black


def test_a_pending_relabel_shows_in_the_focus_view_browser_and_image_page(w, client):
    image = w.images[0]
    client.force_login(w.ann)
    focus = reverse("image-focus", args=[w.project.slug, image.pk])
    assert "Waiting for a second opinion" not in html(client.get(focus, **HTMX))

    # Proposed from a browser card: the card says so, and so does every other screen.
    thumb = decide(client, image, label=w.black.pk, action="relabel", view="thumb")
    assert 'role="status">Proposed</span>' in html(thumb)
    assert "Waiting for a second opinion" in html(thumb) and "ann proposed black" in html(thumb)
    assert fresh(image).label == w.grizzly
    pages = {
        "focus view": client.get(focus, **HTMX),
        "image browser": client.get(reverse("image-browser", args=[w.project.slug])),
        "image page": client.get(reverse("image-detail", args=[image.pk])),
    }
    for name, response in pages.items():
        assert response.status_code == 200, name
        assert html(response).count("Waiting for a second opinion") == 1, name
        assert "ann proposed black" in html(response), name

    # From the focus view over a browser card, a relabel is a proposal too.
    other = w.images[2]
    answer = decide(client, other, label=w.teddy.pk, view="focus", card="thumb")
    assert 'role="status">Proposed</span>' in html(answer)
    assert html(answer).count("Waiting for a second opinion") == 2  # the view and the card
    assert fresh(other).label == w.grizzly


def test_the_queue_refuses_a_stale_agree_with_409_and_a_self_agree_with_400(w, client):
    image = w.images[0]
    opinion = propose(w, image)
    seen = fresh(image).revision
    client.force_login(w.ann)
    own = client.post(
        reverse("second-opinion-resolve", args=[opinion.pk]),
        {"action": "agree", "revision": seen},
        **HTMX,
    )
    assert own.status_code == 400 and "another reviewer has to agree" in html(own)
    services.image_decide(image_id=image.pk, action="confirm", actor=w.ann, revision=seen)

    client.force_login(w.bob)
    stale = client.post(
        reverse("second-opinion-resolve", args=[opinion.pk]),
        {"action": "agree", "revision": seen},
        **HTMX,
    )

    assert stale.status_code == 409 and "was changed" in html(stale)
    assert fresh(image).label == w.grizzly


def test_bulk_relabel_under_the_rule_proposes_each(w, client):
    client.force_login(w.ann)
    a, b = w.images[0], w.images[2]
    response = client.post(
        reverse("review-bulk", args=[w.project.slug]),
        {
            "action": "relabel",
            "label": w.teddy.pk,
            "version": w.version.pk,
            "selected": [f"{i.pk}:{fresh(i).revision}" for i in (a, b)],
        },
        follow=True,
    )

    assert "2 relabel(s) wait for a second opinion" in html(response)
    assert SecondOpinion.objects.filter(status=Status.PENDING, to_category=w.teddy).count() == 2
    assert fresh(a).label == w.grizzly and fresh(b).label == w.grizzly


def test_the_review_page_and_project_page_link_the_queue_with_its_count(w, client):
    propose(w, w.images[0])
    client.force_login(w.bob)

    review = html(client.get(reverse("review-queue", args=[w.project.slug])))
    project = html(client.get(reverse("project-detail", args=[w.project.slug])))

    assert "Second opinion (1)" in review and "Second opinion (1)" in project
    assert "Waiting for a second opinion" in review


def test_the_settings_page_turns_the_rule_on(w, client):
    w.project.second_opinion = False
    w.project.save()
    owner = approver(username="ada")
    owner.is_superuser = True
    owner.save()
    client.force_login(owner)
    url = reverse("project-settings", args=[w.project.slug])
    assert "A relabel needs a second reviewer" in html(client.get(url))

    client.post(
        url,
        {
            "name": w.project.name,
            "image_size": 224,
            "resize_method": w.project.resize_method,
            "valid_pct": 0.2,
            "split_seed": 42,
            "augment": "on",
            "second_opinion": "on",
        },
    )

    w.project.refresh_from_db()
    assert w.project.second_opinion is True


def test_the_approval_page_shows_the_agreement_rate(w, client):
    a = propose(w, w.images[0])
    second_opinion.second_opinion_agree(
        opinion_id=a.pk, actor=w.bob, revision=fresh(w.images[0]).revision
    )
    b = propose(w, w.images[2])
    second_opinion.second_opinion_override(
        opinion_id=b.pk, actor=w.bob, revision=fresh(w.images[2]).revision
    )
    client.force_login(approver(username="ada"))

    page = html(client.get(reverse("model-version-approval", args=[w.version.pk])))

    agreement = re.search(r'<p id="agreement-rate">(.*?)</p>', page, re.S).group(1)
    assert "50% agreed" in agreement and "1 of 2" in agreement


# Review-queue claims -------------------------------------------------------------------


def test_two_reviewers_get_different_cards_and_see_who_holds_the_others(w):
    ann, bob = Client(), Client()
    ann.force_login(w.ann)
    bob.force_login(w.bob)
    url = reverse("review-queue", args=[w.project.slug])
    ids = [i.pk for i in w.images]  # highest loss first

    first = ann.get(url)
    second = bob.get(url)

    assert card_ids(first) == ids
    assert card_ids(second) == ids[2:]  # ann holds the claim size, two
    assert "2 claimed by ann" in html(second)
    assert set(QueueClaim.objects.filter(user=w.bob).values_list("image_id", flat=True)) == {
        ids[2],
        ids[3],
    }
    # A reload keeps one's own cards; the htmx list says the same.
    again = bob.get(url, **HTMX)
    assert card_ids(again) == ids[2:] and "2 claimed by ann" in html(again)


def test_leaving_the_review_queue_releases_and_working_renews(w, client):
    client.force_login(w.ann)
    page = client.get(reverse("review-queue", args=[w.project.slug]))
    loaded = page.context["claims_loaded_at"]
    QueueClaim.objects.update(expires_at=timezone.now() + timedelta(seconds=5))

    renewed = client.post(reverse("review-claims-renew", args=[w.project.slug]))
    assert renewed.status_code == 204 and renewed["X-Claims-Renewed"] == "2"
    assert QueueClaim.objects.earliest("expires_at").expires_at > timezone.now() + timedelta(
        minutes=w.project.claim_minutes - 1
    )
    released = client.post(
        reverse("review-claims-release", args=[w.project.slug]), {"loaded_at": loaded.isoformat()}
    )

    assert released.status_code == 204
    assert not QueueClaim.objects.filter(queue=QueueClaim.Queue.REVIEW).exists()


def test_an_expired_review_claim_goes_to_others(w):
    ann, bob = Client(), Client()
    ann.force_login(w.ann)
    bob.force_login(w.bob)
    url = reverse("review-queue", args=[w.project.slug])
    ann.get(url)
    QueueClaim.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert card_ids(bob.get(url))[:2] == [w.images[0].pk, w.images[1].pk]


# History: per-reviewer counts ----------------------------------------------------------


def counts_world(w):
    w.project.second_opinion = False
    w.project.save()
    a, b, c = w.images[:3]
    services.image_decide(
        image_id=a.pk, action="relabel", actor=w.ann, revision=fresh(a).revision, label=w.teddy
    )
    services.image_decide(image_id=b.pk, action="confirm", actor=w.ann, revision=fresh(b).revision)
    services.image_decide(
        image_id=c.pk, action="relabel", actor=w.bob, revision=fresh(c).revision, label=w.teddy
    )
    # bob undoes ann's relabel: it counts as undone for ann, not as a decision of bob's.
    services.image_decision_undo(image_id=a.pk, actor=w.bob, revision=fresh(a).revision)


def test_reviewer_counts_selector_counts_decisions_relabels_and_undone(w):
    counts_world(w)

    rows = selectors.reviewer_counts(project=w.project)

    assert [(r.username, r.decisions, r.relabels, r.undone) for r in rows] == [
        ("ann", 2, 1, 1),
        ("bob", 1, 1, 0),
    ]
    only_bob = selectors.reviewer_counts(project=w.project, actor=w.bob.pk)
    assert [r.username for r in only_bob] == ["bob"]


def test_history_page_shows_per_reviewer_counts_for_the_period(w, client):
    counts_world(w)
    # Everything before bob's first decision happened ten days ago (ids follow time).
    first_of_bob = LabelEvent.objects.filter(actor=w.bob).earliest("id").pk
    LabelEvent.objects.filter(id__lt=first_of_bob).update(
        created_at=timezone.now() - timedelta(days=10)
    )
    client.force_login(w.ann)
    url = reverse("project-activity", args=[w.project.slug])

    everything = html(client.get(url))
    week = html(client.get(url, {"period": "7d"}, **HTMX))

    def row(page, name):
        found = re.search(rf'<tr data-reviewer="{name}">(.*?)</tr>', page, re.S)
        return re.findall(r"<td>(\d+)</td>", found.group(1)) if found else None

    assert row(everything, "ann") == ["2", "1", "1"]
    assert row(everything, "bob") == ["1", "1", "0"]
    assert row(week, "bob") == ["1", "1", "0"] and row(week, "ann") is None
    assert 'id="site-header"' not in week


# API -----------------------------------------------------------------------------------


def token_client(user) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"})


def test_api_relabel_answers_202_and_the_list_and_resolve_follow(w):
    ann, bob = token_client(w.ann), token_client(w.bob)
    image = w.images[0]

    proposed = ann.post(
        f"{API}/images/{image.pk}/decisions",
        {"action": "relabel", "label": "black", "revision": fresh(image).revision},
        "application/json",
    )
    assert proposed.status_code == 202, proposed.content
    body = proposed.json()
    assert body["image"]["label"] == "grizzly"
    assert body["second_opinion"]["to"] == "black" and body["second_opinion"]["from"] == "grizzly"
    opinion_id = body["second_opinion"]["id"]

    listed = bob.get(f"{API}/projects/{w.project.slug}/second-opinions").json()
    assert [o["id"] for o in listed["items"]] == [opinion_id] and listed["next"] is None
    assert listed["items"][0]["proposed_by"] == "ann"

    own = ann.post(
        f"{API}/second-opinions/{opinion_id}",
        {"action": "agree", "revision": fresh(image).revision},
        "application/json",
    )
    assert own.status_code == 400 and "another reviewer" in own.json()["detail"]
    agreed = bob.post(
        f"{API}/second-opinions/{opinion_id}",
        {"action": "agree", "revision": fresh(image).revision},
        "application/json",
    )
    assert agreed.status_code == 200, agreed.content
    assert agreed.json()["status"] == "agreed" and agreed.json()["image"]["label"] == "black"
    assert agreed.json()["resolution_event_id"] is not None
    assert bob.get(f"{API}/projects/{w.project.slug}/second-opinions").json()["items"] == []


def test_api_resolve_refuses_a_stale_revision_with_409(w):
    image = w.images[0]
    opinion = propose(w, image)
    seen = fresh(image).revision
    services.image_decide(image_id=image.pk, action="confirm", actor=w.ann, revision=seen)

    response = token_client(w.bob).post(
        f"{API}/second-opinions/{opinion.pk}",
        {"action": "override", "label": "teddy", "revision": seen},
        "application/json",
    )

    assert response.status_code == 409
    assert response.json()["image"]["revision"] == seen + 1
    assert fresh(image).label == w.grizzly


def test_api_bulk_relabel_counts_proposals(w):
    images = w.images[:2]
    response = token_client(w.ann).post(
        f"{API}/projects/{w.project.slug}/decisions",
        {
            "action": "relabel",
            "label": "teddy",
            "images": [{"id": i.pk, "revision": fresh(i).revision} for i in images],
        },
        "application/json",
    )

    body = response.json()
    assert (body["applied"], body["proposed"], body["refused"]) == (0, 2, 0)
    assert all(r["second_opinion_id"] for r in body["results"])


def test_api_project_settings_expose_and_change_the_rule(w):
    owner = approver(username="ada")
    owner.is_superuser = True
    owner.save()
    api = token_client(owner)

    assert api.get(f"{API}/projects/{w.project.slug}").json()["second_opinion"] is True
    changed = api.patch(
        f"{API}/projects/{w.project.slug}", {"second_opinion": False}, "application/json"
    )

    assert changed.status_code == 200 and changed.json()["second_opinion"] is False
    w.project.refresh_from_db()
    assert w.project.second_opinion is False

"""The JSON API for review decisions (one image or many), undo, and an image's audit trail."""

from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from reviewapp import services
from reviewapp.models import Image, LabelEvent, ModelVersion
from tests.factories import CategoryFactory, ProjectFactory, UserFactory, make_image, reviewer

pytestmark = pytest.mark.django_db

API = "/api/v1"


def token_client(user) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"})


def fake_version(project, number=1) -> ModelVersion:
    """A version row without training: decisions only point at it."""
    return ModelVersion.objects.create(
        project=project,
        number=number,
        export_file="models/x/export.pkl",
        export_sha256="0" * 64,
        weights_file="models/x/weights.pth",
        weights_sha256="0" * 64,
        config={"architecture": "resnet18"},
        vocab=["grizzly", "black"],
    )


@pytest.fixture
def rex():
    return reviewer(username="rex", password=None)


@pytest.fixture
def api(rex):
    return token_client(rex)


@pytest.fixture
def bears():
    project = ProjectFactory(name="Bears", slug="bears")
    grizzly = CategoryFactory(project=project, name="grizzly", position=1)
    black = CategoryFactory(project=project, name="black", position=2)
    image = make_image(project, grizzly)
    return SimpleNamespace(project=project, grizzly=grizzly, black=black, image=image)


def decide(client, image_id, **body):
    return client.post(f"{API}/images/{image_id}/decisions", body, "application/json")


def decide_now(client, image: Image, action: str, **body):
    """Decide on the image's current revision; the decision must succeed."""
    image.refresh_from_db()
    response = decide(client, image.pk, action=action, revision=image.revision, **body)
    assert response.status_code == 200, response.json()
    return response.json()


def bulk(client, slug, **body):
    return client.post(f"{API}/projects/{slug}/decisions", body, "application/json")


def history(client, image_id):
    return client.get(f"{API}/images/{image_id}/history")


# One image ----------------------------------------------------------------------------


def test_relabel_returns_the_new_state_and_the_event_written(api, bears):
    image = bears.image
    version = fake_version(bears.project)

    response = decide(
        api,
        image.pk,
        action="relabel",
        label="black",
        revision=image.revision,
        version=version.pk,
        note="ears are round",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["image"]["id"] == image.pk
    assert body["image"]["label"] == "black"
    assert body["image"]["revision"] == image.revision + 1
    assert body["image"]["project"] == "bears"
    event = LabelEvent.objects.get(pk=body["event"]["id"])
    assert body["event"] == {
        "id": event.pk,
        "action": "relabel",
        "from": "grizzly",
        "to": "black",
        "actor": "rex",
        "note": "ears are round",
        "created_at": body["event"]["created_at"],
        "version_id": version.pk,
        "undo_of": None,
        "undone_by": None,
    }
    assert (event.actor.username, event.version, event.to_category) == ("rex", version, bears.black)
    stored = Image.objects.get(pk=image.pk)
    assert (stored.label, stored.revision) == (bears.black, image.revision + 1)
    assert stored.reviewed_at is not None


def test_confirm_delete_and_restore(api, bears):
    image = bears.image

    confirmed = decide_now(api, image, "confirm")
    deleted = decide_now(api, image, "delete")
    assert deleted["image"]["status"] == "deleted"
    restored = decide_now(api, image, "restore")

    assert confirmed["event"]["action"] == "confirm"
    assert (confirmed["event"]["from"], confirmed["event"]["to"]) == ("grizzly", "grizzly")
    assert deleted["event"]["action"] == "delete"
    assert restored["event"]["action"] == "restore"
    assert restored["image"]["status"] == "active"
    assert restored["image"]["revision"] == Image.objects.get(pk=image.pk).revision


def test_a_stale_revision_gets_409_with_the_current_image_and_applies_nothing(api, bears):
    image = bears.image
    seen = image.revision
    services.image_decide(
        image_id=image.pk,
        action="relabel",
        actor=reviewer(username="ana"),
        revision=seen,
        label=bears.black,
    )
    events = image.events.count()

    response = decide(api, image.pk, action="delete", revision=seen)

    assert response.status_code == 409
    body = response.json()
    assert "changed by ana (relabel)" in body["detail"]
    assert "now labeled 'black'" in body["detail"]
    assert "not applied" in body["detail"]
    assert body["image"]["label"] == "black"
    assert body["image"]["revision"] == seen + 1
    assert body["image"]["status"] == "active"
    stored = Image.objects.get(pk=image.pk)
    assert (stored.status, stored.revision) == (Image.Status.ACTIVE, seen + 1)
    assert image.events.count() == events


def test_undo_through_the_api_reverts_a_relabel(api, bears):
    image = bears.image
    relabel = decide_now(api, image, "relabel", label="black")

    undo = decide_now(api, image, "undo")

    assert undo["image"]["label"] == "grizzly"
    assert undo["image"]["revision"] == relabel["image"]["revision"] + 1
    assert undo["event"]["action"] == "undo"
    assert undo["event"]["undo_of"] == relabel["event"]["id"]
    assert (undo["event"]["from"], undo["event"]["to"]) == ("black", "grizzly")
    assert undo["event"]["note"] == f"undid relabel #{relabel['event']['id']}"
    stored = Image.objects.get(pk=image.pk)
    assert stored.label == bears.grizzly and stored.reviewed_at is None


def test_undo_with_a_stale_revision_gets_409(api, bears):
    image = bears.image
    decide_now(api, image, "delete")
    image.refresh_from_db()

    response = decide(api, image.pk, action="undo", revision=image.revision - 1)

    assert response.status_code == 409
    assert response.json()["image"]["status"] == "deleted"
    assert Image.objects.get(pk=image.pk).status == Image.Status.DELETED


def test_undo_with_nothing_to_undo_is_400(api, bears):
    response = decide(api, bears.image.pk, action="undo", revision=bears.image.revision)

    assert response.status_code == 400
    assert response.json()["detail"] == "There is no decision on this image to undo."


def test_undo_refuses_a_label_version_or_note(api, bears):
    image = bears.image
    decide_now(api, image, "delete")

    response = decide(api, image.pk, action="undo", revision=image.revision, note="oops")

    assert response.status_code == 400
    assert response.json()["errors"] == {"note": ["An undo takes only 'revision'; leave this out."]}
    assert Image.objects.get(pk=image.pk).status == Image.Status.DELETED


def test_an_unknown_label_is_400_naming_the_projects_classes(api, bears):
    response = decide(
        api, bears.image.pk, action="relabel", label="panda", revision=bears.image.revision
    )

    assert response.status_code == 400
    body = response.json()
    message = "No category 'panda' in project 'bears'. Valid labels: 'grizzly', 'black'."
    assert body == {"detail": f"label: {message}", "errors": {"label": [message]}}
    assert Image.objects.get(pk=bears.image.pk).label == bears.grizzly


def test_a_label_of_another_project_is_unknown_here(api, bears):
    CategoryFactory(name="panda")

    response = decide(
        api, bears.image.pk, action="relabel", label="panda", revision=bears.image.revision
    )

    assert response.status_code == 400
    assert "No category 'panda' in project 'bears'" in response.json()["detail"]


def test_relabel_without_a_label_is_400(api, bears):
    response = decide(api, bears.image.pk, action="relabel", revision=bears.image.revision)

    assert response.status_code == 400
    assert response.json()["errors"]["label"] == [
        "Relabel needs the new label. Valid labels: 'grizzly', 'black'."
    ]


def test_a_label_with_another_action_is_refused_not_ignored(api, bears):
    response = decide(
        api, bears.image.pk, action="confirm", label="black", revision=bears.image.revision
    )

    assert response.status_code == 400
    assert "only sent with 'relabel'" in response.json()["detail"]
    assert not Image.objects.get(pk=bears.image.pk).reviewed_at


def test_an_unknown_action_is_400_in_the_json_error_shape(api, bears):
    response = decide(api, bears.image.pk, action="explode", revision=bears.image.revision)

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail", "errors"}
    assert body["detail"].startswith("action: ")
    assert "'confirm'" in body["detail"] and "'undo'" in body["detail"]
    assert list(body["errors"]) == ["action"]
    assert Image.objects.get(pk=bears.image.pk).revision == bears.image.revision


def test_a_missing_revision_or_unknown_field_is_400(api, bears):
    missing = decide(api, bears.image.pk, action="confirm")
    unknown = decide(
        api, bears.image.pk, action="confirm", revision=bears.image.revision, labels="black"
    )

    assert missing.status_code == 400
    assert list(missing.json()["errors"]) == ["revision"]
    assert unknown.status_code == 400
    assert list(unknown.json()["errors"]) == ["labels"]


def test_an_impossible_decision_is_400_with_the_services_message(api, bears):
    response = decide(api, bears.image.pk, action="restore", revision=bears.image.revision)

    assert response.status_code == 400
    assert response.json()["detail"] == "This image is not in the trash."


def test_a_version_of_another_project_is_400(api, bears):
    foreign = fake_version(ProjectFactory(slug="pandas"))

    response = decide(
        api,
        bears.image.pk,
        action="confirm",
        revision=bears.image.revision,
        version=foreign.pk,
    )
    missing = decide(
        api, bears.image.pk, action="confirm", revision=bears.image.revision, version=foreign.pk + 1
    )

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "version": [f"Model version {foreign.pk} belongs to project 'pandas', not 'bears'."]
    }
    assert missing.status_code == 400
    assert missing.json()["errors"] == {"version": [f"No model version {foreign.pk + 1}."]}
    assert not bears.image.events.exclude(action="import").exists()


def test_an_unknown_image_is_404(api):
    response = decide(api, 999_999, action="confirm", revision=1)

    assert response.status_code == 404
    assert response.json() == {"detail": "No image 999999."}


# Many images --------------------------------------------------------------------------


def test_bulk_applies_each_image_alone_refusing_stale_and_foreign_ones(api, bears):
    fresh = bears.image
    stale = make_image(bears.project, bears.grizzly)
    foreign = make_image(ProjectFactory(slug="pandas"))
    version = fake_version(bears.project)

    response = bulk(
        api,
        "bears",
        action="relabel",
        label="black",
        version=version.pk,
        images=[
            {"id": foreign.pk, "revision": foreign.revision},
            {"id": fresh.pk, "revision": fresh.revision},
            {"id": stale.pk, "revision": stale.revision + 3},
        ],
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["applied"], body["refused"]) == (1, 2)
    results = body["results"]
    assert [r["image_id"] for r in results] == [foreign.pk, fresh.pk, stale.pk]
    assert [r["ok"] for r in results] == [False, True, False]
    assert results[0]["message"] == (
        f"No image {foreign.pk} in project 'bears'; nothing was applied."
    )
    assert results[0]["event_id"] is None
    assert results[1]["message"] == ""
    event = LabelEvent.objects.get(pk=results[1]["event_id"])
    assert (event.image_id, event.action, event.version) == (fresh.pk, "relabel", version)
    assert "was changed" in results[2]["message"] and results[2]["event_id"] is None
    assert Image.objects.get(pk=fresh.pk).label == bears.black
    assert Image.objects.get(pk=stale.pk).label == bears.grizzly
    assert Image.objects.get(pk=foreign.pk).revision == foreign.revision
    assert not foreign.events.exclude(action="import").exists()


def test_bulk_reports_impossible_decisions_per_image(api, bears):
    trashed = make_image(bears.project, bears.black)
    services.image_decide(
        image_id=trashed.pk, action="delete", actor=None, revision=trashed.revision
    )
    trashed.refresh_from_db()

    response = bulk(
        api,
        "bears",
        action="delete",
        images=[
            {"id": bears.image.pk, "revision": bears.image.revision},
            {"id": trashed.pk, "revision": trashed.revision},
        ],
    )

    body = response.json()
    assert (body["applied"], body["refused"]) == (1, 1)
    assert body["results"][1]["message"] == "This image is already in the trash."


def test_bulk_relabel_with_an_unknown_label_is_400_and_applies_nothing(api, bears):
    response = bulk(
        api,
        "bears",
        action="relabel",
        label="panda",
        images=[{"id": bears.image.pk, "revision": bears.image.revision}],
    )

    assert response.status_code == 400
    assert "Valid labels: 'grizzly', 'black'" in response.json()["detail"]
    assert Image.objects.get(pk=bears.image.pk).revision == bears.image.revision


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "undo", "images": [{"id": 1, "revision": 1}]}, "action"),
        ({"action": "delete", "images": []}, "images"),
        ({"action": "delete", "images": [{"id": 1, "revision": 1}] * 1001}, "images"),
        ({"action": "delete", "images": [{"id": 1}]}, "images.0.revision"),
    ],
)
def test_bulk_refuses_a_bad_request_with_400(api, bears, body, field):
    response = bulk(api, "bears", **body)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_bulk_version_of_another_project_is_400(api, bears):
    foreign = fake_version(ProjectFactory(slug="pandas"))

    response = bulk(
        api,
        "bears",
        action="confirm",
        version=foreign.pk,
        images=[{"id": bears.image.pk, "revision": bears.image.revision}],
    )

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["version"]


def test_bulk_in_an_unknown_project_is_404(api):
    response = bulk(api, "nope", action="delete", images=[{"id": 1, "revision": 1}])

    assert response.status_code == 404
    assert response.json()["detail"] == "No project 'nope'."


# History ------------------------------------------------------------------------------


def test_history_lists_every_event_newest_first(api, bears, rex):
    image = bears.image
    ana = token_client(reviewer(username="ana"))
    relabel = decide_now(ana, image, "relabel", label="black", note="round ears")
    delete = decide_now(api, image, "delete")
    undo = decide_now(api, image, "undo")

    response = history(api, image.pk)

    assert response.status_code == 200
    events = response.json()["items"]
    imported = image.events.get(action="import")
    assert [e["id"] for e in events] == [
        undo["event"]["id"],
        delete["event"]["id"],
        relabel["event"]["id"],
        imported.pk,
    ]
    assert [e["action"] for e in events] == ["undo", "delete", "relabel", "import"]
    assert [e["actor"] for e in events] == ["rex", "rex", "ana", None]
    assert [(e["from"], e["to"]) for e in events] == [
        ("black", "black"),
        ("black", "black"),
        ("grizzly", "black"),
        (None, "grizzly"),
    ]
    assert events[0]["undo_of"] == delete["event"]["id"]
    assert events[1]["undone_by"] == undo["event"]["id"]
    assert [e["undone_by"] for e in events if e["id"] != delete["event"]["id"]] == [None] * 3
    assert events[2]["note"] == "round ears"
    assert events[3]["note"].startswith("upload: ")
    assert [e["created_at"] for e in events] == sorted(
        (e["created_at"] for e in events), reverse=True
    )
    assert Image.objects.get(pk=image.pk).status == Image.Status.ACTIVE


def test_history_costs_the_same_queries_for_many_events(api, bears, django_assert_max_num_queries):
    image = bears.image
    history(api, image.pk)  # records the token's first use: a write the next calls skip
    with CaptureQueriesContext(connection) as few:
        assert history(api, image.pk).status_code == 200
    few_queries = len(few)  # now: later requests clear the log it reads
    assert few_queries <= 5  # token, user and group permissions, the image, its events

    for n in range(12):
        client = token_client(reviewer(username=f"r{n}"))
        decide_now(client, image, "relabel", label="black" if n % 2 == 0 else "grizzly")

    with django_assert_max_num_queries(few_queries):
        response = history(api, image.pk)
    assert len(response.json()["items"]) == 13


def test_history_of_an_unknown_image_is_404(api):
    response = history(api, 999_999)

    assert response.status_code == 404
    assert response.json() == {"detail": "No image 999999."}


# Permissions --------------------------------------------------------------------------


def test_a_user_without_permissions_gets_403_everywhere(bears):
    client = token_client(UserFactory())
    image = bears.image

    decided = decide(client, image.pk, action="delete", revision=image.revision)
    bulked = bulk(client, "bears", action="delete", images=[{"id": image.pk, "revision": 1}])
    read = history(client, image.pk)

    assert decided.status_code == 403
    assert decided.json()["detail"] == (
        "You are not allowed to decide on images: it needs the 'reviewapp.change_image' permission."
    )
    assert bulked.status_code == 403
    assert read.status_code == 403
    assert "reviewapp.view_image" in read.json()["detail"]
    assert Image.objects.get(pk=image.pk).status == Image.Status.ACTIVE


def test_a_viewer_may_read_history_but_not_decide(bears):
    user = UserFactory()
    user.user_permissions.add(Permission.objects.get(codename="view_image"))
    client = token_client(user)

    assert history(client, bears.image.pk).status_code == 200
    refused = decide(client, bears.image.pk, action="delete", revision=bears.image.revision)
    assert refused.status_code == 403


def test_anonymous_requests_get_401(bears):
    client = Client()

    assert decide(client, bears.image.pk, action="delete", revision=1).status_code == 401
    assert bulk(client, "bears", action="delete", images=[]).status_code == 401
    assert history(client, bears.image.pk).status_code == 401


def test_a_session_decision_needs_the_csrf_token(bears):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer())
    secret = "a" * 32
    client.cookies[settings.CSRF_COOKIE_NAME] = secret
    body = {"action": "delete", "revision": bears.image.revision}

    refused = client.post(f"{API}/images/{bears.image.pk}/decisions", body, "application/json")
    accepted = client.post(
        f"{API}/images/{bears.image.pk}/decisions",
        body,
        "application/json",
        headers={"X-CSRFToken": secret},
    )

    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert accepted.status_code == 200
    assert accepted.json()["image"]["status"] == "deleted"


# Schema -------------------------------------------------------------------------------


def test_openapi_lists_the_actions_and_documents_the_conflict():
    schema = Client().get(f"{API}/openapi.json").json()

    single = schema["paths"]["/api/v1/images/{image_id}/decisions"]["post"]
    assert single["operationId"] == "image_decide"
    assert "409" in single["responses"]
    components = schema["components"]["schemas"]
    assert components["DecisionIn"]["properties"]["action"]["enum"] == [
        "confirm",
        "relabel",
        "delete",
        "restore",
        "undo",
    ]
    assert "undo" not in components["BulkDecisionIn"]["properties"]["action"]["enum"]
    assert "from" in components["LabelEventOut"]["properties"]

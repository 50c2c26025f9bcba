"""The rollout API: approve, reject, stage, rollback and the timeline, with their refusals."""

import json
from types import SimpleNamespace

import pytest
from django.test import Client

from reviewapp import rollout, services
from reviewapp.models import ModelVersion, RolloutEvent
from tests.factories import (
    approver,
    candidate_version,
    prediction_rows,
    reviewer,
    rollout_project,
)

pytestmark = pytest.mark.django_db

Stage = ModelVersion.Stage


def token_client(user) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"})


def post(client: Client, url: str, body: dict | None = None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


@pytest.fixture
def w():
    project, cat, dog, images = rollout_project(slug="bears")
    user = approver(username="ada")

    return SimpleNamespace(
        project=project,
        user=user,
        api=token_client(user),
        version=lambda flagged=0: candidate_version(project, images, dog, flagged=flagged),
    )


def make_live(w) -> ModelVersion:
    version = w.version()
    rollout.version_approve(version=version, actor=w.user, note="ok")
    return rollout.version_stage_set(version=version, stage="live", actor=w.user)


def make_approved(w) -> ModelVersion:
    return rollout.version_approve(version=w.version(), actor=w.user, note="ok")


def test_approve_answers_the_new_state_with_its_timeline(w):
    version = w.version()

    response = post(w.api, f"/api/v1/model-versions/{version.pk}/approve", {"note": "Good."})

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["stage"], body["traffic_share"], body["label"]) == ("approved", 0, "v1")
    assert body["url"].endswith(f"/models/{version.pk}/approval/")
    [event] = body["timeline"]
    assert (event["from_stage"], event["to_stage"], event["actor"]) == (
        "candidate",
        "approved",
        "ada",
    )
    assert event["reason"] == "Good."


def test_approve_below_coverage_needs_an_override_reason(w):
    version = w.version(flagged=2)
    url = f"/api/v1/model-versions/{version.pk}/approve"

    refused = post(w.api, url, {"note": "Ship."})
    accepted = post(w.api, url, {"note": "Ship.", "override_reason": "Urgent fix."})

    assert refused.status_code == 400
    assert "Only 0 of 2 flagged images" in refused.json()["detail"]
    assert accepted.status_code == 200
    assert "Urgent fix." in accepted.json()["timeline"][0]["reason"]


def test_approve_without_a_note_is_a_400_naming_the_field(w):
    version = w.version()
    response = post(w.api, f"/api/v1/model-versions/{version.pk}/approve", {})
    assert response.status_code == 400
    assert "note" in response.json()["errors"]
    assert not RolloutEvent.objects.exists()


def test_reject_with_a_note(w):
    version = w.version()
    response = post(w.api, f"/api/v1/model-versions/{version.pk}/reject", {"note": "Worse."})
    assert response.status_code == 200
    assert response.json()["stage"] == "rejected"
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.REJECTED


def test_stage_moves_through_shadow_limited_and_live(w):
    old = make_live(w)
    version = make_approved(w)
    url = f"/api/v1/model-versions/{version.pk}/stage"

    answers = [
        post(w.api, url, {"stage": "shadow"}),
        post(w.api, url, {"stage": "limited", "share": 5, "reason": "Canary."}),
        post(w.api, url, {"stage": "limited"}),
        post(w.api, url, {"stage": "limited", "share": 100, "reason": "Looks fine at 25%."}),
    ]

    assert [r.status_code for r in answers] == [200] * 4
    states = [(r.json()["stage"], r.json()["traffic_share"]) for r in answers]
    assert states == [("shadow", 0), ("limited", 5), ("limited", 25), ("live", 100)]
    assert answers[1].json()["timeline"][-1]["reason"] == "Canary."
    assert ModelVersion.objects.get(pk=old.pk).stage == Stage.RETIRED


def test_skipping_shadow_needs_a_reason_which_the_timeline_keeps(w):
    make_live(w)
    version = make_approved(w)
    url = f"/api/v1/model-versions/{version.pk}/stage"

    refused = post(w.api, url, {"stage": "live"})
    accepted = post(w.api, url, {"stage": "live", "reason": "Hotfix for dogs."})

    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        "Moving v2 to live skips shadow and the limited steps 5%, 25% and 50%. Write a reason "
        "for skipping; it goes on the timeline."
    )
    assert accepted.status_code == 200, accepted.content
    assert (accepted.json()["stage"], accepted.json()["traffic_share"]) == ("live", 100)
    assert accepted.json()["timeline"][-1]["reason"] == (
        "Skipped shadow and the limited steps 5%, 25% and 50%: Hotfix for dogs."
    )


def test_approve_below_live_accuracy_needs_an_accuracy_reason(w):
    old = make_live(w)
    ModelVersion.objects.filter(pk=old.pk).update(metrics={"accuracy": 0.9})
    version = w.version()
    ModelVersion.objects.filter(pk=version.pk).update(metrics={"accuracy": 0.785})
    url = f"/api/v1/model-versions/{version.pk}/approve"

    refused = post(w.api, url, {"note": "Ship.", "override_reason": "Not this one."})
    accepted = post(w.api, url, {"note": "Ship.", "accuracy_reason": "Fixes dogs."})

    assert refused.status_code == 400
    assert (
        "v2's accuracy is 11.5 points below live v1's (tolerance 1.0)" in (refused.json()["detail"])
    )
    assert accepted.status_code == 200, accepted.content
    assert "Fixes dogs." in accepted.json()["timeline"][-1]["reason"]


def test_predicting_without_a_live_version_names_the_rollout_page(w):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.images import image_bytes

    image = SimpleUploadedFile("cat.png", image_bytes(seed=1), content_type="image/png")
    response = w.api.post("/api/v1/projects/bears/predict", {"image": image})

    assert response.status_code == 503, response.content
    assert response.json()["detail"] == (
        "This project has no live model version, so it cannot answer predictions yet. "
        "Approve a version and make it live on its Rollout page (/p/bears/rollout/) first."
    )


def test_stage_refusals_are_400_with_the_reason(w):
    version = w.version()
    response = post(w.api, f"/api/v1/model-versions/{version.pk}/stage", {"stage": "shadow"})
    assert response.status_code == 400
    assert response.json()["detail"] == "v1 is not approved yet: approve it first."


def test_stage_with_a_stale_from_stage_is_a_409(w):
    version = make_approved(w)
    body = {"stage": "live", "from_stage": "shadow"}
    response = post(w.api, f"/api/v1/model-versions/{version.pk}/stage", body)
    assert response.status_code == 409
    assert "it changed since you looked" in response.json()["detail"]
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.APPROVED


def test_stage_refused_by_a_guardrail_says_which(w):
    old = make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="limited", actor=w.user, reason="x")
    requests = prediction_rows(old, 25)
    prediction_rows(version, 25, label="dog", request_ids=requests)

    response = post(w.api, f"/api/v1/model-versions/{version.pk}/stage", {"stage": "limited"})

    assert response.status_code == 400
    assert (
        "Disagreement with live 100% (threshold 20%, n=25): exceeded" in response.json()["detail"]
    )


@pytest.mark.parametrize("share", [0, 101])
def test_stage_share_out_of_range_is_a_400(w, share):
    version = make_approved(w)
    body = {"stage": "limited", "share": share}
    response = post(w.api, f"/api/v1/model-versions/{version.pk}/stage", body)
    assert response.status_code == 400
    assert "share" in response.json()["errors"]


def test_rollback_restores_the_previous_live(w):
    old = make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="limited", share=50, actor=w.user, reason="x")
    rollout.version_stage_set(version=version, stage="live", actor=w.user)

    response = post(w.api, "/api/v1/projects/bears/rollback", {"reason": "Errors."})

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["live"]["id"], body["live"]["stage"]) == (old.pk, "live")
    changes = [(e["version"], e["from_stage"], e["to_stage"]) for e in body["events"]]
    assert changes == [("v2", "live", "approved"), ("v1", "retired", "live")]


def test_rollback_with_nothing_to_roll_back_is_a_400(w):
    response = post(w.api, "/api/v1/projects/bears/rollback")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Nothing to roll back")


def test_timeline_is_open_to_reviewers(w):
    version = make_live(w)
    response = token_client(reviewer()).get(f"/api/v1/model-versions/{version.pk}/timeline")
    assert response.status_code == 200
    assert [(e["from_stage"], e["to_stage"]) for e in response.json()["items"]] == [
        ("candidate", "approved"),
        ("approved", "live"),
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/model-versions/{pk}/approve", {"note": "x", "override_reason": "y"}),
        ("/api/v1/model-versions/{pk}/reject", {"note": "x"}),
        ("/api/v1/model-versions/{pk}/stage", {"stage": "live"}),
        ("/api/v1/projects/bears/rollback", {}),
    ],
)
def test_reviewers_get_403_and_change_nothing(w, path, body):
    version = w.version()
    response = post(token_client(reviewer()), path.format(pk=version.pk), body)
    assert response.status_code == 403
    assert "reviewapp.approve_model" in response.json()["detail"]
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.CANDIDATE
    assert not RolloutEvent.objects.exists()


def test_unknown_version_is_a_404(w):
    response = post(w.api, "/api/v1/model-versions/999999/approve", {"note": "x"})
    assert response.status_code == 404
    assert response.json()["detail"] == "No model version 999999."

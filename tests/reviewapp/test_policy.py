"""The retraining policy: triggers, interval, busy projects, follow-ups, settings and API."""

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from reviewapp import enqueue, policy, rollout, services
from reviewapp.models import LabelAudit, LabelEvent, ModelVersion, Notification, TrainingRun
from tests.factories import (
    TINY_TRAINING,
    UserFactory,
    approver,
    make_image,
    reviewer,
    scored_version,
    trainable_project,
)

pytestmark = pytest.mark.django_db

LAST_CONFIG = {**TINY_TRAINING, "architecture": "resnet18", "seed": 7}


def trained(project, *, hours_ago: float = 48, config=None) -> ModelVersion:
    """A project's successful run (its data frozen ``hours_ago``) and the version it made;
    everything that happened so far happened before, in the version's data."""
    started = timezone.now() - timedelta(hours=hours_ago)
    LabelEvent.objects.filter(project=project).update(created_at=started - timedelta(minutes=1))
    run = TrainingRun.objects.create(
        project=project,
        status=TrainingRun.Status.SUCCEEDED,
        phase=TrainingRun.Phase.DONE,
        config=config or LAST_CONFIG,
        started_at=started,
        finished_at=started + timedelta(minutes=5),
    )
    TrainingRun.objects.filter(pk=run.pk).update(created_at=started)
    version = scored_version(project, [])
    version.run = run
    version.save(update_fields=["run"])
    return version


def decide(images, actor, action="confirm"):
    for image in images:
        image.refresh_from_db()
        services.images_decide(
            images=[(image.pk, image.revision)],
            action=action,
            actor=actor,
            label=image.label if action == "confirm" else None,
        )


@pytest.fixture
def project():
    project = trainable_project(per_class=4)
    project.retrain_after_decisions = 3
    project.retrain_min_hours = 12
    project.save()
    return project


def test_enough_review_decisions_start_a_run_with_the_last_settings(
    project, enqueued, django_capture_on_commit_callbacks
):
    trained(project)
    rita = reviewer()
    decide(list(project.images.all()[:2]), rita)
    assert policy.policy_check() == []  # 2 of 3

    decide(list(project.images.all()[2:3]), rita)
    with django_capture_on_commit_callbacks(execute=True):
        (run,) = policy.policy_check()

    assert run.trigger == TrainingRun.Trigger.POLICY
    assert run.reason == "policy: 3 review decisions since v1"
    assert run.config["seed"] == 7 and run.config["image_size"] == 32
    assert enqueued.ids(enqueue.TRAINING_RUN) == [run.pk]
    assert policy.policy_check() == []  # the queued run makes the project busy


def test_only_standing_decisions_made_after_the_versions_data_count(project, enqueued):
    rita = reviewer()
    images = list(project.images.all())
    decide(images[:3], rita)  # before the snapshot
    trained(project)
    decide(images[3:5], rita)
    decide(images[5:6], rita)
    undone = images[5]
    undone.refresh_from_db()
    services.image_decision_undo(image_id=undone.pk, actor=rita, revision=undone.revision)

    status = policy.policy_status(project=project)
    assert (status.decisions, status.reason) == (2, "")
    assert policy.policy_check() == []


def test_new_labeled_images_and_labeling_trigger(project, enqueued):
    project.retrain_after_decisions = None
    project.retrain_after_images = 3
    project.save()
    trained(project)
    red = project.categories.get(name="red")
    make_image(project, red)  # uploaded with a label
    make_image(project, None)  # unlabeled: not counted
    loose = make_image(project, None)
    services.images_decide(
        images=[(loose.pk, loose.revision)], action="relabel", actor=reviewer(), label=red
    )
    assert policy.policy_status(project=project).images == 2
    assert policy.policy_check() == []

    make_image(project, red)
    (run,) = policy.policy_check()
    assert run.reason == "policy: 3 newly labeled images since v1"


def test_the_interval_holds_the_next_run_back(project, enqueued):
    trained(project, hours_ago=3)  # the last run began 3 h ago; at most one per 12 h
    decide(list(project.images.all()[:4]), reviewer())

    status = policy.policy_status(project=project)
    assert status.reason and status.wait_until is not None
    assert policy.policy_check() == []
    later = timezone.now() + timedelta(hours=10)
    assert len(policy.policy_check(now=later)) == 1


def test_a_running_run_makes_the_policy_wait(project, enqueued):
    trained(project)
    decide(list(project.images.all()[:4]), reviewer())
    TrainingRun.objects.create(project=project, status=TrainingRun.Status.RUNNING, config={})

    assert policy.policy_status(project=project).busy
    assert policy.policy_check() == []


def test_no_policy_without_thresholds_or_without_a_trained_version(project, enqueued):
    decide(list(project.images.all()[:4]), reviewer())
    assert policy.policy_check() == []  # never trained: the first run is a person's
    trained(project)
    project.retrain_after_decisions = None
    project.save()
    assert not project.retrain_policy_on
    assert policy.policy_check() == []


def test_negative_and_wrong_values_are_refused_with_the_field_named(project):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        policy.policy_update(
            project=project,
            retrain_after_decisions=-1,
            retrain_min_hours=-2,
            retrain_audit="slow",
        )
    assert set(refused.value.message_dict) == {
        "retrain_after_decisions",
        "retrain_min_hours",
        "retrain_audit",
    }
    project.refresh_from_db()
    assert project.retrain_after_decisions == 3


@pytest.mark.django_db(transaction=True)
def test_two_checks_at_once_start_one_run(enqueued):
    project = trainable_project(per_class=4, retrain_after_decisions=2, retrain_min_hours=0)
    trained(project)
    # A user without groups: a transactional test may run after another flushed them.
    decide(list(project.images.all()[:2]), UserFactory())
    started, errors = [], []
    barrier = threading.Barrier(2)

    def check():
        try:
            barrier.wait()
            started.extend(policy.policy_check())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert TrainingRun.objects.filter(trigger="policy").count() == 1
    assert len(started) == 1


def test_a_policy_run_tells_the_approvers_and_the_run_api_says_why(project, enqueued, client):
    anna = approver()
    trained(project)
    decide(list(project.images.all()[:3]), reviewer())
    (run,) = policy.policy_check()

    note = Notification.objects.get(user=anna, kind="policy.triggered")
    assert f"run #{run.pk}" in note.message and note.link == run.get_absolute_url()
    client.force_login(anna)
    body = client.get(f"/api/v1/training-runs/{run.pk}").json()
    assert (body["trigger"], body["reason"]) == ("policy", "policy: 3 review decisions since v1")
    page = client.get(run.get_absolute_url()).content.decode()
    assert "policy: 3 review decisions since v1" in page
    history = client.get(reverse("project-activity", args=[project.slug])).content.decode()
    assert f"Run #{run.pk}" in history and "policy: 3 review decisions" in history


def test_api_reads_and_writes_the_policy_fields(project, client):
    client.force_login(approver())
    url = f"/api/v1/projects/{project.slug}"
    body = client.get(url).json()
    assert body["retrain_after_decisions"] == 3 and body["retrain_after_images"] is None

    changed = client.patch(
        url,
        {"retrain_after_images": 50, "retrain_audit": "fast", "retrain_shadow": True},
        content_type="application/json",
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["retrain_after_images"] == 50
    cleared = client.patch(
        url, {"retrain_after_decisions": None, "retrain_after_images": None},
        content_type="application/json",
    )  # fmt: skip
    assert cleared.json()["retrain_after_decisions"] is None
    project.refresh_from_db()
    assert not project.retrain_policy_on and project.retrain_audit == "fast"

    refused = client.patch(url, {"retrain_min_hours": -1}, content_type="application/json")
    assert refused.status_code in (400, 422)
    assert "retrain_min_hours" in refused.content.decode()


def test_settings_page_saves_the_policy_and_shows_where_it_stands(project, client):
    trained(project)
    decide(list(project.images.all()[:2]), reviewer())
    client.force_login(approver())
    page = client.get(reverse("project-settings", args=[project.slug])).content.decode()
    assert "Retraining policy" in page and "<strong>2</strong> review decisions of 3" in page

    response = client.post(
        reverse("project-retrain-policy", args=[project.slug]),
        {"retrain_after_decisions": "", "retrain_after_images": "10", "retrain_min_hours": "6"},
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.retrain_after_decisions, project.retrain_after_images) == (None, 10)
    bad = client.post(
        reverse("project-retrain-policy", args=[project.slug]),
        {"retrain_after_decisions": "-4", "retrain_min_hours": "6"},
    )
    assert bad.status_code == 400
    project.refresh_from_db()
    assert project.retrain_after_images == 10


@pytest.mark.slow
def test_loupe_tick_run_trains_audits_and_shadows_a_better_version(capsys):
    project = trainable_project(
        per_class=6,
        retrain_after_decisions=2,
        retrain_min_hours=0,
        retrain_audit="fast",
        retrain_shadow=True,
    )
    live = trained(project, config=TINY_TRAINING)
    # The live version got every image wrong: any real model beats it on validation.
    red, blue = project.categories.get(name="red"), project.categories.get(name="blue")
    for image in project.images.all():
        wrong = blue if image.label_id == red.pk else red
        live.scores.create(
            image=image,
            label=image.label,
            predicted=wrong,
            confidence=0.9,
            loss=2.3,
            probabilities=[0.5, 0.5],
            split=image.split,
            in_training=image.split == "train",
            flagged=True,
        )
    ModelVersion.objects.filter(pk=live.pk).update(stage=ModelVersion.Stage.LIVE)
    decide(list(project.images.all()[:2]), reviewer())

    call_command("loupe_tick", "--run")

    out = capsys.readouterr().out
    run = TrainingRun.objects.get(trigger="policy")
    assert run.status == "succeeded", run.error_message
    assert f"Run #{run.pk}: succeeded" in out
    audit = LabelAudit.objects.get(project=project)
    assert audit.status == "succeeded" and audit.reason == f"policy: after run #{run.pk}"
    version = run.version
    assert version.stage == ModelVersion.Stage.SHADOW and version.awaits_approval
    with pytest.raises(rollout.RolloutError, match="not approved yet"):
        rollout.version_stage_set(version=version, stage="limited", actor=approver())
    rollout.version_approve(
        version=version, actor=approver(), note="looks right", override_reason="test"
    )
    version.refresh_from_db()
    assert version.stage == ModelVersion.Stage.APPROVED and not version.awaits_approval

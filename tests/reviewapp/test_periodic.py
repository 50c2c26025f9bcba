"""Periodic jobs: the reaper, staging cleanup, beat's schedules, loupe_tick, and enqueueing."""

import io
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from reviewapp import enqueue, reaper, services, training
from reviewapp.models import LabelAudit, Notification, TrainingRun, UploadBatch
from tests.factories import TINY_TRAINING, ProjectFactory, reviewer, trainable_project
from tests.images import image_bytes

pytestmark = pytest.mark.django_db


def queued_long_ago(project, minutes=15, **fields) -> TrainingRun:
    run = TrainingRun.objects.create(project=project, config=TINY_TRAINING, **fields)
    TrainingRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(minutes=minutes)
    )
    run.refresh_from_db()
    return run


@pytest.fixture
def broker_down(monkeypatch):
    def refuse(task, args, countdown=None):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr("reviewapp.enqueue._dispatch", refuse)


def test_a_run_pending_past_the_timeout_is_sent_again(enqueued, settings):
    settings.LOUPE_PENDING_TIMEOUT = 600
    project = ProjectFactory()
    old = queued_long_ago(project, minutes=15)
    fresh = queued_long_ago(project, minutes=2)

    report = reaper.pending_jobs_reap()

    assert report.resent == [f"run {old.pk}"] and report.failed == []
    assert enqueued.ids(enqueue.TRAINING_RUN) == [old.pk]
    old.refresh_from_db()
    assert old.status == "pending" and old.dispatch_count == 1 and old.dispatched_at
    # Sent again just now: the next period leaves it alone.
    assert not reaper.pending_jobs_reap() and fresh.pk not in enqueued.ids(enqueue.TRAINING_RUN)


def test_after_the_last_send_with_no_worker_busy_the_run_fails_and_its_starter_is_told(
    enqueued, settings
):
    settings.LOUPE_PENDING_MAX_SENDS = 2
    rita = reviewer()
    run = queued_long_ago(ProjectFactory(), created_by=rita, dispatch_count=2)

    report = reaper.pending_jobs_reap()

    run.refresh_from_db()
    assert report.failed == [f"run {run.pk}"] and enqueued == []
    assert run.status == "failed"
    assert "no worker took it after 3 sends" in run.error_message
    assert "celery -A reviewapp worker -Q training" in run.error_message
    note = Notification.objects.get(user=rita)
    assert note.kind == "run.failed" and note.link == run.get_absolute_url()


def test_a_busy_worker_elsewhere_means_a_long_queue_not_a_dead_one(enqueued, settings):
    settings.LOUPE_PENDING_MAX_SENDS = 1
    run = queued_long_ago(ProjectFactory(), dispatch_count=5)
    TrainingRun.objects.create(project=ProjectFactory(), config={}, status="running")

    assert reaper.pending_jobs_reap().resent == [f"run {run.pk}"]
    run.refresh_from_db()
    assert run.status == "pending"


def test_a_run_waiting_behind_its_projects_running_run_is_left_alone(enqueued):
    project = ProjectFactory()
    TrainingRun.objects.create(project=project, config={}, status="running")
    waiting = queued_long_ago(project, minutes=60)

    assert not reaper.pending_jobs_reap()
    waiting.refresh_from_db()
    assert waiting.status == "pending" and waiting.dispatch_count == 0


def test_with_the_broker_down_a_lost_run_fails_with_the_reason(broker_down):
    run = queued_long_ago(ProjectFactory())

    report = reaper.pending_jobs_reap()

    run.refresh_from_db()
    assert report.failed == [f"run {run.pk}"]
    assert run.status == "failed" and "task broker cannot be reached" in run.error_message
    assert "Connection refused" in run.error_message


def test_a_pending_audit_is_sent_again_then_failed(enqueued, settings):
    from tests.factories import scored_version

    settings.LOUPE_PENDING_MAX_SENDS = 1
    project = ProjectFactory()
    version = scored_version(project, [])
    audit = LabelAudit.objects.create(project=project, version=version)
    LabelAudit.objects.filter(pk=audit.pk).update(created_at=timezone.now() - timedelta(hours=1))

    assert reaper.pending_jobs_reap().resent == [f"audit {audit.pk}"]
    assert enqueued.ids(enqueue.AUDIT_START) == [audit.pk]
    LabelAudit.objects.filter(pk=audit.pk).update(dispatched_at=timezone.now() - timedelta(hours=1))
    assert reaper.pending_jobs_reap().failed == [f"audit {audit.pk}"]
    audit.refresh_from_db()
    assert audit.status == "failed" and "no worker took it" in audit.error_message


def test_a_running_audit_past_its_jobs_time_limits_fails(enqueued, settings):
    from tests.factories import scored_version

    settings.LOUPE_TRAINING_HARD_TIME_LIMIT = 60
    project = ProjectFactory()
    version = scored_version(project, [])
    alive = LabelAudit.objects.create(
        project=project, version=version, k=2, status="running", started_at=timezone.now()
    )
    dead = LabelAudit.objects.create(
        project=project,
        version=version,
        k=2,
        status="running",
        started_at=timezone.now() - timedelta(minutes=5),  # more than (2 + 2) x 60 s
    )

    assert reaper.pending_jobs_reap().failed == [f"audit {dead.pk}"]
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == "failed" and "the worker running it stopped" in dead.error_message
    assert alive.status == "running"


def test_uploads_pending_are_sent_again_and_dead_ones_fail_and_lose_their_staging(
    enqueued, settings, media_root
):
    settings.LOUPE_PENDING_TIMEOUT = 600
    project = ProjectFactory()
    batch = services.upload_batch_create(
        project=project, uploads=[("a.png", io.BytesIO(image_bytes(seed=1)))]
    )
    staging = Path(settings.MEDIA_ROOT) / batch.staging_dir
    UploadBatch.objects.filter(pk=batch.pk).update(
        created_at=timezone.now() - timedelta(minutes=15)
    )
    assert reaper.pending_jobs_reap().resent == [f"upload {batch.pk}"]
    assert staging.is_dir()

    UploadBatch.objects.filter(pk=batch.pk).update(
        status="running", started_at=timezone.now() - timedelta(hours=2)
    )
    assert reaper.pending_jobs_reap().failed == [f"upload {batch.pk}"]
    batch.refresh_from_db()
    assert (
        batch.status == "failed" and "worker ingesting this upload stopped" in batch.error_message
    )
    assert not staging.exists()


def test_staging_cleanup_removes_old_orphans_only(settings, media_root, enqueued):
    settings.LOUPE_STAGING_MAX_AGE = 3600
    root = Path(settings.MEDIA_ROOT) / "staging"
    orphan, fresh = root / "orphan", root / "fresh"
    for folder in (orphan, fresh):
        folder.mkdir(parents=True)
        (folder / "000000").write_bytes(b"x")
    owned = services.upload_batch_create(
        project=ProjectFactory(), uploads=[("a.png", io.BytesIO(image_bytes(seed=2)))]
    )
    owned_dir = Path(settings.MEDIA_ROOT) / owned.staging_dir
    two_hours_ago = time.time() - 7200
    for folder in (orphan, owned_dir):
        os.utime(folder, (two_hours_ago, two_hours_ago))

    removed = reaper.staging_cleanup()

    assert removed == ["staging/orphan"]
    assert not orphan.exists() and fresh.is_dir() and owned_dir.is_dir()


def test_beat_schedules_exist_after_migrate_and_name_registered_tasks():
    from django_celery_beat.models import PeriodicTask

    from reviewapp.celery import app
    from reviewapp.periodic import PERIODIC_TASKS

    app.loader.import_default_modules()  # what a worker or beat does at start: autodiscovery
    schedules = {t.task: t for t in PeriodicTask.objects.filter(task__in=list(PERIODIC_TASKS))}
    assert set(schedules) == set(PERIODIC_TASKS)
    assert all(t.enabled and t.interval.every > 0 for t in schedules.values())
    assert set(PERIODIC_TASKS) <= set(app.tasks)


def test_every_enqueued_task_name_is_a_registered_task():
    from reviewapp.celery import app

    app.loader.import_default_modules()
    assert set(enqueue.TASKS) <= set(app.tasks)
    with pytest.raises(ValueError, match="Unknown task"):
        enqueue.send("reviewapp.tasks.no_such_task", 1)


def test_a_broker_down_when_a_run_is_queued_loses_nothing(
    broker_down, django_capture_on_commit_callbacks, caplog
):
    project = trainable_project(per_class=2)
    with django_capture_on_commit_callbacks(execute=True):
        run = training.training_run_create(project=project, config=TINY_TRAINING)

    run.refresh_from_db()
    assert run.status == "pending"
    assert "the reaper will send it again" in caplog.text


def test_loupe_tick_with_nothing_to_do_says_so(capsys):
    call_command("loupe_tick")
    assert capsys.readouterr().out.strip() == "Nothing to do."


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_after_a_broker_outage_the_reaper_gets_a_lost_run_run(celery_worker, monkeypatch, settings):
    """The run was accepted while the broker was down; one reaper period later a real
    worker has trained it."""
    project = trainable_project(per_class=4)
    with monkeypatch.context() as outage:
        outage.setattr(
            "reviewapp.enqueue._dispatch",
            lambda *a, **k: (_ for _ in ()).throw(ConnectionError("broker down")),
        )
        run = training.training_run_create(project=project, config=TINY_TRAINING)
    TrainingRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.LOUPE_PENDING_TIMEOUT + 1)
    )

    assert reaper.pending_jobs_reap().resent == [f"run {run.pk}"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            break
        time.sleep(0.5)
    assert run.status == "succeeded", run.error_message

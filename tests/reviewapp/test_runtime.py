"""The embedded runtime, /healthz and background uploads on a real broker and worker."""

import io
import json

import pytest
from django.core.management import call_command
from django.test import Client

from reviewapp import services
from reviewapp.models import Image, UploadBatch
from reviewapp.runtime import EmbeddedRedis, broker_ping
from tests.factories import CategoryFactory, ProjectFactory
from tests.images import image_bytes, zip_bytes


def test_embedded_redis_starts_answers_and_stops(tmp_path):
    server = EmbeddedRedis(tmp_path)
    assert server.start() is True
    try:
        broker_ping(f"redis+socket://{server.socket}")
        assert EmbeddedRedis(tmp_path).start() is False  # a second start reuses it
    finally:
        server.stop()
    assert not server.is_running()


@pytest.mark.django_db
def test_healthz_reports_database_broker_and_worker(celery_worker):
    response = Client().get("/healthz")

    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert body["worker"]["count"] >= 1
    assert body["worker"]["queues"] == ["default", "training"]


@pytest.mark.django_db(transaction=True)
def test_healthz_is_503_when_no_worker_takes_training_runs(celery_app):
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_app, pool="solo", queues=["default"], perform_ping_check=False, loglevel="WARNING"
    ):
        response = Client().get("/healthz")

    body = response.json()
    assert response.status_code == 503
    assert "no worker consumes the training queue" in body["worker"]["error"]


@pytest.mark.django_db
def test_healthz_is_503_when_no_worker_answers(celery_app):
    response = Client().get("/healthz")

    body = response.json()
    assert response.status_code == 503
    assert body["broker"]["ok"] and not body["worker"]["ok"]
    assert "make run" in body["worker"]["error"]


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_down(settings, tmp_path, celery_app):
    down = f"redis+socket://{tmp_path}/nothing.sock"
    settings.CELERY_BROKER_URL = down
    celery_app.conf.broker_url = down
    try:
        response = Client().get("/healthz")
    finally:
        celery_app.conf.broker_url = None

    body = json.loads(response.content)
    assert response.status_code == 503
    assert body["database"]["ok"] and not body["broker"]["ok"] and not body["worker"]["ok"]


@pytest.mark.django_db(transaction=True)
def test_big_upload_is_processed_by_a_real_worker(celery_worker, media_root):
    project = ProjectFactory()
    label = CategoryFactory(project=project, name="black")
    archive = zip_bytes({f"black/{n}.png": image_bytes(seed=n) for n in range(5)})
    uploads = [
        ("bears.zip", io.BytesIO(archive)),
        ("bad.jpg", io.BytesIO(b"not an image")),
        ("one.png", io.BytesIO(image_bytes(seed=100))),
    ]

    batch = services.upload_batch_create(project=project, uploads=uploads, label=label)

    assert batch.progress_total == 7
    batch = wait_for_batch(batch.pk)
    assert batch.status == "succeeded", batch.error_message
    assert (batch.progress_done, batch.progress_total) == (7, 7)
    assert [r["status"] for r in batch.results] == ["imported"] * 5 + ["rejected", "imported"]
    assert Image.objects.filter(project=project, label=label).count() == 6
    assert not (media_root / batch.staging_dir).exists()


@pytest.mark.django_db(transaction=True)
def test_redelivered_upload_task_does_nothing_twice(celery_app, media_root, enqueued):
    project = ProjectFactory()
    batch = services.upload_batch_create(
        project=project, uploads=[("a.png", io.BytesIO(image_bytes(seed=1)))]
    )

    services.upload_batch_run(batch_id=batch.pk)
    services.upload_batch_run(batch_id=batch.pk)

    batch.refresh_from_db()
    assert batch.status == "succeeded" and len(batch.results) == 1
    assert Image.objects.count() == 1


def wait_for_batch(pk, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = UploadBatch.objects.get(pk=pk)
        if batch.is_finished:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {pk} still {batch.status} after {timeout}s")


@pytest.mark.django_db
def test_bootstrap_creates_one_admin_and_prints_the_password_once(monkeypatch):
    from django.contrib.auth.models import User

    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    first, second = io.StringIO(), io.StringIO()

    call_command("loupe_bootstrap", stdout=first)
    call_command("loupe_bootstrap", stdout=second)

    admin = User.objects.get(is_superuser=True)
    password = first.getvalue().split("with the password: ")[1].split()[0]
    assert admin.username == "admin" and admin.check_password(password)
    assert "password" not in second.getvalue()
    assert "demo project" in second.getvalue()


@pytest.mark.django_db
def test_bootstrap_takes_the_password_from_the_environment(monkeypatch):
    from django.contrib.auth.models import User

    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ada")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-enough-pass")
    out = io.StringIO()

    call_command("loupe_bootstrap", stdout=out)

    assert User.objects.get(username="ada").check_password("s3cret-enough-pass")
    assert "s3cret" not in out.getvalue()


@pytest.mark.django_db
def test_healthz_503_is_not_logged_as_a_server_error(celery_app, caplog):
    with caplog.at_level("DEBUG"):
        probe = Client().get("/healthz", headers={"X-Loupe-Probe": "startup"})
        plain = Client().get("/healthz")

    assert probe.status_code == plain.status_code == 503
    assert not [r for r in caplog.records if r.name == "django.request"]
    health = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.endswith("health")]
    assert [level for level, _ in health] == ["DEBUG", "WARNING"]
    assert all("no Celery worker answered" in message for _, message in health)

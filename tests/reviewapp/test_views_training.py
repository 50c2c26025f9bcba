"""The training pages: start a run, follow its progress, cancel it."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from reviewapp import enqueue, training
from reviewapp.models import TrainingRun
from tests.factories import TINY_TRAINING, UserFactory, reviewer, trainable_project

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'


def html(response) -> str:
    return response.content.decode()


@pytest.fixture
def project():
    return trainable_project(per_class=8)


@pytest.fixture
def user_client(client):
    client.force_login(reviewer())
    return client


@pytest.fixture
def enqueued(enqueued):
    """Runs the pages queue, by id, instead of sending them to a broker."""

    class Runs:
        def __eq__(self, other):
            return enqueued.ids(enqueue.TRAINING_RUN) == other

        def __repr__(self):
            return repr(enqueued.ids(enqueue.TRAINING_RUN))

    return Runs()


def start_form(**changes) -> dict:
    data = {
        "architecture": "resnet18",
        "image_size": 32,
        "resize_method": "squish",
        "epochs": 1,
        "freeze_epochs": 0,
        "learning_rate": "0.002",
        "batch_size": 8,
        "pretrained": "off",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_training_page_needs_login_and_permission(client, project):
    url = reverse("training-run-list", args=[project.slug])
    assert client.get(url).status_code == 302
    client.force_login(UserFactory())
    assert client.get(url).status_code == 403
    assert (
        client.post(reverse("training-run-start", args=[project.slug]), start_form()).status_code
        == 403
    )


def test_training_form_starts_from_the_projects_choices(user_client):
    project = trainable_project(per_class=4, image_size=96, resize_method="pad")

    page = html(user_client.get(reverse("training-run-list", args=[project.slug])))

    assert 'name="image_size" value="96"' in page
    assert '<option value="pad" selected>' in page
    assert "No training runs yet" in page


def test_starting_a_run_queues_it_and_opens_its_page(
    user_client, project, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post(
            reverse("training-run-start", args=[project.slug]),
            start_form(learning_rate="", epochs=2),
        )

    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    assert enqueued == [run.pk]
    assert run.config["epochs"] == 2 and run.config["learning_rate"] is None
    assert run.config["image_size"] == 32
    assert run.status == TrainingRun.Status.PENDING


def test_an_htmx_start_redirects_the_whole_page(user_client, project, enqueued):
    response = user_client.post(
        reverse("training-run-start", args=[project.slug]), start_form(), **HTMX
    )

    run = TrainingRun.objects.get()
    assert response["HX-Redirect"] == run.get_absolute_url()


def test_bad_settings_show_on_the_form_and_queue_nothing(user_client, project, enqueued):
    response = user_client.post(
        reverse("training-run-start", args=[project.slug]), start_form(epochs=0), **HTMX
    )

    page = html(response)
    assert response.status_code == 200 and LAYOUT not in page
    assert 'id="training-form"' in page
    assert "greater than or equal to 1" in page
    assert not TrainingRun.objects.exists() and enqueued == []


def test_a_project_that_cannot_train_says_why(user_client, enqueued):
    project = trainable_project(per_class=4, classes=("red",))

    page = html(user_client.post(reverse("training-run-start", args=[project.slug]), start_form()))

    assert "at least two classes" in page
    assert not TrainingRun.objects.exists()


def test_a_running_run_polls_and_shows_batch_progress(user_client, project):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING,
        phase=TrainingRun.Phase.TRAINING,
        progress_done=30,
        progress_total=120,
        started_at=timezone.now() - timedelta(seconds=90),
        phase_started_at=timezone.now() - timedelta(seconds=60),
        heartbeat_at=timezone.now(),
        epochs=[{"epoch": 0, "train_loss": 0.9, "valid_loss": 0.7, "error_rate": 0.25,
                 "accuracy": 0.75, "phase": "unfrozen"}],
    )  # fmt: skip

    response = user_client.get(run.get_absolute_url(), **HTMX)

    page = html(response)
    assert LAYOUT not in page and 'id="run-status"' in page
    assert 'hx-trigger="every 1s"' in page
    assert "Batch <strong>30</strong> of 120 (25%)" in page
    assert "3 min 00 s left" in page or "2 min 59 s left" in page
    assert "0.7000" in page  # the epoch table filled in
    assert "Cancel run" in page


def test_the_polled_partial_carries_times_data_and_scoring_progress(user_client, project):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING,
        phase=TrainingRun.Phase.SCORING,
        progress_done=208,
        progress_total=416,
        n_images=416,
        snapshot_sha256="ab" * 32,
        created_at=timezone.now() - timedelta(minutes=5),
        started_at=timezone.now() - timedelta(minutes=4),
        phase_started_at=timezone.now() - timedelta(seconds=20),
        heartbeat_at=timezone.now(),
    )

    page = html(user_client.get(run.get_absolute_url(), **HTMX))

    assert LAYOUT not in page and 'hx-trigger="every 1s"' in page
    assert "Queued <time" in page and "5\xa0minutes ago" in page and ", started <time" in page
    assert "Scoring image <strong>208</strong> of 416 (50%)" in page
    assert "about 20 s left in this phase" in page
    assert "416 labeled images were frozen into this run" in page


def test_the_run_page_has_no_stale_queued_flash(user_client, project, enqueued):
    response = user_client.post(
        reverse("training-run-start", args=[project.slug]), start_form(), follow=True
    )

    page = html(response)
    assert 'class="messages"' not in page
    assert "Queued <time" in page


def test_a_run_downloading_its_weights_shows_the_download_as_its_own_phase(user_client, project):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING,
        phase=TrainingRun.Phase.DOWNLOADING,
        progress_done=11 * 1024**2,
        progress_total=44 * 1024**2,
        started_at=timezone.now(),
        phase_started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )

    page = html(user_client.get(run.get_absolute_url(), **HTMX))

    assert "Downloading ImageNet weights" in page and 'hx-trigger="every 1s"' in page
    assert "resnet18 ImageNet weights: <strong>11.0\xa0MB</strong> of 44.0\xa0MB (25%)" in page
    assert 'max="46137344" value="11534336"' in page


def test_a_finished_run_stops_polling_and_links_its_version(user_client, project):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    training.training_run_execute(run_id=run.pk)

    page = html(user_client.get(run.get_absolute_url()))

    assert "hx-trigger" not in page.split('id="run-status"')[1].split(">")[0]
    assert "Trained <a" in page and "v1" in page
    assert "trained from scratch" in page.lower()
    assert "Cancel run" not in page


def test_a_failed_run_shows_its_message(user_client, project):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED, error_message="2 image(s) cannot be read, e.g. x.png"
    )

    page = html(user_client.get(run.get_absolute_url()))

    assert "The run failed." in page and "cannot be read, e.g. x.png" in page


def test_a_silent_running_run_reads_as_failed(user_client, project, settings):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )

    page = html(user_client.get(run.get_absolute_url()))

    assert "The run failed." in page and "Start the run again" in page


def test_cancel_ends_a_queued_run_and_swaps_the_status(user_client, project):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)

    response = user_client.post(reverse("training-run-cancel", args=[run.pk]), **HTMX)

    page = html(response)
    assert LAYOUT not in page and "Cancelled before it started by" in page
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.CANCELLED


def test_cancel_needs_permission(client, project):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    client.force_login(UserFactory())

    assert client.post(reverse("training-run-cancel", args=[run.pk])).status_code == 403
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.PENDING


def test_a_queued_run_says_what_it_waits_for(user_client, project):
    first = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    second = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)

    page = html(user_client.get(second.get_absolute_url()))

    assert f'Queued behind <a href="{first.get_absolute_url()}">run #{first.pk}</a>' in page


def test_the_runs_table_polls_only_while_a_run_is_active(user_client, project):
    url = reverse("training-run-list", args=[project.slug])
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    assert 'hx-trigger="every 2s"' in html(user_client.get(url, **HTMX))

    training.training_run_cancel(run=run)

    page = html(user_client.get(url, **HTMX))
    assert "hx-trigger" not in page and "Cancelled" in page


def test_project_page_shows_the_latest_version(user_client, project):
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    training.training_run_execute(run_id=run.pk)

    page = html(user_client.get(project.get_absolute_url()))

    assert "Latest: <a" in page and "<strong>v1</strong>" in page
    assert "(trained from scratch)" in page


def test_project_page_offers_the_training_form_with_the_projects_choices(user_client):
    project = trainable_project(per_class=4, image_size=64, resize_method="crop")

    page = html(user_client.get(project.get_absolute_url()))

    assert f'action="{reverse("training-run-start", args=[project.slug])}"' in page
    assert 'name="image_size" value="64"' in page
    assert '<option value="crop" selected>' in page

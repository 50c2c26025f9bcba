"""`manage.py train`: queue a run, follow it with --wait, or run it --inline."""

import io

import pytest
from django.core.management import CommandError, call_command

from reviewapp import enqueue
from reviewapp.models import ModelVersion, TrainingRun
from tests.factories import trainable_project

TINY_ARGS = ["--size", "32", "--epochs", "1", "--freeze-epochs", "0", "--batch-size", "8",
             "--pretrained", "off", "--resize", "squish", "--no-augment"]  # fmt: skip


def train(*args) -> str:
    out = io.StringIO()
    call_command("train", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_inline_trains_here_and_reports_the_version():
    project = trainable_project(per_class=8)

    out = train("--project", project.slug, *TINY_ARGS, "--inline")

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.SUCCEEDED and run.worker == "inline"
    assert run.config["image_size"] == 32 and run.config["augment"] is False
    assert "Training: " in out and "Scoring every image: 16/16 (100%)" in out
    assert "epoch 1 (unfrozen): train loss" in out
    assert "Trained v1: accuracy" in out and "16 images scored" in out


@pytest.mark.django_db
def test_default_queues_the_run_for_a_worker(enqueued, django_capture_on_commit_callbacks):
    project = trainable_project(per_class=4)

    with django_capture_on_commit_callbacks(execute=True):
        out = train("--project", project.slug, "--epochs", "2", "--arch", "resnet34", "--lr-find")

    run = TrainingRun.objects.get()
    assert enqueued.ids(enqueue.TRAINING_RUN) == [run.pk]
    assert "Queued. Follow it at /runs/" in out
    assert run.config["architecture"] == "resnet34" and run.config["learning_rate"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "nope"], "No project 'nope'"),
        (["--epochs", "0"], "epochs must be between 1 and 200"),
    ],
)
def test_bad_arguments_fail_with_a_message(args, message):
    project = trainable_project(per_class=4)
    args = args if args[0] == "--project" else ["--project", project.slug, *args]

    with pytest.raises(CommandError, match=message):
        train(*args)
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_a_failed_inline_run_exits_with_its_reason():
    project = trainable_project(per_class=4)
    image = project.images.first()
    with open(image.file.path, "wb") as f:
        f.write(b"broken")

    with pytest.raises(CommandError, match="failed: 1 image\\(s\\) cannot be read"):
        train("--project", project.slug, *TINY_ARGS, "--inline")


@pytest.mark.django_db(transaction=True)
def test_wait_follows_a_real_worker_to_the_end(celery_worker):
    project = trainable_project(per_class=8)

    out = train("--project", project.slug, *TINY_ARGS, "--wait")

    assert "Queued; waiting for a worker" in out
    assert "Trained v1" in out
    assert ModelVersion.objects.get().scores.count() == 16

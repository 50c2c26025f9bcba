"""Training runs: queueing, the task path, versions, scores, cancel, failure and dead workers."""

import collections
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from reviewapp import training
from reviewapp.models import Image, ImageScore, ModelVersion, TrainingRun
from reviewapp.training import RunOutcome, execution, scoring
from reviewapp.training.outputs import output_dir
from reviewapp.training.progress import Progress
from tests.factories import TINY_TRAINING, ProjectFactory, make_image, trainable_project
from trainer import sha256_file

pytestmark = pytest.mark.django_db


def queued_run(project, **config) -> TrainingRun:
    return training.training_run_create(
        project=project, config={**TINY_TRAINING, **config}, enqueue=False
    )


@pytest.fixture
def project():
    return trainable_project(per_class=8)


def test_config_takes_the_projects_datablock_choices_then_overrides():
    project = ProjectFactory(image_size=96, resize_method="pad", augment=False, split_seed=7)

    config = training.train_config_for(project, {"epochs": 5, "learning_rate": None})

    assert (config.image_size, config.resize_method, config.augment) == (96, "pad", False)
    assert config.seed == 7 and config.epochs == 5
    assert config.learning_rate is None  # None asks for the lr finder
    assert config.architecture == "resnet18"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"architecture": "vgg"}, "architecture"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_training_settings_are_refused_by_name(project, overrides, field):
    with pytest.raises(ValidationError) as exc:
        training.training_run_create(project=project, config=overrides, enqueue=False)

    assert field in exc.value.message_dict
    assert not TrainingRun.objects.exists()


def test_a_project_with_one_class_cannot_train():
    project = trainable_project(per_class=4, classes=("red",))

    with pytest.raises(ValidationError, match="at least two classes"):
        queued_run(project)


def test_a_project_without_validation_images_cannot_train(project):
    Image.objects.filter(project=project).update(split=Image.Split.TRAIN)

    with pytest.raises(ValidationError, match=r"both splits \(train: 16, valid: 0\)"):
        queued_run(project)


def test_a_run_trains_a_version_and_scores_every_labeled_image(project):
    make_image(project, None)  # unlabeled: not trained on, not scored
    deleted = Image.objects.filter(project=project, label__isnull=False).first()
    Image.objects.filter(pk=deleted.pk).update(status=Image.Status.DELETED)
    run = queued_run(project)

    assert training.training_run_execute(run_id=run.pk) == RunOutcome.DONE

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    assert run.n_images == 15 and len(run.snapshot) == 15 and len(run.snapshot_sha256) == 64
    assert deleted.pk not in {pk for pk, _, _ in run.snapshot}
    assert len(run.epochs) == 1 and run.epochs[0]["phase"] == "unfrozen"
    assert run.started_at <= run.finished_at

    version = run.version
    assert (version.number, version.stage) == (1, ModelVersion.Stage.CANDIDATE)
    assert version.vocab == ["blue", "red"]
    assert sum(map(sum, version.confusion_matrix)) == version.metrics["n_valid"]
    assert not version.pretrained and "from scratch" in version.pretrained_note
    export = version.artifact_path()
    assert sha256_file(export) == version.export_sha256
    assert sha256_file(version.artifact_path("weights")) == (version.weights_sha256)
    # Exported to ONNX beside it, its answers checked against fastai's on every valid image.
    assert version.onnx_servable and version.onnx_error == ""
    assert sha256_file(version.artifact_path("onnx")) == version.onnx_sha256
    assert version.onnx_file.endswith("model.onnx") and version.onnx_spec["classes"] == [
        "blue",
        "red",
    ]
    assert version.onnx_parity_images == version.metrics["n_valid"]
    assert 0 <= version.onnx_max_prob_diff <= 1e-4

    scores = list(ImageScore.objects.filter(version=version).select_related("image"))
    assert len(scores) == version.n_scored == 15
    for score in scores:
        assert score.label_id == score.image.label_id
        assert score.split == score.image.split
        assert score.in_training == (score.image.split == Image.Split.TRAIN)
        assert score.predicted.name in version.vocab
        assert sum(score.probabilities) == pytest.approx(1, abs=1e-5)
        assert score.loss is not None and score.loss >= 0
    flagged = collections.Counter(
        (s.label_id, s.predicted_id, s.split) for s in scores if s.flagged
    )
    assert {(a, b, c): n for a, b, c, n in version.flag_counts} == flagged


def test_versions_are_numbered_per_project(project):
    for _ in range(2):
        training.training_run_execute(run_id=queued_run(project).pk)
    other = trainable_project(per_class=4)
    training.training_run_execute(run_id=queued_run(other).pk)

    assert list(project.model_versions.values_list("number", flat=True)) == [2, 1]
    assert list(other.model_versions.values_list("number", flat=True)) == [1]


def test_a_redelivered_message_does_nothing_twice(project):
    run = queued_run(project)
    training.training_run_execute(run_id=run.pk)

    assert training.training_run_execute(run_id=run.pk, redelivered=True) == RunOutcome.SKIPPED

    assert ModelVersion.objects.count() == 1
    assert ImageScore.objects.count() == 16
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED


def test_cancelling_a_queued_run_ends_it_before_it_starts(project, django_user_model):
    user = django_user_model.objects.create(username="ana")
    run = queued_run(project)

    training.training_run_cancel(run=run, actor=user)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert "by ana" in run.error_message
    assert training.training_run_execute(run_id=run.pk) == RunOutcome.SKIPPED
    assert not ModelVersion.objects.exists()


def test_cancel_stops_a_running_run_within_one_batch(project, monkeypatch):
    run = queued_run(project)
    batches = []
    real = Progress.training

    def cancel_after_first_batch(self, done, total, info):
        batches.append(done)
        if len(batches) == 1:
            training.training_run_cancel(run=TrainingRun.objects.get(pk=run.pk))
        real(self, done, total, info)

    monkeypatch.setattr(Progress, "training", cancel_after_first_batch)

    training.training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert batches == [1]  # the next batch never ran
    assert not ModelVersion.objects.exists()
    assert not output_dir(run.pk, project.pk).exists()


def test_cancelling_a_finished_run_is_refused(project):
    run = queued_run(project)
    training.training_run_execute(run_id=run.pk)

    with pytest.raises(ValidationError, match="already succeeded"):
        training.training_run_cancel(run=run)


def test_an_unreadable_image_fails_the_run_with_a_message(project):
    image = Image.objects.filter(project=project).first()
    Path(image.file.path).write_bytes(b"no longer an image")
    run = queued_run(project)

    training.training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "cannot be read" in run.error_message
    assert Path(image.file.name).name in run.error_message
    assert run.finished_at is not None
    assert not ModelVersion.objects.exists()


def test_an_unexpected_error_fails_the_run_and_is_raised(project, monkeypatch):
    def explode(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(execution, "_train", explode)
    run = queued_run(project)

    with pytest.raises(MemoryError):
        training.training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error_message == "Unexpected error: MemoryError: out of memory"


def test_a_second_run_of_a_project_waits_for_the_first(project):
    first, second = queued_run(project), queued_run(project)
    TrainingRun.objects.filter(pk=first.pk).update(
        status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now()
    )

    assert training.training_run_execute(run_id=second.pk) == RunOutcome.BUSY

    second.refresh_from_db()
    assert second.status == TrainingRun.Status.PENDING
    # Another project's run is not held up.
    other = queued_run(trainable_project(per_class=4))
    assert training.training_run_execute(run_id=other.pk) == RunOutcome.DONE


def test_a_run_whose_worker_went_silent_is_marked_failed(project, settings):
    run = queued_run(project)
    silent_since = timezone.now() - timedelta(seconds=settings.LOUPE_TRAINING_HEARTBEAT_TIMEOUT + 5)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING, heartbeat_at=silent_since
    )
    alive = queued_run(project)
    TrainingRun.objects.filter(pk=alive.pk).update(
        status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now()
    )

    assert training.training_runs_reap() == 1

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "stopped" in run.error_message and "Start the run again" in run.error_message
    assert TrainingRun.objects.get(pk=alive.pk).status == TrainingRun.Status.RUNNING


def test_a_restarted_worker_fails_the_runs_it_had(project):
    run = queued_run(project)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING, worker="w1@host", heartbeat_at=timezone.now()
    )

    assert training.training_runs_reap_worker(worker="w2@host") == 0
    assert training.training_runs_reap_worker(worker="w1@host") == 1

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "w1@host restarted" in run.error_message


def test_a_redelivered_running_run_means_its_worker_died(project):
    run = queued_run(project)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now()
    )

    assert training.training_run_execute(run_id=run.pk, redelivered=True) == RunOutcome.SKIPPED

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "stopped unexpectedly" in run.error_message


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_trains_and_scores_a_queued_run(celery_worker):
    project = trainable_project(per_class=8)
    run = training.training_run_create(project=project, config=TINY_TRAINING)
    seen_running = []

    def finished():
        run.refresh_from_db()
        if run.status == TrainingRun.Status.RUNNING:
            seen_running.append((run.phase, run.progress_done, run.progress_total))
        return run.is_finished

    assert wait_for(finished), f"run still {run.status}"
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    assert run.worker.startswith("celery@") or run.worker
    assert run.progress_done == run.progress_total == 16  # the scoring phase, complete
    assert ModelVersion.objects.get(run=run).scores.count() == 16


def test_a_failure_while_scoring_leaves_no_version_behind(project, monkeypatch):
    def broken_scoring(version, run, progress):
        raise OSError("disk full")

    monkeypatch.setattr(scoring, "version_score", broken_scoring)
    run = queued_run(project)

    with pytest.raises(OSError):
        training.training_run_execute(run_id=run.pk)

    assert not ModelVersion.objects.exists()
    assert not output_dir(run.pk, project.pk).exists()
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.FAILED


def test_cancel_while_scoring_discards_the_version(project, monkeypatch):
    monkeypatch.setattr(scoring, "SCORE_CHUNK", 4)
    run = queued_run(project)
    real_flush = scoring._flush

    def cancel_after_first_chunk(batch):
        n = real_flush(batch)
        TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
        return n

    monkeypatch.setattr(scoring, "_flush", cancel_after_first_chunk)

    training.training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert not ModelVersion.objects.exists() and not ImageScore.objects.exists()


@pytest.mark.django_db
def test_a_finished_run_tells_its_starter_and_asks_the_approvers():
    from reviewapp.models import Notification, Webhook
    from tests.factories import TINY_TRAINING, approver, reviewer, trainable_project

    rita, anna = reviewer(), approver()
    project = trainable_project(per_class=4)
    hook = Webhook.objects.create(
        project=project, url="http://127.0.0.1:9/hook", events=["run.succeeded", "run.failed"]
    )
    run = training.training_run_create(
        project=project, actor=rita, config=TINY_TRAINING, enqueue=False
    )
    training.training_run_execute(run_id=run.pk)
    run.refresh_from_db()

    done = Notification.objects.get(user=rita, kind="run.succeeded")
    assert f"run #{run.pk} succeeded as v1" in done.message
    waiting = Notification.objects.get(user=anna, kind="version.awaiting_approval")
    assert waiting.link == run.version.get_absolute_url()
    (delivery,) = hook.deliveries.all()
    assert delivery.payload["data"]["version_id"] == run.version.pk

    failed = training.training_run_create(
        project=project, actor=rita, config={**TINY_TRAINING, "epochs": 1}, enqueue=False
    )
    project.images.update(status="deleted")
    training.training_run_execute(run_id=failed.pk)
    note = Notification.objects.get(user=rita, kind="run.failed")
    assert f"run #{failed.pk} failed" in note.message
    assert hook.deliveries.filter(event="run.failed").count() == 1

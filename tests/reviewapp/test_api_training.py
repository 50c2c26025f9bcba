"""The JSON API for training runs, model versions, their scores and comparisons."""

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from reviewapp import enqueue, services, training
from reviewapp.api.training import TrainingSettingsIn
from reviewapp.models import Image, ImageScore, ModelVersion, Project, TrainingRun
from tests.factories import (
    TINY_TRAINING,
    ProjectFactory,
    UserFactory,
    reviewer,
    trainable_project,
)

pytestmark = pytest.mark.django_db

API = "/api/v1"


def token_client(user) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def reviewer_api():
    return token_client(reviewer(username="rex", password=None))


@dataclass
class Trained:
    """A project trained twice, shared by the module: inline training costs seconds."""

    project: Project
    first: ModelVersion
    second: ModelVersion
    media: Path


@pytest.fixture(scope="module")
def trained(django_db_setup, django_db_blocker, tmp_path_factory):
    # Committed outside the tests' transactions, so every test sees it and rolls back its own
    # changes; removed at the end so other modules start from an empty database.
    media = tmp_path_factory.mktemp("trained-media")
    with django_db_blocker.unblock(), override_settings(MEDIA_ROOT=media):
        owner = reviewer(username="tess", password=None)
        project = trainable_project(per_class=8, name="Colours", slug="colours")
        versions = []
        for seed in (1, 2):
            run = training.training_run_create(
                project=project, actor=owner, config={**TINY_TRAINING, "seed": seed}, enqueue=False
            )
            assert training.training_run_execute(run_id=run.pk) == training.RunOutcome.DONE
            versions.append(ModelVersion.objects.select_related("run").get(run=run))
    yield Trained(project=project, first=versions[0], second=versions[1], media=media)
    with django_db_blocker.unblock():
        Image.objects.filter(project=project).delete()  # their labels protect the categories
        project.delete()
        owner.delete()


def run_url(run_id: int) -> str:
    return f"{API}/training-runs/{run_id}"


def scores(client, version: ModelVersion, **params):
    return client.get(f"{API}/model-versions/{version.pk}/scores", params)


def queued_run(project: Project) -> TrainingRun:
    return training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)


# Starting a run ---------------------------------------------------------------------


def test_start_queues_a_run_after_commit_with_project_settings_and_overrides(
    reviewer_api, trained, enqueued, django_capture_on_commit_callbacks
):
    project = trained.project

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = reviewer_api.post(
            f"{API}/projects/colours/training-runs",
            {"epochs": 2, "architecture": "resnet34", "learning_rate": None},
            "application/json",
        )

    assert response.status_code == 201
    body = response.json()
    run = TrainingRun.objects.get(pk=body["id"])
    assert len(callbacks) == 1 and enqueued.ids(enqueue.TRAINING_RUN) == [run.pk]
    assert (run.status, run.created_by.username) == ("pending", "rex")
    assert run.config == body["config"]
    assert body["config"]["epochs"] == 2 and body["config"]["architecture"] == "resnet34"
    assert body["config"]["learning_rate"] is None  # an explicit null: use the lr finder
    # Not given: the project's DataBlock choices and the CPU defaults.
    assert body["config"]["image_size"] == project.image_size
    assert body["config"]["seed"] == project.split_seed
    assert body["config"]["batch_size"] == training.CPU_DEFAULTS["batch_size"]
    assert body["project"] == "colours"
    assert (body["status"], body["phase"]) == ("pending", "queued")
    assert body["progress"] == {"done": 0, "total": 0, "percent": 0}
    assert body["version_id"] is None and body["created_by"] == "rex"
    assert body["url"] == f"http://testserver{reverse('training-run', kwargs={'pk': run.pk})}"
    assert "snapshot" not in body


@pytest.mark.parametrize("body", ["", {}])
def test_start_without_settings_uses_the_defaults(reviewer_api, trained, body):
    response = reviewer_api.post(f"{API}/projects/colours/training-runs", body, "application/json")

    assert response.status_code == 201, response.json()
    expected = training.train_config_for(trained.project).to_dict()
    assert response.json()["config"] == expected
    assert expected["learning_rate"] is not None  # omitted is the default, not the lr finder


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"epochs": 0}, "epochs"),  # the trainer's range check
        ({"architecture": "vgg16"}, "architecture"),
        ({"image_size": "large"}, "image_size"),
        ({"batch_size": 4096}, "batch_size"),
    ],
)
def test_start_with_a_bad_setting_is_400_naming_it(reviewer_api, trained, given, field):
    response = reviewer_api.post(f"{API}/projects/colours/training-runs", given, "application/json")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]
    assert response.json()["detail"].startswith(f"{field}: ")
    assert TrainingRun.objects.filter(status="pending").count() == 0


def test_start_with_an_unknown_setting_is_400(reviewer_api, trained):
    response = reviewer_api.post(
        f"{API}/projects/colours/training-runs", {"epoch": 3}, "application/json"
    )

    assert response.status_code == 400
    assert response.json()["detail"] == "epoch: Extra inputs are not permitted"
    assert not TrainingRun.objects.filter(status="pending").exists()


def test_start_on_a_project_that_cannot_train_says_why(reviewer_api):
    ProjectFactory(slug="empty")

    response = reviewer_api.post(f"{API}/projects/empty/training-runs", {}, "application/json")

    assert response.status_code == 400
    assert "at least two classes" in response.json()["detail"]
    assert not TrainingRun.objects.filter(project__slug="empty").exists()


def test_the_settings_schema_takes_exactly_the_training_settings():
    assert set(TrainingSettingsIn.model_fields) == set(training.CONFIG_FIELDS)


# Permissions and errors -------------------------------------------------------------


def call(client, method: str, url: str):
    if method == "post":
        return client.post(url, {}, "application/json")
    return client.get(url)


def endpoints(trained):
    a, b = trained.first, trained.second
    return [
        ("post", f"{API}/projects/colours/training-runs", "reviewapp.add_trainingrun"),
        ("get", f"{API}/projects/colours/training-runs", "reviewapp.view_trainingrun"),
        ("get", run_url(a.run_id), "reviewapp.view_trainingrun"),
        ("post", f"{run_url(a.run_id)}/cancel", "reviewapp.change_trainingrun"),
        ("get", f"{API}/projects/colours/model-versions", "reviewapp.view_modelversion"),
        ("get", f"{API}/model-versions/{a.pk}", "reviewapp.view_modelversion"),
        ("get", f"{API}/model-versions/{a.pk}/scores", "reviewapp.view_imagescore"),
        ("get", f"{API}/model-versions/{a.pk}/compare/{b.pk}", "reviewapp.view_modelversion"),
    ]


def test_a_user_without_permissions_gets_403_naming_the_permission(trained):
    client = token_client(UserFactory(password=None))  # in no group

    for method, url, perm in endpoints(trained):
        response = call(client, method, url)
        assert response.status_code == 403, url
        assert f"it needs the '{perm}' permission" in response.json()["detail"], url
    assert TrainingRun.objects.filter(project=trained.project).count() == 2
    assert not TrainingRun.objects.filter(cancel_requested=True).exists()


def test_anonymous_requests_get_401(trained):
    client = Client()

    for method, url, _ in endpoints(trained):
        response = call(client, method, url)
        assert response.status_code == 401, url
        assert "Authorization: Bearer" in response.json()["detail"]
    assert TrainingRun.objects.filter(project=trained.project).count() == 2


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        (f"{API}/projects/nope/training-runs", "No project 'nope'."),
        (f"{API}/training-runs/999999", "No training run 999999."),
        (f"{API}/projects/nope/model-versions", "No project 'nope'."),
        (f"{API}/model-versions/999999", "No model version 999999."),
        (f"{API}/model-versions/999999/scores", "No model version 999999."),
    ],
)
def test_unknown_objects_are_404_json(reviewer_api, url, detail):
    response = reviewer_api.get(url)

    assert response.status_code == 404
    assert response.json() == {"detail": detail}


# Following runs ---------------------------------------------------------------------


def test_run_trained_inline_shows_progress_epochs_and_its_version(reviewer_api, trained):
    run = trained.first.run

    response = reviewer_api.get(run_url(run.pk))

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["phase"], body["error_message"]) == ("succeeded", "done", "")
    assert body["version_id"] == trained.first.pk
    assert body["progress"] == {"done": 16, "total": 16, "percent": 100}  # every image scored
    assert len(body["epochs"]) == TINY_TRAINING["epochs"]
    assert set(body["epochs"][0]) == {
        "epoch",
        "phase",
        "train_loss",
        "valid_loss",
        "error_rate",
        "accuracy",
    }
    assert body["epochs"] == run.epochs
    assert body["n_images"] == 16
    assert body["snapshot_sha256"] == run.snapshot_sha256 and len(run.snapshot_sha256) == 64
    assert body["created_by"] == "tess"
    assert body["started_at"] and body["finished_at"]
    assert "snapshot" not in body


def test_run_list_is_newest_first_and_takes_a_limit(reviewer_api, trained):
    newest = queued_run(trained.project)
    url = f"{API}/projects/colours/training-runs"

    listed = reviewer_api.get(url).json()
    limited = reviewer_api.get(url, {"limit": 1}).json()

    assert listed["next"] is None
    runs = listed["items"]
    assert [r["id"] for r in runs] == [newest.pk, trained.second.run_id, trained.first.run_id]
    assert [r["version_id"] for r in runs] == [None, trained.second.pk, trained.first.pk]
    assert all("snapshot" not in r for r in runs)
    assert [r["id"] for r in limited["items"]] == [newest.pk]
    # ``next`` keeps the limit and walks on to the older runs.
    second = reviewer_api.get(limited["next"]).json()
    assert [r["id"] for r in second["items"]] == [trained.second.run_id]
    assert reviewer_api.get(url, {"limit": 0}).status_code == 400


def test_a_run_whose_worker_died_reads_as_failed(reviewer_api, trained):
    run = queued_run(trained.project)
    silent_since = timezone.now() - timedelta(hours=1)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING, started_at=silent_since, heartbeat_at=silent_since
    )

    body = reviewer_api.get(run_url(run.pk)).json()

    assert (body["status"], body["phase"]) == ("failed", "done")
    assert "stopped" in body["error_message"] and "Start the run again" in body["error_message"]
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.FAILED


def test_cancel_a_queued_run_ends_it(reviewer_api, trained):
    run = queued_run(trained.project)

    response = reviewer_api.post(f"{run_url(run.pk)}/cancel")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["phase"]) == ("cancelled", "done")
    assert body["error_message"] == "Cancelled before it started by rex."
    assert body["finished_at"]
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED


def test_cancel_a_running_run_asks_its_worker_to_stop(reviewer_api, trained):
    run = queued_run(trained.project)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now()
    )

    body = reviewer_api.post(f"{run_url(run.pk)}/cancel").json()

    assert (body["status"], body["cancel_requested"]) == ("running", True)
    assert TrainingRun.objects.get(pk=run.pk).cancel_requested


def test_cancel_a_finished_run_is_400(reviewer_api, trained):
    run_id = trained.first.run_id

    response = reviewer_api.post(f"{run_url(run_id)}/cancel")

    assert response.status_code == 400
    assert response.json()["detail"] == f"Run {run_id} has already succeeded."
    run = TrainingRun.objects.get(pk=run_id)
    assert (run.status, run.error_message) == ("succeeded", "")


# Model versions ---------------------------------------------------------------------


def test_version_list_is_newest_first(reviewer_api, trained):
    response = reviewer_api.get(f"{API}/projects/colours/model-versions")

    assert response.status_code == 200
    body = response.json()["items"]
    assert [(v["id"], v["number"], v["label"]) for v in body] == [
        (trained.second.pk, 2, "v2"),
        (trained.first.pk, 1, "v1"),
    ]
    first = body[1]
    assert first["run_id"] == trained.first.run_id
    assert (first["stage"], first["project"]) == ("candidate", "colours")
    assert first["accuracy"] == trained.first.metrics["accuracy"]
    assert first["error_rate"] == trained.first.metrics["error_rate"]
    assert (first["pretrained"], first["pretrained_note"]) == (False, trained.first.pretrained_note)
    assert first["url"] == f"http://testserver{trained.first.get_absolute_url()}"
    assert "metrics" not in first and "vocab" not in first


def test_version_detail_has_confusion_matrix_metrics_and_artifact_digests(reviewer_api, trained):
    version = trained.first

    body = reviewer_api.get(f"{API}/model-versions/{version.pk}").json()

    vocab = body["vocab"]
    assert sorted(vocab) == ["blue", "red"]
    matrix = body["confusion_matrix"]
    assert matrix["classes"] == vocab
    assert [len(row) for row in matrix["matrix"]] == [len(vocab)] * len(vocab)
    assert sum(map(sum, matrix["matrix"])) == 4  # every validation image, once
    assert body["metrics"]["accuracy"] == body["accuracy"]
    assert {c["name"] for c in body["metrics"]["per_class"]} == set(vocab)
    assert body["config"] == version.run.config
    assert body["n_scored"] == 16
    assert body["snapshot_sha256"] == version.run.snapshot_sha256
    for field, name in [("export_sha256", "export_file"), ("weights_sha256", "weights_file")]:
        stored = trained.media / getattr(version, name)
        assert body[field] == hashlib.sha256(stored.read_bytes()).hexdigest()


# Scores -----------------------------------------------------------------------------


def test_scores_come_highest_loss_first_with_named_probabilities(reviewer_api, trained):
    version = trained.first

    response = scores(reviewer_api, version)

    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 16 and response.json()["next"] is None
    losses = [i["loss"] for i in items]
    assert losses == sorted(losses, reverse=True)
    stored = {s.image_id: s for s in ImageScore.objects.filter(version=version)}
    for item in items:
        score = stored[item["image_id"]]
        assert list(item["probabilities"]) == version.vocab
        assert list(item["probabilities"].values()) == pytest.approx(score.probabilities)
        assert item["label"] == score.label.name and item["predicted"] == score.predicted.name
        assert item["correct"] == (item["label"] == item["predicted"])
        assert (item["split"], item["in_training"]) == (score.split, score.split == "train")
        assert item["confidence"] == pytest.approx(max(score.probabilities))


def test_scores_filter_by_label_and_split_and_leave_out_deleted_images(reviewer_api, trained):
    version = trained.first
    deleted = Image.objects.filter(project=trained.project, label__name="red").first()
    Image.objects.filter(pk=deleted.pk).update(status=Image.Status.DELETED)
    red = Image.objects.filter(project=trained.project, label__name="red", status="active")

    by_label = scores(reviewer_api, version, label="red").json()["items"]
    by_both = scores(reviewer_api, version, label="red", split="valid").json()["items"]
    unfiltered = scores(reviewer_api, version, label="", split="").json()["items"]

    assert sorted(i["image_id"] for i in by_label) == sorted(red.values_list("id", flat=True))
    assert deleted.pk not in {i["image_id"] for i in unfiltered}
    assert len(unfiltered) == 15
    valid_red = red.filter(split="valid").values_list("id", flat=True)
    assert sorted(i["image_id"] for i in by_both) == sorted(valid_red)
    assert {(i["label"], i["split"]) for i in by_both} == {("red", "valid")}


def test_scores_can_filter_by_prediction_and_order_by_confidence(reviewer_api, trained):
    version = trained.first
    predicted = ImageScore.objects.filter(version=version).first().predicted.name

    items = scores(reviewer_api, version, predicted=predicted, order="confidence").json()["items"]

    expected = ImageScore.objects.filter(version=version, predicted__name=predicted)
    assert {i["image_id"] for i in items} == set(expected.values_list("image_id", flat=True))
    confidences = [i["confidence"] for i in items]
    assert confidences == sorted(confidences)


def test_score_pages_follow_next_without_overlap(reviewer_api, trained):
    everything = [i["image_id"] for i in scores(reviewer_api, trained.first).json()["items"]]

    pages, url = [], f"{API}/model-versions/{trained.first.pk}/scores?limit=5&split=train"
    while url:
        body = reviewer_api.get(url).json()
        pages.append([i["image_id"] for i in body["items"]])
        url = body["next"]

    assert [len(p) for p in pages] == [5, 5, 2]
    train_ids = set(
        Image.objects.filter(project=trained.project, split="train").values_list("id", flat=True)
    )
    assert [i for page in pages for i in page] == [i for i in everything if i in train_ids]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"label": "green"}, "label: No category 'green' in project 'colours'."),
        ({"predicted": "Red"}, "predicted: No category 'Red' in project 'colours'."),
    ],
)
def test_scores_for_an_unknown_class_are_400_naming_the_valid_ones(
    reviewer_api, trained, params, detail
):
    response = scores(reviewer_api, trained.first, **params)

    assert response.status_code == 400
    assert response.json()["detail"] == f"{detail} Valid labels: 'red', 'blue'."


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"order": "random"}, "order"),
        ({"split": "test"}, "split"),
    ],
)
def test_scores_with_a_bad_parameter_are_400(reviewer_api, trained, params, field):
    response = scores(reviewer_api, trained.first, **params)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_scores_cost_the_same_queries_for_any_page_size(
    reviewer_api, trained, django_assert_max_num_queries
):
    scores(reviewer_api, trained.first)  # warm up: the token's last use is recorded once

    counts = []
    for limit in (1, 16):
        with CaptureQueriesContext(connection) as captured:
            response = scores(reviewer_api, trained.first, label="red", limit=limit)
        assert len(response.json()["items"]) == min(limit, 8)
        counts.append(len(captured))

    assert counts[0] == counts[1]
    # Token, the user's and group permissions, the version, the category, one page.
    with django_assert_max_num_queries(6):
        scores(reviewer_api, trained.first, label="red", limit=16)


# Comparing versions -----------------------------------------------------------------


def test_compare_two_versions_lists_metrics_class_errors_and_changed_predictions(
    reviewer_api, trained
):
    a, b = trained.first, trained.second
    # Make sure one prediction differs: under B, the first image predicts the other class.
    moved = ImageScore.objects.filter(version=a).select_related("predicted").first()
    other = trained.project.categories.exclude(pk=moved.predicted_id).get()
    ImageScore.objects.filter(version=b, image_id=moved.image_id).update(predicted=other)
    a_scores = {s.image_id: s for s in ImageScore.objects.filter(version=a)}
    b_scores = {s.image_id: s for s in ImageScore.objects.filter(version=b)}
    changed = {i for i in a_scores if a_scores[i].predicted_id != b_scores[i].predicted_id}

    response = reviewer_api.get(f"{API}/model-versions/{a.pk}/compare/{b.pk}")

    assert response.status_code == 200
    body = response.json()
    assert (body["a"]["id"], body["b"]["id"]) == (a.pk, b.pk)
    assert [m["name"] for m in body["metrics"]][:2] == ["accuracy", "error_rate"]
    assert body["metrics"][0] == {
        "name": "accuracy",
        "a": a.metrics["accuracy"],
        "b": b.metrics["accuracy"],
    }
    assert [c["name"] for c in body["classes"]] == a.vocab
    assert {c["a_support"] for c in body["classes"]} == {2}  # two validation images per class
    assert body["n_changed"] == len(changed) >= 1
    assert {c["image_id"] for c in body["changes"]} == changed
    change = next(c for c in body["changes"] if c["image_id"] == moved.image_id)
    assert (change["a_predicted"], change["b_predicted"]) == (moved.predicted.name, other.name)
    assert change["label"] == Image.objects.get(pk=moved.image_id).label.name
    fixed = sum(not a_scores[i].is_correct and b_scores[i].is_correct for i in changed)
    assert body["n_fixed"] == fixed
    assert body["n_broken"] == len(changed) - fixed  # two classes: a change fixes or breaks


def test_compare_versions_of_different_projects_is_400(reviewer_api, trained):
    elsewhere = ModelVersion.objects.create(
        project=ProjectFactory(slug="elsewhere"),
        number=1,
        export_file="models/x/export.pkl",
        export_sha256="0" * 64,
        weights_file="models/x/weights.pth",
        weights_sha256="0" * 64,
        config={},
        vocab=["red", "blue"],
    )

    response = reviewer_api.get(f"{API}/model-versions/{trained.first.pk}/compare/{elsewhere.pk}")

    assert response.status_code == 400
    assert "belong to different projects" in response.json()["detail"]


def test_compare_with_an_unknown_version_is_404(reviewer_api, trained):
    response = reviewer_api.get(f"{API}/model-versions/{trained.first.pk}/compare/999999")

    assert response.status_code == 404
    assert response.json() == {"detail": "No model version 999999."}


# Schema -----------------------------------------------------------------------------


def test_openapi_documents_the_training_and_model_endpoints():
    schema = Client().get(f"{API}/openapi.json").json()
    paths = schema["paths"]

    operations = {
        ("/api/v1/projects/{slug}/training-runs", "post"): "training_run_start",
        ("/api/v1/projects/{slug}/training-runs", "get"): "training_run_list",
        ("/api/v1/training-runs/{run_id}", "get"): "training_run_detail",
        ("/api/v1/training-runs/{run_id}/cancel", "post"): "training_run_cancel",
        ("/api/v1/projects/{slug}/model-versions", "get"): "model_version_list",
        ("/api/v1/model-versions/{version_id}", "get"): "model_version_detail",
        ("/api/v1/model-versions/{version_id}/scores", "get"): "model_version_scores",
        ("/api/v1/model-versions/{a_id}/compare/{b_id}", "get"): "model_version_compare",
    }
    for (path, method), operation_id in operations.items():
        operation = paths[path][method]
        assert operation["operationId"] == operation_id
        assert set(operation["responses"]) >= {"400", "401", "403", "404"}
        assert operation["tags"] == (["training"] if "training" in operation_id else ["models"])
    run_schema = schema["components"]["schemas"]["TrainingRunOut"]
    assert "snapshot" not in run_schema["properties"]
    assert "version_id" in run_schema["properties"]

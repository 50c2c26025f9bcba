"""The API keeps answering in JSON through faults: a broker that is down, ids past the
database's range, values the schema forbids, and errors nobody foresaw."""

import logging

import pytest
from django.test import Client
from django.urls import reverse
from kombu.exceptions import OperationalError

from reviewapp import services
from reviewapp.api import api
from reviewapp.models import LabelAudit, TrainingRun
from tests.factories import approver, scored_version, trainable_project

API = "/api/v1"
TOO_BIG = 2**63


def token_client(user) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def approver_api(db):
    return token_client(approver(username="ada"))


@pytest.fixture
def broker_down(monkeypatch):
    def refuse(task, args, countdown=None):
        raise OperationalError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr("reviewapp.enqueue._dispatch", refuse)


# The broker is down --------------------------------------------------------------------
# Transactional: the job is sent when the service's own transaction commits, in the request.


@pytest.mark.django_db(transaction=True)
def test_a_training_run_started_while_the_broker_is_down_is_503_and_failed(
    approver_api, broker_down
):
    project = trainable_project(per_class=4)

    response = approver_api.post(
        f"{API}/projects/{project.slug}/training-runs", {}, content_type="application/json"
    )

    assert response.status_code == 503
    assert response.json() == {"detail": "The job queue is unavailable; try again."}
    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error_message.startswith("The job queue is unavailable: OperationalError")
    assert run.finished_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_label_audit_started_while_the_broker_is_down_is_503_and_failed(
    approver_api, broker_down
):
    project = trainable_project(per_class=4)
    scored_version(project, [])

    response = approver_api.post(
        f"{API}/projects/{project.slug}/label-audits",
        {"mode": "fast", "k": 2},
        content_type="application/json",
    )

    assert response.status_code == 503
    assert response.json()["detail"] == "The job queue is unavailable; try again."
    audit = LabelAudit.objects.get()
    assert audit.status == LabelAudit.Status.FAILED
    assert "connection refused" in audit.error_message.lower()


@pytest.mark.django_db(transaction=True)
def test_the_training_page_says_the_queue_is_down_instead_of_a_500(broker_down):
    project = trainable_project(per_class=4)
    client = Client()
    client.force_login(approver(username="ada"))
    form = {
        "architecture": "resnet18",
        "image_size": 32,
        "resize_method": "squish",
        "epochs": 1,
        "freeze_epochs": 0,
        "learning_rate": "0.002",
        "batch_size": 8,
        "pretrained": "off",
    }

    response = client.post(reverse("training-run-start", args=[project.slug]), form)

    assert response.status_code == 200
    assert "The job queue is unavailable; try again." in response.content.decode()
    assert TrainingRun.objects.get().status == TrainingRun.Status.FAILED


# Ids past the database's range ---------------------------------------------------------


def test_a_decision_on_an_image_id_past_the_database_range_is_404_json(approver_api):
    response = approver_api.post(
        f"{API}/images/{TOO_BIG}/decisions",
        {"action": "confirm", "revision": 1},
        content_type="application/json",
    )

    assert response.status_code == 404
    assert response.json() == {"detail": f"No image {TOO_BIG}."}


def test_a_bulk_decision_with_an_id_past_the_database_range_is_400_naming_it(approver_api):
    project = trainable_project(per_class=1)

    response = approver_api.post(
        f"{API}/projects/{project.slug}/decisions",
        {"action": "confirm", "images": [{"id": TOO_BIG, "revision": 1}]},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "images.0.id" in response.json()["errors"]


@pytest.mark.parametrize(
    "path",
    [
        "/images/{id}",
        "/training-runs/{id}",
        "/model-versions/{id}",
        "/label-audits/{id}",
        "/predictions/{id}",
        "/images/{id}/history",
    ],
)
def test_path_ids_past_the_database_range_are_404(approver_api, path):
    response = approver_api.get(API + path.format(id=TOO_BIG))

    assert response.status_code == 404
    assert response.json()["detail"].endswith(f" {TOO_BIG}.")


# What the schema forbids ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Birds", "split_seed": False},
        {"name": "Birds", "split_seed": "3"},
        {"name": "Birds", "augment": 1},
        {"name": "Birds", "split_seed": 2**64},
    ],
)
def test_a_wrong_type_or_a_number_past_64_bits_is_refused(approver_api, body):
    # 400, the API's status for any invalid body (see reviewapp.api.errors).
    response = approver_api.post(f"{API}/projects", body, content_type="application/json")

    assert response.status_code == 400
    [field] = set(body) - {"name"}
    assert field in response.json()["errors"]


def test_enum_components_are_named_apart_and_hold_their_own_values():
    schemas = api.get_openapi_schema()["components"]["schemas"]

    def enum_of(model: str, field: str) -> list[str]:
        prop = schemas[model]["properties"][field]
        ref = prop.get("$ref") or next(p["$ref"] for p in prop.get("anyOf", []) if "$ref" in p)
        return schemas[ref.rsplit("/", 1)[1]]["enum"]

    assert enum_of("TrainingRunOut", "status") == [
        "pending",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert enum_of("ImageOut", "status") == ["active", "deleted"]
    assert enum_of("DeliveryOut", "status") == ["pending", "succeeded", "failed"]


# The unforeseen ------------------------------------------------------------------------


def test_an_unexpected_error_is_500_json_with_a_request_id_that_is_logged(
    approver_api, monkeypatch, caplog
):
    def broken(project):
        raise RuntimeError("the disk caught fire")

    trainable_project(per_class=1)
    monkeypatch.setattr("reviewapp.api.projects.project_out", broken)

    with caplog.at_level(logging.ERROR, logger="reviewapp.api.errors"):
        response = approver_api.get(f"{API}/projects")

    assert response.status_code == 500
    body = response.json()
    request_id = body["request_id"]
    assert body["detail"] == f"Something went wrong on our side; it was logged as {request_id}."
    assert response["X-Request-ID"] == request_id
    [record] = [r for r in caplog.records if request_id in r.getMessage()]
    assert "the disk caught fire" in str(record.exc_info[1])


def test_every_operation_documents_500():
    paths = api.get_openapi_schema()["paths"]

    undocumented = [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method, operation in operations.items()
        if 500 not in operation["responses"] and "500" not in operation["responses"]
    ]
    assert undocumented == []

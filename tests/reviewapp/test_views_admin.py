"""The Django admin: every model listed; the audit log and token hashes stay untouchable."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from reviewapp import services
from reviewapp.models import ImageScore, LabelEvent, ModelVersion, TrainingRun, UploadBatch
from tests.factories import CategoryFactory, ProjectFactory, make_image

pytestmark = pytest.mark.django_db

MODELS = [
    "project",
    "category",
    "image",
    "labelevent",
    "uploadbatch",
    "apitoken",
    "trainingrun",
    "modelversion",
    "imagescore",
]


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("root", password="correct horse battery staple")
    client.force_login(user)
    project = ProjectFactory()
    category = CategoryFactory(project=project)
    make_image(project, category)
    UploadBatch.objects.create(project=project, staging_dir="staging/x", created_by=user)
    services.api_token_create(user=user, name="script")
    # Rows as a finished run leaves them; the admin only displays them.
    run = TrainingRun.objects.create(
        project=project, config={"epochs": 1}, status="succeeded", snapshot_sha256="ab" * 32
    )
    version = ModelVersion.objects.create(
        project=project, number=1, run=run, export_file="m/export.pkl", export_sha256="0" * 64,
        weights_file="m/weights.pth", weights_sha256="1" * 64, config=run.config,
        vocab=[category.name], metrics={"accuracy": 1.0},
    )  # fmt: skip
    ImageScore.objects.create(
        version=version, image=project.images.get(), label=category, predicted=category,
        confidence=0.9, loss=0.1, probabilities=[1.0], split="train", in_training=True,
    )  # fmt: skip
    return client


@pytest.mark.parametrize("model", MODELS)
def test_admin_changelist_and_change_page_open(admin_client, model):
    response = admin_client.get(reverse(f"admin:reviewapp_{model}_changelist"))
    assert response.status_code == 200
    from django.apps import apps

    obj = apps.get_model("reviewapp", model).objects.first()
    response = admin_client.get(reverse(f"admin:reviewapp_{model}_change", args=[obj.pk]))
    assert response.status_code == 200


def test_admin_cannot_add_change_or_delete_label_events(admin_client):
    event = LabelEvent.objects.first()
    assert admin_client.get(reverse("admin:reviewapp_labelevent_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:reviewapp_labelevent_delete", args=[event.pk]))
    ).status_code == 403
    page = admin_client.get(reverse("admin:reviewapp_labelevent_change", args=[event.pk]))
    assert b'name="note"' not in page.content  # shown read-only, no input
    assert b'type="submit" value="Save"' not in page.content


def test_admin_never_shows_a_token_hash(admin_client):
    from reviewapp.models import ApiToken

    token = ApiToken.objects.get()
    page = admin_client.get(reverse("admin:reviewapp_apitoken_change", args=[token.pk]))
    assert token.key_hash.encode() not in page.content
    assert b"key_hash" not in page.content
    assert token.prefix.encode() in page.content
    assert admin_client.get(reverse("admin:reviewapp_apitoken_add")).status_code == 403


def test_admin_cannot_edit_what_workers_wrote(admin_client):
    run, version = TrainingRun.objects.get(), ModelVersion.objects.get()
    page = admin_client.get(reverse("admin:reviewapp_trainingrun_change", args=[run.pk]))
    assert b"snapshot_sha256" in page.content or run.snapshot_sha256.encode() in page.content
    assert b'name="snapshot"' not in page.content
    assert b'type="submit" value="Save"' not in page.content
    assert admin_client.get(reverse("admin:reviewapp_modelversion_add")).status_code == 403
    delete = reverse("admin:reviewapp_modelversion_delete", args=[version.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert ModelVersion.objects.filter(pk=version.pk).exists()

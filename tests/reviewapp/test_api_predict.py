"""POST /api/v1/projects/{slug}/predict and /predict/batch, GET /api/v1/predictions/{id}."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from reviewapp import services, serving
from reviewapp.models import ModelVersion, Prediction
from tests.factories import (
    UserFactory,
    reviewer,
    served_version,
    trainable_project,
)
from tests.images import image_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("serving_inline")]

Stage = ModelVersion.Stage
RED, BLUE = (220, 40, 40), (40, 40, 220)


@pytest.fixture
def project(model):
    project = trainable_project(per_class=1, classes=("red", "blue"))
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    return project


@pytest.fixture
def key(project):
    return serving.client_token_create(project=project, client="shop")[1]


def upload(color=RED, name="photo.png", seed=1):
    return SimpleUploadedFile(name, image_bytes(color, size=(30, 24), seed=seed), "image/png")


def url(project, batch=False):
    return f"/api/v1/projects/{project.slug}/predict" + ("/batch" if batch else "")


def post(client, project, key=None, data=None, batch=False):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post(url(project, batch), data or {"image": upload()}, headers=headers)


def test_a_client_token_gets_a_prediction(client, project, key):
    response = post(client, project, key, {"image": upload(RED), "client_key": "user-42"})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["label"] == "red" and body["stage"] == "live" and body["version"] == 1
    assert set(body["probabilities"]) == {"red", "blue"}
    assert body["confidence"] == pytest.approx(body["probabilities"]["red"])
    assert isinstance(body["needs_review"], bool) and body["request_id"]
    stored = Prediction.objects.get(pk=body["id"])
    assert stored.client.client == "shop" and stored.client_key == "user-42"
    assert stored.client.last_used_at is not None


def test_missing_and_unknown_tokens_get_401(client, project):
    missing = post(client, project)
    unknown = post(client, project, "lpc_not-a-real-token")
    unknown_personal = post(client, project, "lp_not-a-real-token")

    for response in (missing, unknown, unknown_personal):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="loupe"'
    assert "client token is not valid" in unknown.json()["detail"]
    # A predict caller is pointed at client tokens, never at personal ones.
    for response in (missing, unknown_personal):
        detail = response.json()["detail"]
        assert "client token" in detail and "create_api_token" in detail
        assert "create_user_token" not in detail
    assert not Prediction.objects.exists()


def test_a_revoked_token_gets_401(client, project):
    token, key = serving.client_token_create(project=project, client="old app")
    serving.client_token_revoke(token=token)

    response = post(client, project, key)

    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert not Prediction.objects.exists()


def test_a_token_of_another_project_gets_403(client, project, model):
    other = trainable_project(per_class=1, classes=("red", "blue"))
    _, other_key = serving.client_token_create(project=other, client="elsewhere")

    response = post(client, project, other_key)

    assert response.status_code == 403
    assert f"belongs to project '{other.slug}'" in response.json()["detail"]
    assert not Prediction.objects.exists()


def test_a_bad_image_gets_400_with_the_reason(client, project, key):
    bad = SimpleUploadedFile("notes.png", b"plain text, not a picture", "image/png")

    response = post(client, project, key, {"image": bad})

    assert response.status_code == 400
    body = response.json()
    assert "notes.png" in body["detail"] and body["errors"]["image"]
    assert not Prediction.objects.exists()


def test_no_image_gets_400(client, project, key):
    response = post(client, project, key, {"client_key": "x"})
    assert response.status_code == 400
    assert "No image was sent" in response.json()["detail"]


def test_a_project_without_a_live_version_answers_503(client, project, key):
    ModelVersion.objects.filter(project=project).update(stage=Stage.RETIRED)

    response = post(client, project, key)

    assert response.status_code == 503
    assert "no live model version" in response.json()["detail"]


def test_shadow_answers_are_never_in_the_response(client, project, key, crossed_model):
    shadow = served_version(project, crossed_model, stage=Stage.SHADOW)

    body = post(client, project, key, {"image": upload(RED)}).json()

    assert body["label"] == "red" and body["version"] == 1
    assert "shadow" not in str(body).lower()
    stored = Prediction.objects.get(is_shadow=True)
    assert stored.version == shadow and stored.label == "blue"
    assert str(stored.request_id) == body["request_id"]
    detail = client.get(
        f"/api/v1/predictions/{stored.pk}", headers={"Authorization": f"Bearer {key}"}
    )
    assert detail.status_code == 404  # shadow answers are not served, not even by id


def test_the_batch_endpoint_answers_each_image_with_its_own_request_id(client, project, key):
    images = [upload(RED, "a.png", 1), upload(BLUE, "b.png", 2), upload(RED, "c.png", 3)]

    response = post(client, project, key, {"images": images}, batch=True)

    assert response.status_code == 200, response.content
    answers = response.json()["predictions"]
    assert [a["label"] for a in answers] == ["red", "blue", "red"]
    assert len({a["request_id"] for a in answers}) == 3


def test_a_bad_image_in_a_batch_is_answered_with_its_error_in_its_place(
    client, project, key, settings, crossed_model
):
    settings.LOUPE_MAX_FILE_BYTES = 2**20
    served_version(project, crossed_model, stage=Stage.SHADOW)

    def bad():
        return SimpleUploadedFile("broken.jpg", b"\xff\xd8 not really", "image/jpeg")

    huge = SimpleUploadedFile("huge.png", b"\0" * (3 * 2**20), "image/png")
    images = [upload(RED, "a.png", 1), bad(), upload(BLUE, "b.png", 2), huge]
    refused = post(client, project, key, {"image": bad()}).json()["errors"]["image"]

    response = post(client, project, key, {"images": images}, batch=True)

    assert response.status_code == 200, response.content
    body = response.json()
    red, broken, blue, too_big = body["results"]
    assert (red["label"], blue["label"]) == ("red", "blue")
    assert broken == {"file": "broken.jpg", "error": refused[0].removeprefix("broken.jpg: ")}
    # Its real size, though only the limit and a byte of it were read.
    assert too_big == {
        "file": "huge.png",
        "error": "file is 3.0 MiB, over the limit of 1.0 MiB (LOUPE_MAX_FILE_BYTES)",
    }
    assert body["predictions"] == [red, blue]  # what older clients read
    stored = Prediction.objects.filter(is_shadow=False).order_by("id")
    assert [p.pk for p in stored] == [red["id"], blue["id"]]
    assert [p.label for p in stored] == ["red", "blue"]
    shadows = Prediction.objects.filter(is_shadow=True).order_by("id")
    assert [(str(p.request_id), p.label) for p in shadows] == [
        (red["request_id"], "blue"),
        (blue["request_id"], "red"),
    ]


def test_a_batch_of_only_bad_images_gets_400_naming_each(client, project, key):
    images = [
        SimpleUploadedFile("broken.jpg", b"\xff\xd8 not really", "image/jpeg"),
        SimpleUploadedFile("notes.png", b"plain text, not a picture", "image/png"),
    ]

    response = post(client, project, key, {"images": images}, batch=True)

    assert response.status_code == 400
    body = response.json()
    assert "broken.jpg" in body["detail"] and "notes.png" in body["detail"]
    assert len(body["errors"]["image"]) == 2
    assert not Prediction.objects.exists()


def test_the_batch_schema_describes_each_result_as_a_prediction_or_an_error(client):
    schema = client.get("/api/v1/openapi.json").json()
    batch = schema["components"]["schemas"]["BatchOut"]["properties"]

    refs = {item["$ref"].rsplit("/", 1)[-1] for item in batch["results"]["items"]["anyOf"]}
    assert refs == {"PredictionOut", "BatchError"}
    assert batch["predictions"]["items"]["$ref"].endswith("/PredictionOut")


def test_a_reviewers_personal_token_may_predict_but_not_a_user_without_a_group(client, project):
    _, personal = services.api_token_create(user=reviewer(), name="script")
    _, stranger = services.api_token_create(user=UserFactory(), name="script")

    assert post(client, project, personal).status_code == 200
    response = post(client, project, stranger)
    assert response.status_code == 403
    assert Prediction.objects.count() == 1


def test_a_stored_prediction_can_be_read_back_with_its_review(client, project, key):
    body = post(client, project, key).json()
    prediction = Prediction.objects.get(pk=body["id"])
    serving.prediction_review(
        prediction=prediction, label=project.categories.get(name="blue"), actor=None
    )

    response = client.get(
        f"/api/v1/predictions/{body['id']}", headers={"Authorization": f"Bearer {key}"}
    )

    assert response.status_code == 200
    assert response.json()["review"] == "corrected"
    assert response.json()["reviewed_label"] == "blue"

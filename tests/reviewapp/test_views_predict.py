"""The serving pages: predict in the browser, client tokens, predictions to review, monitoring."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from reviewapp import serving
from reviewapp.models import ClientToken, Image, ModelVersion, Prediction
from tests.factories import (
    approver,
    reviewer,
    served_version,
    trainable_project,
)
from tests.images import image_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("serving_inline")]

Stage = ModelVersion.Stage
RED, BLUE, GREY = (220, 40, 40), (40, 40, 220), (128, 128, 128)
HX = {"HX-Request": "true"}


@pytest.fixture
def project(model):
    project = trainable_project(per_class=1, classes=("red", "blue"))
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    return project


def html(response) -> str:
    return response.content.decode()


def upload(color=RED, seed=1):
    return SimpleUploadedFile("mine.png", image_bytes(color, size=(30, 24), seed=seed), "image/png")


def test_predict_page_has_a_drop_zone_form(client, project):
    client.force_login(reviewer())
    page = html(client.get(reverse("project-predict", args=[project.slug])))
    assert 'name="image"' in page and "data-dropzone" in page
    assert ">Predict</button>" in page and 'id="predict-result"' in page


def test_predicting_in_the_browser_returns_only_the_result_partial(client, project):
    user = reviewer()
    client.force_login(user)

    response = client.post(
        reverse("project-predict", args=[project.slug]), {"image": upload(RED)}, headers=HX
    )

    assert response.status_code == 200
    fragment = html(response)
    assert fragment.lstrip().startswith('<section id="predict-result"')
    assert "<html" not in fragment
    assert "<strong>red</strong>" in fragment and "v1" in fragment and "Live" in fragment
    assert " ms with ONNX Runtime" in fragment  # the version's ONNX export answered
    assert fragment.count('<li class="prob-bar') == 2
    prediction = Prediction.objects.get()
    assert prediction.user == user and prediction.client is None
    assert prediction.client_key == ""  # routed by the user's id


def test_a_low_confidence_result_says_it_needs_review(client, project):
    project.review_confidence = 1.0
    project.save()
    client.force_login(reviewer())
    fragment = html(
        client.post(
            reverse("project-predict", args=[project.slug]), {"image": upload(GREY)}, headers=HX
        )
    )
    assert "Needs review" in fragment


def test_a_bad_image_shows_the_reason(client, project):
    client.force_login(reviewer())
    bad = SimpleUploadedFile("notes.png", b"not an image at all", "image/png")

    response = client.post(
        reverse("project-predict", args=[project.slug]), {"image": bad}, headers=HX
    )

    assert response.status_code == 400
    assert "notes.png" in html(response) and 'role="alert"' in html(response)
    assert not Prediction.objects.exists()


def test_without_a_live_version_the_page_says_so(client, project):
    ModelVersion.objects.filter(project=project).update(stage=Stage.APPROVED)
    client.force_login(reviewer())
    assert "no live model version" in html(
        client.get(reverse("project-predict", args=[project.slug]))
    )
    response = client.post(
        reverse("project-predict", args=[project.slug]), {"image": upload()}, headers=HX
    )
    assert response.status_code == 409 and "no live model version" in html(response)


# Client tokens ----------------------------------------------------------------------


def test_client_tokens_are_for_approvers_only(client, project):
    client.force_login(reviewer())
    assert client.get(reverse("client-tokens", args=[project.slug])).status_code == 403
    response = client.post(reverse("client-token-create", args=[project.slug]), {"client": "x"})
    assert response.status_code == 403
    assert not ClientToken.objects.exists()


def test_a_new_client_token_is_shown_once(client, project):
    client.force_login(approver())

    response = client.post(
        reverse("client-token-create", args=[project.slug]), {"client": "shop-frontend"}
    )

    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    key = re.search(r'value="(lpc_[^"]+)"', html(response)).group(1)
    token = ClientToken.objects.get()
    assert token.client == "shop-frontend" and token.key_hash == ClientToken.hash_key(key)
    assert key not in html(client.get(reverse("client-tokens", args=[project.slug])))


def test_a_client_token_is_revoked_from_the_page(client, project):
    token, _ = serving.client_token_create(project=project, client="old")
    client.force_login(approver())

    response = client.post(reverse("client-token-revoke", args=[project.slug, token.pk]))

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert "Revoked" in html(client.get(reverse("client-tokens", args=[project.slug])))


# Predictions to review -------------------------------------------------------------------


def _flagged(project, color=GREY, seed=1):
    project.review_confidence = 1.0
    project.save()
    (prediction,) = serving.predictions_create(
        project=project, images=[("x.png", image_bytes(color, size=(30, 24), seed=seed))]
    )
    return prediction


def test_the_queue_lists_flagged_predictions_and_shadow_disagreements(
    client, project, crossed_model
):
    served_version(project, crossed_model, stage=Stage.SHADOW)
    flagged = _flagged(project, RED, seed=1)
    project.review_confidence = 0.0
    project.save()
    (disagreed,) = serving.predictions_create(
        project=project, images=[("y.png", image_bytes(BLUE, size=(30, 24), seed=2))]
    )
    client.force_login(reviewer())

    page = html(client.get(reverse("prediction-review", args=[project.slug])))

    # Each card once: the flagged one shows the shadow's answer too.
    assert page.count(f'id="prediction-card-{flagged.pk}"') == 1
    assert page.count(f'id="prediction-card-{disagreed.pk}"') == 1
    assert page.count("(not sent) said") == 2
    assert reverse("prediction-file", args=[flagged.pk]) in page
    assert client.get(reverse("prediction-file", args=[flagged.pk])).status_code == 200


def test_confirm_through_htmx_returns_the_decided_card(client, project):
    prediction = _flagged(project, RED)
    client.force_login(reviewer())

    response = client.post(
        reverse("prediction-decide", args=[prediction.pk]), {"action": "confirm"}, headers=HX
    )

    assert response.status_code == 200
    fragment = html(response)
    assert fragment.lstrip().startswith(f'<article id="prediction-card-{prediction.pk}"')
    assert "Confirmed as <strong>red</strong>" in fragment
    prediction.refresh_from_db()
    assert prediction.review == Prediction.Review.CONFIRMED


def test_correct_takes_the_class_from_the_menu(client, project):
    prediction = _flagged(project, RED)
    blue = project.categories.get(name="blue")
    client.force_login(reviewer())

    client.post(
        reverse("prediction-decide", args=[prediction.pk]),
        {"action": "correct", "label": blue.pk},
        headers=HX,
    )

    prediction.refresh_from_db()
    assert prediction.review == Prediction.Review.CORRECTED
    assert prediction.reviewed_label == blue


def test_add_to_dataset_makes_a_production_image_in_one_action(client, project):
    prediction = _flagged(project, RED)
    blue = project.categories.get(name="blue")
    client.force_login(reviewer())

    response = client.post(
        reverse("prediction-decide", args=[prediction.pk]), {"action": "add", "label": blue.pk}
    )

    assert response.status_code == 302
    prediction.refresh_from_db()
    image = Image.objects.get(pk=prediction.added_image_id)
    assert image.source == Image.Source.PRODUCTION and image.label == blue
    assert prediction.review == Prediction.Review.CORRECTED


def test_a_bad_decision_is_refused_and_changes_nothing(client, project):
    prediction = _flagged(project)
    client.force_login(reviewer())

    response = client.post(
        reverse("prediction-decide", args=[prediction.pk]),
        {"action": "correct", "label": "999999"},
        headers=HX,
    )

    assert response.status_code == 400 and "Pick the image" in html(response)
    prediction.refresh_from_db()
    assert prediction.review == "" and prediction.reviewed_at is None


# Monitoring ---------------------------------------------------------------------------


def test_monitoring_renders_offline_svg_charts_with_data(client, project, crossed_model):
    served_version(project, crossed_model, stage=Stage.SHADOW)
    images = [("a.png", image_bytes(RED, size=(30, 24), seed=s)) for s in range(3)]
    serving.predictions_create(project=project, images=images)
    client.force_login(reviewer())

    response = client.get(reverse("project-monitoring", args=[project.slug]))

    assert response.status_code == 200
    page = html(response)
    assert page.count("<svg") >= 4 and "Confidence histogram" in page
    assert "Predicted class mix against the training mix" in page
    assert "http://" not in page.split("<svg", 1)[1].split("</svg>")[0].replace(
        "http://www.w3.org/2000/svg", ""
    )
    assert "Shadow against served" in page and "0.0%" in page  # crossed: never agrees
    assert "Reviewer override rate" in page


def test_monitoring_without_predictions_says_so(client, project):
    client.force_login(reviewer())
    page = html(client.get(reverse("project-monitoring", args=[project.slug])))
    assert "No served predictions in this period yet." in page

"""Model version pages: the list, one version (charts, matrix, top losses), and compare."""

import html as html_lib
import re
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reviewapp import training
from reviewapp.models import Category, Image, ImageScore, ModelVersion
from reviewapp.templatetags.charts import line_chart_svg
from reviewapp.views import versions as version_views
from tests.factories import TINY_TRAINING, ProjectFactory, UserFactory, reviewer, trainable_project

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'
IN_SAMPLE = "in-sample (train)"


def html(response) -> str:
    return response.content.decode()


def shown_scores(response) -> list[int]:
    """ImageScore ids in the gallery, in page order."""
    return [int(pk) for pk in re.findall(r'data-score="(\d+)"', html(response))]


def cell_links(response) -> dict[tuple[int, int], str]:
    """The confusion matrix's links by (label id, predicted id)."""
    links = {}
    for href in re.findall(r'<a href="([^"]+)" data-confusion-cell', html(response)):
        url = html_lib.unescape(href)
        if match := re.search(r"label=(\d+)&predicted=(\d+)", url):
            links[int(match[1]), int(match[2])] = url
    return links


def train_version(project) -> ModelVersion:
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    training.training_run_execute(run_id=run.pk)
    return ModelVersion.objects.get(run=run)


@pytest.fixture(scope="module")
def trained(django_db_setup, django_db_blocker, tmp_path_factory):
    """One three-class project with two real versions, trained once for the whole module."""
    media = tmp_path_factory.mktemp("version-media")
    with django_db_blocker.unblock(), override_settings(MEDIA_ROOT=media):
        project = trainable_project(per_class=8, classes=("red", "blue", "green"))
        v1, v2 = train_version(project), train_version(project)
    yield SimpleNamespace(project=project, v1=v1, v2=v2)
    with django_db_blocker.unblock():
        # Images first: Image.label protects the categories the project would cascade to.
        Image.objects.filter(project=project).delete()
        project.delete()


def fake_version(project, number=1, **fields) -> ModelVersion:
    """A version row without training: for access and edge cases."""
    values = {
        "export_file": "models/x/export.pkl",
        "export_sha256": "0" * 64,
        "weights_file": "models/x/weights.pth",
        "weights_sha256": "0" * 64,
        "config": {"architecture": "resnet18", "image_size": 64, "epochs": 1},
        "vocab": ["a", "b"],
        "metrics": {"accuracy": 0.5, "error_rate": 0.5, "epochs": []},
        "confusion_matrix": [[1, 1], [1, 1]],
        "pretrained": False,
        "pretrained_note": "trained from scratch (pretrained weights turned off)",
        **fields,
    }
    return ModelVersion.objects.create(project=project, number=number, **values)


@pytest.fixture
def signed_in(client):
    client.force_login(reviewer(username="rita"))
    return client


def page_urls(version: ModelVersion, other: ModelVersion | None = None) -> list[str]:
    compare = reverse("model-version-compare", args=[version.pk])
    return [
        reverse("model-version-list", args=[version.project.slug]),
        reverse("model-version", args=[version.pk]),
        f"{compare}?with={other.pk}" if other else compare,
    ]


# Access -------------------------------------------------------------------------------


def test_version_pages_send_anonymous_to_login(client):
    project = ProjectFactory()
    v1, v2 = fake_version(project, 1), fake_version(project, 2)
    for url in page_urls(v1, v2):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_version_pages_refuse_user_without_view_modelversion(client):
    project = ProjectFactory()
    v1, v2 = fake_version(project, 1), fake_version(project, 2)
    client.force_login(UserFactory())
    for url in page_urls(v1, v2):
        assert client.get(url).status_code == 403, url


# List ---------------------------------------------------------------------------------


def test_reviewer_sees_versions_newest_first_with_metrics_and_weights(signed_in, trained):
    response = signed_in.get(reverse("model-version-list", args=[trained.project.slug]))
    page = html(response)

    assert response.status_code == 200
    assert LAYOUT in page
    v1_at = page.index(f'href="{trained.v1.get_absolute_url()}"')
    v2_at = page.index(f'href="{trained.v2.get_absolute_url()}"')
    assert v2_at < v1_at  # newest first
    assert f"{trained.v2.accuracy * 100:.1f}%" in page
    assert "From scratch" in page  # TINY_TRAINING turns pretrained weights off
    assert f'href="{reverse("training-run", args=[trained.v2.run_id])}"' in page
    assert "Candidate" in page
    assert 'name="a"' in page and 'name="b"' in page  # the compare form


def test_empty_list_points_to_the_training_page(signed_in):
    project = ProjectFactory()
    response = signed_in.get(reverse("model-version-list", args=[project.slug]))
    page = html(response)

    assert response.status_code == 200
    assert "No model versions yet" in page
    assert f'href="{reverse("training-run-list", args=[project.slug])}"' in page


def test_list_compare_form_goes_to_the_compare_page(signed_in):
    project = ProjectFactory()
    v1, v2 = fake_version(project, 1), fake_version(project, 2)
    url = reverse("model-version-list", args=[project.slug])

    response = signed_in.get(url, {"a": v1.pk, "b": v2.pk})
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('model-version-compare', args=[v1.pk])}?with={v2.pk}"

    same = signed_in.get(url, {"a": v1.pk, "b": v1.pk})
    assert same.status_code == 400
    assert "Pick two different versions" in html(same)


def test_list_compare_form_refuses_a_version_of_another_project(signed_in):
    project = ProjectFactory()
    mine = fake_version(project, 1)
    fake_version(project, 2)
    theirs = fake_version(ProjectFactory(), 1)
    response = signed_in.get(
        reverse("model-version-list", args=[project.slug]), {"a": mine.pk, "b": theirs.pk}
    )
    assert response.status_code == 400


# One version ----------------------------------------------------------------------------


def test_version_page_shows_metrics_settings_and_from_scratch(signed_in, trained):
    version = trained.v2
    response = signed_in.get(reverse("model-version", args=[version.pk]))
    page = html(response)

    assert response.status_code == 200
    assert LAYOUT in page
    assert f"Model {version.label}" in page
    assert f"{version.accuracy * 100:.1f}%" in page
    assert f"{version.error_rate * 100:.1f}%" in page
    assert "Trained from scratch" in page and version.pretrained_note in page
    for setting in ("resnet18", "32 × 32 px", "Squish", "Batch size"):
        assert setting in page, setting
    assert f"?with={version.pk}" in page  # compare with the previous version
    for name in ("red", "blue", "green"):
        assert f'<th scope="row" class="confusion-matrix__class">{name}</th>' in page


def test_pretrained_version_says_fine_tuned_from_imagenet(signed_in):
    note = "fine-tuned from ImageNet weights (resnet18-f37072fd.pth)"
    version = fake_version(ProjectFactory(), pretrained=True, pretrained_note=note)
    page = html(signed_in.get(reverse("model-version", args=[version.pk])))

    assert "Fine-tuned from ImageNet weights." in page
    assert "resnet18-f37072fd.pth" in page
    assert "from scratch" not in page.lower()


def test_confusion_cell_links_to_the_review_queue_filtered_to_that_cell(signed_in, trained):
    version = trained.v2
    red, blue = (Category.objects.get(project=trained.project, name=n) for n in ("red", "blue"))
    # Fill the red -> blue and red -> red cells, whatever the tiny model learnt.
    moved, kept = ImageScore.objects.filter(version=version, label=red, split="valid")[:2]
    ImageScore.objects.filter(pk=moved.pk).update(predicted=blue)
    ImageScore.objects.filter(pk=kept.pk).update(predicted=red)

    links = cell_links(signed_in.get(reverse("model-version", args=[version.pk])))

    assert len(links) == 9  # every cell of a 3 x 3 matrix
    url = links[red.pk, blue.pk]
    assert url.startswith(reverse("review-queue", args=[trained.project.slug]))
    expected = ImageScore.objects.filter(version=version, label=red, predicted=blue, split="valid")
    shown = queue_images(signed_in.get(url))
    assert moved.image_id in shown
    assert set(shown) == set(expected.values_list("image_id", flat=True))
    diagonal = queue_images(signed_in.get(links[red.pk, red.pk]))
    assert kept.image_id in diagonal and moved.image_id not in diagonal


def queue_images(response) -> list[int]:
    """Image ids of the review queue's cards, in page order."""
    return [int(pk) for pk in re.findall(r'id="review-card-(\d+)"', html(response))]


def test_gallery_is_ordered_by_loss_and_filters_by_split(signed_in, trained):
    url = reverse("model-version", args=[trained.v1.pk])
    all_ids = shown_scores(signed_in.get(url))
    losses = dict(ImageScore.objects.filter(pk__in=all_ids).values_list("pk", "loss"))

    assert len(all_ids) == ImageScore.objects.filter(version=trained.v1).count()
    assert [losses[pk] for pk in all_ids] == sorted(losses.values(), reverse=True)
    valid = shown_scores(signed_in.get(url, {"split": "valid"}))
    assert valid and set(valid) == set(
        ImageScore.objects.filter(version=trained.v1, split="valid").values_list("pk", flat=True)
    )


def test_gallery_htmx_request_returns_only_the_gallery_partial(signed_in, trained):
    blue = Category.objects.get(project=trained.project, name="blue")
    response = signed_in.get(
        reverse("model-version", args=[trained.v2.pk]), {"label": blue.pk}, **HTMX
    )
    page = html(response)

    assert response.status_code == 200
    assert page.lstrip().startswith('<section id="version-gallery"')
    assert "<html" not in page and LAYOUT not in page and "<svg" not in page
    shown = ImageScore.objects.filter(pk__in=shown_scores(response))
    assert shown.count() == 8 and all(s.label_id == blue.pk for s in shown)
    assert 'hx-push-url="true"' in page


def test_in_sample_marker_on_training_scores_only(signed_in, trained):
    url = reverse("model-version", args=[trained.v1.pk])

    train = signed_in.get(url, {"split": "train"})
    n_train = len(shown_scores(train))
    assert n_train and html(train).count(IN_SAMPLE) == n_train
    assert ImageScore.objects.filter(pk__in=shown_scores(train), in_training=False).count() == 0

    valid = signed_in.get(url, {"split": "valid"})
    assert shown_scores(valid) and IN_SAMPLE not in html(valid)


def test_gallery_pages_by_offset_without_overlap(signed_in, trained, monkeypatch):
    monkeypatch.setattr(version_views, "GALLERY_PAGE_SIZE", 20)
    url = reverse("model-version", args=[trained.v1.pk])

    first = signed_in.get(url)
    assert len(shown_scores(first)) == 20
    match = re.search(r'rel="next" href="\?([^"#]+)#version-gallery"', html(first))
    second = signed_in.get(f"{url}?{html_lib.unescape(match[1])}")
    assert len(shown_scores(second)) == 4  # 24 images
    assert not set(shown_scores(first)) & set(shown_scores(second))
    assert 'rel="next"' not in html(second) and "« Previous" in html(second)


def test_gallery_ignores_bad_filter_values(signed_in, trained):
    url = reverse("model-version", args=[trained.v1.pk])
    for params in ({"label": "x"}, {"predicted": "99999999"}, {"split": "test"}, {"offset": "-3"}):
        response = signed_in.get(url, params)
        assert response.status_code == 200, params
        assert len(shown_scores(response)) == 24, params


def test_version_page_draws_one_polyline_per_series(signed_in, trained):
    page = html(signed_in.get(reverse("model-version", args=[trained.v1.pk])))

    assert page.count("<polyline") == 3
    for series in ("train_loss", "valid_loss", "error_rate"):
        assert page.count(f'data-series="{series}"') == 1, series
    assert "<script" not in page.split('id="curves-heading"')[1].split("</section>")[0]


def test_version_page_queries_are_bounded(signed_in, trained, django_assert_max_num_queries):
    url = reverse("model-version", args=[trained.v2.pk])
    with django_assert_max_num_queries(12) as captured:
        assert len(shown_scores(signed_in.get(url))) == 24
    with CaptureQueriesContext(connection) as partial:
        signed_in.get(url, **HTMX)
    assert len(partial.captured_queries) <= len(captured.captured_queries)


# The chart on its own ------------------------------------------------------------------


def test_chart_skips_null_values_and_draws_a_single_epoch_as_dots():
    rows = [
        {"epoch": 0, "train_loss": 0.9, "valid_loss": None, "phase": "frozen"},
        {"epoch": 1, "train_loss": None, "valid_loss": 0.6, "phase": "unfrozen"},
        {"epoch": 2, "train_loss": 0.3, "valid_loss": float("nan"), "phase": "unfrozen"},
    ]
    svg = str(line_chart_svg(rows, ["train_loss", "valid_loss"], title="Loss"))

    assert svg.count("<polyline") == 2
    assert svg.count("<circle") == 3  # one dot per real value
    assert "unfrozen" in svg  # where fine_tune unfroze the body
    assert "nan" not in svg.lower().replace("unfrozen", "")

    single = str(line_chart_svg([{"epoch": 0, "error_rate": 0.25}], ["error_rate"], title="E"))
    assert single.count("<polyline") == 1 and single.count("<circle") == 1

    empty = str(line_chart_svg([{"epoch": 0, "error_rate": None}], ["error_rate"], title="E"))
    assert "<polyline" not in empty and "(no values)" in empty


def test_version_page_handles_missing_metrics(signed_in):
    version = fake_version(
        ProjectFactory(),
        metrics={"epochs": [{"epoch": 0, "train_loss": None, "valid_loss": 0.7}]},
        confusion_matrix=[],
        config={},
    )
    response = signed_in.get(reverse("model-version", args=[version.pk]))
    assert response.status_code == 200
    assert "No confusion matrix was recorded" in html(response)


# Compare ---------------------------------------------------------------------------------


def test_compare_counts_and_shows_changed_predictions(signed_in, trained):
    a, b = trained.v1, trained.v2
    red, blue, green = (
        Category.objects.get(project=trained.project, name=n) for n in ("red", "blue", "green")
    )
    # Start from B agreeing with A everywhere, then change three red images.
    for score in ImageScore.objects.filter(version=a):
        ImageScore.objects.filter(version=b, image_id=score.image_id).update(
            predicted_id=score.predicted_id
        )
    broken, fixed, other = ImageScore.objects.filter(version=a, label=red).order_by("id")[:3]
    ImageScore.objects.filter(pk=broken.pk).update(predicted=red)
    ImageScore.objects.filter(version=b, image_id=broken.image_id).update(predicted=blue)
    ImageScore.objects.filter(pk=fixed.pk).update(predicted=blue)
    ImageScore.objects.filter(version=b, image_id=fixed.image_id).update(predicted=red)
    ImageScore.objects.filter(pk=other.pk).update(predicted=blue)
    ImageScore.objects.filter(version=b, image_id=other.image_id).update(predicted=green)

    response = signed_in.get(reverse("model-version-compare", args=[a.pk]), {"with": b.pk})
    page = html(response)

    assert response.status_code == 200
    found = re.findall(r'change-count__n">(\d+)</span> (\w+)', page)
    counts = {name: int(n) for n, name in found}
    assert counts == {"changed": 3, "fixed": 1, "broken": 1, "other": 1}
    shown = {int(pk) for pk in re.findall(r'href="/images/(\d+)/"', page)}
    assert shown == {broken.image_id, fixed.image_id, other.image_id}
    assert "change-card--fixed" in page and "change-card--broken" in page
    assert f"{a.label} (A)" in page and f"{b.label} (B)" in page
    assert "Error per class" in page and "Accuracy" in page


def test_compare_without_with_shows_a_picker(signed_in):
    project = ProjectFactory()
    v1, v2 = fake_version(project, 1), fake_version(project, 2)
    response = signed_in.get(reverse("model-version-compare", args=[v2.pk]))
    page = html(response)

    assert response.status_code == 200
    assert 'name="with"' in page
    assert f'<option value="{v1.pk}"' in page and f'<option value="{v2.pk}"' not in page


def test_compare_across_projects_is_a_bad_request(signed_in):
    mine = fake_version(ProjectFactory(), 1)
    theirs = fake_version(ProjectFactory(), 1)
    response = signed_in.get(reverse("model-version-compare", args=[mine.pk]), {"with": theirs.pk})

    assert response.status_code == 400
    assert "another project" in html(response)


@pytest.mark.parametrize("other", ["self", "abc"])
def test_compare_with_itself_or_garbage_is_a_bad_request(signed_in, other):
    version = fake_version(ProjectFactory(), 1)
    value = version.pk if other == "self" else other
    response = signed_in.get(reverse("model-version-compare", args=[version.pk]), {"with": value})
    assert response.status_code == 400


def test_compare_with_a_missing_version_is_404(signed_in):
    version = fake_version(ProjectFactory(), 1)
    response = signed_in.get(
        reverse("model-version-compare", args=[version.pk]), {"with": version.pk + 1000}
    )
    assert response.status_code == 404

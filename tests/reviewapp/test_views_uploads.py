"""Uploads: small ones ingested in the request, big ones staged as a batch with live progress."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from reviewapp import services
from reviewapp.models import Category, Image, UploadBatch
from tests.factories import CategoryFactory, ProjectFactory, UserFactory, make_image, reviewer
from tests.images import image_bytes, zip_bytes

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'
POLLING = 'hx-trigger="every 1s"'


def html(response) -> str:
    return response.content.decode()


def png(name: str, seed: int) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(seed=seed), content_type="image/png")


@pytest.fixture
def project():
    return ProjectFactory()


@pytest.fixture
def signed_in(client):
    client.force_login(reviewer())
    return client


def upload_url(project):
    return reverse("image-upload", args=[project.slug])


# Page ---------------------------------------------------------------------------


def test_upload_page_access(client, project):
    url = upload_url(project)
    assert client.get(url)["Location"].startswith(reverse("login"))
    client.force_login(UserFactory())
    assert client.get(url).status_code == 403
    assert client.post(url, {"target": "unlabeled"}).status_code == 403


def test_upload_page_shows_drop_zone_and_targets(signed_in, project):
    cat = CategoryFactory(project=project, name="cat")
    response = signed_in.get(upload_url(project), {"label": cat.pk})
    page = html(response)
    assert response.status_code == 200
    assert "data-dropzone" in page
    assert re.search(r'<input type="file" name="files"[^>]*multiple', page)
    assert 'enctype="multipart/form-data"' in page
    assert f'<option value="{cat.pk}" selected>cat</option>' in page
    assert '<option value="folders">' in page
    assert "/static/js/loupe.js" in page


# Inline ---------------------------------------------------------------------------


def test_small_upload_is_ingested_inline_with_a_result_per_file(signed_in, project):
    cat = CategoryFactory(project=project, name="cat")
    existing = make_image(project, seed=500)
    response = signed_in.post(
        upload_url(project),
        {
            "target": str(cat.pk),
            "files": [
                png("good.png", 501),
                SimpleUploadedFile("notes.txt", b"these are not pixels"),
                png("again.png", 500),
            ],
        },
    )
    page = html(response)
    assert response.status_code == 200
    assert not UploadBatch.objects.exists()

    new = Image.objects.get(original_name="good.png")
    assert new.label == cat
    assert Image.objects.filter(project=project).count() == 2

    assert "<strong>1</strong> imported" in page
    assert "<strong>1</strong> duplicate" in page
    assert "<strong>1</strong> rejected" in page
    assert f'<a href="{reverse("image-detail", args=[new.pk])}">Image #{new.pk}</a>' in page
    assert "not an image Loupe can read" in page
    assert f"same file as image #{existing.pk}" in page
    assert f'href="{reverse("image-detail", args=[existing.pk])}"' in page
    # The form is ready for the next upload, aimed at the same label.
    assert f'<option value="{cat.pk}" selected>cat</option>' in page


def test_upload_without_files_shows_error(signed_in, project):
    response = signed_in.post(upload_url(project), {"target": "unlabeled"})
    assert response.status_code == 200
    assert "Choose at least one image or .zip file." in html(response)


def test_upload_with_folder_labels_needs_a_zip(signed_in, project):
    response = signed_in.post(
        upload_url(project), {"target": "folders", "files": [png("a.png", 1)]}
    )
    assert "Folder names come from a .zip" in html(response)
    assert not Image.objects.exists()


def test_upload_with_unknown_target_is_refused(signed_in, project):
    stranger = CategoryFactory()
    response = signed_in.post(
        upload_url(project), {"target": str(stranger.pk), "files": [png("a.png", 1)]}
    )
    assert "Select a valid choice." in html(response)
    assert not Image.objects.exists()


# Background batches ---------------------------------------------------------------


def test_big_upload_becomes_a_batch_that_polls_until_done(signed_in, project, settings):
    settings.LOUPE_INLINE_UPLOAD_MAX_FILES = 2
    files = [png(f"img{i}.png", 600 + i) for i in range(3)]
    files.append(SimpleUploadedFile("broken.jpg", b"\xff\xd8\xff not really"))
    response = signed_in.post(upload_url(project), {"target": "unlabeled", "files": files})

    batch = UploadBatch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("upload-batch", args=[batch.pk])
    assert batch.status == UploadBatch.Status.PENDING
    assert batch.progress_total == 4
    assert not Image.objects.exists()  # nothing is ingested in the request

    page = html(signed_in.get(response["Location"]))
    assert POLLING in page
    assert "Waiting for a worker" in page

    UploadBatch.objects.filter(pk=batch.pk).update(status="running", progress_done=2)
    running = signed_in.get(response["Location"], **HTMX)
    partial = html(running)
    assert partial.lstrip().startswith('<section id="upload-progress"')
    assert LAYOUT not in partial
    assert POLLING in partial
    assert "<strong>2</strong> of 4 files (50%)" in partial
    UploadBatch.objects.filter(pk=batch.pk).update(status="pending", progress_done=0)

    services.upload_batch_run(batch_id=batch.pk)

    finished = signed_in.get(response["Location"], **HTMX)
    partial = html(finished)
    assert "every 1s" not in partial
    assert "hx-get" not in partial
    assert "Succeeded" in partial
    assert "<strong>3</strong> imported" in partial
    assert "<strong>1</strong> rejected" in partial
    assert "broken.jpg" in partial
    for image in Image.objects.filter(project=project):
        assert f'href="{reverse("image-detail", args=[image.pk])}"' in partial


def test_zip_upload_is_always_a_batch_and_can_label_by_folder(signed_in, project):
    archive = zip_bytes(
        {
            "cats/1.png": image_bytes(seed=701),
            "dogs/2.png": image_bytes(seed=702),
            "dogs/3.png": image_bytes(seed=703),
        }
    )
    response = signed_in.post(
        upload_url(project),
        {"target": "folders", "files": [SimpleUploadedFile("pets.zip", archive)]},
    )
    batch = UploadBatch.objects.get()
    assert response.status_code == 302
    assert batch.labels_from_folders
    assert batch.progress_total == 3

    services.upload_batch_run(batch_id=batch.pk)

    assert set(Category.objects.filter(project=project).values_list("name", flat=True)) == {
        "cats",
        "dogs",
    }
    assert Image.objects.filter(label__name="dogs").count() == 2
    page = html(signed_in.get(response["Location"]))
    assert "pets.zip/dogs/2.png" in page
    assert "<strong>3</strong> imported" in page
    # The summary links filter the list by status.
    assert 'href="?show=imported"' in page
    filtered = html(signed_in.get(response["Location"], {"show": "rejected"}))
    assert "pets.zip/dogs/2.png" not in filtered


def test_failed_batch_shows_its_error_and_stops_polling(signed_in, project):
    batch = UploadBatch.objects.create(
        project=project,
        staging_dir="staging/gone",
        status=UploadBatch.Status.FAILED,
        error_message="The upload could not be processed: disk full",
    )
    page = html(signed_in.get(reverse("upload-batch", args=[batch.pk])))
    assert "The upload failed." in page
    assert "disk full" in page
    assert "every 1s" not in page


def test_batch_page_access(client, project):
    batch = UploadBatch.objects.create(project=project, staging_dir="staging/x")
    url = reverse("upload-batch", args=[batch.pk])
    assert client.get(url)["Location"].startswith(reverse("login"))
    client.force_login(UserFactory())
    assert client.get(url).status_code == 403

"""Upload limits: big API uploads go to a worker (202 and a batch to follow), archives with
too many entries are refused before any entry is read, and refusals quote the real figures."""

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from kombu.exceptions import OperationalError

from reviewapp import services, tasks
from reviewapp.models import Image, UploadBatch
from tests.factories import ProjectFactory, reviewer
from tests.images import image_bytes, many_entries_zip, png_header, zip_bytes

pytestmark = pytest.mark.django_db

API = "/api/v1"


def token_client(user) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def reviewer_api():
    return token_client(reviewer(username="rex"))


@pytest.fixture
def project():
    return ProjectFactory(name="Birds", slug="birds")


@pytest.fixture
def broker_down(monkeypatch):
    def refuse(task, args, countdown=None):
        raise OperationalError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr("reviewapp.enqueue._dispatch", refuse)


@pytest.fixture
def no_entry_read(monkeypatch):
    """Fails the test if anything parses an archive's directory or opens one of its entries."""

    def refuse(*args, **kwargs):
        raise AssertionError("an archive was opened")

    monkeypatch.setattr(zipfile.ZipFile, "__init__", refuse)
    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


def upload(client, files: dict[str, bytes], **data):
    """POST multipart ``files`` given as {name: bytes} to the birds project."""
    named = []
    for name, content in files.items():
        f = io.BytesIO(content)
        f.name = name
        named.append(f)
    return client.post(f"{API}/projects/birds/images", {**data, "files": named})


def staged_folders(media_root: Path) -> list[Path]:
    root = media_root / "staging"
    return list(root.iterdir()) if root.is_dir() else []


# Big API uploads go to a worker ----------------------------------------------------------


def test_api_upload_over_the_file_count_threshold_is_202_with_a_batch_to_follow(
    reviewer_api, project, settings
):
    settings.LOUPE_INLINE_UPLOAD_MAX_FILES = 2
    files = {f"img{i}.png": image_bytes(seed=600 + i) for i in range(3)}
    files["broken.jpg"] = b"\xff\xd8\xff not really"

    response = upload(reviewer_api, files)

    assert response.status_code == 202, response.content
    body = response.json()
    batch = UploadBatch.objects.get()
    assert body["batch_url"] == f"http://testserver{API}/upload-batches/{batch.pk}"
    assert response["Location"] == body["batch_url"]
    assert body["batch"]["id"] == batch.pk
    assert body["batch"]["status"] == "pending"
    assert body["batch"]["progress"]["total"] == 4
    assert not Image.objects.exists()  # nothing is ingested in the request

    tasks.upload_batch_process(batch.pk)

    followed = reviewer_api.get(body["batch_url"])
    assert followed.status_code == 200
    done = followed.json()
    assert done["status"] == "succeeded"
    assert (done["imported"], done["duplicates"], done["rejected"]) == (3, 0, 1)
    assert [r["name"] for r in done["results"]] == [*files]
    assert done["results"][3]["status"] == "rejected"
    assert done["page_url"] == f"http://testserver{reverse('upload-batch', args=[batch.pk])}"
    assert Image.objects.filter(project=project).count() == 3


def test_api_zip_over_the_byte_threshold_goes_to_a_worker(reviewer_api, project, settings):
    archive = zip_bytes({f"{i}.png": image_bytes(seed=620 + i) for i in range(3)})
    settings.LOUPE_INLINE_UPLOAD_MAX_BYTES = len(archive) - 1

    response = upload(reviewer_api, {"birds.zip": archive})

    assert response.status_code == 202, response.content
    assert UploadBatch.objects.get().progress_total == 3


def test_api_upload_under_the_thresholds_is_ingested_at_once_as_before(reviewer_api, project):
    archive = zip_bytes({"a.png": image_bytes(seed=630)})  # a small zip counts by its size

    response = upload(reviewer_api, {"one.png": image_bytes(seed=631), "small.zip": archive})

    assert response.status_code == 201, response.content
    assert response.json()["imported"] == 2
    assert not UploadBatch.objects.exists()


def test_upload_batch_endpoint_answers_404_for_an_unknown_batch(reviewer_api):
    response = reviewer_api.get(f"{API}/upload-batches/999")

    assert response.status_code == 404
    assert response.json()["detail"] == "No upload batch 999."


@pytest.mark.django_db(transaction=True)
def test_api_batch_queued_while_the_broker_is_down_is_503_failed_and_unstaged(
    reviewer_api, project, settings, broker_down, media_root
):
    settings.LOUPE_INLINE_UPLOAD_MAX_FILES = 1
    files = {f"img{i}.png": image_bytes(seed=640 + i) for i in range(2)}

    response = upload(reviewer_api, files)

    assert response.status_code == 503
    assert response.json()["detail"] == "The job queue is unavailable; try again."
    batch = UploadBatch.objects.get()
    assert batch.status == UploadBatch.Status.FAILED
    assert batch.error_message.startswith("The job queue is unavailable: OperationalError")
    assert batch.finished_at is not None
    assert staged_folders(media_root) == []


# Archives with too many entries ----------------------------------------------------------


def test_default_zip_entry_limit_is_ten_thousand(settings):
    assert settings.LOUPE_MAX_ZIP_ENTRIES == 10_000


def test_zip_with_one_entry_more_than_the_limit_is_refused_whole(reviewer_api, project, settings):
    settings.LOUPE_MAX_ZIP_ENTRIES = 20

    response = upload(reviewer_api, {"many.zip": many_entries_zip(21)})

    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert result["name"] == "many.zip" and result["status"] == "rejected"
    assert result["reason"] == (
        "the archive has 21 entries, more than the limit of 20 (LOUPE_MAX_ZIP_ENTRIES)"
    )


def test_zip_with_exactly_the_limit_of_entries_is_opened(reviewer_api, project, settings):
    settings.LOUPE_MAX_ZIP_ENTRIES = 20

    response = upload(reviewer_api, {"many.zip": many_entries_zip(20)})

    results = response.json()["results"]
    # Each one-byte entry is refused on its own: the archive itself was accepted.
    assert len(results) == 20
    assert {r["status"] for r in results} == {"rejected"}
    assert results[0]["name"] == "many.zip/0.png"
    assert "not an image" in results[0]["reason"]


def test_zip_over_the_archive_size_limit_is_refused_whole_with_both_sizes(
    reviewer_api, project, settings
):
    archive = zip_bytes({"a.png": image_bytes(), "b.png": image_bytes(color=(0, 0, 255))})
    settings.LOUPE_MAX_ZIP_BYTES = len(archive) - 1

    response = upload(reviewer_api, {"two.zip": archive})

    (result,) = response.json()["results"]
    assert result["status"] == "rejected"
    assert result["reason"] == (
        f"the archive is {len(archive):,} bytes, over the limit of {len(archive) - 1:,} bytes "
        "(LOUPE_MAX_ZIP_BYTES)"
    )
    assert not Image.objects.filter(project=project).exists()


def test_api_refuses_100k_entries_from_the_end_record_without_reading_any(
    reviewer_api, project, no_entry_read
):
    response = upload(reviewer_api, {"huge.zip": many_entries_zip(100_000)})

    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert result["status"] == "rejected"
    assert result["reason"] == (
        "the archive has 100,000 entries, more than the limit of 10,000 (LOUPE_MAX_ZIP_ENTRIES)"
    )
    assert not UploadBatch.objects.exists()


def test_api_refuses_100k_entries_at_once_even_over_the_byte_threshold(
    reviewer_api, project, settings, no_entry_read
):
    settings.LOUPE_INLINE_UPLOAD_MAX_BYTES = 1000  # it would otherwise go to a worker

    response = upload(reviewer_api, {"huge.zip": many_entries_zip(100_000)})

    assert response.status_code == 200, response.content
    assert "100,000 entries" in response.json()["results"][0]["reason"]
    assert not UploadBatch.objects.exists()


def test_upload_form_refuses_100k_entries_in_the_request_not_in_a_worker(
    client, project, no_entry_read
):
    client.force_login(reviewer())
    archive = SimpleUploadedFile("huge.zip", many_entries_zip(100_000))

    response = client.post(
        reverse("image-upload", args=[project.slug]), {"target": "unlabeled", "files": [archive]}
    )

    assert response.status_code == 200
    assert not UploadBatch.objects.exists()
    assert "the archive has 100,000 entries, more than the limit of 10,000" in (
        response.content.decode()
    )


# Refusals quote the real figures ---------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_with_its_real_size(reviewer_api, project, settings):
    settings.LOUPE_MAX_FILE_BYTES = 2**20
    big = b"\x89PNG" + b"\0" * int(1.2 * 2**20)

    response = upload(reviewer_api, {"big.png": big})

    (result,) = response.json()["results"]
    assert result["reason"] == "file is 1.2 MiB, over the limit of 1.0 MiB (LOUPE_MAX_FILE_BYTES)"


def test_a_zip_member_over_the_size_limit_is_refused_with_its_real_size(
    reviewer_api, project, settings
):
    settings.LOUPE_MAX_FILE_BYTES = 2**20
    archive = zip_bytes({"big.png": b"\0" * int(1.2 * 2**20)}, compression=zipfile.ZIP_DEFLATED)
    settings.LOUPE_MAX_ZIP_RATIO = 10**6  # the zeros compress far; the size is what counts

    response = upload(reviewer_api, {"a.zip": archive})

    (result,) = response.json()["results"]
    assert result["reason"] == "file is 1.2 MiB, over the limit of 1.0 MiB (LOUPE_MAX_FILE_BYTES)"


@pytest.mark.parametrize(
    ("size", "limit", "shown"),
    [
        (30 * 2**20, 25 * 2**20, ("30.0 MiB", "25.0 MiB")),
        (25 * 2**20 + 30_000, 25 * 2**20, ("25.03 MiB", "25.00 MiB")),
        (25 * 2**20 + 1, 25 * 2**20, ("26,214,401 bytes", "26,214,400 bytes")),
        (5001, 5000, ("5,001 bytes", "5,000 bytes")),
    ],
)
def test_two_different_sizes_never_print_alike(size, limit, shown):
    from reviewapp.imaging import sizes_apart

    assert sizes_apart(size, limit) == shown


@pytest.mark.parametrize("side", [20_000, 10_000])  # past Pillow's own error, and its warning
def test_a_huge_image_is_refused_with_loupes_pixel_limit(reviewer_api, project, side):
    response = upload(reviewer_api, {"huge.png": png_header(side, side)})

    (result,) = response.json()["results"]
    assert result["status"] == "rejected"
    assert result["reason"].startswith(
        f"{side}x{side} is {side * side:,} pixels, over the limit of 40,000,000 "
        "(LOUPE_MAX_IMAGE_PIXELS)"
    )

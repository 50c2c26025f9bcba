"""Getting images in: every bad-input case leaves no row and no file behind."""

import io
import zipfile
from unittest import mock

import pytest
from PIL import Image as PILImage

from reviewapp import services
from reviewapp.models import Image, LabelEvent
from tests.factories import CategoryFactory, ProjectFactory
from tests.images import image_bytes, zip_bytes

pytestmark = pytest.mark.django_db


def stored_files(media_root) -> list:
    return sorted(p for p in media_root.rglob("*") if p.is_file()) if media_root.exists() else []


def ingest(project, data, name="upload.png", **kwargs):
    return services.image_ingest(project=project, data=data, name=name, **kwargs)


@pytest.fixture
def project():
    return ProjectFactory()


def test_ingest_stores_file_thumbnail_and_import_event(project, media_root):
    label = CategoryFactory(project=project, name="grizzly")

    result = ingest(project, image_bytes(size=(40, 30), seed=1), label=label)

    assert result.status == "imported"
    image = Image.objects.get(pk=result.image_id)
    assert (image.width, image.height, image.format) == (40, 30, "PNG")
    assert image.label == label and image.status == "active" and image.revision == 1
    assert image.split in {"train", "valid"}
    assert len(stored_files(media_root)) == 2
    with PILImage.open(image.thumbnail.path) as thumb:
        assert thumb.format == "JPEG" and thumb.mode == "RGB"
    event = LabelEvent.objects.get(image=image)
    assert event.action == "import" and event.to_category == label and event.actor is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not an image at all", "not an image"),
        (b"GIF89a" + b"\0" * 20, "not an image"),
    ],
)
def test_non_images_are_rejected_whatever_their_name(project, media_root, data, reason):
    result = ingest(project, data, name="holiday.jpg")

    assert result.status == "rejected"
    assert reason in result.reason
    assert not Image.objects.exists() and not LabelEvent.objects.exists()
    assert stored_files(media_root) == []


def test_truncated_jpeg_is_rejected(project, media_root):
    data = image_bytes(size=(64, 64), format="JPEG", seed=3)

    result = ingest(project, data[: len(data) // 2], name="cut.jpg")

    assert result.status == "rejected" and "truncated" in result.reason
    assert stored_files(media_root) == []


def test_webp_named_jpg_is_accepted_with_its_real_format(project):
    result = ingest(project, image_bytes(format="WEBP", seed=4), name="really-a-webp.jpg")

    image = Image.objects.get(pk=result.image_id)
    assert image.format == "WEBP"
    assert image.file.name.endswith(".webp")


def test_decompression_bomb_over_the_configured_limit_is_rejected(project, settings, media_root):
    settings.LOUPE_MAX_IMAGE_PIXELS = 100 * 100

    result = ingest(project, image_bytes(size=(101, 100), seed=5))

    assert result.status == "rejected"
    assert "decompression bomb" in result.reason and "10,100 pixels" in result.reason
    assert stored_files(media_root) == []
    assert ingest(project, image_bytes(size=(100, 100), seed=5)).status == "imported"


def test_oversized_file_is_rejected_before_decoding(project, settings, media_root):
    data = image_bytes(size=(64, 64), seed=6)
    settings.LOUPE_MAX_FILE_BYTES = len(data) - 1

    with mock.patch("reviewapp.services.ingest.decode_image") as decode:
        result = ingest(project, data)

    assert result.status == "rejected" and "LOUPE_MAX_FILE_BYTES" in result.reason
    decode.assert_not_called()
    assert stored_files(media_root) == []


def test_exif_orientation_is_applied(project):
    # A 40x20 landscape photo whose EXIF says "rotate 90": upright it is 20x40.
    photo = PILImage.new("RGB", (40, 20), (200, 10, 10))
    exif = PILImage.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", exif=exif.tobytes())

    image = Image.objects.get(pk=ingest(project, buffer.getvalue(), name="p.jpg").image_id)

    assert (image.width, image.height) == (20, 40)
    with PILImage.open(image.file.path) as stored:
        assert stored.size == (20, 40)
        assert stored.getexif().get(0x0112, 1) == 1
    with PILImage.open(image.thumbnail.path) as thumb:
        assert thumb.size == (20, 40)


@pytest.mark.parametrize(
    ("mode", "format", "kwargs"),
    [
        ("CMYK", "JPEG", {}),
        ("P", "PNG", {"transparency": 0}),
        ("RGBA", "PNG", {}),
        ("LA", "PNG", {}),
        ("L", "TIFF", {}),
        ("I;16", "PNG", {}),
    ],
)
def test_unusual_modes_get_rgb_thumbnails(project, mode, format, kwargs):
    data = image_bytes(size=(30, 30), mode=mode, format=format, seed=7, **kwargs)

    result = ingest(project, data, name=f"odd.{format.lower()}")

    assert result.status == "imported", result.reason
    image = Image.objects.get(pk=result.image_id)
    with PILImage.open(image.thumbnail.path) as thumb:
        assert thumb.mode == "RGB"


def test_transparent_pixels_become_white_in_the_thumbnail(project):
    clear = PILImage.new("RGBA", (10, 10), (0, 0, 0, 0))
    buffer = io.BytesIO()
    clear.save(buffer, "PNG")

    image = Image.objects.get(pk=ingest(project, buffer.getvalue()).image_id)

    with PILImage.open(image.thumbnail.path) as thumb:
        assert thumb.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=2)


def test_duplicate_in_the_same_project_is_skipped_but_allowed_elsewhere(project, media_root):
    data = image_bytes(seed=8)
    first = ingest(project, data)

    again = ingest(project, data, name="copy.png")

    assert again.status == "duplicate" and again.image_id == first.image_id
    assert f"#{first.image_id}" in again.reason
    assert Image.objects.filter(project=project).count() == 1
    assert len(stored_files(media_root)) == 2
    assert ingest(ProjectFactory(), data).status == "imported"


def test_duplicate_reports_the_stored_label_not_the_one_asked_for(project, media_root):
    cat, dog = (CategoryFactory(project=project, name=n) for n in ("cat", "dog"))
    data = image_bytes(seed=9)
    ingest(project, data, label=cat)

    again = ingest(project, data, name="copy.png", label=dog)
    same = ingest(project, data, name="copy2.png", label=cat)

    assert again.status == "duplicate" and again.label == "cat"
    assert "kept its label cat, not dog" in again.reason
    assert same.label == "cat" and "kept its label" not in same.reason
    assert Image.objects.get(project=project).label == cat


def test_database_failure_leaves_no_orphan_file(project, media_root):
    with (
        mock.patch.object(LabelEvent.objects, "create", side_effect=RuntimeError("db down")),
        pytest.raises(RuntimeError),
    ):
        ingest(project, image_bytes(seed=9))

    assert not Image.objects.exists()
    assert stored_files(media_root) == []


def test_split_is_deterministic_from_hash_and_seed(project):
    first = Image.objects.get(pk=ingest(project, image_bytes(seed=10)).image_id)

    assert first.split == project.split_for(first.sha256)
    assert ProjectFactory(split_seed=project.split_seed).split_for(first.sha256) == first.split


def test_split_shares_follow_valid_pct():
    from reviewapp.models import split_for

    splits = [split_for(f"{n:064x}", seed=1, valid_pct=0.2) for n in range(5000)]

    assert splits.count("valid") / len(splits) == pytest.approx(0.2, abs=0.02)
    assert splits != [split_for(f"{n:064x}", seed=2, valid_pct=0.2) for n in range(5000)]


# Archives -------------------------------------------------------------------------


def upload(project, data: bytes, name="batch.zip", **kwargs):
    return services.uploads_ingest(project=project, uploads=[(name, io.BytesIO(data))], **kwargs)


def test_zip_labels_from_folders(project):
    archive = zip_bytes(
        {
            "bears/black/a.png": image_bytes(seed=11),
            "bears/teddy/b.jpg": image_bytes(format="JPEG", seed=12),
            "top.png": image_bytes(seed=13),
            "__MACOSX/bears/._a.png": b"resource fork",
            "bears/.DS_Store": b"finder",
        }
    )

    results = upload(project, archive, labels_from_folders=True)

    assert [(r.status, r.label) for r in results] == [
        ("imported", "black"),
        ("imported", "teddy"),
        ("imported", ""),
    ]
    assert sorted(project.categories.values_list("name", flat=True)) == ["black", "teddy"]


def test_zip_into_one_class(project):
    label = CategoryFactory(project=project, name="cat")
    archive = zip_bytes({"x/a.png": image_bytes(seed=14), "b.png": image_bytes(seed=15)})

    results = upload(project, archive, label=label)

    assert {r.status for r in results} == {"imported"}
    assert Image.objects.filter(label=label).count() == 2


@pytest.mark.parametrize("name", ["../../etc/evil.png", "/abs/evil.png", "a/../../evil.png"])
def test_zip_slip_paths_are_rejected(project, media_root, name):
    archive = zip_bytes({name: image_bytes(seed=16), "ok.png": image_bytes(seed=17)})

    results = upload(project, archive)

    assert [r.status for r in results] == ["rejected", "imported"]
    assert "unsafe path" in results[0].reason
    assert Image.objects.count() == 1


def test_zip_bomb_by_compression_ratio_is_rejected(project, settings, media_root):
    settings.LOUPE_MAX_ZIP_RATIO = 50
    archive = zip_bytes(
        {"bomb.png": b"\0" * 2_000_000, "ok.png": image_bytes(seed=18)},
        compression=zipfile.ZIP_DEFLATED,
    )

    results = upload(project, archive)

    assert results[0].status == "rejected" and "zip bomb" in results[0].reason
    assert results[1].status == "imported"


def test_zip_bomb_by_total_size_rejects_the_archive(project, settings, media_root):
    settings.LOUPE_MAX_ZIP_UNCOMPRESSED_BYTES = 100
    archive = zip_bytes({f"{n}.png": image_bytes(size=(40, 40), seed=n) for n in range(3)})

    results = upload(project, archive)

    assert len(results) == 1 and results[0].status == "rejected"
    assert "zip bomb" in results[0].reason
    assert not Image.objects.exists() and stored_files(media_root) == []


def test_zip_member_lying_about_its_size_is_cut_off(project, settings):
    settings.LOUPE_MAX_FILE_BYTES = 5000
    member = image_bytes(size=(200, 200), seed=19)  # well over 5000 bytes
    archive = bytearray(zip_bytes({"a.png": member}))
    # Patch the declared size in both headers to claim 100 bytes.
    archive = archive.replace(len(member).to_bytes(4, "little"), (100).to_bytes(4, "little"))

    results = upload(project, bytes(archive))

    assert results[0].status == "rejected"
    assert not Image.objects.exists()


def test_damaged_zip_is_rejected_with_a_reason(project):
    results = upload(project, b"PK\x03\x04 this is not really a zip")

    assert len(results) == 1 and results[0].status == "rejected"
    assert "zip" in results[0].reason


def test_uploads_mix_files_and_reports_each(project):
    progress = []
    results = services.uploads_ingest(
        project=project,
        uploads=[
            ("a.png", io.BytesIO(image_bytes(seed=20))),
            ("notes.txt", io.BytesIO(b"hello")),
            ("a-again.png", io.BytesIO(image_bytes(seed=20))),
        ],
        on_progress=lambda done, total: progress.append(done),
        total=3,
    )

    assert [r.status for r in results] == ["imported", "rejected", "duplicate"]
    assert progress == [1, 2, 3]

"""python manage.py import_images DIR --project SLUG [--create]"""

import io

import pytest
from django.core.management import CommandError, call_command

from reviewapp.models import Image, Project
from tests.factories import ProjectFactory
from tests.images import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(tmp_path):
    """bears/{black,grizzly}/..., a nested folder, a bad file and a loose top-level image."""
    root = tmp_path / "bears"
    for label, seeds in {"black": [1, 2, 3], "grizzly": [4, 5]}.items():
        (root / label).mkdir(parents=True)
        for seed in seeds:
            (root / label / f"{seed}.jpg").write_bytes(image_bytes(format="JPEG", seed=seed))
    (root / "teddy" / "2024").mkdir(parents=True)
    (root / "teddy" / "2024" / "t.png").write_bytes(image_bytes(seed=6))
    (root / "black" / "readme.jpg").write_bytes(b"this is text, not a photo")
    (root / "black" / ".hidden.jpg").write_bytes(image_bytes(seed=7))
    (root / "loose.png").write_bytes(image_bytes(seed=8))
    return root


def run(*args) -> str:
    out = io.StringIO()
    call_command("import_images", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_import_labels_by_parent_folder_and_reports_rejections(dataset):
    out = run(str(dataset), "--project", "bears", "--create")

    project = Project.objects.get(slug="bears")
    labels = dict(Image.objects.filter(project=project).values_list("original_name", "label__name"))
    assert labels == {
        "black/1.jpg": "black",
        "black/2.jpg": "black",
        "black/3.jpg": "black",
        "grizzly/4.jpg": "grizzly",
        "grizzly/5.jpg": "grizzly",
        "teddy/2024/t.png": "2024",  # fastai's parent_label: the immediate parent
        "loose.png": None,
    }
    assert set(Image.objects.values_list("source", flat=True)) == {"import"}
    assert "Imported 7, duplicates skipped 0, rejected 1" in out
    assert "rejected black/readme.jpg: not an image" in out


def test_running_twice_imports_nothing_new(dataset):
    run(str(dataset), "--project", "bears", "--create")

    out = run(str(dataset), "--project", "bears")

    assert "Imported 0, duplicates skipped 7, rejected 1" in out
    assert Image.objects.count() == 7


def test_unknown_project_without_create_is_an_error(dataset):
    with pytest.raises(CommandError, match="Add --create"):
        run(str(dataset), "--project", "nope")
    assert not Project.objects.exists()


def test_missing_folder_is_an_error(tmp_path):
    ProjectFactory(slug="p")
    with pytest.raises(CommandError, match="not a folder"):
        run(str(tmp_path / "missing"), "--project", "p")


def test_oversized_file_is_rejected_unread(dataset, settings):
    settings.LOUPE_MAX_FILE_BYTES = 10
    out = run(str(dataset), "--project", "bears", "--create")

    assert "Imported 0" in out and "LOUPE_MAX_FILE_BYTES" in out

"""The dataset exports: a streamed CSV and a zip with one folder per class."""

import csv
import io
import zipfile

import pytest
from django.urls import reverse

from reviewapp import services
from reviewapp.models import Image
from reviewapp.views import exports
from tests.factories import CategoryFactory, ProjectFactory, UserFactory, make_image, reviewer

pytestmark = pytest.mark.django_db

HEADER = ["path", "label", "split", "image_id", "sha256", "width", "height"]


@pytest.fixture
def project():
    return ProjectFactory(slug="pets")


@pytest.fixture
def rita():
    return reviewer(username="rita")


@pytest.fixture
def signed_in(client, rita):
    client.force_login(rita)
    return client


def decide(image, action, actor, **kwargs):
    image.refresh_from_db()
    return services.image_decide(
        image_id=image.pk, action=action, actor=actor, revision=image.revision, **kwargs
    )


def csv_rows(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def zip_of(response) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def stored_bytes(image: Image) -> bytes:
    with image.file.open("rb") as handle:
        return handle.read()


@pytest.fixture
def dataset(project, rita):
    """Two classes, a relabel, a deleted image, an unlabeled one; and another project."""
    cat = CategoryFactory(project=project, name="cat", position=1)
    dog = CategoryFactory(project=project, name="dog", position=2)
    cats = [make_image(project, cat) for _ in range(3)]
    dogs = [make_image(project, dog, format="JPEG") for _ in range(2)]
    moved = cats.pop()
    decide(moved, "relabel", rita, label=dog)
    trashed = make_image(project, cat)
    decide(trashed, "delete", rita)
    unlabeled = make_image(project)
    make_image(ProjectFactory(), CategoryFactory(name="cat"))
    return {
        "cat": cat,
        "dog": dog,
        "cats": cats,
        "dogs": [*dogs, moved],
        "moved": moved,
        "trashed": trashed,
        "unlabeled": unlabeled,
    }


# Access -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dataset-export-csv", "dataset-export-zip"])
def test_exports_send_anonymous_to_login(client, project, name):
    response = client.get(reverse(name, args=[project.slug]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", ["dataset-export-csv", "dataset-export-zip"])
def test_exports_refuse_user_without_group(client, project, name):
    client.force_login(UserFactory())
    assert client.get(reverse(name, args=[project.slug])).status_code == 403


@pytest.mark.parametrize("name", ["dataset-export-csv", "dataset-export-zip"])
def test_exports_refuse_post(signed_in, project, name):
    assert signed_in.post(reverse(name, args=[project.slug])).status_code == 405


# CSV ----------------------------------------------------------------------------


def test_csv_has_one_row_per_active_labeled_image(signed_in, project, dataset):
    response = signed_in.get(reverse("dataset-export-csv", args=[project.slug]))
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="pets-labels.csv"'
    rows = csv_rows(response)
    assert rows[0] == HEADER
    by_id = {int(r[3]): dict(zip(HEADER, r, strict=True)) for r in rows[1:]}
    expected = dataset["cats"] + dataset["dogs"]
    assert len(rows) - 1 == len(by_id) == len(expected)
    assert set(by_id) == {i.pk for i in expected}
    assert dataset["trashed"].pk not in by_id and dataset["unlabeled"].pk not in by_id
    # Classes in their order, ids ascending within each.
    assert [int(r[3]) for r in rows[1:]] == sorted(i.pk for i in dataset["cats"]) + sorted(
        i.pk for i in dataset["dogs"]
    )
    for image in expected:
        image.refresh_from_db()
        row = by_id[image.pk]
        assert row["label"] == image.label.name
        assert row["split"] == image.split
        assert row["sha256"] == image.sha256
        assert (row["width"], row["height"]) == (str(image.width), str(image.height))
        ext = ".jpg" if image.format == "JPEG" else ".png"
        stem = image.original_name.rsplit(".", 1)[0]
        assert row["path"] == f"{image.label.name}/{image.pk}-{stem}{ext}"


def test_csv_uses_the_label_after_a_relabel(signed_in, project, dataset):
    rows = csv_rows(signed_in.get(reverse("dataset-export-csv", args=[project.slug])))
    moved = next(r for r in rows[1:] if int(r[3]) == dataset["moved"].pk)
    assert moved[1] == "dog"
    assert moved[0].startswith("dog/")


def test_csv_of_an_empty_project_is_only_the_header(signed_in, project):
    make_image(project)  # unlabeled: not exported
    rows = csv_rows(signed_in.get(reverse("dataset-export-csv", args=[project.slug])))
    assert rows == [HEADER]


# Zip ----------------------------------------------------------------------------


def test_zip_holds_a_folder_per_class_with_the_stored_files(signed_in, project, dataset):
    response = signed_in.get(reverse("dataset-export-zip", args=[project.slug]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="pets-dataset.zip"'
    archive = zip_of(response)
    assert archive.testzip() is None
    names = archive.namelist()
    assert "labels.csv" in names and "missing.txt" not in names
    images = [*dataset["cats"], *dataset["dogs"]]
    assert len(names) == len(images) + 1
    folders = {name.split("/")[0] for name in names if name != "labels.csv"}
    assert folders == {"cat", "dog"}

    rows = list(csv.reader(io.StringIO(archive.read("labels.csv").decode())))
    assert rows[0] == HEADER
    path_of = {int(r[3]): r[0] for r in rows[1:]}
    # labels.csv names exactly the zip's images, and each holds the stored bytes.
    assert sorted(path_of.values()) == sorted(n for n in names if n != "labels.csv")
    for image in images:
        image.refresh_from_db()
        path = path_of[image.pk]
        assert path.split("/")[0] == image.label.name
        assert archive.read(path) == stored_bytes(image)
        info = archive.getinfo(path)
        assert info.compress_type == zipfile.ZIP_STORED  # PNG and JPEG are compressed already
    assert dataset["trashed"].pk not in path_of and dataset["unlabeled"].pk not in path_of


def test_zip_labels_csv_agrees_with_the_csv_export(signed_in, project, dataset):
    archive = zip_of(signed_in.get(reverse("dataset-export-zip", args=[project.slug])))
    csv_body = b"".join(
        signed_in.get(reverse("dataset-export-csv", args=[project.slug])).streaming_content
    )
    assert archive.read("labels.csv") == csv_body


def test_zip_names_are_safe_from_any_class_name(signed_in, project):
    weird = ["..", ".", " .hidden", 'a:b*c?"<>|', "Cat", "cat", "ünïcode", "back\\slash"]
    categories = [CategoryFactory(project=project, name=name) for name in weird]
    images = {c.pk: make_image(project, c) for c in categories}
    Image.objects.filter(pk=images[categories[0].pk].pk).update(original_name="../../etc/passwd")
    Image.objects.filter(pk=images[categories[1].pk].pk).update(original_name="")
    Image.objects.filter(pk=images[categories[2].pk].pk).update(original_name="C:\\x\\..")

    archive = zip_of(signed_in.get(reverse("dataset-export-zip", args=[project.slug])))
    names = [n for n in archive.namelist() if n != "labels.csv"]
    assert len(names) == len(weird)
    folders = [n.split("/")[0] for n in names]
    assert len({f.casefold() for f in folders}) == len(weird)  # distinct on any file system
    for name in names:
        parts = name.split("/")
        assert len(parts) == 2, name
        assert "\\" not in name and ":" not in name
        for part in parts:
            assert part and part not in (".", "..") and not part.startswith("."), name
    assert "ünïcode" in folders
    folder_of = {int(n.split("/")[1].split("-")[0]): n for n in names}
    dots = images[categories[0].pk]
    assert folder_of[dots.pk] == f"class-{categories[0].pk}/{dots.pk}-passwd.png"
    blank = images[categories[1].pk]
    assert folder_of[blank.pk].endswith(f"/{blank.pk}-{blank.sha256}.png")
    # The CSV names the same paths, and the class names as the project spells them.
    rows = list(csv.reader(io.StringIO(archive.read("labels.csv").decode())))
    assert sorted(r[0] for r in rows[1:]) == sorted(names)
    assert sorted(r[1] for r in rows[1:]) == sorted(weird)


def test_zip_leaves_out_missing_files_and_says_so(signed_in, project):
    cat = CategoryFactory(project=project, name="cat")
    kept, lost = make_image(project, cat), make_image(project, cat)
    lost.file.storage.delete(lost.file.name)
    archive = zip_of(signed_in.get(reverse("dataset-export-zip", args=[project.slug])))
    rows = list(csv.reader(io.StringIO(archive.read("labels.csv").decode())))
    assert [int(r[3]) for r in rows[1:]] == [kept.pk]
    assert f"{lost.pk}\t" in archive.read("missing.txt").decode()
    assert sorted(archive.namelist()) == sorted(["labels.csv", "missing.txt", rows[1][0]])


def test_zip_of_an_empty_project_has_only_the_header(signed_in, project):
    archive = zip_of(signed_in.get(reverse("dataset-export-zip", args=[project.slug])))
    assert archive.namelist() == ["labels.csv"]
    assert archive.read("labels.csv").decode() == ",".join(HEADER) + "\n"


def test_zip_is_built_in_a_temporary_file_closed_with_the_response(signed_in, project, monkeypatch):
    cat = CategoryFactory(project=project)
    make_image(project, cat)
    made = []
    real = exports.tempfile.TemporaryFile

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(exports.tempfile, "TemporaryFile", recording)
    response = signed_in.get(reverse("dataset-export-zip", args=[project.slug]))
    [handle] = made
    assert int(response["Content-Length"]) > 0
    assert not handle.closed
    assert zipfile.is_zipfile(io.BytesIO(b"".join(response.streaming_content)))
    assert handle.closed  # the response closed it, and the OS dropped the unnamed file


# Names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cat", "cat"),
        ("..", "fallback"),
        ("", "fallback"),
        ("  . ", "fallback"),
        (".bashrc", "bashrc"),
        ("a/b", "a_b"),
        ("a\\..\\b", "a_.._b"),
        ("tab\there", "tab_here"),
        ("x" * 300, "x" * 100),
    ],
)
def test_safe_part(text, expected):
    assert exports._safe_part(text, "fallback") == expected

"""The JSON API under /api/v1/: auth, permissions, projects, categories, images, schema."""

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from reviewapp import services
from reviewapp.api.common import absolute_reverse
from reviewapp.models import ApiToken, Category, Image, LabelEvent, Project
from tests.factories import (
    CategoryFactory,
    ProjectFactory,
    UserFactory,
    approver,
    make_image,
    reviewer,
)
from tests.images import image_bytes, zip_bytes

pytestmark = pytest.mark.django_db

API = "/api/v1"


def token_client(user, **client_kwargs) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"}, **client_kwargs)


@pytest.fixture
def approver_api():
    return token_client(approver(username="ada"))


@pytest.fixture
def reviewer_api():
    return token_client(reviewer(username="rex"))


@pytest.fixture
def project():
    return ProjectFactory(name="Birds", slug="birds")


def upload(client, slug, files, **data):
    """POST multipart ``files`` given as {name: bytes}."""
    payload = dict(data)
    payload["files"] = [_named(name, content) for name, content in files.items()]
    return client.post(f"{API}/projects/{slug}/images", payload)


def _named(name, content):
    f = io.BytesIO(content)
    f.name = name
    return f


def absolute(path):
    return f"http://testserver{path}"


# Authentication -------------------------------------------------------------------


def test_valid_bearer_token_authenticates_and_records_last_use():
    user = reviewer()
    token, key = services.api_token_create(user=user, name="laptop")
    before = timezone.now()

    response = Client().get(f"{API}/projects", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 200
    assert response.json() == {"items": [], "next": None}
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_at >= before


def test_token_use_is_recorded_at_most_once_a_minute():
    token, key = services.api_token_create(user=reviewer(), name="cron")
    recent = timezone.now() - timedelta(seconds=10)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=recent)
    client = Client(headers={"Authorization": f"Bearer {key}"})

    assert client.get(f"{API}/projects").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == recent

    stale = timezone.now() - timedelta(minutes=5)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=stale)
    assert client.get(f"{API}/projects").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at > stale + timedelta(minutes=4)


def test_unknown_bearer_token_is_refused_with_401():
    services.api_token_create(user=reviewer(), name="real")

    response = Client().get(f"{API}/projects", headers={"Authorization": "Bearer lp_wrong"})

    assert response.status_code == 401
    assert "token is not valid" in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_missing_credentials_get_401_saying_how_to_authenticate():
    response = Client().get(f"{API}/projects")

    assert response.status_code == 401
    assert "Authorization: Bearer <token>" in response.json()["detail"]


def test_post_without_credentials_gets_401_not_a_csrf_error():
    response = Client(enforce_csrf_checks=True).post(
        f"{API}/projects", {"name": "X"}, content_type="application/json"
    )

    assert response.status_code == 401
    assert not Project.objects.exists()


def test_token_of_inactive_user_is_refused():
    user = reviewer(username="gone")
    _, key = services.api_token_create(user=user, name="old")
    user.is_active = False
    user.save()

    response = Client().get(f"{API}/projects", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 401
    assert response.json()["detail"] == "The account 'gone' is inactive."


def test_session_user_can_read_without_csrf_token(project):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer())

    response = client.get(f"{API}/projects")

    assert response.status_code == 200
    assert [p["slug"] for p in response.json()["items"]] == ["birds"]


def test_session_write_needs_the_csrf_token():
    client = Client(enforce_csrf_checks=True)
    client.force_login(approver())
    secret = "a" * 32  # an unmasked CSRF secret, as the csrftoken cookie holds it
    client.cookies[settings.CSRF_COOKIE_NAME] = secret

    refused = client.post(f"{API}/projects", {"name": "Cats"}, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not Project.objects.exists()

    accepted = client.post(
        f"{API}/projects",
        {"name": "Cats"},
        content_type="application/json",
        headers={"X-CSRFToken": secret},
    )
    assert accepted.status_code == 201
    assert Project.objects.get().slug == "cats"


def test_session_of_inactive_user_gets_401():
    user = reviewer()
    client = Client()
    client.force_login(user)
    user.is_active = False
    user.save()

    assert client.get(f"{API}/projects").status_code == 401


def test_bad_bearer_token_is_refused_even_alongside_a_valid_session():
    client = Client(headers={"Authorization": "Bearer lp_revoked"})
    client.force_login(reviewer())

    assert client.get(f"{API}/projects").status_code == 401


def test_bearer_token_needs_no_csrf_token(approver_api):
    approver_api.handler.enforce_csrf_checks = True

    response = approver_api.post(f"{API}/projects", {"name": "Owls"}, "application/json")

    assert response.status_code == 201


# Permissions ----------------------------------------------------------------------


def test_user_without_any_permission_gets_403_with_the_permission_named(project):
    client = token_client(UserFactory())

    response = client.get(f"{API}/projects/birds")

    assert response.status_code == 403
    assert response.json()["detail"] == (
        "You are not allowed to view projects: it needs the 'reviewapp.view_project' permission."
    )


def test_reviewer_cannot_create_or_change_projects(reviewer_api, project):
    created = reviewer_api.post(f"{API}/projects", {"name": "Owls"}, "application/json")
    changed = reviewer_api.patch(f"{API}/projects/birds", {"image_size": 64}, "application/json")

    assert created.status_code == 403
    assert "reviewapp.add_project" in created.json()["detail"]
    assert changed.status_code == 403
    assert "reviewapp.change_project" in changed.json()["detail"]
    assert list(Project.objects.values_list("slug", "image_size")) == [("birds", 224)]


def test_reviewer_cannot_merge_or_delete_categories(reviewer_api, project):
    a = CategoryFactory(project=project, name="a")
    b = CategoryFactory(project=project, name="b")

    merged = reviewer_api.post(
        f"{API}/projects/birds/categories/{a.pk}/merge", {"into": b.pk}, "application/json"
    )
    deleted = reviewer_api.delete(f"{API}/projects/birds/categories/{a.pk}")

    assert merged.status_code == 403
    assert deleted.status_code == 403
    assert "reviewapp.delete_category" in deleted.json()["detail"]
    assert project.categories.count() == 2


def test_superuser_has_every_permission(project):
    client = token_client(UserFactory(is_superuser=True))

    assert client.get(f"{API}/projects/birds").status_code == 200
    created = client.post(f"{API}/projects", {"name": "Owls"}, "application/json")
    assert created.status_code == 201


def test_permission_is_checked_before_the_project_is_looked_up():
    client = token_client(UserFactory())

    assert client.get(f"{API}/projects/no-such-project").status_code == 403


# Projects -------------------------------------------------------------------------


def test_create_project_derives_slug_and_stores_settings(approver_api):
    response = approver_api.post(
        f"{API}/projects",
        {
            "name": "Garden Birds",
            "description": "What visits the feeder",
            "image_size": 128,
            "resize_method": "pad",
            "augment": False,
            "valid_pct": 0.25,
            "split_seed": 7,
        },
        "application/json",
    )

    assert response.status_code == 201
    project = Project.objects.get()
    assert response.json() == {
        "id": project.pk,
        "name": "Garden Birds",
        "slug": "garden-birds",
        "description": "What visits the feeder",
        "settings": {
            "image_size": 128,
            "resize_method": "pad",
            "augment": False,
            "valid_pct": 0.25,
            "split_seed": 7,
        },
        # A new project's retraining policy is off.
        "retrain_after_decisions": None,
        "retrain_after_images": None,
        "retrain_min_hours": 24,
        "retrain_audit": "",
        "retrain_shadow": False,
        "second_opinion": False,
    }
    assert (project.image_size, project.resize_method, project.augment) == (128, "pad", False)
    assert project.created_by.username == "ada"


def test_create_project_with_defaults_and_explicit_slug(approver_api):
    response = approver_api.post(
        f"{API}/projects", {"name": "Cats", "slug": "felines"}, "application/json"
    )

    assert response.status_code == 201
    assert response.json()["slug"] == "felines"
    assert response.json()["settings"] == {
        "image_size": 224,
        "resize_method": "random_resized_crop",
        "augment": True,
        "valid_pct": 0.2,
        "split_seed": 42,
    }


def test_create_project_with_taken_slug_is_400(approver_api, project):
    response = approver_api.post(
        f"{API}/projects", {"name": "Other birds", "slug": "birds"}, "application/json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "slug: The slug 'birds' is already taken.",
        "errors": {"slug": ["The slug 'birds' is already taken."]},
    }
    assert Project.objects.count() == 1


def test_create_project_with_out_of_range_setting_is_400(approver_api):
    response = approver_api.post(
        f"{API}/projects", {"name": "Tiny", "image_size": 8}, "application/json"
    )

    assert response.status_code == 400
    body = response.json()
    assert list(body["errors"]) == ["image_size"]
    assert body["detail"].startswith("image_size: Ensure this value is greater than or equal")
    assert not Project.objects.exists()


def test_malformed_body_is_400_with_readable_errors_not_422(approver_api):
    response = approver_api.post(
        f"{API}/projects", {"resize_method": "stretch"}, "application/json"
    )

    assert response.status_code == 400
    body = response.json()
    assert set(body["errors"]) == {"name", "resize_method"}
    assert "name: Field required" in body["detail"]
    assert "'crop'" in body["errors"]["resize_method"][0]


def test_body_that_is_not_json_is_400_saying_what_to_send(approver_api):
    response = approver_api.post(
        f"{API}/projects", "name=Cats", "application/x-www-form-urlencoded"
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "The request body is not valid JSON: send a JSON object with "
        "'Content-Type: application/json'."
    }


def test_unknown_endpoint_is_404_json(reviewer_api):
    response = reviewer_api.get(f"{API}/projects/")  # trailing slash

    assert response.status_code == 404
    assert response.json()["detail"].startswith("No API endpoint '/api/v1/projects/'")


def test_list_projects(reviewer_api):
    ProjectFactory(name="Birds", slug="birds")
    ProjectFactory(name="Apples", slug="apples", description="fruit")

    response = reviewer_api.get(f"{API}/projects")

    assert response.status_code == 200
    assert [(p["slug"], p["description"]) for p in response.json()["items"]] == [
        ("apples", "fruit"),
        ("birds", ""),
    ]
    assert response.json()["items"][0]["settings"]["image_size"] == 224


def test_project_detail_counts_images_per_class_and_split(reviewer_api, project):
    robin = CategoryFactory(project=project, name="robin")
    CategoryFactory(project=project, name="wren")
    images = [make_image(project, robin) for _ in range(5)] + [make_image(project)]
    gone = make_image(project, robin)
    Image.objects.filter(pk=gone.pk).update(status=Image.Status.DELETED)

    response = reviewer_api.get(f"{API}/projects/birds")

    assert response.status_code == 200
    body = response.json()
    assert body["slug"] == "birds" and body["settings"]["split_seed"] == 42
    robin_splits = [i.split for i in images[:5]]
    counts = body["counts"]
    assert counts["classes"] == [
        {
            "category_id": robin.pk,
            "name": "robin",
            "train": robin_splits.count("train"),
            "valid": robin_splits.count("valid"),
            "total": 5,
        },
        {
            "category_id": project.categories.get(name="wren").pk,
            "name": "wren",
            "train": 0,
            "valid": 0,
            "total": 0,
        },
        {
            "category_id": None,
            "name": "(unlabeled)",
            "train": int(images[5].split == "train"),
            "valid": int(images[5].split == "valid"),
            "total": 1,
        },
    ]
    assert (counts["total"], counts["deleted"]) == (6, 1)


def test_unknown_project_is_404_json(reviewer_api):
    response = reviewer_api.get(f"{API}/projects/nope")

    assert response.status_code == 404
    assert response.json() == {"detail": "No project 'nope'."}


def test_patch_project_changes_settings_and_resplits_images(approver_api, project):
    images = [make_image(project) for _ in range(12)]

    response = approver_api.patch(
        f"{API}/projects/birds",
        {"split_seed": 1234, "valid_pct": 0.5, "name": "Birds v2"},
        "application/json",
    )

    assert response.status_code == 200
    assert response.json()["settings"]["split_seed"] == 1234
    assert response.json()["name"] == "Birds v2"
    project.refresh_from_db()
    assert (project.split_seed, project.valid_pct, project.slug) == (1234, 0.5, "birds")
    for image in images:
        image.refresh_from_db()
        assert image.split == project.split_for(image.sha256)


def test_patch_project_with_unknown_field_is_400(approver_api, project):
    response = approver_api.patch(f"{API}/projects/birds", {"imagesize": 64}, "application/json")

    assert response.status_code == 400
    assert response.json()["detail"] == "imagesize: Extra inputs are not permitted"


def test_patch_project_with_invalid_value_changes_nothing(approver_api, project):
    response = approver_api.patch(f"{API}/projects/birds", {"valid_pct": 0.9}, "application/json")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["valid_pct"]
    project.refresh_from_db()
    assert project.valid_pct == 0.2


# Categories -----------------------------------------------------------------------


def test_category_create_list_update_delete(approver_api, project):
    url = f"{API}/projects/birds/categories"

    robin = approver_api.post(url, {"name": "robin"}, "application/json")
    wren = approver_api.post(url, {"name": "wren", "hotkey": "7"}, "application/json")
    assert (robin.status_code, wren.status_code) == (201, 201)
    robin_id, wren_id = robin.json()["id"], wren.json()["id"]
    assert robin.json() == {"id": robin_id, "name": "robin", "hotkey": "1", "position": 1}
    assert wren.json()["hotkey"] == "7"

    listed = approver_api.get(url)
    assert [c["name"] for c in listed.json()["items"]] == ["robin", "wren"]

    changed = approver_api.patch(
        f"{url}/{robin_id}",
        {"name": "European robin", "hotkey": "", "position": 9},
        "application/json",
    )
    assert changed.status_code == 200
    assert changed.json() == {"id": robin_id, "name": "European robin", "hotkey": "", "position": 9}
    assert Category.objects.get(pk=robin_id).name == "European robin"

    deleted = approver_api.delete(f"{url}/{wren_id}")
    assert deleted.status_code == 204
    assert list(project.categories.values_list("name", flat=True)) == ["European robin"]


def test_duplicate_category_name_or_hotkey_is_400(approver_api, project):
    CategoryFactory(project=project, name="robin", hotkey="1")
    wren = CategoryFactory(project=project, name="wren", hotkey="2")
    url = f"{API}/projects/birds/categories"

    same_name = approver_api.post(url, {"name": "robin"}, "application/json")
    same_key = approver_api.patch(f"{url}/{wren.pk}", {"hotkey": "1"}, "application/json")

    assert same_name.status_code == 400
    assert same_name.json()["errors"] == {"name": ["'robin' already exists in this project."]}
    assert same_key.status_code == 400
    assert same_key.json()["detail"] == "hotkey: Hotkey 1 is already used by 'robin'."
    assert project.categories.count() == 2


def test_a_reserved_hotkey_is_400_with_the_action_it_belongs_to(approver_api, project):
    url = f"{API}/projects/birds/categories"

    refused = approver_api.post(url, {"name": "robin", "hotkey": "u"}, "application/json")
    letter = approver_api.post(url, {"name": "wren", "hotkey": "w"}, "application/json")

    assert refused.status_code == 400
    assert "'u' is the review queues' key to undo" in str(refused.json())
    assert (letter.status_code, letter.json()["hotkey"]) == (201, "w")
    assert list(project.categories.values_list("name", flat=True)) == ["wren"]


def test_deleting_a_category_that_labels_images_is_400(approver_api, project):
    robin = CategoryFactory(project=project, name="robin")
    make_image(project, robin)

    response = approver_api.delete(f"{API}/projects/birds/categories/{robin.pk}")

    assert response.status_code == 400
    assert "merge it into another category" in response.json()["detail"]
    assert Category.objects.filter(pk=robin.pk).exists()


def test_merge_moves_images_logs_each_move_and_deletes_source(approver_api, project):
    robin = CategoryFactory(project=project, name="robin", hotkey="1")
    bird = CategoryFactory(project=project, name="bird", hotkey="")
    moved = [make_image(project, robin) for _ in range(3)]
    kept = make_image(project, bird)

    response = approver_api.post(
        f"{API}/projects/birds/categories/{robin.pk}/merge", {"into": bird.pk}, "application/json"
    )

    assert response.status_code == 200
    assert response.json() == {
        "moved": 3,
        "into": {"id": bird.pk, "name": "bird", "hotkey": "1", "position": bird.position},
    }
    assert not Category.objects.filter(pk=robin.pk).exists()
    assert set(project.images.filter(label=bird).values_list("id", flat=True)) == {
        i.pk for i in [*moved, kept]
    }
    events = LabelEvent.objects.filter(action=LabelEvent.Action.RELABEL)
    assert sorted(events.values_list("image_id", flat=True)) == sorted(i.pk for i in moved)
    assert {(e.actor.username, e.to_category_id) for e in events} == {("ada", bird.pk)}


def test_merge_into_unknown_or_same_category_is_400(approver_api, project):
    robin = CategoryFactory(project=project, name="robin")
    other_project_category = CategoryFactory(name="elsewhere")
    url = f"{API}/projects/birds/categories/{robin.pk}/merge"

    unknown = approver_api.post(url, {"into": other_project_category.pk}, "application/json")
    itself = approver_api.post(url, {"into": robin.pk}, "application/json")

    assert unknown.status_code == 400
    assert f"No category {other_project_category.pk} in project 'birds'" in unknown.json()["detail"]
    assert itself.status_code == 400
    assert itself.json()["detail"] == "A category cannot be merged into itself."
    assert Category.objects.filter(pk=robin.pk).exists()


def test_category_of_another_project_is_404(approver_api, project):
    elsewhere = CategoryFactory(name="elsewhere")

    response = approver_api.patch(
        f"{API}/projects/birds/categories/{elsewhere.pk}", {"name": "x"}, "application/json"
    )

    assert response.status_code == 404
    assert response.json()["detail"] == f"No category {elsewhere.pk} in project 'birds'."
    assert Category.objects.get(pk=elsewhere.pk).name == "elsewhere"


# Image lists ----------------------------------------------------------------------


@pytest.fixture
def labeled(project):
    """Two robins, one wren, one unlabeled and one deleted robin."""
    robin = CategoryFactory(project=project, name="robin")
    wren = CategoryFactory(project=project, name="wren")
    images = {
        "robins": [make_image(project, robin), make_image(project, robin)],
        "wren": make_image(project, wren),
        "unlabeled": make_image(project),
        "deleted": make_image(project, robin),
    }
    Image.objects.filter(pk=images["deleted"].pk).update(status=Image.Status.DELETED)
    return images


def ids(response):
    return [item["id"] for item in response.json()["items"]]


def test_image_list_filters_by_label_split_and_status(reviewer_api, labeled):
    url = f"{API}/projects/birds/images"
    robins = labeled["robins"]

    assert ids(reviewer_api.get(url)) == sorted(
        [i.pk for i in [*robins, labeled["wren"], labeled["unlabeled"]]], reverse=True
    )
    assert ids(reviewer_api.get(url, {"label": "robin"})) == [robins[1].pk, robins[0].pk]
    assert ids(reviewer_api.get(url, {"label": "none"})) == [labeled["unlabeled"].pk]
    assert ids(reviewer_api.get(url, {"status": "deleted"})) == [labeled["deleted"].pk]
    for split in ("train", "valid"):
        expected = [i.pk for i in Image.objects.filter(status="active", split=split)]
        assert ids(reviewer_api.get(url, {"split": split})) == expected


def test_image_list_items_describe_each_image(reviewer_api, labeled):
    robin = labeled["robins"][0]

    response = reviewer_api.get(f"{API}/projects/birds/images", {"label": "robin"})

    item = response.json()["items"][-1]
    assert item["id"] == robin.pk
    assert item["project"] == "birds"
    assert item["label"] == "robin"
    assert (item["width"], item["height"], item["format"]) == (24, 16, "PNG")
    assert item["sha256"] == robin.sha256
    assert response.json()["next"] is None


def test_image_list_with_unknown_label_is_400_naming_valid_labels(reviewer_api, labeled):
    response = reviewer_api.get(f"{API}/projects/birds/images", {"label": "owl"})

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "label: No category 'owl' in project 'birds'. "
        "Valid labels: 'robin', 'wren', 'none' (unlabeled)."
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"split": "test"}, "split"),
        ({"status": "archived"}, "status"),
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"before": "abc"}, "before"),
    ],
)
def test_image_list_with_bad_parameter_is_400(reviewer_api, project, params, field):
    response = reviewer_api.get(f"{API}/projects/birds/images", params)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]
    assert response.json()["detail"].startswith(f"{field}: ")


def test_image_list_treats_empty_filters_as_omitted(reviewer_api, labeled):
    response = reviewer_api.get(f"{API}/projects/birds/images?label=&split=&status=&before=")

    assert response.status_code == 200
    assert len(ids(response)) == 4  # every active image


def test_cursor_pages_do_not_overlap_and_cover_every_image(reviewer_api, project):
    robin = CategoryFactory(project=project, name="robin")
    all_ids = sorted((make_image(project, robin).pk for _ in range(8)), reverse=True)
    make_image(project)  # unlabeled: filtered out on every page

    pages = []
    url = f"{API}/projects/birds/images?label=robin&limit=3"
    while url:
        response = reviewer_api.get(url)
        assert response.status_code == 200
        pages.append(ids(response))
        url = response.json()["next"]
        if url:
            assert url.startswith("http://testserver/api/v1/projects/birds/images?")
            assert "label=robin" in url and "limit=3" in url

    assert [len(p) for p in pages] == [3, 3, 2]
    assert [i for page in pages for i in page] == all_ids


def test_image_list_runs_no_count_and_no_query_per_image(reviewer_api, project):
    for _ in range(6):
        make_image(project)
    reviewer_api.get(f"{API}/projects/birds/images")  # warm up auth's queries

    with CaptureQueriesContext(connection) as captured:
        response = reviewer_api.get(f"{API}/projects/birds/images?limit=5")

    assert len(response.json()["items"]) == 5
    sql = [q["sql"].upper() for q in captured.captured_queries]
    assert not [q for q in sql if "COUNT(" in q]
    assert len(sql) <= 8, sql  # token, user perms, project, one page: never one per image


# Uploads --------------------------------------------------------------------------


def test_upload_imports_a_good_image_with_its_label(reviewer_api, project):
    CategoryFactory(project=project, name="robin")

    response = upload(reviewer_api, "birds", {"robin.png": image_bytes(seed=1)}, label="robin")

    assert response.status_code == 201
    body = response.json()
    image = Image.objects.get()
    assert body == {
        "results": [
            {
                "name": "robin.png",
                "status": "imported",
                "reason": "",
                "image_id": image.pk,
                "label": "robin",
            }
        ],
        "imported": 1,
        "duplicates": 0,
        "rejected": 0,
    }
    assert (image.label.name, image.original_name, image.format) == ("robin", "robin.png", "PNG")
    event = LabelEvent.objects.get(image=image)
    assert (event.action, event.actor.username) == ("import", "rex")


def test_upload_rejects_a_bad_file_with_a_reason_and_200(reviewer_api, project):
    response = upload(
        reviewer_api,
        "birds",
        {"notes.png": b"this is not an image", "ok.png": image_bytes(seed=2)},
    )

    assert response.status_code == 201  # one file was imported
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "imported"]
    assert results[0]["reason"] == "not an image Loupe can read (JPEG, PNG, WEBP, GIF, BMP or TIFF)"
    assert Image.objects.count() == 1

    only_bad = upload(reviewer_api, "birds", {"empty.jpg": b""})
    assert only_bad.status_code == 200
    assert only_bad.json()["rejected"] == 1
    assert only_bad.json()["results"][0]["reason"] == "the file is empty"
    assert Image.objects.count() == 1


def test_upload_of_a_known_image_reports_a_duplicate(reviewer_api, project):
    first = make_image(project, seed=5)

    response = upload(reviewer_api, "birds", {"again.png": image_bytes(seed=5)})

    assert response.status_code == 200
    body = response.json()
    assert (body["imported"], body["duplicates"]) == (0, 1)
    assert body["results"][0]["image_id"] == first.pk
    assert Image.objects.count() == 1


def test_upload_zip_labels_members_by_folder(reviewer_api, project):
    archive = zip_bytes(
        {
            "robin/a.png": image_bytes(seed=10),
            "robin/b.png": image_bytes(seed=11),
            "wren/c.png": image_bytes(seed=12),
            "wren/readme.txt": b"hello",
        }
    )

    response = upload(reviewer_api, "birds", {"birds.zip": archive}, labels_from_folders="true")

    assert response.status_code == 201
    body = response.json()
    assert (body["imported"], body["duplicates"], body["rejected"]) == (3, 0, 1)
    assert [r["name"] for r in body["results"]] == [
        "birds.zip/robin/a.png",
        "birds.zip/robin/b.png",
        "birds.zip/wren/c.png",
        "birds.zip/wren/readme.txt",
    ]
    labels = sorted(Image.objects.values_list("label__name", flat=True))
    assert labels == ["robin", "robin", "wren"]


def test_upload_zip_without_folder_labels_uses_the_given_label(reviewer_api, project):
    CategoryFactory(project=project, name="bird")
    archive = zip_bytes({"x/a.png": image_bytes(seed=20), "b.png": image_bytes(seed=21)})

    response = upload(reviewer_api, "birds", {"batch.zip": archive}, label="bird")

    assert response.status_code == 201
    assert response.json()["imported"] == 2
    assert set(Image.objects.values_list("label__name", flat=True)) == {"bird"}
    assert list(project.categories.values_list("name", flat=True)) == ["bird"]


def test_upload_with_unknown_label_is_400_and_imports_nothing(reviewer_api, project):
    CategoryFactory(project=project, name="robin")

    response = upload(reviewer_api, "birds", {"a.png": image_bytes(seed=3)}, label="owl")

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "label: No category 'owl' in project 'birds'. Valid labels: 'robin'."
    )
    assert not Image.objects.exists()


def test_upload_without_files_is_400(reviewer_api, project):
    response = reviewer_api.post(f"{API}/projects/birds/images", {"label": ""})

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["files"]


def test_upload_needs_add_image_permission(project):
    client = token_client(UserFactory())

    response = upload(client, "birds", {"a.png": image_bytes(seed=4)})

    assert response.status_code == 403
    assert "reviewapp.add_image" in response.json()["detail"]
    assert not Image.objects.exists()


# Image detail ---------------------------------------------------------------------


def test_image_detail(reviewer_api, project):
    robin = CategoryFactory(project=project, name="robin")
    image = make_image(project, robin, seed=30)

    response = reviewer_api.get(f"{API}/images/{image.pk}")

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": image.pk,
        "project": "birds",
        "label": "robin",
        "split": image.split,
        "status": "active",
        "source": "upload",
        "width": 24,
        "height": 16,
        "format": "PNG",
        "sha256": image.sha256,
        "revision": 1,
        "original_name": "generated-30.png",
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
        "file_url": absolute(reverse("image-file", kwargs={"pk": image.pk})),
        "thumbnail_url": absolute(reverse("image-thumbnail", kwargs={"pk": image.pk})),
    }
    assert body["created_at"].startswith(image.created_at.isoformat()[:19])


def test_file_links_are_null_while_a_route_does_not_exist(rf):
    assert absolute_reverse(rf.get("/"), "no-such-route", pk=1) is None
    assert absolute_reverse(rf.get("/"), "image-file", pk=1) == absolute(
        reverse("image-file", kwargs={"pk": 1})
    )


def test_unlabeled_image_has_null_label(reviewer_api, project):
    image = make_image(project)

    assert reviewer_api.get(f"{API}/images/{image.pk}").json()["label"] is None


def test_unknown_image_is_404_json(reviewer_api):
    response = reviewer_api.get(f"{API}/images/999999")

    assert response.status_code == 404
    assert response.json() == {"detail": "No image 999999."}


# Schema and docs ------------------------------------------------------------------


def test_openapi_schema_lists_every_path_and_the_bearer_scheme():
    response = Client().get(f"{API}/openapi.json")

    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) == {
        "/api/v1/projects",
        "/api/v1/projects/{slug}",
        "/api/v1/projects/{slug}/categories",
        "/api/v1/projects/{slug}/categories/{category_id}",
        "/api/v1/projects/{slug}/categories/{category_id}/merge",
        "/api/v1/projects/{slug}/images",
        "/api/v1/images/{image_id}",
        "/api/v1/projects/{slug}/training-runs",
        "/api/v1/training-runs/{run_id}",
        "/api/v1/training-runs/{run_id}/cancel",
        "/api/v1/projects/{slug}/model-versions",
        "/api/v1/model-versions/{version_id}",
        "/api/v1/model-versions/{version_id}/onnx",
        "/api/v1/model-versions/{version_id}/onnx-spec",
        "/api/v1/model-versions/{version_id}/scores",
        "/api/v1/model-versions/{a_id}/compare/{b_id}",
        "/api/v1/images/{image_id}/decisions",
        "/api/v1/projects/{slug}/decisions",
        "/api/v1/images/{image_id}/history",
        "/api/v1/model-versions/{version_id}/approve",
        "/api/v1/model-versions/{version_id}/reject",
        "/api/v1/model-versions/{version_id}/stage",
        "/api/v1/model-versions/{version_id}/timeline",
        "/api/v1/projects/{slug}/rollback",
        "/api/v1/projects/{slug}/predict",
        "/api/v1/projects/{slug}/predict/batch",
        "/api/v1/predictions/{prediction_id}",
        "/api/v1/projects/{slug}/label-audits",
        "/api/v1/label-audits/{audit_id}",
        "/api/v1/label-audits/{audit_id}/cancel",
        "/api/v1/label-audits/{audit_id}/scores",
        "/api/v1/label-audits/{audit_id}/scores-by-offset",
        "/api/v1/projects/{slug}/labeling-queue",
        "/api/v1/notifications",
        "/api/v1/notifications/{id}/read",
        "/api/v1/projects/{slug}/webhooks",
        "/api/v1/webhooks/{webhook_id}",
        "/api/v1/webhooks/{webhook_id}/deliveries",
        "/api/v1/upload-batches/{batch_id}",
        "/api/v1/projects/{slug}/second-opinions",
        "/api/v1/second-opinions/{opinion_id}",
    }
    ops = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"webhook_list", "webhook_create", "webhook_update", "webhook_delete"} <= ops
    assert {"webhook_deliveries", "notification_list", "notification_read"} <= ops
    assert schema["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    assert schema["paths"]["/api/v1/projects"]["post"]["operationId"] == "project_create"


def test_docs_page_loads_swagger_from_local_static_files():
    response = Client().get(f"{API}/docs")

    assert response.status_code == 200
    html = response.content.decode()
    assert f"{settings.STATIC_URL}ninja/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    assert "https://" not in html and "http://" not in html


# create_user_token ----------------------------------------------------------------


def test_create_user_token_prints_a_working_token_once():
    user = reviewer(username="bot")
    out, err = io.StringIO(), io.StringIO()

    call_command("create_user_token", "--user", "bot", "--name", "nightly", stdout=out, stderr=err)

    key = out.getvalue().strip()
    token = ApiToken.objects.get(user=user)
    assert token.name == "nightly"
    assert token.key_hash == ApiToken.hash_key(key)
    assert key not in err.getvalue()
    response = Client().get(f"{API}/projects", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


def test_create_user_token_for_unknown_user_fails():
    with pytest.raises(CommandError, match="No user 'ghost'"):
        call_command("create_user_token", "--user", "ghost")
    assert not ApiToken.objects.exists()

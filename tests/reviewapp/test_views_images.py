"""The image browser, the image page, and the file and thumbnail views."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reviewapp import services
from reviewapp.models import Image
from reviewapp.views import images as image_views
from tests.factories import CategoryFactory, ProjectFactory, UserFactory, make_image, reviewer

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'


def html(response) -> str:
    return response.content.decode()


def shown_ids(response) -> list[int]:
    """Image ids in the grid, in page order."""
    return [
        int(pk) for pk in re.findall(r'href="/images/(\d+)/" class="thumb__link"', html(response))
    ]


@pytest.fixture
def project():
    return ProjectFactory()


@pytest.fixture
def signed_in(client):
    client.force_login(reviewer(username="rita"))
    return client


# Access -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["image-detail", "image-file", "image-thumbnail"])
def test_image_views_send_anonymous_to_login(client, project, name):
    image = make_image(project)
    response = client.get(reverse(name, args=[image.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", ["image-detail", "image-file", "image-thumbnail"])
def test_image_views_refuse_user_without_group(client, project, name):
    image = make_image(project)
    client.force_login(UserFactory())
    assert client.get(reverse(name, args=[image.pk])).status_code == 403


def test_image_browser_access(client, project):
    url = reverse("image-browser", args=[project.slug])
    assert client.get(url).status_code == 302
    client.force_login(UserFactory())
    assert client.get(url).status_code == 403


# Browser ------------------------------------------------------------------------


def test_image_browser_shows_thumbnails_linking_to_each_image(signed_in, project):
    cat = CategoryFactory(project=project, name="cat")
    images = [make_image(project, cat), make_image(project)]
    response = signed_in.get(reverse("image-browser", args=[project.slug]))
    page = html(response)
    assert response.status_code == 200
    assert LAYOUT in page
    assert shown_ids(response) == [images[1].pk, images[0].pk]  # newest first
    for image in images:
        assert f'src="{reverse("image-thumbnail", args=[image.pk])}"' in page
    assert "Unlabeled" in page and ">cat<" in page
    assert 'rel="next"' not in page


def test_image_browser_filters_by_label_split_and_status(signed_in, project):
    cat = CategoryFactory(project=project, name="cat")
    dog = CategoryFactory(project=project, name="dog")
    cats = [make_image(project, cat) for _ in range(6)]
    dogs = [make_image(project, dog) for _ in range(3)]
    unlabeled = [make_image(project) for _ in range(2)]
    trashed = make_image(project, cat)
    Image.objects.filter(pk=trashed.pk).update(status=Image.Status.DELETED)
    url = reverse("image-browser", args=[project.slug])

    def ids(**params):
        return set(shown_ids(signed_in.get(url, params)))

    assert ids(label=cat.pk) == {i.pk for i in cats}
    assert ids(label=dog.pk) == {i.pk for i in dogs}
    assert ids(label="none") == {i.pk for i in unlabeled}
    valid_cats = {i.pk for i in cats if i.split == "valid"}
    assert ids(label=cat.pk, split="valid") == valid_cats
    assert ids(split="train") == {i.pk for i in cats + dogs + unlabeled if i.split == "train"}
    assert ids(status="deleted") == {trashed.pk}
    assert ids(status="all", label=cat.pk) == {i.pk for i in cats} | {trashed.pk}
    # Default: active images only.
    assert trashed.pk not in ids()


def test_image_browser_ignores_bad_filter_values(signed_in, project):
    image = make_image(project)
    other_project_category = CategoryFactory()
    url = reverse("image-browser", args=[project.slug])
    for params in (
        {"label": "abc"},
        {"label": other_project_category.pk},
        {"split": "test"},
        {"status": "weird"},
        {"before": "x"},
    ):
        response = signed_in.get(url, params)
        assert response.status_code == 200, params
        assert shown_ids(response) == [image.pk], params


def test_image_browser_pages_by_cursor_without_overlap(signed_in, project, monkeypatch):
    monkeypatch.setattr(image_views, "PAGE_SIZE", 5)
    cat = CategoryFactory(project=project)
    made = [make_image(project, cat) for _ in range(12)]
    url = reverse("image-browser", args=[project.slug])

    first = signed_in.get(url, {"label": cat.pk})
    page1 = shown_ids(first)
    assert page1 == sorted((i.pk for i in made), reverse=True)[:5]
    match = re.search(r'rel="next" href="\?([^"]+)"', html(first))
    next_query = match.group(1).replace("&amp;", "&")
    assert f"before={page1[-1]}" in next_query and f"label={cat.pk}" in next_query
    assert f'hx-get="?{match.group(1)}"' in html(first)

    second = signed_in.get(f"{url}?{next_query}")
    page2 = shown_ids(second)
    assert len(page2) == 5
    assert not set(page1) & set(page2)
    assert max(page2) < min(page1)

    third = signed_in.get(url, {"label": cat.pk, "before": page2[-1]})
    page3 = shown_ids(third)
    assert len(page3) == 2
    assert set(page1) | set(page2) | set(page3) == {i.pk for i in made}
    assert 'rel="next"' not in html(third)
    assert "« Newest" in html(third)


def test_image_browser_htmx_returns_only_the_grid(signed_in, project, monkeypatch):
    monkeypatch.setattr(image_views, "PAGE_SIZE", 2)
    made = [make_image(project) for _ in range(3)]
    response = signed_in.get(
        reverse("image-browser", args=[project.slug]), {"before": made[-1].pk}, **HTMX
    )
    page = html(response)
    assert page.lstrip().startswith('<section id="image-grid"')
    assert LAYOUT not in page and 'role="search"' not in page  # no filter form
    assert shown_ids(response) == [made[1].pk, made[0].pk]


def test_image_browser_queries_do_not_grow_with_images(
    signed_in, project, django_assert_max_num_queries
):
    cat = CategoryFactory(project=project)
    other = CategoryFactory(project=project)
    url = reverse("image-browser", args=[project.slug])
    for _ in range(3):
        make_image(project, cat)
    with CaptureQueriesContext(connection) as few:
        assert len(shown_ids(signed_in.get(url))) == 3
    for n in range(27):
        make_image(project, cat if n % 2 else other)
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        assert len(shown_ids(signed_in.get(url))) == 30
    sql = " ".join(q["sql"] for q in many.captured_queries).upper()
    assert "COUNT(" not in sql
    assert "OFFSET" not in sql


# Image page ---------------------------------------------------------------------


def test_image_detail_shows_facts_and_full_history(signed_in, project):
    source = CategoryFactory(project=project, name="wolf")
    target = CategoryFactory(project=project, name="dog")
    image = make_image(project, source)
    mover = reviewer(username="mona")
    services.category_merge(source=source, target=target, actor=mover)
    image.refresh_from_db()

    response = signed_in.get(reverse("image-detail", args=[image.pk]))
    page = html(response)
    assert response.status_code == 200
    assert f"Image #{image.pk}" in page
    assert "<strong>dog</strong>" in page
    assert image.sha256 in page
    assert f"{image.width} × {image.height} px" in page
    assert "PNG" in page and image.original_name in page
    assert f"<dt>Revision</dt><dd>{image.revision}</dd>" in page
    assert f'src="{reverse("image-file", args=[image.pk])}"' in page
    # History: the import, then the merge by mona, newest first.
    history = page[page.index('id="image-history"') :]
    assert history.index("Relabel") < history.index("Import")
    assert "mona" in history
    assert "— → dog" in history  # the merged-away category is gone from the log's FK
    assert "merged category &#x27;wolf&#x27; into &#x27;dog&#x27;" in history
    assert "upload: generated-" in history


def test_image_detail_htmx_returns_only_the_history(signed_in, project):
    image = make_image(project)
    response = signed_in.get(reverse("image-detail", args=[image.pk]), **HTMX)
    page = html(response)
    assert page.lstrip().startswith('<section id="image-history"')
    assert LAYOUT not in page
    assert "Import" in page


def test_image_detail_of_tiff_shows_its_preview(signed_in, project):
    image = make_image(project, format="TIFF")
    page = html(signed_in.get(reverse("image-detail", args=[image.pk])))
    assert "Browsers cannot show TIFF files" in page
    assert f'src="{reverse("image-thumbnail", args=[image.pk])}"' in page


# Files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_image_file_serves_the_stored_bytes_with_their_type(signed_in, project, fmt, content_type):
    image = make_image(project, format=fmt)
    response = signed_in.get(reverse("image-file", args=[image.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    with image.file.open("rb") as stored:
        assert b"".join(response.streaming_content) == stored.read()
    assert response["ETag"] == f'"{image.sha256}"'
    assert "private" in response["Cache-Control"] and "max-age=" in response["Cache-Control"]


def test_image_thumbnail_serves_a_jpeg(signed_in, project):
    image = make_image(project, format="PNG")
    response = signed_in.get(reverse("image-thumbnail", args=[image.pk]))
    body = b"".join(response.streaming_content)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert body[:3] == b"\xff\xd8\xff"
    with image.thumbnail.open("rb") as stored:
        assert body == stored.read()
    assert response["ETag"] == f'"{image.sha256}-thumb"'
    assert "private" in response["Cache-Control"]


def test_image_file_answers_304_to_a_matching_etag(signed_in, project):
    image = make_image(project)
    response = signed_in.get(
        reverse("image-file", args=[image.pk]), HTTP_IF_NONE_MATCH=f'"{image.sha256}"'
    )
    assert response.status_code == 304
    assert response["ETag"] == f'"{image.sha256}"'


def test_image_file_missing_from_storage_is_404(signed_in, project):
    image = make_image(project)
    image.file.storage.delete(image.file.name)
    assert signed_in.get(reverse("image-file", args=[image.pk])).status_code == 404
    # The page still opens and says the file is gone.
    page = html(signed_in.get(reverse("image-detail", args=[image.pk])))
    assert "file missing from storage" in page

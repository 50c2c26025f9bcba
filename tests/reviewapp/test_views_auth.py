"""Login, logout, the layout every page shares, and the 403 page."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from tests.factories import ProjectFactory, UserFactory, reviewer

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def html(response) -> str:
    return response.content.decode()


def test_login_page_renders_the_form(client):
    response = client.get(reverse("login"))
    page = html(response)
    assert response.status_code == 200
    assert 'name="username"' in page and 'name="password"' in page
    assert "Account menu" not in page


def test_login_redirects_to_the_projects(client):
    reviewer(username="rosa")
    response = client.post(reverse("login"), {"username": "rosa", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("project-list")


def test_login_returns_to_the_page_asked_for(client):
    project = ProjectFactory()
    reviewer(username="rosa")
    target = reverse("project-detail", args=[project.slug])
    login = client.get(target)["Location"]
    assert login == f"{reverse('login')}?next={target}"
    response = client.post(login, {"username": "rosa", "password": PASSWORD, "next": target})
    assert response["Location"] == target


def test_login_with_wrong_password_shows_error(client):
    reviewer(username="rosa")
    response = client.post(reverse("login"), {"username": "rosa", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in html(response)


def test_logout_is_a_post(client):
    client.force_login(reviewer())
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert client.get(reverse("project-list")).status_code == 302


def test_layout_has_menu_csrf_header_and_local_htmx(client):
    client.force_login(reviewer(username="rosa"))
    page = html(client.get(reverse("project-list")))
    assert 'hx-headers=\'{"X-CSRFToken": "' in page
    assert '<script src="/static/vendor/htmx.min.js" defer></script>' in page
    assert "/static/css/loupe.css" in page
    assert "rosa" in page
    assert reverse("api-tokens") in page
    assert f'action="{reverse("logout")}"' in page
    assert reverse("admin:index") not in page  # not staff
    assert "https://" not in page and "http://" not in page  # nothing from the internet


def test_layout_links_admin_for_staff(client):
    client.force_login(User.objects.create_superuser("root", password=PASSWORD))
    assert reverse("admin:index") in html(client.get(reverse("project-list")))


def test_project_pages_show_project_nav(client):
    project = ProjectFactory(name="Bears")
    client.force_login(reviewer())
    page = html(client.get(reverse("image-browser", args=[project.slug])))
    assert 'aria-label="Project"' in page
    assert f'href="{reverse("image-browser", args=[project.slug])}" aria-current="page"' in page
    assert f'href="{reverse("category-list", args=[project.slug])}"' in page


def test_htmx_request_from_a_signed_out_browser_redirects_the_whole_page(client):
    project = ProjectFactory()
    url = reverse("image-browser", args=[project.slug])
    response = client.get(
        url, HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=f"http://testserver{url}"
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"{reverse('login')}?next={url}"


def test_forbidden_page_uses_the_layout(client):
    client.force_login(UserFactory())
    response = client.get(reverse("project-list"))
    page = html(response)
    assert response.status_code == 403
    assert 'id="site-header"' in page
    assert "reviewers" in page


def test_vendored_htmx_is_version_2():
    from pathlib import Path

    from django.conf import settings

    source = (Path(settings.BASE_DIR) / "static" / "vendor" / "htmx.min.js").read_text()
    assert 'version:"2.' in source

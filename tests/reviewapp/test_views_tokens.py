"""Personal API tokens: listed, created with the key shown once, revoked."""

import re

import pytest
from django.urls import reverse

from reviewapp import services
from reviewapp.models import ApiToken
from tests.factories import UserFactory, reviewer

pytestmark = pytest.mark.django_db


def html(response) -> str:
    return response.content.decode()


def test_tokens_page_sends_anonymous_to_login(client):
    response = client.get(reverse("api-tokens"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert client.post(reverse("api-token-create"), {"name": "x"}).status_code == 302
    assert not ApiToken.objects.exists()


def test_tokens_page_lists_only_the_users_tokens(client):
    user = reviewer()
    mine, _ = services.api_token_create(user=user, name="laptop script")
    theirs, _ = services.api_token_create(user=UserFactory(), name="someone else")
    client.force_login(user)
    page = html(client.get(reverse("api-tokens")))
    assert "laptop script" in page and f"{mine.prefix}…" in page
    assert "someone else" not in page
    assert "never" in page  # last used


def test_any_signed_in_user_may_manage_tokens(client):
    client.force_login(UserFactory())  # no group: tokens carry the user's own permissions
    assert client.get(reverse("api-tokens")).status_code == 200


def test_token_create_shows_the_key_once(client):
    user = reviewer()
    client.force_login(user)
    response = client.post(reverse("api-token-create"), {"name": "nightly import"})
    page = html(response)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    key = re.search(r'id="new-token-key" type="text" readonly value="([^"]+)"', page).group(1)
    token = ApiToken.objects.get(user=user)
    assert token.name == "nightly import"
    assert token.key_hash == ApiToken.hash_key(key)
    assert key.startswith(token.prefix)
    assert "shown only this once" in page

    again = html(client.get(reverse("api-tokens")))
    assert key not in again
    assert f"{token.prefix}…" in again


def test_token_create_needs_a_name(client):
    client.force_login(reviewer())
    response = client.post(reverse("api-token-create"), {"name": ""})
    assert "This field is required." in html(response)
    assert not ApiToken.objects.exists()


def test_token_revoke_deletes_it(client):
    user = reviewer()
    token, _ = services.api_token_create(user=user, name="old")
    client.force_login(user)
    response = client.post(reverse("api-token-revoke", args=[token.pk]), follow=True)
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    assert "Token &#x27;old&#x27;" in html(response) and "revoked" in html(response)


def test_token_revoke_of_someone_elses_token_does_nothing(client):
    token, _ = services.api_token_create(user=UserFactory(), name="theirs")
    client.force_login(reviewer())
    response = client.post(reverse("api-token-revoke", args=[token.pk]), follow=True)
    assert ApiToken.objects.filter(pk=token.pk).exists()
    assert "does not exist or is not yours" in html(response)


def test_token_revoke_is_post_only(client):
    user = reviewer()
    token, _ = services.api_token_create(user=user, name="t")
    client.force_login(user)
    assert client.get(reverse("api-token-revoke", args=[token.pk])).status_code == 405
    assert ApiToken.objects.filter(pk=token.pk).exists()

"""Login throttling: a (user name, address) pair is locked after repeated failed sign-ins."""

import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from axes.utils import reset
from django.contrib.auth.models import User
from django.urls import reverse

from reviewapp import services
from tests.factories import reviewer

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
LOCKED = (
    "Too many failed sign-ins for this name from your address. Try again in 15 minutes, "
    "or ask an administrator to unlock it."
)


def sign_in(client, username, password, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def fail_five_times(client, username, **extra):
    return [sign_in(client, username, "wrong", **extra) for _ in range(5)][-1]


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def page_text(response) -> str:
    """The page without its per-request CSRF token."""
    return re.sub(r'"X-CSRFToken": "[^"]*"', "", response.content.decode())


def test_five_wrong_passwords_lock_the_name_even_against_the_right_one(client):
    reviewer(username="rosa")
    assert sign_in(client, "rosa", "wrong").status_code == 200

    fifth = fail_five_times(client, "rosa")
    right = sign_in(client, "rosa", PASSWORD)

    assert fifth.status_code == 429
    assert right.status_code == 429
    assert LOCKED in right.content.decode()
    assert not signed_in(client)


def test_lockout_looks_the_same_for_a_name_that_does_not_exist(client):
    reviewer(username="rosa")
    fail_five_times(client, "rosa")
    fail_five_times(client, "nobody")

    existing = sign_in(client, "rosa", PASSWORD)
    missing = sign_in(client, "nobody", PASSWORD)

    assert existing.status_code == missing.status_code == 429
    assert page_text(existing) == page_text(missing)
    assert "rosa" not in page_text(existing)


def test_another_name_or_another_address_is_not_locked(client):
    reviewer(username="rosa")
    reviewer(username="sam")
    fail_five_times(client, "rosa")

    assert sign_in(client, "sam", PASSWORD).status_code == 302
    client.logout()
    assert sign_in(client, "rosa", PASSWORD, REMOTE_ADDR="10.0.0.2").status_code == 302


def test_the_right_password_works_again_after_the_cooloff(client):
    reviewer(username="rosa")
    fail_five_times(client, "rosa")
    assert sign_in(client, "rosa", PASSWORD).status_code == 429

    # As if the cool-off had passed since the last failure.
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= timedelta(minutes=16)
        attempt.save()

    assert sign_in(client, "rosa", PASSWORD).status_code == 302


def test_the_lockout_page_states_the_configured_cooloff(client, settings):
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    reviewer(username="rosa")

    page = fail_five_times(client, "rosa").content.decode()

    assert "Try again in 1 minute, or ask an administrator" in page


def test_reset_unlocks_the_name(client):
    reviewer(username="rosa")
    fail_five_times(client, "rosa")

    assert reset(username="rosa") == 1
    assert sign_in(client, "rosa", PASSWORD).status_code == 302


def test_admin_unlocks_by_deleting_the_access_attempt(client):
    reviewer(username="rosa")
    fail_five_times(client, "rosa")
    admin = client.__class__()
    admin.force_login(User.objects.create_superuser("root", password=PASSWORD))
    changelist = reverse("admin:axes_accessattempt_changelist")
    attempt = AccessAttempt.objects.get(username="rosa")

    assert "rosa" in admin.get(changelist).content.decode()
    response = admin.post(
        changelist, {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"}
    )

    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    assert sign_in(client, "rosa", PASSWORD).status_code == 302


def test_api_token_keeps_working_while_the_name_is_locked(client):
    rosa = reviewer(username="rosa")
    _, key = services.api_token_create(user=rosa, name="script")
    fail_five_times(client, "rosa")

    response = client.get("/api/v1/projects", HTTP_AUTHORIZATION=f"Bearer {key}")

    assert response.status_code == 200


def test_a_successful_sign_in_resets_the_failure_count(client):
    reviewer(username="rosa")
    for _ in range(4):
        sign_in(client, "rosa", "wrong")
    assert sign_in(client, "rosa", PASSWORD).status_code == 302
    client.logout()

    for _ in range(4):
        assert sign_in(client, "rosa", "wrong").status_code == 200

    assert sign_in(client, "rosa", PASSWORD).status_code == 302


def test_forwarded_address_is_ignored_without_trusted_proxies(client):
    reviewer(username="rosa")
    fail_five_times(client, "rosa", HTTP_X_FORWARDED_FOR="203.0.113.9")

    other = sign_in(client, "rosa", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.10")

    assert other.status_code == 429


def test_behind_a_trusted_proxy_the_address_is_the_one_it_forwarded(client, settings):
    settings.LOUPE_TRUSTED_PROXY_COUNT = 1
    settings.AXES_CLIENT_IP_CALLABLE = "reviewapp.views.login.login_client_ip"
    reviewer(username="rosa")
    fail_five_times(client, "rosa", HTTP_X_FORWARDED_FOR="203.0.113.9")

    # A client cannot escape by sending its own header: the proxy appends the real address.
    spoofed = sign_in(client, "rosa", PASSWORD, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9")
    elsewhere = sign_in(client, "rosa", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.10")

    assert spoofed.status_code == 429
    assert elsewhere.status_code == 302

"""Notifications: who gets them, the bell, the page, opening one, email, and the API."""

import contextlib
import logging
import os
import re
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction
from django.test import Client
from django.urls import reverse

from reviewapp import events, notifications, services
from reviewapp.models import Notification, NotificationPreference
from tests.factories import ProjectFactory, UserFactory, approver, reviewer

pytestmark = pytest.mark.django_db

API = "/api/v1"
HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'


def html(response) -> str:
    return response.content.decode()


def shown_ids(response) -> list[int]:
    """Notification ids on the Notifications page, in page order."""
    return [int(pk) for pk in re.findall(r'<li id="notification-(\d+)"', html(response))]


def bell_count(response) -> str | None:
    """The unread count the bell shows; None when it shows none."""
    found = re.search(r'class="notification-bell__count" data-unread="([^"]+)"', html(response))
    return found.group(1) if found else None


def tell(user, message="Run #1 succeeded.", *, link="/runs/1/", **kwargs) -> Notification:
    """One notification for ``user``, through ``notify`` as the app makes them."""
    (made,) = notifications.notify(
        [user], kind="run.succeeded", message=message, link=link, **kwargs
    )
    return made


def token_client(user) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"})


def opt_in(user) -> None:
    NotificationPreference.objects.create(user=user, email=True)


@pytest.fixture
def rita():
    return reviewer(username="rita", email="rita@example.com")


@pytest.fixture
def sam():
    return reviewer(username="sam", email="sam@example.com")


@pytest.fixture
def signed_in(client, rita):
    client.force_login(rita)
    return client


# Who is told --------------------------------------------------------------------


def test_notify_skips_none_inactive_users_and_duplicates(rita, sam):
    gone = UserFactory(is_active=False)

    made = notifications.notify(
        [rita, None, gone, sam, rita], kind="audit.finished", message="Audit done."
    )

    assert sorted(n.user_id for n in made) == sorted([rita.pk, sam.pk])
    assert Notification.objects.filter(user=gone).count() == 0
    assert Notification.objects.filter(user=rita).count() == 1


def test_notify_drops_a_link_that_leaves_the_site(rita):
    made = tell(rita, link="https://evil.example/phish")

    assert made.link == ""
    assert Notification.objects.get(pk=made.pk).link == ""


def test_emit_notifies_the_given_users_once_about_the_project(rita, sam):
    project = ProjectFactory()

    events.emit(
        "run.failed",
        project=project,
        data={"run": 7},
        message=f"{project.name}: run #7 failed.",
        link="/runs/7/",
        users=[rita, sam, rita, None],
    )

    made = Notification.objects.order_by("user_id")
    assert [(n.user_id, n.kind, n.project_id, n.link) for n in made] == [
        (rita.pk, "run.failed", project.pk, "/runs/7/"),
        (sam.pk, "run.failed", project.pk, "/runs/7/"),
    ]


def test_approvers_are_active_users_who_may_approve(rita):
    by_group = approver()
    directly = UserFactory()
    directly.user_permissions.add(Permission.objects.get(codename="approve_model"))
    admin = UserFactory(is_superuser=True)
    approver(is_active=False)
    UserFactory()  # no permission at all

    found = list(notifications.approvers(project=ProjectFactory()))

    assert found == [by_group, directly, admin]
    assert rita not in found


# The bell -----------------------------------------------------------------------


def test_bell_on_a_page_counts_only_my_unread_notifications(signed_in, rita, sam):
    tell(rita)
    tell(rita)
    read = tell(rita)
    notifications.notification_mark_read(user=rita, notification_id=read.pk)
    tell(sam)

    response = signed_in.get(reverse("project-list"))

    assert response.status_code == 200
    assert bell_count(response) == "2"
    assert f'href="{reverse("notifications")}"' in html(response)


def test_bell_shows_no_count_without_unread_and_is_absent_when_signed_out(signed_in, client):
    assert bell_count(signed_in.get(reverse("project-list"))) is None
    assert 'id="notification-bell"' in html(signed_in.get(reverse("project-list")))

    client.logout()
    assert 'id="notification-bell"' not in html(client.get(reverse("login")))


def test_bell_endpoint_returns_only_the_fragment_that_polls_itself(signed_in, rita):
    tell(rita)

    response = signed_in.get(reverse("notifications-bell"), **HTMX)

    page = html(response).strip()
    assert page.startswith('<a id="notification-bell"')
    assert LAYOUT not in page
    assert 'hx-trigger="every 30s"' in page
    assert bell_count(response) == "1"
    assert "no-store" in response["Cache-Control"]


def test_bell_stops_counting_past_99(signed_in, rita):
    Notification.objects.bulk_create(
        Notification(user=rita, kind="run.succeeded", message=f"run {n}") for n in range(101)
    )

    assert bell_count(signed_in.get(reverse("notifications-bell"))) == "99+"


# The Notifications page -----------------------------------------------------------


def test_page_lists_only_my_notifications_newest_first_with_unread_highlighted(
    signed_in, rita, sam
):
    old, new = tell(rita, "old one"), tell(rita, "new one")
    notifications.notification_mark_read(user=rita, notification_id=old.pk)
    theirs = tell(sam, "not for rita")

    response = signed_in.get(reverse("notifications"))

    assert shown_ids(response) == [new.pk, old.pk]
    page = html(response)
    assert "not for rita" not in page and theirs.pk not in shown_ids(response)
    assert f'id="notification-{new.pk}" class="notification notification--unread"' in page
    assert f'id="notification-{old.pk}" class="notification"' in page
    assert reverse("notification-open", args=[new.pk]) in page


def test_page_htmx_request_gets_only_the_list(signed_in, rita):
    made = tell(rita)

    response = signed_in.get(reverse("notifications"), **HTMX)

    page = html(response).strip()
    assert page.startswith('<section id="notification-list"')
    assert LAYOUT not in page
    assert shown_ids(response) == [made.pk]


def test_page_pages_by_keyset_to_older_notifications(signed_in, rita, monkeypatch):
    monkeypatch.setattr("reviewapp.views.notifications.PAGE_SIZE", 2)
    made = [tell(rita, f"n{n}") for n in range(3)]

    first = signed_in.get(reverse("notifications"))
    assert shown_ids(first) == [made[2].pk, made[1].pk]
    query = re.search(r'rel="next" href="([^"]+)"', html(first)).group(1).replace("&amp;", "&")
    older = signed_in.get(reverse("notifications") + query)
    assert shown_ids(older) == [made[0].pk]
    assert 'rel="next"' not in html(older)


def test_mark_all_read_marks_only_mine(signed_in, rita, sam):
    mine, theirs = tell(rita), tell(sam)

    response = signed_in.post(reverse("notifications-read-all"))

    assert response.status_code == 302 and response["Location"] == reverse("notifications")
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.read_at is not None
    assert theirs.read_at is None


def test_email_preference_is_off_until_turned_on_and_off_again(signed_in, rita):
    page = html(signed_in.get(reverse("notifications")))
    assert re.search(r'<input type="checkbox" name="email"(?![^>]*checked)', page)

    signed_in.post(reverse("notification-preferences"), {"email": "on"})
    assert NotificationPreference.objects.get(user=rita).email is True
    page = html(signed_in.get(reverse("notifications")))
    assert re.search(r'<input type="checkbox" name="email"[^>]*checked', page)

    signed_in.post(reverse("notification-preferences"), {})
    assert NotificationPreference.objects.get(user=rita).email is False


# Opening one ------------------------------------------------------------------------


def test_opening_marks_it_read_and_goes_to_its_page(signed_in, rita):
    made = tell(rita, link="/runs/42/")

    response = signed_in.get(reverse("notification-open", args=[made.pk]))

    assert response.status_code == 302
    assert response["Location"] == "/runs/42/"
    made.refresh_from_db()
    assert made.read_at is not None
    assert bell_count(signed_in.get(reverse("notifications-bell"))) is None


def test_opening_one_without_a_link_goes_to_the_notifications_page(signed_in, rita):
    made = tell(rita, link="")

    response = signed_in.get(reverse("notification-open", args=[made.pk]))

    assert response["Location"] == reverse("notifications")


def test_opening_someone_elses_is_404_and_leaves_it_unread(signed_in, sam):
    theirs = tell(sam)

    response = signed_in.get(reverse("notification-open", args=[theirs.pk]))

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "/\t/evil.example/",
        "javascript:alert(1)",
        "runs/1/",
    ],
)
def test_opening_never_redirects_off_the_site(signed_in, rita, link):
    # Written past notify's own check, as an old row or another writer might have it.
    made = Notification.objects.create(user=rita, kind="run.succeeded", message="x", link=link)

    response = signed_in.get(reverse("notification-open", args=[made.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("notifications")
    made.refresh_from_db()
    assert made.read_at is not None


# Email ------------------------------------------------------------------------------


def test_email_goes_after_commit_only_to_users_who_opted_in_and_have_an_address(
    rita, sam, mailoutbox, settings, django_capture_on_commit_callbacks
):
    settings.LOUPE_BASE_URL = "https://loupe.example"
    no_address = reviewer(email="")
    opt_in(rita)
    opt_in(no_address)
    NotificationPreference.objects.create(user=sam, email=False)  # chose: no email

    with django_capture_on_commit_callbacks() as callbacks:
        made = notifications.notify(
            [rita, sam, no_address],
            kind="version.awaiting_approval",
            message="Birds: v3 awaits\nyour approval.",
            link="/models/3/",
        )
        assert mailoutbox == []  # nothing before the commit
    for callback in callbacks:
        callback()

    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["rita@example.com"]
    assert mail.subject == "[Loupe] Birds: v3 awaits your approval."
    by_user = {n.user_id: n for n in made}
    opened = reverse("notification-open", args=[by_user[rita.pk].pk])
    assert f"https://loupe.example{opened}" in mail.body
    assert "Birds: v3 awaits\nyour approval." in mail.body
    emailed = dict(Notification.objects.values_list("user_id", "emailed_at"))
    assert emailed[rita.pk] is not None
    assert emailed[sam.pk] is None and emailed[no_address.pk] is None


def test_no_email_for_a_change_that_rolls_back(
    rita, mailoutbox, django_capture_on_commit_callbacks
):
    opt_in(rita)

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        contextlib.suppress(RuntimeError),
        transaction.atomic(),
    ):
        tell(rita)
        raise RuntimeError("the change that notified failed")

    assert callbacks == []
    assert mailoutbox == []
    assert not Notification.objects.filter(user=rita).exists()


def test_email_failure_is_logged_and_loses_no_notification(
    rita, sam, mailoutbox, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    opt_in(rita)
    opt_in(sam)
    from django.core import mail

    real_send = mail.send_mail

    def flaky(*args, recipient_list, **kwargs):
        if recipient_list == ["rita@example.com"]:
            raise smtplib.SMTPServerDisconnected("mail server is down")
        return real_send(*args, recipient_list=recipient_list, **kwargs)

    monkeypatch.setattr("reviewapp.notifications.send_mail", flaky)

    with (
        caplog.at_level(logging.ERROR, logger="reviewapp.notifications"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        made = notifications.notify([rita, sam], kind="run.failed", message="Run failed.")

    assert len(made) == 2
    emailed = dict(Notification.objects.values_list("user_id", "emailed_at"))
    assert emailed[rita.pk] is None
    assert emailed[sam.pk] is not None
    assert [m.to for m in mailoutbox] == [["sam@example.com"]]
    assert "Could not email notification" in caplog.text


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        ({}, "django.core.mail.backends.console.EmailBackend"),
        ({"EMAIL_HOST": "smtp.example"}, "django.core.mail.backends.smtp.EmailBackend"),
        (
            {"EMAIL_HOST": "smtp.example", "EMAIL_BACKEND": "x.Backend"},
            "x.Backend",
        ),
    ],
)
def test_email_backend_is_the_console_unless_the_environment_names_a_mail_server(
    tmp_path, env, backend
):
    names = {"EMAIL_HOST", "EMAIL_BACKEND", "SECRET_KEY", "DATABASE_URL"}
    clean = {k: v for k, v in os.environ.items() if k not in names}
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.EMAIL_BACKEND)"],
        cwd=Path(__file__).resolve().parents[2],
        env=clean | {"LOUPE_VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == backend


# The API --------------------------------------------------------------------------


def test_api_lists_only_my_notifications_with_their_fields(rita, sam):
    project = ProjectFactory(slug="birds")
    mine = tell(rita, "v3 awaits your approval.", link="/models/3/", project=project)
    bare = tell(rita, "no project", link="")
    tell(sam, "not rita's")

    response = token_client(rita).get(f"{API}/notifications")

    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None
    assert [item["id"] for item in body["items"]] == [bare.pk, mine.pk]
    item = body["items"][1]
    assert item == {
        "id": mine.pk,
        "kind": "run.succeeded",
        "message": "v3 awaits your approval.",
        "link": "/models/3/",
        "project": "birds",
        "created_at": item["created_at"],
        "read_at": None,
        "read": False,
    }
    assert item["created_at"].startswith(str(mine.created_at.date()))
    assert body["items"][0]["project"] is None


def test_api_pages_by_cursor_and_filters_unread(rita):
    made = [tell(rita, f"n{n}") for n in range(5)]
    notifications.notification_mark_read(user=rita, notification_id=made[3].pk)
    api = token_client(rita)

    seen, url = [], f"{API}/notifications?limit=2"
    while url:
        body = api.get(url).json()
        assert len(body["items"]) <= 2
        seen += [item["id"] for item in body["items"]]
        url = body["next"]
    assert seen == [n.pk for n in reversed(made)]

    unread = api.get(f"{API}/notifications?unread=true").json()["items"]
    assert [item["id"] for item in unread] == [made[4].pk, made[2].pk, made[1].pk, made[0].pk]
    read = api.get(f"{API}/notifications?unread=false").json()["items"]
    assert [item["id"] for item in read] == [made[3].pk]


def test_api_read_marks_it_read_and_keeps_the_first_time(rita):
    made = tell(rita)
    api = token_client(rita)

    first = api.post(f"{API}/notifications/{made.pk}/read")
    again = api.post(f"{API}/notifications/{made.pk}/read")

    assert first.status_code == 200
    assert first.json()["id"] == made.pk
    assert first.json()["read"] is True and first.json()["read_at"] is not None
    assert again.json()["read_at"] == first.json()["read_at"]
    made.refresh_from_db()
    assert made.read_at is not None


def test_api_read_of_someone_elses_is_a_json_404_and_changes_nothing(rita, sam):
    theirs = tell(sam)

    response = token_client(rita).post(f"{API}/notifications/{theirs.pk}/read")

    assert response.status_code == 404
    assert response.json() == {"detail": f"No notification {theirs.pk} of yours."}
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_api_needs_authentication():
    response = Client().get(f"{API}/notifications")

    assert response.status_code == 401

"""Webhooks against a loopback receiver: signatures, retries, timeouts, turning off, refusals."""

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from reviewapp import enqueue, events, services, tasks, webhooks
from reviewapp.models import Notification, Webhook, WebhookDelivery
from tests.factories import ProjectFactory, UserFactory, approver, reviewer
from tests.webhook_server import HANG, TRICKLE, receive

pytestmark = pytest.mark.django_db

Status = WebhookDelivery.Status
SECRET = "s3cret-of-the-receiver-0123"


@pytest.fixture
def receiver():
    with receive() as server:
        yield server


@pytest.fixture
def project():
    return ProjectFactory(slug="bears", name="Bears")


@pytest.fixture
def ada():
    return approver(username="ada")


@pytest.fixture
def queued(monkeypatch):
    """Jobs as (task, args, countdown), instead of sent to a broker."""
    sent = []
    monkeypatch.setattr(
        "reviewapp.enqueue._dispatch",
        lambda task, args, countdown=None: sent.append((task, tuple(args), countdown)),
    )
    return sent


def hook(project, url, *, actor=None, events_=("run.succeeded",), **kwargs) -> Webhook:
    return webhooks.webhook_create(
        project=project, url=url, events=list(events_), actor=actor, secret=SECRET, **kwargs
    )


def emit(project, event="run.succeeded", **data):
    events.emit(event, project=project, data=data or {"run": 1}, message=f"{event} happened")


def only_delivery(webhook) -> WebhookDelivery:
    (delivery,) = webhook.deliveries.all()
    return delivery


def token_client(user) -> Client:
    _, key = services.api_token_create(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {key}"})


# Sending -----------------------------------------------------------------------------------


def test_delivery_is_a_json_post_signed_over_its_exact_body(project, receiver, queued, ada):
    webhook = hook(project, receiver.url, actor=ada)
    emit(project, run=7)
    delivery = only_delivery(webhook)

    webhooks.delivery_send(delivery_id=delivery.pk)

    (got,) = receiver.received
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["x-loupe-signature"], expected)
    wrong = "sha256=" + hmac.new(b"another secret", got.body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(got.headers["x-loupe-signature"], wrong)
    assert got.headers["x-loupe-delivery"] == str(delivery.delivery_id)
    assert got.headers["x-loupe-event"] == "run.succeeded"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == "Loupe-Webhooks"
    body = json.loads(got.body)
    assert body["event"] == "run.succeeded"
    assert body["project"] == {"slug": "bears", "name": "Bears"}
    assert body["data"] == {"run": 7}
    assert body["message"] == "run.succeeded happened"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_status, delivery.attempts) == (
        Status.SUCCEEDED,
        200,
        1,
    )
    assert delivery.delivered_at is not None and delivery.error == ""


def test_emit_queues_deliveries_only_to_active_webhooks_that_want_the_event(
    project, queued, django_capture_on_commit_callbacks
):
    wants = hook(project, "http://127.0.0.1:9/a", events_=("run.failed", "run.succeeded"))
    other_event = hook(project, "http://127.0.0.1:9/b", events_=("audit.finished",))
    off = hook(project, "http://127.0.0.1:9/c")
    webhooks.webhook_update(webhook=off, active=False)
    elsewhere = hook(ProjectFactory(), "http://127.0.0.1:9/d")

    with django_capture_on_commit_callbacks(execute=True):
        emit(project, "run.succeeded")

    delivery = only_delivery(wants)
    assert delivery.event == "run.succeeded" and delivery.status == Status.PENDING
    assert delivery.payload["project"]["slug"] == "bears"
    for webhook in (other_event, off, elsewhere):
        assert not webhook.deliveries.exists()
    assert queued == [(enqueue.WEBHOOK_DELIVER, (delivery.pk,), None)]


def test_a_500_is_retried_through_the_task_with_backoff_then_succeeds(
    project, receiver, queued, django_capture_on_commit_callbacks
):
    webhook = hook(project, receiver.url)
    emit(project)
    delivery = only_delivery(webhook)
    receiver.answer(500, 200)

    with django_capture_on_commit_callbacks(execute=True):
        tasks.webhook_deliver(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == Status.PENDING and delivery.attempts == 1
    assert delivery.response_status == 500
    assert delivery.error.startswith("HTTP 500") and "something broke" in delivery.error
    assert delivery.next_attempt_at - delivery.last_attempt_at == pytest.approx(
        timedelta(seconds=10), abs=timedelta(seconds=1)
    )
    assert queued == [(enqueue.WEBHOOK_DELIVER, (delivery.pk,), 10)]

    # The same message again (a redelivery) before the retry is due sends nothing.
    tasks.webhook_deliver(delivery.pk)
    assert len(receiver.received) == 1

    # Ten seconds later, the queued retry.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        tasks.webhook_deliver(delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (
        Status.SUCCEEDED,
        2,
        200,
    )
    assert delivery.error == "" and delivery.next_attempt_at is None
    first, second = receiver.received
    assert first.body == second.body
    assert first.headers["x-loupe-signature"] == second.headers["x-loupe-signature"]
    assert first.headers["x-loupe-delivery"] == second.headers["x-loupe-delivery"]
    assert len(queued) == 1  # no retry after the success


def test_backoff_doubles_and_the_last_attempt_fails_the_delivery(
    project, receiver, queued, settings, django_capture_on_commit_callbacks
):
    settings.LOUPE_WEBHOOK_MAX_ATTEMPTS = 3
    webhook = hook(project, receiver.url)
    emit(project)
    delivery = only_delivery(webhook)
    receiver.answer(503, 503, 503)

    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            webhooks.delivery_send(delivery_id=delivery.pk, now=timezone.now() + timedelta(hours=1))

    assert [countdown for _, _, countdown in queued] == [10, 20]  # none after the last
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (Status.FAILED, 3, 503)
    assert delivery.next_attempt_at is None
    webhook.refresh_from_db()
    assert webhook.consecutive_failures == 1 and webhook.active
    assert [webhooks.retry_delay(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]


def test_the_tick_sends_due_deliveries_inline_and_only_schedules_retries(
    project, receiver, queued, django_capture_on_commit_callbacks
):
    webhook = hook(project, receiver.url)
    emit(project)
    emit(project)
    receiver.answer(500, 200)

    with django_capture_on_commit_callbacks(execute=True):
        started = time.monotonic()
        assert webhooks.deliveries_send_due() == 2
        elapsed = time.monotonic() - started

    assert elapsed < 5  # no sleeping for the backoff
    failed, succeeded = webhook.deliveries.order_by("id")
    assert failed.status == Status.PENDING and failed.next_attempt_at > timezone.now()
    assert succeeded.status == Status.SUCCEEDED
    assert queued == []  # the retry waits for a later tick, not for a task
    assert webhooks.deliveries_send_due() == 0  # not due yet

    assert webhooks.deliveries_send_due(timezone.now() + timedelta(seconds=11)) == 1
    failed.refresh_from_db()
    assert failed.status == Status.SUCCEEDED and failed.attempts == 2


def test_a_hanging_endpoint_is_given_up_within_the_timeout(project, receiver, queued, settings):
    settings.LOUPE_WEBHOOK_TIMEOUT = 0.5
    webhook = hook(project, receiver.url)
    emit(project)
    delivery = only_delivery(webhook)
    receiver.answer(HANG)

    started = time.monotonic()
    webhooks.delivery_send(delivery_id=delivery.pk)
    elapsed = time.monotonic() - started

    assert 0.4 < elapsed < 2
    delivery.refresh_from_db()
    assert delivery.status == Status.PENDING and delivery.response_status is None
    assert delivery.error == "No answer within 0.5 s."


def test_an_endpoint_that_trickles_bytes_cannot_outlast_the_timeout(
    project, receiver, queued, settings
):
    # Each byte comes long before a per-read timeout; only a deadline stops it.
    settings.LOUPE_WEBHOOK_TIMEOUT = 0.5
    webhook = hook(project, receiver.url)
    emit(project)
    delivery = only_delivery(webhook)
    receiver.answer(TRICKLE)

    started = time.monotonic()
    webhooks.delivery_send(delivery_id=delivery.pk)
    elapsed = time.monotonic() - started

    assert elapsed < 2
    delivery.refresh_from_db()
    assert delivery.status == Status.PENDING and delivery.error == "No answer within 0.5 s."


def test_a_refused_connection_is_recorded_as_an_error(project, queued):
    from tests.weights_server import refused_url

    webhook = hook(project, refused_url() + "hook")
    emit(project)
    delivery = only_delivery(webhook)

    webhooks.delivery_send(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == Status.PENDING and delivery.response_status is None
    assert delivery.error.startswith("Could not connect")


def test_a_redirect_is_a_failure_and_is_not_followed(project, queued):
    with receive() as first, receive() as elsewhere:
        first.answer((302, {"Location": elsewhere.url}))
        webhook = hook(project, first.url)
        emit(project)
        delivery = only_delivery(webhook)

        webhooks.delivery_send(delivery_id=delivery.pk)

        assert len(first.received) == 1 and elsewhere.received == []
    delivery.refresh_from_db()
    assert delivery.status == Status.PENDING and delivery.response_status == 302
    assert "not followed" in delivery.error


def test_a_finished_delivery_is_never_sent_again(project, receiver, queued):
    webhook = hook(project, receiver.url)
    emit(project)
    delivery = only_delivery(webhook)
    webhooks.delivery_send(delivery_id=delivery.pk)

    assert webhooks.delivery_send(delivery_id=delivery.pk) is None
    tasks.webhook_deliver(delivery.pk)

    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 1


def test_webhook_is_turned_off_after_failed_deliveries_in_a_row_and_approvers_told(
    project, receiver, queued, settings, ada
):
    settings.LOUPE_WEBHOOK_MAX_ATTEMPTS = 1
    settings.LOUPE_WEBHOOK_DISABLE_AFTER = 3
    creator = reviewer(username="bob")
    bystander = reviewer(username="carl")
    webhook = hook(project, receiver.url, actor=creator)
    receiver.answer(500, 500, 500)
    for _ in range(4):
        emit(project)
    first, second, third, fourth = webhook.deliveries.order_by("id")

    for delivery in (first, second):
        webhooks.delivery_send(delivery_id=delivery.pk)
    webhook.refresh_from_db()
    assert webhook.active and webhook.consecutive_failures == 2
    assert not Notification.objects.filter(kind="webhook.disabled").exists()

    webhooks.delivery_send(delivery_id=third.pk)

    webhook.refresh_from_db()
    assert not webhook.active and webhook.consecutive_failures == 3
    assert "3 failed deliveries in a row" in webhook.disabled_reason
    told = Notification.objects.filter(kind="webhook.disabled")
    assert {n.user.username for n in told} == {"ada", "bob"}
    assert bystander.notifications.count() == 0
    note = told.get(user=ada)
    assert note.project == project and receiver.url in note.message
    assert note.link == reverse("project-webhooks", kwargs={"slug": "bears"})
    # Its pending delivery is not sent any more.
    webhooks.delivery_send(delivery_id=fourth.pk)
    assert len(receiver.received) == 3
    fourth.refresh_from_db()
    assert fourth.status == Status.FAILED and fourth.attempts == 0
    assert fourth.error.startswith("Not sent")


def test_a_success_resets_the_failure_count(project, receiver, queued, settings):
    settings.LOUPE_WEBHOOK_MAX_ATTEMPTS = 1
    settings.LOUPE_WEBHOOK_DISABLE_AFTER = 3
    webhook = hook(project, receiver.url)
    receiver.answer(500, 500, 200, 500)
    for _ in range(4):
        emit(project)

    for delivery in webhook.deliveries.order_by("id"):
        webhooks.delivery_send(delivery_id=delivery.pk)

    webhook.refresh_from_db()
    assert webhook.active and webhook.consecutive_failures == 1


def test_turning_a_disabled_webhook_back_on_forgets_its_failures(project, ada):
    webhook = hook(project, "http://127.0.0.1:9/hook")
    Webhook.objects.filter(pk=webhook.pk).update(
        active=False, consecutive_failures=3, disabled_reason="Turned off after 3 failed."
    )
    webhook.refresh_from_db()

    webhooks.webhook_update(webhook=webhook, active=True, actor=ada)

    webhook.refresh_from_db()
    assert (webhook.active, webhook.consecutive_failures, webhook.disabled_reason) == (
        True,
        0,
        "",
    )
    webhooks.webhook_update(webhook=webhook, active=False, actor=ada)
    webhook.refresh_from_db()
    assert webhook.disabled_reason == "Turned off by ada."


# Refusals ----------------------------------------------------------------------------------

REFUSED_URLS = [
    ("ftp://example.com/hook", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("example.com/hook", "http:// or https://"),
    ("http:///hook", "no host"),
    ("https://", "no host"),
    ("http://user:pw@example.com/hook", "user name or password"),
    ("http://example.com:99999/hook", "port"),
    ("http://exa mple.com/hook", "spaces"),
    ("", "Enter the URL"),
    # LOUPE_BASE_URL is http://127.0.0.1:8000 in the tests: Loupe itself, by any loopback name.
    ("http://127.0.0.1:8000/api/v1/projects", "Loupe itself"),
    ("http://localhost:8000/hook", "Loupe itself"),
    ("http://[::1]:8000/hook", "Loupe itself"),
]


@pytest.mark.parametrize(("url", "says"), REFUSED_URLS)
def test_service_refuses_urls_that_are_not_http_or_point_at_loupe(project, url, says):
    with pytest.raises(ValidationError) as refused:
        hook(project, url)
    assert says in " ".join(refused.value.message_dict["url"])
    assert not Webhook.objects.exists()


def test_service_refuses_the_host_the_request_came_to(project):
    with pytest.raises(ValidationError) as refused:
        hook(project, "https://loupe.example.org/hook", app_url="https://loupe.example.org/")
    assert "Loupe itself" in refused.value.message_dict["url"][0]
    # Another port of that host, and other loopback ports, are other services.
    hook(project, "https://loupe.example.org:8443/hook", app_url="https://loupe.example.org/")
    hook(project, "http://127.0.0.1:8001/hook")
    hook(project, "http://receiver:9000/hook")
    assert Webhook.objects.count() == 3


def test_service_refuses_unknown_or_no_events_and_orders_the_chosen(project):
    with pytest.raises(ValidationError) as refused:
        hook(project, "http://127.0.0.1:9/hook", events_=())
    assert "Choose at least one event" in refused.value.message_dict["events"][0]

    with pytest.raises(ValidationError) as refused:
        hook(project, "http://127.0.0.1:9/hook", events_=("run.succeeded", "run.exploded"))
    message = refused.value.message_dict["events"][0]
    assert "'run.exploded'" in message and "version.stage_changed" in message

    webhook = hook(project, "http://127.0.0.1:9/hook", events_=("run.failed", "run.succeeded") * 2)
    assert webhook.events == ["run.succeeded", "run.failed"]


def test_service_reports_every_refused_field_at_once(project):
    with pytest.raises(ValidationError) as refused:
        webhooks.webhook_create(project=project, url="ftp://x", events=[], actor=None, secret="x")
    assert set(refused.value.message_dict) == {"url", "events", "secret"}


def test_a_secret_is_made_when_none_is_given(project):
    one = webhooks.webhook_create(
        project=project, url="http://127.0.0.1:9/a", events=["run.failed"], actor=None
    )
    two = webhooks.webhook_create(
        project=project, url="http://127.0.0.1:9/b", events=["run.failed"], actor=None
    )
    assert len(one.secret) >= 32 and one.secret != two.secret


# The page ----------------------------------------------------------------------------------


@pytest.fixture
def browser(client, ada):
    client.force_login(ada)
    return client


def page_url(project) -> str:
    return reverse("project-webhooks", kwargs={"slug": project.slug})


def test_page_lists_webhooks_with_state_and_delivery_log(browser, project, receiver, queued):
    webhook = hook(project, receiver.url, events_=("run.failed", "audit.finished"))
    off = hook(project, "http://127.0.0.1:9/off")
    Webhook.objects.filter(pk=off.pk).update(
        active=False, disabled_reason="Turned off after 3 failed deliveries in a row."
    )
    receiver.answer(500)
    emit(project, "run.failed")
    webhooks.delivery_send(delivery_id=only_delivery(webhook).pk)

    response = browser.get(page_url(project))

    assert response.status_code == 200
    html = response.content.decode()
    assert receiver.url in html and "audit.finished" in html
    assert "Turned off after 3 failed deliveries in a row." in html
    assert f'id="delivery-log-{webhook.pk}"' in html
    assert "<td>500</td>" in html and "HTTP 500" in html
    assert reverse("webhook-create", kwargs={"slug": "bears"}) in html


def test_settings_page_links_to_webhooks(browser, project):
    response = browser.get(reverse("project-settings", kwargs={"slug": project.slug}))
    assert page_url(project) in response.content.decode()


def test_reviewers_get_403_from_every_webhook_page(client, project):
    webhook = hook(project, "http://127.0.0.1:9/hook")
    client.force_login(reviewer())
    assert client.get(page_url(project)).status_code == 403
    create = reverse("webhook-create", kwargs={"slug": project.slug})
    body = {"url": "http://127.0.0.1:9/x", "events": ["run.failed"]}
    assert client.post(create, body).status_code == 403
    for name in ("webhook-update", "webhook-delete"):
        assert client.post(reverse(name, kwargs={"pk": webhook.pk})).status_code == 403
    assert client.get(reverse("webhook-deliveries", kwargs={"pk": webhook.pk})).status_code == 403
    assert Webhook.objects.get().active and Webhook.objects.count() == 1


def test_page_creates_a_webhook_and_shows_its_secret(browser, project, ada):
    response = browser.post(
        reverse("webhook-create", kwargs={"slug": project.slug}),
        {"url": "https://hooks.example.com/loupe", "events": ["version.approved", "run.failed"]},
    )

    assert response.status_code == 200
    webhook = Webhook.objects.get()
    assert webhook.events == ["run.failed", "version.approved"] and webhook.created_by == ada
    assert f'value="{webhook.secret}"' in response.content.decode()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("http://", "no host"),
        ("http://127.0.0.1:8000/hook", "Loupe itself"),
        ("http://testserver/hook", "Loupe itself"),  # the host this request came to
    ],
)
def test_page_refuses_urls_with_the_reason(browser, project, url, says):
    response = browser.post(
        reverse("webhook-create", kwargs={"slug": project.slug}),
        {"url": url, "events": ["run.failed"]},
    )
    assert response.status_code == 400
    assert says in response.content.decode()
    assert not Webhook.objects.exists()


def test_page_refuses_a_webhook_without_events(browser, project):
    response = browser.post(
        reverse("webhook-create", kwargs={"slug": project.slug}), {"url": "http://127.0.0.1:9/x"}
    )
    assert response.status_code == 400
    assert "Choose at least one event" in response.content.decode()
    assert not Webhook.objects.exists()


def test_htmx_edit_returns_only_the_card(browser, project):
    webhook = hook(project, "http://127.0.0.1:9/hook")

    response = browser.post(
        reverse("webhook-update", kwargs={"pk": webhook.pk}),
        {"events": ["guardrail.paused", "policy.triggered"]},  # no "active": turned off
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith(f'<article id="webhook-card-{webhook.pk}"')
    assert "<html" not in html and "Saved" in html
    webhook.refresh_from_db()
    assert webhook.events == ["guardrail.paused", "policy.triggered"] and not webhook.active


def test_htmx_edit_without_events_is_refused_in_the_card(browser, project):
    webhook = hook(project, "http://127.0.0.1:9/hook")

    response = browser.post(
        reverse("webhook-update", kwargs={"pk": webhook.pk}),
        {"active": "on"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 400
    assert "Choose at least one event" in response.content.decode()
    webhook.refresh_from_db()
    assert webhook.events == ["run.succeeded"]


def test_delete_asks_first_then_deletes(browser, project, queued):
    webhook = hook(project, "http://127.0.0.1:9/hook")
    emit(project)
    url = reverse("webhook-delete", kwargs={"pk": webhook.pk})

    asked = browser.get(url, headers={"HX-Request": "true"})
    assert asked.status_code == 200
    assert f'id="webhook-delete-{webhook.pk}"' in asked.content.decode()
    assert "Delete webhook" in asked.content.decode() and "<html" not in asked.content.decode()
    assert "Delete webhook" in browser.get(url).content.decode()  # without JavaScript too
    assert Webhook.objects.exists()

    response = browser.post(url)

    assert response.status_code == 302 and response["Location"] == page_url(project)
    assert not Webhook.objects.exists() and not WebhookDelivery.objects.exists()


def test_htmx_delivery_log_is_only_the_log(browser, project, receiver, queued):
    webhook = hook(project, receiver.url)
    emit(project)
    webhooks.delivery_send(delivery_id=only_delivery(webhook).pk)

    response = browser.get(
        reverse("webhook-deliveries", kwargs={"pk": webhook.pk}), headers={"HX-Request": "true"}
    )

    html = response.content.decode()
    assert html.lstrip().startswith(f'<section id="delivery-log-{webhook.pk}"')
    assert "<td>200</td>" in html and "Delivered" in html
    assert 'hx-trigger="every' not in html  # nothing pending: no polling


# The API -----------------------------------------------------------------------------------


def api_json(client, method, url, body=None):
    return client.generic(method, url, json.dumps(body), content_type="application/json")


def test_api_crud_never_returns_the_secret_after_create(project, ada):
    api = token_client(ada)
    created = api_json(
        api,
        "POST",
        "/api/v1/projects/bears/webhooks",
        {"url": "https://hooks.example.com/x", "events": ["run.failed"], "secret": SECRET},
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"] == SECRET and body["events"] == ["run.failed"] and body["active"]
    webhook_id = body["id"]
    assert body["deliveries_url"].endswith(f"/api/v1/webhooks/{webhook_id}/deliveries")

    listed = api.get("/api/v1/projects/bears/webhooks")
    assert listed.status_code == 200
    (row,) = listed.json()["items"]
    assert row["id"] == webhook_id and "secret" not in row and row["created_by"] == "ada"

    patched = api_json(
        api,
        "PATCH",
        f"/api/v1/webhooks/{webhook_id}",
        {"events": ["audit.finished"], "active": False},
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["events"] == ["audit.finished"] and not patched.json()["active"]
    assert "secret" not in patched.json()
    assert patched.json()["disabled_reason"] == "Turned off by ada."

    deleted = api.delete(f"/api/v1/webhooks/{webhook_id}")
    assert deleted.status_code == 204
    assert not Webhook.objects.exists()
    assert api.delete(f"/api/v1/webhooks/{webhook_id}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"url": "ftp://example.com/x", "events": ["run.failed"]}, "url", "http://"),
        ({"url": "https://", "events": ["run.failed"]}, "url", "no host"),
        ({"url": "http://127.0.0.1:8000/x", "events": ["run.failed"]}, "url", "Loupe itself"),
        ({"url": "http://testserver/x", "events": ["run.failed"]}, "url", "Loupe itself"),
        ({"url": "http://127.0.0.1:9/x", "events": []}, "events", "at least one"),
        ({"url": "http://127.0.0.1:9/x", "events": ["nope"]}, "events", "'nope'"),
        (
            {"url": "http://127.0.0.1:9/x", "events": ["run.failed"], "secret": "short"},
            "secret",
            "16",
        ),
    ],
)
def test_api_refuses_bad_webhooks_with_field_errors(project, ada, body, field, says):
    response = api_json(token_client(ada), "POST", "/api/v1/projects/bears/webhooks", body)
    assert response.status_code == 400, response.content
    assert says in response.json()["errors"][field][0]
    assert not Webhook.objects.exists()


def test_api_patch_refuses_a_url_pointing_at_loupe(project, ada):
    webhook = hook(project, "http://127.0.0.1:9/hook")
    response = api_json(
        token_client(ada),
        "PATCH",
        f"/api/v1/webhooks/{webhook.pk}",
        {"url": "http://localhost:8000/"},
    )
    assert response.status_code == 400
    assert "Loupe itself" in response.json()["errors"]["url"][0]
    webhook.refresh_from_db()
    assert webhook.url == "http://127.0.0.1:9/hook"


def test_api_deliveries_are_paged_newest_first(project, ada, queued):
    webhook = hook(project, "http://127.0.0.1:9/hook")
    for n in range(5):
        emit(project, run=n)
    api = token_client(ada)

    first = api.get(f"/api/v1/webhooks/{webhook.pk}/deliveries?limit=2").json()
    assert [d["payload"]["data"]["run"] for d in first["items"]] == [4, 3]
    assert first["items"][0]["status"] == "pending" and first["items"][0]["attempts"] == 0
    second = api.get(first["next"]).json()
    assert [d["payload"]["data"]["run"] for d in second["items"]] == [2, 1]
    third = api.get(second["next"]).json()
    assert [d["payload"]["data"]["run"] for d in third["items"]] == [0]
    assert third["next"] is None
    ids = {d["delivery_id"] for page in (first, second, third) for d in page["items"]}
    assert ids == {str(d.delivery_id) for d in webhook.deliveries.all()}


def test_api_is_for_approvers_only(project):
    webhook = hook(project, "http://127.0.0.1:9/hook")
    api = token_client(reviewer())
    calls = [
        ("GET", "/api/v1/projects/bears/webhooks", None),
        (
            "POST",
            "/api/v1/projects/bears/webhooks",
            {"url": "http://127.0.0.1:9/x", "events": ["run.failed"]},
        ),
        ("PATCH", f"/api/v1/webhooks/{webhook.pk}", {"active": False}),
        ("DELETE", f"/api/v1/webhooks/{webhook.pk}", None),
        ("GET", f"/api/v1/webhooks/{webhook.pk}/deliveries", None),
    ]
    for method, url, body in calls:
        response = api_json(api, method, url, body) if body else api.generic(method, url)
        assert response.status_code == 403, (method, url)
    webhook.refresh_from_db()
    assert webhook.active and Webhook.objects.count() == 1
    assert token_client(UserFactory()).get("/api/v1/projects/bears/webhooks").status_code == 403

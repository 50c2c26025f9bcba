"""Webhooks: signed JSON POSTs of a project's events, with retries and a delivery log.

``events.emit`` calls ``deliveries_queue``: one WebhookDelivery row per active webhook of the
project that subscribed to the event, each sent by the ``webhook_deliver`` task. A send is
one attempt (``delivery_send``): the JSON body is signed with the webhook's secret
(``X-Loupe-Signature: sha256=<hex>``, as GitHub's ``X-Hub-Signature-256``), and the whole
request, however slowly the endpoint answers, ends within ``LOUPE_WEBHOOK_TIMEOUT``. A failed
attempt is retried with exponential backoff up to ``LOUPE_WEBHOOK_MAX_ATTEMPTS``; after
``LOUPE_WEBHOOK_DISABLE_AFTER`` failed deliveries in a row the webhook is turned off and the
project's approvers are told.
"""

import functools
import hashlib
import hmac
import http.client
import io
import ipaddress
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from . import enqueue, notifications
from .models import Webhook, WebhookDelivery
from .models.webhooks import EVENTS, new_secret

__all__ = [
    "DELIVERY_LOG_SIZE",
    "USER_AGENT",
    "DeliveryPage",
    "deliveries_queue",
    "deliveries_send_due",
    "delivery_body",
    "delivery_list",
    "delivery_send",
    "retry_delay",
    "signature",
    "webhook_create",
    "webhook_delete",
    "webhook_list",
    "webhook_update",
]

logger = logging.getLogger(__name__)

USER_AGENT = "Loupe-Webhooks"
DELIVERY_LOG_SIZE = 50
RETRY_BASE_SECONDS = 10
SECRET_MIN_LENGTH = 16
URL_MAX_LENGTH = Webhook._meta.get_field("url").max_length
SECRET_MAX_LENGTH = Webhook._meta.get_field("secret").max_length
ERROR_MAX_LENGTH = WebhookDelivery._meta.get_field("error").max_length
# A Celery countdown may fire a moment before the database clock says the retry is due.
EARLY_SECONDS = 2
# While an attempt is in flight nobody else takes the delivery; after this the tick may.
LEASE_EXTRA_SECONDS = 60
NOT_SENT = "Not sent: the webhook is turned off."
LOST = "The last attempt stopped before its answer was recorded."
_LOOPBACK = "<loopback>"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


# Checks ----------------------------------------------------------------------------------


def _host_key(host: str) -> str:
    """A host as the self-check compares it: every name of this machine's loopback is one."""
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
            return _LOOPBACK
        return host
    if address.is_loopback or address.is_unspecified:
        return _LOOPBACK
    return address.compressed


def _origin(url: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL, the default port filled in; None if it has neither."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return _host_key(parts.hostname), port or (443 if parts.scheme == "https" else 80)


def _url_checked(url: str, *, app_url: str | None) -> str:
    """The URL stripped, or a ValidationError on ``url`` saying what is wrong with it."""
    url = (url or "").strip()
    if not url:
        raise ValidationError({"url": "Enter the URL that should receive the events."})
    if len(url) > URL_MAX_LENGTH:
        raise ValidationError({"url": f"The URL is longer than {URL_MAX_LENGTH} characters."})
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValidationError({"url": "The URL must not contain spaces or control characters."})
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"'{scheme}'" if scheme else "no scheme"
        raise ValidationError(
            {"url": f"The URL must start with http:// or https:// ({shown} is not allowed)."}
        )
    if not parts.hostname:
        raise ValidationError(
            {"url": "The URL has no host: write it like https://example.com/hook."}
        )
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            {"url": "The URL must not hold a user name or password; the secret signs each body."}
        )
    try:
        parts.port  # noqa: B018 (it parses the port, and raises if it is not a number)
    except ValueError:
        raise ValidationError({"url": "The URL's port must be a number from 1 to 65535."}) from None
    own = {_origin(settings.LOUPE_BASE_URL), _origin(app_url) if app_url else None} - {None}
    if _origin(url) in own:
        raise ValidationError(
            {"url": "The URL points at Loupe itself; a webhook must go to another service."}
        )
    return url


def _events_checked(chosen) -> list[str]:
    """The chosen event names in ``EVENTS`` order, or a ValidationError on ``events``."""
    valid = ", ".join(EVENTS)
    if isinstance(chosen, str) or not all(isinstance(e, str) for e in chosen or ()):
        raise ValidationError({"events": f"Send a list of event names: {valid}."})
    unknown = sorted(set(chosen) - set(EVENTS))
    if unknown:
        names = ", ".join(f"'{e}'" for e in unknown)
        raise ValidationError({"events": f"Unknown event {names}; the events are {valid}."})
    if not chosen:
        raise ValidationError({"events": f"Choose at least one event: {valid}."})
    return [e for e in EVENTS if e in chosen]


def _secret_checked(secret: str | None) -> str:
    if not secret:
        return new_secret()
    if not SECRET_MIN_LENGTH <= len(secret) <= SECRET_MAX_LENGTH or secret != secret.strip():
        raise ValidationError(
            {
                "secret": f"The secret must be {SECRET_MIN_LENGTH} to {SECRET_MAX_LENGTH} "
                "characters, without spaces around it; leave it out to have one made."
            }
        )
    return secret


# Services --------------------------------------------------------------------------------


@transaction.atomic
def webhook_create(
    *,
    project,
    url: str,
    events: list[str],
    actor,
    secret: str | None = None,
    app_url: str | None = None,
) -> Webhook:
    """A new active webhook; ``app_url`` is this app's address as the request reached it."""
    errors = {}
    checked = {}
    for field, check in (
        ("url", lambda: _url_checked(url, app_url=app_url)),
        ("events", lambda: _events_checked(events)),
        ("secret", lambda: _secret_checked(secret)),
    ):
        try:
            checked[field] = check()
        except ValidationError as exc:
            errors.update(exc.error_dict)
    if errors:
        raise ValidationError(errors)
    return Webhook.objects.create(project=project, created_by=actor, **checked)


@transaction.atomic
def webhook_update(
    *,
    webhook: Webhook,
    url: str | None = None,
    events: list[str] | None = None,
    active: bool | None = None,
    secret: str | None = None,
    actor=None,
    app_url: str | None = None,
) -> Webhook:
    """Change what is given; turning a webhook back on forgets its past failures."""
    errors = {}
    changes = {}
    checks = {
        "url": (url, lambda: _url_checked(url, app_url=app_url)),
        "events": (events, lambda: _events_checked(events)),
        "secret": (secret, lambda: _secret_checked(secret)),
    }
    for field, (value, check) in checks.items():
        if value is None:
            continue
        try:
            changes[field] = check()
        except ValidationError as exc:
            errors.update(exc.error_dict)
    if errors:
        raise ValidationError(errors)
    if active is not None and active != webhook.active:
        changes["active"] = active
        if active:
            changes |= {"consecutive_failures": 0, "disabled_reason": ""}
        else:
            who = f" by {actor.get_username()}" if actor else ""
            changes["disabled_reason"] = f"Turned off{who}."
    for field, value in changes.items():
        setattr(webhook, field, value)
    if changes:
        webhook.save(update_fields=list(changes))
    return webhook


@transaction.atomic
def webhook_delete(*, webhook: Webhook) -> None:
    """Delete the webhook and its delivery log."""
    webhook.delete()


def deliveries_queue(*, project, event: str, payload: dict) -> list[WebhookDelivery]:
    """A delivery of ``payload`` to each active webhook of ``project`` that wants ``event``."""
    rows = []
    for webhook in project.webhooks.filter(active=True):
        if event in webhook.events:
            delivery = WebhookDelivery.objects.create(webhook=webhook, event=event, payload=payload)
            enqueue.send(enqueue.WEBHOOK_DELIVER, delivery.pk)
            rows.append(delivery)
    return rows


def delivery_send(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """One attempt to send a pending delivery; a failed one queues its retry with backoff.

    Returns the delivery after the attempt, or None when there was nothing to do: it is
    gone, finished, not due yet or being sent by someone else (a redelivered message).
    """
    return _attempt(delivery_id, now=now or timezone.now(), queue_retry=True)


def deliveries_send_due(now: datetime | None = None, *, limit: int = 200) -> int:
    """Send every pending delivery that is due (or was never tried) now, in this process.

    For ``manage.py loupe_tick``: it also finds deliveries whose message was lost. A failure
    only sets the next attempt's time, for a later tick; nothing sleeps. Returns how many
    attempts were made.
    """
    now = now or timezone.now()
    due = (
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )
    attempted = 0
    for pk in list(due):
        if _attempt(pk, now=now, queue_retry=False) is not None:
            attempted += 1
    return attempted


# Sending ---------------------------------------------------------------------------------


def delivery_body(delivery: WebhookDelivery) -> bytes:
    """The exact bytes POSTed and signed; the same on every attempt."""
    return json.dumps(
        delivery.payload, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":")
    ).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Loupe-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(attempts: int) -> int:
    """Seconds before the next attempt after ``attempts`` failed ones: 10, 20, 40, 80..."""
    return RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)


def _attempt(delivery_id: int, *, now: datetime, queue_retry: bool) -> WebhookDelivery | None:
    delivery = (
        WebhookDelivery.objects.select_related("webhook__project").filter(pk=delivery_id).first()
    )
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return None
    if delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(
        seconds=EARLY_SECONDS
    ):
        return None
    webhook = delivery.webhook
    if not webhook.active:
        _finish(delivery, status=WebhookDelivery.Status.FAILED, error=NOT_SENT)
        return None
    if delivery.attempts >= settings.LOUPE_WEBHOOK_MAX_ATTEMPTS:
        # Its last attempt's worker died before it recorded the answer.
        if _finish(delivery, status=WebhookDelivery.Status.FAILED, error=LOST):
            _failure_count(webhook)
        return delivery
    started = timezone.now()
    timeout = settings.LOUPE_WEBHOOK_TIMEOUT
    claimed = (
        WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=delivery.attempts
        ).update(
            attempts=F("attempts") + 1,
            last_attempt_at=started,
            next_attempt_at=started + timedelta(seconds=timeout + LEASE_EXTRA_SECONDS),
        )
        == 1
    )
    if not claimed:
        return None  # another worker (or the tick) took it first
    delivery.refresh_from_db()

    body = delivery_body(delivery)
    answer = _post(
        webhook.url,
        body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Loupe-Delivery": str(delivery.delivery_id),
            "X-Loupe-Event": delivery.event,
            "X-Loupe-Signature": signature(webhook.secret, body),
        },
        timeout=timeout,
    )
    delivery.response_status = answer.status
    if answer.ok:
        _finish(delivery, status=WebhookDelivery.Status.SUCCEEDED, error="")
        if webhook.consecutive_failures:
            Webhook.objects.filter(pk=webhook.pk).update(consecutive_failures=0)
        return delivery
    if delivery.attempts < settings.LOUPE_WEBHOOK_MAX_ATTEMPTS:
        delay = retry_delay(delivery.attempts)
        delivery.error = answer.error[:ERROR_MAX_LENGTH]
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        kept = WebhookDelivery.objects.filter(pk=delivery.pk).update(
            response_status=delivery.response_status,
            error=delivery.error,
            next_attempt_at=delivery.next_attempt_at,
        )
        if queue_retry and kept:  # not when the webhook was deleted meanwhile
            enqueue.send(enqueue.WEBHOOK_DELIVER, delivery.pk, countdown=delay)
        return delivery
    if _finish(delivery, status=WebhookDelivery.Status.FAILED, error=answer.error):
        _failure_count(webhook)
    return delivery


def _finish(delivery: WebhookDelivery, *, status: str, error: str) -> bool:
    """Succeed or fail a pending delivery; False if someone else finished it first."""
    delivery.status = status
    delivery.error = error[:ERROR_MAX_LENGTH]
    delivery.next_attempt_at = None
    if status == WebhookDelivery.Status.SUCCEEDED:
        delivery.delivered_at = timezone.now()
    fields = ("status", "error", "response_status", "next_attempt_at", "delivered_at")
    return bool(
        WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDelivery.Status.PENDING
        ).update(**{f: getattr(delivery, f) for f in fields})
    )


@transaction.atomic
def _failure_count(webhook: Webhook) -> None:
    """One more failed delivery in a row; at the limit the webhook is turned off, and told."""
    webhook = Webhook.objects.select_for_update().select_related("project").get(pk=webhook.pk)
    webhook.consecutive_failures += 1
    webhook.save(update_fields=["consecutive_failures"])
    limit = settings.LOUPE_WEBHOOK_DISABLE_AFTER
    if not webhook.active or webhook.consecutive_failures < limit:
        return
    webhook.active = False
    webhook.disabled_reason = (
        f"Turned off after {webhook.consecutive_failures} failed deliveries in a row."
    )
    webhook.save(update_fields=["active", "disabled_reason"])
    project = webhook.project
    logger.warning("Webhook %s of %s turned off: %s", webhook.pk, project.slug, webhook.url)
    notifications.notify(
        [*notifications.approvers(project), webhook.created_by],
        kind="webhook.disabled",
        message=(
            f"The webhook to {webhook.url} of {project.name} was turned off after "
            f"{webhook.consecutive_failures} failed deliveries in a row."
        ),
        link=reverse("project-webhooks", kwargs={"slug": project.slug}),
        project=project,
    )


# HTTP ------------------------------------------------------------------------------------
# urllib.request is enough for one signed POST; a library would add nothing but a dependency.


@dataclass(frozen=True)
class _Answer:
    status: int | None
    error: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _DeadlineReader(io.RawIOBase):
    """Reads a response until an absolute deadline: a trickle of bytes cannot outlast it."""

    def __init__(self, sock, deadline: float):
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open, as http.client's
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the webhook's time is up")
        self._sock.settimeout(remaining)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """What http.client's response reads from: only ``makefile`` is ever called."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str):
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineMixin:
    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self.response_class = functools.partial(_deadline_response, deadline=deadline)

    def connect(self):
        # Connecting (and TLS) may use only the time left; name resolution is the OS's.
        self.timeout = max(self._deadline - time.monotonic(), 0.001)
        super().connect()


def _deadline_response(sock, *args, deadline: float, **kwargs) -> http.client.HTTPResponse:
    return http.client.HTTPResponse(_DeadlineSocket(sock, deadline), *args, **kwargs)


class _HTTPConnection(_DeadlineMixin, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineMixin, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTPConnection, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        connection = functools.partial(_HTTPSConnection, deadline=self._deadline)
        return self.do_open(connection, req, context=self._context)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx is the receiver's answer, not an address to send the body to


def _post(url: str, body: bytes, *, headers: dict[str, str], timeout: float) -> _Answer:
    """POST ``body``; whatever happens, it returns within about ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(
        _HTTPHandler(deadline), _HTTPSHandler(deadline), _NoRedirect()
    )
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=timeout) as response:
            return _Answer(response.status, "")
    except urllib.error.HTTPError as exc:
        return _Answer(exc.code, _http_error(exc))
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return _Answer(None, f"No answer within {timeout:g} s.")
        return _Answer(None, f"Could not connect: {exc.reason}")
    except TimeoutError:
        return _Answer(None, f"No answer within {timeout:g} s.")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return _Answer(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _http_error(exc: urllib.error.HTTPError) -> str:
    """``HTTP 500: <the start of the body>``, so the log shows what the endpoint said."""
    try:
        start = exc.read(300).decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException, ValueError):
        start = ""
    finally:
        exc.close()
    start = " ".join(start.split())
    location = exc.headers.get("Location") if 300 <= exc.code < 400 else None
    if location:
        start = f"redirects to {location} (not followed)"
    return f"HTTP {exc.code}: {start}" if start else f"HTTP {exc.code}"


# Selectors -------------------------------------------------------------------------------


def webhook_list(*, project) -> QuerySet[Webhook]:
    return project.webhooks.select_related("created_by").order_by("id")


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[WebhookDelivery]
    next_cursor: int | None  # pass as ``before`` for the next (older) page


def delivery_list(
    *, webhook: Webhook, before: int | None = None, limit: int = DELIVERY_LOG_SIZE
) -> DeliveryPage:
    """The webhook's deliveries, newest first, ``limit`` at a time."""
    rows = webhook.deliveries.order_by("-id")
    if before is not None:
        rows = rows.filter(pk__lt=before)
    page = list(rows[: limit + 1])  # one more tells whether there is a next page
    more = len(page) > limit
    page = page[:limit]
    return DeliveryPage(page, page[-1].pk if more else None)

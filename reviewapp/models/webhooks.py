"""Webhooks: a project's subscriptions to its events, and every delivery attempt."""

import secrets
import uuid

from django.conf import settings
from django.db import models

# What happens in a project that other services can hear of (reviewapp.events emits them).
EVENTS = (
    "run.succeeded",
    "run.failed",
    "audit.finished",
    "version.approved",
    "version.stage_changed",
    "guardrail.paused",
    "policy.triggered",
)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Webhook(models.Model):
    """A URL that receives a signed JSON POST for each of the chosen events."""

    project = models.ForeignKey(
        "reviewapp.Project", on_delete=models.CASCADE, related_name="webhooks"
    )
    url = models.URLField(max_length=500)
    events = models.JSONField(default=list, help_text="Event names (reviewapp.events.EVENTS).")
    secret = models.CharField(max_length=200, default=new_secret)
    active = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"Webhook {self.pk} of project {self.project_id}: {self.url}"


class WebhookDelivery(models.Model):
    """One event sent (or to be sent) to one webhook, with what the endpoint answered."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        SUCCEEDED = "succeeded", "Delivered"
        FAILED = "failed", "Failed, no more retries"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["webhook", "id"]),
            models.Index(fields=["status", "next_attempt_at"]),
        ]

    def __str__(self):
        return f"Delivery {self.delivery_id} of {self.event} to webhook {self.webhook_id}"

"""In-app notifications and who wants them by email."""

from django.conf import settings
from django.db import models


class Notification(models.Model):
    """One thing a user should know: unread until they open it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    project = models.ForeignKey(
        "reviewapp.Project",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    # An event name (reviewapp.events.EVENTS) or a notification of its own, e.g.
    # "version.awaiting_approval".
    kind = models.CharField(max_length=40)
    message = models.CharField(max_length=300)
    link = models.CharField(max_length=300, blank=True, help_text="The page it is about.")
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "read_at", "id"])]

    def __str__(self):
        return f"{self.kind} for {self.user_id}: {self.message}"

    @property
    def is_read(self) -> bool:
        return self.read_at is not None


class NotificationPreference(models.Model):
    """A user's choice to also get their notifications by email (off by default)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    email = models.BooleanField(default=False, help_text="Also send my notifications by email.")

    def __str__(self):
        return f"Notification preference of {self.user_id}"

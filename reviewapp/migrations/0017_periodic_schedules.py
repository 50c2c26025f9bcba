"""Celery beat's schedules for Loupe's periodic jobs (reviewapp.periodic), in the database."""

from django.conf import settings
from django.db import migrations


# Frozen copy of reviewapp.periodic.PERIODIC_TASKS as of this migration.
PERIODIC_TASKS = {
    "reviewapp.tasks.periodic_policy_check": ("Loupe: retraining policy", "LOUPE_POLICY_EVERY"),
    "reviewapp.tasks.periodic_guardrails": ("Loupe: rollout guardrails", "LOUPE_GUARDRAILS_EVERY"),
    "reviewapp.tasks.periodic_reap": ("Loupe: reap lost and dead jobs", "LOUPE_REAP_EVERY"),
    "reviewapp.tasks.periodic_staging_cleanup": (
        "Loupe: clean up abandoned upload staging",
        "LOUPE_STAGING_CLEANUP_EVERY",
    ),
}


def add_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for task, (name, setting) in PERIODIC_TASKS.items():
        every, _ = IntervalSchedule.objects.get_or_create(
            every=getattr(settings, setting, 300), period="seconds"
        )
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": every, "enabled": True}
        )


def remove_schedules(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task__in=list(PERIODIC_TASKS)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0016_retraining_policy_notifications_webhooks"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add_schedules, remove_schedules)]

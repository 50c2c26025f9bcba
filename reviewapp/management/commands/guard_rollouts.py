"""manage.py guard_rollouts: pause every limited version that exceeds a guardrail."""

from django.core.management.base import BaseCommand

from reviewapp import rollout


class Command(BaseCommand):
    help = (
        "Check the guardrails of every limited version and pause those that exceed one "
        "(run it from cron, or rely on serving calling version_guard after each prediction)."
    )

    def handle(self, *args, **options):
        paused = rollout.limited_versions_guard()
        for version in paused:
            self.stdout.write(f"Paused {version}: {version.paused_reason}")
        if not paused:
            self.stdout.write("No limited version exceeds its guardrails.")

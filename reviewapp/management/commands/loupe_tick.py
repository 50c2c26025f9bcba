"""manage.py loupe_tick: every periodic job once, inline, then the webhook deliveries waiting."""

from django.core.management.base import BaseCommand

from reviewapp import periodic


class Command(BaseCommand):
    help = (
        "Run every periodic job once in this process (retraining policy, guardrails, reaper, "
        "staging cleanup) and send the webhook deliveries still waiting: for scripts, cron "
        "and tests, where no Celery beat runs."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--run",
            action="store_true",
            help="Also execute here the training runs and audits the policy starts.",
        )

    def handle(self, *args, run, **options):
        report = periodic.tick(run=run)
        for line in report.lines():
            self.stdout.write(line)

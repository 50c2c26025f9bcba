"""Start a training run from the command line: queue it, follow it, or run it here."""

import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from reviewapp import training
from reviewapp.models import Project, TrainingRun
from trainer import ARCHITECTURES, PRETRAINED_CHOICES, RESIZE_METHODS


class Command(BaseCommand):
    help = (
        "Train a model on a project's labeled images. By default the run is queued for a "
        "Celery worker; --wait follows its progress, --inline runs it in this process."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--size", type=int, dest="image_size", help="Image size in pixels.")
        parser.add_argument("--arch", choices=ARCHITECTURES, dest="architecture")
        parser.add_argument("--resize", choices=RESIZE_METHODS, dest="resize_method")
        parser.add_argument("--freeze-epochs", type=int)
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--lr", type=float, dest="learning_rate")
        parser.add_argument("--lr-find", action="store_true", help="Use the lr finder's pick.")
        parser.add_argument("--pretrained", choices=PRETRAINED_CHOICES)
        parser.add_argument(
            "--no-augment", action="store_false", dest="augment", default=None,
            help="Turn aug_transforms off.",
        )  # fmt: skip
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--wait", action="store_true", help="Queue it and follow its progress.")
        mode.add_argument("--inline", action="store_true", help="Run it in this process.")

    def handle(self, *args, project, wait, inline, lr_find, **options):
        try:
            project_obj = Project.objects.get(slug=project)
        except Project.DoesNotExist:
            raise CommandError(f"No project '{project}'.") from None
        names = set(training.CONFIG_FIELDS)
        config = {k: v for k, v in options.items() if k in names and v is not None}
        if lr_find:
            config["learning_rate"] = None
        try:
            with transaction.atomic():
                run = training.training_run_create(
                    project=project_obj,
                    config=config,
                    enqueue=not inline,
                    trigger=TrainingRun.Trigger.COMMAND,
                )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"Training run #{run.pk} of '{project_obj.slug}': {self._describe(run)}")
        self._seen = None
        if inline:
            training.training_run_execute(run_id=run.pk, worker="inline", on_progress=self._echo)
        elif wait:
            self.stdout.write("Queued; waiting for a worker on the 'training' queue (Ctrl-C stops "
                              "waiting, not the run).")  # fmt: skip
            self._follow(run.pk)
        else:
            self.stdout.write(f"Queued. Follow it at {run.get_absolute_url()}")
            return
        self._report(TrainingRun.objects.get(pk=run.pk))

    def _describe(self, run: TrainingRun) -> str:
        c = run.config
        lr = c["learning_rate"] if c["learning_rate"] is not None else "lr finder"
        return (
            f"{c['architecture']}, {c['image_size']} px {c['resize_method']}, "
            f"{c['epochs']} epoch(s), batch {c['batch_size']}, lr {lr}"
        )

    def _echo(self, run: TrainingRun) -> None:
        """One line per phase and per tenth of it, so a long run prints a few lines."""
        state = (run.status, run.phase, run.progress_percent // 10)
        if state == self._seen:
            return
        self._seen = state
        self.stdout.write(
            f"  {run.get_phase_display()}: {run.progress_done}/{run.progress_total}"
            f" ({run.progress_percent}%)"
        )

    def _follow(self, run_id: int, every: float = 1.0) -> None:
        while True:
            run = TrainingRun.objects.defer("snapshot").get(pk=run_id)
            if run.status == TrainingRun.Status.RUNNING:
                training.training_runs_reap(project=run.project)
            self._echo(run)
            if run.is_finished:
                return
            time.sleep(every)

    def _report(self, run: TrainingRun) -> None:
        for epoch in run.epochs:
            self.stdout.write(
                f"  epoch {epoch['epoch'] + 1} ({epoch['phase']}): train loss "
                f"{_fmt(epoch['train_loss'])}, valid loss {_fmt(epoch['valid_loss'])}, "
                f"error rate {_fmt(epoch['error_rate'])}"
            )
        if run.status == TrainingRun.Status.SUCCEEDED:
            version = run.version
            self.stdout.write(
                self.style.SUCCESS(
                    f"Trained {version.label}: accuracy {version.accuracy:.4f}, "
                    f"{version.n_scored} images scored; {version.pretrained_note}."
                )
            )
            return
        raise CommandError(
            f"Run #{run.pk} {run.get_status_display().lower()}: {run.error_message or 'no reason'}"
        )


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"

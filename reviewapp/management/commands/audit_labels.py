"""Find label errors from the command line: queue a label audit, or run it here."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from reviewapp import audits
from reviewapp.models import LabelAudit, Project


class Command(BaseCommand):
    help = (
        "Score every labeled image of a project out-of-fold (k-fold cross-validation) and "
        "rank the labels most likely wrong. Queued for workers on the 'training' queue (one "
        "job per fold), or --inline in this process."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument("--mode", choices=LabelAudit.Mode.values, default="fast")
        parser.add_argument("--k", type=int, default=5, help="Folds (default 5).")
        parser.add_argument("--inline", action="store_true", help="Run it in this process.")

    def handle(self, *args, project, mode, k, inline, **options):
        try:
            project_obj = Project.objects.get(slug=project)
        except Project.DoesNotExist:
            raise CommandError(f"No project '{project}'.") from None
        try:
            with transaction.atomic():
                audit = audits.label_audit_create(
                    project=project_obj, mode=mode, k=k, enqueue=not inline
                )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(
            f"Label audit #{audit.pk} of '{project_obj.slug}': {mode} mode, {k} folds, "
            f"embeddings from {audit.version.label}."
        )
        if not inline:
            self.stdout.write("Queued: one job per fold on the 'training' queue.")
            return
        audit = audits.label_audit_run_inline(audit_id=audit.pk)
        if audit.status != LabelAudit.Status.SUCCEEDED:
            raise CommandError(f"The audit failed: {audit.error_message}")
        top = audits.audit_score_queryset(audit=audit, queue="issues")[:10]
        low, high = audit.issues_low, audit.issues_high
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {audit.n_images} images, {low}{f'-{high}' if high != low else ''} "
                "label issues (clear disagreements to every disagreement; confident learning: "
                f"{audit.estimated_issues}), {audit.n_duplicate_groups} near-duplicate groups "
                f"({audit.n_leaks} across train/valid)."
            )
        )
        own = audit.version_accuracy
        self.stdout.write(
            f"Out-of-fold accuracy {audit.oof_accuracy:.2f} against {audit.chance_accuracy:.2f} "
            f"by chance ({audit.trust['chance_basis']})"
            + (f"; the version's own {own:.2f}." if own is not None else ".")
        )
        if audit.is_weak:
            self.stdout.write(self.style.WARNING(f"Warning: {audit.trust['warning']}"))
        for suggestion in audit.trust.get("suggestions", []):
            self.stdout.write(f"  - {suggestion}")
        self.stdout.write(f"Most suspicious first ({audits.DEFAULT_SORT}):")
        for score in top.select_related("label", "predicted"):
            self.stdout.write(
                f"  image {score.image_id}: labeled {score.label}, predicted {score.predicted} "
                f"(self-confidence {score.self_confidence:.3f})"
            )

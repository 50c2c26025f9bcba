"""manage.py onnx_export [--project SLUG] [--model-version ID] [--again]: ONNX for older versions.

New versions are exported when they are trained; this exports the ones trained before,
so ONNX Runtime can serve them too.
"""

from django.core.management.base import BaseCommand, CommandError

from reviewapp import model_files
from reviewapp.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Export model versions without an ONNX file to ONNX and check their answers against "
        "fastai's on their validation images."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", help="Only this project's versions (its slug).")
        # Not --version: Django's own option prints its version.
        parser.add_argument("--model-version", type=int, help="Only this version (its id).")
        parser.add_argument(
            "--again", action="store_true", help="Export versions that already have one too."
        )

    def handle(self, *args, project=None, model_version=None, again=False, **options):
        version = model_version
        versions = ModelVersion.objects.select_related("project", "run").exclude(
            stage__in=(ModelVersion.Stage.RETIRED, ModelVersion.Stage.REJECTED)
        )
        if project:
            versions = versions.filter(project__slug=project)
        if version:
            versions = ModelVersion.objects.select_related("project", "run").filter(pk=version)
            if not versions.exists():
                raise CommandError(f"There is no model version {version}.")
        if not again and not version:
            versions = versions.filter(onnx_file="")
        failed = 0
        for found in versions.order_by("project__slug", "number"):
            try:
                done = model_files.version_onnx_export(version=found)
            except Exception as exc:  # one version's missing file must not stop the others
                failed += 1
                self.stderr.write(f"{found}: not exported: {exc}")
                continue
            if done.onnx_servable:
                self.stdout.write(
                    f"{found}: exported; largest probability difference "
                    f"{done.onnx_max_prob_diff:.1e} on {done.onnx_parity_images} validation images"
                )
            else:
                failed += 1
                self.stdout.write(
                    f"{found}: exported, not served by ONNX Runtime: {done.onnx_error}"
                )
        if failed:
            raise CommandError(f"{failed} version(s) are still served by torch; see above.")

"""Build the demo project from scikit-learn's bundled handwritten digits."""

from django.core.management.base import BaseCommand
from tqdm import tqdm

from reviewapp.demo import DEMO_FLIP_SHARE, demo_project_create, demo_project_fill


class Command(BaseCommand):
    help = "Create the 'digits-demo' project (1,797 images, 5% of labels flipped on purpose)."

    def handle(self, *args, **options):
        project, created = demo_project_create()
        if not created and project.images.exists():
            self.stdout.write(f"The demo project already exists: /p/{project.slug}/")
            return
        with tqdm(total=1797, unit="img", disable=None) as bar:
            imported = demo_project_fill(project_id=project.pk, on_progress=lambda n: bar.update(1))
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {imported} digits into /p/{project.slug}/; "
                f"{DEMO_FLIP_SHARE:.0%} of the labels are deliberately wrong."
            )
        )

"""First run: create an admin account (printing its password once) and offer the demo."""

from django.core.management.base import BaseCommand
from django.urls import reverse

from reviewapp.bootstrap import admin_account_ensure, sign_in_lines
from reviewapp.models import Project

NO_PROJECTS = (
    "No projects yet: create one in the browser, click 'Add the digits demo project' "
    "(scikit-learn's handwritten digits, some labels flipped), or run `make demo`."
)


class Command(BaseCommand):
    help = "Create the first admin account if there is none; idempotent."

    def handle(self, *args, **options):
        sign_in = admin_account_ensure()
        if sign_in is not None:
            created = f"Created the admin account '{sign_in.username}'."
            self.stdout.write(self.style.SUCCESS(created))
            self.stdout.write("\n".join(sign_in_lines(sign_in, reverse("login"))))
        if not Project.objects.exists():
            self.stdout.write(NO_PROJECTS)

"""First run: create an admin account (printing its password once) and offer the demo."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from reviewapp.models import Project


class Command(BaseCommand):
    help = "Create the first admin account if there is none; idempotent."

    def handle(self, *args, **options):
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
            password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
            generated = not password
            password = password or secrets.token_urlsafe(12)
            User.objects.create_superuser(
                username=username,
                email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""),
                password=password,
            )
            self.stdout.write(self.style.SUCCESS(f"Created the admin account '{username}'."))
            if generated:
                self.stdout.write(
                    f"  Its password is: {password}\n"
                    "  It is shown only this once; change it after logging in "
                    "(or set DJANGO_SUPERUSER_PASSWORD before the first run)."
                )
        if not Project.objects.exists():
            self.stdout.write(
                "No projects yet: create one in the browser, click 'Create the demo "
                "project' (scikit-learn's handwritten digits, some labels flipped), "
                "or run `make demo`."
            )

"""manage.py create_api_token --project SLUG --client NAME: print a new client token once."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from reviewapp import serving
from reviewapp.models import Project


class Command(BaseCommand):
    help = (
        "Create a prediction client's token for a project and print it. Only its hash is "
        "stored: copy it now, it cannot be shown again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument("--client", required=True, help="Who will call predict with it.")

    def handle(self, *args, project, client, **options):
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"No project '{project}'.")
        try:
            token, key = serving.client_token_create(project=found, client=client)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        # The key alone on stdout, so scripts can capture it; the advice goes to stderr.
        self.stdout.write(key)
        self.stderr.write(
            f"Created a client token for '{token.client}' in project '{found.slug}'. Store it "
            "now: it is not shown again. Send it as 'Authorization: Bearer <token>' to "
            f"POST /api/v1/projects/{found.slug}/predict."
        )

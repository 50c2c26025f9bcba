"""manage.py create_user_token --user NAME [--name NAME]: print a new API token once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from reviewapp import services


class Command(BaseCommand):
    help = (
        "Create a personal API token for a user and print it. Only its hash is stored: "
        "copy it now, it cannot be shown again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="Username of the token's owner.")
        parser.add_argument("--name", default="API token", help="What the token is for.")

    def handle(self, *args, user, name, **options):
        User = get_user_model()
        try:
            owner = User.objects.get(**{User.USERNAME_FIELD: user})
        except User.DoesNotExist:
            raise CommandError(f"No user '{user}'.") from None
        if not owner.is_active:
            raise CommandError(f"The user '{user}' is inactive; activate the account first.")
        token, key = services.api_token_create(user=owner, name=name)
        # The key alone on stdout, so scripts can capture it; the advice goes to stderr.
        self.stdout.write(key)
        self.stderr.write(
            f"Created token '{token.name}' for {user}. Store it now: it is not shown again. "
            "Send it as 'Authorization: Bearer <token>'."
        )

"""First run: the admin account, and the sign-in words `make run` prints when Loupe is ready."""

import os
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model

__all__ = ["SignIn", "admin_account_ensure", "sign_in_lines"]


@dataclass(frozen=True)
class SignIn:
    """The admin account made now; ``password`` only when it was generated here."""

    username: str
    password: str | None


def admin_account_ensure() -> SignIn | None:
    """Create the first superuser if there is none; None when one already exists."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return None
    username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
    given = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
    password = given or secrets.token_urlsafe(12)
    User.objects.create_superuser(
        username=username, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password=password
    )
    return SignIn(username=username, password=None if given else password)


def sign_in_lines(sign_in: SignIn, url: str) -> list[str]:
    """Where and as whom to sign in; a generated password is shown only this once."""
    if sign_in.password is None:
        return [f"  Sign in at {url} as '{sign_in.username}' (DJANGO_SUPERUSER_PASSWORD)."]
    return [
        f"  Sign in at {url} as '{sign_in.username}' with the password: {sign_in.password}",
        "  It is shown only this once; change it after logging in "
        "(or set DJANGO_SUPERUSER_PASSWORD before the first run).",
    ]

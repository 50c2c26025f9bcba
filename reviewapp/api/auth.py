"""Who is calling: a personal Bearer token or the browser's session, and what they may do."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from ninja.errors import AuthenticationError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from ..models import ApiToken

__all__ = ["BearerAuth", "CsrfFailed", "SessionAuth", "require_perm"]

# Record a token's use at most this often, so reads do not each cost a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class CsrfFailed(PermissionDenied):
    """A session request changing data without the CSRF token."""


class BearerAuth(HttpBearer):
    """``Authorization: Bearer <token>``; a token that is sent but wrong is refused outright."""

    openapi_bearerFormat = "lp_…"
    openapi_description = (
        "A personal API token: `python manage.py create_user_token --user NAME`. "
        "Send it as `Authorization: Bearer <token>`."
    )

    def authenticate(self, request, token):
        token = token.strip()
        api_token = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=ApiToken.hash_key(token))
            .first()
            if token
            else None
        )
        if api_token is None:
            raise AuthenticationError(
                message="The API token is not valid; it may have been deleted. Create a new one "
                "with `manage.py create_user_token`."
            )
        user = api_token.user
        if not user.is_active:
            raise AuthenticationError(message=f"The account '{user.get_username()}' is inactive.")
        _token_touch(api_token)
        request.user = user  # services and logging read request.user
        return user


def _token_touch(api_token: ApiToken) -> None:
    now = timezone.now()
    if api_token.last_used_at and now - api_token.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
    api_token.last_used_at = now


class SessionAuth(APIKeyCookie):
    """The browser's login session; unsafe methods must carry the CSRF token."""

    param_name = settings.SESSION_COOKIE_NAME
    openapi_description = "The session of a user logged in to Loupe's web pages, plus X-CSRFToken."

    def __call__(self, request):
        user = request.user
        if not user.is_authenticated:
            # No session: answer 401, not a CSRF failure that would hide the real problem.
            return None
        if self.csrf and check_csrf(request) is not None:
            raise CsrfFailed(
                "CSRF check failed: send the 'csrftoken' cookie's value in the X-CSRFToken "
                "header, or authenticate with a Bearer token instead of the session."
            )
        return user

    def authenticate(self, request, key):  # pragma: no cover - __call__ does the work
        return request.user if request.user.is_authenticated else None


def require_perm(request, perm: str, action: str) -> None:
    """Refuse with 403 unless the caller holds ``perm``; ``action`` says what they tried."""
    if not request.auth.has_perm(perm):
        raise PermissionDenied(
            f"You are not allowed to {action}: it needs the '{perm}' permission."
        )

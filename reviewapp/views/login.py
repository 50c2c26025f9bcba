"""Login throttling (django-axes): the lockout page, and the client's address behind proxies."""

import math

from axes.helpers import get_cool_off
from django.conf import settings
from django.shortcuts import render

__all__ = ["login_client_ip", "login_lockout"]


def login_lockout(request, original_response=None, credentials=None):
    """The page a locked (user name, address) pair gets, alike whether the user exists."""
    cooloff_minutes = math.ceil(get_cool_off(request).total_seconds() / 60)
    context = {"cooloff_minutes": cooloff_minutes}
    return render(
        request,
        "registration/login_locked_out.html",
        context,
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )


def login_client_ip(request) -> str | None:
    """The address the outermost of LOUPE_TRUSTED_PROXY_COUNT proxies saw the client at."""
    # Each trusted proxy appends the address it saw; entries left of those are the client's own.
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [a for a in forwarded if a]
    count = settings.LOUPE_TRUSTED_PROXY_COUNT
    if count <= 0 or len(forwarded) < count:
        return request.META.get("REMOTE_ADDR")
    return forwarded[-count]

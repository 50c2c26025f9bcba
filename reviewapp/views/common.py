"""Helpers every page view shares: login, permission checks, page-or-partial rendering."""

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django_htmx.http import HttpResponseClientRedirect

from ..models import Project

__all__ = [
    "act_then_show_status",
    "add_service_errors",
    "is_htmx",
    "login_required",
    "project_for",
    "render_page",
    "require_perm",
]


def login_required(view):
    """Send anonymous users to the login page; an htmx request gets a full-page redirect."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if is_htmx(request):
            # A 302 would be followed by the XHR and swap the login page into a fragment.
            current = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(redirect_to_login(current, settings.LOGIN_URL).url)
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)

    return wrapper


def require_perm(user, perm: str) -> None:
    """Raise PermissionDenied (the 403 page) unless ``user`` has ``perm``."""
    if not user.has_perm(perm):
        denied = PermissionDenied(f"You need the permission '{perm}' for this page.")
        denied.perm = perm  # the 403 page names the groups that grant it
        raise denied


def project_for(request, slug: str, perm: str = "reviewapp.view_project") -> Project:
    """The project named by ``slug`` after checking ``perm``; 403 before 404 leaks nothing."""
    require_perm(request.user, perm)
    return get_object_or_404(Project, slug=slug)


def positive_int(value) -> int | None:
    """A query parameter as a positive whole number, or None: a bad cursor is no error."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def is_htmx(request) -> bool:
    # A history-restore request wants the whole page even though it comes from htmx.
    return bool(request.htmx) and not request.htmx.history_restore_request


def render_page(request, template: str, partial: str, context: dict, *, status: int = 200):
    """The full page, or only its named partial when htmx asked for it."""
    name = f"{template}#{partial}" if is_htmx(request) else template
    response = render(request, name, context, status=status)
    # The same URL answers with a page or a fragment; caches must tell them apart.
    patch_vary_headers(response, ["HX-Request"])
    return response


def add_service_errors(form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: per field where it has one."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def act_then_show_status(
    request, action: Callable[[], object], *, done: str, obj, context, page: str, partial: str
):
    """A button on a job's status card (cancel): run ``action``, then show the card again.

    htmx gets the card's partial from ``context()``, read after the action, which says what
    happened; a plain form post goes back to ``obj``'s page with ``done``, or the service's
    refusal, as a message.
    """
    try:
        action()
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if not is_htmx(request):
            messages.info(request, done)
    if is_htmx(request):
        return render_page(request, page, partial, context())
    return redirect(obj)

"""A reviewer's own queue settings: the auto-advance toggle of the review and label queues."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from .. import preferences
from .common import is_htmx, login_required, require_perm

__all__ = ["reviewer_auto_advance"]

TOGGLE = "reviewapp/_auto_advance.html"


@require_POST
@login_required
def reviewer_auto_advance(request):
    """Turn auto-advance on (``auto_advance=1``) or off (absent, as an unticked box sends)."""
    # Only someone who can decide has cards to advance through.
    require_perm(request.user, "reviewapp.change_image")
    preference = preferences.reviewer_preference_update(
        user=request.user, auto_advance=request.POST.get("auto_advance") == "1"
    )
    if is_htmx(request):
        context = {
            "auto_advance": preference.auto_advance,
            "can_decide": True,
            "saved": True,
            "next_url": request.htmx.current_url_abs_path or "",
        }
        return render(request, TOGGLE, context)
    state = "on" if preference.auto_advance else "off"
    messages.success(request, f"Auto-advance is {state}.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "project-list"
    return redirect(target)

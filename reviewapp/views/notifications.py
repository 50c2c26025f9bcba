"""The Notifications page, the bell in the header, and opening one notification."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET, require_POST

from .. import notifications
from ..forms import NotificationPreferenceForm
from .common import login_required, positive_int, render_page

__all__ = [
    "notification_list",
    "notification_open",
    "notification_preferences",
    "notifications_bell",
    "notifications_read_all",
]

PAGE_SIZE = 30


# Notifications are the user's own, like API tokens: any signed-in user reads and marks
# theirs, no model permission is needed, and nobody reaches another's.
@require_GET
@login_required
def notification_list(request):
    before = positive_int(request.GET.get("before"))
    page = notifications.notification_list(user=request.user, before=before, limit=PAGE_SIZE)
    preference = notifications.notification_preference_get(user=request.user)
    context = {
        "page": page,
        "page_size": PAGE_SIZE,
        "cursor": before,
        "unread": notifications.notification_unread_count(user=request.user),
        "form": NotificationPreferenceForm(initial={"email": preference.email}),
        "has_email": bool(request.user.email),
    }
    return render_page(request, "reviewapp/notifications.html", "notification-list", context)


@require_GET
@login_required
def notification_open(request, pk):
    link = notifications.notification_open(user=request.user, notification_id=pk)
    # Only a path on this site (checked by the service): never an open redirect.
    return redirect(link) if link else redirect("notifications")


@require_POST
@login_required
def notifications_read_all(request):
    count = notifications.notifications_mark_all_read(user=request.user)
    messages.success(request, f"Marked {count} notification{'s' if count != 1 else ''} read.")
    return redirect("notifications")


@require_GET
@login_required
def notifications_bell(request):
    # Only ever the fragment: the header polls it, and a page of its own would be empty.
    response = render(request, "reviewapp/base.html#notification-bell")
    patch_cache_control(response, no_store=True)
    return response


@require_POST
@login_required
def notification_preferences(request):
    form = NotificationPreferenceForm(request.POST)
    email = form.is_valid() and form.cleaned_data["email"]
    notifications.notification_preference_set(user=request.user, email=email)
    if not email:
        messages.success(request, "Your notifications are no longer emailed to you.")
    elif request.user.email:
        messages.success(request, f"Your notifications will be emailed to {request.user.email}.")
    else:
        messages.warning(
            request,
            "Emails are on, but your account has no email address: ask an administrator "
            "to add one.",
        )
    return redirect("notifications")

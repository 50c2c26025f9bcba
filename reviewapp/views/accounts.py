"""A user's personal API tokens: list, create (the key is shown once), revoke."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from .. import services
from ..forms import ApiTokenForm
from ..models import ApiToken
from .common import login_required

__all__ = ["api_token_create", "api_token_revoke", "api_tokens"]


def _render(request, form, *, new_key: str = "", new_token=None):
    tokens = ApiToken.objects.filter(user=request.user).order_by("-created_at")
    context = {"tokens": tokens, "form": form, "new_key": new_key, "new_token": new_token}
    response = render(request, "reviewapp/api_tokens.html", context)
    if new_key:
        # The key is in this page only: no cache may keep a copy.
        response["Cache-Control"] = "no-store"
    return response


# Tokens belong to the user who makes them and carry that user's own permissions,
# so any signed-in user may manage theirs; no model permission is needed.
@require_GET
@login_required
def api_tokens(request):
    return _render(request, ApiTokenForm())


@require_POST
@login_required
def api_token_create(request):
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        return _render(request, form)
    token, key = services.api_token_create(user=request.user, name=form.cleaned_data["name"])
    return _render(request, ApiTokenForm(), new_key=key, new_token=token)


@require_POST
@login_required
def api_token_revoke(request, pk):
    token = services.api_token_revoke(user=request.user, token_id=pk)
    if token is None:
        messages.error(request, "That token does not exist or is not yours.")
    else:
        messages.success(request, f"Token '{token.name}' ({token.prefix}…) revoked.")
    return redirect("api-tokens")

"""The approvers' Webhooks page of a project: add, change and delete webhooks, read their log."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import webhooks
from ..events import EVENTS
from ..models import Project, Webhook
from .common import add_service_errors, is_htmx, login_required, render_page, require_perm

__all__ = [
    "project_webhooks",
    "webhook_create",
    "webhook_delete",
    "webhook_deliveries",
    "webhook_update",
]

PERM = "reviewapp.approve_model"
PAGE = "reviewapp/webhooks.html"
EVENT_CHOICES = [(name, name) for name in EVENTS]


class WebhookCreateForm(forms.Form):
    # Not a URLField: the service's checks say exactly what is wrong, and allow hosts
    # without a dot (a receiver named "hooks" on the same network).
    url = forms.CharField(
        max_length=500,
        label="Payload URL",
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/loupe"}),
        help_text="Loupe POSTs each event here as JSON. http or https; not Loupe's own address.",
    )
    events = forms.MultipleChoiceField(
        choices=EVENT_CHOICES, required=False, widget=forms.CheckboxSelectMultiple
    )
    secret = forms.CharField(
        max_length=200,
        required=False,
        help_text="Signs each body (X-Loupe-Signature). Leave it blank to have one made.",
    )


class WebhookEditForm(forms.Form):
    events = forms.MultipleChoiceField(
        choices=EVENT_CHOICES, required=False, widget=forms.CheckboxSelectMultiple
    )
    active = forms.BooleanField(required=False, label="Active: send events to it")

    @classmethod
    def for_webhook(cls, webhook: Webhook, data=None) -> "WebhookEditForm":
        # Per-webhook ids: the page holds one of these forms for every webhook.
        initial = {"events": webhook.events, "active": webhook.active}
        return cls(data, initial=initial, auto_id=f"webhook-{webhook.pk}-%s")


def _webhook_for(request, pk: int) -> Webhook:
    require_perm(request.user, PERM)
    return get_object_or_404(Webhook.objects.select_related("project", "created_by"), pk=pk)


def _card(webhook: Webhook, form: WebhookEditForm | None = None) -> Webhook:
    """The webhook with what its card shows: the edit form and the delivery log."""
    webhook.form = form or WebhookEditForm.for_webhook(webhook)
    webhook.log = webhooks.delivery_list(webhook=webhook).deliveries
    webhook.log_pending = any(d.status == d.Status.PENDING for d in webhook.log)
    return webhook


def _context(project: Project, *, cards=None, create_form=None, **extra) -> dict:
    """The whole page's context; ``cards`` replaces the fresh cards of the same webhooks."""
    fresh = {c.pk: c for c in cards or ()}
    return {
        "project": project,
        "webhooks": [fresh.get(w.pk) or _card(w) for w in webhooks.webhook_list(project=project)],
        "create_form": create_form or WebhookCreateForm(),
        "log_size": webhooks.DELIVERY_LOG_SIZE,
        **extra,
    }


def _render(request, partial: str, project: Project, *, card: Webhook, status=200, **extra):
    """htmx: one webhook's ``partial``; otherwise the whole page, with that card in it."""
    if is_htmx(request):
        context = {"project": project, "webhook": card, "log_size": webhooks.DELIVERY_LOG_SIZE}
        return render_page(request, PAGE, partial, context | extra, status=status)
    context = _context(project, cards=[card], **extra)
    return render_page(request, PAGE, partial, context, status=status)


def _app_url(request) -> str:
    """Loupe's address as this request reached it: a webhook must not point back at it."""
    return request.build_absolute_uri("/")


@require_GET
@login_required
def project_webhooks(request, slug):
    require_perm(request.user, PERM)
    project = get_object_or_404(Project, slug=slug)
    return render_page(request, PAGE, "webhook-list", _context(project))


@require_POST
@login_required
def webhook_create(request, slug):
    require_perm(request.user, PERM)
    project = get_object_or_404(Project, slug=slug)
    form = WebhookCreateForm(request.POST)
    if form.is_valid():
        try:
            webhook = webhooks.webhook_create(
                project=project,
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
                secret=form.cleaned_data["secret"] or None,
                actor=request.user,
                app_url=_app_url(request),
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            # The page itself, not a redirect: it shows the new secret once, out of the URL.
            return render_page(request, PAGE, "webhook-list", _context(project, created=webhook))
    return render_page(
        request, PAGE, "webhook-create", _context(project, create_form=form), status=400
    )


@require_POST
@login_required
def webhook_update(request, pk):
    webhook = _webhook_for(request, pk)
    form = WebhookEditForm.for_webhook(webhook, request.POST)
    if form.is_valid():
        try:
            webhooks.webhook_update(
                webhook=webhook,
                events=form.cleaned_data["events"],
                active=form.cleaned_data["active"],
                actor=request.user,
            )
        except ValidationError as exc:
            webhook.refresh_from_db()
            add_service_errors(form, exc)
        else:
            if not is_htmx(request):
                messages.success(request, f"Webhook to {webhook.url} saved.")
                return redirect("project-webhooks", slug=webhook.project.slug)
            return _render(
                request, "webhook-card", webhook.project, card=_card(webhook), saved=True
            )
    card = _card(webhook, form)
    return _render(request, "webhook-card", webhook.project, card=card, status=400)


@require_http_methods(["GET", "POST"])
@login_required
def webhook_delete(request, pk):
    """GET asks to confirm; POST deletes the webhook and its log."""
    webhook = _webhook_for(request, pk)
    project = webhook.project
    if request.method == "GET":
        return _render(
            request, "webhook-delete", project, card=_card(webhook), confirm_delete=webhook.pk
        )
    url = webhook.url
    webhooks.webhook_delete(webhook=webhook)
    if is_htmx(request):
        return HttpResponse("")  # swapped outerHTML, nothing left: the card goes away
    messages.success(request, f"Webhook to {url} deleted, with its delivery log.")
    return redirect("project-webhooks", slug=project.slug)


@require_GET
@login_required
def webhook_deliveries(request, pk):
    """The webhook's latest deliveries: the log's partial, or the page of that one webhook."""
    webhook = _card(_webhook_for(request, pk))
    if is_htmx(request):
        return _render(request, "delivery-log", webhook.project, card=webhook)
    context = {
        "project": webhook.project,
        "webhooks": [webhook],
        "log_size": webhooks.DELIVERY_LOG_SIZE,
        "single": True,
    }
    return render_page(request, PAGE, "delivery-log", context)

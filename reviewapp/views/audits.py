"""Label audits: start one, follow it, and review its three queues with the review card."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from .. import audits, preferences
from ..enqueue import QueueUnavailable
from ..models import LabelAudit, ModelVersion, Project
from .common import (
    act_then_show_status,
    login_required,
    project_for,
    render_page,
    require_perm,
)

__all__ = [
    "LabelAuditForm",
    "label_audit_cancel",
    "label_audit_detail",
    "label_audit_list",
    "label_audit_queue",
    "label_audit_start",
]

PAGE_SIZE = 24
# Audits reuse the permissions of what they stand for, so the groups need no new ones:
# starting one trains models (add_trainingrun), reading one reads scores (view_imagescore).
START_PERM = "reviewapp.add_trainingrun"
VIEW_PERM = "reviewapp.view_imagescore"
QUEUE_TITLES = {
    "issues": "Suspected label issues",
    "duplicates": "Near-duplicates",
    "outliers": "Outliers",
}


class LabelAuditForm(forms.Form):
    mode = forms.ChoiceField(
        choices=LabelAudit.Mode.choices,
        initial=LabelAudit.Mode.FAST,
        help_text="Fast fits a linear head per fold on the model's embeddings (minutes on "
        "large data sets); full trains one model per fold.",
    )
    k = forms.IntegerField(
        label="Folds (k)", min_value=2, max_value=audits.MAX_K, initial=5, help_text="k jobs."
    )
    version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.none(),
        required=False,
        empty_label="Latest",
        help_text="The model whose body embeds the images.",
    )

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["version"].queryset = project.model_versions.order_by("-number")
        self.fields["version"].label_from_instance = lambda v: v.label


def _list_context(request, project: Project, form: LabelAuditForm | None) -> dict:
    return {
        "project": project,
        "audits": list(
            LabelAudit.objects.filter(project=project)
            .defer("snapshot")
            .select_related("version", "created_by")[:50]
        ),
        "form": form,
        "has_version": project.model_versions.exists(),
    }


@require_GET
@login_required
def label_audit_list(request, slug):
    project = project_for(request, slug, VIEW_PERM)
    form = None
    if request.user.has_perm(START_PERM):
        # The version page links here with ?version=: the form starts from that version.
        form = LabelAuditForm(project=project, initial={"version": request.GET.get("version")})
    return render_page(
        request, "reviewapp/label_audits.html", "audit-table", _list_context(request, project, form)
    )


@require_POST
@login_required
def label_audit_start(request, slug):
    project = project_for(request, slug, START_PERM)
    form = LabelAuditForm(request.POST, project=project)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return redirect("label-audit-list", slug=project.slug)
    try:
        audit = audits.label_audit_create(
            project=project,
            mode=form.cleaned_data["mode"],
            k=form.cleaned_data["k"],
            version=form.cleaned_data["version"],
            actor=request.user,
            fail_if_unqueued=True,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("label-audit-list", slug=project.slug)
    except QueueUnavailable:
        messages.error(
            request, "The job queue is unavailable; try again. The audit was not started."
        )
        return redirect("label-audit-list", slug=project.slug)
    messages.success(request, f"Label audit #{audit.pk} queued: {audit.k} fold jobs.")
    return redirect(audit)


def _audit_or_404(pk: int) -> LabelAudit:
    return get_object_or_404(
        LabelAudit.objects.defer("snapshot").select_related("project", "version", "created_by"),
        pk=pk,
    )


def _detail_context(audit: LabelAudit) -> dict:
    return {
        "project": audit.project,
        "audit": audit,
        "queues": [
            (name, QUEUE_TITLES[name], reverse(f"label-audit-{name}", kwargs={"pk": audit.pk}))
            for name in audits.QUEUES
        ],
        "default_sort_label": audits.SORTS[audits.DEFAULT_SORT][0],
    }


@require_GET
@login_required
def label_audit_detail(request, pk):
    require_perm(request.user, VIEW_PERM)
    return render_page(
        request, "reviewapp/label_audit.html", "audit-status", _detail_context(_audit_or_404(pk))
    )


@require_POST
@login_required
def label_audit_cancel(request, pk):
    """Stop a queued or running audit, a stuck one included."""
    require_perm(request.user, START_PERM)
    audit = _audit_or_404(pk)
    return act_then_show_status(
        request,
        lambda: audits.label_audit_cancel(audit=audit, actor=request.user),
        done=f"Label audit #{audit.pk} cancelled.",
        obj=audit,
        context=lambda: _detail_context(_audit_or_404(pk)),
        page="reviewapp/label_audit.html",
        partial="audit-status",
    )


def _queue_url(audit: LabelAudit, queue: str, **params) -> str:
    url = reverse(f"label-audit-{queue}", kwargs={"pk": audit.pk})
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{url}?{query}" if query else url


@require_GET
@login_required
def label_audit_queue(request, pk, queue):
    require_perm(request.user, VIEW_PERM)
    audit = _audit_or_404(pk)
    sort = request.GET.get("sort", "")
    if queue != "issues" or sort not in audits.SORTS:
        sort = audits.DEFAULT_SORT if queue == "issues" else ""
    try:
        page_number = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        page_number = 1
    context = {
        "project": audit.project,
        "audit": audit,
        "version": audit.version,
        "queue": queue,
        "title": QUEUE_TITLES[queue],
        "sort": sort,
        "sorts": [(key, label) for key, (label, _) in audits.SORTS.items()],
        "default_sort": audits.DEFAULT_SORT,
        "categories": list(audit.project.categories.all()),
        "can_decide": request.user.has_perm("reviewapp.change_image"),
        "auto_advance": preferences.reviewer_preference_get(user=request.user).auto_advance,
        "queue_links": [
            (name, QUEUE_TITLES[name], _queue_url(audit, name)) for name in audits.QUEUES
        ],
    }
    if audit.status == LabelAudit.Status.SUCCEEDED:
        page = audits.audit_score_page(
            audit=audit, queue=queue, sort=sort, page=page_number, limit=PAGE_SIZE
        )
        context.update(
            page=page,
            here=_queue_url(audit, queue, sort=sort),
            next_url=_queue_url(audit, queue, sort=sort, page=page_number + 1)
            if page.has_next
            else None,
            previous_url=_queue_url(audit, queue, sort=sort, page=page_number - 1)
            if page_number > 1
            else None,
        )
    return render_page(request, "reviewapp/label_audit_queue.html", "audit-list", context)

"""The project list, the project page and its settings; the demo project button."""

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import demo, enqueue, labeling, policy, second_opinion, selectors, services, training
from ..backbones import present_architectures
from ..forms import (
    DATABLOCK_FIELDS,
    ProjectCreateForm,
    ProjectSettingsForm,
    RetrainPolicyForm,
    TrainingRunForm,
    UploadForm,
)
from ..models import Image, Project
from ..services import SPLIT_FIELDS
from .common import add_service_errors, login_required, project_for, render_page, require_perm

__all__ = ["demo_project_create", "project_create", "project_detail", "project_list"]

# scikit-learn's digits data set has this many scans; the demo imports them all.
DEMO_IMAGE_COUNT = 1797
# Stop polling a demo import that made no progress for this long: no worker is running.
DEMO_IMPORT_WINDOW = timedelta(minutes=15)


def _project_list_render(request, form: ProjectCreateForm):
    projects = Project.objects.annotate(
        n_images=Count("images", filter=Q(images__status=Image.Status.ACTIVE))
    ).order_by("name")
    # The demo button stays on the page: disabled, with a link, once the demo exists.
    demo_project = Project.objects.filter(slug=demo.DEMO_SLUG).first()
    return render(
        request,
        "reviewapp/project_list.html",
        {"projects": projects, "form": form, "demo_project": demo_project},
    )


@require_GET
@login_required
def project_list(request):
    require_perm(request.user, "reviewapp.view_project")
    return _project_list_render(request, ProjectCreateForm())


@require_POST
@login_required
def project_create(request):
    require_perm(request.user, "reviewapp.add_project")
    form = ProjectCreateForm(request.POST)
    if form.is_valid():
        try:
            project = services.project_create(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Project '{project.name}' created.")
            return redirect(project)
    return _project_list_render(request, form)


@require_POST
@login_required
def demo_project_create(request):
    require_perm(request.user, "reviewapp.add_project")
    with transaction.atomic():
        project, created = demo.demo_project_create(actor=request.user)
        if created:
            enqueue.send(enqueue.DEMO_BUILD, project.pk)
    if created:
        messages.success(
            request,
            f"Demo project created. A worker is importing its {DEMO_IMAGE_COUNT:,} "
            "handwritten digits; the counts below fill up as they arrive.",
        )
    return redirect(project)


def _demo_import(project: Project, counts: selectors.ProjectCounts) -> dict | None:
    """How far the demo's background import is, while it has images left to bring."""
    if project.slug != demo.DEMO_SLUG:
        return None
    done = counts.total + counts.deleted
    if done >= DEMO_IMAGE_COUNT:
        return None
    last_change = (
        project.images.order_by("-id").values_list("created_at", flat=True).first()
        or project.created_at
    )
    return {
        "done": done,
        "total": DEMO_IMAGE_COUNT,
        "percent": round(100 * done / DEMO_IMAGE_COUNT),
        "running": timezone.now() - last_change < DEMO_IMPORT_WINDOW,
    }


@require_GET
@login_required
def project_detail(request, slug):
    project = project_for(request, slug)
    counts = selectors.project_counts(project=project)
    context = {
        "project": project,
        "counts": counts,
        "demo_import": _demo_import(project, counts),
    }
    if not request.htmx:
        context["upload_form"] = UploadForm(project=project, categories=_counts_categories(counts))
        context["recent_batches"] = project.upload_batches.select_related("created_by")[:5]
        context["latest_version"] = selectors.model_version_latest(project=project)
        context["active_runs"] = selectors.training_run_active(project=project)
        context["label_summary"] = labeling.label_summary(project=project)
        context["pending_opinions"] = second_opinion.pending_count(project=project)
        if request.user.has_perm("reviewapp.add_trainingrun"):
            context["train_form"] = TrainingRunForm.for_config(
                training.train_config_for(project), present=present_architectures()
            )
    return render_page(request, "reviewapp/project_detail.html", "project-counts", context)


def _counts_categories(counts: selectors.ProjectCounts) -> list:
    """The project's categories, in order, from the counts already fetched."""
    return [row.category for row in counts.rows if row.category is not None]


@require_http_methods(["GET", "POST"])
@login_required
def project_settings(request, slug):
    project = project_for(request, slug, "reviewapp.change_project")
    if request.method == "POST":
        form = ProjectSettingsForm(request.POST)
        if form.is_valid():
            resplit = any(
                form.cleaned_data[name] != getattr(project, name) for name in SPLIT_FIELDS
            )
            try:
                services.project_update(project=project, **form.cleaned_data)
            except ValidationError as exc:
                project.refresh_from_db()  # the service set the refused values on it
                add_service_errors(form, exc)
            else:
                note = " Every image was re-assigned to train or valid." if resplit else ""
                messages.success(request, f"Settings saved.{note}")
                return redirect(project)
    else:
        form = ProjectSettingsForm.for_project(project)
    return render_page(
        request,
        "reviewapp/project_settings.html",
        "project-settings-form",
        _settings_context(project, form=form),
    )


def _settings_context(project, *, form=None, policy_form=None) -> dict:
    return {
        "project": project,
        "form": form or ProjectSettingsForm.for_project(project),
        "datablock_fields": DATABLOCK_FIELDS,
        "policy_form": policy_form or RetrainPolicyForm.for_project(project),
        "policy_status": policy.policy_status(project=project),
    }


@require_POST
@login_required
def project_retrain_policy(request, slug):
    """Save the retraining policy; the section shows where the project stands against it."""
    project = project_for(request, slug, "reviewapp.change_project")
    form = RetrainPolicyForm(request.POST)
    if form.is_valid():
        try:
            policy.policy_update(project=project, **form.cleaned_data)
        except ValidationError as exc:
            project.refresh_from_db()
            add_service_errors(form, exc)
        else:
            state = "on" if project.retrain_policy_on else "off"
            messages.success(request, f"Retraining policy saved: it is {state}.")
            return redirect("project-settings", slug=project.slug)
    return render_page(
        request,
        "reviewapp/project_settings.html",
        "retrain-policy",
        _settings_context(project, policy_form=form),
        status=400,
    )

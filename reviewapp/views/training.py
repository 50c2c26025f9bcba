"""Training runs: start one, follow its live progress, cancel it."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from .. import selectors, training
from ..backbones import present_architectures
from ..enqueue import QueueUnavailable
from ..forms import TrainingRunForm
from ..models import Project, TrainingRun
from .common import (
    act_then_show_status,
    add_service_errors,
    login_required,
    project_for,
    render_page,
    require_perm,
)

__all__ = [
    "training_run_cancel",
    "training_run_retrain",
    "training_run_detail",
    "training_run_list",
    "training_run_start",
]

QUEUE_DOWN = "The job queue is unavailable; try again. The run was not started."


def _runs_context(request, project: Project, form: TrainingRunForm | None) -> dict:
    training.training_runs_reap(project=project)
    return {
        "project": project,
        "form": form,
        "runs": selectors.training_run_list(project=project),
        "active": selectors.training_run_active(project=project),
    }


@require_GET
@login_required
def training_run_list(request, slug):
    project = project_for(request, slug, "reviewapp.view_trainingrun")
    form = None
    if request.user.has_perm("reviewapp.add_trainingrun"):
        form = TrainingRunForm.for_config(
            training.train_config_for(project), present=present_architectures()
        )
    context = _runs_context(request, project, form)
    return render_page(request, "reviewapp/training_runs.html", "training-run-table", context)


@require_http_methods(["GET", "POST"])
@login_required
def training_run_start(request, slug):
    project = project_for(request, slug, "reviewapp.add_trainingrun")
    if request.method == "GET":
        return redirect("training-run-list", slug=project.slug)
    form = TrainingRunForm(request.POST, present=present_architectures())
    if form.is_valid():
        try:
            run = training.training_run_create(
                project=project,
                actor=request.user,
                config=form.cleaned_data,
                fail_if_unqueued=True,
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        except QueueUnavailable:
            form.add_error(None, QUEUE_DOWN)
        else:
            # No "queued" flash: it would go stale; the run page's live status says it.
            if request.htmx:
                return HttpResponseClientRedirect(run.get_absolute_url())
            return redirect(run)
    # 200, not 400: htmx swaps only successful responses, and the form shows its errors.
    context = _runs_context(request, project, form)
    return render_page(request, "reviewapp/training_runs.html", "training-form", context)


def _run_or_404(pk: int) -> TrainingRun:
    return get_object_or_404(
        TrainingRun.objects.defer("snapshot").select_related("project", "created_by"), pk=pk
    )


def _run_context(run: TrainingRun) -> dict:
    version = getattr(run, "version", None) if run.status == TrainingRun.Status.SUCCEEDED else None
    ahead = []
    if run.status == TrainingRun.Status.PENDING:
        ahead = [r for r in selectors.training_run_active(project=run.project) if r.pk < run.pk]
    return {"project": run.project, "run": run, "version": version, "ahead": ahead}


@require_GET
@login_required
def training_run_detail(request, pk):
    require_perm(request.user, "reviewapp.view_trainingrun")
    run = _run_or_404(pk)
    if run.status == TrainingRun.Status.RUNNING and training.training_runs_reap(
        project=run.project
    ):
        run = _run_or_404(pk)
    return render_page(request, "reviewapp/training_run.html", "run-status", _run_context(run))


@require_POST
@login_required
def training_run_cancel(request, pk):
    require_perm(request.user, "reviewapp.change_trainingrun")
    run = _run_or_404(pk)
    return act_then_show_status(
        request,
        lambda: training.training_run_cancel(run=run, actor=request.user),
        done=f"Run #{run.pk}: cancel requested.",
        obj=run,
        context=lambda: _run_context(_run_or_404(pk)),
        page="reviewapp/training_run.html",
        partial="run-status",
    )


@require_POST
@login_required
def training_run_retrain(request, slug):
    """Train again on the data as reviewed now, with the settings of the last successful run."""
    project = project_for(request, slug, "reviewapp.add_trainingrun")
    config = training.last_successful_config(project)
    try:
        run = training.training_run_create(
            project=project,
            actor=request.user,
            config=config,
            trigger=TrainingRun.Trigger.RETRAIN,
            reason="retrain with the last successful run's settings",
            fail_if_unqueued=True,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("training-run-list", slug=project.slug)
    except QueueUnavailable:
        messages.error(request, QUEUE_DOWN)
        return redirect("training-run-list", slug=project.slug)
    return redirect(run)

"""Approval and rollout pages: approve or reject a version, move it through the stages, roll back.

Only approvers (``reviewapp.approve_model``) see or use these pages; reviewers read a
version's timeline on the version page.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from .. import rollout, second_opinion
from ..forms import RolloutPolicyForm
from ..models import ModelVersion, Project, RolloutEvent
from ..rollout import RolloutConflict, RolloutError
from ..templatetags.charts import pct
from .common import (
    add_service_errors,
    is_htmx,
    login_required,
    project_for,
    render_page,
    require_perm,
)
from .versions import COMPARED_METRICS, metric_delta, metric_shown

__all__ = [
    "model_version_approval",
    "model_version_stage",
    "project_rollback",
    "project_rollout",
    "project_rollout_policy",
]

PERM = "reviewapp.approve_model"
Stage = ModelVersion.Stage
RECENT_EVENTS = 30


# Forms: page-local, as only these views use them ----------------------------------------


def _seen(version: ModelVersion) -> str:
    """The state a form was rendered for, so a change made meanwhile is caught (409)."""
    return f"{version.stage}:{version.traffic_share}"


def _apply_seen(version: ModelVersion, seen: str) -> None:
    stage, _, share = (seen or "").partition(":")
    if stage in Stage.values and share.isdigit():
        version.stage, version.traffic_share = stage, int(share)


class ApprovalForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("approve", "Approve"), ("reject", "Reject")], widget=forms.HiddenInput
    )
    note = forms.CharField(
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why you approve or reject it; it goes into the version's timeline.",
    )
    # Both reasons are checked by the service; the page shows each only when it is needed.
    override_reason = forms.CharField(
        required=False,
        max_length=5000,
        label="Override reason",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required: too few of its flagged images were reviewed. Say why it may be "
        "approved anyway.",
    )
    accuracy_reason = forms.CharField(
        required=False,
        max_length=5000,
        label="Reason to approve below live's accuracy",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required: its validation accuracy is below the live version's by more than "
        "the project's tolerance.",
    )
    seen = forms.CharField(required=False, widget=forms.HiddenInput)


class StageForm(forms.Form):
    stage = forms.ChoiceField(choices=[(s, s) for s in (Stage.SHADOW, Stage.LIMITED, Stage.LIVE)])
    share = forms.IntegerField(required=False, min_value=1, max_value=100)
    reason = forms.CharField(required=False, max_length=5000)
    seen = forms.CharField(required=False)
    next = forms.CharField(required=False, max_length=2000)
    # Only a POST with confirm=1 (the confirmation's own button) moves traffic.
    confirm = forms.BooleanField(required=False)


class RollbackForm(forms.Form):
    reason = forms.CharField(required=False, max_length=5000)
    seen = forms.CharField(required=False, max_length=100)
    next = forms.CharField(required=False, max_length=2000)
    confirm = forms.BooleanField(required=False)


def _next_url(request, fallback: str, target: str | None = None) -> str:
    if target is None:
        target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return fallback


def _version_or_404(pk: int) -> ModelVersion:
    return get_object_or_404(
        ModelVersion.objects.select_related("project", "run").defer("run__snapshot"), pk=pk
    )


def _timeline(version: ModelVersion) -> list[RolloutEvent]:
    return rollout.rollout_event_list(version=version)


# The approval page ----------------------------------------------------------------------


def _approval_context(version: ModelVersion, form: ApprovalForm) -> dict:
    summary = rollout.approval_summary(version=version)
    metric_rows = []
    for row in summary.metrics:
        label, kind, better = COMPARED_METRICS.get(row.name, (row.name, "count", 0))
        delta, tone = metric_delta(row.live_value, row.value, kind, better)
        metric_rows.append(
            (label, metric_shown(row.value, kind), metric_shown(row.live_value, kind), delta, tone)
        )
    class_rows = []
    for row in summary.classes:
        delta, tone = metric_delta(row.a_error, row.b_error, "percent", -1)
        class_rows.append((row, delta, tone))
    live = summary.live
    return {
        "project": version.project,
        "version": version,
        "summary": summary,
        "coverage_text": pct(summary.coverage, 0),
        # Second opinions on this version's queue, and on the whole project.
        "agreement": second_opinion.agreement_rate(project=version.project, version=version),
        "project_agreement": second_opinion.agreement_rate(project=version.project),
        "required_text": pct(summary.required_coverage, 0),
        "coverage_percent": round(100 * summary.coverage),
        "required_percent": round(100 * summary.required_coverage),
        "metric_rows": metric_rows,
        "class_rows": class_rows,
        "form": form,
        "events": _timeline(version),
        "steps": rollout.next_steps(version=version, live=live),
        "seen": _seen(version),
        "can_decide": version.awaits_approval,
        "can_reject": version.stage in (Stage.CANDIDATE, Stage.APPROVED, Stage.SHADOW),
    }


@require_http_methods(["GET", "POST"])
@login_required
def model_version_approval(request, pk):
    require_perm(request.user, PERM)
    version = _version_or_404(pk)
    status = 200
    if request.method == "POST":
        form = ApprovalForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            _apply_seen(version, data["seen"])
            try:
                if data["action"] == "approve":
                    rollout.version_approve(
                        version=version,
                        actor=request.user,
                        note=data["note"],
                        override_reason=data["override_reason"],
                        accuracy_reason=data["accuracy_reason"],
                    )
                else:
                    rollout.version_reject(version=version, actor=request.user, note=data["note"])
            except RolloutError as exc:
                form.add_error(None, str(exc))
                status = 409 if isinstance(exc, RolloutConflict) else 400
                version = _version_or_404(pk)
            else:
                done = "approved" if data["action"] == "approve" else "rejected"
                messages.success(request, f"{version.label} {done}.")
                url = reverse("model-version-approval", kwargs={"pk": version.pk})
                return HttpResponseClientRedirect(url) if is_htmx(request) else redirect(url)
        else:
            status = 400
    else:
        form = ApprovalForm(initial={"seen": _seen(version)})
    context = _approval_context(version, form)
    return render_page(
        request, "reviewapp/model_version_approval.html", "approval-form", context, status=status
    )


def _render_confirm(request, context: dict, *, status: int):
    """The confirmation of a traffic move: a page, or its partial for the dialog."""
    return render_page(
        request, "reviewapp/rollout_confirm.html", "rollout-confirm", context, status=status
    )


def _moved(request, next_url: str):
    return HttpResponseClientRedirect(next_url) if is_htmx(request) else redirect(next_url)


UNCONFIRMED = "Nothing has moved yet: read what will happen, then confirm."


@require_http_methods(["GET", "POST"])
@login_required
def model_version_stage(request, pk):
    """Confirm, then move a version to shadow, limited (a share) or live.

    A GET (the stage buttons) or a POST without ``confirm`` shows what the move will do, worked
    out from the current state; only the confirmation's own POST moves traffic.
    """
    require_perm(request.user, PERM)
    version = _version_or_404(pk)
    fallback = reverse("project-rollout", kwargs={"slug": version.project.slug})
    posted = request.method == "POST"
    form = StageForm(request.POST if posted else request.GET)
    if not form.is_valid():
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        messages.error(request, f"The stage change was not understood ({problems}).")
        return redirect(_next_url(request, fallback, request.POST.get("next", "")))
    data = form.cleaned_data
    next_url = _next_url(request, fallback, data["next"])
    error, status = "", 200
    if posted and data["confirm"]:
        _apply_seen(version, data["seen"])
        try:
            rollout.version_stage_set(
                version=version,
                stage=data["stage"],
                share=data["share"],
                actor=request.user,
                reason=data["reason"],
            )
        except RolloutError as exc:
            error, status = str(exc), 409 if isinstance(exc, RolloutConflict) else 400
            version = _version_or_404(pk)
        else:
            where = f"limited at {version.traffic_share}%" if version.stage == Stage.LIMITED else ""
            messages.success(
                request, f"{version.label} is now {where or version.get_stage_display().lower()}."
            )
            return _moved(request, next_url)
    elif posted:
        status = 400
    context = {
        "project": version.project,
        "version": version,
        "action": reverse("model-version-stage", kwargs={"pk": version.pk}),
        "cancel_url": next_url,
        "reason": data["reason"],
        "error": error,
        "notice": UNCONFIRMED if posted and not data["confirm"] else "",
    }
    if not posted and data["seen"] and data["seen"] != _seen(version):
        context["notice"] = (
            f"{version.label} changed since that page was shown: it is now "
            f"{version.get_stage_display().lower()}. This is what the move would do now."
        )
    try:
        plan = rollout.stage_change_plan(version=version, stage=data["stage"], share=data["share"])
    except RolloutError as exc:
        context.update(title=f"{version.label} cannot move", error=error or str(exc))
        return _render_confirm(request, context, status=status if posted else 400)
    share = plan.share if plan.stage == Stage.LIMITED else ""
    context.update(
        can_confirm=True,
        title=plan.title,
        summary=plan.summary,
        needs_reason=plan.needs_reason,
        skipped_text=plan.skipped_text,
        hidden=[("stage", plan.stage), ("share", share), ("seen", _seen(version))],
        confirm_label={
            Stage.SHADOW: "Start shadow",
            Stage.LIMITED: f"Send {plan.share}% to {version.label}",
            Stage.LIVE: f"Make {version.label} live",
        }[plan.stage],
    )
    return _render_confirm(request, context, status=status)


# The project's rollout page -------------------------------------------------------------


def _traffic(live: ModelVersion | None, limited: ModelVersion | None) -> list[dict]:
    """The traffic split as bar segments: the limited share (unless paused), live the rest."""
    limited_share = limited.traffic_share if limited and not limited.paused_reason else 0
    segments, x = [], 0
    if limited_share:
        segments.append({"label": limited.label, "share": limited_share, "x": 0, "kind": "limited"})
        x = limited_share
    if live:
        segments.append({"label": live.label, "share": 100 - x, "x": x, "kind": "live"})
    return segments


def _rollout_context(project: Project, policy_form: RolloutPolicyForm) -> dict:
    versions = list(rollout.rollout_version_list(project=project))
    live = next((v for v in versions if v.stage == Stage.LIVE), None)
    limited = next((v for v in versions if v.stage == Stage.LIMITED), None)
    rows = []
    for version in versions:
        version.project = project  # one project for all, no query each
        guardrails = None
        if version.stage in rollout.IN_ROLLOUT:
            guardrails = rollout.guardrail_status(version=version)
        rows.append(
            {
                "version": version,
                "guardrails": guardrails,
                "steps": rollout.next_steps(version=version, live=live),
                "seen": _seen(version),
            }
        )
    events = list(
        RolloutEvent.objects.filter(version__project=project)
        .select_related("actor", "version")
        .order_by("-created_at", "-id")[:RECENT_EVENTS]
    )
    return {
        "project": project,
        "rows": rows,
        "live": live,
        "limited": limited,
        "traffic": _traffic(live, limited),
        "can_roll_back": limited is not None or live is not None,
        "policy_form": policy_form,
        "events": events,
        "min_sample": rollout.MIN_GUARDRAIL_SAMPLE,
        "window": rollout.GUARDRAIL_WINDOW,
    }


@require_GET
@login_required
def project_rollout(request, slug):
    project = project_for(request, slug, PERM)
    context = _rollout_context(project, RolloutPolicyForm.for_project(project))
    return render_page(request, "reviewapp/project_rollout.html", "rollout-versions", context)


@require_POST
@login_required
def project_rollout_policy(request, slug):
    project = project_for(request, slug, PERM)
    form = RolloutPolicyForm(request.POST)
    if form.is_valid():
        try:
            rollout.project_policy_update(project=project, **form.cleaned_data)
        except RolloutError as exc:
            form.add_error(None, str(exc))
        except ValidationError as exc:  # the model's own checks
            add_service_errors(form, exc)
        else:
            messages.success(request, "Rollout policy saved.")
            url = reverse("project-rollout", kwargs={"slug": project.slug})
            return HttpResponseClientRedirect(url) if is_htmx(request) else redirect(url)
    project.refresh_from_db()
    context = _rollout_context(project, form)
    return render_page(
        request, "reviewapp/project_rollout.html", "rollout-policy-form", context, status=400
    )


@require_http_methods(["GET", "POST"])
@login_required
def project_rollback(request, slug):
    """Confirm, then return all traffic to the previous live version (see the stage view)."""
    project = project_for(request, slug, PERM)
    fallback = reverse("project-rollout", kwargs={"slug": project.slug})
    posted = request.method == "POST"
    form = RollbackForm(request.POST if posted else request.GET)
    data = form.cleaned_data if form.is_valid() else {"reason": "", "seen": "", "next": ""}
    next_url = _next_url(request, fallback, data["next"])
    error, status = "", 200
    if posted and data.get("confirm"):
        try:
            events = rollout.project_rollback(
                project=project, actor=request.user, reason=data["reason"], seen=data["seen"]
            )
        except RolloutError as exc:
            error, status = str(exc), 409 if isinstance(exc, RolloutConflict) else 400
        else:
            live = rollout.version_live(project=project)
            taken = events[0].version.label
            serving = f"{live.label} serves all traffic" if live else "no version is live"
            messages.success(request, f"Rolled back {taken}: {serving}.")
            return _moved(request, next_url)
    elif posted:
        status = 400
    context = {
        "project": project,
        "action": reverse("project-rollback", kwargs={"slug": project.slug}),
        "cancel_url": next_url,
        "reason": data["reason"],
        "error": error,
        "notice": UNCONFIRMED if posted and not data.get("confirm") else "",
    }
    try:
        plan = rollout.rollback_plan(project=project)
    except RolloutError as exc:
        context.update(title="Nothing to roll back", error=error or str(exc))
        return _render_confirm(request, context, status=status if posted else 400)
    context.update(
        can_confirm=True,
        title="Roll back?",
        summary=plan.summary,
        hidden=[("seen", plan.seen)],
        confirm_label="Roll back",
        danger=True,
    )
    return _render_confirm(request, context, status=status)

"""Serving pages: predict in the browser, client tokens, the prediction review queue and
the monitoring page."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import serving
from ..models import Category, ClientToken, Prediction, Project
from ..templatetags.serving_charts import (
    bar_chart_svg,
    grouped_bar_chart_svg,
    rate_chart_svg,
)
from .common import is_htmx, login_required, project_for, render_page, require_perm

__all__ = [
    "client_token_create",
    "client_token_revoke",
    "client_tokens",
    "prediction_decide",
    "prediction_file",
    "prediction_review",
    "project_monitoring",
    "project_predict",
]

PREDICT_PERM = "reviewapp.view_project"
CLIENTS_PERM = "reviewapp.approve_model"  # approvers and admins manage client tokens
DECIDE_PERM = "reviewapp.change_image"
ADD_PERM = "reviewapp.add_image"
MONITOR_PERM = "reviewapp.view_modelversion"
DECIDE_ACTIONS = ("confirm", "correct", "add")


class ClientTokenForm(forms.Form):
    client = forms.CharField(
        max_length=100,
        label="Client",
        help_text="Who will call the predict API with it, e.g. 'shop-frontend'.",
    )


# Predict --------------------------------------------------------------------------------


def _bars(prediction: Prediction) -> list[tuple[str, float]]:
    pairs = zip(prediction.version.vocab, prediction.probabilities, strict=False)
    return sorted(pairs, key=lambda pair: -pair[1])


@require_http_methods(["GET", "POST"])
@login_required
def project_predict(request, slug):
    """The lesson's classifier app: upload or drop an image, see the label and its odds."""
    project = project_for(request, slug, PREDICT_PERM)
    versions = serving.serving_versions(project=project)
    context = {"project": project, "versions": versions, "prediction": None, "error": ""}
    if request.method == "GET":
        return render(request, "reviewapp/predict.html", context)
    status = 200
    upload = request.FILES.get("image")
    if upload is None:
        context["error"], status = "Choose an image to classify.", 400
    else:
        data = upload.read(settings.LOUPE_MAX_FILE_BYTES + 1)
        try:
            (prediction,) = serving.predictions_create(
                project=project, images=[(upload.name, data, upload.size)], user=request.user
            )
        except ValidationError as exc:
            context["error"], status = " ".join(exc.messages), 400
        except (serving.NoLiveModel, serving.ModelUnavailable) as exc:
            # 409: the page works, the project is not in a state to answer.
            context["error"], status = str(exc), 409
        else:
            context.update(prediction=prediction, bars=_bars(prediction))
    return render_page(request, "reviewapp/predict.html", "predict-result", context, status=status)


# Client tokens --------------------------------------------------------------------------


def _render_clients(request, project: Project, form, *, new_key="", new_token=None, status=200):
    context = {
        "project": project,
        "tokens": serving.client_token_list(project=project),
        "form": form,
        "new_key": new_key,
        "new_token": new_token,
    }
    response = render(request, "reviewapp/client_tokens.html", context, status=status)
    if new_key:
        response["Cache-Control"] = "no-store"  # the key is on this page only
    return response


@require_GET
@login_required
def client_tokens(request, slug):
    project = project_for(request, slug, CLIENTS_PERM)
    return _render_clients(request, project, ClientTokenForm())


@require_POST
@login_required
def client_token_create(request, slug):
    project = project_for(request, slug, CLIENTS_PERM)
    form = ClientTokenForm(request.POST)
    if not form.is_valid():
        return _render_clients(request, project, form, status=400)
    try:
        token, key = serving.client_token_create(
            project=project, client=form.cleaned_data["client"], actor=request.user
        )
    except ValidationError as exc:
        form.add_error("client", exc.messages)
        return _render_clients(request, project, form, status=400)
    return _render_clients(request, project, ClientTokenForm(), new_key=key, new_token=token)


@require_POST
@login_required
def client_token_revoke(request, slug, pk):
    project = project_for(request, slug, CLIENTS_PERM)
    token = get_object_or_404(ClientToken, project=project, pk=pk)
    serving.client_token_revoke(token=token, actor=request.user)
    messages.success(request, f"Client token '{token.client}' ({token.prefix}…) revoked.")
    return redirect("client-tokens", slug=project.slug)


# The prediction review queue --------------------------------------------------------------


@require_GET
@login_required
def prediction_review(request, slug):
    project = project_for(request, slug, PREDICT_PERM)
    to_review = serving.predictions_to_review(project=project)
    disagreements = serving.disagreements_to_review(project=project)
    # A flagged prediction a shadow disagreed with is shown once, with the shadow's answer.
    shadow_of = {d.served.pk: d for d in disagreements}
    for prediction in to_review:
        prediction.shadow = shadow_of.pop(prediction.pk, None)
    context = {
        "project": project,
        "to_review": to_review,
        "disagreements": [d for d in disagreements if d.served.pk in shadow_of],
        "categories": list(project.categories.all()),
        "can_decide": request.user.has_perm(DECIDE_PERM),
        "can_add": request.user.has_perm(ADD_PERM),
    }
    return render(request, "reviewapp/prediction_review.html", context)


@require_GET
@login_required
def prediction_file(request, pk):
    require_perm(request.user, PREDICT_PERM)
    prediction = get_object_or_404(Prediction.objects.only("id", "file"), pk=pk)
    from django.core.files.storage import default_storage

    try:
        handle = default_storage.open(prediction.file, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise Http404("The stored image is missing.") from exc
    return FileResponse(handle)


def _decide(request, prediction: Prediction) -> str:
    """Apply the reviewer's action; returns what was done, for the message."""
    action = request.POST.get("action", "")
    if action not in DECIDE_ACTIONS:
        raise ValidationError(f"Unknown action '{action}'; use confirm, correct or add.")
    if action == "add":
        require_perm(request.user, ADD_PERM)
    project = prediction.project
    if action == "confirm":
        label = project.categories.filter(name=prediction.label).first()
        if label is None:
            raise ValidationError(
                f"The class '{prediction.label}' no longer exists in this project; correct the "
                "prediction instead."
            )
    else:
        try:
            label = project.categories.get(pk=int(request.POST.get("label", "")))
        except (ValueError, Category.DoesNotExist):
            raise ValidationError("Pick the image's class from the menu.") from None
    serving.prediction_review(
        prediction=prediction, label=label, actor=request.user, add_to_dataset=action == "add"
    )
    done = {"confirm": "confirmed", "correct": "corrected", "add": "added to the dataset"}[action]
    return f"Prediction #{prediction.pk} {done} as '{label.name}'."


@require_POST
@login_required
def prediction_decide(request, pk):
    require_perm(request.user, DECIDE_PERM)
    prediction = get_object_or_404(
        Prediction.objects.select_related("project", "version"), pk=pk, is_shadow=False
    )
    status, error, done = 200, "", ""
    try:
        done = _decide(request, prediction)
    except ValidationError as exc:
        status, error = 400, " ".join(exc.messages)
    if not is_htmx(request):
        (messages.error if error else messages.success)(request, error or done)
        return redirect("prediction-review", slug=prediction.project.slug)
    prediction.refresh_from_db()
    context = {
        "project": prediction.project,
        "p": prediction,
        "categories": list(prediction.project.categories.all()),
        "can_decide": True,
        "can_add": request.user.has_perm(ADD_PERM),
        "error": error,
        "done": done,
    }
    return render_page(
        request, "reviewapp/prediction_review.html", "prediction-card", context, status=status
    )


# Monitoring --------------------------------------------------------------------------------


def _monitoring_charts(summary: serving.Monitoring) -> dict:
    fmt = "%m-%d %Hh" if summary.by_hour else "%m-%d"
    labels = [p.start.strftime(fmt) for p in summary.points]
    bins = serving.HISTOGRAM_BINS
    charts = {
        "volume": bar_chart_svg(
            [p.total for p in summary.points], labels, title="Served predictions"
        ),
        "rates": rate_chart_svg(
            [
                ("Low confidence", [p.low_confidence_rate for p in summary.points]),
                ("Out of domain", [p.ood_rate for p in summary.points]),
            ],
            labels,
            title="Low-confidence and out-of-domain rates",
        ),
        "histogram": bar_chart_svg(
            summary.histogram,
            [f"{k / bins:.1f}" for k in range(bins)],
            title="Confidence histogram",
        ),
    }
    if summary.class_mix:
        charts["mix"] = grouped_bar_chart_svg(
            [
                ("Served", [m.served for m in summary.class_mix]),
                ("Training", [m.training for m in summary.class_mix]),
            ],
            [m.name for m in summary.class_mix],
            title="Predicted class mix against the training mix",
            percent=True,
        )
    return charts


@require_GET
@login_required
def project_monitoring(request, slug):
    project = project_for(request, slug, MONITOR_PERM)
    try:
        days = min(90, max(1, int(request.GET.get("days", 14))))
    except ValueError:
        days = 14
    summary = serving.monitoring_summary(project=project, days=days)
    versions = serving.serving_versions(project=project)
    for version in versions.all:
        version.ood_description = serving.OOD_METHOD_DESCRIPTIONS.get(
            version.ood_method, version.ood_method
        )
    context = {
        "project": project,
        "summary": summary,
        "days": days,
        "charts": _monitoring_charts(summary) if summary.total else {},
        "versions": versions,
    }
    return render(request, "reviewapp/monitoring.html", context)

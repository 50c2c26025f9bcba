"""Model versions: the list, one version's page, and two versions side by side."""

from dataclasses import dataclass
from urllib.parse import urlencode

from django import forms
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from .. import labeling, model_files, rollout, selectors, serving
from ..models import Category, Image, ModelVersion, Project
from ..templatetags.charts import pct, shade_level
from .common import is_htmx, login_required, project_for, render_page, require_perm

__all__ = [
    "confusion_cell_url",
    "model_version_compare",
    "model_version_detail",
    "model_version_list",
    "model_version_onnx",
    "model_version_onnx_spec",
]

PERM = "reviewapp.view_modelversion"
GALLERY_PAGE_SIZE = 48
SHADE_LEVELS = 6


def confusion_cell_url(version: ModelVersion, *, label: int, predicted: int) -> str:
    """Where a confusion-matrix cell leads: the review queue for that (actual, predicted) cell.

    The matrix counts the validation split, so the link shows that split too.
    """
    from .review import review_url

    return review_url(
        version.project,
        version=version.pk,
        label=label,
        predicted=predicted,
        split=Image.Split.VALID,
    )


# Forms: page-local, as only these views use them ----------------------------------------


class VersionPairForm(forms.Form):
    """Two versions of one project to compare; the list page's GET form."""

    a = forms.TypedChoiceField(coerce=int, label="Compare")
    b = forms.TypedChoiceField(coerce=int, label="with")

    def __init__(self, *args, versions: list[ModelVersion], **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(v.pk, f"{v.label} · {v.get_stage_display()}") for v in versions]
        self.fields["a"].choices = self.fields["b"].choices = choices
        if len(versions) >= 2:  # the previous version against the newest, by default
            self.fields["a"].initial, self.fields["b"].initial = versions[1].pk, versions[0].pk

    def clean(self):
        data = super().clean()
        if data.get("a") is not None and data.get("a") == data.get("b"):
            raise forms.ValidationError("Pick two different versions.")
        return data


SPLIT_CHOICES = [
    ("", "Train and valid"),
    (Image.Split.VALID, "Valid only"),
    (Image.Split.TRAIN, "Train only (in-sample)"),
]


class GalleryFilterForm(forms.Form):
    """The top-loss gallery's filters; a bad value falls back to 'all' rather than failing."""

    label = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Given")
    predicted = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label="Predicted"
    )
    split = forms.ChoiceField(required=False, choices=SPLIT_CHOICES, label="Split")
    offset = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def __init__(self, *args, categories: list[Category], **kwargs):
        super().__init__(*args, auto_id="gallery-%s", **kwargs)
        options = [(str(c.pk), c.name) for c in categories]
        self.fields["label"].choices = [("", "Any class"), *options]
        self.fields["predicted"].choices = [("", "Any class"), *options]

    def filters(self) -> dict:
        self.is_valid()  # cleaned_data then holds only the fields that passed
        data = self.cleaned_data
        return {
            "label": data.get("label"),
            "predicted": data.get("predicted"),
            "split": data.get("split") or "",
            "offset": data.get("offset") or 0,
        }


# The list ---------------------------------------------------------------------------


@require_GET
@login_required
def model_version_list(request, slug):
    project = project_for(request, slug, PERM)
    versions = list(selectors.model_version_list(project=project))
    wants_compare = "a" in request.GET or "b" in request.GET
    form = VersionPairForm(request.GET if wants_compare else None, versions=versions)
    if wants_compare and form.is_valid():
        url = reverse("model-version-compare", kwargs={"pk": form.cleaned_data["a"]})
        return redirect(f"{url}?{urlencode({'with': form.cleaned_data['b']})}")
    rows = [
        (version, versions[i + 1] if i + 1 < len(versions) else None)
        for i, version in enumerate(versions)
    ]
    context = {"project": project, "rows": rows, "form": form}
    status = 400 if form.is_bound else 200
    return render(request, "reviewapp/model_version_list.html", context, status=status)


# One version -------------------------------------------------------------------------


@dataclass
class MatrixCell:
    count: int
    level: int  # shading bucket, 0 (none) to SHADE_LEVELS - 1
    correct: bool  # on the diagonal
    predicted: str
    url: str | None  # None when a class no longer exists in the project


@dataclass
class MatrixRow:
    name: str
    support: int
    cells: list[MatrixCell]


def _confusion_rows(version: ModelVersion, by_name: dict[str, Category]) -> list[MatrixRow]:
    vocab, matrix = version.vocab, version.confusion_matrix or []
    if not matrix:
        return []
    largest = max((n for row in matrix for n in row), default=0)
    rows = []
    for i, actual in enumerate(vocab):
        counts = matrix[i] if i < len(matrix) else []
        cells = []
        for j, predicted in enumerate(vocab):
            count = counts[j] if j < len(counts) else 0
            given, guessed = by_name.get(actual), by_name.get(predicted)
            url = None
            if given and guessed:
                url = confusion_cell_url(version, label=given.pk, predicted=guessed.pk)
            cells.append(
                MatrixCell(count, shade_level(count, largest, SHADE_LEVELS), i == j, predicted, url)
            )
        rows.append(MatrixRow(actual, sum(counts), cells))
    return rows


def _class_rows(version: ModelVersion, by_name: dict[str, Category]) -> list[dict]:
    rows = []
    for entry in version.metrics.get("per_class") or []:
        recall = entry.get("recall")
        rows.append(
            {
                **entry,
                "error": None if recall is None else 1 - recall,
                "category": by_name.get(entry.get("name")),
            }
        )
    return rows


def _config_rows(version: ModelVersion) -> list[tuple[str, str]]:
    """The training settings a person asks about, in words."""
    config, metrics = version.config or {}, version.metrics or {}
    resize = config.get("resize_method", "")
    resize_label = dict(Project.ResizeMethod.choices).get(resize, resize).split(" (", 1)[0]
    if resize == Project.ResizeMethod.RANDOM_RESIZED_CROP and config.get("min_scale"):
        resize_label += f" (min scale {config['min_scale']})"
    if config.get("augment"):
        augment = "On: " + ", ".join(
            [
                "flips" + (" incl. vertical" if config.get("flip_vert") else "")
                if config.get("do_flip", True)
                else "no flips",
                f"rotate ≤{config.get('max_rotate', '?')}°",
                f"zoom ≤{config.get('max_zoom', '?')}×",
                f"lighting {config.get('max_lighting', '?')}",
                f"warp {config.get('max_warp', '?')}",
            ]
        )
    else:
        augment = "Off"
    epochs = str(config.get("epochs", "—"))
    if version.pretrained and config.get("freeze_epochs"):
        epochs += f" + {config['freeze_epochs']} with the pretrained body frozen"
    used_lr = metrics.get("learning_rate")
    if config.get("learning_rate") is None:
        lr = f"{used_lr:.2e} (lr finder's suggestion)" if used_lr else "lr finder"
    else:
        lr = f"{config['learning_rate']:g}"
    size = config.get("image_size")
    return [
        ("Architecture", config.get("architecture", "—")),
        ("Image size", f"{size} × {size} px" if size else "—"),
        ("Resize", resize_label or "—"),
        ("Augmentation", augment),
        ("Epochs", epochs),
        ("Learning rate", lr),
        ("Batch size", str(config.get("batch_size", "—"))),
        ("Seed", str(config.get("seed", "—"))),
        ("Pretrained weights", f"{config.get('pretrained', '—')} (setting)"),
        ("Device", metrics.get("device") or "—"),
    ]


def _version_or_404(pk: int) -> ModelVersion:
    # The run's data snapshot can hold 100,000 rows; the page never shows it.
    return get_object_or_404(
        ModelVersion.objects.select_related("project", "run").defer("run__snapshot"), pk=pk
    )


@require_GET
@login_required
def model_version_detail(request, pk):
    require_perm(request.user, PERM)
    version = _version_or_404(pk)
    project = version.project
    categories = list(project.categories.all())
    by_name = {c.name: c for c in categories}
    by_id = {c.pk: c for c in categories}

    form = GalleryFilterForm(request.GET, categories=categories)
    filters = form.filters()
    offset = filters.pop("offset")
    scores = selectors.image_score_list(version=version, **filters)
    # COUNT over an index on (version, ...): cheap, and it tells a person how deep to dig.
    total = scores.count()
    page = list(scores[offset : offset + GALLERY_PAGE_SIZE])
    context = {
        "project": project,
        "version": version,
        "form": form,
        "scores": page,
        "total": total,
        "offset": offset,
        "first_shown": offset + 1 if page else 0,
        "last_shown": offset + len(page),
        "next_offset": offset + GALLERY_PAGE_SIZE if offset + GALLERY_PAGE_SIZE < total else None,
        "previous_offset": max(0, offset - GALLERY_PAGE_SIZE) if offset else None,
        "filter_label": by_id.get(filters["label"]),
        "filter_predicted": by_id.get(filters["predicted"]),
        "filter_split": filters["split"],
        "page_size": GALLERY_PAGE_SIZE,
    }
    if not is_htmx(request):  # the gallery partial needs none of this
        context |= {
            "matrix": _confusion_rows(version, by_name),
            "class_rows": _class_rows(version, by_name),
            "config_rows": _config_rows(version),
            "epochs": version.metrics.get("epochs") or [],
            "rollout_events": rollout.rollout_event_list(version=version),
            "suggestion_counts": labeling.suggestion_counts(version),
            "serving_runtime": serving.runtime_for(version),
            "onnx_diff": f"{version.onnx_max_prob_diff:.1e}"
            if version.onnx_max_prob_diff is not None
            else "",
            "previous": project.model_versions.filter(number__lt=version.number)
            .order_by("-number")
            .first(),
        }
    return render_page(request, "reviewapp/model_version.html", "version-gallery", context)


@require_GET
@login_required
def model_version_onnx(request, pk):
    """The version's ONNX model, to run without Loupe."""
    require_perm(request.user, PERM)
    try:
        found = model_files.onnx_download(version=_version_or_404(pk))
    except model_files.ModelFileMissing as exc:
        return HttpResponse(str(exc), status=404, content_type="text/plain; charset=utf-8")
    response = FileResponse(
        open(found.path, "rb"),  # noqa: SIM115 - the response closes it
        as_attachment=True,
        filename=found.filename,
        content_type="application/octet-stream",
    )
    response["X-Loupe-SHA256"] = found.sha256
    return response


@require_GET
@login_required
def model_version_onnx_spec(request, pk):
    """The ONNX model's preprocessing spec (JSON): size, resize, normalisation, classes."""
    require_perm(request.user, PERM)
    try:
        filename, text = model_files.onnx_spec_download(version=_version_or_404(pk))
    except model_files.ModelFileMissing as exc:
        return HttpResponse(str(exc), status=404, content_type="text/plain; charset=utf-8")
    response = HttpResponse(text, content_type="application/json")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


# Two versions --------------------------------------------------------------------------

# name -> (label, format, which way is better: +1 higher, -1 lower, 0 neither)
COMPARED_METRICS = {
    "accuracy": ("Accuracy", "percent", 1),
    "error_rate": ("Error rate", "percent", -1),
    "n_train": ("Training images", "count", 0),
    "n_valid": ("Validation images", "count", 0),
    "duration_s": ("Training time", "seconds", 0),
}


def metric_shown(value, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "percent":
        return pct(value)
    if kind == "seconds":
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    return f"{value:,}"


def metric_delta(a, b, kind: str, better: int) -> tuple[str, str]:
    """The change from A to B as text, and its tone: better, worse or neutral."""
    if a is None or b is None:
        return "—", "neutral"
    change = b - a
    if kind == "percent":
        text = f"{change * 100:+.1f} pp"
        same = abs(change) < 0.0005
    elif kind == "seconds":
        text, same = f"{change:+.1f} s", abs(change) < 0.05
    else:
        text, same = f"{change:+,}", change == 0
    if same:
        return ("±0 pp" if kind == "percent" else "±0"), "neutral"
    text = text.replace("-", "−", 1)  # a minus sign, not a hyphen
    if not better:
        return text, "neutral"
    return text, "better" if change * better > 0 else "worse"


def _compare_picker_context(a: ModelVersion, error: str = "") -> dict:
    return {
        "project": a.project,
        "a": a,
        "others": list(a.project.model_versions.exclude(pk=a.pk).order_by("-number")),
        "error": error,
    }


@require_GET
@login_required
def model_version_compare(request, pk):
    require_perm(request.user, PERM)
    a = _version_or_404(pk)
    template = "reviewapp/model_version_compare.html"
    other = request.GET.get("with", "").strip()
    if not other:
        return render(request, template, _compare_picker_context(a))
    if not other.isdigit():
        context = _compare_picker_context(a, "“with” must be a model version's number id.")
        return render(request, template, context, status=400)
    b = _version_or_404(int(other))
    if b.project_id != a.project_id:
        error = f"{b} belongs to another project; only versions of {a.project.name} compare."
        return render(request, template, _compare_picker_context(a, error), status=400)
    if b.pk == a.pk:
        error = "A version compared with itself shows nothing; pick another."
        return render(request, template, _compare_picker_context(a, error), status=400)

    comparison = selectors.model_version_compare(a=a, b=b)
    metric_rows = []
    for name, a_value, b_value in comparison.metrics:
        label, kind, better = COMPARED_METRICS.get(name, (name, "count", 0))
        delta, tone = metric_delta(a_value, b_value, kind, better)
        metric_rows.append(
            (label, metric_shown(a_value, kind), metric_shown(b_value, kind), delta, tone)
        )
    class_rows = []
    for row in comparison.classes:
        delta, tone = metric_delta(row.a_error, row.b_error, "percent", -1)
        class_rows.append((row, delta, tone))
    context = _compare_picker_context(a) | {
        "b": b,
        "comparison": comparison,
        "metric_rows": metric_rows,
        "class_rows": class_rows,
        "n_other": comparison.n_changed - comparison.n_fixed - comparison.n_broken,
        "partial_counts": comparison.n_changed > len(comparison.changes),
    }
    return render(request, template, context)

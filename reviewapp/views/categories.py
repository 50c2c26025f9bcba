"""A project's categories: add, rename, hotkeys, order, merge and delete; rows swap in place."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import retarget

from .. import services
from ..forms import CategoryCreateForm, CategoryForm, CategoryMergeForm
from ..models import Category
from .common import add_service_errors, is_htmx, login_required, project_for, render_page

__all__ = [
    "category_create",
    "category_delete",
    "category_list",
    "category_merge",
    "category_update",
]

TEMPLATE = "reviewapp/category_list.html"


def _categories(project):
    # Every image counts, the trash too: a category that labels any image cannot be deleted.
    return project.categories.annotate(n_images=Count("images")).order_by("position", "name")


def _section_context(project, *, create_form=None, bound: CategoryForm | None = None, pk=None):
    """The list of rows, with ``bound`` (the submitted form) in place of row ``pk``'s form."""
    rows = [
        {
            "category": category,
            "form": bound if category.pk == pk else CategoryForm.for_category(category),
        }
        for category in _categories(project)
    ]
    return {"project": project, "rows": rows, "create_form": create_form or CategoryCreateForm()}


def _render_row(request, project, category, form, *, saved=False, row_error=""):
    context = {
        "project": project,
        "category": category,
        "form": form,
        "saved": saved,
        "row_error": row_error,
    }
    return render(request, f"{TEMPLATE}#category-row", context)


@require_GET
@login_required
def category_list(request, slug):
    project = project_for(request, slug)
    return render_page(request, TEMPLATE, "category-section", _section_context(project))


@require_POST
@login_required
def category_create(request, slug):
    project = project_for(request, slug, "reviewapp.add_category")
    form = CategoryCreateForm(request.POST)
    if form.is_valid():
        # A blank hotkey asks the service for the next free digit.
        hotkey = form.cleaned_data["hotkey"] or None
        try:
            category = services.category_create(
                project=project, name=form.cleaned_data["name"], hotkey=hotkey
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            if not is_htmx(request):
                messages.success(request, f"Category '{category.name}' added.")
                return redirect("category-list", slug=project.slug)
            form = None
    return render_page(
        request, TEMPLATE, "category-section", _section_context(project, create_form=form)
    )


@require_POST
@login_required
def category_update(request, slug, pk):
    project = project_for(request, slug, "reviewapp.change_category")
    category = get_object_or_404(_categories(project), pk=pk)
    form = CategoryForm.for_category(category, data=request.POST)
    if form.is_valid():
        moved = form.cleaned_data["position"] != category.position
        try:
            services.category_update(category=category, **form.cleaned_data)
        except ValidationError as exc:
            category.refresh_from_db()  # the service set the refused values on it
            add_service_errors(form, exc)
        else:
            if not is_htmx(request):
                messages.success(request, f"Category '{category.name}' saved.")
                return redirect("category-list", slug=project.slug)
            if moved:
                # Its place in the list changed: redraw the list, not only the row.
                response = render(
                    request, f"{TEMPLATE}#category-section", _section_context(project)
                )
                return retarget(response, "#category-section")
            return _render_row(
                request, project, category, CategoryForm.for_category(category), saved=True
            )
    if is_htmx(request):
        return _render_row(request, project, category, form)
    return render(request, TEMPLATE, _section_context(project, bound=form, pk=category.pk))


@require_POST
@login_required
def category_delete(request, slug, pk):
    project = project_for(request, slug, "reviewapp.delete_category")
    category = get_object_or_404(_categories(project), pk=pk)
    try:
        services.category_delete(category=category)
    except ValidationError as exc:
        if is_htmx(request):
            form = CategoryForm.for_category(category)
            return _render_row(request, project, category, form, row_error=" ".join(exc.messages))
        messages.error(request, " ".join(exc.messages))
    else:
        if is_htmx(request):
            return HttpResponse("")  # swapped outerHTML, nothing left: the row goes away
        messages.success(request, f"Category '{category.name}' deleted.")
    return redirect("category-list", slug=project.slug)


@require_http_methods(["GET", "POST"])
@login_required
def category_merge(request, slug, pk):
    # Merging deletes the source category, hence the delete permission.
    project = project_for(request, slug, "reviewapp.delete_category")
    source = get_object_or_404(_categories(project), pk=pk)
    form = CategoryMergeForm(request.POST or None, source=source)
    if request.method == "POST" and form.is_valid():
        target: Category = form.cleaned_data["target"]
        try:
            moved = services.category_merge(source=source, target=target, actor=request.user)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(
                request,
                f"Merged '{source.name}' into '{target.name}': {moved} image(s) relabelled.",
            )
            return redirect("category-list", slug=project.slug)
    return render(
        request,
        "reviewapp/category_merge.html",
        {"project": project, "source": source, "form": form},
    )

"""The image browser (keyset-paginated thumbnail grid) and one image's page."""

from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from .. import second_opinion, selectors
from ..forms import ImageFilterForm
from ..models import Image
from .common import login_required, project_for, render_page, require_perm
from .media import BROWSER_FORMATS

__all__ = ["image_browser", "image_detail"]

PAGE_SIZE = 60


@require_GET
@login_required
def image_browser(request, slug):
    project = project_for(request, slug)
    categories = list(project.categories.all())
    form = ImageFilterForm(request.GET, categories=categories)
    filters = form.filters()
    # Keyset on id: no COUNT and no OFFSET, so page 1,000 costs what page 1 does.
    page = selectors.image_list(project=project, limit=PAGE_SIZE, **filters)
    if project.second_opinion:
        second_opinion.attach_pending(page.images)
    by_id = {str(c.pk): c for c in categories}
    context = {
        "project": project,
        "categories": categories,
        "form": form,
        "page": page,
        "filter_label": (
            "Unlabeled"
            if filters["label"] == selectors.UNLABELED
            else getattr(by_id.get(filters["label"]), "name", "")
        ),
        "filter_split": filters["split"],
        "filter_status": form.cleaned_data.get("status") or Image.Status.ACTIVE,
        "page_size": PAGE_SIZE,
        "cursor": filters["before"],
        "can_decide": request.user.has_perm("reviewapp.change_image"),
    }
    return render_page(request, "reviewapp/image_browser.html", "image-grid", context)


@require_GET
@login_required
def image_detail(request, pk):
    require_perm(request.user, "reviewapp.view_project")
    image = get_object_or_404(Image.objects.select_related("project", "label"), pk=pk)
    events = selectors.attach_undos(
        list(
            image.events.select_related("actor", "from_category", "to_category").order_by(
                "-created_at", "-id"
            )
        )
    )
    if image.project.second_opinion:
        second_opinion.attach_pending([image])
    try:
        file_size = image.file.size
    except OSError:
        file_size = None  # the file is gone from storage; the page still shows the record
    context = {
        "project": image.project,
        "image": image,
        "events": events,
        "file_size": file_size,
        "shows_original": image.format in BROWSER_FORMATS,
        "categories": list(image.project.categories.all()),
    }
    return render_page(request, "reviewapp/image_detail.html", "image-history", context)

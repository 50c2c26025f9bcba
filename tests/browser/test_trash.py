"""The project's trash page in a browser: deleted images are listed and can be restored."""

import re

import pytest
from playwright.sync_api import expect

from reviewapp import services
from reviewapp.models import Image, LabelEvent
from tests.factories import CategoryFactory, ProjectFactory, make_image

pytestmark = pytest.mark.browser


def test_trash_page_lists_a_deleted_image_and_restores_it(page, log_in, reviewer_user, screenshot):
    project = ProjectFactory(name="Bin", slug="bin")
    label = CategoryFactory(project=project, name="cat")
    kept, deleted = make_image(project, label), make_image(project, label)
    services.image_decide(
        image_id=deleted.pk, action="delete", actor=reviewer_user, revision=deleted.revision
    )
    log_in(page)

    page.goto(f"/p/{project.slug}/")
    page.get_by_role("link", name="Trash", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/p/{project.slug}/trash/$"))
    item = page.locator(f"#trash-image-{deleted.pk}")
    expect(item).to_contain_text("Deleted by rita")
    expect(page.locator(f"#trash-image-{kept.pk}")).to_have_count(0)
    screenshot(page, "trash")

    item.get_by_role("button", name="Restore").click()

    expect(page).to_have_url(re.compile(rf"/p/{project.slug}/trash/$"))
    expect(page.locator(f"#trash-image-{deleted.pk}")).to_have_count(0)
    expect(page.locator("#trash-grid")).to_contain_text("The trash is empty")
    screenshot(page, "trash-after-restore")
    assert Image.objects.get(pk=deleted.pk).status == Image.Status.ACTIVE
    restore = LabelEvent.objects.filter(image=deleted).latest("id")
    assert (restore.action, restore.actor) == ("restore", reviewer_user)

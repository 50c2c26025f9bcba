"""Template helpers: ``id_url`` answers what ``{% url %}`` would, for any id and prefix."""

import pytest
from django.template import Context, Template
from django.urls import clear_script_prefix, reverse, set_script_prefix

from reviewapp.templatetags.loupe import id_url


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("image-decide", [7]),
        ("image-thumbnail", [123456]),
        ("image-focus", ["bears", 42]),
        # A slug holding the stand-in's digits: only the id is replaced.
        ("image-focus", ["p987654321", 987654321]),
        ("image-focus", ["other", 1]),
    ],
)
def test_id_url_is_reverse_for_every_id(name, args):
    assert id_url(name, *args) == reverse(name, args=args)


def test_id_url_follows_the_script_prefix():
    plain = id_url("image-decide", 5)
    set_script_prefix("/loupe/")
    try:
        assert id_url("image-decide", 5) == "/loupe" + plain == reverse("image-decide", args=[5])
    finally:
        clear_script_prefix()
    assert id_url("image-decide", 5) == plain


def test_id_url_in_a_template_with_as():
    rendered = Template(
        "{% load loupe %}{% id_url 'image-undo' pk as undo %}<a href='{{ undo }}'>"
    ).render(Context({"pk": 31}))
    assert rendered == f"<a href='{reverse('image-undo', args=[31])}'>"

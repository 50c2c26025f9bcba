"""Template helpers: ``id_url`` answers what ``{% url %}`` would, for any id and prefix;
``class_buttons`` builds a card's class buttons."""

from html.parser import HTMLParser
from types import SimpleNamespace

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


def _classes(*specs):
    return [SimpleNamespace(pk=pk, name=name, hotkey=key) for pk, name, key in specs]


class Button(dict):
    """A parsed <button>: its attributes, its text, and the tags inside it."""

    text = ""
    tags: list


class ButtonParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.buttons: list[Button] = []
        self.inside = False

    def handle_starttag(self, tag, attrs):
        if tag == "button":
            self.buttons.append(Button((k, v or "") for k, v in attrs))
            self.buttons[-1].tags, self.inside = [], True
        elif self.inside:
            self.buttons[-1].tags.append(tag)

    def handle_endtag(self, tag):
        self.inside = self.inside and tag != "button"

    def handle_data(self, data):
        if self.inside:
            self.buttons[-1].text += data


def _buttons(template: str, **context) -> list[Button]:
    parser = ButtonParser()
    parser.feed(Template("{% load loupe %}" + template).render(Context(context)))
    return parser.buttons


def test_class_buttons_press_the_current_class_and_name_the_others():
    classes = _classes((3, "cat", "1"), (5, "dog", "2"), (9, "owl", ""))

    cat, dog, owl = _buttons("{% class_buttons classes 5 %}", classes=classes)

    assert [b["value"] for b in (cat, dog, owl)] == ["3", "5", "9"]
    assert dog["aria-pressed"] == "true" and "button--current" in dog["class"].split()
    assert dog["title"] == "Keep dog (2)" and dog.text == "2 dog"
    assert cat["title"] == "Relabel as cat (1)" and "aria-pressed" not in cat
    assert "button--current" not in cat["class"].split()
    assert cat["data-key"] == "1" and cat.tags == ["kbd"]
    # A class without a key: no data-key, no <kbd>, no "( )" in its title.
    assert owl["title"] == "Relabel as owl" and "data-key" not in owl and owl.tags == []
    assert all("data-relabel" in b and b["type"] == "submit" for b in (cat, dog, owl))


def test_class_buttons_with_no_current_class_press_none():
    classes = _classes((3, "cat", "1"), (5, "dog", "2"))

    for current in ("", "None", "missing.attr"):
        buttons = _buttons(f"{{% class_buttons classes {current} %}}", classes=classes)
        assert ["aria-pressed" in b for b in buttons] == [False, False]


def test_class_buttons_verb_keep_and_relabel_marker():
    classes = _classes((3, "cat", "1"), (5, "dog", "2"))

    on, off = _buttons(
        '{% class_buttons classes 3 verb="Label as" keep=False relabel=False %}', classes=classes
    )

    assert on["title"] == "Label as cat (1)" and on["aria-pressed"] == "true"
    assert off["title"] == "Label as dog (2)"
    assert "data-relabel" not in on and "data-relabel" not in off


def test_class_buttons_escape_names_and_follow_a_rename():
    classes = _classes((3, '<b>"cat"</b>', "1"))

    (button,) = _buttons("{% class_buttons classes 0 %}", classes=classes)
    assert button.tags == ["kbd"] and button["title"] == 'Relabel as <b>"cat"</b> (1)'
    assert button.text == '1 <b>"cat"</b>'  # text, not a tag

    classes[0].name = "kitten"  # the built buttons are keyed by the classes' names and keys
    (button,) = _buttons("{% class_buttons classes 0 %}", classes=classes)
    assert button["title"] == "Relabel as kitten (1)" and button.text == "1 kitten"

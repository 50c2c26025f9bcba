"""Class hotkeys: 0-9 and the letters the queues leave free; automatic keys; refusals."""

import re
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from reviewapp import hotkeys, services
from reviewapp.demo import demo_project_create
from tests.factories import CategoryFactory, ProjectFactory

SCRIPTS = Path(__file__).resolve().parents[2] / "static" / "js"


def test_every_letter_the_queue_scripts_act_on_is_reserved():
    """A class hotkey on an action key could never be pressed; hotkeys.py must know them all."""
    source = "\n".join(path.read_text() for path in sorted(SCRIPTS.glob("*.js")))
    acted_on = set(re.findall(r'key === "([a-z])"', source))
    assert acted_on, "the scripts' key handling changed shape: update this test"
    assert acted_on <= hotkeys.RESERVED_KEYS


def test_class_keys_are_digits_then_the_free_letters_in_order():
    assert hotkeys.CLASS_KEYS[:10] == tuple("1234567890")
    letters = hotkeys.CLASS_KEYS[10:]
    assert list(letters) == sorted(letters)
    assert not set(letters) & hotkeys.RESERVED_KEYS
    assert len(hotkeys.CLASS_KEYS) == 10 + 26 - len(hotkeys.RESERVED_KEYS)


@pytest.mark.parametrize(
    ("name", "used", "expected"),
    [
        ("0", set(), "0"),  # its own digit
        ("7", {"1"}, "7"),
        ("b", set(), "b"),  # its own letter
        ("B", set(), "b"),
        ("c", set(), "1"),  # c is the confirm key: the next free one instead
        ("0", {"0"}, "1"),  # its own key is taken
        ("cat", {"1", "2"}, "3"),
        ("cat", set("123456789"), "0"),
        ("cat", set("1234567890"), "a"),
        ("cat", set(hotkeys.CLASS_KEYS), ""),  # every key taken: none
    ],
)
def test_hotkey_for_new(name, used, expected):
    assert hotkeys.hotkey_for_new(name, used) == expected


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", None),
        ("0", None),
        ("a", None),
        ("x", "'x' is the review queues' key to delete (to the trash)"),
        ("n", "'n' is the review queues' key to next confusion-matrix cell"),
        ("A", "A hotkey is one digit (0-9) or one lower-case letter."),
        ("#", "A hotkey is one digit (0-9) or one lower-case letter."),
    ],
)
def test_hotkey_problem(key, problem):
    found = hotkeys.hotkey_problem(key)
    assert (found is None) if problem is None else found.startswith(problem)


@pytest.mark.django_db
def test_digits_demo_gives_each_digit_its_own_key():
    project, created = demo_project_create()
    assert created
    keys = dict(project.categories.values_list("name", "hotkey"))
    assert keys == {str(n): str(n) for n in range(10)}


@pytest.mark.django_db
def test_services_refuse_a_reserved_hotkey():
    project = ProjectFactory()
    with pytest.raises(ValidationError, match="key to confirm the label"):
        services.category_create(project=project, name="cat", hotkey="c")
    dog = CategoryFactory(project=project, name="dog", hotkey="1")
    with pytest.raises(ValidationError, match="key to next card"):
        services.category_update(category=dog, hotkey="j")
    dog.refresh_from_db()
    assert dog.hotkey == "1"
    assert services.category_update(category=dog, hotkey="0").hotkey == "0"

"""Small template helpers for Loupe's pages."""

from functools import lru_cache

from django import template
from django.urls import get_script_prefix, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from ..notifications import notification_unread_count

register = template.Library()

_ID_STANDIN = "987654321"  # the id a URL is reversed with once, then replaced
_id_urls: dict[tuple[str, ...], str] = {}


@register.filter
def label_param(category) -> str:
    """The image browser's ``label`` value for a category; ``none`` for unlabeled."""
    return str(category.pk) if category is not None else "none"


@register.simple_tag(takes_context=True)
def nav_current(context, *url_names: str) -> str:
    """``aria-current="page"`` on the nav link of the page being shown."""
    match = getattr(context.get("request"), "resolver_match", None)
    if match is not None and match.url_name in url_names:
        return mark_safe('aria-current="page"')
    return ""


@register.filter
def label_change(event) -> str:
    """What an event did, in words: 'confirmed black', 'deleted', 'cat → dog'."""

    def name(category) -> str:
        return category.name if category is not None else "unlabeled"

    before, after = event.from_category, event.to_category
    words = {
        "confirm": f"confirmed {name(after or before)}",
        "delete": "deleted",
        "restore": "restored",
        "import": f"imported as {after.name}" if after else "imported unlabeled",
        "label": f"labeled {name(after)}",
    }
    if event.action in words:
        return words[event.action]
    if event.from_category_id == event.to_category_id:  # an undo that left the label as it was
        return f"label stays {name(after)}"
    # A relabel's missing "from" is a category since merged or deleted, not "unlabeled".
    return f"{before.name if before else '—'} → {name(after)}"


@register.filter
def percent(part, whole) -> int:
    """``part`` as a whole-number percentage of ``whole``; 0 when ``whole`` is 0."""
    try:
        return round(100 * part / whole) if whole else 0
    except (TypeError, ValueError):
        return 0


@register.filter
def short_label(text) -> str:
    """A choice's label without its explanation in brackets: 'Crop (centre…)' -> 'Crop'."""
    return str(text).split(" (", 1)[0]


@register.filter
def duration(value) -> str:
    """A timedelta as '1 h 02 min', '3 min 05 s' or '12 s'."""
    if value is None:
        return "—"
    seconds = max(0, int(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


BELL_MAX = 99


@register.simple_tag(takes_context=True)
def notification_bell_count(context) -> str:
    """The bell's unread count for the signed-in user: "" for none, "99+" past 99."""
    user = getattr(context.get("request"), "user", None) or context.get("user")
    if user is None or not user.is_authenticated:
        return ""
    unread = notification_unread_count(user=user, at_most=BELL_MAX + 1)
    if not unread:
        return ""
    return f"{BELL_MAX}+" if unread > BELL_MAX else str(unread)


@register.simple_tag
def id_url(name: str, *args) -> str:
    """``{% url name *args %}`` for a URL whose last argument is an integer id, reversed once
    per name (and leading arguments) and filled in after.

    A queue page asks for about 150 URLs (seven a card) and each reverse walks Django's
    resolver: that was a fifth of the review page's time. Django has no cached reverse.
    """
    *lead, pk = args
    key = (get_script_prefix(), name, *map(str, lead))
    pattern = _id_urls.get(key)
    if pattern is None:
        pattern = _id_urls[key] = reverse(name, args=[*lead, int(_ID_STANDIN)])
    head, _, tail = pattern.rpartition(_ID_STANDIN)
    return f"{head}{int(pk)}{tail}"


@register.simple_tag
def class_buttons(categories, current_id=None, *, verb="Relabel as", keep=True, relabel=True):
    """A card's buttons, one a class: the one numbered ``current_id`` pressed ("Keep ..."
    when ``keep``), the others "<verb> ...". ``relabel``: marked ``data-relabel`` for the keys.

    Each class's two buttons are built once per set of classes, not once per card: on a
    queue page of 25 cards they were half of the template's nodes, and more with more classes.
    """
    classes = tuple((c.pk, c.name, c.hotkey) for c in categories)
    buttons = _class_buttons(classes, verb, keep, relabel)
    return mark_safe("".join(on if pk == current_id else off for pk, on, off in buttons))


@lru_cache(maxsize=256)
def _class_buttons(
    classes, verb: str, keep: bool, relabel: bool
) -> tuple[tuple[int, str, str], ...]:
    """(pk, pressed button, other button) for each class."""
    return tuple(
        (
            pk,
            _class_button(pk, name, hotkey, "Keep" if keep else verb, True, relabel),
            _class_button(pk, name, hotkey, verb, False, relabel),
        )
        for pk, name, hotkey in classes
    )


def _class_button(pk, name, hotkey, verb: str, pressed: bool, relabel: bool) -> str:
    return format_html(
        '<button type="submit" name="label" value="{}" class="button button--quiet{}"{}{}'
        ' title="{} {}{}"{}>{}</button>',
        pk,
        " button--current" if pressed else "",
        mark_safe(" data-relabel") if relabel else "",
        mark_safe(' aria-pressed="true"') if pressed else "",
        verb,
        name,
        f" ({hotkey})" if hotkey else "",
        format_html(' data-key="{}"', hotkey) if hotkey else "",
        format_html("<kbd>{}</kbd> {}", hotkey, name) if hotkey else name,
    )

"""Category hotkeys: which keys a class may have, and the one a new class gets by itself.

The review, label and audit queues (static/js/review.js) use some letters as action keys;
they are listed here once, and the forms, the services, the API and the help dialogs read
them from here.
"""

import string

__all__ = [
    "ACTION_KEYS",
    "CLASS_KEYS",
    "RESERVED_KEYS",
    "hotkey_for_new",
    "hotkey_problem",
    "reserved_keys_text",
]

# The queues' action keys (review.js): a class hotkey on one of them could never be pressed.
ACTION_KEYS = {
    "c": "confirm the label (accept the suggestion on the Label queue)",
    "j": "next card",
    "k": "previous card",
    "n": "next confusion-matrix cell",
    "o": "open the image",
    "s": "select the card for a bulk action",
    "u": "undo the card's last decision",
    "x": "delete (to the trash)",
}
RESERVED_KEYS = frozenset(ACTION_KEYS)

# The order automatic hotkeys are handed out in: digits as on the keyboard, then letters.
CLASS_KEYS = tuple(
    [*"123456789", "0", *(c for c in string.ascii_lowercase if c not in RESERVED_KEYS)]
)


def reserved_keys_text() -> str:
    """The reserved letters as people read them: "c, j, k, n, o, s, u, x"."""
    return ", ".join(sorted(RESERVED_KEYS))


def hotkey_problem(key: str) -> str | None:
    """Why ``key`` cannot be a class hotkey, or None when it can ("" means no hotkey)."""
    if key == "":
        return None
    if key in RESERVED_KEYS:
        return (
            f"'{key}' is the review queues' key to {ACTION_KEYS[key]}; choose a digit or "
            f"another letter (not {reserved_keys_text()})."
        )
    if key not in CLASS_KEYS:
        return "A hotkey is one digit (0-9) or one lower-case letter."
    return None


def hotkey_for_new(name: str, used: set[str]) -> str:
    """The hotkey a new class named ``name`` gets: its own name if it is a free key, else the
    next free one of 1-9, 0, then the letters; "" when every key is taken."""
    own = name.strip().lower()
    if own in CLASS_KEYS and own not in used:
        return own
    return next((key for key in CLASS_KEYS if key not in used), "")

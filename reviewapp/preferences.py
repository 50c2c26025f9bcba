"""Each reviewer's own queue settings (auto-advance), remembered across sessions."""

from django.db import transaction

from .models import ReviewerPreference

__all__ = ["reviewer_preference_get", "reviewer_preference_update"]


def reviewer_preference_get(*, user) -> ReviewerPreference:
    """``user``'s preferences; the defaults, unsaved, for someone who never changed them."""
    # A page view reads only: the row appears when the person first changes a setting.
    return ReviewerPreference.objects.filter(user=user).first() or ReviewerPreference(user=user)


@transaction.atomic
def reviewer_preference_update(*, user, auto_advance: bool) -> ReviewerPreference:
    """Save ``user``'s auto-advance choice, creating the row the first time."""
    preference, _ = ReviewerPreference.objects.update_or_create(
        user=user, defaults={"auto_advance": auto_advance}
    )
    return preference

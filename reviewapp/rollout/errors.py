"""Why a rollout change is refused: a bad request, or a version that moved on meanwhile."""

__all__ = ["RolloutConflict", "RolloutError"]


class RolloutError(ValueError):
    """A refused approval or stage change; the message says what to do instead."""


class RolloutConflict(RolloutError):
    """The version changed after the caller last saw it (the API answers 409)."""

"""API tokens: made once, shown once, stored as a hash."""

from ..models import ApiToken

__all__ = ["api_token_create", "api_token_revoke"]


def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Create a personal token; returns it with the plain key, which is never stored."""
    name = (name or "").strip() or "API token"
    key = ApiToken.generate_key()
    token = ApiToken.objects.create(
        user=user, name=name[:100], key_hash=ApiToken.hash_key(key), prefix=key[:8]
    )
    return token, key


def api_token_revoke(*, user, token_id: int) -> ApiToken | None:
    """Delete one of ``user``'s tokens; None when it is not theirs or does not exist.

    Deleting (not flagging) is enough: a request with the key then finds no hash to match.
    """
    token = ApiToken.objects.filter(user=user, pk=token_id).first()
    if token is not None:
        token.delete()
    return token

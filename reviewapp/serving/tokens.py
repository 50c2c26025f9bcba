"""Client tokens: the keys prediction clients send, made and revoked by approvers."""

import logging

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from ..models import ClientToken, Project

__all__ = ["client_token_create", "client_token_list", "client_token_revoke"]

logger = logging.getLogger(__name__)


def client_token_create(*, project: Project, client: str, actor=None) -> tuple[ClientToken, str]:
    """A prediction client's token for ``project``; returns it with the key, never stored."""
    client = (client or "").strip()
    if not client:
        raise ValidationError({"client": "Name the client that will use the token."})
    if len(client) > 100:
        raise ValidationError({"client": "A client name has at most 100 characters."})
    key = ClientToken.generate_key()
    token = ClientToken.objects.create(
        project=project,
        client=client,
        key_hash=ClientToken.hash_key(key),
        prefix=key[:8],
        created_by=actor,
    )
    logger.info("Client token %s for %s created by %s", token.prefix, project.slug, actor)
    return token, key


def client_token_revoke(*, token: ClientToken, actor=None) -> ClientToken:
    """Revoke a client token; its next request gets a 401."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        logger.info("Client token %s revoked by %s", token.prefix, actor)
    return token


def client_token_list(*, project: Project) -> QuerySet[ClientToken]:
    return project.client_tokens.select_related("created_by").order_by("revoked_at", "client")

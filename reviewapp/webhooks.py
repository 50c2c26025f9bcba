"""Webhooks: signed JSON POSTs of a project's events. (Being built: see issue 13.)"""

from . import enqueue
from .models import WebhookDelivery

__all__ = ["deliveries_queue"]


def deliveries_queue(*, project, event: str, payload: dict) -> list:
    rows = []
    for webhook in project.webhooks.filter(active=True):
        if event in webhook.events:
            delivery = WebhookDelivery.objects.create(webhook=webhook, event=event, payload=payload)
            enqueue.send(enqueue.WEBHOOK_DELIVER, delivery.pk)
            rows.append(delivery)
    return rows

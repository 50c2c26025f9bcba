"""Loupe's Django side: models, services, views, API and Celery tasks."""

from .celery import app as celery_app

__all__ = ["celery_app"]

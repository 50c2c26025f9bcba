"""The JSON API under /api/v1/ (django-ninja); OpenAPI at /api/v1/openapi.json."""

from ninja import NinjaAPI

api = NinjaAPI(title="Loupe API", version="1", urls_namespace="api")

"""The JSON API under /api/v1/ (django-ninja); OpenAPI at /api/v1/openapi.json, docs at /docs.

One Router per resource, each in its own module; a new resource (training runs, model
versions, decisions) adds a module and one ``api.add_router`` line, before the fallback.
"""

from django.http import Http404
from ninja import NinjaAPI, Router

from . import categories, decisions, images, projects, training, versions
from .auth import BearerAuth, SessionAuth
from .errors import install_error_handlers

__all__ = ["api"]


class LoupeAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation) -> str:
        # "category_merge", not "reviewapp_api_categories_category_merge": clients read these.
        return operation.view_func.__name__


api = LoupeAPI(
    title="Loupe API",
    version="1",
    description=(
        "Human-in-the-loop image classification. Authenticate with a personal token "
        "(`Authorization: Bearer <token>`, made by `manage.py create_user_token`) or, in the "
        "browser, with your Loupe session and the X-CSRFToken header. Errors are JSON: "
        '`{"detail": "<message>", "errors": {"<field>": ["<message>"]}}`.'
    ),
    urls_namespace="api",
    # Bearer first: a request that sends a token is judged by the token alone.
    auth=[BearerAuth(), SessionAuth()],
)
install_error_handlers(api)

api.add_router("", projects.router)
api.add_router("", categories.router)
api.add_router("", images.router)
api.add_router("", training.router)
api.add_router("", versions.router)
api.add_router("", decisions.router)
# Serving: predict, batch predict, a stored prediction.
from . import predict as predict_api  # noqa: E402

api.add_router("", predict_api.router)
# Approval and rollout: approve, reject, stage, rollback, timeline.
from . import rollout as rollout_api  # noqa: E402

api.add_router("", rollout_api.router)
# Label audits: out-of-fold scoring, label issues, duplicates, outliers.
from . import audits as audits_api  # noqa: E402

api.add_router("", audits_api.router)
# Labeling new images: the Label queue with the model's suggestions.
from . import labeling as labeling_api  # noqa: E402

api.add_router("", labeling_api.router)
# Webhooks: signed POSTs of a project's events, and their delivery log.
from . import webhooks as webhooks_api  # noqa: E402

api.add_router("", webhooks_api.router)
# Notifications: the caller's own, newest first, and marking one read.
from . import notifications as notifications_api  # noqa: E402

api.add_router("", notifications_api.router)
# Upload batches: big uploads ingested by a worker, their progress and results.
from . import uploads as uploads_api  # noqa: E402

api.add_router("", uploads_api.router)

# Second opinions: relabels waiting for another reviewer, and resolving them.
from . import second_opinions as second_opinions_api  # noqa: E402

api.add_router("", second_opinions_api.router)


# Last, so it only sees paths no router matched: a typo gets JSON, not Django's HTML page.
fallback = Router()


@fallback.api_operation(
    ["GET", "POST", "PUT", "PATCH", "DELETE"], "/{path:rest}", auth=None, include_in_schema=False
)
def no_such_endpoint(request, rest: str):
    raise Http404(f"No API endpoint '{request.path}'; the endpoints are listed at /api/v1/docs.")


api.add_router("", fallback)

"""Writes: every change to Loupe's data goes through a function of this package.

Modules: projects, categories, ingest (files and zips to images), uploads (the background
upload worker's batches), decisions (review decisions and their undo), tokens.
"""

from .categories import (
    category_create,
    category_delete,
    category_get_or_create,
    category_merge,
    category_update,
)
from .decisions import (
    DECISION_ACTIONS,
    DecisionResult,
    StaleRevision,
    image_decide,
    image_decision_undo,
    images_decide,
)
from .ingest import (
    IngestResult,
    ProgressFn,
    file_too_big,
    image_decode,
    image_ingest,
    suggestions_later,
    uploads_count,
    uploads_fit_inline,
    uploads_ingest,
)
from .projects import SPLIT_FIELDS, project_create, project_update
from .tokens import api_token_create, api_token_revoke
from .uploads import upload_batch_create, upload_batch_fail, upload_batch_run

__all__ = [
    "DECISION_ACTIONS",
    "DecisionResult",
    "IngestResult",
    "ProgressFn",
    "SPLIT_FIELDS",
    "StaleRevision",
    "api_token_create",
    "api_token_revoke",
    "category_create",
    "category_delete",
    "category_get_or_create",
    "category_merge",
    "category_update",
    "file_too_big",
    "image_decide",
    "image_decision_undo",
    "image_decode",
    "image_ingest",
    "images_decide",
    "project_create",
    "project_update",
    "suggestions_later",
    "upload_batch_create",
    "upload_batch_fail",
    "upload_batch_run",
    "uploads_count",
    "uploads_fit_inline",
    "uploads_ingest",
]

"""Predictions: classify one image or a batch with the project's served model version.

Clients authenticate with a project's client token (``Authorization: Bearer lpc_…``, made
on the project's Clients page or by ``manage.py create_api_token``); a personal token or
the browser session of a user who may view projects works too.
"""

from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from ninja import Field, File, Form, Router, Schema, UploadedFile
from ninja.errors import AuthenticationError, HttpError
from ninja.security import HttpBearer

from .. import serving
from ..models import ClientToken, Prediction, Project
from .auth import BearerAuth, SessionAuth, require_perm
from .common import db_id, project_or_404
from .errors import ErrorOut

__all__ = ["ClientBearerAuth", "router"]

CLIENT_PREFIX = "lpc_"


class ClientBearerAuth(HttpBearer):
    """A client token of a project (``lpc_…``), or else a personal API token."""

    openapi_bearerFormat = "lpc_… or lp_…"
    openapi_description = (
        "A project's client token (`python manage.py create_api_token --project SLUG "
        "--client NAME`), or a personal API token. Send it as `Authorization: Bearer <token>`."
    )

    def authenticate(self, request, token):
        token = token.strip()
        if not token.startswith(CLIENT_PREFIX):
            try:
                return BearerAuth().authenticate(request, token)
            except AuthenticationError as exc:
                if "inactive" in exc.message:
                    raise
                # A caller of predict most likely wants a client token, not a personal one.
                raise AuthenticationError(
                    message="The token is not valid. To predict, send the project's client "
                    "token (lpc_…): the project's Clients page, or `manage.py "
                    "create_api_token --project SLUG --client NAME`."
                ) from None
        client = (
            ClientToken.objects.select_related("project")
            .filter(key_hash=ClientToken.hash_key(token))
            .first()
        )
        if client is None:
            raise AuthenticationError(
                message="The client token is not valid. Ask the project's approvers for one "
                "(Clients page, or `manage.py create_api_token`)."
            )
        if client.revoked_at is not None:
            raise AuthenticationError(
                message=f"The client token {client.prefix}… was revoked on "
                f"{client.revoked_at:%Y-%m-%d %H:%M} UTC; ask for a new one."
            )
        return client


router = Router(tags=["predictions"], auth=[ClientBearerAuth(), SessionAuth()])

PREDICT_RESPONSES = {
    400: ErrorOut,
    401: ErrorOut,
    403: ErrorOut,
    404: ErrorOut,
    500: ErrorOut,
    503: ErrorOut,
}


class PredictionOut(Schema):
    id: int
    request_id: UUID
    label: str
    confidence: float
    probabilities: dict[str, float] = Field(description="Every class's probability.")
    version: int = Field(description="The number of the model version that answered (vN).")
    version_id: int
    stage: str = Field(description="That version's stage: live or limited.")
    needs_review: bool = Field(
        description="Low confidence or out of domain: it went to the reviewers' queue."
    )
    ood_score: float | None
    is_ood: bool
    latency_ms: float
    runtime: str = Field(
        description="What answered: 'onnxruntime' (the version's ONNX export) or 'torch' "
        "(fastai's export, for a version without a servable ONNX export)."
    )
    created_at: datetime
    review: str = Field(description="'confirmed', 'corrected', or '' before a review.")
    reviewed_label: str | None


class BatchError(Schema):
    file: str = Field(description="The file's name, as sent.")
    error: str = Field(description="Why it was not answered: too big, not an image...")


class BatchOut(Schema):
    results: list[PredictionOut | BatchError] = Field(
        description="One entry per image, in the order sent: its prediction, or its error."
    )
    predictions: list[PredictionOut] = Field(
        description="The predictions only, in order (the errors left out)."
    )


def prediction_out(prediction: Prediction) -> dict:
    vocab = prediction.version.vocab
    return {
        "id": prediction.pk,
        "request_id": prediction.request_id,
        "label": prediction.label,
        "confidence": prediction.confidence,
        "probabilities": dict(zip(vocab, prediction.probabilities, strict=False)),
        "version": prediction.version.number,
        "version_id": prediction.version_id,
        "stage": prediction.stage,
        "needs_review": prediction.needs_review,
        "ood_score": prediction.ood_score,
        "is_ood": prediction.is_ood,
        "latency_ms": prediction.latency_ms,
        "runtime": prediction.runtime or "torch",  # rows from before ONNX serving: torch
        "created_at": prediction.created_at,
        "review": prediction.review,
        "reviewed_label": prediction.reviewed_label.name if prediction.reviewed_label_id else None,
    }


def _caller(request, project: Project) -> tuple[ClientToken | None, object | None]:
    """(client token, user) of the request, after checking it may predict in ``project``."""
    auth = request.auth
    if isinstance(auth, ClientToken):
        if auth.project_id != project.pk:
            raise PermissionDenied(
                f"This client token belongs to project '{auth.project.slug}', not '{project.slug}'."
            )
        return auth, None
    require_perm(request, "reviewapp.view_project", "ask for predictions")
    return None, auth


def _predict(request, slug: str, images: list[tuple[str, bytes]], client_key: str, *, each=False):
    project = project_or_404(slug)
    client, user = _caller(request, project)
    if len(client_key) > 200:
        raise ValidationError({"client_key": "A client key has at most 200 characters."})
    create = serving.predictions_create_each if each else serving.predictions_create
    try:
        return create(
            project=project, images=images, client=client, user=user, client_key=client_key
        )
    except (serving.NoLiveModel, serving.ModelUnavailable) as exc:
        raise HttpError(503, str(exc)) from None


def _read(upload: UploadedFile) -> tuple[str, bytes, int]:
    # One byte past the limit is enough to refuse it by size; its own size is for the message.
    return upload.name or "image", upload.read(settings.LOUPE_MAX_FILE_BYTES + 1), upload.size


@router.post("/projects/{slug}/predict", response={200: PredictionOut, **PREDICT_RESPONSES})
def predict(
    request,
    slug: str,
    image: File[UploadedFile] = None,
    client_key: Form[str] = "",
):
    """Classify one image (multipart ``image``) with the model version routed to the caller.

    ``client_key`` routes: one key always gets the same version. Without it the client token
    (or the user) is the key. 503 when the project has no live version.
    """
    if image is None:
        raise ValidationError({"image": "No image was sent: attach one as multipart 'image'."})
    (prediction,) = _predict(request, slug, [_read(image)], client_key)
    return prediction_out(prediction)


@router.post("/projects/{slug}/predict/batch", response={200: BatchOut, **PREDICT_RESPONSES})
def predict_batch(
    request,
    slug: str,
    images: File[list[UploadedFile]] = None,
    client_key: Form[str] = "",
):
    """Classify several images (multipart ``images``, up to 64) in one batch.

    Each gets its own prediction and request id. ``results`` answers every image in the
    order sent: its prediction, or ``{"file", "error"}`` for a bad one (too big, not an
    image); ``predictions`` holds the predictions only. 400 when no image could be read.
    """
    uploads = [_read(f) for f in images or []]
    if not uploads:
        raise ValidationError({"images": "No images were sent: attach them as multipart 'images'."})
    results, predictions = [], []
    for outcome in _predict(request, slug, uploads, client_key, each=True):
        if isinstance(outcome, serving.FileError):
            results.append({"file": outcome.file, "error": outcome.error})
        else:
            predictions.append(prediction_out(outcome))
            results.append(predictions[-1])
    return {"results": results, "predictions": predictions}


@router.get("/predictions/{prediction_id}", response={200: PredictionOut, **PREDICT_RESPONSES})
def prediction_detail(request, prediction_id: int):
    """A stored prediction, with the reviewer's verdict once there is one."""
    prediction = (
        Prediction.objects.select_related("version", "project", "reviewed_label")
        .filter(pk=db_id(prediction_id), is_shadow=False)
        .first()
    )
    if prediction is None:
        raise Http404(f"No prediction {prediction_id}.")
    auth = request.auth
    if isinstance(auth, ClientToken):
        if auth.project_id != prediction.project_id:
            raise PermissionDenied("This prediction belongs to another project.")
    else:
        require_perm(request, "reviewapp.view_project", "view predictions")
    return prediction_out(prediction)

"""Serving: the per-process model cache, routing, shadow copies, stored predictions, their
review, client tokens and the monitoring numbers.

Routing: a request with routing key ``k`` goes to the LIMITED version when there is one, it
is not paused, and ``route_bucket(project, k) < traffic_share``; otherwise to the LIVE one.
With no LIVE version nothing is served (NoLiveModel, HTTP 503), even if a limited version
exists: a limited version is a partial rollout and never takes all the traffic by default.
Every SHADOW version answers every request too; its answers are stored, never returned.
A request the limited version served is also answered, and stored, by the live version.
They are queued for a background thread after the served answer is stored, and answered
in batches when the process is idle (LOUPE_SHADOW_ASYNC, default on; off: in the request),
so shadows add no inference time to the client's latency.

Modules, each importing only those above it: routing, model_cache, ood, tokens, review;
answers (a version's answers as Prediction rows); shadows; predictions; monitoring;
warm (loading serving versions before traffic needs them).
"""

from .model_cache import (
    ModelUnavailable,
    model_cache_clear,
    model_cache_version_ids,
    model_for,
    runtime_for,
)
from .monitoring import (
    HISTOGRAM_BINS,
    ClassMix,
    Monitoring,
    ShadowAgreement,
    TimePoint,
    drift_scores,
    monitoring_summary,
    request_answers,
)
from .ood import OOD_METHOD, OOD_METHOD_DESCRIPTIONS, OOD_PERCENTILE, version_ood_calibrate
from .predictions import MAX_BATCH_IMAGES, FileError, predictions_create, predictions_create_each
from .review import disagreements_to_review, prediction_review, predictions_to_review
from .routing import (
    SERVING_STAGES,
    NoLiveModel,
    ServingVersions,
    route,
    route_bucket,
    serving_versions,
)
from .shadows import _request_ended as _request_ended  # private: tests hold a request open
from .shadows import _request_started as _request_started
from .shadows import shadow_wait
from .tokens import client_token_create, client_token_list, client_token_revoke
from .warm import serving_models_warm, warm_now, warmer_running, warmer_start, warmer_stop

__all__ = [
    "HISTOGRAM_BINS",
    "MAX_BATCH_IMAGES",
    "OOD_METHOD",
    "OOD_METHOD_DESCRIPTIONS",
    "OOD_PERCENTILE",
    "SERVING_STAGES",
    "ClassMix",
    "FileError",
    "ModelUnavailable",
    "Monitoring",
    "NoLiveModel",
    "ServingVersions",
    "ShadowAgreement",
    "TimePoint",
    "client_token_create",
    "client_token_list",
    "client_token_revoke",
    "disagreements_to_review",
    "drift_scores",
    "model_cache_clear",
    "model_cache_version_ids",
    "model_for",
    "monitoring_summary",
    "prediction_review",
    "predictions_create",
    "predictions_create_each",
    "predictions_to_review",
    "request_answers",
    "route",
    "route_bucket",
    "runtime_for",
    "serving_models_warm",
    "warm_now",
    "warmer_running",
    "warmer_start",
    "warmer_stop",
    "serving_versions",
    "shadow_wait",
    "version_ood_calibrate",
]

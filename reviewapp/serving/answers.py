"""A version's answers to decoded images, and the Prediction rows that store them."""

import time
import uuid

from ..imaging import DecodedImage
from ..models import ModelVersion, Prediction, Project
from .model_cache import model_for, runtime_for
from .ood import version_ood_calibrate


def _answers(version: ModelVersion, decoded: list[DecodedImage]) -> tuple[list, float]:
    predictor = model_for(version)
    started = time.perf_counter()
    # Predictor.predict runs on the process's one inference thread, one call at a time:
    # requests and the shadow thread never run the model side by side.
    answers = predictor.predict([d.data for d in decoded])
    return answers, (time.perf_counter() - started) * 1000


def _rows(
    *,
    project: Project,
    version: ModelVersion,
    answers: list,
    request_ids: list[uuid.UUID],
    files: list[tuple[str, str]],
    latency_ms: float,
    is_shadow: bool,
    common: dict,
) -> list[Prediction]:
    method, threshold = version_ood_calibrate(version=version)
    runtime = runtime_for(version)
    rows = []
    for answer, request_id, (name, sha256) in zip(answers, request_ids, files, strict=True):
        ood_score = 1 - answer.confidence
        is_ood = threshold is not None and ood_score > threshold
        rows.append(
            Prediction(
                project=project,
                version=version,
                stage=version.stage,
                request_id=request_id,
                is_shadow=is_shadow,
                file=name,
                sha256=sha256,
                label=answer.label,
                confidence=answer.confidence,
                probabilities=answer.probabilities,
                ood_score=ood_score,
                is_ood=is_ood,
                needs_review=not is_shadow
                and (answer.confidence < project.review_confidence or is_ood),
                latency_ms=latency_ms,
                runtime=runtime,
                **common,
            )
        )
    return rows

"""Out-of-domain detection: each version's method and threshold, calibrated once."""

import math

from ..models import Image, ImageScore, ModelVersion

__all__ = ["OOD_METHOD", "OOD_METHOD_DESCRIPTIONS", "OOD_PERCENTILE", "version_ood_calibrate"]

OOD_METHOD = "max_softmax"
# The out-of-domain score is 1 - max softmax; a prediction is out of domain when its score
# is above this percentile of the version's validation images' scores.
OOD_PERCENTILE = 95
OOD_METHOD_DESCRIPTIONS = {
    OOD_METHOD: (
        f"max-softmax: score = 1 − the top class's probability; out of domain above the "
        f"{OOD_PERCENTILE}th percentile of the version's validation images"
    ),
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def version_ood_calibrate(*, version: ModelVersion) -> tuple[str, float | None]:
    """The version's OOD method and threshold, calibrated on its validation scores once.

    None as the threshold: the version has no validation scores (versions are scored when
    they are trained, so it never will), so nothing it answers is flagged out of domain.
    """
    if version.ood_method:
        return version.ood_method, version.ood_threshold
    rows = ImageScore.objects.filter(version_id=version.pk, split=Image.Split.VALID)
    scores = [1 - max(p) for p in rows.values_list("probabilities", flat=True) if p]
    threshold = _percentile(scores, OOD_PERCENTILE) if scores else None
    ModelVersion.objects.filter(pk=version.pk).update(
        ood_method=OOD_METHOD, ood_threshold=threshold
    )
    version.ood_method, version.ood_threshold = OOD_METHOD, threshold
    return OOD_METHOD, threshold

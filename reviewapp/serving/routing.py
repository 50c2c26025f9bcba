"""Which model version answers a request: the live one, or the limited one for its share."""

import hashlib
from dataclasses import dataclass, field

from django.urls import reverse

from ..models import ModelVersion, Project

__all__ = [
    "SERVING_STAGES",
    "NoLiveModel",
    "ServingVersions",
    "route",
    "route_bucket",
    "serving_versions",
]

SERVING_STAGES = (
    ModelVersion.Stage.LIVE,
    ModelVersion.Stage.LIMITED,
    ModelVersion.Stage.SHADOW,
)


class NoLiveModel(Exception):
    """The project has no live version to answer with."""


def route_bucket(*, project_id: int, key: str) -> int:
    """A stable bucket 0-99 for (project, key): one client always lands in the same one."""
    digest = hashlib.sha256(f"{project_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass
class ServingVersions:
    project_slug: str = ""  # for the messages' link to the project's Rollout page
    live: ModelVersion | None = None
    limited: ModelVersion | None = None
    shadows: list[ModelVersion] = field(default_factory=list)

    @property
    def all(self) -> list[ModelVersion]:
        return [v for v in (self.live, self.limited, *self.shadows) if v is not None]


def serving_versions(*, project: Project) -> ServingVersions:
    """The project's live, limited and shadow versions, in one small query."""
    found = ServingVersions(project_slug=project.slug)
    rows = ModelVersion.objects.filter(project=project, stage__in=SERVING_STAGES).only(
        "pk",
        "project_id",
        "number",
        "stage",
        "traffic_share",
        "paused_reason",
        "export_file",
        "export_sha256",
        "onnx_file",
        "onnx_sha256",
        "onnx_spec",
        "onnx_error",
        "vocab",
        "ood_method",
        "ood_threshold",
    )
    for version in sorted(rows, key=lambda v: -v.number):
        if version.stage == ModelVersion.Stage.LIVE and found.live is None:
            found.live = version
        elif version.stage == ModelVersion.Stage.LIMITED and found.limited is None:
            found.limited = version
        elif version.stage == ModelVersion.Stage.SHADOW:
            found.shadows.append(version)
    return found


def route(*, project_id: int, key: str, versions: ServingVersions) -> ModelVersion:
    """The version that answers a request with routing key ``key``."""
    limited = versions.limited
    if (
        limited is not None
        and not limited.paused_reason
        and route_bucket(project_id=project_id, key=key) < limited.traffic_share
    ):
        return limited
    if versions.live is None:
        page = "its Rollout page"
        if versions.project_slug:
            page += f" ({reverse('project-rollout', kwargs={'slug': versions.project_slug})})"
        raise NoLiveModel(
            "This project has no live model version, so it cannot answer predictions yet. "
            f"Approve a version and make it live on {page} first."
        )
    return versions.live

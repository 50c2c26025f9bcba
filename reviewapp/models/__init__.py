"""Loupe's data model, one module per part of the product; every model is importable from here.

- projects: projects and their classes
- images: images, their label decisions (the audit log) and upload batches
- tokens: API tokens and prediction client tokens
- training: training runs, model versions, their image scores, ImageNet weights
- serving: rollout events and live predictions
- audits: label audits and their out-of-fold scores
- labeling: suggestions for unlabeled images and claimed queue cards
- teams, notifications, webhooks: reviewer settings and second opinions, notices, webhooks
"""

from .audits import AuditScore, LabelAudit
from .images import Image, LabelEvent, UploadBatch, image_upload_to, thumbnail_upload_to
from .labeling import QueueClaim, Suggestion
from .notifications import Notification, NotificationPreference
from .projects import Category, Project, split_for
from .serving import Prediction, RolloutEvent
from .teams import ReviewerPreference, SecondOpinion
from .tokens import ApiToken, ClientToken
from .training import BackboneWeights, ImageScore, ModelVersion, TrainingRun, WeightsFetch
from .webhooks import Webhook, WebhookDelivery

__all__ = [
    "ApiToken",
    "AuditScore",
    "BackboneWeights",
    "Category",
    "ClientToken",
    "Image",
    "ImageScore",
    "LabelAudit",
    "LabelEvent",
    "ModelVersion",
    "Notification",
    "NotificationPreference",
    "Prediction",
    "Project",
    "QueueClaim",
    "ReviewerPreference",
    "RolloutEvent",
    "SecondOpinion",
    "Suggestion",
    "TrainingRun",
    "UploadBatch",
    "Webhook",
    "WebhookDelivery",
    "WeightsFetch",
    "image_upload_to",
    "split_for",
    "thumbnail_upload_to",
]

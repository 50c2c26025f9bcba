"""Forms parse and check browser input; the writes themselves are in services."""

from django import forms
from django.conf import settings

from trainer import ARCHITECTURES

from . import hotkeys
from .models import Category, Image, Project

__all__ = [
    "ApiTokenForm",
    "CategoryCreateForm",
    "CategoryForm",
    "CategoryMergeForm",
    "ImageFilterForm",
    "NotificationPreferenceForm",
    "ProjectCreateForm",
    "ProjectSettingsForm",
    "TrainingRunForm",
    "UploadForm",
]

DATABLOCK_FIELDS = ("image_size", "resize_method", "augment", "valid_pct", "split_seed")


class ProjectSettingsForm(forms.Form):
    """A project's name, description and the DataBlock choices the trainer uses."""

    name = forms.CharField(max_length=200)
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=5000
    )
    image_size = forms.IntegerField(
        min_value=16,
        max_value=1024,
        initial=224,
        label="Image size (px)",
        help_text="Images are resized to a square of this side before training.",
    )
    resize_method = forms.ChoiceField(
        choices=Project.ResizeMethod.choices, initial=Project.ResizeMethod.RANDOM_RESIZED_CROP
    )
    augment = forms.BooleanField(
        required=False,
        initial=True,
        label="Augment training batches",
        help_text="fastai's aug_transforms: flips, rotation, zoom, lighting.",
    )
    valid_pct = forms.FloatField(
        min_value=0.05,
        max_value=0.5,
        initial=0.2,
        label="Validation share",
        help_text="Between 0.05 and 0.5 of the images are held out for validation.",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    split_seed = forms.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        initial=42,
        label="Split seed",
        help_text="The same seed always gives the same train/valid split.",
    )
    second_opinion = forms.BooleanField(
        required=False,
        initial=False,
        label="A relabel needs a second reviewer",
        help_text="A relabel waits in the Second opinion queue until another reviewer agrees "
        "(it is applied) or overrides it.",
    )

    @classmethod
    def for_project(cls, project: Project, data=None) -> "ProjectSettingsForm":
        fields = ("name", "description", *DATABLOCK_FIELDS, "second_opinion")
        return cls(data, initial={name: getattr(project, name) for name in fields})


class ProjectCreateForm(ProjectSettingsForm):
    slug = forms.SlugField(
        max_length=80,
        required=False,
        label="URL name",
        help_text="Letters, digits and hyphens; left blank, it is made from the name.",
    )

    field_order = ["name", "slug", "description"]


def hotkey_field_validator(value: str) -> None:
    if problem := hotkeys.hotkey_problem(value):
        raise forms.ValidationError(problem)


# The browser lets any digit or letter through; the server names a reserved letter's action.
HOTKEY_HELP = f"0-9 or a letter except {hotkeys.reserved_keys_text()}"
HOTKEY_ATTRS = {
    "pattern": "[0-9a-z]",
    "title": f"One key: {HOTKEY_HELP}",
    "size": 1,
    "autocapitalize": "none",
    "autocomplete": "off",
}


class CategoryForm(forms.Form):
    """One category row: rename, change the hotkey, move it."""

    name = forms.CharField(max_length=100)
    hotkey = forms.CharField(
        max_length=1,
        required=False,
        validators=[hotkey_field_validator],
        widget=forms.TextInput(attrs={**HOTKEY_ATTRS, "class": "hotkey"}),
        help_text=f"{HOTKEY_HELP}, or blank for none.",
    )
    position = forms.IntegerField(
        min_value=0, max_value=100_000, widget=forms.NumberInput(attrs={"class": "position"})
    )

    @classmethod
    def for_category(cls, category: Category, data=None) -> "CategoryForm":
        return cls(
            data,
            initial={
                "name": category.name,
                "hotkey": category.hotkey,
                "position": category.position,
            },
            auto_id=f"id_category_{category.pk}_%s",
        )


class CategoryCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    hotkey = forms.CharField(
        max_length=1,
        required=False,
        validators=[hotkey_field_validator],
        widget=forms.TextInput(attrs=HOTKEY_ATTRS),
        help_text=f"{HOTKEY_HELP}. Blank: the class's own name if it is one digit or letter, "
        "else the next free key.",
    )


class CategoryMergeForm(forms.Form):
    target = forms.ModelChoiceField(
        queryset=Category.objects.none(), label="Merge into", empty_label=None
    )

    def __init__(self, *args, source: Category, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = Category.objects.filter(
            project_id=source.project_id
        ).exclude(pk=source.pk)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files from one ``<input type=file multiple>``; empty ones are kept.

    An empty file is refused by the ingest with a reason, like any unreadable file.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single_clean = super().clean
        if isinstance(data, list | tuple):
            if not data and self.required:
                raise forms.ValidationError(self.error_messages["required"], code="required")
            return [single_clean(item, initial) for item in data]
        return [single_clean(data, initial)]


TARGET_UNLABELED = "unlabeled"
TARGET_FOLDERS = "folders"


class UploadForm(forms.Form):
    files = MultipleFileField(
        label="Images or .zip archives",
        error_messages={"required": "Choose at least one image or .zip file."},
        widget=MultipleFileInput(attrs={"accept": "image/*,.zip,application/zip"}),
    )
    target = forms.ChoiceField(label="Label them as")

    def __init__(self, *args, project: Project, categories=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Shown in the form's help: what is imported at once, what goes to a worker.
        self.inline_max_files = settings.LOUPE_INLINE_UPLOAD_MAX_FILES
        self.inline_max_bytes = settings.LOUPE_INLINE_UPLOAD_MAX_BYTES
        categories = list(project.categories.all()) if categories is None else categories
        self.categories = {str(c.pk): c for c in categories}
        self.fields["target"].choices = [
            (TARGET_UNLABELED, "Unlabeled"),
            ("Category", [(str(c.pk), c.name) for c in categories]),
            (TARGET_FOLDERS, "Labels from the .zip folder names"),
        ]
        self.fields["target"].initial = TARGET_UNLABELED

    @property
    def label(self) -> Category | None:
        return self.categories.get(self.cleaned_data["target"])

    @property
    def labels_from_folders(self) -> bool:
        return self.cleaned_data["target"] == TARGET_FOLDERS


class ImageFilterForm(forms.Form):
    """The image browser's filters; a bad value falls back to 'all' rather than failing."""

    STATUS_ALL = "all"

    label = forms.ChoiceField(required=False, label="Class")
    split = forms.ChoiceField(
        required=False, choices=[("", "All splits"), *Image.Split.choices], label="Split"
    )
    status = forms.ChoiceField(
        required=False,
        choices=[
            (Image.Status.ACTIVE, "Active"),
            (Image.Status.DELETED, "Trash"),
            (STATUS_ALL, "All"),
        ],
        label="Status",
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, *args, categories, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["label"].choices = [
            ("", "All classes"),
            *[(str(c.pk), c.name) for c in categories],
            ("none", "Unlabeled"),
        ]

    def filters(self) -> dict:
        """Keyword arguments for ``selectors.image_list``, each bad value left out."""
        self.is_valid()  # cleaned_data then holds only the fields that passed
        data = self.cleaned_data
        status = data.get("status") or Image.Status.ACTIVE
        return {
            "label": data.get("label", ""),
            "split": data.get("split", ""),
            "status": "" if status == self.STATUS_ALL else status,
            "before": data.get("before"),
        }


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Token name",
        help_text="What will use it, e.g. 'labelling script on my laptop'.",
    )


class TrainingRunForm(forms.Form):
    """A training run's choices; the initial values are the project's, sized for a CPU."""

    architecture = forms.ChoiceField(
        choices=[(a, a) for a in ARCHITECTURES],
        help_text="resnet18 trains fastest; resnet34 is the lesson's choice; mobilenet_v3_large "
        "and efficientnet_b0 are light on a CPU; convnext_tiny is the most accurate.",
    )
    image_size = forms.IntegerField(
        min_value=16, max_value=1024, label="Image size (px)", help_text="Side of the square."
    )
    resize_method = forms.ChoiceField(choices=Project.ResizeMethod.choices)
    augment = forms.BooleanField(
        required=False, label="Augment", help_text="fastai's aug_transforms on training batches."
    )
    epochs = forms.IntegerField(min_value=1, max_value=200, help_text="Epochs of fine_tune.")
    freeze_epochs = forms.IntegerField(
        min_value=0,
        max_value=20,
        label="Frozen epochs",
        help_text="Head-only epochs first, when starting from pretrained weights.",
    )
    learning_rate = forms.FloatField(
        required=False,
        min_value=1e-7,
        max_value=1.0,
        label="Learning rate",
        help_text="Leave empty to use the learning rate finder's suggestion.",
        widget=forms.NumberInput(attrs={"step": "any"}),
    )
    batch_size = forms.IntegerField(min_value=1, max_value=1024)
    pretrained = forms.ChoiceField(
        choices=[
            ("auto", "Auto: ImageNet weights (fetched if needed), else from scratch"),
            ("on", "On: require ImageNet weights; fail without them"),
            ("off", "Off: train from scratch"),
        ],
        label="Pretrained weights",
        help_text="Weights come from Loupe's store (the Backbones page), or are fetched once; "
        "the run page says which were used.",
    )

    def __init__(self, *args, present: set[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if present is not None:
            # The choice says which architectures have their ImageNet weights at hand.
            self.fields["architecture"].choices = [
                (a, f"{a} (ImageNet weights present)" if a in present else f"{a} (no weights yet)")
                for a in ARCHITECTURES
            ]

    @classmethod
    def for_config(cls, config, data=None, *, present=None) -> "TrainingRunForm":
        initial = {name: getattr(config, name) for name in cls.base_fields}
        return cls(data, initial=initial, present=present)


# Rollout policy (approval, staged rollout and guardrails) ----------------------


class RolloutPolicyForm(forms.Form):
    """A project's approval threshold, rollout steps and guardrail thresholds."""

    approval_coverage = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        label="Review coverage needed for approval",
        help_text="Share (0–1) of a version's flagged images reviewed before it can be approved "
        "without an override reason.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    approval_tolerance = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        label="Accuracy tolerance for approval",
        help_text="A version whose validation accuracy is below live's by more than this "
        "(0–1; 0.01 = 1 point) is approved only with a written reason.",
        widget=forms.NumberInput(attrs={"step": "0.005"}),
    )
    rollout_steps = forms.CharField(
        max_length=100,
        label="Rollout steps (%)",
        help_text="Traffic shares a limited version is expanded through, ending at 100 (live).",
    )
    max_shadow_disagreement = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        label="Max disagreement with live",
        help_text="Share (0–1) of requests where the new version and live answer differently.",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    max_override_rate = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        label="Max reviewer override rate",
        help_text="Share (0–1) of reviewed predictions that reviewers corrected.",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    max_low_confidence = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        label="Max low-confidence rate",
        help_text="Share (0–1) of predictions below the review confidence.",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    review_confidence = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        label="Review confidence",
        help_text="Predictions less confident than this (0–1) go to reviewers.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )

    @classmethod
    def for_project(cls, project: Project, data=None) -> "RolloutPolicyForm":
        return cls(data, initial={name: getattr(project, name) for name in cls.base_fields})

    def clean_rollout_steps(self) -> str:
        from .rollout import RolloutError, parse_rollout_steps

        try:
            steps = parse_rollout_steps(self.cleaned_data["rollout_steps"])
        except RolloutError as exc:
            raise forms.ValidationError(str(exc)) from None
        return ",".join(map(str, steps))


class RetrainPolicyForm(forms.Form):
    """When the project retrains by itself (reviewapp.policy); both thresholds empty: never."""

    retrain_after_decisions = forms.IntegerField(
        required=False,
        min_value=1,
        label="Retrain after review decisions",
        help_text="Review decisions (confirm, relabel, delete, restore) since the latest "
        "version's data. Empty: not a trigger.",
    )
    retrain_after_images = forms.IntegerField(
        required=False,
        min_value=1,
        label="Retrain after newly labeled images",
        help_text="Images uploaded with a label, or labeled in the Label queue, since the "
        "latest version's data. Empty: not a trigger.",
    )
    retrain_min_hours = forms.IntegerField(
        min_value=0,
        max_value=24 * 365,
        label="At most once per (hours)",
        help_text="Hours that must pass after a run before the policy starts another.",
    )
    retrain_audit = forms.ChoiceField(
        required=False,
        choices=[("", "No audit"), ("fast", "Fast audit"), ("full", "Full audit")],
        label="Then audit the labels",
    )
    retrain_shadow = forms.BooleanField(
        required=False,
        label="Then put the new version into shadow when it beats live on validation",
        help_text="Shadow serves nobody; approving and moving traffic stay your decisions.",
    )

    @classmethod
    def for_project(cls, project: Project, data=None) -> "RetrainPolicyForm":
        return cls(data, initial={name: getattr(project, name) for name in cls.base_fields})


class BackboneImportForm(forms.Form):
    """An ImageNet weights file for an air-gapped site, e.g. torchvision's resnet18-f37072fd.pth."""

    architecture = forms.ChoiceField(choices=[(a, a) for a in ARCHITECTURES])
    file = forms.FileField(
        label="Weights file (.pth)",
        help_text="A state_dict, as torchvision publishes it. It is loaded with "
        "torch.load(weights_only=True) and must fit the architecture.",
    )


class NotificationPreferenceForm(forms.Form):
    """Whether a user also gets their notifications by email."""

    email = forms.BooleanField(
        required=False,
        label="Also email me my notifications",
        help_text="Sent to the address on your account when a notification arrives.",
    )

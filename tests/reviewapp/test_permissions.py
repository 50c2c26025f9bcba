"""Who may open every page and call every API operation: the permission matrix.

The routes come from the live URLconf and the OpenAPI schema, never from a copied list:
a new page without a row in ``PAGES``, or a new API operation that is not open to
reviewers and not listed in ``API_APPROVER_ONLY``, fails here until someone decides who
may use it.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from reviewapp import notifications, services, training
from reviewapp.api import api
from reviewapp.forms import ProjectSettingsForm, TrainingRunForm
from reviewapp.models import (
    ApiToken,
    Category,
    Image,
    LabelAudit,
    ModelVersion,
    Project,
    SecondOpinion,
    TrainingRun,
    UploadBatch,
    Webhook,
    WeightsFetch,
)
from tests.factories import (
    CategoryFactory,
    ProjectFactory,
    UserFactory,
    approver,
    finished_audit,
    make_image,
    reviewer,
    scored_version,
)
from tests.images import image_bytes

pytestmark = pytest.mark.django_db

PAGES_URLCONF = "reviewapp.views.urls"
ROLES = ("anonymous", "no_group", "reviewer", "approver")
# An expected outcome: an HTTP status, or LOGIN for "302 to the login page, ?next= this page".
LOGIN = "login"


# The fixture world ----------------------------------------------------------------------


@dataclass
class World:
    """One project with everything a URL can name, and one user per role."""

    project: Project
    category: Category  # labels `image`; merged into `other_category`
    other_category: Category
    empty_category: Category  # labels nothing, so an approver may delete it
    image: Image
    other_image: Image
    version: ModelVersion
    other_version: ModelVersion
    run: TrainingRun  # pending, so it can be cancelled
    batch: UploadBatch
    token: ApiToken  # the approver's own
    users: dict[str, User]  # role -> user; anonymous has none
    # Serving: a client token, and a flagged prediction of `version` with its image.
    client_token: object = None
    prediction: object = None
    audit: object = None  # Label audits: a finished audit of `version`
    weights_fetch: object = None  # Backbones: a finished download job
    webhook: object = None  # Webhooks: one, to a loopback port nothing is sent to
    notification: object = None  # Notifications: the approver's, about `run`
    caller: object = None  # the user an API case is sent as, for API_SETUP to use
    opinion: object = None  # Second opinions: a pending relabel of `image`, by nobody now


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    # Hundreds of cases make three users each; these users log in with force_login, so the
    # 1,000,000-round PBKDF2 would only cost minutes.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world() -> World:
    project = ProjectFactory()
    category = CategoryFactory(project=project, name="cat")
    other_category = CategoryFactory(project=project, name="dog")
    empty_category = CategoryFactory(project=project, name="empty")
    image = make_image(project, category)
    other_image = make_image(project, other_category)
    # Both splits hold a labeled image, so a training run can start: ingest picks at random.
    for each, split in ((image, Image.Split.TRAIN), (other_image, Image.Split.VALID)):
        Image.objects.filter(pk=each.pk).update(split=split)
        each.refresh_from_db()
    scores = [(image, other_category, 2.0), (other_image, other_category, 0.1)]
    users = {"no_group": UserFactory(), "reviewer": reviewer(), "approver": approver()}
    token, _ = services.api_token_create(user=users["approver"], name="script")
    world = World(
        project=project,
        category=category,
        other_category=other_category,
        empty_category=empty_category,
        image=image,
        other_image=other_image,
        version=scored_version(project, scores),
        other_version=scored_version(project, scores),
        run=TrainingRun.objects.create(project=project, config={"epochs": 1}),
        batch=UploadBatch.objects.create(project=project, staging_dir="staging/x"),
        token=token,
        users=users,
    )
    _serving_world(world)
    world.audit = finished_audit(project, world.version)
    world.weights_fetch = WeightsFetch.objects.create(architecture="resnet18", status="failed")
    world.webhook = Webhook.objects.create(
        project=project, url="http://127.0.0.1:9/hook", events=["run.failed"]
    )
    world.notification = _notification_for(users["approver"], world)
    world.opinion = SecondOpinion.objects.create(
        project=project, image=image, from_category=category, to_category=other_category
    )
    return world


def _notification_for(user: User, w: World):
    link = reverse("training-run", args=[w.run.pk])
    return notifications.notify([user], kind="run.succeeded", message="Run ended", link=link)[0]


def _serving_world(w: World) -> None:
    """Serving: a client token and a stored prediction to review."""
    import uuid

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from reviewapp import serving
    from reviewapp.models import Prediction

    w.client_token, _ = serving.client_token_create(project=w.project, client="shop")
    name = default_storage.save("predictions/world.png", ContentFile(image_bytes(seed=77)))
    w.prediction = Prediction.objects.create(
        project=w.project,
        version=w.version,
        stage=w.version.stage,
        request_id=uuid.uuid4(),
        file=name,
        sha256="1" * 64,
        label="cat",
        confidence=0.4,
        probabilities=[0.4, 0.3, 0.3],
        needs_review=True,
    )


def _database_state() -> dict:
    """Every row the app owns, and the users: a request that was refused changes none."""
    models = [*apps.get_app_config("reviewapp").get_models(), User]
    return {m._meta.label: list(m.objects.order_by("pk").values()) for m in models}


def _form_data(form) -> dict:
    """A form's initial values as a browser posts them: unchecked boxes are left out."""
    data = {}
    for name, form_field in form.fields.items():
        value = form.get_initial_for_field(form_field, name)
        if value is not None and value is not False:
            data[name] = value
    return data


# The expectation table ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One route and method, and what each role gets back."""

    name: str
    method: str
    anonymous: int | str
    no_group: int | str
    reviewer: int | str
    approver: int | str
    pk: str = ""  # the World attribute whose pk fills the URL's <pk>
    body: Callable[[World], dict] | None = None
    query: Callable[[World], dict] | None = None
    setup: Callable[[World], None] | None = None  # what the route needs beyond the world
    xfail: dict = field(default_factory=dict)  # role -> why the current answer is a bug

    def expected(self, role: str) -> int | str:
        return getattr(self, role)


def _project_settings(w: World) -> dict:
    return _form_data(ProjectSettingsForm.for_project(w.project)) | {"name": "Renamed"}


def _project_new(w: World) -> dict:
    return _form_data(ProjectSettingsForm.for_project(w.project)) | {
        "name": "Fresh",
        "slug": "fresh",
    }


def _training_settings(w: World) -> dict:
    return _form_data(TrainingRunForm.for_config(training.train_config_for(w.project)))


def _upload(w: World) -> dict:
    png = SimpleUploadedFile("new.png", image_bytes(seed=4242), content_type="image/png")
    return {"files": png, "target": "unlabeled"}


def _rollout_policy(w: World) -> dict:
    from reviewapp.forms import RolloutPolicyForm

    return _form_data(RolloutPolicyForm.for_project(w.project))


def _decision(w: World) -> dict:
    return {"action": "confirm", "revision": w.image.revision, "version": w.version.pk}


def _bulk(w: World) -> dict:
    selected = f"{w.image.pk}:{w.image.revision}"
    return {"action": "confirm", "version": w.version.pk, "selected": selected}


# Permissions come from migrations 0002_groups and 0004_training_permissions: both groups may
# view everything, add and change categories and images, upload, and start or cancel runs;
# only approvers add or change projects and delete (or merge away) categories. A user with no
# group holds no permission. Non-htmx actions answer with a redirect, errors included.
# fmt: off
PAGES = [
    #   name                     method  anon   no group reviewer approver
    # Accounts: tokens belong to their user, so any signed-in user manages their own.
    Row("login",                 "GET",  200,   302,     302,     302),
    Row("login",                 "POST", 200,   302,     302,     302,
        body=lambda w: {"username": "nobody", "password": "wrong"}),
    Row("logout",                "POST", 302,   302,     302,     302),
    Row("api-tokens",            "GET",  LOGIN, 200,     200,     200),
    Row("api-token-create",      "POST", LOGIN, 200,     200,     200,
        body=lambda w: {"name": "laptop"}),
    Row("api-token-revoke",      "POST", LOGIN, 302,     302,     302, pk="token"),
    # A reviewer's own queue setting: only someone who can decide has cards to advance through.
    Row("reviewer-auto-advance", "POST", LOGIN, 403,     302,     302,
        body=lambda w: {"auto_advance": "1"}),
    # Notifications are their user's own, like tokens; another user's is a 404.
    Row("notifications",         "GET",  LOGIN, 200,     200,     200),
    Row("notifications-bell",    "GET",  LOGIN, 200,     200,     200),
    Row("notifications-read-all", "POST", LOGIN, 302,    302,     302),
    Row("notification-preferences", "POST", LOGIN, 302,  302,     302,
        body=lambda w: {"email": "on"}),
    Row("notification-open",     "GET",  LOGIN, 404,     404,     302, pk="notification"),
    # Projects
    Row("project-list",          "GET",  LOGIN, 403,     200,     200),
    Row("project-create",        "POST", LOGIN, 403,     403,     302, body=_project_new),
    Row("demo-project-create",   "POST", LOGIN, 403,     403,     302),
    Row("project-detail",        "GET",  LOGIN, 403,     200,     200),
    Row("project-settings",      "GET",  LOGIN, 403,     403,     200),
    Row("project-settings",      "POST", LOGIN, 403,     403,     302, body=_project_settings),
    Row("project-retrain-policy", "POST", LOGIN, 403,    403,     302,
        body=lambda w: {"retrain_after_decisions": "50", "retrain_min_hours": "24"}),
    # Images
    Row("image-browser",         "GET",  LOGIN, 403,     200,     200),
    Row("image-detail",          "GET",  LOGIN, 403,     200,     200, pk="image"),
    Row("image-file",            "GET",  LOGIN, 403,     200,     200, pk="image"),
    Row("image-thumbnail",       "GET",  LOGIN, 403,     200,     200, pk="image"),
    Row("image-focus",           "GET",  LOGIN, 403,     200,     200, pk="image"),
    # Categories
    Row("category-list",         "GET",  LOGIN, 403,     200,     200),
    Row("category-create",       "POST", LOGIN, 403,     302,     302,
        body=lambda w: {"name": "bird"}),
    Row("category-update",       "POST", LOGIN, 403,     302,     302, pk="category",
        body=lambda w: {"name": "kitten", "hotkey": "", "position": w.category.position}),
    Row("category-delete",       "POST", LOGIN, 403,     403,     302, pk="empty_category"),
    Row("category-merge",        "GET",  LOGIN, 403,     403,     200, pk="category"),
    Row("category-merge",        "POST", LOGIN, 403,     403,     302, pk="category",
        body=lambda w: {"target": w.other_category.pk}),
    # Uploads: a small upload is ingested at once and the page shows the results.
    Row("image-upload",          "GET",  LOGIN, 403,     200,     200),
    Row("image-upload",          "POST", LOGIN, 403,     200,     200, body=_upload),
    Row("upload-batch",          "GET",  LOGIN, 403,     200,     200, pk="batch"),
    # Training
    Row("training-run-start",    "GET",  LOGIN, 403,     302,     302),
    Row("training-run-start",    "POST", LOGIN, 403,     302,     302, body=_training_settings),
    Row("training-run-list",     "GET",  LOGIN, 403,     200,     200),
    Row("training-run-retrain",  "POST", LOGIN, 403,     302,     302),
    Row("training-run",          "GET",  LOGIN, 403,     200,     200, pk="run"),
    Row("training-run-cancel",   "POST", LOGIN, 403,     302,     302, pk="run"),
    # Review
    Row("review-queue",          "GET",  LOGIN, 403,     200,     200),
    Row("review-bulk",           "POST", LOGIN, 403,     302,     302, body=_bulk),
    Row("image-decide",          "POST", LOGIN, 403,     302,     302, pk="image", body=_decision),
    Row("image-undo",            "POST", LOGIN, 403,     302,     302, pk="image",
        body=lambda w: {"revision": w.image.revision}),
    Row("review-claims-renew",   "POST", LOGIN, 403,     204,     204),
    Row("review-claims-release", "POST", LOGIN, 403,     204,     204),
    Row("second-opinion-queue",  "GET",  LOGIN, 403,     200,     200),
    Row("second-opinion-resolve", "POST", LOGIN, 403,    302,     302, pk="opinion",
        body=lambda w: {"action": "agree", "revision": w.image.revision}),
    Row("project-activity",      "GET",  LOGIN, 403,     200,     200),
    Row("project-trash",         "GET",  LOGIN, 403,     200,     200),
    Row("dataset-export-zip",    "GET",  LOGIN, 403,     200,     200),
    Row("dataset-export-csv",    "GET",  LOGIN, 403,     200,     200),
    # Model versions
    Row("model-version-list",    "GET",  LOGIN, 403,     200,     200),
    Row("model-version",         "GET",  LOGIN, 403,     200,     200, pk="version"),
    Row("model-version-compare", "GET",  LOGIN, 403,     200,     200, pk="version",
        query=lambda w: {"with": w.other_version.pk}),
    Row("model-version-onnx",    "GET",  LOGIN, 403,     200,     200, pk="version",
        setup=lambda w: _onnx_setup(w)),
    Row("model-version-onnx-spec", "GET", LOGIN, 403,    200,     200, pk="version",
        setup=lambda w: _onnx_setup(w)),
    # Approval and rollout: approvers only. A stage change or rollback asks first (GET);
    # a refused one (the world's version is a candidate, nothing is live) answers 400.
    Row("model-version-approval", "GET", LOGIN, 403,     403,     200, pk="version"),
    Row("model-version-approval", "POST", LOGIN, 403,    403,     302, pk="version",
        body=lambda w: {"action": "approve", "note": "ok", "override_reason": "tested"}),
    Row("model-version-stage",   "GET",  LOGIN, 403,     403,     400, pk="version",
        query=lambda w: {"stage": "shadow"}),
    Row("model-version-stage",   "POST", LOGIN, 403,     403,     400, pk="version",
        body=lambda w: {"stage": "shadow", "confirm": "1"}),
    Row("project-rollout",       "GET",  LOGIN, 403,     403,     200),
    Row("project-rollout-policy", "POST", LOGIN, 403,    403,     302, body=_rollout_policy),
    Row("project-rollback",      "GET",  LOGIN, 403,     403,     400),
    Row("project-rollback",      "POST", LOGIN, 403,     403,     400,
        body=lambda w: {"confirm": "1"}),
    # Serving. Predicting needs view_project; the world has no live version, so
    # a permitted POST gets 409 (the page's "no live model" answer). Client tokens are for
    # approvers; deciding on predictions needs change_image, like deciding on images.
    Row("project-predict",       "GET",  LOGIN, 403,     200,     200),
    Row("project-predict",       "POST", LOGIN, 403,     409,     409,
        body=lambda w: {"image": SimpleUploadedFile("p.png", image_bytes(seed=4343))}),
    Row("client-tokens",         "GET",  LOGIN, 403,     403,     200),
    Row("client-token-create",   "POST", LOGIN, 403,     403,     200,
        body=lambda w: {"client": "kiosk"}),
    Row("client-token-revoke",   "POST", LOGIN, 403,     403,     302, pk="client_token"),
    Row("prediction-review",     "GET",  LOGIN, 403,     200,     200),
    Row("prediction-decide",     "POST", LOGIN, 403,     302,     302, pk="prediction",
        body=lambda w: {"action": "confirm"}),
    Row("prediction-file",       "GET",  LOGIN, 403,     200,     200, pk="prediction"),
    Row("project-monitoring",    "GET",  LOGIN, 403,     200,     200),
    # Label audits: reading needs view_imagescore, starting add_trainingrun.
    Row("label-audit-list",      "GET",  LOGIN, 403,     200,     200),
    Row("label-audit-start",     "POST", LOGIN, 403,     302,     302,
        body=lambda w: {"mode": "fast", "k": 2}),
    Row("label-audit",           "GET",  LOGIN, 403,     200,     200, pk="audit"),
    Row("label-audit-cancel",    "POST", LOGIN, 403,     302,     302, pk="audit"),
    Row("label-audit-issues",    "GET",  LOGIN, 403,     200,     200, pk="audit"),
    Row("label-audit-duplicates", "GET", LOGIN, 403,     200,     200, pk="audit"),
    Row("label-audit-outliers",  "GET",  LOGIN, 403,     200,     200, pk="audit"),
    # Labeling: the queue needs view_image, labeling change_image; claims are the user's own.
    Row("label-queue",           "GET",  LOGIN, 403,     200,     200),
    Row("label-accept",          "POST", LOGIN, 403,     302,     302),
    Row("label-accept-above",    "POST", LOGIN, 403,     302,     302,
        body=lambda w: {"min_confidence": "0.9", "expected": "0"}),
    Row("label-claims-renew",    "POST", LOGIN, 403,     204,     204),
    Row("label-claims-release",  "POST", LOGIN, 403,     204,     204),
    # Backbones (ImageNet weights for every project) are the approvers'; a bad upload is 200.
    Row("backbone-list",         "GET",  LOGIN, 403,     403,     200),
    Row("backbone-fetch",        "POST", LOGIN, 403,     403,     302),
    Row("backbone-import",       "POST", LOGIN, 403,     403,     200),
    Row("weights-fetch",         "GET",  LOGIN, 403,     403,     200, pk="weights_fetch"),
    # Webhooks are the approvers'; a new one's page (with its secret) is 200, not a redirect.
    Row("project-webhooks",      "GET",  LOGIN, 403,     403,     200),
    Row("webhook-create",        "POST", LOGIN, 403,     403,     200,
        body=lambda w: {"url": "http://127.0.0.1:9/new", "events": ["run.failed"]}),
    Row("webhook-update",        "POST", LOGIN, 403,     403,     302, pk="webhook",
        body=lambda w: {"events": ["run.failed", "audit.finished"], "active": "on"}),
    Row("webhook-delete",        "GET",  LOGIN, 403,     403,     200, pk="webhook"),
    Row("webhook-delete",        "POST", LOGIN, 403,     403,     302, pk="webhook"),
    Row("webhook-deliveries",    "GET",  LOGIN, 403,     403,     200, pk="webhook"),
]
# fmt: on


# Routes, from the URLconf itself ---------------------------------------------------------


def _kwarg_names(pattern) -> tuple[str, ...]:
    converters = getattr(pattern, "converters", None)
    if converters is None:  # a re_path: its named groups
        return tuple(pattern.regex.groupindex)
    return tuple(converters)


@cache
def _page_routes() -> dict[str, tuple[str, ...]]:
    """Every route of the browser pages: its name (or pattern, if unnamed) -> URL kwarg names."""
    routes: dict[str, tuple[str, ...]] = {}

    def walk(entries, kwargs: tuple[str, ...], in_pages: bool):
        for entry in entries:
            names = kwargs + _kwarg_names(entry.pattern)
            if isinstance(entry, URLResolver):
                module = getattr(entry.urlconf_name, "__name__", entry.urlconf_name)
                walk(entry.url_patterns, names, in_pages or module == PAGES_URLCONF)
            elif in_pages:
                routes[entry.name or f"<unnamed {entry.pattern}>"] = names

    walk(get_resolver().url_patterns, (), False)
    return routes


def _url(row: Row, w: World) -> str:
    kwargs = {}
    for name in _page_routes()[row.name]:
        if name == "slug":
            kwargs[name] = w.project.slug
        elif name == "architecture":
            kwargs[name] = "resnet18"
        elif name == "pk":
            assert row.pk, f"Row {row.name!r} needs pk=<World attribute> for its <pk>."
            kwargs[name] = getattr(w, row.pk).pk
        else:
            pytest.fail(f"URL kwarg {name!r} of {row.name!r}: teach _url() which object fills it.")
    url = reverse(row.name, kwargs=kwargs)
    return f"{url}?{urlencode(row.query(w))}" if row.query else url


def _send(client: Client, row: Row, w: World, **headers):
    url = _url(row, w)
    if row.method == "GET":
        return client.get(url, headers=headers)
    return client.post(url, row.body(w) if row.body else {}, headers=headers)


def _client_for(client: Client, w: World, role: str) -> Client:
    if role != "anonymous":
        client.force_login(w.users[role])
    return client


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith(
        f"{reverse('login')}?next="
    )


def test_every_page_route_has_a_row():
    routes = _page_routes()
    missing = sorted(set(routes) - {row.name for row in PAGES})
    assert not missing, (
        f"Route(s) {missing} in {PAGES_URLCONF} have no row in PAGES of {__name__}: add one "
        "per method the view accepts, saying what each role gets."
    )
    stale = sorted({row.name for row in PAGES} - set(routes))
    assert not stale, f"PAGES has rows for {stale}, which the URLconf no longer has."


def test_root_urlconf_holds_nothing_unchecked():
    """Besides the pages, the admin and the API (each tested below) only /healthz and /metrics
    are routed."""
    unchecked = []
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            module = getattr(entry.urlconf_name, "__name__", entry.urlconf_name)
            if entry.namespace in ("admin", "api") or module == PAGES_URLCONF:
                continue
        elif isinstance(entry, URLPattern) and entry.name == "healthz":
            continue  # public on purpose: a load balancer polls it (tests/reviewapp/test_runtime)
        elif isinstance(entry, URLPattern) and entry.name == "metrics":
            continue  # its own bearer token, not a role (tests/reviewapp/test_metrics)
        unchecked.append(str(entry.pattern))
    assert not unchecked, f"Add the route(s) {unchecked} to the checks of {__name__}."


def _page_cases():
    for row in PAGES:
        for role in ROLES:
            marks = []
            if role in row.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=row.xfail[role]))
            yield pytest.param(row, role, id=f"{row.name}-{row.method}-{role}", marks=marks)


@pytest.mark.parametrize(("row", "role"), list(_page_cases()))
def test_page_answers_each_role_as_its_permissions_say(client, world, row, role):
    expected = row.expected(role)
    refused = expected in (LOGIN, 403)
    client = _client_for(client, world, role)
    if row.setup is not None:
        row.setup(world)
    before = _database_state() if refused else None

    response = _send(client, row, world)

    if expected == LOGIN:
        assert _is_login_redirect(response), (
            f"{row.method} {row.name} as {role}: {response.status_code} "
            f"{response.get('Location', '')}, not a redirect to the login page"
        )
    else:
        assert response.status_code == expected, (
            f"{row.method} {row.name} as {role}: {response.status_code}, expected {expected}"
        )
    if refused:
        assert _database_state() == before, f"a refused {row.method} {row.name} changed data"


def _methods_by_name() -> dict[str, set[str]]:
    methods: dict[str, set[str]] = {}
    for row in PAGES:
        methods.setdefault(row.name, set()).add(row.method)
    return methods


@pytest.mark.parametrize(
    ("row", "method"),
    [
        pytest.param(
            next(r for r in PAGES if r.name == name), method, id=f"{name}-{method}-approver"
        )
        for name, listed in _methods_by_name().items()
        for method in ("GET", "POST")
        if method not in listed
    ],
)
def test_page_refuses_methods_the_table_does_not_list(client, world, row, method):
    """So a view that starts accepting POST (or GET) needs a row, and a permission decision."""
    client.force_login(world.users["approver"])
    url = _url(row, world)
    before = _database_state()
    response = client.get(url) if method == "GET" else client.post(url, {})
    assert response.status_code == 405
    assert _database_state() == before


@pytest.mark.parametrize(
    "row",
    [pytest.param(row, id=f"{row.name}-{row.method}") for row in PAGES if row.anonymous == LOGIN],
)
def test_anonymous_htmx_request_gets_no_fragment_only_a_login_redirect(client, world, row):
    """htmx cannot follow a 302 into a full page; it gets HX-Redirect and an empty body."""
    response = _send(client, row, world, **{"HX-Request": "true"})
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith(f"{reverse('login')}?next=")
    assert response.content == b""


@pytest.mark.parametrize(
    "row", [pytest.param(row, id=row.name) for row in PAGES if row.method == "POST"]
)
def test_post_without_csrf_token_is_refused_and_changes_nothing(world, row):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["approver"])
    before = _database_state()

    response = _send(client, row, world)

    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert _database_state() == before
    assert "_auth_user_id" in client.session  # not even logged out


@pytest.mark.parametrize("role", ["no_group", "reviewer", "approver"])
@pytest.mark.parametrize("name", ["admin:index", "admin:reviewapp_project_changelist"])
def test_admin_is_closed_to_users_who_are_not_staff(client, world, name, role):
    client.force_login(world.users[role])
    response = client.get(reverse(name))
    if response.status_code == 302:
        assert response["Location"].startswith(f"{reverse('admin:login')}?next=")
    else:
        assert response.status_code == 403


# The JSON API, from its OpenAPI schema ------------------------------------------------------

SCHEMA = api.get_openapi_schema()
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
API_OPERATIONS = [
    (method.upper(), path, operation)
    for path, operations in SCHEMA["paths"].items()
    for method, operation in operations.items()
    if method in HTTP_METHODS
]
# Routed by the API but not operations of its schema: the schema, its docs, the JSON 404
# for unknown paths and the root. None of them touches data.
API_ROUTES_OUTSIDE_THE_SCHEMA = {"openapi-json", "openapi-view", "no_such_endpoint", "api-root"}


def _is_public(operation: dict) -> bool:
    return not operation.get("security", SCHEMA.get("security"))


def _api_url(path: str, w: World) -> str:
    values = {
        "slug": w.project.slug,
        "category_id": w.empty_category.pk,
        "image_id": w.image.pk,
        "run_id": w.run.pk,
        "version_id": w.version.pk,
        "a_id": w.version.pk,
        "b_id": w.other_version.pk,
        "prediction_id": w.prediction.pk,
        "audit_id": w.audit.pk,
        "webhook_id": w.webhook.pk,
        "id": w.notification.pk,
        "batch_id": w.batch.pk,
        "opinion_id": w.opinion.pk,
    }
    for name, value in values.items():
        path = path.replace(f"{{{name}}}", str(value))
    assert "{" not in path, f"{path}: add its path parameter to _api_url()"
    return path


def _api_cases():
    for method, path, operation in API_OPERATIONS:
        yield pytest.param(method, path, operation, id=f"{operation['operationId']}-{method}")


def test_openapi_json_and_docs_are_public_and_list_what_is_tested(client):
    response = client.get(reverse("api:openapi-json"))
    assert response.status_code == 200
    served = {
        (method.upper(), path)
        for path, operations in response.json()["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }
    assert served == {(method, path) for method, path, _ in API_OPERATIONS}
    assert client.get(reverse("api:openapi-view")).status_code == 200


def test_every_api_route_is_an_operation_of_the_schema():
    """An endpoint left out of the schema would escape the 401 checks below."""
    routed = {
        route.name
        for entry in get_resolver().url_patterns
        if isinstance(entry, URLResolver) and entry.namespace == "api"
        for route in entry.url_patterns
    }
    documented = {operation["operationId"] for _, _, operation in API_OPERATIONS}
    hidden = routed - documented - API_ROUTES_OUTSIDE_THE_SCHEMA
    assert not hidden, f"API routes {sorted(hidden)} are not in the OpenAPI schema."


@pytest.mark.parametrize(("method", "path", "operation"), list(_api_cases()))
def test_api_operation_refuses_anonymous_callers(client, world, method, path, operation):
    before = _database_state()
    response = client.generic(method, _api_url(path, world))
    if _is_public(operation):
        assert response.status_code not in (401, 403) and response.status_code < 500
        return
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == 'Bearer realm="loupe"'
    assert response.json()["detail"].startswith("Authentication required")
    assert _database_state() == before


@pytest.mark.parametrize(("method", "path", "operation"), list(_api_cases()))
def test_api_operation_refuses_an_unknown_token(client, world, method, path, operation):
    response = client.generic(
        method, _api_url(path, world), headers={"Authorization": "Bearer lp_not-a-real-key"}
    )
    if not _is_public(operation):
        assert response.status_code == 401, response.content


# The same permissions as the pages: only approvers create or change projects and delete or
# merge categories; every other operation is open to both groups, and none to a user without.
API_APPROVER_ONLY = {"project_create", "project_update", "category_delete", "category_merge"}
# A valid body for each operation that takes one, so the permission check is what answers
# (ninja validates a body before the view runs). ``{path}`` parameters come from _api_url().
API_BODIES: dict[str, Callable[[World], dict]] = {
    "project_create": lambda w: {"name": "Fresh", "slug": "fresh"},
    "project_update": lambda w: {"name": "Renamed"},
    "category_create": lambda w: {"name": "bird"},
    "category_update": lambda w: {"name": "kitten"},
    "category_merge": lambda w: {"into": w.other_category.pk},
    "training_run_start": lambda w: {},
    "image_decide": lambda w: {"action": "confirm", "revision": w.image.revision},
    "images_decide": lambda w: {
        "action": "confirm",
        "images": [{"id": w.image.pk, "revision": w.image.revision}],
    },
    "image_upload": lambda w: {  # multipart
        "files": SimpleUploadedFile("new.png", image_bytes(seed=4242), content_type="image/png")
    },
}

# Approval and rollout: approvers only. Each operation needs a version in the
# right stage first, made by API_SETUP before the database state is taken.
API_APPROVER_ONLY |= {
    "model_version_approve",
    "model_version_reject",
    "model_version_stage",
    "project_rollback",
}
API_BODIES |= {
    "model_version_approve": lambda w: {"note": "ok", "override_reason": "tested"},
    "model_version_reject": lambda w: {"note": "no"},
    "model_version_stage": lambda w: {"stage": "shadow"},
    "project_rollback": lambda w: {"reason": "tested"},
}


def _rollout_setup(w: World, *, live: bool) -> None:
    from reviewapp import rollout

    actor = w.users["approver"]
    for version in (w.version, w.other_version) if live else (w.version,):
        rollout.version_approve(version=version, actor=actor, note="ok", override_reason="t")
    if live:
        rollout.version_stage_set(version=w.version, stage="live", actor=actor)
        rollout.version_stage_set(
            version=w.other_version, stage="limited", actor=actor, reason="tested"
        )


# Label audits
API_BODIES |= {"label_audit_start": lambda w: {"mode": "fast", "k": 2}}
# Second opinions: the world's pending relabel has no proposer left, so anyone may agree.
API_BODIES |= {
    "second_opinion_resolve": lambda w: {"action": "agree", "revision": w.image.revision}
}


def _audit_running(w: World) -> None:
    LabelAudit.objects.filter(pk=w.audit.pk).update(status="running", phase="folds")


# Webhooks: approvers only.
API_APPROVER_ONLY |= {
    "webhook_list",
    "webhook_create",
    "webhook_update",
    "webhook_delete",
    "webhook_deliveries",
}
API_BODIES |= {
    "webhook_create": lambda w: {"url": "http://127.0.0.1:9/new", "events": ["run.failed"]},
    "webhook_update": lambda w: {"events": ["audit.finished"]},
}

API_SETUP: dict[str, Callable[[World], None]] = {
    "model_version_stage": lambda w: _rollout_setup(w, live=False),
    "project_rollback": lambda w: _rollout_setup(w, live=True),
    "label_audit_cancel": _audit_running,
}


# Serving: predict needs a live version with a real model: a tiny one, trained
# once for the whole module. Client tokens are tested in test_api_predict.
@cache
def _tiny_model():
    import tempfile

    from tests.factories import train_colour_model

    return train_colour_model(tempfile.mkdtemp(prefix="loupe-permissions-model-"))


def _serving_setup(w: World) -> None:
    from tests.factories import served_version

    served_version(w.project, _tiny_model(), stage="live", traffic_share=100)


def _png(name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(seed=4444), content_type="image/png")


def _onnx_setup(w: World) -> None:
    """The world's version gets the tiny model's ONNX export, so a download can succeed."""
    import shutil

    from django.conf import settings

    exported = _tiny_model().onnx
    relative = f"models/{w.project.pk}/permissions/model.onnx"
    target = Path(settings.MEDIA_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exported.path, target)
    ModelVersion.objects.filter(pk=w.version.pk).update(
        onnx_file=relative, onnx_sha256=exported.sha256, onnx_spec=exported.spec
    )


API_SETUP |= {"predict": _serving_setup, "predict_batch": _serving_setup}
API_SETUP |= {"model_version_onnx": _onnx_setup, "model_version_onnx_spec": _onnx_setup}
API_BODIES |= {
    "predict": lambda w: {"image": _png("a.png")},
    "predict_batch": lambda w: {"images": [_png("a.png"), _png("b.png")]},
}


# Notifications: the caller's own, so every authenticated user may list and read theirs.
API_FOR_EVERY_USER = {"notification_list", "notification_read"}


def _caller_notification(w: World) -> None:
    w.notification = _notification_for(w.caller, w)


API_SETUP |= {"notification_read": _caller_notification}


def _api_role_cases():
    for method, path, operation in API_OPERATIONS:
        name = operation["operationId"]
        for role in ("no_group", "reviewer", "approver"):
            yield pytest.param(method, path, operation, role, id=f"{name}-{method}-{role}")


def _api_send(client: Client, method: str, path: str, operation: dict, w: World, key: str):
    url, headers = _api_url(path, w), {"Authorization": f"Bearer {key}"}
    content = (operation.get("requestBody") or {}).get("content", {})
    if not content:
        return client.generic(method, url, headers=headers)
    name = operation["operationId"]
    assert name in API_BODIES, f"{name} takes a body: add a valid one to API_BODIES."
    body = API_BODIES[name](w)
    if "multipart/form-data" in content:
        return client.post(url, body, headers=headers)
    return client.generic(
        method, url, json.dumps(body), content_type="application/json", headers=headers
    )


@pytest.mark.parametrize(("method", "path", "operation", "role"), list(_api_role_cases()))
def test_api_operation_answers_each_group_as_its_permissions_say(
    client, world, method, path, operation, role
):
    _, key = services.api_token_create(user=world.users[role], name="script")
    world.caller = world.users[role]
    API_SETUP.get(operation["operationId"], lambda w: None)(world)
    name = operation["operationId"]
    refused = (role == "no_group" and name not in API_FOR_EVERY_USER) or (
        role == "reviewer" and name in API_APPROVER_ONLY
    )
    before = _database_state()

    response = _api_send(client, method, path, operation, world, key)

    if refused:
        assert response.status_code == 403, response.content
        after = _database_state()
        for state in (before, after):
            state.pop("reviewapp.ApiToken")  # a token's use is recorded on it
        assert after == before
    else:
        # The bodies above are valid, so an authorized caller's request goes through.
        assert 200 <= response.status_code < 300, response.content

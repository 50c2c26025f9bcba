"""Browser tests: Debian's chromium, driven by Playwright, against a live server and a worker.

Run them with ``pytest -m browser tests/browser``; each screen is saved as a PNG under
``test-artifacts/screens/<test name>/`` at the repository root (git-ignored).
"""

import importlib
import os
import re
import shutil
import threading
import warnings
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User

from tests.factories import UserFactory

# A conftest applies only to its own folder; the broker and worker fixtures are in tests/.
from tests.reviewapp.conftest import media_root  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"  # UserFactory's
SCREENS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screens"


@pytest.fixture(scope="module")
def browser():
    """One headless chromium per test module.

    Per module, not per session: Playwright's sync API keeps an event loop running in this
    thread, and the rest of a full test run should not inherit it.
    """
    if shutil.which("chromium") is None or not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"!!! chromium is not installed ({CHROMIUM}): the browser tests did NOT run. "
            "Install Debian's package: apt-get install chromium"
        )
    from playwright.sync_api import sync_playwright

    # With Playwright's loop running, Django refuses ORM calls from this thread
    # (SynchronousOnlyOperation); the tests' own ORM calls are synchronous, so this is
    # pytest-django's documented workaround, undone when the module's browser closes.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class LiveRequests:
    """Counts the live server's connections from accept to close, so a teardown can wait for them.

    Closing a browser context aborts its requests only in the browser: the server's thread can
    still be writing to the database when the transactional test's flush runs, and on
    PostgreSQL the flush then fails and the next test meets this one's rows (seen in CI).
    socketserver does not track daemon threads, hence the count.
    """

    def __init__(self, httpd):
        self._open = 0
        self._changed = threading.Condition()
        accept, serve = httpd.process_request, httpd.process_request_thread

        def counted_accept(request, client_address):
            with self._changed:
                self._open += 1
            try:
                accept(request, client_address)
            except BaseException:
                self._closed()
                raise

        def counted_serve(request, client_address):
            try:
                serve(request, client_address)
            finally:
                self._closed()

        # Instance attributes shadow the methods; ThreadingMixIn looks both up on self.
        httpd.process_request, httpd.process_request_thread = counted_accept, counted_serve

    def _closed(self):
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._open == 0, timeout)


@pytest.fixture(scope="session")
def live_requests(live_server) -> LiveRequests:
    return LiveRequests(live_server.thread.httpd)


@pytest.fixture(autouse=True)
def _live_server_settles(request):
    """After a test that used the live server, wait for its requests before the flush.

    Autouse fixtures set up after pytest-django's, so this teardown runs before the
    database's; the test's own ``context.close()`` has run by then.
    """
    if "live_server" not in request.fixturenames:
        yield
        return
    in_flight = request.getfixturevalue("live_requests")
    yield
    if not in_flight.wait_idle(timeout=30):
        warnings.warn("the live server still had requests open 30 s after the test", stacklevel=1)


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context (no cookies) on the live server; actions wait up to 10 s."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def screenshot(request):
    """``screenshot(page, "name")`` saves a full-page PNG, numbered in the order taken."""
    folder = SCREENS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    taken = []

    def take(page, name: str, *, full_page: bool = True) -> Path:
        path = folder / f"{len(taken) + 1:02d}-{name}.png"
        # Chromium's capture can hang while a navigation is under way.
        page.wait_for_load_state("load")
        # A loaded CI machine can take more than the 10 s actions get to capture a full page.
        page.screenshot(path=path, full_page=full_page, animations="disabled", timeout=30_000)
        taken.append(path)
        return path

    yield take
    print(f"\n{len(taken)} screenshot(s) of {request.node.name} in {folder}")


# Counts the swaps of the review queue's progress line, which each decision refreshes once.
COUNT_PROGRESS_SWAPS = """
window.__progressSwaps = 0;
document.addEventListener("htmx:afterSettle", function (event) {
  if (event.detail.elt && event.detail.elt.id === "review-progress") window.__progressSwaps++;
});
"""


@pytest.fixture
def progress_swaps(page):
    """``progress_swaps()``: how often the review queue's progress line has been swapped."""
    page.add_init_script(COUNT_PROGRESS_SWAPS)
    return lambda: page.evaluate("window.__progressSwaps")


def _reviewers_group() -> Group:
    """The `reviewers` group as the migrations make it.

    A transactional test's flush empties auth_group, and the browser tests need one:
    the live server runs in another thread, so they cannot roll back in a transaction.
    """
    groups = importlib.import_module("reviewapp.migrations.0002_groups")
    training = importlib.import_module("reviewapp.migrations.0004_training_permissions")
    group, _ = Group.objects.get_or_create(name="reviewers")
    codenames = [*groups.REVIEWER_PERMS, *training.TRAINING_PERMS]
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="reviewapp", codename__in=codenames)
    )
    return group


@pytest.fixture
def reviewer_user(transactional_db) -> User:
    """A member of `reviewers`, with UserFactory's password, as a real user would be."""
    _reviewers_group()
    return UserFactory(username="rita", groups=["reviewers"])


@pytest.fixture
def log_in(reviewer_user):
    """``log_in(page)`` signs the reviewer in through the login form."""
    from playwright.sync_api import expect

    def sign_in(page, user: User = reviewer_user):
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator(".user-menu summary")).to_contain_text(user.get_username())
        return user

    return sign_in

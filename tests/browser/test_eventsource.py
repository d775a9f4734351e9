"""Browser end-to-end tests: a real Chromium ``EventSource`` on the hub's ``/`` page.

The hub binary is started as ``hubbub serve --dev --listen 127.0.0.1:0`` (the
kernel picks the port; the hub's ``listening addr=`` log line says which)
(``target/debug/hubbub`` by default, overridable with ``HUBBUB_BIN``), headless
Chromium is driven by Selenium through Debian's ``/usr/bin/chromium`` and
``/usr/bin/chromedriver`` (never selenium-manager), and updates are published
both from Python (urllib) and from the page's own Publish form.

Missing browser dependencies skip these tests locally but FAIL them when
``CI=true``; run ``.ci/install-deps`` to install them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from verifier import stop_process  # noqa: E402  tests/deploy/verifier.py (shared test helpers)

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    SELENIUM_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the machine
    SELENIUM_IMPORT_ERROR = exc

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_DIR = REPO_ROOT / "target"
HUBBUB_BIN = Path(os.environ.get("HUBBUB_BIN", str(TARGET_DIR / "debug" / "hubbub")))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
JWT_KEY = b"!ChangeThisMercureHubJWTSecretKey!"
DEMO_TOPIC = "https://example.com/demo"
IN_CI = os.environ.get("CI", "").lower() == "true"

HUB_START_TIMEOUT = 30.0
EVENT_TIMEOUT = 15.0

# Never route loopback traffic through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- helpers


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mint_jwt(payload: dict, key: bytes = JWT_KEY) -> str:
    """HS256 JWT with the standard library only."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    signature = b64url(hmac.new(key, signing_input, hashlib.sha256).digest())
    return f"{header}.{body}.{signature}"


PUBLISHER_TOKEN = mint_jwt({"mercure": {"publish": ["*"]}})


# `hubbub serve` logs where it listens once bound: `... listening addr=127.0.0.1:PORT ...`.
LISTENING = re.compile(rb"\blistening\b.*?\baddr=\S*?:(\d+)\b")


def unique_topic() -> str:
    return f"https://example.com/browser-test/{uuid.uuid4()}"


def unique_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def require_browser_deps() -> None:
    """Skip locally, but fail loudly in CI, when the browser tooling is missing."""
    problems = []
    if SELENIUM_IMPORT_ERROR is not None:
        problems.append(f"python package 'selenium' is not importable ({SELENIUM_IMPORT_ERROR})")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            problems.append(f"{path} is missing")
    if problems:
        msg = "browser test dependencies missing: " + "; ".join(problems) + " (run .ci/install-deps first)"
        if IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


class Hub:
    """A running ``hubbub serve --dev`` process on a loopback port the kernel picked."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.log_path = workdir / "hub.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub_url(self) -> str:
        return f"{self.base_url}/.well-known/mercure"

    def log_tail(self, limit: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no hub log)"
        return text[-limit:]

    def start(self) -> None:
        if not (HUBBUB_BIN.is_file() and os.access(HUBBUB_BIN, os.X_OK)):
            pytest.fail(
                f"hub binary {HUBBUB_BIN} not found: run `cargo build -p hubbub` "
                "(or set HUBBUB_BIN)",
                pytrace=False,
            )
        log = open(self.log_path, "ab")
        log.write(b"\n=== starting hub on 127.0.0.1:0 ===\n")
        log.flush()
        offset = log.tell()
        self.proc = subprocess.Popen(
            [str(HUBBUB_BIN), "serve", "--dev", "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
            # The `listening` line is an info log: keep it whatever RUST_LOG says.
            env=dict(os.environ, RUST_LOG="info,chitchat=error"),
            start_new_session=True,
        )
        log.close()
        last_error = "no `listening` line in its log"
        deadline = time.monotonic() + HUB_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                last_error = f"hub exited early with code {self.proc.returncode}"
                break
            if not self.port:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    found = LISTENING.search(f.read())
                self.port = int(found.group(1)) if found else 0
            if self.port:
                try:
                    with HTTP.open(f"{self.base_url}/healthz", timeout=2) as res:
                        if res.status == 200:
                            return
                        last_error = f"/healthz answered {res.status}"
                except (urllib.error.URLError, OSError) as exc:
                    last_error = f"/healthz not reachable: {exc}"
            time.sleep(0.1)
        else:
            last_error = f"not healthy within {HUB_START_TIMEOUT}s ({last_error})"
        self.stop()
        pytest.fail(f"could not start the hub: {last_error}\n--- hub log ---\n{self.log_tail()}", pytrace=False)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, grace=10)

    def publish_ok(self, topics, data, **kw) -> str:
        """`publish` that the hub must accept (200); returns the body."""
        status, body = self.publish(topics, data, **kw)
        assert status == 200, f"publish answered {status}: {body!r}"
        return body

    def publish(self, topics, data, *, id=None, type=None, private=False, token=PUBLISHER_TOKEN):
        """POST an update; returns (status, body)."""
        if isinstance(topics, str):
            topics = [topics]
        fields = [("topic", t) for t in topics] + [("data", data)]
        if id is not None:
            fields.append(("id", id))
        if type is not None:
            fields.append(("type", type))
        if private:
            fields.append(("private", "on"))
        req = urllib.request.Request(
            self.hub_url,
            data=urllib.parse.urlencode(fields).encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": f"Bearer {token}",
            },
        )
        try:
            with HTTP.open(req, timeout=10) as res:
                return res.status, res.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")


class Page:
    """The hub's ``/`` page in the browser, with helpers for the test."""

    def __init__(self, driver, hub: Hub):
        self.driver = driver
        self.hub = hub

    def el(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def fill(self, element_id: str, value: str) -> None:
        field = self.el(element_id)
        field.clear()
        if value:
            field.send_keys(value)
        actual = field.get_property("value")
        assert actual == value, f"#{element_id} holds {actual!r} after typing {value!r}"

    def status(self) -> str:
        return self.el("status").text.strip()

    def events(self) -> list[dict]:
        """Every rendered event: id, type, exact data and whether the <pre> holds any element."""
        return self.driver.execute_script(
            """
            return Array.from(document.querySelectorAll('#events > li')).map(function (li) {
              var pre = li.querySelector('pre');
              return {
                id: li.getAttribute('data-id'),
                type: li.getAttribute('data-type'),
                text: li.textContent,
                data: pre ? pre.textContent : null,
                pre_children: pre ? pre.children.length : -1
              };
            });
            """
        )

    def diagnostics(self) -> str:
        parts = []
        try:
            parts.append(f"status={self.status()!r}")
            parts.append(f"publish-result={self.el('publish-result').text!r}")
            parts.append(f"events={json.dumps(self.events(), indent=1)}")
        except WebDriverException as exc:
            parts.append(f"(page state unavailable: {exc.msg})")
        try:
            logs = self.driver.get_log("browser")
            parts.append("browser console:\n" + "\n".join(f"  {e.get('level')} {e.get('message')}" for e in logs))
        except WebDriverException:
            pass
        try:
            TARGET_DIR.mkdir(exist_ok=True)
            shot = TARGET_DIR / "browser-test-failure.png"
            self.driver.save_screenshot(str(shot))
            parts.append(f"screenshot: {shot}")
        except WebDriverException:
            pass
        parts.append("--- hub log (tail) ---\n" + self.hub.log_tail())
        return "\n".join(parts)

    def wait_for(self, what: str, predicate, timeout: float = EVENT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.05)

    def wait_for_event(self, event_id: str, timeout: float = EVENT_TIMEOUT) -> dict:
        def find():
            return next((e for e in self.events() if e["id"] == event_id), None)

        return self.wait_for(f"event id {event_id!r} in #events", find, timeout)

    def subscribe(self, topics: str, last_event_id: str = "", event_type: str = "") -> None:
        assert self.status() == "closed"
        self.fill("topic", topics)
        self.fill("last-event-id", last_event_id)
        self.fill("event-type", event_type)
        self.el("subscribe").click()
        self.wait_for("#status to read 'open'", lambda: self.status() == "open")

    def subscribe_new(self, **kw) -> str:
        """Subscribes to a topic of its own (nothing else publishes there); returns it."""
        topic = unique_topic()
        self.subscribe(topic, **kw)
        return topic

    def screenshot(self) -> None:
        TARGET_DIR.mkdir(exist_ok=True)
        self.driver.save_screenshot(str(TARGET_DIR / "browser-test.png"))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="hubbub-browser-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(workdir):
    h = Hub(workdir)
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def driver(workdir):
    require_browser_deps()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = workdir / "chromium-profile"
    profile.mkdir()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    try:
        drv = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        pytest.fail(f"could not start headless Chromium via {CHROMEDRIVER}: {exc.msg}", pytrace=False)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


@pytest.fixture
def page(driver, hub):
    """A freshly loaded ``/`` page (reloading closes the previous test's EventSource)."""
    driver.get(hub.base_url + "/")
    p = Page(driver, hub)
    p.wait_for("the page script to initialise #status", lambda: p.status() == "closed", timeout=10)
    yield p
    driver.get("about:blank")


# --------------------------------------------------------------------------- tests


def test_page_served_with_expected_elements(page):
    for element_id in (
        "topic", "last-event-id", "subscribe", "status", "events", "pub-topic", "pub-data",
        "pub-id", "pub-type", "pub-private", "pub-token", "publish", "publish-result", "cluster",
    ):
        assert page.driver.find_elements(By.ID, element_id), f"#{element_id} missing from /"
    assert page.el("topic").get_property("value") == DEMO_TOPIC
    assert page.el("pub-topic").get_property("value") == DEMO_TOPIC
    assert page.status() == "closed"


def test_eventsource_receives_update_published_over_http(page, hub):
    topic = page.subscribe_new()

    event_id = unique_id()
    data = 'first line\n  second line, indented\n<b>not bold</b> & "quoted" — ünïcødé\n{"json": [1, 2, 3]}'
    body = hub.publish_ok(topic, data, id=event_id)
    assert body.strip() == event_id

    event = page.wait_for_event(event_id)
    assert event["data"] == data
    assert event["type"] == "message"
    assert event["pre_children"] == 0, "event data was rendered as HTML, not text"
    assert event_id in event["text"]
    assert page.status() == "open"


def test_page_publish_form_round_trip(page, hub):
    topic = page.subscribe_new()

    event_id = unique_id()
    data = "typed in the form\nsecond line"
    page.fill("pub-topic", topic)
    page.fill("pub-data", data)
    page.fill("pub-id", event_id)
    page.fill("pub-type", "")
    page.fill("pub-token", PUBLISHER_TOKEN)
    assert not page.el("pub-private").is_selected()
    page.el("publish").click()

    result = page.wait_for(
        "#publish-result to show the response",
        lambda: page.el("publish-result").get_attribute("data-status"),
    )
    result_text = page.el("publish-result").text
    assert result == "200", f"publish form got {result}: {result_text!r}\n{page.diagnostics()}"
    assert result_text.startswith("200")
    assert event_id in result_text

    event = page.wait_for_event(event_id)
    assert event["data"] == data
    page.screenshot()


def test_page_publish_form_without_token_is_rejected(page, hub):
    page.fill("pub-token", "")
    page.el("publish").click()
    result = page.wait_for(
        "#publish-result to show the response",
        lambda: page.el("publish-result").get_attribute("data-status"),
    )
    assert result == "401", page.el("publish-result").text
    assert page.el("publish-result").text.startswith("401")


def test_named_event_type_is_delivered_to_listener(page, hub):
    topic = page.subscribe_new(event_type="greeting")

    event_id = unique_id()
    hub.publish_ok(topic, "hello, named listener", id=event_id, type="greeting")

    event = page.wait_for_event(event_id)
    assert event["type"] == "greeting"
    assert event["data"] == "hello, named listener"
    assert "type: greeting" in event["text"]


def test_private_update_not_shown_to_anonymous_subscriber(page, hub):
    topic = page.subscribe_new()

    private_id = unique_id()
    hub.publish_ok(topic, "secret", id=private_id, private=True)

    public_id = unique_id()
    hub.publish_ok(topic, "for everyone", id=public_id)

    # Updates to one topic are delivered in order: once the public one has
    # arrived, the private one (published before it) would have too.
    event = page.wait_for_event(public_id)
    assert event["data"] == "for everyone"
    ids = [e["id"] for e in page.events()]
    assert private_id not in ids, f"private update leaked to an anonymous subscriber: {ids}"
    assert all(e["data"] != "secret" for e in page.events())


def test_several_topic_selectors_in_one_subscription(page, hub):
    first, second = unique_topic(), unique_topic()
    page.subscribe(f"{first} {second}")

    ids = []
    for topic in (first, second):
        event_id = unique_id()
        hub.publish_ok(topic, f"to {topic}", id=event_id)
        ids.append(event_id)
    for event_id, topic in zip(ids, (first, second)):
        assert page.wait_for_event(event_id)["data"] == f"to {topic}"


def test_last_event_id_resumes_from_history(page, hub):
    topic = unique_topic()
    ids = [unique_id() for _ in range(3)]
    for n, event_id in enumerate(ids):
        hub.publish_ok(topic, f"update {n}", id=event_id)

    # Subscribing after the fact, resuming after the first update, replays the other two.
    page.subscribe(topic, last_event_id=ids[0])
    page.wait_for_event(ids[1])
    page.wait_for_event(ids[2])
    events = page.events()
    assert [e["id"] for e in events] == [ids[2], ids[1]], "newest first, nothing before the resume point"
    assert [e["data"] for e in events] == ["update 2", "update 1"]

"""Browser end-to-end tests: a real Chromium ``EventSource`` on the hub's ``/`` page.

The hub binary is started as ``hubbub serve --dev --listen 127.0.0.1:0`` (the
kernel picks the port; the hub's ``listening addr=`` log line says which), and
for the cluster cases as three such processes joined with ``--seeds`` (gossip
and relay on port 0 too, read back from their ``cluster node started`` lines):
the page subscribes on node 1, updates are published on node 3. Selection,
URL patterns / URI templates and private updates are checked in both protocol
generations: Mercure 1.0 (``match=``, ``match_urlpattern=``, RFC 9068 access
tokens in the ``__Secure-mercure_access_token`` cookie) and 0.x (the page's
"Mercure 0.x" switch: ``topic=``, ``mercure``-claim tokens in the
``mercureAuthorization`` cookie). Chromium treats ``http://127.0.0.1`` as a
secure context and accepts ``__Secure-`` cookies there (checked by
``test_secure_prefixed_cookie_is_accepted_on_loopback``); a hub may still name
its 1.0 cookie otherwise (``oauth_cookie_name``), which the page learns from the
hub's RFC 9728 metadata.

The binary is ``target/debug/hubbub`` by default (overridable with
``HUBBUB_BIN``), headless Chromium is driven by Selenium through Debian's ``/usr/bin/chromium`` and
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

# `hubbub serve --dev` trusts this Mercure 1.0 issuer, HS256 with the dev key.
DEV_ISSUER = "https://dev.hubbub.invalid"
DETAIL_TYPE = "https://mercure.rocks/authorization-detail"


def mint_access_token(
    audience: str, grants, lifetime: int = 3600, issuer: str = DEV_ISSUER, payload=None
) -> str:
    """A Mercure 1.0 access token (RFC 9068, ``typ: at+jwt``) for the hub whose
    resource identifier is ``audience``; ``grants`` are ``(actions, topic matches)``;
    ``payload`` (if any) goes in every detail (what the subscription events show)."""
    now = int(time.time())
    details = [
        {"type": DETAIL_TYPE, "actions": list(actions), "topics": [{"match": t} for t in topics]}
        for actions, topics in grants
    ]
    if payload is not None:
        for detail in details:
            detail["payload"] = payload
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": "urn:hubbub:browser-test",
        "client_id": issuer,
        "iat": now,
        "exp": now + lifetime,
        "jti": f"urn:uuid:{uuid.uuid4()}",
        "authorization_details": details,
    }
    header = b64url(json.dumps({"alg": "HS256", "typ": "at+jwt"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    signature = b64url(hmac.new(JWT_KEY, signing_input, hashlib.sha256).digest())
    return f"{header}.{body}.{signature}"


class Generation:
    """One Mercure protocol generation, as the page and the tests speak it."""

    def __init__(self, name: str):
        assert name in ("1.0", "0.x")
        self.name = name

    def __repr__(self) -> str:
        return f"Mercure {self.name}"

    @property
    def legacy(self) -> bool:
        return self.name == "0.x"

    def publisher_token(self, hub: "Hub") -> str:
        if self.legacy:
            return PUBLISHER_TOKEN
        return mint_access_token(hub.hub_url, [(["publish"], ["*"])])

    def subscriber_token(self, hub: "Hub", selectors: list[str], payload=None) -> str:
        """A token allowing ``hub``'s subscribers to receive private updates of
        ``selectors``, with a subscription ``payload`` if given."""
        if self.legacy:
            claim = {"subscribe": list(selectors)}
            if payload is not None:
                claim["payload"] = payload
            return mint_jwt({"mercure": claim})
        return mint_access_token(hub.hub_url, [(["subscribe"], selectors)], payload=payload)

    def pattern(self, prefix: str) -> str:
        """A selector for the topics ``prefix/<one segment>``: a URL pattern in
        1.0 (``match_urlpattern``), a URI template in 0.x (``topic``)."""
        return f"{prefix}/{{id}}" if self.legacy else f"{prefix}/:id"

    def check_url(self, url: str, exact: int, patterns: int) -> None:
        """The page's EventSource URL has this generation's query parameters."""
        query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)
        names = [name for name, _ in query]
        if self.legacy:
            assert names == ["topic"] * (exact + patterns), url
        else:
            assert names == ["match"] * exact + ["match_urlpattern"] * patterns, url


GENERATIONS = [Generation("1.0"), Generation("0.x")]


# `hubbub serve` logs where it listens once bound: `... listening addr=127.0.0.1:PORT ...`.
LISTENING = re.compile(rb"\blistening\b.*?\baddr=\S*?:(\d+)\b")
# A cluster member logs its bound gossip address: `cluster node started node=.. gossip=ADDR ...`.
GOSSIP = re.compile(rb"\bcluster node started\b.*?\bgossip=(\S+)")


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

    def __init__(self, workdir: Path, name: str = "hub", args: tuple[str, ...] = ()):
        self.workdir = workdir
        self.name = name
        self.args = list(args)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        # A cluster member's bound gossip address (from its log), else None.
        self.gossip: str | None = None

    def __repr__(self) -> str:
        return f"{self.name}@{self.port}"

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
        log.write(f"\n=== starting {self.name} on 127.0.0.1:0 {' '.join(self.args)} ===\n".encode())
        log.flush()
        offset = log.tell()
        self.proc = subprocess.Popen(
            [str(HUBBUB_BIN), "serve", "--dev", "--listen", "127.0.0.1:0", *self.args],
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
            clustered = "--seeds" in self.args
            if not self.port or (clustered and not self.gossip):
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    logged = f.read()
                found = LISTENING.search(logged)
                self.port = int(found.group(1)) if found else 0
                gossip = GOSSIP.search(logged)
                self.gossip = gossip.group(1).decode() if gossip else None
            if self.port and (self.gossip or not clustered):
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
        pytest.fail(f"could not start {self.name}: {last_error}\n--- hub log ---\n{self.log_tail()}", pytrace=False)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, grace=10)

    def get_json(self, path: str):
        with HTTP.open(f"{self.base_url}{path}", timeout=5) as res:
            return json.loads(res.read())

    def is_ready(self) -> bool:
        try:
            with HTTP.open(f"{self.base_url}/readyz", timeout=2) as res:
                return res.status == 200
        except (urllib.error.URLError, OSError):
            return False

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

    def __init__(self, driver, hub: Hub, others: tuple[Hub, ...] = ()):
        self.driver = driver
        self.hub = hub
        # More hubs whose logs a failure shows (the rest of a cluster).
        self.others = others

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
        for h in (self.hub, *self.others):
            parts.append(f"--- {h.name} log (tail) ---\n" + h.log_tail())
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

    def use_generation(self, generation: Generation) -> None:
        """Flips the page's "Mercure 0.x" switch to ``generation``."""
        box = self.el("protocol-0x")
        if box.is_selected() != generation.legacy:
            box.click()
        assert box.is_selected() == generation.legacy
        assert self.el("urlpattern").is_displayed() != generation.legacy

    def subscribe_selectors(
        self, generation: Generation, exact=(), patterns=(), token: str = "", event_type: str = ""
    ) -> None:
        """Subscribes in ``generation``'s form: exact topics and patterns (URL
        patterns in 1.0, URI templates among the 0.x topic selectors), with
        ``token`` (if any) in the generation's cookie. Checks the EventSource URL."""
        assert self.status() == "closed"
        self.use_generation(generation)
        if generation.legacy:
            self.fill("topic", " ".join([*exact, *patterns]))
        else:
            self.fill("topic", " ".join(exact))
            self.fill("urlpattern", " ".join(patterns))
        self.fill("last-event-id", "")
        self.fill("event-type", event_type)
        self.fill("sub-token", token)
        self.el("subscribe").click()
        self.wait_for("#status to read 'open'", lambda: self.status() == "open")
        generation.check_url(self.el("sub-url").text, len(exact), len(patterns))

    def assert_absent(self, event_ids, marker_id: str, grace: float = 0.3) -> None:
        """Once ``marker_id`` (published after ``event_ids``) has arrived, and a
        little longer, none of ``event_ids`` has been shown."""
        self.wait_for_event(marker_id)
        time.sleep(grace)
        shown = [e["id"] for e in self.events()]
        leaked = [i for i in event_ids if i in shown]
        assert not leaked, f"delivered but should not have been: {leaked}\n{self.diagnostics()}"

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


def open_page(driver, hub: Hub, others: tuple[Hub, ...] = ()) -> Page:
    """Loads ``hub``'s ``/`` page (reloading closes the previous test's EventSource)."""
    driver.get(hub.base_url + "/")
    p = Page(driver, hub, others)
    p.wait_for("the page script to initialise #status", lambda: p.status() == "closed", timeout=10)
    return p


@pytest.fixture
def page(driver, hub):
    """A freshly loaded ``/`` page of the single hub."""
    yield open_page(driver, hub)
    driver.get("about:blank")


CLUSTER_SECRET = "browser-test-cluster-secret"
# The first member's seed, where nothing listens (port 1 is privileged): seeds make a
# node a cluster member, and no other member's address is known before it started.
NO_SEED = "127.0.0.1:1"
CLUSTER_WAIT = 40.0


def member_args(name: str, seeds: str) -> tuple[str, ...]:
    return (
        "--node-id", name,
        "--gossip-listen", "127.0.0.1:0",
        "--relay-listen", "127.0.0.1:0",
        "--seeds", seeds,
        "--cluster-secret", CLUSTER_SECRET,
        "--gossip-interval", "50ms",
    )


def wait_mesh(nodes: list[Hub], timeout: float = CLUSTER_WAIT) -> None:
    """Until every node is ready and lists each other one as a ready member
    with a connected relay link (as ``GET /cluster`` shows)."""
    deadline = time.monotonic() + timeout
    views: dict[str, object] = {}
    while True:
        views = {}
        for n in nodes:
            try:
                views[n.name] = n.get_json("/cluster")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                views[n.name] = f"unavailable: {exc}"

        def meshed(n: Hub) -> bool:
            view = views[n.name]
            if not isinstance(view, dict) or not view.get("ready"):
                return False
            members = view.get("members") or []
            for other in nodes:
                o = views[other.name]
                if other is n:
                    continue
                if not isinstance(o, dict) or not any(
                    m.get("node") == o.get("node") and m.get("ready") and m.get("link") == "connected"
                    for m in members
                ):
                    return False
            return True

        if all(n.is_ready() for n in nodes) and all(meshed(n) for n in nodes):
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.name} log ---\n{n.log_tail()}" for n in nodes)
            pytest.fail(
                f"the cluster did not mesh within {timeout}s; views: {json.dumps(views, indent=1)}\n{logs}",
                pytrace=False,
            )
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(workdir):
    """Three ``hubbub serve --dev`` processes joined into one cluster: each
    next one seeded with the gossip addresses of those already running."""
    nodes: list[Hub] = []
    try:
        for i in range(3):
            name = f"n{i + 1}"
            seeds = ",".join(n.gossip for n in nodes) or NO_SEED
            node = Hub(workdir, name, member_args(name, seeds))
            nodes.append(node)
            node.start()
        wait_mesh(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


class Topology:
    """Where the page subscribes (``sub``) and where updates are published (``pub``)."""

    def __init__(self, name: str, sub: Hub, pub: Hub, members: tuple[Hub, ...]):
        self.name = name
        self.sub = sub
        self.pub = pub
        self.members = members

    def publish(self, generation: Generation, topics, data: str, **kw) -> str:
        """Publishes on ``pub`` with ``generation``'s publisher token; must be accepted."""
        return self.pub.publish_ok(topics, data, token=generation.publisher_token(self.pub), **kw)


@pytest.fixture(scope="module", params=["single", "cluster"])
def topology(request):
    """One hub; or a 3-node cluster, subscribed on node 1 and published on node 3."""
    if request.param == "single":
        h = request.getfixturevalue("hub")
        return Topology("single", h, h, (h,))
    nodes = request.getfixturevalue("cluster")
    return Topology("cluster", nodes[0], nodes[2], tuple(nodes))


@pytest.fixture(params=GENERATIONS, ids=lambda g: g.name)
def generation(request) -> Generation:
    return request.param


@pytest.fixture
def gpage(driver, topology, generation):
    """The ``/`` page of the topology's subscribing node, switched to ``generation``."""
    others = tuple(h for h in topology.members if h is not topology.sub)
    p = open_page(driver, topology.sub, others)
    p.use_generation(generation)
    yield p
    driver.get("about:blank")


CUSTOM_COOKIE = "hubbub_browser_access_token"


@pytest.fixture(scope="module")
def custom_cookie_hub(workdir):
    """A single hub whose Mercure 1.0 cookie has another name (``oauth_cookie_name``)."""
    h = Hub(workdir, "custom-cookie", ("--oauth-cookie-name", CUSTOM_COOKIE))
    h.start()
    yield h
    h.stop()


# --------------------------------------------------------------------------- tests


def test_page_served_with_expected_elements(page):
    for element_id in (
        "topic", "last-event-id", "subscribe", "status", "events", "pub-topic", "pub-data",
        "pub-id", "pub-type", "pub-private", "pub-token", "publish", "publish-result", "cluster",
        "protocol-0x", "urlpattern", "sub-token", "sub-cookie-name", "sub-url",
        "presence", "presence-count", "presence-state", "presence-watch",
    ):
        assert page.driver.find_elements(By.ID, element_id), f"#{element_id} missing from /"
    assert page.el("topic").get_property("value") == DEMO_TOPIC
    assert page.el("pub-topic").get_property("value") == DEMO_TOPIC
    assert page.status() == "closed"
    # Mercure 1.0 by default; the switch turns the form into 0.x.
    assert not page.el("protocol-0x").is_selected()
    assert page.el("sub-url").text == "/.well-known/mercure?match=" + urllib.parse.quote(DEMO_TOPIC, safe="")
    page.wait_for(
        "the 1.0 cookie name from the hub's metadata",
        lambda: page.el("sub-cookie-name").text == "__Secure-mercure_access_token",
    )
    page.use_generation(Generation("0.x"))
    assert page.el("sub-url").text == "/.well-known/mercure?topic=" + urllib.parse.quote(DEMO_TOPIC, safe="")
    assert page.el("sub-cookie-name").text == "mercureAuthorization"
    # "Who is here" is off exactly when the metadata does not say `mercure_subscriptions`.
    meta = page.hub.get_json("/.well-known/oauth-protected-resource/.well-known/mercure")
    state = page.wait_for("the presence panel to settle", lambda: presence_state(page) != "loading" and presence_state(page))
    assert (state == "off") == (meta.get("mercure_subscriptions") is not True), (state, meta)
    if state == "off":
        assert "does not track active subscriptions" in page.el("presence-note").text
        assert not page.el("presence-watch").is_displayed()


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


@pytest.mark.parametrize("generation", GENERATIONS, ids=lambda g: g.name)
def test_page_publish_form_round_trip(page, hub, generation):
    """The form publishes with either generation's token (as the banner prints them)."""
    topic = page.subscribe_new()

    event_id = unique_id()
    data = "typed in the form\nsecond line"
    page.fill("pub-topic", topic)
    page.fill("pub-data", data)
    page.fill("pub-id", event_id)
    page.fill("pub-type", "")
    page.fill("pub-token", generation.publisher_token(hub))
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


def test_secure_prefixed_cookie_is_accepted_on_loopback(page):
    """Why the page may use the 1.0 default cookie on plain http: Chromium counts
    http://127.0.0.1 as a secure context and keeps ``__Secure-`` cookies set
    there with ``Secure``. Should that change, hubs for such pages need another
    ``oauth_cookie_name`` (see ``test_page_learns_the_hub_cookie_name``)."""
    assert page.driver.execute_script("return window.isSecureContext") is True
    page.driver.execute_script(
        "document.cookie = '__Secure-hubbub-probe=1; Path=/; Secure; SameSite=Strict';"
    )
    try:
        cookies = page.driver.execute_script("return document.cookie")
        assert "__Secure-hubbub-probe=1" in cookies, cookies
    finally:
        page.driver.execute_script(
            "document.cookie = '__Secure-hubbub-probe=; Path=/; Secure; SameSite=Strict; Max-Age=0';"
        )


# ---------------------------------------------- both generations, one hub and a 3-node cluster


def test_exact_match(gpage, topology, generation):
    topic = unique_topic()
    gpage.subscribe_selectors(generation, exact=[topic])

    event_id = unique_id()
    body = topology.publish(generation, topic, f"exact on {topology.name}", id=event_id)
    assert body.strip() == event_id
    event = gpage.wait_for_event(event_id)
    assert event["data"] == f"exact on {topology.name}"
    assert gpage.status() == "open"


def test_several_selectors_in_one_subscription(gpage, topology, generation):
    first, second, family = unique_topic(), unique_topic(), unique_topic()
    gpage.subscribe_selectors(generation, exact=[first, second], patterns=[generation.pattern(family)])

    published = []
    for topic in (first, second, f"{family}/7"):
        event_id = unique_id()
        topology.publish(generation, topic, f"to {topic}", id=event_id)
        published.append((event_id, topic))
    for event_id, topic in published:
        assert gpage.wait_for_event(event_id)["data"] == f"to {topic}"


def test_pattern_selector(gpage, topology, generation):
    """A URL pattern (1.0) or URI template (0.x) ``family/:id`` / ``family/{id}``:
    one more path segment matches; a deeper path or another family does not."""
    family = unique_topic()
    gpage.subscribe_selectors(generation, patterns=[generation.pattern(family)])

    matching = unique_id()
    topology.publish(generation, f"{family}/42", "in the family", id=matching)
    misses = []
    for topic in (f"{family}/42/deeper", f"{family}-other/42", family):
        event_id = unique_id()
        topology.publish(generation, topic, f"not for the pattern: {topic}", id=event_id)
        misses.append(event_id)
    marker = unique_id()
    topology.publish(generation, f"{family}/last", "marker", id=marker)

    assert gpage.wait_for_event(matching)["data"] == "in the family"
    gpage.assert_absent(misses, marker)


def test_non_matching_topic_receives_nothing(gpage, topology, generation):
    topic = unique_topic()
    gpage.subscribe_selectors(generation, exact=[topic])

    misses = []
    for other in (unique_topic(), f"{topic}/child", topic.upper()):
        event_id = unique_id()
        topology.publish(generation, other, "elsewhere", id=event_id)
        misses.append(event_id)
    marker = unique_id()
    topology.publish(generation, topic, "the subscribed topic", id=marker)
    gpage.assert_absent(misses, marker)
    assert [e["id"] for e in gpage.events()] == [marker]


@pytest.mark.parametrize(
    "grant, delivered",
    [(None, False), ("another topic", False), ("its topic", True), ("*", True)],
    ids=["anonymous", "token-for-another-topic", "token-for-its-topic", "token-for-all"],
)
def test_private_update_needs_an_authorizing_token(gpage, topology, generation, grant, delivered):
    """The page sends its subscriber token in the generation's cookie (EventSource
    cannot send headers); a private update reaches it only if that token allows
    the update's topic."""
    topic = unique_topic()
    selectors = {None: None, "another topic": [unique_topic()], "its topic": [topic], "*": ["*"]}[grant]
    token = generation.subscriber_token(topology.sub, selectors) if selectors else ""
    gpage.subscribe_selectors(generation, exact=[topic], token=token)

    private_id = unique_id()
    topology.publish(generation, topic, "secret", id=private_id, private=True)
    public_id = unique_id()
    topology.publish(generation, topic, "for everyone", id=public_id)

    if delivered:
        assert gpage.wait_for_event(private_id)["data"] == "secret"
        assert gpage.wait_for_event(public_id)["data"] == "for everyone"
        assert [e["id"] for e in gpage.events()] == [public_id, private_id], "in publication order"
    else:
        # Updates to one topic are delivered in order: once the public one has
        # arrived, the private one (published before it) would have too.
        gpage.assert_absent([private_id], public_id)
        assert all(e["data"] != "secret" for e in gpage.events())


def test_page_learns_the_hub_cookie_name(driver, custom_cookie_hub):
    """A hub naming its 1.0 cookie otherwise (``oauth_cookie_name``) says so in its
    metadata; the page stores the token under that name, so private updates arrive."""
    hub = custom_cookie_hub
    page = open_page(driver, hub)
    try:
        page.wait_for(
            "the cookie name from the hub's metadata",
            lambda: page.el("sub-cookie-name").text == CUSTOM_COOKIE,
        )
        v1 = Generation("1.0")
        topic = unique_topic()
        page.subscribe_selectors(v1, exact=[topic], token=v1.subscriber_token(hub, [topic]))
        private_id = unique_id()
        hub.publish_ok(topic, "secret", id=private_id, private=True, token=v1.publisher_token(hub))
        assert page.wait_for_event(private_id)["data"] == "secret"
    finally:
        driver.get("about:blank")


# ---------------------------------------------- who is here (active subscriptions)


class PlainSubscriber:
    """A subscription from Python: a streaming urllib GET with a dev token,
    open until ``close``. 1.0 subscribes with ``match=exact`` and
    ``match_urlpattern=pattern``, 0.x with both as ``topic=``."""

    def __init__(self, hub: Hub, generation: Generation, exact: str, pattern: str, payload):
        if generation.legacy:
            query = [("topic", exact), ("topic", pattern)]
        else:
            query = [("match", exact), ("match_urlpattern", pattern)]
        token = generation.subscriber_token(hub, ["*"], payload=payload)
        req = urllib.request.Request(
            f"{hub.hub_url}?{urllib.parse.urlencode(query)}",
            headers={"Accept": "text/event-stream", "Authorization": f"Bearer {token}"},
        )
        self.response = HTTP.open(req, timeout=30)
        assert self.response.status == 200, self.response.status

    def close(self) -> None:
        self.response.close()


def presence_rows(page: Page) -> list[dict]:
    """The "Who is here" panel's rows, as their data attributes."""
    return page.driver.execute_script(
        """
        return Array.from(document.querySelectorAll('#presence > li')).map(function (li) {
          var payload = li.querySelector('.pr-payload');
          return {
            id: li.getAttribute('data-id'),
            subscriber: li.getAttribute('data-subscriber'),
            match_type: li.getAttribute('data-match-type'),
            match: li.getAttribute('data-match'),
            payload: payload ? payload.textContent : null,
            text: li.textContent
          };
        });
        """
    )


def presence_state(page: Page) -> str:
    return page.el("presence-state").get_attribute("data-state")


def subscription_api(hub: Hub, token: str) -> dict:
    """``GET /.well-known/mercure/subscriptions`` with ``token``."""
    req = urllib.request.Request(
        f"{hub.base_url}/.well-known/mercure/subscriptions",
        headers={"Accept": "application/json", "Authorization": f"Bearer {token}"},
    )
    with HTTP.open(req, timeout=5) as res:
        return json.loads(res.read())


def test_presence_panel_follows_subscribers(gpage, topology, generation):
    """The page's "Who is here" panel lists the hub's active subscriptions (its
    metadata says ``mercure_subscriptions``) and keeps the list live from the
    subscription events: a subscriber from Python (on node 3 of a cluster, the
    page being on node 1) appears with both its matchers and payload, and
    disappears once it hangs up; the page's own subscriptions are listed too."""
    page, legacy = gpage, generation.legacy
    meta = page.hub.get_json("/.well-known/oauth-protected-resource/.well-known/mercure")
    assert meta.get("mercure_subscriptions") is True, meta
    # Without a token the subscription API refuses the page; the panel says so
    # (no cookie either: earlier tests' pages left theirs in this browser).
    page.driver.delete_all_cookies()
    page.fill("sub-token", "")
    page.el("presence-watch").click()
    page.wait_for("the panel to ask for a token", lambda: presence_state(page) == "unauthorized")
    assert presence_rows(page) == []

    token = generation.subscriber_token(page.hub, ["*"])
    page.fill("sub-token", token)
    page.el("presence-watch").click()
    page.wait_for("the panel to go live", lambda: presence_state(page) == "live")
    reserved = "/.well-known/mercure/subscriptions/" + ("{topic}/{subscriber}" if legacy else "*")
    own = page.wait_for(
        "the panel's own subscription to the subscription events",
        lambda: [r for r in presence_rows(page) if r["match"].endswith(reserved)],
    )
    assert own[0]["match_type"] == ("topic" if legacy else "urlpattern"), own

    # The page's Subscribe form: one more subscription of the page, listed live.
    mine = unique_topic()
    page.subscribe_selectors(generation, exact=[mine], token=token)
    row = page.wait_for(
        "the page's subscription in the panel",
        lambda: next((r for r in presence_rows(page) if r["match"] == mine), None),
    )
    assert row["match_type"] == ("topic" if legacy else "exact"), row

    exact, family = unique_topic(), unique_topic()
    pattern = generation.pattern(family)
    payload = {"name": "python", "n": 7}
    plain = PlainSubscriber(topology.pub, generation, exact, pattern, payload)
    try:
        rows = page.wait_for(
            "the Python subscriber's two matchers in the panel",
            lambda: (lambda rs: rs if len(rs) == 2 else None)(
                [r for r in presence_rows(page) if r["match"] in (exact, pattern)]
            ),
        )
        by_match = {r["match"]: r for r in rows}
        assert by_match[exact]["match_type"] == ("topic" if legacy else "exact"), rows
        assert by_match[pattern]["match_type"] == ("topic" if legacy else "urlpattern"), rows
        subscriber = rows[0]["subscriber"]
        assert subscriber and rows[1]["subscriber"] == subscriber, "one connection, one subscriber id"
        assert subscriber != row["subscriber"], "another connection, another subscriber id"
        assert all(r["payload"] and json.loads(r["payload"]) == payload for r in rows), rows
        assert page.el("presence-count").text == str(len(presence_rows(page)))

        # The panel holds what the subscription API says (as the page's node sees it).
        def agrees():
            api = {d["id"] for d in subscription_api(page.hub, token)["subscriptions"]}
            return api == {r["id"] for r in presence_rows(page)}

        page.wait_for("the panel to agree with the subscription API", agrees)
    finally:
        plain.close()

    page.wait_for(
        "the Python subscriber to leave the panel",
        lambda: not [r for r in presence_rows(page) if r["subscriber"] == subscriber],
        timeout=30,
    )
    assert any(r["match"] == mine for r in presence_rows(page)), "the page's own stays"
    assert page.el("presence-count").text == str(len(presence_rows(page)))


def test_presence_panel_says_when_the_hub_does_not_track(driver, workdir):
    """A hub with ``--subscriptions=false`` does not advertise
    ``mercure_subscriptions``: the panel says it is off, with no Watch button."""
    hub = Hub(workdir, "no-subscriptions", ("--subscriptions=false",))
    hub.start()
    try:
        meta = hub.get_json("/.well-known/oauth-protected-resource/.well-known/mercure")
        assert "mercure_subscriptions" not in meta, meta
        page = open_page(driver, hub)
        page.wait_for("the panel to say it is off", lambda: presence_state(page) == "off")
        assert "does not track active subscriptions" in page.el("presence-note").text
        assert not page.el("presence-watch").is_displayed()
        assert presence_rows(page) == [] and page.el("presence-count").text == "0"
    finally:
        driver.get("about:blank")
        hub.stop()

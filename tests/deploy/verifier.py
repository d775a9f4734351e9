"""End-to-end delivery verifier for a running hubbub cluster (stdlib only).

It plays the clients a deployment has: publishers that post sequenced updates at a
fixed rate to whichever node is in rotation, and subscribers that behave like a
browser's `EventSource` behind a load balancer (on stream end or error, wait the
SSE `retry:` delay and reconnect to *another* node with `Last-Event-ID`). Then it
checks the cluster's promise from the client side: every acknowledged update
reached every subscriber exactly once, and all subscribers saw the same order.

    nodes = [Node("hubbub-1", "127.0.0.1", 8081), ...]
    v = Verifier(nodes, rate=50, subscribers_per_node=3)
    v.start()                   # rotation poller, subscribers (connected), publishers
    ...                         # restart nodes, kill them, scale...
    summary = v.stop()          # stop publishing, let subscribers catch up, check
    assert summary["lost"] == 0 and summary["duplicates"] == 0

Timestamps are `time.monotonic()` of this process: the publisher puts its send
time into each update's data, so latency is measured on one clock.

Kept free of Docker and pytest on purpose: fault-injection suites drive the
cluster however they like and use this to judge the outcome.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import random
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

HUB_PATH = "/.well-known/mercure"
DEV_JWT_KEY = "!ChangeThisMercureHubJWTSecretKey!"


def mint_token(key: str = DEV_JWT_KEY, publish=("*",), subscribe=("*",)) -> str:
    """An HS256 Mercure JWT (no expiry), as `hubbub serve --dev` prints."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"mercure": {"publish": list(publish), "subscribe": list(subscribe)}}
    payload = b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = b64(hmac.new(key.encode(), signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


@dataclass(frozen=True)
class Node:
    """One hub node as clients reach it (a published port)."""

    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------- HTTP


def http_get(node: Node, path: str, timeout: float = 2.0, headers=None) -> tuple[int, bytes]:
    """(status, body); raises OSError / http.client errors on connection failure."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def is_ready(node: Node, timeout: float = 1.0) -> bool:
    try:
        return http_get(node, "/readyz", timeout)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def cluster_view(node: Node, timeout: float = 2.0) -> dict | None:
    """The node's `GET /cluster` JSON, or None when it does not answer 200."""
    try:
        status, body = http_get(node, "/cluster", timeout)
    except (OSError, http.client.HTTPException):
        return None
    return json.loads(body) if status == 200 else None


def publish(node: Node, topic: str, data: str, token: str, timeout: float = 2.0) -> tuple[int, str]:
    """One publish on a fresh connection: (status, body); body is the id on 200."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=timeout)
    try:
        return _post(conn, topic, data, token)
    finally:
        conn.close()


def _post(conn: http.client.HTTPConnection, topic: str, data: str, token: str) -> tuple[int, str]:
    body = urllib.parse.urlencode({"topic": topic, "data": data})
    conn.request(
        "POST",
        HUB_PATH,
        body=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    r = conn.getresponse()
    return r.status, r.read().decode(errors="replace").strip()


def percentiles(values: list[float]) -> dict:
    """p50/p99/max (and count) in milliseconds of values given in seconds."""
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(values)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 2)

    return {"count": len(s), "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": round(s[-1] * 1000, 2)}


# ----------------------------------------------------------------------- rotation


class Rotation:
    """Which nodes take traffic, as a load balancer that health-checks `/readyz` sees it.

    Clients pick among ready nodes; when none is known ready they try any node
    (a client with a stale list would too).
    """

    def __init__(self, nodes: list[Node], interval: float = 0.2):
        self._nodes = list(nodes)
        self._ready: set[Node] = set(nodes)
        self._lock = threading.Lock()
        self._interval = interval
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation", daemon=True)

    def start(self) -> None:
        self._poll()
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=5)

    def add(self, node: Node) -> None:
        with self._lock:
            if node not in self._nodes:
                self._nodes.append(node)

    @property
    def nodes(self) -> list[Node]:
        with self._lock:
            return list(self._nodes)

    def ready(self) -> list[Node]:
        with self._lock:
            return [n for n in self._nodes if n in self._ready]

    def pick(self, exclude=()) -> Node:
        exclude = set(exclude)
        with self._lock:
            nodes = list(self._nodes)
            ready = [n for n in nodes if n in self._ready and n not in exclude]
        if ready:
            return random.choice(ready)
        others = [n for n in nodes if n not in exclude]
        return random.choice(others or nodes)

    def _poll(self) -> None:
        for node in self.nodes:
            ok = is_ready(node, timeout=min(1.0, self._interval * 5))
            with self._lock:
                (self._ready.add if ok else self._ready.discard)(node)

    def _run(self) -> None:
        while not self._halt.wait(self._interval):
            self._poll()


# ---------------------------------------------------------------------- publisher


@dataclass
class Ack:
    publisher: str
    seq: int
    id: str
    node: str
    t_first: float  # first attempt
    t_sent: float  # the attempt that was acknowledged
    attempts: int


class Publisher(threading.Thread):
    """Publishes seq 1, 2, ... at `rate`/s to random nodes of the rotation.

    A connection error, a timeout or a 503 retries the *same* seq on another node;
    only a 200 counts as acknowledged (its body, the update id, is recorded). Any
    other status is a hard error (bad token, bad request) and ends the thread.
    An attempt that failed after the request was sent may still have been
    accepted: such updates can reach subscribers besides the acknowledged one
    (counted as `republished`, not as the hub's duplicates).
    """

    def __init__(self, rotation: Rotation, topic: str, rate: float, token: str,
                 nodes: list[Node] | None = None, timeout: float = 2.0, name: str = "publisher"):
        super().__init__(name=name, daemon=True)
        self.rotation = rotation
        self.topic = topic
        self.rate = rate
        self.token = token
        self.fixed_nodes = nodes  # publish only to these (no rotation)
        self.timeout = timeout
        self.acks: dict[int, Ack] = {}
        self.last_seq = 0  # attempted
        self.failures: list[tuple[float, str, str, str]] = []  # (t, "publisher#seq", node, why)
        self.error: str | None = None
        self._halt = threading.Event()
        self._conns: dict[Node, http.client.HTTPConnection] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=self.timeout * 4 + 5)

    def ack_list(self) -> list[Ack]:
        with self._lock:
            return [self.acks[s] for s in sorted(self.acks)]

    def _pick(self, tried: set[Node]) -> Node:
        if self.fixed_nodes:
            left = [n for n in self.fixed_nodes if n not in tried] or self.fixed_nodes
            return random.choice(left)
        return self.rotation.pick(exclude=tried)

    def _attempt(self, node: Node, data: str) -> tuple[int, str]:
        conn = self._conns.get(node)
        if conn is None:
            conn = self._conns[node] = http.client.HTTPConnection(node.host, node.port, timeout=self.timeout)
        try:
            return _post(conn, self.topic, data, self.token)
        except Exception:
            conn.close()
            self._conns.pop(node, None)
            raise

    def run(self) -> None:
        t0 = time.monotonic()
        seq = 0
        try:
            while not self._halt.is_set():
                seq += 1
                due = t0 + (seq - 1) / self.rate
                delay = due - time.monotonic()
                if delay > 0 and self._halt.wait(delay):
                    break
                self.last_seq = seq
                self._publish(seq)
        except Exception as e:  # noqa: BLE001 - reported in the summary
            self.error = f"{type(e).__name__}: {e}"
        finally:
            for conn in self._conns.values():
                conn.close()

    def _publish(self, seq: int) -> None:
        t_first = time.monotonic()
        tried: set[Node] = set()
        attempt = 0
        while True:
            attempt += 1
            node = self._pick(tried)
            t_sent = time.monotonic()
            data = json.dumps({"pub": self.name, "seq": seq, "attempt": attempt, "t": t_sent})
            try:
                status, body = self._attempt(node, data)
            except (OSError, http.client.HTTPException) as e:
                status, body = None, f"{type(e).__name__}: {e}"
            if status == 200:
                with self._lock:
                    self.acks[seq] = Ack(self.name, seq, body, node.name, t_first, t_sent, attempt)
                return
            if status not in (None, 502, 503, 504):
                raise RuntimeError(f"publish to {node} answered {status}: {body[:200]}")
            self.failures.append((t_sent, f"{self.name}#{seq}", node.name, str(status or body)[:120]))
            tried.add(node)
            if len(tried) >= len(self.fixed_nodes or self.rotation.nodes):
                tried.clear()
                if self._halt.wait(0.05):
                    # Stopping: this seq was never acknowledged, which is fine.
                    return


# --------------------------------------------------------------------- subscriber


@dataclass
class Received:
    seq: int | None
    attempt: int | None
    id: str
    t_recv: float
    t_sent: float | None
    node: str
    replayed: bool  # published before this connection opened: came from history, not live


@dataclass
class Connection:
    node: str
    t_open: float
    last_event_id: str | None  # what we sent
    status: int | None = None
    answered_last_event_id: str | None = None  # the hub's Last-Event-ID header
    t_close: float | None = None
    events: int = 0
    end: str = ""  # "eof", "error: ...", "stopped", "status 503"


class Subscriber(threading.Thread):
    """An `EventSource` that reconnects to another node with `Last-Event-ID`.

    On stream end or error it waits the last SSE `retry:` value (default
    `retry_default`, capped at `retry_cap`) and reconnects to a different node of
    the rotation, sending the id of the last event it received (`earliest` if it
    received none yet: the topic is private to this run, so that replays exactly
    what it missed). Unlike a browser's EventSource, a non-200 answer (a node
    that is shutting down) is retried elsewhere too, as a client behind a load
    balancer would see it.
    """

    def __init__(self, name: str, rotation: Rotation, topic: str, first: Node,
                 retry_default: float = 1.0, retry_cap: float = 5.0, read_timeout: float = 20.0,
                 fixed: bool = False):
        super().__init__(name=name, daemon=True)
        self.rotation = rotation
        self.topic = topic
        self.first = first
        self.fixed = fixed  # always reconnect to `first` (no rotation)
        self.retry = retry_default
        self.retry_cap = retry_cap
        self.read_timeout = read_timeout
        self.received: list[Received] = []
        self.connections: list[Connection] = []
        self.last_id: str | None = None
        self.connected = threading.Event()
        self._halt = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def reconnects(self) -> int:
        return max(0, len(self.connections) - 1)

    def received_ids(self) -> set[str]:
        with self._lock:
            return {r.id for r in self.received}

    def stop(self) -> None:
        self._halt.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(timeout=10)

    def run(self) -> None:
        node = self.first
        while not self._halt.is_set():
            self._stream(node)
            if self._halt.wait(min(self.retry, self.retry_cap)):
                break
            node = self._next_node(node)

    def _next_node(self, node: Node) -> Node:
        """Where to reconnect after a stream on `node` ended (its own node when fixed,
        else another of the rotation); subclasses choose differently."""
        return self.first if self.fixed else self.rotation.pick(exclude={node})

    def _stream(self, node: Node) -> None:
        resume = self.last_id if self.last_id is not None else ("earliest" if self.connections else None)
        c = Connection(node.name, time.monotonic(), resume)
        self.connections.append(c)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if resume is not None:
            headers["Last-Event-ID"] = resume
        conn = http.client.HTTPConnection(node.host, node.port, timeout=self.read_timeout)
        try:
            conn.request("GET", f"{HUB_PATH}?topic={urllib.parse.quote(self.topic, safe='')}", headers=headers)
            with self._lock:
                self._sock = conn.sock
            if self._halt.is_set():
                c.end = "stopped"
                return
            r = conn.getresponse()
            c.status = r.status
            c.answered_last_event_id = r.getheader("Last-Event-ID")
            if r.status != 200:
                c.end = f"status {r.status}"
                return
            self.connected.set()
            self._read(r, node, c)
            c.end = c.end or "eof"
        except (OSError, http.client.HTTPException, ValueError) as e:
            c.end = "stopped" if self._halt.is_set() else f"error: {type(e).__name__}: {e}"[:160]
        finally:
            c.t_close = time.monotonic()
            with self._lock:
                self._sock = None
            conn.close()

    def _read(self, r: http.client.HTTPResponse, node: Node, c: Connection) -> None:
        """WHATWG SSE parsing (enough of it: id, data, retry; comments ignored)."""
        buf = b""
        ev_id: str | None = None
        data: list[str] = []
        while not self._halt.is_set():
            chunk = r.read1(65536)
            if not chunk:
                return
            buf += chunk
            # Lines end with \n, \r\n or \r; a trailing \r may be half of \r\n.
            while True:
                i = min((k for k in (buf.find(b"\n"), buf.find(b"\r")) if k >= 0), default=-1)
                if i < 0 or (buf[i:i + 1] == b"\r" and i == len(buf) - 1):
                    break
                line = buf[:i].decode()
                buf = buf[i + (2 if buf[i:i + 2] == b"\r\n" else 1):]
                if line == "":
                    if ev_id is not None:
                        self.last_id = ev_id
                    if data:
                        self._record("\n".join(data), node, c)
                    data = []
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if name == "id" and "\0" not in value:
                    ev_id = value
                elif name == "data":
                    data.append(value)
                elif name == "retry" and value.isdigit():
                    self.retry = int(value) / 1000

    def _record(self, data: str, node: Node, c: Connection) -> None:
        t = time.monotonic()
        try:
            d = json.loads(data)
            seq, attempt, t_sent = d.get("seq"), d.get("attempt"), d.get("t")
        except (ValueError, AttributeError):
            seq = attempt = t_sent = None
        c.events += 1
        with self._lock:
            replayed = t_sent is not None and t_sent < c.t_open
            self.received.append(Received(seq, attempt, self.last_id or "", t, t_sent, node.name, replayed))


# ----------------------------------------------------------------------- verifier


@dataclass
class Verifier:
    """Publishers + subscribers on one fresh topic, and the checks over what they saw."""

    nodes: list[Node]
    rate: float = 50.0  # in all, shared by the publishers
    publishers: int = 1
    subscribers_per_node: int = 3
    publish_to: list[Node] | None = None  # default: the rotation
    subscribe_on: list[Node] | None = None  # default: every node
    sticky_subscribers: bool = False  # reconnect to the same node (no rotation)
    token: str = field(default_factory=mint_token)
    topic: str = field(default_factory=lambda: f"https://hubbub.test/verify/{uuid.uuid4()}")
    retry_cap: float = 5.0

    def __post_init__(self) -> None:
        self.rotation = Rotation(self.nodes)
        self.subscribers: list[Subscriber] = []
        self.pubs: list[Publisher] = []
        self.t_start: float | None = None
        self.t_stop: float | None = None

    def add_node(self, node: Node) -> None:
        self.rotation.add(node)

    def start(self, connect_timeout: float = 15.0) -> None:
        self.rotation.start()
        for node in self.subscribe_on or self.nodes:
            for i in range(self.subscribers_per_node):
                s = Subscriber(f"sub-{node.name}-{i}", self.rotation, self.topic, node,
                               retry_cap=self.retry_cap, fixed=self.sticky_subscribers)
                self.subscribers.append(s)
                s.start()
        wait_subscribed(self.subscribers, connect_timeout, on_timeout=self.abort)
        self.pubs = [Publisher(self.rotation, self.topic, self.rate / self.publishers, self.token,
                               nodes=self.publish_to, name=f"pub{i}") for i in range(self.publishers)]
        self.t_start = time.monotonic()
        for p in self.pubs:
            p.start()

    def acks(self) -> list[Ack]:
        return [a for p in self.pubs for a in p.ack_list()]

    @contextmanager
    def aborted_on_error(self):
        """For the body of a run, between `start` and `stop`: if it fails, `abort`
        before the error goes on, so no client thread outlives the test."""
        try:
            yield self
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop every thread without checking anything (test teardown)."""
        for p in self.pubs:
            p.stop()
        for s in self.subscribers:
            s.stop()
        self.rotation.stop()

    def stop(self, drain_timeout: float = 20.0) -> dict:
        """Stop publishing, wait until subscribers hold every acknowledged update, check."""
        assert self.pubs, "start() first"
        for p in self.pubs:
            p.stop()
        self.t_stop = time.monotonic()
        acked_ids = {a.id for a in self.acks()}
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            if all(acked_ids <= s.received_ids() for s in self.subscribers):
                break
            time.sleep(0.1)
        time.sleep(0.3)  # anything arriving after the last ack would be a duplicate
        for s in self.subscribers:
            s.stop()
        self.rotation.stop()
        return self.summary()

    # ---------------------------------------------------------------- checks

    def latencies(self, t_from: float | None = None, t_to: float | None = None, kind: str = "all") -> list[float]:
        """Publish-to-delivery latencies (first delivery per update and subscriber)
        of updates sent within [t_from, t_to) (monotonic).

        kind: "all"; "live" (delivered on a stream that was open when the update
        was published: the cluster's own delay); "replayed" (published while the
        subscriber was reconnecting: includes the `retry` wait).
        """
        out = []
        for s in self.subscribers:
            seen = set()
            for r in s.received:
                if r.t_sent is None or r.id in seen:
                    continue
                seen.add(r.id)
                if kind == "live" and r.replayed or kind == "replayed" and not r.replayed:
                    continue
                if (t_from is None or r.t_sent >= t_from) and (t_to is None or r.t_sent < t_to):
                    out.append(r.t_recv - r.t_sent)
        return out

    def summary(self) -> dict:
        acks = self.acks()
        failures = sorted(f for p in self.pubs for f in p.failures)
        acked_ids = [a.id for a in acks]
        acked_set = set(acked_ids)
        per_sub = {}
        lost_total = dup_total = republished_total = foreign_total = 0
        id_lists = {}
        for s in self.subscribers:
            ids = [r.id for r in s.received]
            counts: dict[str, int] = {}
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
            lost = [f"{a.publisher}#{a.seq}" for a in acks if a.id not in counts]
            dups = sum(n - 1 for n in counts.values() if n > 1)
            # Same seq under another id: a publish attempt that failed for us but was accepted.
            republished = sum(1 for r in s.received if r.id not in acked_set and r.seq is not None)
            foreign = sum(1 for r in s.received if r.seq is None)
            lost_total += len(lost)
            dup_total += dups
            republished_total += republished
            foreign_total += foreign
            id_lists[s.name] = ids
            resumes = s.connections[1:]
            per_sub[s.name] = {
                "received": len(ids),
                "lost": len(lost),
                "lost_updates": lost[:20],
                "duplicates": dups,
                "republished": republished,
                "reconnects": s.reconnects,
                "nodes": [c.node for c in s.connections],
                "resume_misses": sum(1 for c in resumes if c.last_event_id not in (None, "earliest")
                                     and c.answered_last_event_id == "earliest"),
                "connection_ends": [c.end for c in s.connections],
            }
        order = self._order_check(id_lists)
        windows = {kind: percentiles(self.latencies(kind=kind)) for kind in ("all", "live", "replayed")}
        return {
            "topic": self.topic,
            "rate": self.rate,
            "duration_s": round((self.t_stop or time.monotonic()) - (self.t_start or 0), 2),
            "subscribers": len(self.subscribers),
            "published": sum(p.last_seq for p in self.pubs),
            "acked": len(acks),
            "publish_retries": len(failures),
            "publish_retried_seqs": len({f[1] for f in failures}),
            "publish_failures_sample": failures[:10],
            "publisher_error": next((p.error for p in self.pubs if p.error), None),
            "lost": lost_total,
            "duplicates": dup_total,
            "republished": republished_total,
            "foreign_events": foreign_total,
            "order_mismatches": order["mismatches"],
            "order_detail": order["detail"],
            "reconnects": sum(s.reconnects for s in self.subscribers),
            "resume_misses": sum(v["resume_misses"] for v in per_sub.values()),
            "latency": windows,
            "per_subscriber": per_sub,
        }

    @staticmethod
    def _order_check(id_lists: dict[str, list[str]]) -> dict:
        """Every subscriber's ids, restricted to the ids both saw, must be in the same order."""
        names = list(id_lists)
        if not names:
            return {"mismatches": 0, "detail": []}
        ref_name = max(names, key=lambda n: len(id_lists[n]))
        ref = id_lists[ref_name]
        mismatches = 0
        detail = []
        for name in names:
            if name == ref_name:
                continue
            mine = id_lists[name]
            common = set(ref) & set(mine)
            a = [i for i in dedup(ref) if i in common]
            b = [i for i in dedup(mine) if i in common]
            if a != b:
                mismatches += 1
                n = min(len(a), len(b))
                k = next((k for k in range(n) if a[k] != b[k]), n)
                detail.append({"subscriber": name, "reference": ref_name, "first_difference": k,
                               "around_reference": a[max(0, k - 2):k + 3], "around_mine": b[max(0, k - 2):k + 3]})
        return {"mismatches": mismatches, "detail": detail[:5]}


def dedup(ids: list[str]) -> list[str]:
    """`ids` without repeats, first occurrence kept."""
    seen = set()
    out = []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def free_port(taken: set[int]) -> int:
    """A free 127.0.0.1 port below the kernel's ephemeral range (so no outgoing
    connection is numbered with it meanwhile), not in `taken`; adds it there."""
    for _ in range(500):
        port = random.randrange(20000, 32000)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free port")


def wait_subscribed(subscribers: list[Subscriber], timeout: float, on_timeout=lambda: None) -> None:
    """Until every subscriber's first stream is open (publishing before that would
    count as lost what they never asked for); else `on_timeout()`, then TimeoutError."""
    deadline = time.monotonic() + timeout
    for s in subscribers:
        if not s.connected.wait(max(0.0, deadline - time.monotonic())):
            on_timeout()
            raise TimeoutError(f"{s.name} could not subscribe within {timeout}s: {s.connections}")


def reap(proc: subprocess.Popen, grace: float, kill_wait: float = 10.0) -> None:
    """Waits up to `grace` s for `proc` (already told to stop) to exit, then kills it:
    a stop that cannot hang the caller on a process that ignores SIGTERM."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=kill_wait)


def stop_process(proc: subprocess.Popen, grace: float = 10.0, kill_wait: float = 10.0) -> None:
    """SIGTERM (a graceful shutdown), then `reap`."""
    proc.terminate()
    reap(proc, grace, kill_wait)
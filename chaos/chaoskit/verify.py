"""The chaos verifier: clients of the cluster, and the checks over what they saw.

It reuses the deployment tests' clients (tests/deploy/verifier.py: `Publisher`,
the EventSource-like `Subscriber`, `Rotation`) and adds what fault injection needs:

- sticky subscribers on every node (they always come back to their node), and
  movers that drop their stream every few seconds and resume on *another*
  node with `Last-Event-ID`;
- fault windows (when each fault was on), so "outside fault windows" means
  something precise;
- a poller of every node's `GET /cluster` (vectors, counters) for the
  counter checks and the vector-lag timeline;
- slow subscribers (a small receive buffer, throttled reads) and a reconnect
  storm (thousands of asyncio subscribers moving at once).

None of the checks uses the nodes' own view of delivery: updates are counted
where the clients received them. The nodes' counters are only compared with it.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import socket
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from .util import log  # (puts tests/deploy on sys.path)
from verifier import (  # noqa: E402  tests/deploy/verifier.py
    HUB_PATH, Node, Publisher, Rotation, Subscriber, dedup, http_get, mint_token, percentiles, wait_subscribed,
)

COUNTERS = ("released", "late", "lost", "duplicates", "repaired", "pulls_sent", "waiting")


# ------------------------------------------------------------------ order helpers


def lcs_len(a: list[str], b: list[str]) -> int:
    """Longest common subsequence of two sequences of distinct ids (as a longest
    increasing subsequence of positions: O(n log n))."""
    pos = {x: i for i, x in enumerate(b)}
    seq = [pos[x] for x in a if x in pos]
    tails: list[int] = []
    for v in seq:
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
        else:
            tails[k] = v
    return len(tails)


def out_of_place(a: list[str], b: list[str], only: set[str] | None = None) -> int:
    """How many of the ids both hold (and in `only`) must move for a and b to agree."""
    common = set(a) & set(b)
    if only is not None:
        common &= only
    x = [i for i in a if i in common]
    y = [i for i in b if i in common]
    return len(x) - lcs_len(x, y)


# ------------------------------------------------------------------ cluster poller


class ClusterPoller:
    """Polls every node's GET /cluster (one thread per node) for the whole run."""

    def __init__(self, nodes: list[Node], interval: float = 0.5):
        self.nodes = list(nodes)
        self.interval = interval
        self.samples: list[dict] = []  # {t, node, ok, generation, vector, stats, lag_ms}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), name=f"poll-{n.name}", daemon=True)
                         for n in self.nodes]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._halt.set()
        for t in self._threads:
            t.join(timeout=5)

    def _run(self, node: Node) -> None:
        while not self._halt.is_set():
            t = time.monotonic()
            s = {"t": t, "node": node.name, "ok": False}
            try:
                status, body = http_get(node, "/cluster", timeout=1.0)
                if status == 200:
                    v = json.loads(body)
                    s.update(ok=True, generation=v.get("generation"), vector=v.get("vector", {}),
                             stats=v.get("stats", {}), ready=v.get("ready"),
                             lag_ms=max([m.get("lag_ms") or 0 for m in v.get("members", [])] or [0]),
                             backlog=sum(m.get("backlog") or 0 for m in v.get("members", [])))
            except Exception:  # noqa: BLE001 - a node that does not answer is a sample too
                pass
            with self._lock:
                self.samples.append(s)
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.samples)

    def deltas(self, t0: float, t1: float) -> dict[str, dict]:
        """Per node, counter increases in [t0, t1], summed over the generations it ran
        (a generation first seen after t0 counts from zero: a restarted process)."""
        out: dict[str, dict] = {}
        samples = [s for s in self.snapshot() if s["ok"]]
        for node in self.nodes:
            mine = [s for s in samples if s["node"] == node.name and s["t"] <= t1]
            total = {k: 0 for k in COUNTERS if k != "waiting"}
            gens = []
            for gen in dict.fromkeys(s["generation"] for s in mine):
                g = [s for s in mine if s["generation"] == gen]
                before = [s for s in g if s["t"] <= t0]
                after = [s for s in g if s["t"] > t0]
                if not after:
                    continue
                base = before[-1]["stats"] if before else {}
                last = after[-1]["stats"]
                gens.append(gen)
                for k in total:
                    total[k] += max(0, last.get(k, 0) - base.get(k, 0))
            total["generations"] = len(gens)
            out[node.name] = total
        return out

    def lag_series(self) -> list[tuple[float, str, int]]:
        """(t, node, updates behind): how far each node's vector trails the componentwise
        maximum of all nodes' latest vectors at that moment."""
        latest: dict[str, dict] = {}
        out = []
        for s in sorted(self.snapshot(), key=lambda s: s["t"]):
            if not s["ok"]:
                continue
            latest[s["node"]] = s["vector"]
            top: dict[str, int] = {}
            for v in latest.values():
                for k, n in v.items():
                    top[k] = max(top.get(k, 0), n)
            behind = sum(max(0, n - s["vector"].get(k, 0)) for k, n in top.items())
            out.append((s["t"], s["node"], behind))
        return out


def vectors_now(nodes: list[Node]) -> dict[str, dict | None]:
    out = {}
    for n in nodes:
        try:
            status, body = http_get(n, "/cluster", timeout=1.0)
            out[n.name] = json.loads(body).get("vector") if status == 200 else None
        except Exception:  # noqa: BLE001
            out[n.name] = None
    return out


def wait_vectors_equal(nodes: list[Node], timeout: float) -> tuple[float | None, dict]:
    """Seconds until every node answers with the same vector (None: not within timeout)."""
    t0 = time.monotonic()
    while True:
        vs = vectors_now(nodes)
        vals = list(vs.values())
        if all(v is not None for v in vals) and all(v == vals[0] for v in vals):
            return time.monotonic() - t0, vs
        if time.monotonic() - t0 > timeout:
            return None, vs
        time.sleep(0.1)


def metric(node: Node, name: str) -> float | None:
    """A Prometheus counter's value (summed over labels) from GET /metrics."""
    try:
        status, body = http_get(node, "/metrics", timeout=2.0)
    except Exception:  # noqa: BLE001
        return None
    if status != 200:
        return None
    total = None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            try:
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


# ------------------------------------------------------------------------ clients


class PaddedPublisher(Publisher):
    """The deployment tests' publisher; `pad` bytes of filler make updates bigger."""

    pad = 0

    def _attempt(self, node, data):
        if self.pad:
            data = data[:-1] + f', "pad": "{"x" * self.pad}"}}'
        return super()._attempt(node, data)


class StickySubscriber(Subscriber):
    """Always comes back to its node, once that node's /readyz answers 200 again (as a
    client behind a health-checking load balancer would): a restarted node is resumed
    on only after it caught up. (A client that reconnects to a node that is still
    catching up gets duplicates: chaos/results/evidence-full-run-1.json.)"""

    def _next_node(self, node: Node) -> Node:
        # (by name: a slow subscriber reaches its node by another address than the rotation)
        while node.name not in {n.name for n in self.rotation.ready()} and not self._halt.wait(0.05):
            pass
        return node


class _Throttled:
    """What a slow client's socket reads look like: small pieces, with pauses."""

    def __init__(self, r, sub: SlowSubscriber):
        self.r = r
        self.sub = sub

    def read1(self, n: int) -> bytes:
        if self.sub.slow.is_set():
            time.sleep(self.sub.pause)
            return self.r.read1(min(n, self.sub.piece))
        return self.r.read1(n)


class SlowSubscriber(StickySubscriber):
    """A sticky subscriber that, while `slow` is set, reads `piece` bytes every
    `pause` seconds through a small receive buffer: the hub must cut it as a slow
    consumer and it must resume with Last-Event-ID without loss or duplicate."""

    piece = 512
    pause = 0.1

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.slow = threading.Event()

    def _read(self, r, node, c):
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            except OSError:
                pass
        return super()._read(_Throttled(r, self), node, c)


@dataclass
class Window:
    name: str
    t0: float
    t1: float | None = None
    kind: str = "fault"  # or "event": something the README says is not a fault (a graceful restart)
    t_settled: float | None = None  # when the cluster had converged after it (its effects may outlast it)


@dataclass
class ChaosVerifier:
    """Publishers on random ready nodes, sticky subscribers on every node, movers.

    `margin_before`/`margin_after`: how far around a fault window its effects may
    reach (a hold lasts up to order_wait; a healed link catches up)."""

    nodes: list[Node]
    rate: float = 50.0
    publishers: int = 2
    sticky_per_node: int = 2
    movers: int = 3
    move_every: tuple[float, float] = (2.0, 4.0)
    token: str = field(default_factory=mint_token)
    topic: str = field(default_factory=lambda: f"https://hubbub.test/chaos/{uuid.uuid4()}")
    margin_before: float = 1.5
    margin_after: float = 3.0

    def __post_init__(self) -> None:
        self.rotation = Rotation(self.nodes)
        self.subs: list[Subscriber] = []
        self.kind: dict[str, str] = {}  # subscriber name -> sticky | mover | slow
        self.home: dict[str, str] = {}  # sticky/slow subscriber -> its node
        self.pubs: list[PaddedPublisher] = []
        self.windows: list[Window] = []
        self.moves: list[tuple[float, str]] = []
        self.t_start = self.t_stop = 0.0
        self._halt = threading.Event()
        self._churn = threading.Thread(target=self._churn_run, name="churn", daemon=True)

    # -- lifecycle
    def start(self, connect_timeout: float = 20.0) -> None:
        self.rotation.start()
        for node in self.nodes:
            for i in range(self.sticky_per_node):
                self._add(StickySubscriber(f"sticky-{node.name}-{i}", self.rotation, self.topic, node, fixed=True),
                          "sticky", node)
        for i in range(self.movers):
            node = self.nodes[i % len(self.nodes)]
            self._add(Subscriber(f"mover-{i}", self.rotation, self.topic, node, retry_default=0.3, retry_cap=2.0),
                      "mover", None)
        wait_subscribed(self.subs, connect_timeout, on_timeout=self.abort)
        self.pubs = [PaddedPublisher(self.rotation, self.topic, self.rate / self.publishers, self.token,
                                     name=f"pub{i}") for i in range(self.publishers)]
        self.t_start = time.monotonic()
        for p in self.pubs:
            p.start()
        if self.movers:
            self._churn.start()

    def _add(self, s: Subscriber, kind: str, home: Node | None) -> Subscriber:
        self.subs.append(s)
        self.kind[s.name] = kind
        if home is not None:
            self.home[s.name] = home.name
        s.start()
        return s

    def add_slow(self, node: Node, n: int) -> list[SlowSubscriber]:
        """Slow subscribers (sticky on `node`), resuming from the first update."""
        out = []
        for i in range(n):
            s = SlowSubscriber(f"slow-{node.name}-{i}", self.rotation, self.topic, node, fixed=True)
            s.last_id = "earliest"
            out.append(self._add(s, "slow", node))
        return out

    def set_pad(self, nbytes: int) -> None:
        for p in self.pubs:
            p.pad = nbytes

    def _churn_run(self) -> None:
        movers = [s for s in self.subs if self.kind[s.name] == "mover"]
        while not self._halt.wait(random.uniform(*self.move_every) / max(1, len(movers))):
            s = random.choice(movers)
            with s._lock:
                sock = s._sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    self.moves.append((time.monotonic(), s.name))
                except OSError:
                    pass

    @contextmanager
    def fault(self, name: str, kind: str = "fault"):
        w = Window(name, time.monotonic(), kind=kind)
        self.windows.append(w)
        log(f"  {kind} on: {name}")
        try:
            yield w
        finally:
            w.t1 = time.monotonic()
            log(f"  {kind} off: {name} ({w.t1 - w.t0:.1f}s)")

    def stop(self, drain_timeout: float = 15.0) -> float:
        """Stop moving, then publishing; wait until every subscriber holds every acknowledged
        update (or the timeout); returns how long that took."""
        self._halt.set()
        if self._churn.is_alive():
            self._churn.join(timeout=5)
        movers = [s for s in self.subs if self.kind[s.name] == "mover"]

        def streaming(s: Subscriber) -> bool:
            c = s.connections[-1] if s.connections else None
            return c is not None and c.status == 200 and c.t_close is None

        # A mover dropped just now must be back on a stream before the last updates go out.
        deadline = time.monotonic() + 5.0
        while not all(streaming(s) for s in movers) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in self.pubs:
            p.stop()
        for s in self.subs:
            if isinstance(s, SlowSubscriber):
                s.slow.clear()
        self.t_stop = time.monotonic()
        acked = {a.id for p in self.pubs for a in p.ack_list()}
        # Sticky and slow subscribers must end up with everything; a mover that resumed
        # during a fault may never (see analyze()): for movers, wait until they go quiet.
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            if all(acked <= s.received_ids() for s in self.subs if self.kind[s.name] != "mover"):
                break
            time.sleep(0.1)
        drained = time.monotonic() - self.t_stop
        deadline = time.monotonic() + 5.0
        last, t_progress = -1, time.monotonic()
        while time.monotonic() < deadline:
            if all(acked <= s.received_ids() for s in movers):
                break
            n = sum(len(s.received) for s in movers)
            if n != last:
                last, t_progress = n, time.monotonic()
            elif time.monotonic() - t_progress > 1.0:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # anything arriving after everything did would be a duplicate
        for s in self.subs:
            s.stop()
        self.rotation.stop()
        return drained

    def abort(self) -> None:
        self._halt.set()
        for p in self.pubs:
            p.stop()
        for s in self.subs:
            s.stop()
        self.rotation.stop()

    # -- checks
    def in_window(self, t: float, extend: bool = True) -> bool:
        """Whether t lies in a fault window (events do not count), widened by the margins."""
        for w in self.windows:
            if w.kind != "fault":
                continue
            t1 = w.t1 if w.t1 is not None else float("inf")
            if extend:
                lo, hi = w.t0 - self.margin_before, max(t1, w.t_settled or t1) + self.margin_after
            else:
                lo, hi = w.t0, t1
            if lo <= t <= hi:
                return True
        return False

    def analyze(self, counters: dict[str, dict]) -> dict:
        """Everything the clients saw, checked; `counters`: per-node counter increases."""
        acks = [a for p in self.pubs for a in p.ack_list()]
        by_id = {a.id: a for a in acks}
        acked = set(by_id)
        received: dict[str, list[str]] = {}
        for s in self.subs:
            with s._lock:
                received[s.name] = [r.id for r in s.received if r.seq is not None]
        seen_anywhere = set().union(*[set(v) for v in received.values()]) if received else set()
        acked_then_lost = sorted(acked - seen_anywhere, key=lambda i: by_id[i].t_sent)
        violations: list[str] = []
        notes: list[str] = []
        per_sub = {}
        lost_total = dup_total = excused_total = 0
        for s in self.subs:
            ids = received[s.name]
            counts: dict[str, int] = {}
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
            missing = [i for i in acked if i not in counts and i not in acked_then_lost]
            dups = [i for i, n in counts.items() if n > 1]
            kind = self.kind[s.name]
            resumes_in_fault = [c for c in s.connections[1:] if self.in_window(c.t_open)]
            excused = kind == "mover" and bool(resumes_in_fault)
            n_bad = len(missing) + sum(counts[i] - 1 for i in dups)
            if n_bad and excused:
                excused_total += n_bad
            else:
                lost_total += len(missing)
                dup_total += sum(counts[i] - 1 for i in dups)
            per_sub[s.name] = {
                "kind": kind, "received": len(ids), "missing": len(missing), "duplicates": len(dups),
                "missing_sample": [f"{by_id[i].publisher}#{by_id[i].seq}" for i in missing[:5]],
                "excused_fault_resume": excused and n_bad > 0, "reconnects": s.reconnects,
                "nodes": [c.node for c in s.connections][:30],
                "resume_misses": sum(1 for c in s.connections[1:] if c.last_event_id not in (None, "earliest")
                                     and c.answered_last_event_id == "earliest"),
            }
            if n_bad:
                # Evidence: every connection (node, opened, Last-Event-ID sent and answered, events, end)
                # and where the missing updates were acknowledged.
                pos = {i: k for k, i in enumerate(ids)}
                per_sub[s.name]["connections"] = [
                    {"node": c.node, "t_open": round(c.t_open - self.t_start, 3), "sent": c.last_event_id,
                     "answered": c.answered_last_event_id, "events": c.events, "end": c.end,
                     "t_close": round((c.t_close or 0) - self.t_start, 3)} for c in s.connections]
                per_sub[s.name]["missing_detail"] = [
                    {"update": f"{by_id[i].publisher}#{by_id[i].seq}", "id": i, "acked_by": by_id[i].node,
                     "t_sent": round(by_id[i].t_sent - self.t_start, 3)}
                    for i in sorted(missing, key=lambda i: by_id[i].t_sent)[:30]]
                per_sub[s.name]["received_ids"] = ids
        if lost_total:
            violations.append(f"{lost_total} acknowledged update(s) missing at subscribers "
                              f"(while other subscribers got them)")
        if dup_total:
            violations.append(f"{dup_total} duplicate deliveries")
        if excused_total:
            notes.append(f"{excused_total} missing/duplicate deliveries at movers that resumed on another node "
                         f"during a fault window (the guarantee covers resuming anywhere in a healthy cluster)")

        # Order: one sequence per node (its first sticky subscriber), compared pairwise.
        seqs: dict[str, list[str]] = {}
        for s in self.subs:
            if self.kind[s.name] == "sticky" and self.home[s.name] not in seqs:
                seqs[self.home[s.name]] = dedup(received[s.name])
        quiet = {i for i, a in by_id.items() if not self.in_window(a.t_sent)}
        names = sorted(seqs)
        pairs = {}
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                full = out_of_place(seqs[x], seqs[y])
                outside = out_of_place(seqs[x], seqs[y], quiet)
                late = counters.get(x, {}).get("late", 0) + counters.get(y, {}).get("late", 0)
                pairs[f"{x}|{y}"] = {"out_of_place": full, "out_of_place_outside_faults": outside, "late": late}
                if outside:
                    violations.append(f"order differs between {x} and {y} for updates published outside fault "
                                      f"windows ({outside} out of place)")
                if full and not late:
                    violations.append(f"order differs between {x} and {y} ({full} out of place) but neither "
                                      f"counted a late update")
        # Within a node every sticky subscriber sees the node's one order.
        for s in self.subs:
            if self.kind[s.name] in ("sticky", "slow"):
                home = self.home[s.name]
                k = out_of_place(dedup(received[s.name]), seqs.get(home, []))
                if k:
                    violations.append(f"{s.name} saw another order than its node's other subscribers ({k})")
        reordered = 0
        if len(names) > 1:
            reordered = min(sum(out_of_place(seqs[x], seqs[r]) for x in names if x != r) for r in names)

        late_total = sum(c.get("late", 0) for c in counters.values())
        lost_counted = sum(c.get("lost", 0) for c in counters.values())
        if acked_then_lost and not lost_counted:
            violations.append(f"{len(acked_then_lost)} acknowledged update(s) reached no subscriber and no node "
                              f"counted them lost (skipped silently)")
        elif acked_then_lost:
            notes.append(f"{len(acked_then_lost)} acknowledged update(s) reached no subscriber; nodes counted "
                         f"{lost_counted} lost")
        if lost_counted and not acked_then_lost:
            notes.append(f"nodes counted {lost_counted} lost update(s); every acknowledged update was delivered "
                         f"(lost ones were not acknowledged)")
        if late_total and not reordered:
            notes.append(f"nodes counted {late_total} late update(s); all nodes delivered the same order anyway")
        errors = [p.error for p in self.pubs if p.error]
        if errors:
            violations.append(f"publisher error: {errors[0]}")

        lat = {}
        for kind, (lo, hi) in {"before": (self.t_start, self._first_fault()),
                               "during": (self._first_fault(), self._last_heal()),
                               "after": (self._last_heal(), self.t_stop)}.items():
            lat[kind] = percentiles(self._latencies(lo, hi))
        failures = sorted(f for p in self.pubs for f in p.failures)
        return {
            "topic": self.topic,
            "published": sum(p.last_seq for p in self.pubs),
            "acknowledged": len(acks),
            "lost": lost_total,
            "acked_then_lost": len(acked_then_lost),
            "acked_then_lost_sample": [f"{by_id[i].publisher}#{by_id[i].seq}@{by_id[i].node}"
                                       for i in acked_then_lost[:10]],
            "duplicated": dup_total,
            "reordered": reordered,
            "excused_mover_anomalies": excused_total,
            "order_pairs": pairs,
            "subscribers": len(self.subs),
            "deliveries": sum(len(v) for v in received.values()),
            "moves": len(self.moves),
            "reconnects": sum(s.reconnects for s in self.subs),
            "resume_misses": sum(v["resume_misses"] for v in per_sub.values()),
            "publish_retries": len(failures),
            "publish_failures_sample": [list(f) for f in failures[:5]],
            "latency_ms": lat,
            "violations": violations,
            "notes": notes,
            "per_subscriber": per_sub,
        }

    def _first_fault(self) -> float:
        return min((w.t0 for w in self.windows), default=self.t_stop)

    def _last_heal(self) -> float:
        return max((w.t1 or w.t0 for w in self.windows), default=self.t_stop)

    def last_heal(self) -> float | None:
        return max((w.t1 or w.t0 for w in self.windows if w.kind == "fault"), default=None)

    def settled(self, t: float) -> None:
        """The cluster converged at t after the last fault: its effects may reach until then."""
        for w in self.windows:
            if w.kind == "fault":
                w.t_settled = t

    def _latencies(self, lo: float, hi: float) -> list[float]:
        out = []
        for s in self.subs:
            if self.kind[s.name] != "sticky":
                continue
            seen = set()
            with s._lock:
                rs = list(s.received)
            for r in rs:
                if r.t_sent is None or r.id in seen or r.replayed:
                    continue
                seen.add(r.id)
                if lo <= r.t_sent < hi:
                    out.append(r.t_recv - r.t_sent)
        return out

    def series(self) -> dict:
        """Raw times for the timeline: acknowledged publishes and deliveries."""
        acks = sorted(a.t_sent for p in self.pubs for a in p.ack_list())
        deliveries = []
        for s in self.subs:
            with s._lock:
                deliveries.extend(r.t_recv for r in s.received)
        return {"acks": acks, "deliveries": sorted(deliveries),
                "windows": [(w.name, w.t0, w.t1 or w.t0, w.kind) for w in self.windows]}


# -------------------------------------------------------------------------- storm


class Storm(threading.Thread):
    """`count` lightweight SSE subscribers (asyncio) spread over the nodes on their own
    topic. `move_all()` makes every one of them drop its stream at once and resume on
    another node with Last-Event-ID. A publisher of its own feeds the topic."""

    def __init__(self, nodes: list[Node], count: int, rate: float = 4.0, token: str | None = None):
        super().__init__(name="storm", daemon=True)
        self.nodes = list(nodes)
        self.count = count
        self.topic = f"https://hubbub.test/storm/{uuid.uuid4()}"
        self.rotation = Rotation(self.nodes)
        self.publisher = Publisher(self.rotation, self.topic, rate, token or mint_token(), name="storm-pub")
        self.ids: list[list[str]] = [[] for _ in range(count)]
        self.last: list[str | None] = [None] * count
        self.conns = [0] * count
        self.errors = [0] * count
        self.connected_at: list[float | None] = [None] * count
        self.t_move: float | None = None
        self.moved_at: list[float | None] = [None] * count
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._move: asyncio.Event | None = None
        self._halt: asyncio.Event | None = None
        self._gen = [0] * count
        self._writers: list[asyncio.StreamWriter | None] = [None] * count

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._halt = asyncio.Event()
        tasks = [asyncio.create_task(self._client(i)) for i in range(self.count)]
        await self._halt.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def start_all(self, timeout: float = 60.0) -> float:
        t0 = time.monotonic()
        self.rotation.start()
        self.start()
        while sum(1 for c in self.connected_at if c is not None) < self.count:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"storm: only {sum(1 for c in self.connected_at if c)} of {self.count} connected")
            time.sleep(0.1)
        self.publisher.start()
        return time.monotonic() - t0

    def move_all(self) -> None:
        self.t_move = time.monotonic()

        def close_all():
            for i, w in enumerate(self._writers):
                self._gen[i] += 1
                if w is not None:
                    w.transport.abort()
        self._loop.call_soon_threadsafe(close_all)

    def moved(self) -> int:
        return sum(1 for m in self.moved_at if m is not None)

    async def _client(self, i: int) -> None:
        node_idx = i % len(self.nodes)
        while True:
            node = self.nodes[node_idx]
            gen = self._gen[i]
            try:
                await self._stream(i, node, gen)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.errors[i] += 1
            if self._gen[i] == gen:
                await asyncio.sleep(random.uniform(0.3, 1.0))  # an error, not a move: EventSource's retry
            node_idx = (node_idx + 1 + random.randrange(len(self.nodes) - 1)) % len(self.nodes)

    async def _stream(self, i: int, node: Node, gen: int) -> None:
        reader, writer = await asyncio.open_connection(node.host, node.port, limit=1 << 20)
        self._writers[i] = writer
        try:
            if self._gen[i] != gen:
                return
            headers = f"GET {HUB_PATH}?topic={urllib.parse.quote(self.topic, safe='')} HTTP/1.1\r\n" \
                      f"Host: {node.host}:{node.port}\r\nAccept: text/event-stream\r\n"
            if self.last[i] is not None:
                headers += f"Last-Event-ID: {self.last[i]}\r\n"
            writer.write((headers + "\r\n").encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise ValueError(head[:40])
            self.conns[i] += 1
            now = time.monotonic()
            if self.connected_at[i] is None:
                self.connected_at[i] = now
            elif self.t_move is not None and self.moved_at[i] is None and now >= self.t_move:
                self.moved_at[i] = now
            chunked = b"chunked" in head.lower()
            cur_id = None
            has_data = False
            buf = b""
            while True:
                if chunked:
                    size = int((await reader.readline()).strip() or b"0", 16)
                    if size == 0:
                        return
                    data = (await reader.readexactly(size + 2))[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        return
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    line = line.rstrip(b"\r")
                    if not line:
                        if cur_id is not None:
                            self.last[i] = cur_id
                            if has_data:
                                self.ids[i].append(cur_id)
                        cur_id, has_data = None, False
                    elif line.startswith(b"id:"):
                        cur_id = line[3:].strip().decode()
                    elif line.startswith(b"data:"):
                        has_data = True
        finally:
            writer.transport.abort()
            self._writers[i] = None

    def stop(self, drain_timeout: float = 20.0) -> dict:
        self.publisher.stop()
        acked = {a.id for a in self.publisher.ack_list()}
        t0 = time.monotonic()
        while time.monotonic() - t0 < drain_timeout:
            if all(acked <= set(ids) for ids in self.ids):
                break
            time.sleep(0.2)
        drained = time.monotonic() - t0
        time.sleep(0.5)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._halt.set)
        self.join(timeout=30)
        self.rotation.stop()
        missing = dups = 0
        for ids in self.ids:
            s = set(ids)
            missing += len(acked - s)
            dups += len(ids) - len(s)
        move_lat = [m - self.t_move for m in self.moved_at if m is not None and self.t_move is not None]
        return {
            "subscribers": self.count, "published": self.publisher.last_seq, "acknowledged": len(acked),
            "deliveries": sum(len(x) for x in self.ids), "missing": missing, "duplicated": dups,
            "moved": self.moved(), "resume_after_move": percentiles(move_lat),
            "connection_errors": sum(self.errors), "drain_s": round(drained, 2),
        }


def measure_convergence(nodes: list[Node], bound: float, poll: float = 0.1) -> dict:
    """Seconds until every node holds everything that any node held when this was
    called (the vectors' componentwise maximum then), publishing going on."""
    t0 = time.monotonic()
    while True:
        vs = vectors_now(nodes)
        if all(v is not None for v in vs.values()):
            break
        if time.monotonic() - t0 > bound:
            return {"converged_s": None, "why": f"nodes not answering: {[k for k, v in vs.items() if v is None]}"}
        time.sleep(poll)
    target: dict[str, int] = {}
    for v in vs.values():
        for k, n in v.items():
            target[k] = max(target.get(k, 0), n)
    while True:
        behind = {}
        for name, v in vs.items():
            if v is None:
                behind[name] = None
                continue
            b = sum(max(0, n - v.get(k, 0)) for k, n in target.items())
            if b:
                behind[name] = b
        if not behind:
            return {"converged_s": round(time.monotonic() - t0, 2), "target_updates": sum(target.values())}
        if time.monotonic() - t0 > bound:
            return {"converged_s": None, "why": f"still behind after {bound}s: {behind}"}
        time.sleep(poll)
        vs = vectors_now(nodes)

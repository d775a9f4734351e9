"""The scenarios: each injects one kind of fault while the verifier runs.

A scenario function gets a `Ctx` and injects its fault(s) inside `ctx.fault(...)`
windows (or `ctx.event(...)` for things the README says are *not* faults, such
as a graceful restart: the strict checks apply there too). Whatever it turns
on, `Ctx.cleanup()` turns off, also when the scenario fails or is interrupted.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from .netfault import Netem, Partition, netem_available
from .targets import SERVICES, Target, relay_proxy
from .util import log
from .verify import ChaosVerifier, Storm, metric
from verifier import publish  # noqa: E402  tests/deploy/verifier.py


@dataclass
class Params:
    form: str
    warmup: float  # publishing before the first fault
    fault: float  # how long a fault lasts
    recovery: float  # publishing after the last fault healed
    rate: float  # publishes/s in all
    storm: int  # reconnect-storm subscribers
    kills: int  # kill -9 rounds
    convergence_bound: float = 10.0  # the stated time within which vectors must agree after the last fault


SHORT = Params("short", warmup=1.5, fault=4.0, recovery=2.5, rate=50, storm=1000, kills=1)
FULL = Params("full", warmup=4.0, fault=15.0, recovery=6.0, rate=50, storm=3000, kills=4)


@dataclass
class Ctx:
    target: Target
    v: ChaosVerifier
    p: Params
    extra: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    @property
    def toxi(self):
        return self.target.toxi

    def fault(self, name: str):
        return self.v.fault(name)

    def event(self, name: str):
        return self.v.fault(name, kind="event")

    def undo(self, what: str, fn: Callable[[], None]) -> Callable[[], None]:
        """Registers fn to run at cleanup unless done() is called first; returns done."""
        item = (what, fn)
        self._undo.append(item)

        def done():
            if item in self._undo:
                self._undo.remove(item)
                fn()
        return done

    def cleanup(self) -> None:
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - keep undoing the rest
                log(f"  cleanup of {what} failed: {e}")

    @contextmanager
    def toxics(self, specs: list[dict], proxies: list[str] | None = None):
        """Adds the toxics (dicts: type, stream, attributes...) to the relay proxies of
        `proxies` (services; default all) for the duration of the block."""
        added = []
        for service in proxies or SERVICES:
            for spec in specs:
                spec = dict(spec)
                name = f"chaos-{spec['type']}-{spec.get('stream', 'downstream')}"
                self.toxi.add_toxic(relay_proxy(service), name=name, **spec)
                added.append((relay_proxy(service), name))

        def remove():
            for proxy, name in added:
                try:
                    self.toxi.remove_toxic(proxy, name)
                except RuntimeError:
                    pass
        done = self.undo("toxics", remove)
        try:
            yield
        finally:
            done()

    def sleep(self, secs: float) -> None:
        time.sleep(secs)


def both(type_: str, **attributes) -> list[dict]:
    return [{"type": type_, "stream": s, **attributes} for s in ("upstream", "downstream")]


# ---------------------------------------------------------------------- scenarios


def baseline(ctx: Ctx) -> None:
    ctx.sleep(ctx.p.fault)


def latency_jitter(ctx: Ctx) -> None:
    with ctx.fault("relay latency 80 ms +/- 40 ms"), ctx.toxics(both("latency", latency=80, jitter=40)):
        ctx.sleep(ctx.p.fault)


def bandwidth(ctx: Ctx) -> None:
    with ctx.fault("relay bandwidth 4 KB/s"), ctx.toxics(both("bandwidth", rate=4)):
        ctx.sleep(ctx.p.fault)


def slicer(ctx: Ctx) -> None:
    with ctx.fault("relay slicer 8+/-4 B, 50 us"), \
            ctx.toxics(both("slicer", average_size=8, size_variation=4, delay=50)):
        ctx.sleep(ctx.p.fault)


def timeout(ctx: Ctx) -> None:
    with ctx.fault("relay timeout 1.5 s into hubbub-2"), \
            ctx.toxics(both("timeout", timeout=1500), proxies=["hubbub-2"]):
        ctx.sleep(ctx.p.fault)


def reset_peer(ctx: Ctx) -> None:
    with ctx.fault("relay reset_peer 400 ms into hubbub-2"), \
            ctx.toxics(both("reset_peer", timeout=400), proxies=["hubbub-2"]):
        ctx.sleep(ctx.p.fault)


def flaps(ctx: Ctx) -> None:
    """Every second one node's relay proxy goes down for 300 ms (round robin)."""
    t_end = time.monotonic() + ctx.p.fault
    n = 0
    with ctx.fault("relay flaps: 300 ms down every 1 s"):
        while time.monotonic() < t_end:
            proxy = relay_proxy(SERVICES[n % len(SERVICES)])
            n += 1
            ctx.toxi.set_enabled(proxy, False)
            done = ctx.undo(f"enable {proxy}", lambda proxy=proxy: ctx.toxi.set_enabled(proxy, True))
            ctx.sleep(0.3)
            done()
            ctx.sleep(0.7)
    ctx.extra["flaps"] = n


def netem(ctx: Ctx) -> None:
    ok, why = netem_available()
    ctx.extra["netem_available"] = ok
    if ok:
        nm = Netem(ctx.target, "hubbub-2")
        done = ctx.undo("netem", nm.clear)
        with ctx.fault("netem on hubbub-2: delay 60 ms +/- 30 ms, loss 1 %"):
            nm.apply(["delay", "60ms", "30ms", "loss", "1%"])
            ctx.sleep(ctx.p.fault)
            done()
        return
    msg = (f"tc netem is not available on this kernel ({why}: no sch_netem); "
           f"substituted: the proxy's latency 60 ms +/- 30 ms on hubbub-2's relay links "
           f"(gossip and HTTP are not delayed; packet loss is not emulated)")
    log(f"  {msg}")
    ctx.notes.append(msg)
    with ctx.fault("substitute for netem: relay latency 60+/-30 ms into hubbub-2"), \
            ctx.toxics(both("latency", latency=60, jitter=30), proxies=["hubbub-2"]):
        ctx.sleep(ctx.p.fault)


def pause(ctx: Ctx) -> None:
    t = ctx.target
    with ctx.fault("docker pause hubbub-2"):
        t.pause("hubbub-2")
        done = ctx.undo("unpause hubbub-2", lambda: t.unpause("hubbub-2"))
        ctx.sleep(ctx.p.fault)
        done()


def _partition(ctx: Ctx, name: str, **kw) -> None:
    part = Partition(ctx.target)
    done = ctx.undo("heal partition", part.heal)
    with ctx.fault(name):
        part.groups(["hubbub-1"], ["hubbub-2", "hubbub-3"], **kw)
        ctx.extra["cuts"] = part.described
        ctx.sleep(ctx.p.fault)
        done()


def partition(ctx: Ctx) -> None:
    _partition(ctx, "partition {1} | {2,3}: gossip + relay, both ways")


def partition_asymmetric(ctx: Ctx) -> None:
    _partition(ctx, "partition 1 -> {2,3} cut, {2,3} -> 1 open", both_ways=False)


def partition_gossip(ctx: Ctx) -> None:
    _partition(ctx, "gossip-only partition {1} | {2,3}", relay=False)


def _observed_offset(ctx: Ctx) -> float | None:
    """The clock node's wall-clock offset as its update ids show it (UUIDv7 carries
    the publishing node's milliseconds)."""
    node = ctx.target.node(ctx.target.clock_node)
    t_before = time.time()
    status, body = publish(node, f"https://hubbub.test/clock/{uuid.uuid4()}", "clock probe", ctx.v.token)
    t_after = time.time()
    if status != 200 or not body.startswith("urn:uuid:"):
        return None
    ms = int(uuid.UUID(body[len("urn:uuid:"):]).hex[:12], 16)
    return round(ms / 1000 - (t_before + t_after) / 2, 3)


def _set_clock(ctx: Ctx, offset: float) -> float | None:
    ctx.target.set_clock(offset)
    time.sleep(2.2)  # libfaketime re-reads the offset file once the cached copy is >= 1 whole second old
    seen = _observed_offset(ctx)
    ctx.extra.setdefault("clock", []).append({"set_s": offset, "observed_s": seen})
    log(f"  clock of {ctx.target.clock_node}: set {offset:+.3f}s, its update ids say {seen}")
    return seen


def clock_skew(ctx: Ctx) -> None:
    done = ctx.undo("reset clock", lambda: ctx.target.set_clock(0))
    half = max(2.0, ctx.p.fault / 2)
    with ctx.fault(f"clock of {ctx.target.clock_node} +500 ms, then -500 ms"):
        _set_clock(ctx, 0.5)
        ctx.sleep(half)
        _set_clock(ctx, -0.5)
        ctx.sleep(half)
        _set_clock(ctx, 0)
        done()


def clock_step(ctx: Ctx) -> None:
    done = ctx.undo("reset clock", lambda: ctx.target.set_clock(0))
    half = max(2.0, ctx.p.fault / 2)
    with ctx.fault(f"clock of {ctx.target.clock_node} steps +5 s, then back -5 s"):
        _set_clock(ctx, 5.0)
        ctx.sleep(half)
        _set_clock(ctx, 0)
        ctx.sleep(half)
        done()


def slow_subscribers(ctx: Ctx) -> None:
    nodes = ctx.target.nodes()
    before = {n.name: metric(n, "hubbub_slow_consumer_disconnects_total") or 0 for n in nodes}
    # Straight to the node (compose: its container address), past docker-proxy's buffers.
    slow = ctx.v.add_slow(ctx.target.direct("hubbub-2"), 3)
    deadline = time.monotonic() + 10
    while not all(s.connected.is_set() for s in slow) and time.monotonic() < deadline:
        time.sleep(0.05)
    with ctx.fault("3 slow subscribers on hubbub-2 (4 KB buffer, 5 KB/s), updates padded to ~1.6 KB"):
        ctx.v.set_pad(1500)
        for s in slow:
            s.slow.set()
        ctx.sleep(max(ctx.p.fault, 6.0))
        for s in slow:
            s.slow.clear()
        ctx.v.set_pad(0)
    after = {n.name: metric(n, "hubbub_slow_consumer_disconnects_total") or 0 for n in nodes}
    cut = sum(after.values()) - sum(before.values())
    ctx.extra["slow_consumer_disconnects"] = cut
    if cut == 0 and not any(s.reconnects for s in slow):
        ctx.notes.append("the slow subscribers were never cut (the slow-consumer path was not reached)")


def reconnect_storm(ctx: Ctx) -> None:
    storm = Storm(ctx.target.nodes(), ctx.p.storm, token=ctx.v.token)
    ctx.undo("stop storm", lambda: ctx.extra.setdefault("storm", storm.stop(drain_timeout=5)))
    secs = storm.start_all()
    log(f"  {storm.count} storm subscribers connected in {secs:.1f}s")
    ctx.sleep(1.0)
    with ctx.fault(f"reconnect storm: {storm.count} subscribers move at once"):
        storm.move_all()
        deadline = time.monotonic() + max(ctx.p.fault, 20)
        while storm.moved() < storm.count and time.monotonic() < deadline:
            time.sleep(0.1)
        log(f"  {storm.moved()} of {storm.count} resumed on another node")
    ctx.sleep(1.0)
    res = storm.stop()
    ctx._undo = [u for u in ctx._undo if u[0] != "stop storm"]
    res["connect_s"] = round(secs, 2)
    ctx.extra["storm"] = res
    if res["missing"] or res["duplicated"]:
        ctx.extra.setdefault("violations", []).append(
            f"reconnect storm: {res['missing']} missing and {res['duplicated']} duplicate deliveries "
            f"over {res['subscribers']} subscribers")
    if res["moved"] < res["subscribers"]:
        ctx.extra.setdefault("violations", []).append(
            f"reconnect storm: only {res['moved']} of {res['subscribers']} subscribers could resume")


def kill(ctx: Ctx) -> None:
    t = ctx.target
    rounds = []
    for k in range(ctx.p.kills):
        if k:
            ctx.sleep(ctx.p.recovery)
        with ctx.fault(f"kill -9 hubbub-2 ({k + 1})"):
            t0 = time.monotonic()
            t.kill("hubbub-2")
            done = ctx.undo("start hubbub-2", lambda: t.start("hubbub-2"))
            ctx.sleep(2.0)
            done()
            t_start = time.monotonic()
            t.wait_ready(["hubbub-2"], timeout=60)
            rounds.append({"down_s": round(t_start - t0, 2), "start_to_ready_s": round(time.monotonic() - t_start, 2)})
    ctx.extra["kills"] = rounds


def rolling_restart(ctx: Ctx) -> None:
    t = ctx.target
    steps = {}
    for s in SERVICES:
        with ctx.event(f"graceful restart {s}"):
            t0 = time.monotonic()
            t.stop(s)
            done = ctx.undo(f"start {s}", lambda s=s: t.start(s))
            t1 = time.monotonic()
            t.start(s)
            done()
            t.wait_ready([s], timeout=60)
            steps[s] = {"stop_s": round(t1 - t0, 2), "start_to_ready_s": round(time.monotonic() - t1, 2)}
        ctx.sleep(1.0)
    ctx.extra["restarts"] = steps


@dataclass
class Scenario:
    name: str
    fn: Callable[[Ctx], None]
    injects: str
    proves: str
    verifier: dict = field(default_factory=dict)


SCENARIOS = [
    Scenario("baseline", baseline, "nothing",
             "the checks pass on a healthy cluster: every update once everywhere, one order, vectors equal"),
    Scenario("latency-jitter", latency_jitter,
             "latency 80 ms +/- 40 ms on every relay link (both directions, chaosproxy `latency`)",
             "slow links delay delivery but never bend the order: no late update, nothing lost"),
    Scenario("bandwidth", bandwidth, "every relay link limited to 4 KB/s (`bandwidth`)",
             "a backlog builds and drains: nothing lost or doubled, vectors converge after the limit goes"),
    Scenario("slicer", slicer, "relay bytes cut into 4-12 byte pieces 50 us apart (`slicer`)",
             "relay framing (Noise records over TCP) survives arbitrary segmentation"),
    Scenario("timeout", timeout, "relay links into hubbub-2 stall and close after 1.5 s, again and again (`timeout`)",
             "silent links are detected and redialled; updates arrive (late at worst), none lost"),
    Scenario("reset-peer", reset_peer, "relay links into hubbub-2 reset (TCP RST) 400 ms after they open (`reset_peer`)",
             "links that keep dying resume from the receiver's high-water mark: nothing lost or doubled"),
    Scenario("flaps", flaps, "one relay proxy disabled for 300 ms every second, round robin (connection flaps)",
             "scheduled connection loss: every link redials and resumes, vectors converge"),
    Scenario("netem", netem, "`tc netem` delay 60 ms +/- 30 ms and 1 % loss on hubbub-2 (where the kernel has "
             "sch_netem; otherwise the proxy's latency, said so in the report)",
             "kernel-level delay/loss on all of a node's traffic (gossip too) bends nothing"),
    Scenario("pause", pause, "hubbub-2 frozen (`docker pause`: SIGSTOP-like, sockets stay open)",
             "a hung node holds peers back at most order_wait; after it thaws it catches up (late), none lost"),
    Scenario("partition", partition, "hubbub-1 cut from hubbub-2 and -3, gossip and relay, both ways (nftables)",
             "both sides keep serving; after healing every update reaches every node (late), vectors converge"),
    Scenario("partition-asymmetric", partition_asymmetric,
             "hubbub-1 cannot send to hubbub-2/-3 (gossip and relay), but receives from them",
             "one-way reachability is healed the same way: nothing lost, counters explain the reordering"),
    Scenario("partition-gossip", partition_gossip, "gossip (UDP) cut between hubbub-1 and the others, relay links up",
             "membership noise alone (peers look dead to gossip) does not lose or reorder updates"),
    Scenario("clock-skew", clock_skew, "hubbub-3's wall clock +500 ms, then -500 ms (libfaketime)",
             "the hybrid logical clock absorbs skew: one order everywhere, nothing lost"),
    Scenario("clock-step", clock_step, "hubbub-3's wall clock steps 5 s forward, then 5 s back (libfaketime)",
             "a clock step (NTP jump) neither loses nor reorders updates; stamps stay monotonic"),
    Scenario("slow-subscribers", slow_subscribers,
             "3 subscribers on hubbub-2 reading 5 KB/s through a 4 KB buffer while updates are ~1.6 KB",
             "slow consumers are cut and resume with Last-Event-ID, missing nothing; others are unaffected"),
    Scenario("reconnect-storm", reconnect_storm,
             "1,000 (full: 3,000) subscribers on their own topic drop at once and resume on another node "
             "with Last-Event-ID",
             "a thundering herd of resumes is served: every one resumes, nothing missed or doubled"),
    Scenario("kill", kill, "kill -9 of hubbub-2 while it takes publishes, restart 2 s later (new generation); "
             "full form: 4 rounds",
             "peers hold delivery ~0.5 s then go on; nothing a live node holds is lost; counts acknowledged "
             "updates that died with the node (publish_ack=local)"),
    Scenario("rolling-restart", rolling_restart, "each node stopped gracefully (SIGTERM) and started, in turn",
             "a graceful leave is not a fault: exactly once and one order, for movers too"),
]

BY_NAME = {s.name: s for s in SCENARIOS}


def describe() -> str:
    return "\n".join(f"{s.name:22} {s.injects}" for s in SCENARIOS)


def dumps(x) -> str:
    return json.dumps(x, indent=1, default=str)

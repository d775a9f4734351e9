"""`docker compose up` at the root, against the real engine, step by step.

The image comes from the `hubbub_image` fixture (`scripts/image`, no registry);
compose runs with `--no-build`, so nothing is ever pulled or built from the root
Dockerfile here. One compose project per session (unique `-p`), on free host
ports (HUBBUB_PORT_1..3), torn down with `down -v --remove-orphans` even when a
step fails.

The tests run in file order and share the cluster: up -> ready -> publish across
nodes -> kill one node and restart it -> how long peers hold delivery when a node
leaves gracefully vs is killed -> rolling restart under load -> scale to 5 -> down.
Every step is timed and printed (`pytest -s`); the figures go to
tests/deploy/out/compose.json, the containers' logs to tests/deploy/out/compose-logs.txt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from verifier import (
    Node, Rotation, Subscriber, Verifier, cluster_view, free_port, http_get, is_ready, mint_token, percentiles,
    publish,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "out"
BASE = ["docker-compose.yml"]
SCALED = ["docker-compose.yml", "docker-compose.scale.yml"]
FIXED = ["hubbub-1", "hubbub-2", "hubbub-3"]
TOKEN = mint_token()


FIGURES: dict = {"steps": {}}  # written to out/compose.json at teardown
SHARED: dict = {}  # what a later step checks of an earlier one


def readme_token() -> str:
    """The dev token the README's Deploy section tells users to paste."""
    m = re.search(r"^TOKEN=(eyJ[\w.-]+)", (ROOT / "README.md").read_text(), re.M)
    assert m, "README: no TOKEN=... line in the Deploy section"
    return m.group(1)


def note(msg: str) -> None:
    print(f"[deploy] {msg}", flush=True)


@contextmanager
def step(name: str):
    t = time.monotonic()
    note(f"{name} ...")
    try:
        yield
    finally:
        secs = round(time.monotonic() - t, 2)
        FIGURES["steps"][name] = secs
        note(f"{name}: {secs:.2f}s")


class Project:
    """One compose project: the compose CLI with -p and -f, plus docker inspect."""

    def __init__(self, cmd: list[str], name: str, env: dict, ports: dict[str, int]):
        self.cmd = cmd
        self.name = name
        self.env = env
        self.ports = ports  # fixed service -> host port
        self.t_up: float | None = None

    def argv(self, args, files) -> list[str]:
        out = [*self.cmd, "-p", self.name]
        for f in files:
            out += ["-f", str(ROOT / f)]
        return out + list(args)

    def compose(self, *args: str, files=BASE, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        argv = self.argv(args, files)
        r = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def popen(self, *args: str, files=BASE) -> subprocess.Popen:
        """A compose command running in the background (stdout and stderr together)."""
        return subprocess.Popen(self.argv(args, files), cwd=ROOT, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def containers(self, service: str | None = None, all_: bool = True) -> list[str]:
        argv = ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.name}"]
        if all_:
            argv.insert(2, "-a")
        if service:
            argv += ["--filter", f"label=com.docker.compose.service={service}"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return sorted(out.split())

    @staticmethod
    def inspect(*ids: str) -> list[dict]:
        if not ids:
            return []
        r = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True)
        return json.loads(r.stdout)

    def node(self, service: str) -> Node:
        return Node(service, "127.0.0.1", self.ports[service])

    def nodes(self) -> list[Node]:
        return [self.node(s) for s in FIXED]

    def extra_nodes(self) -> list[Node]:
        out = []
        for info in self.inspect(*self.containers("hubbub-extra", all_=False)):
            binding = info["NetworkSettings"]["Ports"]["8080/tcp"][0]
            out.append(Node(info["Config"]["Hostname"], "127.0.0.1", int(binding["HostPort"])))
        return out

    def health(self) -> dict[str, str]:
        """container name -> health status (or state when it has no health check)."""
        out = {}
        for info in self.inspect(*self.containers()):
            st = info["State"]
            out[info["Name"].lstrip("/")] = st.get("Health", {}).get("Status", st["Status"]) if st["Running"] else st["Status"]
        return out


def wait_ready(project: Project, nodes: list[Node], containers: list[str], timeout: float = 90) -> dict:
    """Until every node answers /readyz 200 and every container is `healthy`.

    Returns seconds (from the call) until all were ready and until all were healthy.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    t_ready = t_healthy = None
    last_inspect = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if t_ready is None and all(is_ready(n, 0.5) for n in nodes):
            t_ready = now - t0
        if t_healthy is None and now - last_inspect >= 0.25:
            last_inspect = now
            infos = project.inspect(*containers)
            # (A container without a health check counts as healthy; test_up checks there is one.)
            if all(i["State"].get("Health", {}).get("Status", "healthy") == "healthy" for i in infos):
                t_healthy = now - t0
        if t_ready is not None and t_healthy is not None:
            return {"ready_s": round(t_ready, 2), "healthy_s": round(t_healthy, 2)}
        time.sleep(0.1)
    raise AssertionError(
        f"not ready within {timeout}s: readyz={[(n.name, is_ready(n)) for n in nodes]} health={project.health()}"
    )


def vectors(nodes: list[Node]) -> dict[str, dict | None]:
    out = {}
    for n in nodes:
        v = cluster_view(n)
        out[n.name] = None if v is None else v.get("vector")
    return out


def wait_vectors_equal(nodes: list[Node], timeout: float = 30) -> float:
    """Seconds until every node answers /cluster with the same vector."""
    t0 = time.monotonic()
    while True:
        vs = vectors(nodes)
        values = list(vs.values())
        if all(v is not None for v in values) and all(v == values[0] for v in values):
            return round(time.monotonic() - t0, 2)
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"vectors differ after {timeout}s: {json.dumps(vs, indent=1)}")
        time.sleep(0.2)


def listen(nodes: list[Node], topic: str, last_event_id: str | None = None) -> list[Subscriber]:
    """One non-moving subscriber per node, connected."""
    rot = Rotation(nodes)
    subs = []
    for n in nodes:
        s = Subscriber(f"probe-{n.name}", rot, topic, n, fixed=True)
        s.last_id = last_event_id  # the first connection resumes after it
        subs.append(s)
        s.start()
    for s in subs:
        assert s.connected.wait(10), f"{s.name} could not subscribe: {s.connections}"
    return subs


def wait_ids(subs: list[Subscriber], ids: list[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    want = set(ids)
    while time.monotonic() < deadline:
        if all(want <= s.received_ids() for s in subs):
            return
        time.sleep(0.05)
    raise AssertionError({s.name: sorted(want - s.received_ids()) for s in subs})


def publish_ok(node: Node, topic: str, data: str) -> str:
    status, body = publish(node, topic, data, TOKEN)
    assert status == 200, f"publish to {node} answered {status}: {body}"
    return body


# ------------------------------------------------------------------------ fixture


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# hubbubtest-<host>-<pid>-<random>: the host part keeps other machines' (or
# containers') sessions on a shared engine out of remove_stale_projects().
PROJECT_PREFIX = f"hubbubtest-{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]}-"


def remove_stale_projects() -> None:
    """Containers and networks of earlier sessions whose pytest process is gone
    (killed before its teardown ran) on this host."""
    out = subprocess.run(["docker", "ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'],
                         capture_output=True, text=True).stdout
    nets = subprocess.run(["docker", "network", "ls", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'],
                          capture_output=True, text=True).stdout
    for kind, listing in (("rm", out), ("network", nets)):
        for line in listing.splitlines():
            ident, _, project = line.partition(" ")
            if not project.startswith(PROJECT_PREFIX):
                continue
            pid = project[len(PROJECT_PREFIX):].split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                note(f"removing {ident} of stale project {project}")
                argv = ["docker", "rm", "-f", ident] if kind == "rm" else ["docker", "network", "rm", ident]
                subprocess.run(argv, capture_output=True)


@pytest.fixture(scope="module")
def cluster(request, compose, hubbub_image):
    taken: set[int] = set()
    ports = {s: free_port(taken) for s in FIXED}
    remove_stale_projects()
    name = f"{PROJECT_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, HUBBUB_IMAGE=hubbub_image,
               **{f"HUBBUB_PORT_{i + 1}": str(ports[s]) for i, s in enumerate(FIXED)})
    project = Project(compose, name, env, ports)
    size = int(subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", hubbub_image],
                              capture_output=True, text=True, check=True).stdout)
    FIGURES.update(compose=" ".join(compose), project=name, image=hubbub_image,
                   image_bytes=size, image_mib=round(size / 2**20, 1))
    note(f"compose={' '.join(compose)} project={name} ports={ports} image={hubbub_image} ({size / 2**20:.1f} MiB)")
    t_session = time.monotonic()

    def teardown():
        OUT.mkdir(exist_ok=True)
        try:
            logs = project.compose("logs", "--no-color", "--timestamps", files=SCALED, check=False, timeout=60)
            (OUT / "compose-logs.txt").write_text(logs.stdout + logs.stderr)
        except Exception as e:  # noqa: BLE001 - the logs are a courtesy, removal is not
            note(f"could not save the logs: {e}")
        with step("down -v (teardown)"):
            r = project.compose("down", "-v", "--remove-orphans", "--timeout", "30", files=SCALED, check=False)
        left = project.containers()
        nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={name}"],
                              capture_output=True, text=True).stdout.split()
        for c in left:  # last resort, so nothing outlives the session
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
        for n in nets:
            subprocess.run(["docker", "network", "rm", n], capture_output=True)
        FIGURES["total_s"] = round(time.monotonic() - t_session, 1)
        (OUT / "compose.json").write_text(json.dumps(FIGURES, indent=2, default=str))
        note(f"figures: {OUT / 'compose.json'}")
        assert r.returncode == 0, f"down failed: {r.stdout}\n{r.stderr}"
        assert not left and not nets, f"down left containers {left} / networks {nets}"

    request.addfinalizer(teardown)
    # A CI timeout's SIGTERM tears down like Ctrl-C does (pytest runs finalizers then).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    request.addfinalizer(lambda: signal.signal(signal.SIGTERM, previous))
    with step("up -d"):
        project.t_up = time.monotonic()
        project.compose("up", "-d", "--no-build")
    return project


# -------------------------------------------------------------------------- tests


def test_up_all_ready(cluster: Project):
    with step("wait ready (3 nodes)"):
        r = wait_ready(cluster, cluster.nodes(), cluster.containers())
    up_to_ready = round(time.monotonic() - cluster.t_up, 2)
    FIGURES["up_to_ready_s"] = up_to_ready
    FIGURES["up_to_ready_detail"] = r
    note(f"`up -d` -> all /readyz 200 and healthy: {up_to_ready}s ({r})")

    infos = cluster.inspect(*cluster.containers())
    assert len(infos) == 3
    for i in infos:
        assert i["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert i["Config"]["Healthcheck"]["Test"] == ["CMD", "/usr/local/bin/hubbub", "probe"]
        assert i["Config"]["User"].split(":")[0] == "10001"
        env = dict(e.split("=", 1) for e in i["Config"]["Env"])
        assert not any(k.endswith("_ADVERTISE") for k in env), "advertise addresses must be automatic"
    # Node 1 sees the three, all ready (gossip may trail /readyz by a few rounds).
    deadline = time.monotonic() + 10
    while True:
        view = cluster_view(cluster.node("hubbub-1")) or {"node": None, "members": []}
        names = {view["node"]} | {m["node"] for m in view["members"] if m["ready"]}
        if names == set(FIXED):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    FIGURES["members_ready_s"] = round(time.monotonic() - cluster.t_up, 2)


def test_publish_on_one_node_reaches_the_others(cluster: Project):
    n1, n2, n3 = cluster.nodes()
    topic = f"https://hubbub.test/hello/{uuid.uuid4()}"
    subs = listen([n2, n3], topic)
    try:
        with step("publish to node 1, received on nodes 2 and 3"):
            t = time.monotonic()
            status, uid = publish(n1, topic, json.dumps({"hello": "cluster"}), readme_token())
            assert status == 200, f"publish with the README's token answered {status}: {uid}"
            wait_ids(subs, [uid], timeout=5)
            t_recv = max(r.t_recv for s in subs for r in s.received if r.id == uid)
            FIGURES["cross_node_latency_ms"] = round((t_recv - t) * 1000, 1)
    finally:
        for s in subs:
            s.stop()


def listed_topics(node: Node) -> set[str]:
    """The topics the node's subscriptions API lists (0.x JSON-LD, as TOKEN is a 0.x dev token)."""
    status, body = http_get(node, "/.well-known/mercure/subscriptions", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, (node.name, status, body[:200])
    return {s["topic"] for s in json.loads(body)["subscriptions"]}


def test_presence_lists_a_subscriber_on_every_node(cluster: Project):
    """Active subscriptions (on with HUBBUB_DEV): a subscriber on node 1 is listed by every node's
    subscriptions API, and leaves every list when it disconnects."""
    n1, n2, n3 = cluster.nodes()
    topic = f"https://hubbub.test/presence/{uuid.uuid4()}"
    subs = listen([n1], topic)
    with step("a subscriber on node 1 is listed on nodes 1, 2 and 3"):
        deadline = time.monotonic() + 10
        while not all(topic in listed_topics(n) for n in (n1, n2, n3)):
            assert time.monotonic() < deadline, {n.name: sorted(listed_topics(n)) for n in (n1, n2, n3)}
            time.sleep(0.1)
    for s in subs:
        s.stop()
    with step("gone from every list once it disconnects"):
        deadline = time.monotonic() + 10
        while any(topic in listed_topics(n) for n in (n1, n2, n3)):
            assert time.monotonic() < deadline, "still listed"
            time.sleep(0.1)


def test_killed_node_others_serve_and_it_catches_up(cluster: Project):
    n1, n2, n3 = cluster.nodes()
    topic = f"https://hubbub.test/kill/{uuid.uuid4()}"
    before = publish_ok(n1, topic, "before")
    with step("kill -s SIGKILL hubbub-2"):
        cluster.compose("kill", "-s", "SIGKILL", "hubbub-2")
    time.sleep(1)
    state = cluster.inspect(*cluster.containers("hubbub-2"))[0]["State"]
    FIGURES["killed_container_restarted_by_policy"] = state["Running"]
    subs = listen([n1, n3], topic)
    ids = [before]
    try:
        with step("nodes 1 and 3 serve while node 2 is dead"):
            for k in range(6):
                ids.append(publish_ok((n1, n3)[k % 2], topic, f"during-{k}"))
            wait_ids(subs, ids[1:], timeout=10)
    finally:
        for s in subs:
            s.stop()
    order = [r.id for r in subs[0].received]
    with step("start hubbub-2 -> ready"):
        cluster.compose("start", "hubbub-2")
        r = wait_ready(cluster, [n2], cluster.containers("hubbub-2"))
    FIGURES["killed_node_start_to_ready"] = r
    with step("vectors equal after restart"):
        FIGURES["killed_node_vectors_equal_s"] = wait_vectors_equal([n1, n2, n3])
    # It holds what was published while it was dead, in the cluster's order.
    late = listen([n2], topic, last_event_id=before)
    try:
        wait_ids(late, ids[1:], timeout=10)
        assert [r.id for r in late[0].received] == order
    finally:
        for s in late:
            s.stop()


HOLD_ACTIONS = {
    # how: (command that takes node 2 away, command that brings it back)
    "graceful": (("stop", "hubbub-2"), ("start", "hubbub-2")),  # SIGTERM: the node leaves
    "killed": (("kill", "-s", "SIGKILL", "hubbub-2"), ("start", "hubbub-2")),  # its kernel still closes its sockets
    "frozen": (("pause", "hubbub-2"), ("unpause", "hubbub-2")),  # silent, sockets open: a hung or cut-off host
}


def _hold(cluster: Project, how: str) -> dict:
    """Publish to node 1 at 50/s with subscribers on node 3; take node 2 away; measure
    the publish-to-delivery latency on node 3 in the 6 s after, then bring it back."""
    n1, n2, n3 = cluster.nodes()
    away, back = HOLD_ACTIONS[how]
    v = Verifier(cluster.nodes(), rate=50, publish_to=[n1], subscribe_on=[n3], subscribers_per_node=2,
                 sticky_subscribers=True)
    v.start()
    with v.aborted_on_error():
        time.sleep(3)
        t_event = time.monotonic()
        proc = cluster.popen(*away)
        time.sleep(6)
        t_after = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        command_s = round(time.monotonic() - t_event, 2)
        assert proc.returncode == 0, out
        t_back = time.monotonic()
        cluster.compose(*back)
        wait_ready(cluster, [n2], cluster.containers("hubbub-2"))
        t_ready = time.monotonic()
        time.sleep(3)
        summary = v.stop()
    base = percentiles(v.latencies(v.t_start, t_event - 0.5))
    around = percentiles(v.latencies(t_event - 0.5, t_after))
    rejoin = percentiles(v.latencies(t_back, t_ready + 2))
    assert summary["lost"] == 0 and summary["duplicates"] == 0, summary
    assert summary["order_mismatches"] == 0, summary["order_detail"]
    res = {"hold_max_ms": around["max_ms"], "baseline": base, "after_event": around, "while_rejoining": rejoin,
           "command_s": command_s, "back_to_ready_s": round(t_ready - t_back, 2),
           "published": summary["published"], "lost": summary["lost"], "duplicates": summary["duplicates"]}
    note(f"hold, node 2 {how}: max {around['max_ms']} ms (baseline p50 {base['p50_ms']} / max {base['max_ms']} ms; "
         f"while it rejoins: max {rejoin['max_ms']} ms)")
    return res


def test_hold_graceful_leave_vs_kill(cluster: Project):
    """How long do peers hold delivery back when a node goes away?"""
    holds = {}
    for how in HOLD_ACTIONS:
        with step(f"hold: node 2 {how}"):
            holds[how] = _hold(cluster, how)
        wait_vectors_equal(cluster.nodes())
    FIGURES["hold"] = holds
    g, k, f = (holds[h]["hold_max_ms"] for h in ("graceful", "killed", "frozen"))
    # A silent peer holds delivery until gossip declares it dead or order_wait passes,
    # whichever comes first; a leaving one says so first and holds nothing.
    assert g < k / 2 and g < f / 2, f"graceful leave held delivery {g} ms, a kill {k} ms, a freeze {f} ms"


def test_rolling_restart_under_load_loses_nothing(cluster: Project):
    nodes = cluster.nodes()
    wait_vectors_equal(nodes)
    v = Verifier(nodes, rate=50, subscribers_per_node=3)
    per_node = {}
    with step("rolling restart under 50 publishes/s"):
        v.start()
        with v.aborted_on_error():
            time.sleep(8)
            t_r0 = time.monotonic()
            for service, node in zip(FIXED, nodes):
                t = time.monotonic()
                cluster.compose("stop", service)
                t_stopped = time.monotonic()
                cluster.compose("start", service)
                r = wait_ready(cluster, [node], cluster.containers(service))
                per_node[service] = {"stop_s": round(t_stopped - t, 2),
                                     "start_to_ready_s": round(time.monotonic() - t_stopped, 2),
                                     "healthy_s": r["healthy_s"]}
                note(f"restarted {service}: {per_node[service]}")
                time.sleep(2)
            t_r1 = time.monotonic()
            time.sleep(4)
            summary = v.stop()
    before = percentiles(v.latencies(v.t_start, t_r0))
    during = percentiles(v.latencies(t_r0, t_r1, "live"))
    during_replayed = percentiles(v.latencies(t_r0, t_r1, "replayed"))
    after = percentiles(v.latencies(t_r1, None))
    brief = {k: summary[k] for k in ("published", "acked", "lost", "duplicates", "republished", "order_mismatches",
                                     "reconnects", "resume_misses", "publish_retries", "publish_retried_seqs",
                                     "subscribers", "duration_s", "publisher_error")}
    FIGURES["rolling_restart"] = {**brief, "latency_before": before, "latency_during_live": during,
                                  "latency_during_replayed": during_replayed, "latency_after": after,
                                  "per_node": per_node}
    SHARED["rolling"] = (v.topic, [r.id for r in v.subscribers[0].received])
    OUT.mkdir(exist_ok=True)
    (OUT / "rolling-restart-verifier.json").write_text(json.dumps(summary, indent=1, default=str))
    note(f"rolling restart: {brief}")
    note(f"latency before {before}")
    note(f"latency during, live streams {during}")
    note(f"latency during, replayed after a reconnect {during_replayed}")
    note(f"latency after {after}")
    assert summary["publisher_error"] is None, summary["publisher_error"]
    assert summary["acked"] >= 0.8 * v.rate * summary["duration_s"], brief
    assert summary["lost"] == 0, summary["per_subscriber"]
    assert summary["duplicates"] == 0, summary["per_subscriber"]
    assert summary["order_mismatches"] == 0, summary["order_detail"]
    assert summary["reconnects"] >= len(nodes), "subscribers on restarted nodes should have moved"


def test_scale_to_five(cluster: Project):
    fixed = cluster.nodes()
    with step("up --scale hubbub-extra=2"):
        t0 = time.monotonic()
        cluster.compose("up", "-d", "--no-build", "--scale", "hubbub-extra=2", files=SCALED)
        extra_ids = cluster.containers("hubbub-extra")
        assert len(extra_ids) == 2, extra_ids
        extras = cluster.extra_nodes()
        r = wait_ready(cluster, extras, extra_ids)
    FIGURES["scale_up_to_ready_s"] = round(time.monotonic() - t0, 2)
    FIGURES["scale_detail"] = r
    # The fixed nodes were left alone (same containers, still running).
    assert all(i["State"]["Running"] for s in FIXED for i in cluster.inspect(*cluster.containers(s)))
    # The extras run the same configuration as the fixed nodes (the override file repeats it).
    base = cluster.inspect(*cluster.containers("hubbub-1"))[0]
    for info in cluster.inspect(*extra_ids):
        assert info["Config"]["Healthcheck"] == base["Config"]["Healthcheck"]
        assert sorted(info["Config"]["Env"]) == sorted(base["Config"]["Env"])
        assert info["HostConfig"]["RestartPolicy"] == base["HostConfig"]["RestartPolicy"]
    # The README's way to find a scaled node's port.
    port = cluster.compose("port", "--index", "1", "hubbub-extra", "8080", files=SCALED).stdout.strip()
    assert int(port.rsplit(":", 1)[1]) in {e.port for e in extras}, port
    all_nodes = fixed + extras
    with step("5 members, vectors equal"):
        deadline = time.monotonic() + 30
        while True:
            view = cluster_view(fixed[0]) or {"node": None, "members": []}
            names = {view["node"]} | {m["node"] for m in view["members"] if m["ready"]}
            if len(names) == 5:
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
        assert {e.name for e in extras} <= names, (names, extras)
        FIGURES["scale_vectors_equal_s"] = wait_vectors_equal(all_nodes)
    if "rolling" in SHARED:
        # A new node holds the history from before it joined, in the cluster's order:
        # resuming there from the rolling restart's first update replays all the rest.
        topic, ids = SHARED["rolling"]
        with step("new node replays the rolling restart's updates"):
            late = listen([extras[0]], topic, last_event_id=ids[0])
            try:
                wait_ids(late, ids[1:], timeout=20)
                assert [r.id for r in late[0].received] == ids[1:]
            finally:
                for s in late:
                    s.stop()
    topic = f"https://hubbub.test/scale/{uuid.uuid4()}"
    subs = listen([fixed[0], extras[1]], topic)
    try:
        uid = publish_ok(extras[0], topic, "from a scaled node")
        wait_ids(subs, [uid], timeout=5)
    finally:
        for s in subs:
            s.stop()
    stats = {n.name: (cluster_view(n) or {}).get("stats") for n in all_nodes}
    FIGURES["cluster_stats_end"] = stats
    assert all(s is not None and s.get("lost") == 0 for s in stats.values()), stats


def test_down_removes_everything(cluster: Project):
    with step("down -v"):
        cluster.compose("down", "-v", "--remove-orphans", "--timeout", "30", files=SCALED)
    assert cluster.containers() == []
    nets = subprocess.run(["docker", "network", "ls", "-q", "--filter",
                           f"label=com.docker.compose.project={cluster.name}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert nets == []

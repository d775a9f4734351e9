"""The Kubernetes manifests in k8s/, tested without a cluster (none can run here), two ways:

1. Render them as `kubectl apply -k k8s/` would (`kubectl kustomize`) and validate every object
   offline against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: an unknown or
   misspelt field fails), plus the invariants operators rely on and the schemas cannot see
   (shutdown timing, ports, probes, security context, the env and flags the binary knows).
2. Run the StatefulSet's own container spec as the kubelet would, for pods hubbub-0..2: the
   image, args and env of the spec (downward API values filled in, Secret values resolved,
   `$(VAR)` expanded), its security context and memory limit, as three containers on a
   user-defined Docker network whose DNS aliases stand in for the headless Service. Then the
   spec's probes must pass, the three must form one cluster, an update published to pod 0 must
   reach a subscriber of pod 2, and pod 2 must stop by itself within its grace period.

Needs `kubectl` (Debian `kubernetes-client`), `kubernetes-validate` and PyYAML (pip), and for part
2 a Docker engine (conftest.py's fixtures). Missing tools skip locally and fail with CI=true;
`.ci/install-deps` installs them.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import uuid

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

try:
    import yaml  # noqa: F401  (k8s_util needs it; kubernetes-validate depends on it)
except ImportError:
    if IN_CI:
        raise
    pytest.skip("PyYAML is missing: run .ci/install-deps", allow_module_level=True)

import k8s_util as k  # noqa: E402

NAMESPACE = "default"
REPLICAS = 3
# Kubernetes versions to validate against: the oldest the manifests claim to support (the
# preStop `sleep` action is on by default from 1.30), the kubectl shipped here, and the newest
# schemas kubernetes-validate carries.
K8S_VERSIONS = ["1.30", "1.32", "latest"]


def need(what: str, why: str | None):
    if why is None:
        return
    msg = f"{what} is missing ({why}): run .ci/install-deps"
    if IN_CI:
        pytest.fail(f"CI=true and {msg}")
    pytest.skip(msg)


# --------------------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    need("kubectl", None if shutil.which("kubectl") else "not on PATH (Debian package kubernetes-client)")
    return k.kustomize()


@pytest.fixture(scope="module")
def sts(rendered) -> dict:
    return k.find(rendered, "StatefulSet", "hubbub")


@pytest.fixture(scope="module")
def container(sts) -> dict:
    return k.hubbub_container(sts)


def test_kustomization_lists_every_manifest():
    """`kubectl apply -k` and `kubectl apply -f` must see the same files."""
    kust = yaml.safe_load((k.K8S_DIR / "kustomization.yaml").read_text())
    listed = kust.get("resources", [])
    files = [p.name for p in k.manifest_files()]
    assert sorted(listed) == sorted(files), (
        f"k8s/kustomization.yaml resources {sorted(listed)} != files in k8s/ {sorted(files)}: "
        "every manifest must be listed (and nothing else)"
    )
    assert len(set(listed)) == len(listed), "a resource is listed twice"
    assert set(kust) <= {"apiVersion", "kind", "resources", "images"}, (
        "kustomization.yaml may only rewrite the image: anything else (patches, name prefixes, "
        "labels) would make `kubectl apply -f k8s/` deploy something different"
    )


def test_apply_f_deploys_what_apply_k_deploys(rendered):
    """The plain files (what `kubectl apply -f k8s/` sends) equal the kustomize output."""
    plain = {k.key(d): d for d in k.load_files(k.manifest_files())}
    built = {k.key(d): d for d in rendered}
    assert sorted(plain) == sorted(built)
    for key_, obj in built.items():
        assert plain[key_] == obj, f"{key_}: `kubectl apply -f` and `-k` differ (image or other field)"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_objects_validate_against_openapi(rendered, version):
    try:
        import kubernetes_validate
        from kubernetes_validate import utils as kv_utils
    except ImportError as exc:
        need("the python package kubernetes-validate", str(exc))
    if version == "latest":
        version = k8s_major_minor(kv_utils.latest_version())
    if not any(k8s_major_minor(v) == version for v in kv_utils.all_versions()):
        pytest.skip(f"this kubernetes-validate ships no schemas for Kubernetes {version}")
    want = {
        ("Secret", "hubbub"),
        ("Service", "hubbub"),
        ("Service", "hubbub-peers"),
        ("StatefulSet", "hubbub"),
        ("PodDisruptionBudget", "hubbub"),
        ("NetworkPolicy", "hubbub-peers"),
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered} == want
    for obj in rendered:
        error = None
        try:
            used = kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            error = f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: {path}: {exc.message}"
        if error:
            pytest.fail(error, pytrace=False)
        assert used == k8s_major_minor(version), f"validated against the schemas of {used}, not {version}"


def k8s_major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


# --------------------------------------------------------------------------- invariants


def test_shutdown_timing(sts, container):
    """terminationGracePeriodSeconds > preStop sleep + drain window + shutdown grace."""
    pod = sts["spec"]["template"]["spec"]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    assert set(pre_stop) == {"sleep"}, (
        "preStop must be the native sleep action: the image is FROM scratch (no shell, no sleep binary)"
    )
    sleep = pre_stop["sleep"]["seconds"]
    assert 3 <= sleep <= 15, f"preStop sleeps {sleep}s: long enough for endpoint removal, not longer"
    drain = k.duration_s(k.spec_env_literal(container, "HUBBUB_DRAIN_WINDOW"))
    shutdown = k.duration_s(k.spec_env_literal(container, "HUBBUB_SHUTDOWN_GRACE"))
    need_s = sleep + drain + shutdown
    assert grace > need_s, (
        f"terminationGracePeriodSeconds {grace} <= preStop {sleep} + drain window {drain} + "
        f"shutdown grace {shutdown}: the kubelet would SIGKILL a draining node"
    )
    assert grace - need_s >= 5, f"only {grace - need_s}s of margin for leaving the cluster and exiting"


def test_ports_and_addresses_agree(rendered, sts, container):
    env = {e["name"]: e.get("value") for e in container["env"]}
    ports = k.named_ports(container)
    assert set(ports) == {"http", "gossip", "relay"}
    for name, proto, var in (("http", "TCP", "HUBBUB_LISTEN"), ("gossip", "UDP", "HUBBUB_GOSSIP_LISTEN"), ("relay", "TCP", "HUBBUB_RELAY_LISTEN")):
        host, port = k.host_port(env[var])
        assert host == "0.0.0.0", f"{var}={env[var]}: must listen on every pod address"
        assert ports[name]["containerPort"] == port, f"container port {name} != {var} {env[var]}"
        assert ports[name].get("protocol", "TCP") == proto, f"container port {name} must be {proto}"
    for adv, listen in (("HUBBUB_GOSSIP_ADVERTISE", "HUBBUB_GOSSIP_LISTEN"), ("HUBBUB_RELAY_ADVERTISE", "HUBBUB_RELAY_LISTEN")):
        host, port = k.host_port(env[adv])
        assert host == "$(POD_IP)", f"{adv} must advertise the pod IP from the downward API"
        assert port == k.host_port(env[listen])[1], f"{adv} advertises another port than {listen}"
    # The seeds are the headless Service (the StatefulSet's governing Service) on the gossip port.
    seed_host, seed_port = k.host_port(env["HUBBUB_SEEDS"])
    headless = k.find(rendered, "Service", sts["spec"]["serviceName"])
    assert headless["spec"].get("clusterIP") == "None" and headless["spec"].get("publishNotReadyAddresses") is True
    assert seed_host == f"{headless['metadata']['name']}.$(NAMESPACE).svc.cluster.local"
    assert seed_port == ports["gossip"]["containerPort"]
    assert env.get("HUBBUB_NODE_ID") == "$(POD_NAME)"
    # Downward API.
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "fieldRef" in e.get("valueFrom", {})}
    assert fields == {"POD_NAME": "metadata.name", "POD_IP": "status.podIP", "NAMESPACE": "metadata.namespace"}
    names = k.spec_env_names(container)
    for var in ("POD_NAME", "POD_IP", "NAMESPACE"):
        assert names.index(var) < min(i for i, n in enumerate(names) if n.startswith("HUBBUB_")), (
            f"{var} must come before the variables that reference it: $(VAR) only sees earlier entries"
        )
    # Services point at named container ports of the right protocol.
    for svc in (s for s in rendered if s["kind"] == "Service"):
        assert svc["spec"]["selector"] == sts["spec"]["template"]["metadata"]["labels"]
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            cport = ports[target] if isinstance(target, str) else None
            assert cport is not None, f"Service {svc['metadata']['name']} targets {target!r}: use a named port"
            assert cport.get("protocol", "TCP") == p.get("protocol", "TCP")
    # Prometheus annotations name the HTTP port.
    ann = sts["spec"]["template"]["metadata"].get("annotations", {})
    assert ann.get("prometheus.io/scrape") == "true"
    assert ann.get("prometheus.io/port") == str(ports["http"]["containerPort"])
    assert ann.get("prometheus.io/path") == "/metrics"
    # NetworkPolicy: gossip and relay only from hubbub pods; HTTP open.
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    np = k.find(rendered, "NetworkPolicy")
    assert np["spec"]["podSelector"]["matchLabels"] == pod_labels
    for rule in np["spec"]["ingress"]:
        rule_ports = {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}
        cluster_ports = {(ports["gossip"]["containerPort"], "UDP"), (ports["relay"]["containerPort"], "TCP")}
        if rule_ports & cluster_ports:
            assert rule.get("from") == [{"podSelector": {"matchLabels": pod_labels}}], (
                "gossip/relay ports must be reachable from hubbub pods only"
            )
    covered = {(p["port"], p.get("protocol", "TCP")) for r in np["spec"]["ingress"] for p in r.get("ports", [])}
    assert covered == {(p["containerPort"], p.get("protocol", "TCP")) for p in ports.values()}
    pdb = k.find(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == pod_labels and pdb["spec"].get("maxUnavailable") == 1


def test_probes_and_pod_hardening(sts, container):
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["replicas"] == REPLICAS
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{probe} must GET {path}"
        assert isinstance(get["port"], str), f"{probe} must use a named port"
        assert k.resolve_port(container, get["port"]) == k.named_ports(container)["http"]["containerPort"]
    start = container["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 20, "startup gets at least 20 s"
    res = container["resources"]
    for kind_ in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res[kind_]), f"resources.{kind_} must set cpu and memory"
    assert k.quantity(res["requests"]["memory"]) <= k.quantity(res["limits"]["memory"])
    assert k.quantity(res["requests"]["cpu"]) <= k.quantity(res["limits"]["cpu"])
    psc, csc = pod["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001 and psc["runAsGroup"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] == 10001 and csc["runAsGroup"] == 10001
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc.get("privileged", False) is False
    assert pod["automountServiceAccountToken"] is False
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for c in spread.values():
        assert c["labelSelector"]["matchLabels"] == sts["spec"]["template"]["metadata"]["labels"]
    assert container["image"] == "hubbub:dev", "scripts/image tags hubbub:dev, k8s/README.md loads that"
    assert container.get("imagePullPolicy") == "IfNotPresent", "a side-loaded image (kind/k3s) must not be pulled"


# --------------------------------------------------------------------------- the binary's options


@pytest.fixture(scope="module")
def serve_options(hubbub_image, container) -> dict[str, dict]:
    """`hubbub serve --help` of the freshly built image, run the way the spec runs it."""
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", hubbub_image], capture_output=True, check=True, text=True).stdout)
    entrypoint = inspect[0]["Config"]["Entrypoint"]
    assert "command" not in container, "the spec overrides the entrypoint: adapt this test"
    assert entrypoint[-2:] == ["/usr/local/bin/hubbub", "serve"] or entrypoint[-1] == "serve", (
        f"the image's entrypoint {entrypoint} is not `hubbub serve`: the spec's args would not be serve's flags"
    )
    r = subprocess.run(["docker", "run", "--rm", "--no-healthcheck", hubbub_image, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"`hubbub serve --help` failed: {r.stderr}"
    options = k.parse_serve_help(r.stdout)
    assert len(options) > 30 and options["listen"]["env"] == "HUBBUB_LISTEN", "could not parse serve --help"
    return options


def test_env_and_flags_known_to_the_binary(container, serve_options):
    problems = k.check_against_binary(container, serve_options)
    assert not problems, "the manifest is out of step with `hubbub serve`:\n  " + "\n  ".join(problems)


def test_the_check_catches_unknown_options(container, serve_options):
    """The check above is not vacuous: each kind of drift is reported."""
    for mutate, expect in (
        (lambda c: c["env"].append({"name": "HUBBUB_NOT_AN_OPTION", "value": "1"}), "HUBBUB_NOT_AN_OPTION"),
        (lambda c: c["args"].extend(["--not-an-option", "1"]), "--not-an-option"),
        (lambda c: c["args"].__setitem__(slice(None), ["--log-format"]), "needs a value"),
        (lambda c: c["args"].__setitem__(slice(None), ["--log-format", "yaml"]), "accepts only"),
    ):
        bad = copy.deepcopy(container)
        bad.setdefault("args", [])
        mutate(bad)
        problems = k.check_against_binary(bad, serve_options)
        assert any(expect in p for p in problems), f"mutation with {expect} not reported: {problems}"


# --------------------------------------------------------------------------- the container spec, run


class Pods:
    """hubbub-0..N-1 from the StatefulSet's container spec, as Docker containers."""

    def __init__(self, image: str, rendered: list[dict], sts: dict):
        self.image = image
        self.rendered = rendered
        self.sts = sts
        self.pod = sts["spec"]["template"]["spec"]
        self.container = k.hubbub_container(sts)
        self.run_id = uuid.uuid4().hex[:8]
        self.network = f"hubbub-k8s-{self.run_id}"
        self.names = [f"hubbub-k8s-{self.run_id}-{i}" for i in range(REPLICAS)]
        self.ips: list[str] = []
        self.env: list[dict[str, str]] = []
        self.started = False

    # -- lifecycle

    def create_network(self):
        # A /24 not used by any other network; the compose tests may create networks at the same time.
        last = ""
        for attempt in range(20):
            third = (int(self.run_id, 16) + attempt * 37) % 200 + 20
            subnet = f"172.29.{third}.0/24"
            r = subprocess.run(
                ["docker", "network", "create", "--driver", "bridge", "--subnet", subnet, "--label", "hubbub-test=k8s", self.network],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                self.ips = [f"172.29.{third}.{10 + i}" for i in range(REPLICAS)]
                return
            last = r.stderr
        raise AssertionError(f"could not create a docker network: {last}")

    def docker_run_argv(self, i: int) -> list[str]:
        c, pod = self.container, self.pod
        pod_name = f"{self.sts['metadata']['name']}-{i}"
        svc_name = self.sts["spec"]["serviceName"]
        base = {
            # Always injected by the kubelet, whatever enableServiceLinks says.
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
            "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "443",
            "KUBERNETES_PORT": "tcp://10.96.0.1:443",
            "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": "443",
            "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
        }
        if pod.get("enableServiceLinks", True):
            services = [s for s in self.rendered if s["kind"] == "Service"]
            ips = {s["metadata"]["name"]: f"10.96.0.{20 + n}" for n, s in enumerate(services)}
            base.update(k.service_link_env(services, ips))
        env = k.container_env(
            c,
            pod_fields={"metadata.name": pod_name, "status.podIP": self.ips[i], "metadata.namespace": NAMESPACE},
            secrets=[s for s in self.rendered if s["kind"] == "Secret"],
            base_env=base,
        )
        self.env.append(env)
        command, args = k.container_argv(c, env)
        csc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        argv = ["docker", "run", "-d", "--name", self.names[i], "--label", "hubbub-test=k8s"]
        argv += ["--network", self.network, "--ip", self.ips[i], "--hostname", pod_name]
        # The headless Service's DNS: its name resolves to every pod, each pod has its own name.
        for alias in (svc_name, f"{svc_name}.{NAMESPACE}.svc.cluster.local", f"{pod_name}.{svc_name}.{NAMESPACE}.svc.cluster.local"):
            argv += ["--network-alias", alias]
        # The kubelet ignores the image's HEALTHCHECK; the spec's probes are run below.
        argv += ["--no-healthcheck"]
        assert "runAsUser" in csc and "runAsGroup" in csc
        argv += ["--user", f"{csc['runAsUser']}:{csc['runAsGroup']}"]
        if csc.get("readOnlyRootFilesystem"):
            argv += ["--read-only"]
        if csc.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        for cap in csc.get("capabilities", {}).get("drop", []):
            argv += ["--cap-drop", cap]
        for cap in csc.get("capabilities", {}).get("add", []):
            argv += ["--cap-add", cap]
        assert csc.get("seccompProfile", {}).get("type") == "RuntimeDefault"  # Docker's default profile
        limits = c.get("resources", {}).get("limits", {})
        if "memory" in limits:
            argv += ["--memory", str(int(k.quantity(limits["memory"])))]
        if "cpu" in limits:
            # Docker refuses more CPUs than the machine has; the limit is a cap either way.
            argv += ["--cpus", str(min(k.quantity(limits["cpu"]), os.cpu_count() or 1))]
        for name, value in env.items():
            argv += ["-e", f"{name}={value}"]
        if command is not None:
            argv += ["--entrypoint", command[0]]
        argv += [self.image] + (command[1:] if command else []) + args
        return argv

    def start(self):
        self.create_network()
        for i in range(REPLICAS):
            r = subprocess.run(self.docker_run_argv(i), capture_output=True, text=True)
            assert r.returncode == 0, f"docker run {self.names[i]} failed: {r.stderr}"
        self.started = True

    def remove(self):
        subprocess.run(["docker", "rm", "-f", "-v", *self.names], capture_output=True)
        subprocess.run(["docker", "network", "rm", self.network], capture_output=True)

    # -- inspection

    def state(self, i: int) -> dict:
        r = subprocess.run(["docker", "inspect", "-f", "{{json .State}}", self.names[i]], capture_output=True, text=True)
        return json.loads(r.stdout) if r.returncode == 0 else {}

    def logs(self, i: int, tail: int = 40) -> str:
        r = subprocess.run(["docker", "logs", "--tail", str(tail), self.names[i]], capture_output=True, text=True)
        return r.stdout + r.stderr

    def all_logs(self, tail: int = 40) -> str:
        return "\n".join(f"--- {self.names[i]} ({self.state(i).get('Status')}):\n{self.logs(i, tail)}" for i in range(REPLICAS))

    def port(self, name: str) -> int:
        return k.named_ports(self.container)[name]["containerPort"]

    def probe(self, i: int, which: str) -> tuple[bool, str]:
        spec = self.container[which]
        get = spec["httpGet"]
        return k.probe_ok(self.ips[i], k.resolve_port(self.container, get["port"]), get["path"], spec.get("timeoutSeconds", 1))

    def cluster_view(self, i: int) -> dict:
        status, body = k.http_get(self.ips[i], self.port("http"), "/cluster", timeout=2)
        assert status == 200, f"GET /cluster on hubbub-{i}: {status}"
        return json.loads(body)

    def token(self) -> str:
        secrets = [s for s in self.rendered if s["kind"] == "Secret"]
        ref = next(e for e in self.container["env"] if e["name"] == "HUBBUB_JWT_KEY")["valueFrom"]["secretKeyRef"]
        key_ = k.secret_value(secrets, ref["name"], ref["key"])
        return k.hs256_token(key_, {"mercure": {"publish": ["*"], "subscribe": ["*"]}})

    def publish(self, i: int, topic: str, data: str) -> str:
        import http.client

        body = urllib.parse.urlencode({"topic": topic, "data": data})
        conn = http.client.HTTPConnection(self.ips[i], self.port("http"), timeout=5)
        try:
            conn.request(
                "POST",
                "/.well-known/mercure",
                body=body,
                headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/x-www-form-urlencoded"},
            )
            r = conn.getresponse()
            text = r.read().decode()
            assert r.status == 200, f"publish to hubbub-{i}: HTTP {r.status} {text}"
            return text.strip()
        finally:
            conn.close()

    def subscribe(self, i: int, topic: str, last_event_id: str | None = None) -> k.SseReader:
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        path = "/.well-known/mercure?" + urllib.parse.urlencode({"topic": topic})
        sse = k.SseReader(self.ips[i], self.port("http"), path, headers, timeout=15)
        assert sse.resp.status == 200, f"subscribe on hubbub-{i}: HTTP {sse.resp.status}"
        return sse


def wait_for(what: str, check, timeout: float, pods: Pods, interval: float = 0.25):
    """Polls check() -> (ok, detail) until ok; fails with the last detail and the pods' logs."""
    deadline = time.monotonic() + timeout
    detail = ""
    while True:
        ok, detail = check()
        if ok:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:.0f}s: {detail}\n{pods.all_logs()}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def pods(hubbub_image, rendered, sts, request):
    """The three pods, started, with every probe of the spec passing (as the kubelet would run
    them: startup first, then readiness and liveness)."""
    p = Pods(hubbub_image, rendered, sts)
    request.addfinalizer(p.remove)
    t0 = time.monotonic()
    p.start()

    def all_probes():
        for i in range(REPLICAS):
            st = p.state(i)
            if st.get("Status") != "running":
                pytest.fail(f"hubbub-{i} is {st.get('Status')} (exit code {st.get('ExitCode')}): the binary rejected the spec?\n{p.all_logs()}")
            for which in ("startupProbe", "readinessProbe", "livenessProbe"):
                ok, detail = p.probe(i, which)
                if not ok:
                    return False, f"hubbub-{i} {which}: {detail}"
        return True, ""

    start_budget = k.hubbub_container(sts)["startupProbe"]
    # The kubelet would restart a pod whose startup probe keeps failing for period x threshold.
    healthz_budget = min(60, start_budget["periodSeconds"] * start_budget["failureThreshold"])

    def healthz():
        for i in range(REPLICAS):
            if p.state(i).get("Status") != "running":
                pytest.fail(f"hubbub-{i} exited: the binary rejected the spec?\n{p.all_logs()}")
            ok, detail = p.probe(i, "startupProbe")
            if not ok:
                return False, f"hubbub-{i} startupProbe: {detail}"
        return True, ""

    wait_for("every startup probe passing", healthz, healthz_budget, p)
    p.t_started = time.monotonic() - t0
    wait_for("every startup/readiness/liveness probe passing", all_probes, 60, p)
    p.t_ready = time.monotonic() - t0
    return p


def test_spec_runs_and_probes_pass(pods):
    for i in range(REPLICAS):
        for which in ("startupProbe", "readinessProbe", "livenessProbe"):
            ok, detail = pods.probe(i, which)
            assert ok, f"hubbub-{i} {which}: {detail}"
        st = pods.state(i)
        assert st["Running"] and not st["Restarting"] and not st["OOMKilled"]
    print(f"\nprobes: /healthz after {pods.t_started:.1f}s, all ready after {pods.t_ready:.1f}s")


def test_env_reached_the_process_as_intended(pods):
    env = pods.env[1]
    assert env["HUBBUB_NODE_ID"] == "hubbub-1"
    assert env["HUBBUB_GOSSIP_ADVERTISE"] == f"{pods.ips[1]}:7946"
    assert env["HUBBUB_SEEDS"] == f"hubbub-peers.{NAMESPACE}.svc.cluster.local:7946"
    assert "$(" not in "".join(env.values()), "an unresolved $(VAR) reference"
    # --log-format json took effect: every log line is a JSON object.
    lines = [ln for ln in pods.logs(1, tail=200).splitlines() if ln.strip()]
    assert lines, "hubbub-1 logged nothing"
    for ln in lines:
        try:
            assert isinstance(json.loads(ln), dict)
        except (ValueError, AssertionError):
            pytest.fail(f"not a JSON log line (args --log-format json): {ln!r}")


def test_three_pods_form_one_cluster(pods):
    names = {f"hubbub-{i}" for i in range(REPLICAS)}

    def one_cluster():
        for i in range(REPLICAS):
            view = pods.cluster_view(i)
            if view.get("node") != f"hubbub-{i}":
                return False, f"hubbub-{i} calls itself {view.get('node')!r} (HUBBUB_NODE_ID=$(POD_NAME))"
            if not view.get("ready"):
                return False, f"hubbub-{i} is not ready"
            peers = {m["node"]: m for m in view["members"] if m["node"] != view["node"]}
            if set(peers) | {view["node"]} != names:
                return False, f"hubbub-{i} sees {sorted(peers)}"
            for name, m in peers.items():
                j = int(name.rsplit("-", 1)[1])
                if m.get("link") != "connected" or not m.get("ready"):
                    return False, f"hubbub-{i} -> {name}: link {m.get('link')}, ready {m.get('ready')}"
                if m.get("gossip_addr") != f"{pods.ips[j]}:7946" or m.get("relay_addr") != f"{pods.ips[j]}:7947":
                    return False, f"hubbub-{i} sees {name} at {m.get('gossip_addr')} / {m.get('relay_addr')} (advertise $(POD_IP))"
        return True, ""

    wait_for("one cluster of three (GET /cluster)", one_cluster, 30, pods)


def test_update_published_to_pod0_reaches_pod2(pods):
    topic = f"https://example.com/k8s/{pods.run_id}"
    subs = {i: pods.subscribe(i, topic) for i in (1, 2)}
    try:
        ident = pods.publish(0, topic, "hello from hubbub-0")
        for i, sse in subs.items():
            deadline = time.monotonic() + 10
            while True:
                assert time.monotonic() < deadline, f"hubbub-{i} never delivered {ident}\n{pods.all_logs()}"
                ev = sse.next_event()
                assert ev is not None, f"hubbub-{i} ended the stream\n{pods.all_logs()}"
                if ev.get("id") == ident:
                    assert ev.get("data") == "hello from hubbub-0"
                    break
    finally:
        for sse in subs.values():
            sse.close()


def test_pod_terminates_within_its_grace_period(pods, serve_options):
    """Pod deletion as the kubelet does it: preStop (sleep: nothing happens in the container),
    then SIGTERM and terminationGracePeriodSeconds - preStop to exit before SIGKILL. The node must
    end its SSE streams and exit by itself in time; the other two keep serving."""
    pod = pods.pod
    grace = pod.get("terminationGracePeriodSeconds", 30)
    budget = grace - pods.container["lifecycle"]["preStop"]["sleep"]["seconds"]
    topic = f"https://example.com/k8s/{pods.run_id}/drain"
    # A few streams, so that a drain spreading them over its window has something to spread.
    streams = [pods.subscribe(2, topic) for _ in range(10)]
    t0 = time.monotonic()
    r = subprocess.run(["docker", "stop", "-t", str(budget), pods.names[2]], capture_output=True, text=True, timeout=budget + 30)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    st = pods.state(2)
    logs = pods.logs(2, 60)
    assert st["ExitCode"] == 0 and not st["OOMKilled"], (
        f"hubbub-2 exited with {st['ExitCode']} after {took:.1f}s of a {budget}s budget (137 = SIGKILL):\n{logs}"
    )
    assert took < budget, f"hubbub-2 needed {took:.1f}s, the kubelet allows {budget}s"
    # Every stream was ended by the server (after an SSE `retry` for the reconnect, with the drain).
    retries = 0
    for sse in streams:
        retry = False
        try:
            while (ev := sse.next_event()) is not None:
                retry = retry or "retry" in ev
        except OSError as exc:
            pytest.fail(f"an SSE stream of hubbub-2 did not end cleanly: {exc}")
        finally:
            sse.close()
        assert sse.closed_by_server
        retries += retry
    if "drain-window" in serve_options:
        assert retries == len(streams), f"the drain told only {retries} of {len(streams)} streams to retry"
    print(f"\nhubbub-2 stopped in {took:.1f}s (budget {budget}s), {retries}/{len(streams)} streams told to retry")
    # The other two keep serving: ready, and an update still crosses between them.
    for i in (0, 1):
        ok, detail = pods.probe(i, "readinessProbe")
        assert ok, f"hubbub-{i} turned unready when hubbub-2 left: {detail}"
    topic = f"https://example.com/k8s/{pods.run_id}/after"
    sub = pods.subscribe(1, topic)
    try:
        ident = pods.publish(0, topic, "after hubbub-2 left")
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline, f"hubbub-1 never delivered {ident} after hubbub-2 left\n{pods.all_logs()}"
            ev = sub.next_event()
            assert ev is not None, "hubbub-1 ended the stream"
            if ev.get("id") == ident:
                break
    finally:
        sub.close()

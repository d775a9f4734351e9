"""Where the cluster runs: `compose` (containers on the Docker engine) or `local`
(`hubbub serve` processes in a network namespace this run creates).

Both give the scenarios the same handles: the nodes' HTTP endpoints, their
relay proxies (chaosproxy, Toxiproxy's API), process faults (kill, stop, start,
pause), a command in a node's network namespace (nft, tc), and the wall clock
of the clock node (libfaketime). Everything a target starts, it stops.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from .toxiproxy import Toxiproxy
from .util import CACHE, CHAOS, ROOT, host_tag, log, pid_alive, run  # (puts tests/deploy on sys.path)
from verifier import free_port, reap, stop_process  # noqa: E402  tests/deploy/verifier.py
from verifier import Node, is_ready  # noqa: E402  tests/deploy/verifier.py

SERVICES = ["hubbub-1", "hubbub-2", "hubbub-3"]
CLOCK_NODE = "hubbub-3"  # the node that runs under libfaketime
PROXY_PORTS = {s: 17001 + i for i, s in enumerate(SERVICES)}  # relay-hubbub-N listens here
GOSSIP_PORT = 7946
FAKETIME_SO = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
DEV_CLUSTER_SECRET = "change-me-dev-cluster-secret"


def relay_proxy(service: str) -> str:
    return f"relay-{service}"


def ldd_libs(binary: str) -> list[str]:
    out = run(["ldd", binary]).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def stage(root: Path, files: list[str]) -> None:
    """Copies files (resolving links) to the same paths under root."""
    for f in files:
        dest = root / f.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(f), dest)


def build_proxy_binary() -> Path:
    """chaos/proxy in its own target directory (never the workspace's target/)."""
    target = CACHE / "target"
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    log(f"building chaosproxy (cargo build --release, target dir {target})")
    r = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=CHAOS / "proxy", env=env,
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"chaosproxy build failed:\n{r.stderr[-4000:]}")
    return target / "release" / "chaosproxy"


class Target:
    """What scenarios use; subclasses fill it in."""

    name = "?"
    services = SERVICES
    clock_node = CLOCK_NODE

    def __init__(self, out: Path):
        self.out = out
        self.clock_dir = out / "clock"
        self.toxi: Toxiproxy | None = None
        self.ports: dict[str, Node] = {}

    # -- nodes
    def nodes(self) -> list[Node]:
        return [self.node(s) for s in self.services]

    def node(self, service: str) -> Node:
        return self.ports[service]

    def direct(self, service: str) -> Node:
        """The node's HTTP port without the engine's port forwarding in between."""
        return self.ports[service]

    def wait_ready(self, services=None, timeout: float = 60) -> float:
        services = services or self.services
        t0 = time.monotonic()
        while True:
            if all(is_ready(self.node(s), 0.5) for s in services):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"not ready within {timeout}s: "
                                   f"{[(s, is_ready(self.node(s))) for s in services]}")
            time.sleep(0.1)

    # -- clock (libfaketime on the clock node: the offset file is re-read every second)
    def set_clock(self, offset_s: float) -> None:
        self.clock_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.clock_dir / "offset.tmp"
        tmp.write_text(f"{offset_s:+.3f}\n")
        tmp.chmod(0o644)
        tmp.replace(self.clock_dir / "offset")

    # -- to implement
    def up(self) -> None: ...
    def down(self) -> None: ...
    def kill(self, service: str) -> None: ...
    def stop(self, service: str) -> None: ...
    def start(self, service: str) -> None: ...
    def pause(self, service: str) -> None: ...
    def unpause(self, service: str) -> None: ...
    def node_ip(self, service: str) -> str: ...
    def proxy_ip(self) -> str: ...
    def netns_key(self, service: str) -> str: ...
    def netns_exec(self, service: str, argv: list[str], input: str | None = None,
                   check: bool = True) -> subprocess.CompletedProcess: ...
    def netem_device(self, service: str) -> str: ...
    def describe(self) -> dict: return {"target": self.name}


# ------------------------------------------------------------------------ compose


def compose_command() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        if subprocess.run([*cmd, "version"], capture_output=True, timeout=30).returncode == 0:
            return cmd
    return None


PROJECT_PREFIX = f"hubbubchaos-{host_tag()}-"


def remove_stale_compose_runs() -> None:
    """Containers, networks and images of earlier runs on this host whose process is gone."""
    lines = run(["docker", "ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'],
                check=False).stdout.splitlines()
    nets = run(["docker", "network", "ls", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'],
               check=False).stdout.splitlines()
    stale = set()
    for kind, listing in (("rm", lines), ("network", nets)):
        for line in listing:
            ident, _, project = line.partition(" ")
            if not project.startswith(PROJECT_PREFIX):
                continue
            pid = project[len(PROJECT_PREFIX):].split("-")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                stale.add(project)
                log(f"removing {ident} of stale project {project}")
                run(["docker", "rm", "-f", ident] if kind == "rm" else ["docker", "network", "rm", ident], check=False)
    images = run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], check=False).stdout.split()
    for img in images:
        repo, _, tag = img.partition(":")
        if repo in ("hubbub-chaos", "hubbub-chaos-proxy") and tag.startswith(PROJECT_PREFIX):
            pid = tag[len(PROJECT_PREFIX):].split("-")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                run(["docker", "image", "rm", "-f", img], check=False)


class ComposeTarget(Target):
    name = "compose"

    def __init__(self, out: Path, build: bool = True):
        super().__init__(out)
        cmd = compose_command()
        if cmd is None:
            raise RuntimeError("neither `docker compose` nor `docker-compose` is installed")
        self.cmd = cmd
        self.build = build
        self.project = f"{PROJECT_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.base_image = os.environ.get("HUBBUB_IMAGE", "hubbub:dev")
        self.node_image = f"hubbub-chaos:{self.project}"
        # Any image whose entrypoint takes toxiproxy-server's flags works (real Toxiproxy too).
        self.own_proxy = "CHAOS_PROXY_IMAGE" not in os.environ
        self.proxy_image = os.environ.get("CHAOS_PROXY_IMAGE") or f"hubbub-chaos-proxy:{self.project}"
        self.images_made: list[str] = []
        self.env: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        self.up_done = False

    def describe(self) -> dict:
        return {"target": "compose", "compose": " ".join(self.cmd), "project": self.project,
                "base_image": self.base_image, "node_image": self.node_image, "proxy_image": self.proxy_image}

    # -- images
    def _docker_build(self, tag: str, context: Path) -> None:
        r = run(["docker", "build", "-q", "-t", tag, str(context)], check=False, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"docker build {tag} failed:\n{r.stdout}\n{r.stderr}")
        self.images_made.append(tag)

    def build_images(self) -> None:
        if self.build:
            log(f"building {self.base_image} with scripts/image (cargo build --release -p hubbub)")
            r = subprocess.run([str(ROOT / "scripts" / "image"), "--tag", self.base_image], cwd=ROOT,
                               capture_output=True, text=True, timeout=3600)
            if r.returncode != 0:
                raise RuntimeError(f"scripts/image failed:\n{r.stderr[-4000:]}")
        if run(["docker", "image", "inspect", self.base_image], check=False).returncode != 0:
            raise RuntimeError(f"image {self.base_image} does not exist (run scripts/image, or drop --no-build)")
        proxy_bin = build_proxy_binary() if self.own_proxy else None
        if not Path(FAKETIME_SO).exists():
            raise RuntimeError(f"{FAKETIME_SO} missing: apt-get install libfaketime (chaos/install-deps)")
        with tempfile.TemporaryDirectory(prefix="hubbub-chaos-img-") as d:
            # The node image: hubbub's image plus libfaketime (and what it links, same paths).
            ctx = Path(d) / "node"
            stage(ctx / "rootfs", [FAKETIME_SO, *ldd_libs(FAKETIME_SO)])
            (ctx / "Dockerfile").write_text(f"FROM {self.base_image}\nCOPY rootfs/ /\n")
            self._docker_build(self.node_image, ctx)
            if proxy_bin is None:
                log(f"image: {self.node_image} (FROM {self.base_image} + libfaketime); proxy: {self.proxy_image}")
                return
            # The proxy image: FROM scratch, the binary and the libraries ldd lists.
            ctx = Path(d) / "proxy"
            root = ctx / "rootfs"
            (root / "usr/local/bin").mkdir(parents=True)
            shutil.copy2(proxy_bin, root / "usr/local/bin/chaosproxy")
            subprocess.run(["strip", str(root / "usr/local/bin/chaosproxy")], capture_output=True)
            stage(root, ldd_libs(str(proxy_bin)))
            (root / "etc").mkdir(exist_ok=True)
            (root / "etc/passwd").write_text("root:x:0:0:root:/:/sbin/nologin\nproxy:x:10001:10001:proxy:/:/sbin/nologin\n")
            (root / "etc/group").write_text("root:x:0:\nproxy:x:10001:\n")
            (root / "etc/nsswitch.conf").write_text("hosts: files dns\n")
            (ctx / "Dockerfile").write_text(
                "FROM scratch\nCOPY rootfs/ /\nUSER 10001:10001\nEXPOSE 8474\n"
                'ENTRYPOINT ["/usr/local/bin/chaosproxy"]\n')
            self._docker_build(self.proxy_image, ctx)
        log(f"images: {self.node_image} (FROM {self.base_image} + libfaketime), {self.proxy_image} (FROM scratch)")

    # -- compose
    def compose(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        argv = [*self.cmd, "-p", self.project, "-f", str(ROOT / "docker-compose.yml"),
                "-f", str(CHAOS / "compose.yml"), *args]
        r = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def up(self) -> None:
        remove_stale_compose_runs()
        self.build_images()
        taken: set[int] = set()
        ports = {s: free_port(taken) for s in self.services}
        api = free_port(taken)
        self.set_clock(0)
        self.clock_dir.chmod(0o755)
        self.env = dict(os.environ, HUBBUB_IMAGE=self.node_image, CHAOS_PROXY_IMAGE=self.proxy_image,
                        CHAOS_PROXY_API_PORT=str(api), CHAOS_PROXIES_JSON=str(CHAOS / "proxies.json"),
                        CHAOS_CLOCK_DIR=str(self.clock_dir.resolve()),
                        **{f"HUBBUB_PORT_{i + 1}": str(ports[s]) for i, s in enumerate(self.services)})
        self.ports = {s: Node(s, "127.0.0.1", ports[s]) for s in self.services}
        log(f"compose up: project {self.project}, HTTP ports {ports}, proxy API 127.0.0.1:{api}")
        self.up_done = True
        self.compose("up", "-d", "--no-build")
        self.toxi = Toxiproxy(f"http://127.0.0.1:{api}")
        self.toxi.wait_up(timeout=30)
        secs = self.wait_ready(timeout=90)
        log(f"cluster ready in {secs:.1f}s")

    def save_logs(self) -> None:
        r = self.compose("logs", "--no-color", "--timestamps", check=False, timeout=120)
        (self.out / "cluster-logs.txt").write_text(r.stdout + r.stderr)

    def down(self) -> None:
        if self.up_done:
            try:
                self.save_logs()
            except Exception as e:  # noqa: BLE001 - the logs are a courtesy, removal is not
                log(f"could not save logs: {e}")
            for s in self.services:  # a paused container cannot be stopped
                cid = self._cid(s, fresh=True)
                if cid:
                    run(["docker", "unpause", cid], check=False)
            self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=300)
            left = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"],
                       check=False).stdout.split()
            for c in left:
                run(["docker", "rm", "-f", c], check=False)
            for n in run(["docker", "network", "ls", "-q", "--filter",
                          f"label=com.docker.compose.project={self.project}"], check=False).stdout.split():
                run(["docker", "network", "rm", n], check=False)
        for img in self.images_made:
            run(["docker", "image", "rm", "-f", img], check=False)
        log(f"removed project {self.project} and images {self.images_made}")

    def _cid(self, service: str, fresh: bool = False) -> str:
        if fresh or service not in self._ids:
            out = run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.project}",
                       "--filter", f"label=com.docker.compose.service={service}"], check=False).stdout.split()
            self._ids[service] = out[0] if out else ""
        return self._ids[service]

    def _inspect(self, service: str) -> dict:
        return json.loads(run(["docker", "inspect", self._cid(service)]).stdout)[0]

    def kill(self, service: str) -> None:
        self.compose("kill", "-s", "SIGKILL", service)

    def stop(self, service: str) -> None:
        self.compose("stop", "-t", "20", service)

    def start(self, service: str) -> None:
        self.compose("start", service)

    def pause(self, service: str) -> None:
        run(["docker", "pause", self._cid(service)])

    def unpause(self, service: str) -> None:
        run(["docker", "unpause", self._cid(service)])

    def direct(self, service: str) -> Node:
        return Node(service, self.node_ip(service), 8080)

    def node_ip(self, service: str) -> str:
        nets = self._inspect(service)["NetworkSettings"]["Networks"]
        return next(iter(nets.values()))["IPAddress"]

    def proxy_ip(self) -> str:
        return self.node_ip("toxiproxy")

    def netns_key(self, service: str) -> str:
        return service

    def netns_exec(self, service, argv, input=None, check=True):
        pid = self._inspect(service)["State"]["Pid"]
        return run(["nsenter", "-t", str(pid), "-n", *argv], input=input, check=check)

    def netem_device(self, service: str) -> str:
        return "eth0"


# -------------------------------------------------------------------------- local


class LocalTarget(Target):
    """`hubbub serve` processes in this run's network namespace (chaos/run enters it
    before this runs): node N on 127.0.1.N, chaosproxy on 127.0.0.2; no engine needed."""

    name = "local"
    PROXY_IP = "127.0.0.2"

    def __init__(self, out: Path, build: bool = True):
        super().__init__(out)
        self.build = build
        self.netns = os.environ.get("CHAOS_NETNS", "")
        self.procs: dict[str, subprocess.Popen] = {}
        self.proxy: subprocess.Popen | None = None
        self.bin = Path(os.environ.get("HUBBUB_BIN", ROOT / "target" / "release" / "hubbub"))
        self.logs = out / "logs"

    def describe(self) -> dict:
        return {"target": "local", "netns": self.netns, "binary": str(self.bin)}

    def ip(self, service: str) -> str:
        return f"127.0.1.{self.services.index(service) + 1}"

    def up(self) -> None:
        if not self.netns:
            raise RuntimeError("the local target runs inside its network namespace: use chaos/run --target local")
        if self.build and "HUBBUB_BIN" not in os.environ:
            log("building hubbub (cargo build --release -p hubbub)")
            r = subprocess.run(["cargo", "build", "--release", "-p", "hubbub"], cwd=ROOT, capture_output=True,
                               text=True, timeout=3600)
            if r.returncode != 0:
                raise RuntimeError(f"cargo build failed:\n{r.stderr[-4000:]}")
        if not self.bin.exists():
            raise RuntimeError(f"no hubbub binary at {self.bin}")
        proxy_bin = build_proxy_binary()
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        run(["ip", "link", "set", "lo", "up"])
        cfg = self.out / "proxies.json"
        cfg.write_text(json.dumps([{"name": relay_proxy(s), "listen": f"{self.PROXY_IP}:{PROXY_PORTS[s]}",
                                    "upstream": f"{self.ip(s)}:7947", "enabled": True} for s in self.services]))
        self.proxy = subprocess.Popen([str(proxy_bin), "-host", self.PROXY_IP, "-port", "8474", "-config", str(cfg)],
                                      stdout=subprocess.DEVNULL, stderr=open(self.logs / "chaosproxy.log", "w"))
        self.toxi = Toxiproxy(f"http://{self.PROXY_IP}:8474")
        self.set_clock(0)
        self.ports = {s: Node(s, self.ip(s), 8080) for s in self.services}
        for s in self.services:
            self.start(s)
        self.toxi.wait_up(timeout=30)
        log(f"cluster ready in {self.wait_ready(timeout=90):.1f}s (netns {self.netns})")

    def _env(self, service: str) -> dict:
        ip = self.ip(service)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBBUB_", "FAKETIME", "LD_PRELOAD"))}
        env.update(HUBBUB_DEV="true", HUBBUB_NODE_ID=service, HUBBUB_LISTEN=f"{ip}:8080",
                   HUBBUB_GOSSIP_LISTEN=f"{ip}:{GOSSIP_PORT}", HUBBUB_RELAY_LISTEN=f"{ip}:7947",
                   HUBBUB_RELAY_ADVERTISE=f"{self.PROXY_IP}:{PROXY_PORTS[service]}",
                   HUBBUB_SEEDS=",".join(f"{self.ip(s)}:{GOSSIP_PORT}" for s in self.services),
                   HUBBUB_CLUSTER_SECRET=DEV_CLUSTER_SECRET, HUBBUB_DRAIN_WINDOW="5s", HUBBUB_SHUTDOWN_GRACE="10s",
                   HUBBUB_QUEUE_CAPACITY="100")
        if service == self.clock_node:
            env.update(LD_PRELOAD=FAKETIME_SO, FAKETIME_TIMESTAMP_FILE=str(self.clock_dir / "offset"),
                       FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_CACHE_DURATION="1")
        return env

    def start(self, service: str) -> None:
        p = self.procs.get(service)
        if p is not None and p.poll() is None:
            return
        logf = open(self.logs / f"{service}.log", "a")
        self.procs[service] = subprocess.Popen([str(self.bin), "serve"], env=self._env(service),
                                               stdout=logf, stderr=subprocess.STDOUT)

    def kill(self, service: str) -> None:
        p = self.procs[service]
        p.send_signal(signal.SIGCONT)
        p.kill()
        p.wait(timeout=10)

    def stop(self, service: str) -> None:
        p = self.procs[service]
        p.send_signal(signal.SIGCONT)
        stop_process(p, grace=20)

    def pause(self, service: str) -> None:
        self.procs[service].send_signal(signal.SIGSTOP)

    def unpause(self, service: str) -> None:
        self.procs[service].send_signal(signal.SIGCONT)

    def node_ip(self, service: str) -> str:
        return self.ip(service)

    def proxy_ip(self) -> str:
        return self.PROXY_IP

    def netns_key(self, service: str) -> str:
        return "shared"

    def netns_exec(self, service, argv, input=None, check=True):
        return run(argv, input=input, check=check)

    def netem_device(self, service: str) -> str:
        return "lo"

    def down(self) -> None:
        for s, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for s, p in self.procs.items():
            reap(p, grace=20, kill_wait=5)
        if self.proxy is not None and self.proxy.poll() is None:
            stop_process(self.proxy, grace=5, kill_wait=5)
        combined = []
        for f in sorted(self.logs.glob("*.log")):
            combined.append(f"==> {f.name} <==\n{f.read_text(errors='replace')}")
        (self.out / "cluster-logs.txt").write_text("\n".join(combined))
        log("stopped the local nodes and chaosproxy")

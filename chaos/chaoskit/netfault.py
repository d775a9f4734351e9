"""Network faults below the proxy: partitions with nftables, and `tc netem` where
the kernel has it.

A cut "src -> dst" drops, in src's network namespace, what src sends to dst:
gossip (UDP to dst's gossip port) and/or src's relay link to dst (TCP to dst's
proxy port; relay links are one-way, the dialer sends). Rules match source
addresses too, so the same rules work when all nodes share one namespace (the
local target). A symmetric partition is both directions; an asymmetric one
is one direction only.
"""

from __future__ import annotations

import subprocess

from .targets import GOSSIP_PORT, PROXY_PORTS, Target

TABLE = "hubbub_chaos"


def cut_rules(t: Target, src: str, dst: str, gossip: bool = True, relay: bool = True) -> list[str]:
    s, d = t.node_ip(src), t.node_ip(dst)
    rules = []
    if gossip:
        rules.append(f"ip saddr {s} ip daddr {d} udp dport {GOSSIP_PORT} drop")
    if relay:
        rules.append(f"ip saddr {s} ip daddr {t.proxy_ip()} tcp dport {PROXY_PORTS[dst]} drop")
    return rules


class Partition:
    """Cuts between groups; `heal()` removes every rule it added."""

    def __init__(self, target: Target):
        self.t = target
        self.tables: dict[str, str] = {}  # netns key -> a service in it
        self.described: list[str] = []

    def cut(self, src: str, dst: str, gossip: bool = True, relay: bool = True) -> None:
        rules = cut_rules(self.t, src, dst, gossip, relay)
        script = [f"add table inet {TABLE}",
                  f"add chain inet {TABLE} out {{ type filter hook output priority -10 ; policy accept ; }}"]
        script += [f"add rule inet {TABLE} out {r}" for r in rules]
        self.t.netns_exec(src, ["nft", "-f", "-"], input="\n".join(script) + "\n")
        self.tables[self.t.netns_key(src)] = src
        what = "+".join(k for k, on in (("gossip", gossip), ("relay", relay)) if on)
        self.described.append(f"{src}->{dst} ({what})")

    def groups(self, a: list[str], b: list[str], both_ways: bool = True, gossip: bool = True,
               relay: bool = True) -> None:
        for x in a:
            for y in b:
                self.cut(x, y, gossip, relay)
                if both_ways:
                    self.cut(y, x, gossip, relay)

    def heal(self) -> None:
        for service in self.tables.values():
            self.t.netns_exec(service, ["nft", "delete", "table", "inet", TABLE], check=False)
        self.tables.clear()


def netem_available() -> tuple[bool, str]:
    """Whether `tc qdisc ... netem` works here (tried in a throwaway namespace)."""
    try:
        r = subprocess.run(["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"cannot try: {e}"
    if r.returncode == 0:
        return True, "tc netem works"
    return False, (r.stderr or r.stdout).strip().splitlines()[0] if (r.stderr or r.stdout).strip() else f"exit {r.returncode}"


class Netem:
    def __init__(self, target: Target, service: str):
        self.t = target
        self.service = service
        self.dev = target.netem_device(service)
        self.on = False

    def apply(self, spec: list[str]) -> None:
        self.t.netns_exec(self.service, ["tc", "qdisc", "add", "dev", self.dev, "root", "netem", *spec])
        self.on = True

    def clear(self) -> None:
        if self.on:
            self.t.netns_exec(self.service, ["tc", "qdisc", "del", "dev", self.dev, "root"], check=False)
            self.on = False

"""The verifier's own checks, on made-up observations (no Docker, no hub).

A verifier that cannot see a loss, a duplicate or a reordering would let every
deployment test pass; these make sure it does see them.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from verifier import (
    Ack, Connection, Node, Publisher, Received, Rotation, Subscriber, Verifier, mint_token, stop_process,
    wait_subscribed,
)

N1, N2 = Node("n1", "127.0.0.1", 1), Node("n2", "127.0.0.1", 2)


def made_up(acked: list[str], seen: dict[str, list[str]]) -> dict:
    """A summary for publishes acknowledged with `acked` ids and subscribers that saw `seen`."""
    v = Verifier([N1, N2])
    pub = Publisher(v.rotation, v.topic, 1, "token", name="pub0")
    for seq, uid in enumerate(acked, 1):
        pub.acks[seq] = Ack("pub0", seq, uid, "n1", 0.0, 0.0, 1)
    pub.last_seq = len(acked)
    v.pubs = [pub]
    v.t_start, v.t_stop = 0.0, 1.0
    for name, ids in seen.items():
        s = Subscriber(name, v.rotation, v.topic, N1)
        s.connections.append(Connection("n1", 0.0, None))
        s.received = [Received(acked.index(i) + 1 if i in acked else 99, 1, i, 0.5, 0.0, "n1", False) for i in ids]
        v.subscribers.append(s)
    return v.summary()


def test_a_clean_run_is_clean():
    s = made_up(["a", "b", "c"], {"s1": ["a", "b", "c"], "s2": ["a", "b", "c"]})
    assert (s["lost"], s["duplicates"], s["order_mismatches"], s["republished"]) == (0, 0, 0, 0)
    assert s["latency"]["all"]["p50_ms"] == 500.0


def test_loss_duplicate_and_reorder_are_seen():
    s = made_up(["a", "b", "c"], {"s1": ["a", "b", "c"], "s2": ["a", "c", "c"], "s3": ["b", "a", "c"]})
    assert s["lost"] == 1 and s["per_subscriber"]["s2"]["lost_updates"] == ["pub0#2"]
    assert s["duplicates"] == 1
    assert s["order_mismatches"] == 1 and s["order_detail"][0]["subscriber"] == "s3"


def test_an_accepted_but_unacknowledged_attempt_is_not_a_duplicate():
    # "x" carries a seq but no acknowledged id: the publisher retried after an error.
    s = made_up(["a", "b"], {"s1": ["a", "x", "b"], "s2": ["a", "x", "b"]})
    assert s["duplicates"] == 0 and s["republished"] == 2 and s["lost"] == 0


class Chunks:
    """What `http.client.HTTPResponse.read1` returns, chunk by chunk."""

    def __init__(self, *chunks: bytes):
        self.chunks = list(chunks)

    def read1(self, _n: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_sse_parsing_follows_the_whatwg_rules():
    s = Subscriber("s", Rotation([N1]), "t", N1)
    c = Connection("n1", 0.0, None)
    d1 = json.dumps({"seq": 1, "attempt": 1, "t": 0.0}).encode()
    s._read(Chunks(b": comment\r\nretry: 2500\r", b"\nid: u1\ndata: " + d1[:5], d1[5:] + b"\r\n\r",
                   b"\nid: u2\r\ndata: line1\ndata: line2\n\nid: u3\n\n"), N1, c)
    assert s.retry == 2.5
    assert [(r.id, r.seq) for r in s.received] == [("u1", 1), ("u2", None)]
    assert s.last_id == "u3"  # an event without data still moves the last event id


def test_dev_token_is_the_readme_one():
    # HS256 over fixed header and claims, no expiry: stable, so the README prints it.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"TOKEN={mint_token()}" in readme


def test_reconnects_go_to_another_node_unless_fixed():
    r = Rotation([N1, N2])  # not polled: every node counts as ready
    assert Subscriber("s", r, "t", N1)._next_node(N1) == N2
    assert Subscriber("s", r, "t", N1, fixed=True)._next_node(N1) == N1


def test_stop_process_terminates_and_kills_what_ignores_it():
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(polite, grace=10)
    assert polite.returncode == -signal.SIGTERM
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE)
    assert stubborn.stdout.readline() == b"ready\n"
    t = time.monotonic()
    stop_process(stubborn, grace=0.3)
    stubborn.stdout.close()
    assert stubborn.returncode == -signal.SIGKILL
    assert time.monotonic() - t < 5


def test_aborted_on_error_stops_the_clients_and_reraises():
    v = Verifier([N1])
    stopped = []
    v.abort = lambda: stopped.append(True)
    with v.aborted_on_error():
        pass
    assert stopped == []
    with pytest.raises(KeyboardInterrupt), v.aborted_on_error():
        raise KeyboardInterrupt
    assert stopped == [True]


def test_wait_subscribed_names_the_subscriber_that_never_connected():
    a, b = (Subscriber(name, Rotation([N1]), "t", N1) for name in ("a", "b"))
    a.connected.set()
    timed_out = []
    wait_subscribed([a], 0.1, on_timeout=lambda: timed_out.append(True))
    assert timed_out == []
    with pytest.raises(TimeoutError, match="^b could not subscribe"):
        wait_subscribed([a, b], 0.1, on_timeout=lambda: timed_out.append(True))
    assert timed_out == [True]

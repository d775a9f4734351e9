"""The chaos verifier's checks on made-up observations (no cluster): a verdict that
cannot see a loss, a reordering, a silent skip or an unexplained reorder would
let every chaos run pass.

    python3 -m pytest -q chaos/tests/test_checks.py
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaoskit.verify import ChaosVerifier, StickySubscriber, Window, lcs_len, out_of_place  # noqa: E402
from verifier import Ack, Connection, Node, Received, Rotation, Subscriber  # noqa: E402

N = [Node(f"hubbub-{i}", "127.0.0.1", i) for i in (1, 2, 3)]


def made_up(acked: list[str], seen: dict[str, tuple[str, str | None, list[str]]], windows=(), t_sent=None,
            resumes: dict[str, list[float]] | None = None) -> ChaosVerifier:
    """A verifier whose publishers acknowledged `acked` (at t_sent[i] or i) and whose
    subscribers (name -> (kind, home node, ids)) received the given ids."""
    v = ChaosVerifier(N, publishers=1, movers=0)
    from chaoskit.verify import PaddedPublisher
    pub = PaddedPublisher(v.rotation, v.topic, 1, "token", name="pub0")
    for k, uid in enumerate(acked, 1):
        t = (t_sent or {}).get(uid, float(k))
        pub.acks[k] = Ack("pub0", k, uid, "hubbub-1", t, t, 1)
    pub.last_seq = len(acked)
    v.pubs = [pub]
    v.t_start, v.t_stop = 0.0, 100.0
    for name, (kind, home, ids) in seen.items():
        node = next(n for n in N if n.name == (home or "hubbub-1"))
        s = Subscriber(name, v.rotation, v.topic, node)
        s.connections.append(Connection(node.name, 0.0, None))
        for t in (resumes or {}).get(name, []):
            s.connections.append(Connection("hubbub-2", t, "x"))
        s.received = [Received(1, 1, i, 50.0, 0.0, node.name, False) for i in ids]
        v.subs.append(s)
        v.kind[name] = kind
        if home:
            v.home[name] = home
    v.windows = list(windows)
    return v


def sticky3(ids1, ids2, ids3):
    return {"s1": ("sticky", "hubbub-1", ids1), "s2": ("sticky", "hubbub-2", ids2),
            "s3": ("sticky", "hubbub-3", ids3)}


def test_lcs_and_out_of_place():
    assert lcs_len(list("abcde"), list("abcde")) == 5
    assert lcs_len(list("abcde"), list("aebcd")) == 4
    assert out_of_place(list("abcde"), list("badce")) == 2
    assert out_of_place(list("abcde"), list("badce"), only=set("cde")) == 1


def test_clean_run_passes():
    ids = list("abcdef")
    r = made_up(ids, sticky3(ids, ids, ids)).analyze({})
    assert r["violations"] == [] and r["lost"] == 0 and r["reordered"] == 0


def test_loss_and_duplicate_are_violations():
    ids = list("abcdef")
    r = made_up(ids, sticky3(ids, list("abcdf"), ids + ["c"])).analyze({})
    assert r["lost"] == 1 and r["duplicated"] == 1
    assert len(r["violations"]) >= 2


def test_reorder_outside_fault_windows_is_a_violation_even_when_counted():
    ids = list("abcdef")
    r = made_up(ids, sticky3(ids, list("abdcef"), ids)).analyze({"hubbub-2": {"late": 1}})
    assert r["reordered"] == 1
    assert any("outside fault windows" in v for v in r["violations"])


def test_reorder_inside_a_window_needs_a_late_counter():
    ids = list("abcdef")
    # c and d were published inside a fault window (t = 3, 4).
    w = [Window("cut", 2.9, 4.1)]
    v = made_up(ids, sticky3(ids, list("abdcef"), ids), windows=w)
    v.margin_before = v.margin_after = 0.0
    assert v.analyze({"hubbub-2": {"late": 1}})["violations"] == []
    v = made_up(ids, sticky3(ids, list("abdcef"), ids), windows=w)
    v.margin_before = v.margin_after = 0.0
    assert any("neither counted a late" in x for x in v.analyze({})["violations"])


def test_acked_update_nobody_got_must_be_counted_lost():
    ids = list("abcd")
    got = list("abc")
    r = made_up(ids, sticky3(got, got, got)).analyze({})
    assert r["acked_then_lost"] == 1 and r["lost"] == 0
    assert any("skipped silently" in v for v in r["violations"])
    r = made_up(ids, sticky3(got, got, got)).analyze({"hubbub-1": {"lost": 1}})
    assert r["violations"] == [] and r["acked_then_lost"] == 1


def test_mover_anomaly_is_excused_only_after_a_resume_during_a_fault():
    ids = list("abcdef")
    seen = {**sticky3(ids, ids, ids), "m": ("mover", None, list("abcf"))}
    w = [Window("cut", 2.0, 5.0)]
    r = made_up(ids, seen, windows=w, resumes={"m": [3.0]}).analyze({"hubbub-1": {"late": 0}})
    assert r["lost"] == 0 and r["excused_mover_anomalies"] == 2 and r["violations"] == []
    # The same loss after a resume in a healthy cluster (or during a graceful event) is a violation.
    r = made_up(ids, seen, windows=[Window("restart", 2.0, 5.0, kind="event")], resumes={"m": [3.0]}).analyze({})
    assert r["lost"] == 2 and r["violations"]


def test_sticky_subscriber_comes_back_to_its_node_once_it_is_ready():
    r = Rotation(N)  # not polled: every node counts as ready until told otherwise
    s = StickySubscriber("s", r, "t", N[1], fixed=True)
    assert s._next_node(N[1]) is N[1]
    r._ready.discard(N[1])
    threading.Timer(0.3, r._ready.add, [N[1]]).start()
    t = time.monotonic()
    assert s._next_node(N[1]) is N[1]
    assert time.monotonic() - t >= 0.25
    r._ready.discard(N[1])
    s._halt.set()  # stopping: no more waiting
    assert s._next_node(N[1]) is N[1]

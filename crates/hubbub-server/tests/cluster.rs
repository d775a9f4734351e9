//! Clusters of real nodes in one process: real UDP gossip, real TCP relay links
//! (authenticated), real HTTP subscribers. Proves delivery exactly once and in
//! one order on every node, resume on another node, catch-up after a restart
//! and for a late joiner, no loss across cut and frozen relay links, and that
//! a node without the cluster secret (or a stranger on the relay port) cannot
//! get anything delivered.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use hubbub_cluster::wire::Msg;
use hubbub_cluster::{Origin, Stamp, Stamped};
use hubbub_proto::Update;
use hubbub_server::ConfigError;
use hubbub_testkit::{
    CLUSTER_WAIT, Collector, Config, FaultProxy, MemberAddrs, NewMember, StatusCode, TestCluster,
    TestHub, WAIT, get, member_config, new_members, order_difference, publish,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "https://example.com/cluster/1";

/// Per-event wait for the collectors: generous, the box is small and busy.
const EVENTS_WAIT: Duration = Duration::from_secs(30);
/// How long to keep listening after the expected count, to catch duplicates.
const EXTRA: Duration = Duration::from_millis(700);

/// Publishes `ids` to `hub` one after the other (asserting 200 for each).
async fn publish_ids(hub: &TestHub, ids: &[String]) {
    for id in ids {
        hub.publish_ok(&[("topic", TOPIC), ("id", id), ("data", id)])
            .await;
    }
}

/// `prefix-000 .. prefix-(n-1)`.
fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|k| format!("{prefix}-{k:03}")).collect()
}

/// Publishes one series per hub, all at the same time; returns every id.
async fn publish_concurrently(hubs: &[&TestHub], series: Vec<Vec<String>>) -> Vec<String> {
    let mut tasks = Vec::new();
    for (hub, ids) in hubs.iter().zip(series.iter().cloned()) {
        let (url, token) = (hub.url(), hub.publisher_token().to_owned());
        tasks.push(tokio::spawn(async move {
            for id in ids {
                let r = publish(
                    &url,
                    &token,
                    &[("topic", TOPIC), ("id", &id), ("data", &id)],
                )
                .await;
                assert_eq!(r.status, StatusCode::OK, "publish {id}: {}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.expect("a publisher task did not panic");
    }
    series.into_iter().flatten().collect()
}

/// Every id of `expected` exactly once, nothing else.
#[track_caller]
fn assert_exactly_once(node: &str, got: &[String], expected: &[String]) {
    let mut seen = HashSet::new();
    let dups: Vec<_> = got.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(dups.is_empty(), "{node} received duplicates: {dups:?}");
    let want: BTreeSet<_> = expected.iter().collect();
    let have: BTreeSet<_> = got.iter().collect();
    let missing: Vec<_> = want.difference(&have).collect();
    let strays: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && strays.is_empty(),
        "{node}: {} missing {missing:?}, strays {strays:?}",
        missing.len()
    );
}

/// Each publisher's own updates keep their publish order.
#[track_caller]
fn assert_origin_order(node: &str, got: &[String]) {
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for id in got {
        let prefix = id.rsplit_once('-').map_or(id.as_str(), |(p, _)| p);
        if let Some(prev) = last.insert(prefix, id) {
            assert!(prev < id.as_str(), "{node}: {id} arrived after {prev}");
        }
    }
}

async fn collectors(cluster: &TestCluster) -> Vec<Collector> {
    let mut out = Vec::new();
    for i in cluster.running() {
        out.push(Collector::subscribe(cluster.node(i), &[TOPIC], None).await);
    }
    out
}

/// `n` members whose relay listeners (already bound) sit behind fault
/// proxies: each advertises its proxy's address.
async fn proxied_members(n: usize) -> (Vec<NewMember>, Vec<FaultProxy>) {
    let mut members = new_members(n).await;
    let mut proxies = Vec::new();
    for m in &mut members {
        let proxy = FaultProxy::start(m.config.relay_listen).await;
        m.config.relay_advertise = Some(proxy.addr.to_string());
        proxies.push(proxy);
    }
    (members, proxies)
}

#[tokio::test]
async fn three_nodes_deliver_concurrent_publishes_once_in_one_order() {
    let mut cluster = TestCluster::start(3).await;
    let subs = collectors(&cluster).await;
    let hubs: Vec<&TestHub> = (0..3).map(|i| cluster.node(i)).collect();
    let series = (0..3).map(|i| ids(&format!("p{}", i + 1), 100)).collect();
    let all = publish_concurrently(&hubs, series).await;

    let reference = subs[0].settle(all.len(), EVENTS_WAIT, EXTRA).await;
    assert_exactly_once("n1", &reference, &all);
    assert_origin_order("n1", &reference);
    for (i, sub) in subs.iter().enumerate().skip(1) {
        let got = sub.settle(all.len(), EVENTS_WAIT, EXTRA).await;
        let label = format!("n{}", i + 1);
        if let Some(d) = order_difference(&[("n1", &reference), (&label, &got)]) {
            panic!("{label} delivered another order than n1: {d}");
        }
    }

    let vector = cluster.wait_converged().await;
    assert_eq!(vector.len(), 3, "{vector:?}");
    assert!(vector.values().all(|h| *h == 100), "{vector:?}");
    for (i, view) in cluster.views().await {
        assert_eq!(
            view.stat("late"),
            0,
            "n{}: no faults, no late updates",
            i + 1
        );
        assert_eq!(view.stat("released"), 300, "n{}", i + 1);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn five_nodes_agree_and_a_roaming_subscriber_resumes_exactly() {
    let mut cluster = TestCluster::start(5).await;
    let subs = collectors(&cluster).await;

    // A subscriber that hops n1 -> n4 -> n2 -> n5 while five publishers run.
    let hops = [0usize, 3, 1, 4];
    let publishers = {
        let hubs: Vec<(String, String)> = (0..5)
            .map(|i| {
                let hub = cluster.node(i);
                (hub.url(), hub.publisher_token().to_owned())
            })
            .collect();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for (i, (url, token)) in hubs.into_iter().enumerate() {
                tasks.push(tokio::spawn(async move {
                    for id in ids(&format!("p{}", i + 1), 40) {
                        let form = [("topic", TOPIC), ("id", id.as_str()), ("data", "x")];
                        let r = publish(&url, &token, &form).await;
                        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                        // Spread the publishes so the hops happen mid-stream.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }));
            }
            for t in tasks {
                t.await.expect("publisher");
            }
        })
    };
    let total = 200;
    let mut roamed: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    for (n, node) in hops.iter().enumerate() {
        if let Some(id) = &last {
            // A real client waits before it reconnects; meanwhile the node it
            // picks has delivered what the client saw (same order everywhere).
            let id = id.clone();
            let seen_there = &subs[*node];
            hubbub_testkit::eventually(CLUSTER_WAIT, "the next node has the cursor", || {
                let has = seen_there.ids().contains(&id);
                async move { has.then_some(()) }
            })
            .await;
        }
        let sub = Collector::subscribe(cluster.node(*node), &[TOPIC], last.as_deref()).await;
        let stop_at = if n + 1 == hops.len() {
            total - roamed.len()
        } else {
            50
        };
        let deadline = tokio::time::Instant::now() + EVENTS_WAIT;
        while sub.len() < stop_at && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = sub.ids();
        if got.len() < stop_at {
            // Say where the nodes' orders part (a resume on a node whose
            // order differs skips or repeats updates), not only how many.
            let orders: Vec<(String, Vec<String>)> = subs
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("n{}", i + 1), s.ids()))
                .collect();
            let labelled: Vec<(&str, &[String])> = orders
                .iter()
                .map(|(l, o)| (l.as_str(), o.as_slice()))
                .collect();
            panic!(
                "hop {n} (n{}) got {} of {stop_at} after {last:?}: {got:?}\nroamed so far: {roamed:?}\n{}",
                node + 1,
                got.len(),
                order_difference(&labelled).unwrap_or_else(|| "the nodes' orders agree".into())
            );
        }
        let got = got[..stop_at].to_vec();
        sub.stop();
        last = got.last().cloned();
        roamed.extend(got);
    }
    publishers.await.expect("publishers");

    let all: Vec<String> = (0..5)
        .flat_map(|i| ids(&format!("p{}", i + 1), 40))
        .collect();
    let reference = subs[2].settle(total, EVENTS_WAIT, EXTRA).await;
    assert_exactly_once("n3", &reference, &all);
    assert_origin_order("n3", &reference);
    for (i, sub) in subs.iter().enumerate() {
        let got = sub.settle(total, EVENTS_WAIT, Duration::ZERO).await;
        let label = format!("n{}", i + 1);
        if let Some(d) = order_difference(&[("n3", &reference), (&label, &got)]) {
            panic!("{label} delivered another order: {d}");
        }
    }
    assert_eq!(
        roamed, reference,
        "the roaming subscriber got each update once, in the cluster order"
    );
    let vector = cluster.wait_converged().await;
    assert_eq!(vector.values().sum::<u64>(), 200, "{vector:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_restarted_node_catches_up_and_serves_resume() {
    let mut cluster = TestCluster::start(3).await;
    let witness = Collector::subscribe(cluster.node(2), &[TOPIC], None).await;
    let before: Vec<String> = {
        let hubs: Vec<&TestHub> = (0..3).map(|i| cluster.node(i)).collect();
        let series = (0..3).map(|i| ids(&format!("a{}", i + 1), 20)).collect();
        publish_concurrently(&hubs, series).await
    };
    let seen = witness.wait_len(before.len(), EVENTS_WAIT).await;
    // A client on n2 read up to here, then n2 went away.
    let cursor = seen[24].clone();
    let old_generation = cluster.view(1).await.generation;

    cluster.stop(1).await;
    let during = {
        let hubs = [cluster.node(0), cluster.node(2)];
        publish_concurrently(&hubs, vec![ids("b1", 15), ids("b3", 15)]).await
    };
    witness
        .wait_len(before.len() + during.len(), EVENTS_WAIT)
        .await;

    cluster.restart(1).await;
    cluster.wait_mesh().await;
    let view = cluster.view(1).await;
    assert!(view.generation > old_generation, "a new generation");
    assert!(view.ready);

    // The client comes back to the restarted node with its cursor.
    let resumed = Collector::subscribe(cluster.node(1), &[TOPIC], Some(&cursor)).await;
    // And the restarted node takes publishes again, as a new origin.
    let after = ids("c2", 10);
    publish_ids(cluster.node(1), &after).await;

    let total = before.len() + during.len() + after.len();
    let reference = witness.settle(total, EVENTS_WAIT, EXTRA).await;
    let mut everything = before.clone();
    everything.extend(during.iter().cloned());
    everything.extend(after.iter().cloned());
    assert_exactly_once("n3", &reference, &everything);
    let pos = reference
        .iter()
        .position(|id| *id == cursor)
        .expect("the cursor");
    let owed = &reference[pos + 1..];
    let got = resumed.settle(owed.len(), EVENTS_WAIT, EXTRA).await;
    assert_eq!(
        got, owed,
        "the resumed client got exactly what it missed, in order"
    );

    // Its history is the cluster's: `earliest` replays the same sequence.
    let replay = Collector::subscribe(cluster.node(1), &[TOPIC], Some("earliest")).await;
    assert_eq!(
        replay.settle(total, EVENTS_WAIT, EXTRA).await,
        reference,
        "the restarted node's history is in the cluster order"
    );
    let vector = cluster.wait_converged().await;
    assert_eq!(
        vector.get(&format!("n2/{old_generation}")),
        Some(&20),
        "the old generation's updates are kept: {vector:?}"
    );
    assert_eq!(vector.get(&view.origin()), Some(&10), "{vector:?}");
    assert!(
        cluster.view(1).await.stat("repaired") >= 20,
        "its old generation's updates came back through anti-entropy"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_late_joiner_replays_the_history_in_cluster_order() {
    let mut cluster = TestCluster::start(4).await;
    let witness = Collector::subscribe(cluster.node(0), &[TOPIC], None).await;
    let hubs: Vec<&TestHub> = (0..4).map(|i| cluster.node(i)).collect();
    let series = (0..4).map(|i| ids(&format!("h{}", i + 1), 25)).collect();
    let history = publish_concurrently(&hubs, series).await;
    let reference = witness.wait_len(history.len(), EVENTS_WAIT).await;

    let late = cluster
        .join(NewMember::bind("n5", &cluster.seeds()).await)
        .await;
    cluster.wait_mesh().await;

    let from_start = Collector::subscribe(cluster.node(late), &[TOPIC], Some("earliest")).await;
    let from_middle =
        Collector::subscribe(cluster.node(late), &[TOPIC], Some(&reference[59])).await;
    assert_eq!(
        from_start.settle(history.len(), EVENTS_WAIT, EXTRA).await,
        reference,
        "the late joiner's history is the cluster's, in the same order"
    );
    assert_eq!(
        from_middle.settle(40, EVENTS_WAIT, EXTRA).await,
        reference[60..],
        "resuming from an old id on the late joiner"
    );

    // It takes part from now on.
    let fresh = ids("n5", 5);
    publish_ids(cluster.node(late), &fresh).await;
    let got = witness
        .settle(history.len() + fresh.len(), EVENTS_WAIT, EXTRA)
        .await;
    assert_eq!(got[history.len()..], fresh[..]);
    let vector = cluster.wait_converged().await;
    assert_eq!(vector.len(), 5, "{vector:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn cut_relay_links_lose_nothing_and_the_vectors_converge() {
    let (members, proxies) = proxied_members(3).await;
    let mut cluster = TestCluster::start_with(members).await;
    let subs = collectors(&cluster).await;
    let hubs: Vec<&TestHub> = (0..3).map(|i| cluster.node(i)).collect();
    let mut all = Vec::new();

    // Healthy.
    let series = (0..3).map(|i| ids(&format!("ok{}", i + 1), 10)).collect();
    all.extend(publish_concurrently(&hubs, series).await);

    // n1 hears nobody (its inbound links are cut) but still talks to the others.
    proxies[0].cut();
    let series = (0..3).map(|i| ids(&format!("cut{}", i + 1), 15)).collect();
    all.extend(publish_concurrently(&hubs, series).await);

    // Every relay link is down: each node only has its own updates.
    for p in &proxies {
        p.cut();
    }
    let series = (0..3).map(|i| ids(&format!("all{}", i + 1), 10)).collect();
    all.extend(publish_concurrently(&hubs, series).await);
    tokio::time::sleep(Duration::from_millis(500)).await;

    for p in &proxies {
        p.restore();
    }
    for (i, sub) in subs.iter().enumerate() {
        let got = sub.settle(all.len(), EVENTS_WAIT, EXTRA).await;
        assert_exactly_once(&format!("n{}", i + 1), &got, &all);
        assert_origin_order(&format!("n{}", i + 1), &got);
    }
    let vector = cluster.wait_converged().await;
    assert!(vector.values().all(|h| *h == 35), "{vector:?}");
    cluster.wait_mesh().await;
    let late: u64 = cluster.views().await.values().map(|v| v.stat("late")).sum();
    assert!(
        late > 0,
        "updates held back by the cut arrive late, and are counted"
    );

    // Healed: one order everywhere again for what comes next.
    let before: Vec<usize> = subs.iter().map(Collector::len).collect();
    let series = (0..3)
        .map(|i| ids(&format!("healed{}", i + 1), 20))
        .collect();
    let healed = publish_concurrently(&hubs, series).await;
    let mut tails = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        let got = sub
            .settle(before[i] + healed.len(), EVENTS_WAIT, EXTRA)
            .await;
        let tail = got[before[i]..].to_vec();
        assert_exactly_once(&format!("n{}", i + 1), &tail, &healed);
        tails.push(tail);
    }
    assert!(
        tails.iter().all(|t| *t == tails[0]),
        "after the heal every node delivers in one order: {tails:?}"
    );
    cluster.wait_converged().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn slow_and_frozen_links_keep_order_then_heal_without_loss() {
    let (members, proxies) = proxied_members(3).await;
    let mut cluster = TestCluster::start_with(members).await;
    let subs = collectors(&cluster).await;
    let hubs: Vec<&TestHub> = (0..3).map(|i| cluster.node(i)).collect();

    // 40 ms each way into n2: watermarks wait for it, the order stays one.
    proxies[1].set_latency(Duration::from_millis(40));
    let series = (0..3).map(|i| ids(&format!("slow{}", i + 1), 30)).collect();
    let slow = publish_concurrently(&hubs, series).await;
    let reference = subs[0].settle(slow.len(), EVENTS_WAIT, EXTRA).await;
    assert_exactly_once("n1", &reference, &slow);
    for (i, sub) in subs.iter().enumerate() {
        let got = sub.settle(slow.len(), EVENTS_WAIT, Duration::ZERO).await;
        assert_eq!(got, reference, "n{} under latency", i + 1);
    }
    proxies[1].set_latency(Duration::ZERO);

    // A silent partition: n3's inbound links freeze (no reset, no error), for
    // longer than `order_wait`, then thaw with their bytes still queued.
    proxies[2].freeze();
    let series = (0..3)
        .map(|i| ids(&format!("frozen{}", i + 1), 15))
        .collect();
    let frozen = publish_concurrently(&hubs, series).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxies[2].restore();

    let mut all = slow.clone();
    all.extend(frozen);
    for (i, sub) in subs.iter().enumerate() {
        let got = sub.settle(all.len(), EVENTS_WAIT, EXTRA).await;
        assert_exactly_once(&format!("n{}", i + 1), &got, &all);
        assert_origin_order(&format!("n{}", i + 1), &got);
    }
    cluster.wait_converged().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_with_another_secret_cannot_get_updates_in() {
    let mut cluster = TestCluster::start(3).await;
    let subs = collectors(&cluster).await;

    let mut intruder = NewMember::bind("intruder", &cluster.seeds()).await;
    intruder.config.cluster_secret = Some("not-the-cluster-secret".into());
    let intruder = cluster.join(intruder).await;
    // Gossip is open (documented): the intruder shows up as a member, but every
    // relay link it dials is refused.
    hubbub_testkit::eventually(CLUSTER_WAIT, "relay links refused", || async {
        let mut refused = 0;
        for i in 0..3 {
            let view = cluster.view(i).await;
            refused += (view.stat("auth_failures") > 0) as usize;
        }
        (refused == 3).then_some(())
    })
    .await;
    let forged = ids("intruder", 10);
    for id in &forged {
        // Accepted locally (it is a hub of its own), never relayed.
        cluster
            .node(intruder)
            .publish_ok(&[("topic", TOPIC), ("id", id)])
            .await;
    }
    let legit = ids("legit", 10);
    publish_ids(cluster.node(0), &legit).await;
    for (i, sub) in subs.iter().enumerate() {
        let got = sub
            .settle(legit.len(), EVENTS_WAIT, Duration::from_secs(2))
            .await;
        assert_eq!(got, legit, "n{} got only the cluster's updates", i + 1);
    }
    for i in 0..3 {
        let view = cluster.view(i).await;
        assert!(
            !view.vector.keys().any(|o| o.starts_with("intruder/")),
            "n{}: nothing of the intruder's origin got in: {:?}",
            i + 1,
            view.vector
        );
    }
    let intruder_view = cluster.view(intruder).await;
    assert!(
        intruder_view.members.iter().all(|m| m.link != "connected"),
        "no cluster node accepted the intruder's links: {:?}",
        intruder_view.members
    );
    cluster.shutdown().await;
}

#[test]
fn a_cluster_without_a_secret_does_not_start() {
    // Never started: addresses nothing binds (validation alone refuses it).
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let addrs = MemberAddrs {
        http: any,
        gossip: any,
        relay: any,
    };
    let config = Config {
        cluster_secret: None,
        ..member_config("n1", addrs, &[any])
    };
    assert!(matches!(
        config.settings(),
        Err(ConfigError::NoClusterSecret)
    ));
}

/// A length-delimited relay frame (4-byte big-endian length, as the codec).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.to_vec()
}

/// Whether the peer closed the connection (reading hits the end) within [`WAIT`].
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    closed_within(s, WAIT).await
}

fn forged_update(node: &str, generation: u64, id: &str) -> Msg {
    Msg::Update(std::sync::Arc::new(Stamped {
        stamp: Stamp {
            hlc: 1,
            origin: Origin::new(node, generation),
            seq: 1,
        },
        update: Update {
            id: id.into(),
            topics: vec![TOPIC.into()],
            data: "forged".into(),
            private: false,
            event_type: None,
            retry: None,
        },
    }))
}

#[tokio::test]
async fn strangers_on_the_relay_port_are_refused_and_the_node_stays_healthy() {
    let mut cluster = TestCluster::start(3).await;
    let subs = collectors(&cluster).await;
    let relay: SocketAddr = cluster.config(0).relay_listen;
    let n1 = cluster.view(0).await;
    let n2_generation = cluster.view(1).await.generation;
    let failures_before = n1.stat("auth_failures");

    // Garbage instead of a preamble.
    let mut s = TcpStream::connect(relay)
        .await
        .expect("the relay port accepts");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage")
        .await
        .expect("write");
    assert!(closed_by_peer(&mut s).await, "garbage closes the link");

    // A frame claiming to be 4 GiB.
    let mut s = TcpStream::connect(relay).await.expect("connect");
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .expect("write");
    assert!(
        closed_by_peer(&mut s).await,
        "an oversized frame closes the link"
    );

    // An update before any handshake.
    let mut s = TcpStream::connect(relay).await.expect("connect");
    let early = forged_update("n2", n2_generation, "forged-early");
    let _ = s.write_all(&frame(&early.encode())).await;
    assert!(closed_by_peer(&mut s).await, "no update before a handshake");

    // A well-formed preamble impersonating n2, then a made-up handshake
    // message and an update anyway.
    let mut s = TcpStream::connect(relay).await.expect("connect");
    let preamble = hubbub_cluster::Preamble {
        cluster: "hubbub".into(),
        dialer: Origin::new("n2", n2_generation),
        listener: Origin::new(n1.node.as_str(), n1.generation),
    };
    let mut bytes = frame(&preamble.encode());
    bytes.extend(frame(&[7u8; 48]));
    bytes.extend(frame(
        &forged_update("n2", n2_generation, "forged-hello").encode(),
    ));
    let _ = s.write_all(&bytes).await;
    assert!(
        closed_by_peer(&mut s).await,
        "a forged handshake is refused"
    );
    hubbub_testkit::eventually(WAIT, "the refusal is counted", || async {
        (cluster.view(0).await.stat("auth_failures") > failures_before).then_some(())
    })
    .await;

    // A connection that says nothing is dropped after the handshake timeout
    // (not waited for here); meanwhile the node works as before.
    let _silent = TcpStream::connect(relay).await.expect("connect");
    assert_eq!(
        get(&format!("{}/healthz", cluster.node(0).base_url()))
            .await
            .status,
        StatusCode::OK
    );
    cluster.wait_mesh().await;
    let legit = ids("after", 5);
    publish_ids(cluster.node(1), &legit).await;
    for (i, sub) in subs.iter().enumerate() {
        let got = sub.settle(legit.len(), EVENTS_WAIT, EXTRA).await;
        assert_eq!(got, legit, "n{}: nothing forged was delivered", i + 1);
    }
    let view = cluster.view(0).await;
    assert_eq!(view.stat("lost"), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_gap_no_peer_can_fill_is_counted_as_lost_and_delivery_goes_on() {
    let (mut members, proxies) = proxied_members(3).await;
    for m in &mut members {
        m.config.cluster_log_size = 10;
    }
    let mut cluster = TestCluster::start_with(members).await;
    let subs = collectors(&cluster).await;

    // n3 hears nothing while n1 publishes three times what anyone retains.
    proxies[2].cut();
    let missed = ids("gap", 30);
    publish_ids(cluster.node(0), &missed).await;
    subs[1].wait_len(missed.len(), EVENTS_WAIT).await;
    proxies[2].restore();

    // n3 gets what is still retained, counts the rest as lost, and goes on.
    let got = subs[2].settle(10, EVENTS_WAIT, EXTRA).await;
    assert_eq!(got, missed[20..], "n3 got the retained tail, once");
    hubbub_testkit::eventually(CLUSTER_WAIT, "n3 counts 20 lost", || async {
        let view = cluster.view(2).await;
        (view.stat("lost") == 20).then_some(())
    })
    .await;
    let after = ids("after", 5);
    publish_ids(cluster.node(0), &after).await;
    let got = subs[2].settle(15, EVENTS_WAIT, EXTRA).await;
    assert_eq!(got[10..], after[..], "n3 delivers n1's updates again");
    let views = cluster.views().await;
    let vectors: BTreeSet<_> = views.values().map(|v| v.vector.clone()).collect();
    assert_eq!(vectors.len(), 1, "the vectors agree: {vectors:?}");
    assert_eq!(views[&0].stat("lost") + views[&1].stat("lost"), 0);
    cluster.shutdown().await;
}

/// A publish is answered before its update is delivered, and nodes deliver a
/// few ms apart: a client that got update X from n1 and reconnects to n3 at
/// once may ask for an id n3 has not delivered yet. n3 must then wait until its
/// delivery has caught up with that instant instead of answering `earliest`
/// and serving X a second time.
#[tokio::test]
async fn an_immediate_resume_on_another_node_gets_nothing_twice() {
    let mut cluster = TestCluster::start(3).await;
    let mut first = cluster.node(0).subscribe(&[TOPIC]).await;
    for k in 0..50 {
        let id = format!("r-{k:02}");
        cluster
            .node(1)
            .publish_ok(&[("topic", TOPIC), ("id", &id)])
            .await;
        assert_eq!(first.expect_event().await.id.as_deref(), Some(id.as_str()));
        let request = hubbub_testkit::client()
            .get(cluster.node(2).subscribe_url(&[TOPIC]))
            .header("last-event-id", &id);
        let mut resumed = hubbub_testkit::SseClient::connect(request).await;
        assert_eq!(
            resumed.header("last-event-id"),
            Some(id.as_str()),
            "round {k}: n3 did not know the cursor n1 had delivered"
        );
        resumed.expect_no_event(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_restarted_under_load_has_the_same_history() {
    let mut cluster = TestCluster::start(3).await;
    let witness = Collector::subscribe(cluster.node(0), &[TOPIC], None).await;
    let targets: Vec<(usize, String, String)> = [0usize, 2]
        .into_iter()
        .map(|i| {
            let hub = cluster.node(i);
            (i, hub.url(), hub.publisher_token().to_owned())
        })
        .collect();
    // Two publishers keep going while n2 stops, restarts and catches up.
    let load = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for (i, url, token) in targets {
            tasks.push(tokio::spawn(async move {
                for id in ids(&format!("load{}", i + 1), 150) {
                    let r = publish(&url, &token, &[("topic", TOPIC), ("id", &id)]).await;
                    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("publisher");
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.stop(1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.restart(1).await;
    cluster.wait_ready(1).await;
    let replay = Collector::subscribe(cluster.node(1), &[TOPIC], Some("earliest")).await;
    load.await.expect("the load ran");

    let all: Vec<String> = ["load1", "load3"]
        .iter()
        .flat_map(|p| ids(p, 150))
        .collect();
    let reference = witness.settle(all.len(), EVENTS_WAIT, EXTRA).await;
    assert_exactly_once("n1", &reference, &all);
    assert_eq!(
        replay.settle(all.len(), EVENTS_WAIT, EXTRA).await,
        reference,
        "the restarted node's history, caught up under load, is the cluster's"
    );
    cluster.wait_converged().await;
    for (i, view) in cluster.views().await {
        assert_eq!(view.stat("late"), 0, "n{}: no update came late", i + 1);
    }
    cluster.shutdown().await;
}

/// Watermarks go out when owed (with our updates, or after a peer's newer
/// update), not on a fixed 5 ms tick: an idle cluster only exchanges keepalive
/// watermarks (every `min(order_wait / 4, 100 ms)` per link). A 5 ms tick would
/// send ~200 frames per link per second, about 10 KB per node in these 2 s.
#[tokio::test]
async fn an_idle_cluster_only_sends_keepalive_watermarks() {
    let mut cluster = TestCluster::start(3).await;
    publish_ids(cluster.node(0), &ids("warm", 5)).await;
    cluster.wait_converged().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(cluster.view(i).await.stat("relay_bytes_out"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, was) in before.iter().enumerate() {
        let sent = cluster.view(i).await.stat("relay_bytes_out") - was;
        // 2 links x 10 keepalives/s x 2 s x ~20 B = ~800 B; allow 3x.
        assert!(
            (1..2_500).contains(&sent),
            "n{}: sent {sent} relay bytes in 2 idle seconds",
            i + 1
        );
    }
    cluster.shutdown().await;
}

/// A peer that goes silent on the relay (its links frozen, gossip still fine, so
/// it is not declared dead) holds delivery back for `order_wait` (500 ms here)
/// and no longer, even though nothing arrives from it to wake the engine.
#[tokio::test]
async fn a_silent_peer_holds_delivery_only_for_order_wait() {
    let (members, proxies) = proxied_members(2).await;
    let mut cluster = TestCluster::start_with(members).await;
    let mut sub = cluster.node(0).subscribe(&[TOPIC]).await;
    // Both relay directions: n2 neither sends nor gets anything, so not even
    // its gossiped vector changes to wake n1.
    proxies[0].freeze();
    proxies[1].freeze();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_ids(cluster.node(0), &["held".to_owned()]).await;
    let event = sub.next_event(Duration::from_secs(3)).await;
    assert_eq!(
        event.and_then(|e| e.id).as_deref(),
        Some("held"),
        "n1 kept its own update waiting for a silent peer past order_wait"
    );
    proxies[0].restore();
    proxies[1].restore();
    cluster.wait_converged().await;
    cluster.shutdown().await;
}

/// A node that stops gracefully leaves first: its last watermark promises
/// "nothing more from me", so the others deliver at once instead of holding
/// updates until it has been silent for `order_wait` (5 s here) or declared
/// dead. A stream on the leaving node ends with an SSE `retry` and resumes on
/// another node without loss or repeat.
#[tokio::test]
async fn a_node_leaving_gracefully_holds_nobody_back() {
    let mut members = new_members(3).await;
    for m in &mut members {
        // Slow failure detection too (~1.5-3 s), so that a hold shows.
        m.config.order_wait = Duration::from_secs(5);
        m.config.gossip_interval = Duration::from_millis(300);
    }
    let mut cluster = TestCluster::start_with(members).await;
    let staying = Collector::subscribe(cluster.node(2), &[TOPIC], None).await;
    let mut leaving_sub = cluster.node(1).subscribe(&[TOPIC]).await;
    let before = ids("before", 5);
    publish_ids(cluster.node(0), &before).await;
    staying.wait_len(before.len(), EVENTS_WAIT).await;

    cluster.stop(1).await;
    let started = std::time::Instant::now();
    publish_ids(cluster.node(0), &["after".to_owned()]).await;
    staying.wait_len(before.len() + 1, EVENTS_WAIT).await;
    let held = started.elapsed();
    assert!(
        held < Duration::from_millis(700),
        "n3 held an update {held:?} for a node that had left (order_wait 5 s)"
    );

    // The stream on the node that left: what it had, then a retry, then the end.
    let mut got = Vec::new();
    while let Some(event) = leaving_sub.next_event(Duration::from_secs(5)).await {
        got.extend(event.id);
    }
    assert!(
        leaving_sub.end().is_some(),
        "the stream on the node that left ended"
    );
    assert_eq!(
        got, before,
        "the leaving node's stream got everything before it ended"
    );
    let retry = leaving_sub
        .reconnection_time()
        .expect("the drained stream carried an SSE retry");
    assert!((1000..2000).contains(&retry), "retry {retry} ms");
    let resumed =
        Collector::subscribe(cluster.node(2), &[TOPIC], got.last().map(String::as_str)).await;
    assert_eq!(resumed.settle(1, EVENTS_WAIT, EXTRA).await, ["after"]);
    cluster.shutdown().await;
}

/// Whether the peer closes the connection within `limit` (well under the 5 s
/// handshake timeout, so a close here is a refusal, not a timeout).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Before a peer proves the cluster secret it can hold neither memory nor
/// tasks: a frame announced larger than a handshake needs closes the link at
/// once (the codec would otherwise reserve what was announced, up to 16 MiB
/// per connection), and connections beyond `MAX_UNAUTHENTICATED` still in
/// their handshake are closed at once. Peers that authenticate are unaffected.
#[tokio::test]
async fn unauthenticated_relay_connections_are_bounded() {
    let mut cluster = TestCluster::start(2).await;
    let relay: SocketAddr = cluster.config(0).relay_listen;

    let mut big = TcpStream::connect(relay).await.expect("connect");
    big.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    big.write_all(&[0u8; 1024]).await.unwrap();
    assert!(
        closed_within(&mut big, Duration::from_secs(1)).await,
        "a 1 MiB frame before authentication closes the link at once"
    );

    let max = hubbub_cluster::MAX_UNAUTHENTICATED;
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(TcpStream::connect(relay).await.expect("connect"));
    }
    // Let the node accept them all (they say nothing: each waits in its handshake).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = TcpStream::connect(relay).await.expect("the kernel accepts");
    assert!(
        closed_within(&mut over, Duration::from_secs(1)).await,
        "connection {} in handshake is refused at once",
        max + 1
    );
    assert!(
        !closed_within(&mut held[0], Duration::from_millis(200)).await,
        "the ones under the cap wait for their handshake"
    );
    // The authenticated links are up and work.
    let sub = Collector::subscribe(cluster.node(1), &[TOPIC], None).await;
    let legit = ids("legit", 3);
    publish_ids(cluster.node(0), &legit).await;
    assert_eq!(sub.settle(legit.len(), EVENTS_WAIT, EXTRA).await, legit);
    drop(held);
    cluster.shutdown().await;
}

/// A reader on the relay path learns nothing: updates cross it sealed (their
/// data never appears in the bytes), and a bit flipped on the way ends the
/// link instead of delivering something altered; the link comes back and
/// everything arrives once, intact.
#[tokio::test]
async fn relay_traffic_is_sealed_against_readers_and_tamperers() {
    let (members, proxies) = proxied_members(2).await;
    let mut cluster = TestCluster::start_with(members).await;
    let sub = Collector::subscribe(cluster.node(1), &[TOPIC], None).await;
    let marker = "top-secret-payload-6c1f0e";
    cluster
        .node(0)
        .publish_ok(&[("topic", TOPIC), ("id", "sealed-1"), ("data", marker)])
        .await;
    assert_eq!(sub.settle(1, EVENTS_WAIT, EXTRA).await, ["sealed-1"]);
    let seen = proxies[1].captured();
    assert!(seen.len() > 100, "the tap saw the relay traffic");
    assert!(
        !seen.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "update data crossed the relay in the clear"
    );
    assert!(
        !seen.windows(TOPIC.len()).any(|w| w == TOPIC.as_bytes()),
        "topics crossed the relay in the clear"
    );

    // Tamper with the next chunk n1 sends to n2 (the update below).
    let mut live = cluster.node(1).subscribe(&[TOPIC]).await;
    let accepted = proxies[1].accepted();
    proxies[1].corrupt_next();
    let data = "intact-data";
    cluster
        .node(0)
        .publish_ok(&[("topic", TOPIC), ("id", "sealed-2"), ("data", data)])
        .await;
    let got = sub.settle(2, EVENTS_WAIT, EXTRA).await;
    assert_eq!(
        got,
        ["sealed-1", "sealed-2"],
        "delivered once, after the link healed"
    );
    let event = live.expect_event().await;
    assert_eq!(
        (event.id.as_deref(), event.data.as_str()),
        (Some("sealed-2"), data),
        "what arrived is what was published"
    );
    assert!(
        proxies[1].accepted() > accepted,
        "the tampered link was dropped and dialed again"
    );
    cluster.shutdown().await;
}

/// `publish_ack = replicated`: a publish is answered once a peer confirmed it
/// holds the update; with every peer unreachable it is answered 503 after
/// `publish_ack_timeout` (and still delivered once the link heals), while
/// `local` answers at once either way.
#[tokio::test]
async fn replicated_publish_acks_wait_for_a_peer() {
    let (mut members, proxies) = proxied_members(2).await;
    members[0].config.publish_ack = hubbub_server::config::PublishAck::Replicated;
    members[0].config.publish_ack_timeout = Duration::from_millis(700);
    let mut cluster = TestCluster::start_with(members).await;
    let sub = Collector::subscribe(cluster.node(1), &[TOPIC], None).await;
    let n1 = cluster.node(0);
    let ok = n1.publish(&[("topic", TOPIC), ("id", "acked-1")]).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    // n2 unreachable on the relay: nobody can confirm.
    proxies[1].freeze();
    let started = std::time::Instant::now();
    let refused = n1.publish(&[("topic", TOPIC), ("id", "unconfirmed")]).await;
    let waited = started.elapsed();
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("no peer confirmed"),
        "{}",
        refused.body
    );
    assert!(
        waited >= Duration::from_millis(650) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
    // A node in `local` mode answers at once through the same fault.
    let local = cluster
        .node(1)
        .publish(&[("topic", TOPIC), ("id", "local-1")])
        .await;
    assert_eq!(local.status, StatusCode::OK, "{}", local.body);
    proxies[1].restore();
    let got = sub.settle(3, EVENTS_WAIT, EXTRA).await;
    let got: HashSet<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(got, HashSet::from(["acked-1", "unconfirmed", "local-1"]));
    cluster.shutdown().await;
}

/// A subscription that reaches a restarted node before it has caught up with
/// the cluster is held until it has: resuming there right away gets exactly
/// what was missed, instead of "Last-Event-ID: earliest" followed by the
/// catch-up as live updates (duplicates: found by the chaos suite).
#[tokio::test]
async fn resuming_on_a_node_still_catching_up_gets_nothing_twice() {
    let (members, proxies) = proxied_members(3).await;
    let mut cluster = TestCluster::start_with(members).await;
    let sub = Collector::subscribe(cluster.node(1), &[TOPIC], None).await;
    let before = ids("before", 50);
    publish_ids(cluster.node(0), &before).await;
    let got = sub.settle(before.len(), EVENTS_WAIT, EXTRA).await;
    let cursor = got.last().cloned().expect("events");
    drop(sub);
    cluster.stop(1).await;
    let missed = ids("missed", 20);
    publish_ids(cluster.node(0), &missed).await;
    // n2 comes back but cannot reach the others' relay ports for a while:
    // it listens, but cannot catch up (and so is not ready) until they heal.
    proxies[0].freeze();
    proxies[2].freeze();
    cluster.restart(1).await;
    let heal = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxies[0].restore();
        proxies[2].restore();
    };
    let (resumed, ()) = tokio::join!(
        Collector::subscribe(cluster.node(1), &[TOPIC], Some(&cursor)),
        heal
    );
    assert_eq!(
        resumed.settle(missed.len(), EVENTS_WAIT, EXTRA).await,
        missed,
        "exactly what was missed, once"
    );
    cluster.shutdown().await;
}

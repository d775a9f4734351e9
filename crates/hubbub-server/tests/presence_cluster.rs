//! Active subscriptions across a real 3-node cluster (in-process nodes, real
//! gossip over UDP and relay links over TCP on loopback): a subscriber on any
//! node is listed by every node and its events reach every node once, in one
//! order; list + events from any node miss and repeat nothing under churn; a
//! node that leaves ends its subscriptions everywhere. SIGKILL and restarts of
//! real processes are in `crates/hubbub/tests/cluster_process.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use hubbub_proto::token::{access_token_claims, mint_access_token};
use hubbub_testkit::presence::{list, matchers};
use hubbub_testkit::{
    CLUSTER_WAIT, NewMember, PresenceFollower, SseClient, StatusCode, TestCluster, client,
    encode_form, new_members, order_difference,
};

const RESOURCE: &str = "https://hub.example/.well-known/mercure";
const ISS: &str = "https://hs.example";
const SECRET: &str = "hs-issuer-secret-0123456789abcdef";
const ALL_EVENTS: &str = hubbub_testkit::presence::ALL_EVENTS;

fn token() -> String {
    let claims = access_token_claims(
        ISS,
        RESOURCE,
        &[(&["subscribe"], &["*"])],
        Duration::from_secs(600),
    );
    mint_access_token("HS256", SECRET, &claims).unwrap()
}

async fn members(n: usize) -> Vec<NewMember> {
    let mut members = new_members(n).await;
    for m in &mut members {
        m.config.subscriptions = Some(true);
        m.config.oauth_issuers = vec![format!("{ISS}|HS256|{SECRET}")];
        m.config.oauth_resource = Some(RESOURCE.into());
    }
    members
}

async fn subscribe(base_url: &str, matcher: &str) -> SseClient {
    let url = format!(
        "{base_url}/.well-known/mercure?{}",
        encode_form(&[("match", matcher)])
    );
    let sse = SseClient::connect(client().get(url).bearer_auth(token())).await;
    assert_eq!(sse.status, StatusCode::OK);
    sse
}

/// Waits until the API of the node at `base` lists exactly `expected`
/// matchers (followers' own `ALL_EVENTS` subscriptions left out).
async fn wait_listed(base: &str, expected: &BTreeSet<String>, what: &str) {
    let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
    loop {
        let (subs, _) = list(base, &token()).await;
        let mut got = matchers(&subs);
        got.remove(ALL_EVENTS);
        if got == *expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {base} lists {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn every_node_lists_and_announces_every_nodes_subscribers() {
    let cluster = TestCluster::start_with(members(3).await).await;
    let [a, b, c] = [0, 1, 2].map(|i| cluster.node(i).base_url());
    let watch_b = PresenceFollower::start(&b, &token()).await;

    let on_a = subscribe(&a, "https://example.com/on-a").await;
    let on_c = subscribe(&c, "https://example.com/on-c").await;
    let both = set(&["https://example.com/on-a", "https://example.com/on-c"]);
    // The API on C lists A's subscriber (and the other way round).
    wait_listed(&c, &both, "C").await;
    wait_listed(&a, &both, "A").await;
    wait_listed(&b, &both, "B").await;
    watch_b
        .wait_until("B's follower sees both", None, |l| {
            let mut m = matchers(l);
            m.remove(ALL_EVENTS);
            m == both
        })
        .await;
    drop(on_a);
    let only_c = set(&["https://example.com/on-c"]);
    for node in [&a, &b, &c] {
        wait_listed(node, &only_c, "after A's subscriber left").await;
    }
    drop(on_c);
    for node in [&a, &b, &c] {
        wait_listed(node, &BTreeSet::new(), "after C's subscriber left").await;
    }
    watch_b
        .wait_until("B's follower sees both leave", None, |l| {
            matchers(l) == set(&[ALL_EVENTS])
        })
        .await;
    // On B: A's and C's start and end, once each.
    let ids: Vec<(String, bool)> = watch_b
        .events()
        .into_iter()
        .filter(|(id, _)| id.contains("on-a") || id.contains("on-c"))
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(watch_b.repeats().is_empty(), "{:?}", watch_b.repeats());
}

#[tokio::test]
async fn list_and_events_from_any_node_agree_under_churn() {
    let cluster = TestCluster::start_with(members(3).await).await;
    let bases: Vec<String> = (0..3).map(|i| cluster.node(i).base_url()).collect();
    let mut followers = Vec::new();
    let mut open: Vec<(String, SseClient)> = Vec::new();
    let mut expected = BTreeSet::new();
    for i in 0..60usize {
        // Followers join mid-churn, one per node, at different moments.
        if i % 20 == 5 {
            followers.push(PresenceFollower::start(&bases[i / 20], &token()).await);
        }
        let matcher = format!("https://example.com/churn/{i}");
        let sse = subscribe(&bases[i % 3], &matcher).await;
        expected.insert(matcher.clone());
        open.push((matcher, sse));
        if i % 3 == 2 {
            // Close an older one, somewhere else.
            let (m, sse) = open.remove((i * 7) % open.len());
            drop(sse);
            expected.remove(&m);
        }
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for base in &bases {
        wait_listed(base, &expected, "after the churn").await;
    }
    for (f, base) in followers.iter().zip(&bases) {
        f.wait_until("the follower converges", Some(CLUSTER_WAIT), |l| {
            let mut m = matchers(l);
            m.remove(ALL_EVENTS);
            m == expected
        })
        .await;
        let (subs, _) = list(base, &token()).await;
        assert_eq!(f.active(), subs, "{base}: the follower's list is the API's");
        assert!(f.repeats().is_empty(), "{base}: {:?}", f.repeats());
    }
    // The events every follower saw after its start are in one order.
    let orders: Vec<Vec<String>> = followers
        .iter()
        .map(|f| {
            f.events()
                .into_iter()
                .map(|(id, on)| format!("{id}={on}"))
                .collect()
        })
        .collect();
    let shortest = orders.iter().map(Vec::len).min().unwrap();
    let tails: Vec<(String, Vec<String>)> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("f{i}"), o[o.len() - shortest..].to_vec()))
        .collect();
    let labelled: Vec<(&str, &[String])> = tails
        .iter()
        .map(|(l, o)| (l.as_str(), o.as_slice()))
        .collect();
    assert_eq!(order_difference(&labelled), None);
}

#[tokio::test]
async fn a_node_that_leaves_ends_its_subscriptions_everywhere_once() {
    let mut cluster = TestCluster::start_with(members(3).await).await;
    let bases: Vec<String> = (0..3).map(|i| cluster.node(i).base_url()).collect();
    let watch_c = PresenceFollower::start(&bases[2], &token()).await;
    let mut on_a = Vec::new();
    for i in 0..5 {
        on_a.push(subscribe(&bases[0], &format!("https://example.com/a/{i}")).await);
    }
    let _on_b = subscribe(&bases[1], "https://example.com/b").await;
    let all: BTreeSet<String> = (0..5)
        .map(|i| format!("https://example.com/a/{i}"))
        .chain(["https://example.com/b".to_owned()])
        .collect();
    wait_listed(&bases[2], &all, "before A leaves").await;
    cluster.stop(0).await;
    let only_b = set(&["https://example.com/b"]);
    wait_listed(&bases[1], &only_b, "B after A left").await;
    wait_listed(&bases[2], &only_b, "C after A left").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ends: Vec<String> = watch_c
        .events()
        .into_iter()
        .filter(|(id, on)| !on && id.contains("%2Fa%2F"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ends.len(), 5, "one end each: {ends:?}");
    assert!(watch_c.repeats().is_empty(), "{:?}", watch_c.repeats());
    drop(on_a);
}

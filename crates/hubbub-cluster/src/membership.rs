//! Membership and metadata over chitchat. Only small values travel in gossip:
//! addresses, readiness, the subscriber count and the version vector (one key
//! per origin). Messages never do: they go over the relay links.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, spawn_chitchat,
};
use tokio::sync::watch;

use crate::stamp::Origin;

pub const KEY_RELAY: &str = "relay_addr";
pub const KEY_HTTP: &str = "http_addr";
pub const KEY_READY: &str = "ready";
pub const KEY_SUBSCRIBERS: &str = "subscribers";
/// Set (to `true`) by a node that is leaving gracefully.
pub const KEY_LEAVING: &str = "leaving";
/// Set (to `true`) by a node whose publishes wait for a peer's `Msg::Ack`.
pub const KEY_WANTS_ACKS: &str = "wants_acks";
/// Keys the application gossips about itself start with this
/// (`Cluster::set_app_key`); the cluster only carries them.
pub const APP_PREFIX: &str = "app.";
/// At most this many application keys are read from a member, each value at
/// most [`MAX_APP_VALUE`] bytes: gossip is hostile input until proven
/// otherwise, and the view is cloned often.
pub const MAX_APP_KEYS: usize = 8;
pub const MAX_APP_VALUE: usize = 256;
const HWM_PREFIX: &str = "hwm:";

/// The gossip key of one origin's high-water mark: `hwm:<generation>:<node>`
/// (generation first, so node ids may contain any character).
pub fn hwm_key(origin: &Origin) -> String {
    format!("{HWM_PREFIX}{}:{}", origin.generation, origin.node)
}

/// The origin of an `hwm_key`, or `None` for any other key.
pub fn parse_hwm_key(key: &str) -> Option<Origin> {
    let rest = key.strip_prefix(HWM_PREFIX)?;
    let (generation, node) = rest.split_once(':')?;
    Some(Origin::new(node, generation.parse().ok()?))
}

/// What gossip says about one live member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub origin: Origin,
    pub gossip_addr: SocketAddr,
    pub relay_addr: Option<String>,
    pub http_addr: Option<String>,
    pub ready: bool,
    pub leaving: bool,
    pub wants_acks: bool,
    pub subscribers: u64,
    pub vector: BTreeMap<Origin, u64>,
    /// Its application keys, without the prefix (bounded, see [`MAX_APP_KEYS`]).
    pub app: BTreeMap<String, String>,
}

impl Member {
    fn from_state(id: &ChitchatId, state: &NodeState) -> Self {
        let vector = state
            .key_values()
            .filter_map(|(k, v)| Some((parse_hwm_key(k)?, v.parse().ok()?)))
            .collect();
        Self {
            origin: Origin::new(id.node_id.clone(), id.generation_id),
            gossip_addr: id.gossip_advertise_addr,
            relay_addr: state.get(KEY_RELAY).map(str::to_owned),
            http_addr: state.get(KEY_HTTP).map(str::to_owned),
            ready: state.get(KEY_READY) == Some("true"),
            leaving: state.get(KEY_LEAVING) == Some("true"),
            wants_acks: state.get(KEY_WANTS_ACKS) == Some("true"),
            subscribers: state
                .get(KEY_SUBSCRIBERS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            vector,
            app: state
                .key_values()
                .filter_map(|(k, v)| Some((k.strip_prefix(APP_PREFIX)?, v)))
                .filter(|(_, v)| v.len() <= MAX_APP_VALUE)
                .take(MAX_APP_KEYS)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

/// Live members other than `me`, one per node id: a restarted node shows up with
/// a new generation while the old one may still linger, and the newest wins.
pub fn live_members(
    nodes: &BTreeMap<ChitchatId, NodeState>,
    me: &Origin,
) -> BTreeMap<String, Member> {
    let mut out: BTreeMap<String, Member> = BTreeMap::new();
    for (id, state) in nodes {
        if *id.node_id == *me.node {
            continue;
        }
        let member = Member::from_state(id, state);
        match out.get(&*id.node_id) {
            Some(existing) if existing.origin.generation >= id.generation_id => {}
            _ => {
                out.insert(id.node_id.to_string(), member);
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct GossipSettings {
    pub cluster_id: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub interval: Duration,
}

pub struct Membership {
    handle: ChitchatHandle,
    pub live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("id", self.handle.chitchat_id())
            .finish_non_exhaustive()
    }
}

impl Membership {
    pub async fn start(
        me: &Origin,
        settings: &GossipSettings,
        keys: Vec<(String, String)>,
        transport: &dyn Transport,
    ) -> Result<Self, String> {
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(me.node.clone(), me.generation, settings.advertise),
            cluster_id: settings.cluster_id.clone(),
            gossip_interval: settings.interval,
            listen_addr: settings.listen,
            seed_nodes: settings.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                // A young node must be judged on the gossip rhythm, not the 5 s default.
                initial_interval: settings.interval,
                // Dead generations linger minutes (not a day) before they are forgotten.
                dead_node_grace_period: Duration::from_secs(600),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(config, keys, transport)
            .await
            .map_err(|e| e.to_string())?;
        let live = handle.chitchat().lock().await.live_nodes_watcher();
        Ok(Self { handle, live })
    }

    /// Sets keys of our own node state (and deletes `remove`).
    pub async fn set(&self, keys: Vec<(String, String)>, remove: Vec<String>) {
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for (k, v) in &keys {
                    if state.get(k) != Some(v.as_str()) {
                        state.set(k.clone(), v.clone());
                    }
                }
                for k in &remove {
                    state.delete(k);
                }
            })
            .await;
    }

    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwm_keys_round_trip_any_node_name() {
        for node in ["a", "node:with:colons", "x/y"] {
            let o = Origin::new(node, 42);
            assert_eq!(parse_hwm_key(&hwm_key(&o)), Some(o));
        }
        assert_eq!(parse_hwm_key("relay_addr"), None);
        assert_eq!(parse_hwm_key("hwm:x:y"), None);
    }
}

/// Membership scenarios over chitchat's in-memory transport with paused tokio
/// time: deterministic clocks, real chitchat (failure detector included).
/// Each scenario is a list of [`Step`]s run in order.
#[cfg(test)]
mod scenarios {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use chitchat::transport::ChannelTransport;
    use tokio::time::{Instant, sleep};

    use super::*;

    const NODES: [&str; 5] = ["a", "b", "c", "d", "e"];
    const INTERVAL: Duration = Duration::from_millis(100);
    /// Virtual time allowed for an expectation to come true (the failure
    /// detector needs a few seconds of silence at a 100 ms gossip interval).
    const WITHIN: Duration = Duration::from_secs(60);

    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// Starts `node` with `generation` (stop it first to restart it).
        Start(&'static str, u64),
        /// Shuts `node` down (its gossip socket is released).
        Stop(&'static str),
        /// Drops gossip between two nodes, both ways.
        Cut(&'static str, &'static str),
        Heal(&'static str, &'static str),
        /// Sets a key of the node's own state.
        Set(&'static str, &'static str, &'static str),
        /// Within [`WITHIN`], `node` sees exactly these live members (node, generation).
        Sees(&'static str, &'static [(&'static str, u64)]),
        /// `node` keeps seeing exactly these members for the whole duration.
        KeepsSeeing(&'static str, &'static [(&'static str, u64)], Duration),
        /// Within [`WITHIN`], `observer` sees `subject`'s high-water mark for `origin` at `hwm`.
        SeesHwm {
            observer: &'static str,
            subject: &'static str,
            origin: (&'static str, u64),
            hwm: u64,
        },
        /// Within [`WITHIN`], `observer` sees `subject`'s relay address as `addr`.
        SeesRelay(&'static str, &'static str, &'static str),
        /// Within [`WITHIN`], `observer` sees exactly these application keys of `subject`.
        SeesApp(
            &'static str,
            &'static str,
            &'static [(&'static str, &'static str)],
        ),
    }
    use Step::*;

    fn addr(node: &str) -> SocketAddr {
        let i = NODES.iter().position(|n| *n == node).expect("a known node");
        SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
    }

    struct Running {
        me: Origin,
        membership: Membership,
    }

    impl Running {
        fn members(&self) -> BTreeMap<String, Member> {
            live_members(&self.membership.live.borrow(), &self.me)
        }

        fn sees(&self) -> BTreeMap<String, u64> {
            self.members()
                .into_iter()
                .map(|(n, m)| (n, m.origin.generation))
                .collect()
        }
    }

    fn expected(members: &[(&str, u64)]) -> BTreeMap<String, u64> {
        members.iter().map(|(n, g)| (n.to_string(), *g)).collect()
    }

    /// Polls `check` (in virtual time) until it holds, or panics with `what`.
    async fn within<T: std::fmt::Debug>(
        what: impl Fn() -> String,
        mut probe: impl FnMut() -> T,
        check: impl Fn(&T) -> bool,
    ) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let got = probe();
            if check(&got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} within {WITHIN:?}; got {got:?}",
                what()
            );
            sleep(INTERVAL / 2).await;
        }
    }

    async fn run(steps: &[Step]) {
        let transport = ChannelTransport::default();
        let seeds: Vec<String> = NODES.iter().map(|n| addr(n).to_string()).collect();
        let mut nodes: BTreeMap<&str, Running> = BTreeMap::new();
        for (i, step) in steps.iter().enumerate() {
            let step = *step;
            let running = |nodes: &BTreeMap<&str, Running>, n: &str| {
                assert!(
                    nodes.contains_key(n),
                    "step {i} {step:?}: {n} is not running"
                );
            };
            match step {
                Start(node, generation) => {
                    let me = Origin::new(node, generation);
                    let settings = GossipSettings {
                        cluster_id: "test".into(),
                        listen: addr(node),
                        advertise: addr(node),
                        seeds: seeds.clone(),
                        interval: INTERVAL,
                    };
                    let keys = vec![(KEY_RELAY.to_owned(), format!("{node}:{generation}"))];
                    let membership = Membership::start(&me, &settings, keys, &transport)
                        .await
                        .unwrap_or_else(|e| panic!("step {i} {step:?}: {e}"));
                    assert!(nodes.insert(node, Running { me, membership }).is_none());
                }
                Stop(node) => {
                    let gone = nodes.remove(node).expect("stopping a running node");
                    gone.membership.shutdown().await;
                }
                Cut(a, b) => transport.remove_link(addr(a), addr(b)).await,
                Heal(a, b) => transport.add_link(addr(a), addr(b)).await,
                Set(node, key, value) => {
                    running(&nodes, node);
                    nodes[node]
                        .membership
                        .set(vec![(key.into(), value.into())], vec![])
                        .await;
                }
                Sees(node, members) => {
                    running(&nodes, node);
                    let want = expected(members);
                    within(
                        || format!("step {i}: {node} should see {want:?}"),
                        || nodes[node].sees(),
                        |got| *got == want,
                    )
                    .await;
                }
                KeepsSeeing(node, members, duration) => {
                    running(&nodes, node);
                    let want = expected(members);
                    let end = Instant::now() + duration;
                    while Instant::now() < end {
                        let got = nodes[node].sees();
                        assert_eq!(got, want, "step {i}: {node} should keep seeing {want:?}");
                        sleep(INTERVAL / 2).await;
                    }
                }
                SeesHwm {
                    observer,
                    subject,
                    origin,
                    hwm,
                } => {
                    running(&nodes, observer);
                    let origin = Origin::new(origin.0, origin.1);
                    within(
                        || format!("step {i}: {observer} should see {subject} at {origin}={hwm}"),
                        || {
                            let members = nodes[observer].members();
                            members
                                .get(subject)
                                .and_then(|m| m.vector.get(&origin).copied())
                        },
                        |got| *got == Some(hwm),
                    )
                    .await;
                }
                SeesApp(observer, subject, app) => {
                    running(&nodes, observer);
                    let want: BTreeMap<String, String> = app
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                    within(
                        || format!("step {i}: {observer} should see {subject}'s app keys {want:?}"),
                        || {
                            let members = nodes[observer].members();
                            members.get(subject).map(|m| m.app.clone())
                        },
                        |got| got.as_ref() == Some(&want),
                    )
                    .await;
                }
                SeesRelay(observer, subject, relay) => {
                    running(&nodes, observer);
                    within(
                        || format!("step {i}: {observer} should see {subject}'s relay at {relay}"),
                        || {
                            let members = nodes[observer].members();
                            members.get(subject).and_then(|m| m.relay_addr.clone())
                        },
                        |got| got.as_deref() == Some(relay),
                    )
                    .await;
                }
            }
        }
        for (_, node) in nodes {
            node.membership.shutdown().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_members_find_each_other_and_share_metadata() {
        run(&[
            Start("a", 1),
            Start("b", 1),
            Start("c", 1),
            Sees("a", &[("b", 1), ("c", 1)]),
            Sees("b", &[("a", 1), ("c", 1)]),
            Sees("c", &[("a", 1), ("b", 1)]),
            SeesRelay("c", "a", "a:1"),
            // The version vector travels as one key per origin.
            Set("a", "hwm:1:a", "42"),
            Set("a", "hwm:7:b", "3"),
            SeesHwm {
                observer: "b",
                subject: "a",
                origin: ("a", 1),
                hwm: 42,
            },
            SeesHwm {
                observer: "c",
                subject: "a",
                origin: ("b", 7),
                hwm: 3,
            },
            Set("a", "hwm:1:a", "43"),
            SeesHwm {
                observer: "c",
                subject: "a",
                origin: ("a", 1),
                hwm: 43,
            },
        ])
        .await;
    }

    /// Application keys travel without their prefix; what a member reads of
    /// another's is bounded whatever that member gossips (an attacker on the
    /// gossip port can set any key): at most 8 keys, values of at most 256
    /// bytes, other keys ignored.
    #[tokio::test(start_paused = true)]
    async fn application_keys_travel_and_what_is_read_of_them_is_bounded() {
        const LONG: &str = concat!(
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        );
        let mut steps = vec![
            Start("a", 1),
            Start("b", 1),
            Sees("b", &[("a", 1)]),
            Set("a", "app.presence", "3:00ff"),
            Set("a", "app.too_long", LONG),
            Set("a", "not_app", "x"),
            SeesApp("b", "a", &[("presence", "3:00ff")]),
        ];
        const MANY: [&str; 10] = [
            "app.k0", "app.k1", "app.k2", "app.k3", "app.k4", "app.k5", "app.k6", "app.k7",
            "app.k8", "app.k9",
        ];
        for k in MANY {
            steps.push(Set("a", k, "v"));
        }
        steps.push(SeesApp(
            "b",
            "a",
            &[
                ("k0", "v"),
                ("k1", "v"),
                ("k2", "v"),
                ("k3", "v"),
                ("k4", "v"),
                ("k5", "v"),
                ("k6", "v"),
                ("k7", "v"),
            ],
        ));
        run(&steps).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_isolated_member_is_dropped_and_comes_back_after_the_heal() {
        run(&[
            Start("a", 1),
            Start("b", 1),
            Start("c", 1),
            Sees("a", &[("b", 1), ("c", 1)]),
            Sees("c", &[("a", 1), ("b", 1)]),
            // Cut `a` off from both others: the failure detectors fire on both sides.
            Cut("a", "b"),
            Cut("a", "c"),
            Sees("a", &[]),
            Sees("b", &[("c", 1)]),
            Sees("c", &[("b", 1)]),
            Heal("a", "b"),
            Heal("a", "c"),
            Sees("a", &[("b", 1), ("c", 1)]),
            Sees("b", &[("a", 1), ("c", 1)]),
            Sees("c", &[("a", 1), ("b", 1)]),
        ])
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_between_two_members_is_bridged_by_a_third() {
        // Gossip is transitive: a's heartbeats reach b through c, so cutting only
        // the a-b link is not a partition and must not flap membership.
        run(&[
            Start("a", 1),
            Start("b", 1),
            Start("c", 1),
            Sees("a", &[("b", 1), ("c", 1)]),
            Sees("b", &[("a", 1), ("c", 1)]),
            Cut("a", "b"),
            KeepsSeeing("a", &[("b", 1), ("c", 1)], Duration::from_secs(20)),
            KeepsSeeing("b", &[("a", 1), ("c", 1)], Duration::from_secs(1)),
            // Now isolate a for real, and heal everything.
            Cut("a", "c"),
            Sees("b", &[("c", 1)]),
            Heal("a", "b"),
            Heal("a", "c"),
            Sees("b", &[("a", 1), ("c", 1)]),
        ])
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_with_a_higher_generation_replaces_the_old_one() {
        run(&[
            Start("a", 1),
            Start("b", 1),
            Start("c", 1),
            Sees("a", &[("b", 1), ("c", 1)]),
            Sees("c", &[("a", 1), ("b", 1)]),
            Set("b", "hwm:1:b", "10"),
            SeesHwm {
                observer: "a",
                subject: "b",
                origin: ("b", 1),
                hwm: 10,
            },
            Stop("b"),
            Sees("a", &[("c", 1)]),
            // Same address, same node id, new generation: its fresh state wins.
            Start("b", 2),
            Sees("a", &[("b", 2), ("c", 1)]),
            Sees("c", &[("a", 1), ("b", 2)]),
            Sees("b", &[("a", 1), ("c", 1)]),
            SeesRelay("a", "b", "b:2"),
            Set("b", "hwm:2:b", "1"),
            SeesHwm {
                observer: "c",
                subject: "b",
                origin: ("b", 2),
                hwm: 1,
            },
        ])
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_restart_is_deduplicated_by_node_id() {
        // Restarted before the failure detector noticed: both generations may be
        // live for a while, and the newest one is the member.
        run(&[
            Start("a", 1),
            Start("b", 1),
            Start("c", 1),
            Sees("a", &[("b", 1), ("c", 1)]),
            Stop("c"),
            Start("c", 5),
            Sees("a", &[("b", 1), ("c", 5)]),
            KeepsSeeing("a", &[("b", 1), ("c", 5)], Duration::from_secs(30)),
            Sees("b", &[("a", 1), ("c", 5)]),
        ])
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn five_members_survive_a_minority_partition() {
        run(&[
            Start("a", 1),
            Start("b", 1),
            Start("c", 1),
            Start("d", 1),
            Start("e", 1),
            Sees("a", &[("b", 1), ("c", 1), ("d", 1), ("e", 1)]),
            Sees("e", &[("a", 1), ("b", 1), ("c", 1), ("d", 1)]),
            // {a, b} | {c, d, e}
            Cut("a", "c"),
            Cut("a", "d"),
            Cut("a", "e"),
            Cut("b", "c"),
            Cut("b", "d"),
            Cut("b", "e"),
            Sees("a", &[("b", 1)]),
            Sees("b", &[("a", 1)]),
            Sees("c", &[("d", 1), ("e", 1)]),
            Sees("e", &[("c", 1), ("d", 1)]),
            Heal("a", "c"),
            Heal("a", "d"),
            Heal("a", "e"),
            Heal("b", "c"),
            Heal("b", "d"),
            Heal("b", "e"),
            Sees("a", &[("b", 1), ("c", 1), ("d", 1), ("e", 1)]),
            Sees("d", &[("a", 1), ("b", 1), ("c", 1), ("e", 1)]),
        ])
        .await;
    }
}

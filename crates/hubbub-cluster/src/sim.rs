//! Deterministic simulation of a cluster: N [`Node`]s (the very state machine
//! the engine runs) over a simulated network with latency, link drops,
//! partitions and crashes with restarts, all driven by one seed. Nothing reads
//! the wall clock or a socket, so a seed replays exactly.
//!
//! The network follows what the real transport allows: a relay link is FIFO
//! (TCP), so loss is modelled as the link dropping (every frame in flight on it
//! is lost, the dialer reconnects with back-off and resumes from the
//! receiver's high-water mark); gossip is modelled as state snapshots that
//! reach the nodes a node can talk to, with a failure detector that forgets a
//! member it has not heard from for `FAILURE_DETECTION`.
//!
//! Each seed runs a faulty phase, heals everything, then a healthy phase, and
//! checks: every live node delivers every update some live node holds,
//! exactly once, each origin in seq order; vectors (and what is gossiped of
//! them) converge; nothing is lost; updates published in the healthy phase are
//! delivered in the one total order everywhere; every live node has joined.
//!
//! `SIM_SEED=<n>` replays one seed (printing its trace), `SIM_SEEDS=<n>` runs
//! that many seeds instead of the default.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hubbub_proto::Update;

use crate::membership::{Member, parse_hwm_key};
use crate::node::{Action, Delivery, Node, Timing};
use crate::sequencer::{Sequencer, SequencerLimits};
use crate::stamp::{Origin, OriginClock, Stamp, Stamped};
use crate::wire::Msg;

/// Milliseconds of simulated time.
type Ms = u64;

const GOSSIP_INTERVAL: Ms = 50;
const FAILURE_DETECTION: Ms = 1_000;
const TICK: Ms = 10;
const ANTI_ENTROPY: Ms = 2 * GOSSIP_INTERVAL;
const ORDER_WAIT: Ms = 500;
const JOIN_TIMEOUT: Ms = 500;
const WATERMARK_INTERVAL: Ms = 5;
/// `keepalive()` in cluster.rs for these settings: min(order_wait / 4, 100 ms).
const KEEPALIVE: Ms = 100;
/// What cluster.rs leases a quiet origin: two watermark intervals.
const LEASE: Ms = 2 * WATERMARK_INTERVAL;
const BACKOFF_MIN: Ms = 50;
const BACKOFF_MAX: Ms = 2_000;
/// Faults happen before this; then everything heals.
const HEAL_AT: Ms = 3_000;
/// Healthy-phase publishes: links are all up again by then (back-off ≤ 2 s).
const HEALTHY: std::ops::Range<Ms> = 5_500..7_000;
const END: Ms = 7_600;

/// xorshift64*: tiny, fast, and all the randomness a seed needs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `range` (which must not be empty).
    fn range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.range(0..1000) < per_mille
    }
}

/// What a simulated run may deliberately get wrong (to prove the checks bite).
#[derive(Debug, Clone, Copy, Default)]
pub struct Knobs {
    /// Faults off: latency only (one order must hold throughout).
    pub calm: bool,
    /// Gossip's failure detector misfires: a node's gossip drops a live peer
    /// for a while (up to longer than `order_wait`) while their relay links
    /// go on talking. Not a fault: one order must hold throughout.
    pub gossip_hiccups: bool,
    /// A node's engine task freezes for a while (CPU starvation): what its
    /// peers send it waits in its queues until it wakes and takes it all.
    /// Its links and its stamping are tasks of their own and go on (so
    /// peers keep hearing its watermarks). Not a fault either: one order
    /// must hold throughout.
    pub stalls: bool,
}

impl Knobs {
    /// Whether the run has no fault that may bend the order, so one order
    /// must hold for every update, not only the healthy phase's.
    fn orderly(self) -> bool {
        self.calm
    }

    /// The test that runs these knobs (for the replay hint).
    fn test_name(self) -> &'static str {
        match (self.calm, self.gossip_hiccups, self.stalls) {
            (_, true, _) => "gossip_hiccups_keep_one_order",
            (_, _, true) => "stalled_nodes_keep_one_order",
            (true, ..) => "calm",
            _ => "faults",
        }
    }
}

#[derive(Debug)]
enum Phase {
    Down { retry_at: Ms },
    Dialing,
    Up { cursor: u64 },
}

/// One outbound relay link as the real `relay::run_link` keeps it.
#[derive(Debug)]
struct OutLink {
    peer: Origin,
    /// Globally unique per connection attempt: frames of a dropped connection
    /// carry an old id and are discarded on arrival.
    conn: u64,
    phase: Phase,
    backoff: Ms,
    /// The engine's queue for this link (pulls, pull answers, acks): it
    /// outlives reconnects, like the real `extra` channel.
    extra: VecDeque<Msg>,
    /// When the last frame on this connection arrives (FIFO).
    fifo_at: Ms,
    last_wm_at: Ms,
    last_wm_observed: u64,
}

struct SimNode {
    name: Arc<str>,
    alive: bool,
    origin: Origin,
    started: Ms,
    skew: Ms,
    /// The same clock and lease `LocalOrigin` stamps and promises with.
    clock: OriginClock,
    /// Our origin's log; seq n is at n - 1.
    log: Vec<Arc<Stamped>>,
    node: Node,
    links: BTreeMap<String, OutLink>,
    delivered: Vec<Arc<Stamped>>,
    /// Highest peer stamp seen (the real `observed` watch).
    observed: u64,
    /// What gossip says about us: our vector as handed to gossip, readiness.
    gossiped: BTreeMap<Origin, u64>,
    /// Members as last handed to the node.
    members: BTreeMap<String, Member>,
}

impl SimNode {
    fn new(name: &str, generation: u64, now: Ms, skew: Ms) -> Self {
        let origin = Origin::new(name, generation);
        let timing = Timing {
            tick: Duration::from_millis(TICK),
            anti_entropy: Duration::from_millis(ANTI_ENTROPY),
            order_wait: Duration::from_millis(ORDER_WAIT),
            join_timeout: Duration::from_millis(JOIN_TIMEOUT),
        };
        let seq = Sequencer::new(SequencerLimits::default(), true);
        Self {
            name: name.into(),
            alive: true,
            node: Node::new(origin.clone(), seq, timing),
            origin,
            started: now,
            skew,
            clock: OriginClock::leasing(Duration::from_millis(LEASE)),
            log: Vec::new(),
            links: BTreeMap::new(),
            delivered: Vec::new(),
            observed: 0,
            gossiped: BTreeMap::new(),
            members: BTreeMap::new(),
        }
    }

    fn since_start(&self, now: Ms) -> Duration {
        Duration::from_millis(now - self.started)
    }

    /// This node's wall clock as a stamp (clocks are skewed per node).
    fn wall(&self, now: Ms) -> u64 {
        (1_000_000 + now + self.skew) << 16
    }

    fn member(&self) -> Member {
        Member {
            origin: self.origin.clone(),
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_addr: Some(self.name.to_string()),
            http_addr: None,
            ready: self.node.has_joined(),
            leaving: false,
            wants_acks: true,
            subscribers: 0,
            app: BTreeMap::new(),
            vector: self.gossiped.clone(),
        }
    }
}

#[derive(Debug)]
enum Event {
    Tick(usize),
    AntiEntropy(usize),
    Gossip,
    Publish(usize),
    /// A dial reaches the listener.
    Dial {
        from: usize,
        to: usize,
        conn: u64,
    },
    /// The listener's answer (its high-water mark of our origin) reaches the dialer.
    Welcome {
        from: usize,
        to: usize,
        conn: u64,
        have: u64,
    },
    Frame {
        from: usize,
        to: usize,
        conn: u64,
        msg: Msg,
    },
    Crash(usize),
    Restart(usize),
    Partition(Vec<u8>),
    Heal,
    DropLink {
        from: usize,
        to: usize,
    },
    /// `node`'s gossip stops listing `peer` until `until` (relay unaffected).
    Hiccup {
        node: usize,
        peer: usize,
        until: Ms,
    },
    /// `node`'s task freezes until `until`.
    Stall {
        node: usize,
        until: Ms,
    },
}

impl Event {
    /// The node whose engine task handles the event (deferred while that
    /// task is stalled). Ticks, publishes and link welcomes are handled by
    /// the link and stamping side, which a stall leaves running.
    fn engine(&self) -> Option<usize> {
        match self {
            Self::AntiEntropy(i) => Some(*i),
            Self::Dial { to, .. } | Self::Frame { to, .. } => Some(*to),
            _ => None,
        }
    }
}

/// An event due at `at`; `order` keeps equal times first-in first-out.
struct Due {
    at: Ms,
    order: u64,
    event: Event,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

pub struct Sim {
    rng: Rng,
    now: Ms,
    queue: BinaryHeap<Due>,
    order: u64,
    conns: u64,
    nodes: Vec<SimNode>,
    /// Partition group of each node (equal groups can talk).
    group: Vec<u8>,
    /// When node i last heard gossip from node j, and what it said.
    heard: Vec<Vec<Option<(Ms, Member)>>>,
    latency: std::ops::Range<Ms>,
    /// Per mille of frames on which a link drops, in the faulty phase.
    loss: u64,
    trace: Option<Vec<String>>,
    /// Every `Msg::Ack` delivered: (who acknowledged, whose updates, up to).
    acks: Vec<(Origin, Origin, u64)>,
    /// Until when node i's gossip does not list node j (`Knobs::gossip_hiccups`).
    hiccup_until: Vec<Vec<Ms>>,
    /// Until when node i's task is frozen (`Knobs::stalls`).
    stalled_until: Vec<Ms>,
    knobs: Knobs,
}

impl Sim {
    pub fn new(seed: u64, knobs: Knobs, tracing: bool) -> Self {
        let mut rng = Rng::new(seed);
        let n = rng.range(3..6) as usize;
        let base = rng.range(1..10);
        let latency = base..base + rng.range(1..20);
        let loss = if knobs.calm { 0 } else { rng.range(0..5) };
        let nodes = (0..n)
            .map(|i| SimNode::new(&format!("n{i}"), 1, 0, rng.range(0..30)))
            .collect();
        let mut sim = Self {
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            order: 0,
            conns: 0,
            nodes,
            group: vec![0; n],
            heard: vec![vec![None; n]; n],
            latency,
            loss,
            trace: tracing.then(Vec::new),
            acks: Vec::new(),
            hiccup_until: vec![vec![0; n]; n],
            stalled_until: vec![0; n],
            knobs,
        };
        sim.schedule(knobs);
        sim
    }

    fn at(&mut self, at: Ms, event: Event) {
        self.order += 1;
        self.queue.push(Due {
            at,
            order: self.order,
            event,
        });
    }

    fn log(&mut self, what: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>5} ms  {}", self.now, what()));
        }
    }

    /// Timers, publishes and (unless calm) faults, all decided up front.
    fn schedule(&mut self, knobs: Knobs) {
        let n = self.nodes.len();
        self.at(0, Event::Gossip);
        for i in 0..n {
            let offset = self.rng.range(0..TICK);
            self.at(offset, Event::Tick(i));
            let offset = self.rng.range(0..ANTI_ENTROPY);
            self.at(offset, Event::AntiEntropy(i));
        }
        for _ in 0..self.rng.range(20..60) {
            let at = self.rng.range(500..HEAL_AT);
            let node = self.rng.range(0..n as u64) as usize;
            self.at(at, Event::Publish(node));
        }
        for _ in 0..self.rng.range(20..40) {
            let at = self.rng.range(HEALTHY);
            let node = self.rng.range(0..n as u64) as usize;
            self.at(at, Event::Publish(node));
        }
        if !knobs.calm {
            self.schedule_faults();
        }
        if knobs.gossip_hiccups {
            self.schedule_hiccups();
        }
        if knobs.stalls {
            self.schedule_stalls();
        }
        self.at(HEAL_AT, Event::Heal);
    }

    /// Gossip drops live peers for 50 ms to 1.5 s (often both ways), while
    /// publishes go on.
    fn schedule_hiccups(&mut self) {
        let n = self.nodes.len() as u64;
        for _ in 0..self.rng.range(4..12) {
            let at = self.rng.range(600..HEALTHY.end);
            let node = self.rng.range(0..n) as usize;
            let peer = (node + self.rng.range(1..n) as usize) % n as usize;
            let until = at + self.rng.range(50..1_500);
            self.at(at, Event::Hiccup { node, peer, until });
            if self.rng.chance(500) {
                let (node, peer) = (peer, node);
                self.at(at, Event::Hiccup { node, peer, until });
            }
        }
    }

    /// Nodes freeze for 100 ms to 1.5 s, right after some publish, while
    /// updates are on their way to them.
    fn schedule_stalls(&mut self) {
        let n = self.nodes.len() as u64;
        for _ in 0..self.rng.range(4..12) {
            let at = self.rng.range(600..HEALTHY.end - 1_500);
            let node = self.rng.range(0..n) as usize;
            let until = at + self.rng.range(100..1_500);
            self.at(at, Event::Stall { node, until });
            // Publishes around it, so the node holds some and some are in flight.
            for _ in 0..3 {
                let other = self.rng.range(0..n) as usize;
                let when = at.saturating_sub(self.rng.range(0..40));
                self.at(when, Event::Publish(other));
            }
        }
    }

    fn schedule_faults(&mut self) {
        let n = self.nodes.len() as u64;
        let mut crashed = BTreeSet::new();
        for _ in 0..self.rng.range(1..5) {
            let at = self.rng.range(600..HEAL_AT - 200);
            match self.rng.range(0..3) {
                0 => {
                    let groups = (0..n).map(|_| self.rng.range(0..2) as u8).collect();
                    self.at(at, Event::Partition(groups));
                    let end = (at + self.rng.range(100..1_500)).min(HEAL_AT);
                    self.at(end, Event::Heal);
                }
                1 => {
                    // At most one crash per node, and one node always stays up.
                    let node = self.rng.range(0..n) as usize;
                    if crashed.len() + 1 < n as usize && crashed.insert(node) {
                        self.at(at, Event::Crash(node));
                        let back = (at + self.rng.range(100..1_500)).min(HEAL_AT);
                        self.at(back, Event::Restart(node));
                    }
                }
                _ => {
                    let from = self.rng.range(0..n) as usize;
                    let to = self.rng.range(0..n) as usize;
                    self.at(at, Event::DropLink { from, to });
                }
            }
        }
    }

    /// Runs the seed to its end.
    pub fn run(&mut self) {
        while let Some(due) = self.queue.pop() {
            if due.at > END {
                break;
            }
            if let Some(i) = due.event.engine()
                && self.stalled_until[i] > due.at
            {
                // Waits in the frozen node's queues: keeping its place among
                // the events due then keeps every link FIFO.
                let until = self.stalled_until[i];
                self.queue.push(Due { at: until, ..due });
                continue;
            }
            self.now = due.at;
            self.handle(due.event);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            // Like the engine, a node looks at the time only while it
            // holds updates; its links keep their own keepalive timers.
            Event::Tick(i) => {
                self.at(self.now + TICK, Event::Tick(i));
                if self.nodes[i].node.needs_ticks() && !self.stalled(i) {
                    self.turn(i);
                } else if self.nodes[i].alive {
                    self.pump(i);
                }
            }
            Event::AntiEntropy(i) => {
                self.at(self.now + ANTI_ENTROPY, Event::AntiEntropy(i));
                self.anti_entropy(i);
            }
            Event::Gossip => {
                self.at(self.now + GOSSIP_INTERVAL, Event::Gossip);
                self.gossip();
            }
            Event::Publish(i) => self.publish(i),
            Event::Dial { from, to, conn } => self.on_dial(from, to, conn),
            Event::Welcome {
                from,
                to,
                conn,
                have,
            } => self.on_welcome(from, to, conn, have),
            Event::Frame {
                from,
                to,
                conn,
                msg,
            } => self.on_frame(from, to, conn, msg),
            Event::Crash(i) => self.crash(i),
            Event::Restart(i) => self.restart(i),
            Event::Partition(groups) => {
                self.log(|| format!("partition {groups:?}"));
                self.group = groups;
                self.cut_partitioned();
            }
            Event::Heal => {
                self.log(|| "heal".into());
                self.group.fill(0);
                if self.now >= HEAL_AT {
                    self.loss = 0;
                }
            }
            Event::DropLink { from, to } => {
                self.log(|| format!("drop link n{from} -> n{to}"));
                self.drop_link(from, to);
            }
            Event::Hiccup { node, peer, until } => {
                self.log(|| format!("n{node}'s gossip drops n{peer} until {until}"));
                let slot = &mut self.hiccup_until[node][peer];
                *slot = (*slot).max(until);
            }
            Event::Stall { node, until } => {
                self.log(|| format!("n{node} stalls until {until}"));
                let slot = &mut self.stalled_until[node];
                *slot = (*slot).max(until);
            }
        }
    }

    /// Whether node `i`'s engine task is frozen now (`Knobs::stalls`).
    fn stalled(&self, i: usize) -> bool {
        self.stalled_until[i] > self.now
    }

    /// After an event: a turn of the engine, or (while it is stalled) only
    /// the links', which stream the log and watermarks on their own.
    fn turn_or_pump(&mut self, i: usize) {
        if self.stalled(i) {
            if self.nodes[i].alive {
                self.pump(i);
            }
        } else {
            self.turn(i);
        }
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].alive && self.nodes[b].alive && self.group[a] == self.group[b]
    }

    fn latency(&mut self) -> Ms {
        self.rng.range(self.latency.clone())
    }

    // ------------------------------------------------------------ node turns

    /// What the engine does after every event: carry out decisions, release,
    /// acks, carry out again, then let the links send.
    fn turn(&mut self, i: usize) {
        if !self.nodes[i].alive {
            return;
        }
        self.sync_links(i);
        self.carry_out(i);
        let now = self.now;
        let n = &mut self.nodes[i];
        let own = n.clock.watermark(n.wall(now));
        let at = n.since_start(now);
        let mut released = Vec::new();
        for delivery in n.node.release(at, own) {
            if let Delivery::Update(u) = delivery {
                released.push(u.update.id.clone());
                n.delivered.push(u);
            }
        }
        n.node.send_acks();
        if !released.is_empty() {
            self.log(|| format!("n{i} releases {}", released.join(" ")));
        }
        self.carry_out(i);
        self.pump(i);
    }

    fn sync_links(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        for (node, link) in &n.links {
            n.node
                .set_linked(node, matches!(link.phase, Phase::Up { .. }));
        }
    }

    fn carry_out(&mut self, i: usize) {
        let now = self.now;
        let actions = self.nodes[i].node.take_actions();
        for action in actions {
            let n = &mut self.nodes[i];
            match action {
                Action::Send { to, msg } => {
                    if let Some(link) = n.links.get_mut(&to) {
                        link.extra.push_back(msg);
                    }
                }
                Action::Open { node, peer, .. } => {
                    self.conns += 1;
                    let link = OutLink {
                        peer,
                        conn: self.conns,
                        phase: Phase::Down { retry_at: now },
                        backoff: BACKOFF_MIN,
                        extra: VecDeque::new(),
                        fifo_at: 0,
                        last_wm_at: 0,
                        last_wm_observed: 0,
                    };
                    n.links.insert(node, link);
                }
                Action::Close { node } => {
                    n.links.remove(&node);
                }
                Action::Observe(hlc) => {
                    n.clock.observe(hlc);
                    n.observed = n.observed.max(hlc);
                }
                Action::Acked(_) | Action::Joined => {}
            }
        }
    }

    fn anti_entropy(&mut self, i: usize) {
        if !self.nodes[i].alive {
            return;
        }
        self.sync_links(i);
        let now = self.now;
        let n = &mut self.nodes[i];
        let (at, wall) = (n.since_start(now), n.wall(now));
        n.node.anti_entropy(at, wall);
        let (set, remove) = n.node.gossip_changes();
        for (key, value) in set {
            if let (Some(origin), Ok(hwm)) = (parse_hwm_key(&key), value.parse()) {
                n.gossiped.insert(origin, hwm);
            }
        }
        for key in remove {
            if let Some(origin) = parse_hwm_key(&key) {
                n.gossiped.remove(&origin);
            }
        }
        self.turn(i);
    }

    /// One gossip round: nodes that can talk exchange their states; a member
    /// not heard for `FAILURE_DETECTION` is dead to the others (and a member
    /// in a hiccup, to the node that has it). A stalled engine reads the
    /// member list when it wakes.
    fn gossip(&mut self) {
        let n = self.nodes.len();
        let now = self.now;
        let stalled: Vec<bool> = (0..n).map(|i| self.stalled(i)).collect();
        let states: Vec<Member> = self.nodes.iter().map(SimNode::member).collect();
        for i in 0..n {
            for (j, state) in states.iter().enumerate() {
                if i != j && self.reachable(i, j) {
                    self.heard[i][j] = Some((self.now, state.clone()));
                }
            }
        }
        let alive: Vec<usize> = (0..n)
            .filter(|i| self.nodes[*i].alive && !stalled[*i])
            .collect();
        for i in alive {
            let members: BTreeMap<String, Member> = self.heard[i]
                .iter()
                .enumerate()
                .filter(|(j, _)| self.hiccup_until[i][*j] <= now)
                .filter_map(|(_, heard)| heard.as_ref())
                .filter(|(at, _)| self.now - at < FAILURE_DETECTION)
                .map(|(_, m)| (m.origin.node.to_string(), m.clone()))
                .collect();
            if members != self.nodes[i].members {
                self.nodes[i].members = members.clone();
                self.nodes[i].node.on_members(members);
                self.turn(i);
            }
        }
    }

    fn publish(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        if !n.alive || !n.node.has_joined() {
            return;
        }
        let seq = n.log.len() as u64 + 1;
        let hlc = n.clock.stamp(n.wall(now));
        let update = Arc::new(Stamped {
            stamp: Stamp {
                hlc,
                origin: n.origin.clone(),
                seq,
            },
            update: Update {
                id: format!("{}-{seq}", n.origin),
                topics: vec!["t".into()],
                data: now.to_string(),
                private: false,
                event_type: None,
                retry: None,
            },
        });
        n.log.push(update.clone());
        n.node.on_own(update);
        self.log(|| format!("n{i} publishes seq {seq}"));
        self.turn_or_pump(i);
    }

    // ------------------------------------------------------------ links

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| &*n.name == name)
    }

    /// Lets node `i`'s links dial, stream their log and queue, and send the
    /// watermark they owe (as `relay::stream_to` does).
    fn pump(&mut self, i: usize) {
        let names: Vec<String> = self.nodes[i].links.keys().cloned().collect();
        for name in names {
            let Some(to) = self.index_of(&name) else {
                continue;
            };
            self.pump_link(i, to, &name);
        }
    }

    fn pump_link(&mut self, i: usize, to: usize, name: &str) {
        let now = self.now;
        let Some(link) = self.nodes[i].links.get_mut(name) else {
            return;
        };
        match link.phase {
            Phase::Down { retry_at } if retry_at <= now => {
                self.conns += 1;
                link.conn = self.conns;
                link.phase = Phase::Dialing;
                link.fifo_at = 0;
                let conn = link.conn;
                let lat = self.latency();
                self.at(now + lat, Event::Dial { from: i, to, conn });
            }
            Phase::Up { cursor } => self.stream(i, to, name, cursor),
            _ => {}
        }
    }

    fn stream(&mut self, i: usize, to: usize, name: &str, cursor: u64) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let wall = n.wall(now);
        let SimNode {
            log,
            links,
            clock,
            observed,
            ..
        } = n;
        let Some(link) = links.get_mut(name) else {
            return;
        };
        let mut frames: Vec<Msg> = log
            .get((cursor - 1) as usize..)
            .unwrap_or_default()
            .iter()
            .map(|u| Msg::Update(u.clone()))
            .collect();
        let sent_updates = !frames.is_empty();
        link.phase = Phase::Up {
            cursor: log.len() as u64 + 1,
        };
        frames.extend(link.extra.drain(..));
        let owed = *observed > link.last_wm_observed && now >= link.last_wm_at + WATERMARK_INTERVAL;
        if sent_updates || owed || now >= link.last_wm_at + KEEPALIVE {
            frames.push(Msg::Watermark(clock.watermark(wall)));
            link.last_wm_at = now;
            link.last_wm_observed = *observed;
        }
        for msg in frames {
            if !self.send_frame(i, to, name, msg) {
                return;
            }
        }
    }

    /// Puts one frame on the wire; false when the link dropped instead.
    fn send_frame(&mut self, i: usize, to: usize, name: &str, msg: Msg) -> bool {
        let lost = self.loss > 0 && self.rng.chance(self.loss);
        if !self.reachable(i, to) || lost {
            self.log(|| format!("link n{i} -> {name} dropped while sending"));
            self.drop_link(i, to);
            return false;
        }
        let lat = self.latency();
        let Some(link) = self.nodes[i].links.get_mut(name) else {
            return false;
        };
        let at = (self.now + lat).max(link.fifo_at);
        link.fifo_at = at;
        let conn = link.conn;
        self.at(
            at,
            Event::Frame {
                from: i,
                to,
                conn,
                msg,
            },
        );
        true
    }

    /// The connection breaks: frames in flight are lost, the dialer backs off.
    fn drop_link(&mut self, from: usize, to: usize) {
        let now = self.now;
        let name = self.nodes[to].name.to_string();
        let Some(link) = self.nodes[from].links.get_mut(&name) else {
            return;
        };
        if matches!(link.phase, Phase::Up { .. }) {
            link.backoff = BACKOFF_MIN;
        }
        self.conns += 1;
        link.conn = self.conns;
        link.phase = Phase::Down {
            retry_at: now + link.backoff,
        };
        link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
    }

    fn cut_partitioned(&mut self) {
        let n = self.nodes.len();
        for from in 0..n {
            for to in 0..n {
                if self.group[from] != self.group[to] {
                    self.drop_link(from, to);
                }
            }
        }
    }

    /// The dialer's link, if `conn` is still its current connection.
    fn current(&mut self, from: usize, to: usize, conn: u64) -> Option<&mut OutLink> {
        let name = self.nodes[to].name.to_string();
        self.nodes[from]
            .links
            .get_mut(&name)
            .filter(|l| l.conn == conn)
    }

    fn on_dial(&mut self, from: usize, to: usize, conn: u64) {
        let meant_for = match self.current(from, to, conn) {
            Some(link) => link.peer.clone(),
            None => return,
        };
        // The listener refuses a link meant for another generation of it.
        if !self.reachable(from, to) || self.nodes[to].origin != meant_for {
            self.drop_link(from, to);
            return;
        }
        let dialer = self.nodes[from].origin.clone();
        let at = self.nodes[to].since_start(self.now);
        let have = self.nodes[to].node.on_have(dialer, at);
        let lat = self.latency();
        self.at(
            self.now + lat,
            Event::Welcome {
                from,
                to,
                conn,
                have,
            },
        );
        self.turn(to);
    }

    fn on_welcome(&mut self, from: usize, to: usize, conn: u64, have: u64) {
        let reachable = self.reachable(from, to);
        let Some(link) = self.current(from, to, conn) else {
            return;
        };
        if !reachable {
            self.drop_link(from, to);
            return;
        }
        link.phase = Phase::Up { cursor: have + 1 };
        link.backoff = BACKOFF_MIN;
        link.last_wm_at = 0;
        self.log(|| format!("link n{from} -> n{to} up, resuming after {have}"));
        self.turn_or_pump(from);
    }

    fn on_frame(&mut self, from: usize, to: usize, conn: u64, msg: Msg) {
        if self.current(from, to, conn).is_none() || !self.nodes[to].alive {
            return;
        }
        let sender = self.nodes[from].origin.clone();
        if let Msg::Ack { origin, hwm } = &msg {
            self.acks.push((sender.clone(), origin.clone(), *hwm));
        }
        let n = &mut self.nodes[to];
        let at = n.since_start(self.now);
        n.node.on_msg(sender, msg, at);
        self.turn(to);
    }

    // ------------------------------------------------------------ faults

    fn crash(&mut self, i: usize) {
        self.log(|| format!("crash n{i}"));
        self.nodes[i].alive = false;
        self.nodes[i].links.clear();
        for from in 0..self.nodes.len() {
            self.drop_link(from, i);
        }
    }

    /// Back with a new generation and nothing but its name.
    fn restart(&mut self, i: usize) {
        let old = &self.nodes[i];
        let (name, generation, skew) = (old.name.clone(), old.origin.generation + 1, old.skew);
        self.log(|| format!("restart n{i} as generation {generation}"));
        self.nodes[i] = SimNode::new(&name, generation, self.now, skew);
        self.heard[i].fill(None);
        self.stalled_until[i] = 0;
    }

    // ------------------------------------------------------------ checks

    /// Every invariant the cluster promises, after the run; the first
    /// violation found, if any.
    pub fn check(&self) -> Result<(), String> {
        let live: Vec<&SimNode> = self.nodes.iter().filter(|n| n.alive).collect();
        for n in &live {
            check_node(n, self.knobs)?;
        }
        let first = live.first().ok_or("no node is alive")?;
        let vector = first.node.sequencer().vector();
        for n in &live {
            let theirs = n.node.sequencer().vector();
            if theirs != vector {
                return Err(format!(
                    "vectors differ: {} has {theirs:?}, {} has {vector:?}",
                    n.origin, first.origin
                ));
            }
        }
        self.check_acks(&live, &vector)?;
        for n in &live {
            let mine = vector.get(&n.origin).copied().unwrap_or(0);
            if mine != n.log.len() as u64 {
                return Err(format!(
                    "{} published {} updates, the cluster holds {mine}",
                    n.origin,
                    n.log.len()
                ));
            }
        }
        Ok(())
    }
}

impl Sim {
    /// An acknowledged update is held by the peer that acknowledged it: while
    /// that peer is alive, the cluster keeps it even if its origin crashed.
    fn check_acks(&self, live: &[&SimNode], vector: &BTreeMap<Origin, u64>) -> Result<(), String> {
        for (acker, origin, hwm) in &self.acks {
            let held = vector.get(origin).copied().unwrap_or(0);
            if live.iter().any(|n| n.origin == *acker) && held < *hwm {
                return Err(format!(
                    "{acker} acknowledged {origin} up to {hwm}, the cluster holds {held}"
                ));
            }
        }
        Ok(())
    }
}

/// Invariants of one live node: it joined, delivered exactly what its vector
/// says it holds (nothing lost, nothing twice, each origin in order),
/// gossips that vector, and delivered the healthy phase in the total order.
fn check_node(n: &SimNode, knobs: Knobs) -> Result<(), String> {
    let me = &n.origin;
    if !n.node.has_joined() {
        return Err(format!("{me} never joined"));
    }
    let seq = n.node.sequencer();
    let stats = seq.stats();
    if stats.lost > 0 || seq.waiting() > 0 {
        return Err(format!(
            "{me}: {} lost, {} still waiting",
            stats.lost,
            seq.waiting()
        ));
    }
    let vector = seq.vector();
    if n.gossiped != vector {
        return Err(format!(
            "{me} gossips {:?} but holds {vector:?}",
            n.gossiped
        ));
    }
    let mut next: BTreeMap<&Origin, u64> = BTreeMap::new();
    for u in &n.delivered {
        let expected = next.entry(&u.stamp.origin).or_insert(1);
        if u.stamp.seq != *expected {
            return Err(format!(
                "{me} delivered {}/{} where {expected} was next (duplicate, gap or reorder)",
                u.stamp.origin, u.stamp.seq
            ));
        }
        *expected += 1;
    }
    for (origin, hwm) in &vector {
        let delivered = next.get(origin).map_or(0, |n| n - 1);
        if delivered != *hwm {
            return Err(format!(
                "{me} holds {origin} up to {hwm} but delivered {delivered}"
            ));
        }
    }
    check_healthy_order(n, knobs)
}

/// Updates published while the cluster was healthy (throughout, in a run
/// without faults) come out in stamp order.
fn check_healthy_order(n: &SimNode, knobs: Knobs) -> Result<(), String> {
    let healthy: Vec<&Arc<Stamped>> = n
        .delivered
        .iter()
        .filter(|u| {
            knobs.orderly()
                || u.update
                    .data
                    .parse::<Ms>()
                    .is_ok_and(|at| HEALTHY.contains(&at))
        })
        .collect();
    for pair in healthy.windows(2) {
        if pair[0].stamp.key() > pair[1].stamp.key() {
            return Err(format!(
                "{} delivered {} before {} {} (order {:?} > {:?})",
                n.origin,
                pair[0].update.id,
                pair[1].update.id,
                if knobs.orderly() {
                    "in a run without faults"
                } else {
                    "in a healthy period"
                },
                pair[0].stamp.key(),
                pair[1].stamp.key()
            ));
        }
    }
    Ok(())
}

/// Runs one seed; on a violation, the error names the seed and how to replay it.
pub fn run_seed(seed: u64, knobs: Knobs, trace: bool) -> Result<(), String> {
    let mut sim = Sim::new(seed, knobs, trace);
    sim.run();
    let result = sim.check();
    if let Some(lines) = &sim.trace {
        for line in lines {
            println!("{line}");
        }
        for n in sim.nodes.iter().filter(|n| n.alive) {
            let (seq, node) = (n.node.sequencer().stats(), n.node.stats());
            println!("{}: {seq:?} {node:?}", n.origin);
        }
    }
    let filter = knobs.test_name();
    result.map_err(|e| {
        format!("SIM_SEED={seed} failed: {e}\n  replay: SIM_SEED={seed} cargo nextest run -p hubbub-cluster sim::tests::{filter} --no-capture")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<u64> {
        std::env::var(name).ok()?.parse().ok()
    }

    /// The seeds of shard `shard` of 4 (`SIM_SEED` runs that one only, in shard 0).
    fn seeds(shard: u64, default_total: u64) -> Vec<u64> {
        if let Some(seed) = env("SIM_SEED") {
            return if shard == 0 { vec![seed] } else { vec![] };
        }
        let total = env("SIM_SEEDS").unwrap_or(default_total);
        (0..total).filter(|s| s % 4 == shard).collect()
    }

    fn run_shard(shard: u64, knobs: Knobs, default_total: u64) {
        let trace = env("SIM_SEED").is_some();
        let failures: Vec<String> = seeds(shard, default_total)
            .into_iter()
            .filter_map(|seed| run_seed(seed, knobs, trace).err())
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn faults_shard_0() {
        run_shard(0, Knobs::default(), 200);
    }

    #[test]
    fn faults_shard_1() {
        run_shard(1, Knobs::default(), 200);
    }

    #[test]
    fn faults_shard_2() {
        run_shard(2, Knobs::default(), 200);
    }

    #[test]
    fn faults_shard_3() {
        run_shard(3, Knobs::default(), 200);
    }

    #[test]
    fn calm_clusters_keep_one_order() {
        let knobs = Knobs {
            calm: true,
            ..Knobs::default()
        };
        for shard in 0..4 {
            run_shard(shard, knobs, 40);
        }
    }

    /// Gossip declaring live peers dead (as chitchat does under load) while
    /// their links talk bends no order: a dropped peer is waited for until
    /// its link is silent too.
    #[test]
    fn gossip_hiccups_keep_one_order() {
        let knobs = Knobs {
            calm: true,
            gossip_hiccups: true,
            ..Knobs::default()
        };
        for shard in 0..4 {
            run_shard(shard, knobs, 40);
        }
    }

    /// A node whose task froze does not take its own stall for its peers'
    /// silence: what they sent meanwhile is still ordered in.
    #[test]
    fn stalled_nodes_keep_one_order() {
        let knobs = Knobs {
            calm: true,
            stalls: true,
            ..Knobs::default()
        };
        for shard in 0..4 {
            run_shard(shard, knobs, 40);
        }
    }

    #[test]
    fn a_seed_replays_exactly() {
        let trace = |seed| {
            let mut sim = Sim::new(seed, Knobs::default(), true);
            sim.run();
            let delivered: Vec<Vec<String>> = sim
                .nodes
                .iter()
                .map(|n| n.delivered.iter().map(|u| u.update.id.clone()).collect())
                .collect();
            (sim.trace, delivered)
        };
        let first = trace(7);
        assert_eq!(first, trace(7));
        assert_ne!(first.1, trace(8).1, "another seed, another run");
    }
}

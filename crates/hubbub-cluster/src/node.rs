//! The decisions of one cluster node, with no I/O and no clock of its own (the
//! way [`Sequencer`] is): whom to pull from, when the start-up hold ends, which
//! departed origins to retire, how far the delivery order may be released, what
//! to answer a peer, which links to keep. The async engine (`engine.rs`) feeds
//! it events with the time they happened and carries out the [`Action`]s it
//! queues; the deterministic simulator (`sim.rs`) does the same over a
//! simulated network. Keeping the two on one state machine is what lets the
//! simulator test the engine's behaviour rather than a copy of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::membership::{Member, hwm_key};
use crate::sequencer::{Accepted, Sequencer};
use crate::stamp::{Hlc, Origin, Stamped};
use crate::wire::Msg;

/// Most updates sent in answer to one pull; the asker pulls again for the rest.
const PULL_MAX: usize = 1000;
/// A pull unanswered this long may be sent again (to the best source then).
const PULL_RETRY: Duration = Duration::from_secs(1);
/// A departed generation quiet this long (and replicated everywhere) leaves the vector.
const RETIRE_AFTER: Duration = Duration::from_secs(600);

/// How often the node looks again, and how long it waits for others.
#[derive(Debug, Clone)]
pub struct Timing {
    pub tick: Duration,
    pub anti_entropy: Duration,
    pub order_wait: Duration,
    pub join_timeout: Duration,
}

/// What leaves the engine, in order.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The next update in the delivery order.
    Update(Arc<Stamped>),
    /// Every update stamped at or below this clock value that this node will
    /// deliver in order has been handed over before this marker.
    Through(u64),
}

/// What the node asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue `msg` on our outbound link to `to` (dropped when there is none).
    Send { to: String, msg: Msg },
    /// Keep an outbound link to `peer` (node id `node`) at `addr` up.
    Open {
        node: String,
        peer: Origin,
        addr: String,
    },
    /// Close our outbound link to `node`.
    Close { node: String },
    /// A peer's update carried this stamp: our clock must move past it.
    Observe(u64),
    /// A peer confirmed it holds our own updates up to this seq.
    Acked(u64),
    /// The start-up hold ended: the node serves from now on.
    Joined,
}

/// One live member as this node tracks it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub member: Member,
    /// Our outbound link to it is up (the peer proved the cluster secret).
    pub linked: bool,
    pub watermark: u64,
    /// When its last watermark reached us (time since the node started).
    pub last_heard: Option<Duration>,
}

impl Peer {
    fn has_link(&self) -> bool {
        self.member.relay_addr.is_some()
    }
}

/// Counters of the node's own doing (the sequencer keeps the rest).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    /// Updates that arrived through anti-entropy rather than from their origin.
    pub repaired: u64,
    pub pulls_sent: u64,
}

/// The I/O-free node. Times are durations since it started.
#[derive(Debug)]
pub struct Node {
    me: Origin,
    seq: Sequencer,
    timing: Timing,
    peers: BTreeMap<String, Peer>,
    /// Peers gossip no longer lists that were heard on their relay link within
    /// `order_wait`: still waited for in the bound (and their outbound link
    /// kept) until that link has been silent for `order_wait` too
    /// (`forget_silent`). Gossip's failure detector misfires under load; a
    /// peer dropped at once let us release past updates still on its way.
    dropped: BTreeMap<String, Peer>,
    /// When `release` last ran: a longer gap than `stall_allowance` is our own
    /// stall, not our peers' silence (see `discount_stall`).
    last_turn: Option<Duration>,
    /// Pulls in flight per origin, with when they were sent.
    pulls: HashMap<Origin, Duration>,
    /// The vector as last handed to gossip.
    gossiped: BTreeMap<Origin, u64>,
    /// Origins whose own updates reached us directly since we last told them
    /// how much of them we hold (sent once per turn of the loop: coalesced).
    acks_owed: BTreeSet<Origin>,
    stats: NodeStats,
    /// The last `Delivery::Through` handed out.
    marked: u64,
    joined: bool,
    actions: Vec<Action>,
}

impl Node {
    pub fn new(me: Origin, seq: Sequencer, timing: Timing) -> Self {
        Self {
            me,
            seq,
            timing,
            peers: BTreeMap::new(),
            dropped: BTreeMap::new(),
            last_turn: None,
            pulls: HashMap::new(),
            gossiped: BTreeMap::new(),
            acks_owed: BTreeSet::new(),
            stats: NodeStats::default(),
            marked: 0,
            joined: false,
            actions: Vec::new(),
        }
    }

    /// The actions queued since the last call, in the order they were decided.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.seq
    }

    pub fn peers(&self) -> &BTreeMap<String, Peer> {
        &self.peers
    }

    /// Peers gossip dropped that the bound still waits for (see `dropped`).
    #[cfg(test)]
    pub fn dropped(&self) -> &BTreeMap<String, Peer> {
        &self.dropped
    }

    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// The engine learns this from `Action::Joined`; tests ask.
    #[cfg(test)]
    pub fn has_joined(&self) -> bool {
        self.joined
    }

    /// Whether time alone can change a decision: updates are held or waiting.
    pub fn needs_ticks(&self) -> bool {
        self.seq.is_holding() || self.seq.waiting() > 0
    }

    /// One of our own updates, handed over as it was stamped.
    pub fn on_own(&mut self, update: Arc<Stamped>) {
        self.seq.accept(update);
    }

    /// The state of our outbound link to `node` (read by the shell from the link).
    pub fn set_linked(&mut self, node: &str, up: bool) {
        if let Some(peer) = self.peers.get_mut(node) {
            peer.linked = up;
        }
    }

    /// A peer's link to us came up: how much of its origin do we hold? Its
    /// link now streams its log from there, so pulling the same range from
    /// anyone would fetch it twice (typically right after a heal): it counts
    /// as a pull in flight.
    pub fn on_have(&mut self, origin: Origin, now: Duration) -> u64 {
        let have = self.seq.hwm(&origin);
        self.pulls.insert(origin, now);
        have
    }

    /// A verified message on `from`'s link to us.
    pub fn on_msg(&mut self, from: Origin, msg: Msg, now: Duration) {
        match msg {
            Msg::Update(update) => self.on_update(from, update),
            Msg::Watermark(hlc) => {
                let node = &*from.node;
                let peer = [self.peers.get_mut(node), self.dropped.get_mut(node)]
                    .into_iter()
                    .flatten()
                    .find(|p| p.member.origin == from);
                if let Some(peer) = peer {
                    peer.watermark = peer.watermark.max(hlc);
                    peer.last_heard = Some(now);
                }
            }
            Msg::Pull {
                origin,
                from: first,
                to,
            } => self.answer_pull(&from, origin, first, to),
            Msg::PullEnd { origin, first, .. } => self.on_pull_end(&from, origin, first),
            Msg::Ack { origin, hwm } => {
                if origin == self.me {
                    self.actions.push(Action::Acked(hwm));
                }
            }
        }
    }

    fn on_update(&mut self, from: Origin, update: Arc<Stamped>) {
        self.actions.push(Action::Observe(update.stamp.hlc));
        let relayed = update.stamp.origin != from;
        if !relayed {
            self.acks_owed.insert(from);
        }
        if !matches!(self.seq.accept(update), Accepted::Duplicate) && relayed {
            self.stats.repaired += 1;
        }
    }

    /// The end of a pull answer (or of a link's gap): if the source no longer
    /// retains what we miss, the gap is given up once every source said so.
    fn on_pull_end(&mut self, from: &Origin, origin: Origin, first: u64) {
        self.pulls.remove(&origin);
        let mine = self.seq.hwm(&origin);
        if first <= mine + 1 {
            return;
        }
        let mut sources = self.sources(&origin, mine);
        if sources.is_empty() {
            sources.push(from.node.clone());
        }
        let skipped = self
            .seq
            .report_gone(&origin, from.node.clone(), first, &sources);
        if skipped > 0 && !self.seq.is_holding() {
            tracing::error!(%origin, skipped, "updates lost: no peer retains them any more");
        }
    }

    /// Linked peers that claim more of `origin` than we hold. Gossip is not
    /// authenticated: a claim counts only from a peer that proved the secret
    /// on its link, or a member without it could keep a gap open forever.
    fn sources(&self, origin: &Origin, mine: u64) -> Vec<Arc<str>> {
        self.peers
            .values()
            .filter(|p| p.linked)
            .filter(|p| p.member.vector.get(origin).is_some_and(|h| *h > mine))
            .map(|p| p.member.origin.node.clone())
            .collect()
    }

    fn answer_pull(&mut self, asker: &Origin, origin: Origin, from: u64, to: u64) {
        let node = asker.node.to_string();
        if !self.peers.get(&node).is_some_and(Peer::has_link) {
            return;
        }
        let (items, first) = self.seq.range(&origin, from, to, PULL_MAX);
        for item in items {
            self.send(&node, Msg::Update(item));
        }
        self.send(
            &node,
            Msg::PullEnd {
                origin,
                from,
                first,
            },
        );
    }

    fn send(&mut self, to: &str, msg: Msg) {
        self.actions.push(Action::Send {
            to: to.to_owned(),
            msg,
        });
    }

    /// Gossip's list of live members changed: links follow it. A member gossip
    /// dropped that we heard from lately moves to `dropped`, its link kept:
    /// gossip under load declares live peers dead, and the bound must keep
    /// waiting for a peer whose link still talks (see `forget_silent`).
    pub fn on_members(&mut self, members: BTreeMap<String, Member>) {
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(node, p)| {
                members
                    .get(*node)
                    .is_none_or(|m| m.origin != p.member.origin)
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in gone {
            if let Some(peer) = self.peers.remove(&node) {
                tracing::warn!(peer = %peer.member.origin, "cluster member left or was declared dead");
                if peer.last_heard.is_some() && peer.watermark < u64::MAX {
                    // Waited for until its link is silent for order_wait; its
                    // link stays up unless a new generation takes it over
                    // (`join` below closes it then).
                    self.dropped.insert(node, peer);
                } else if peer.has_link() {
                    self.actions.push(Action::Close { node });
                }
            }
        }
        for (node, member) in members {
            match self.peers.get_mut(&node) {
                Some(peer) if peer.member.relay_addr == member.relay_addr => peer.member = member,
                _ => self.join(node, member),
            }
        }
    }

    /// Forgets dropped peers (gossip no longer lists them) whose relay link has
    /// been silent for `order_wait` too: only then does the bound stop
    /// waiting for them, and their link closes.
    fn forget_silent(&mut self, now: Duration) {
        let order_wait = self.timing.order_wait;
        let silent: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, p)| !heard_within(p, now, order_wait))
            .map(|(node, _)| node.clone())
            .collect();
        for node in silent {
            let Some(peer) = self.dropped.remove(&node) else {
                continue;
            };
            tracing::info!(peer = %peer.member.origin, "a dropped member's link is silent too: no longer waited for");
            if peer.has_link() && !self.peers.contains_key(&node) {
                self.actions.push(Action::Close { node });
            }
        }
    }

    /// How long a turn of the engine may take to come round again: it turns on
    /// every event and at least every anti-entropy round (and every tick
    /// while updates wait).
    fn stall_allowance(&self) -> Duration {
        2 * self.timing.tick.max(self.timing.anti_entropy)
    }

    /// A gap between two turns longer than `stall_allowance` is our own stall
    /// (CPU starvation, the process descheduled): what peers sent meanwhile
    /// waits unread in our queues, so the gap's excess is not their silence.
    /// Every peer's last-heard time moves forward by that excess (never past
    /// `now`), so a stall alone never makes us stop waiting for a peer.
    fn discount_stall(&mut self, now: Duration) {
        let last = self.last_turn.replace(now);
        let Some(gap) = last.map(|t| now.saturating_sub(t)) else {
            return;
        };
        let Some(excess) = gap
            .checked_sub(self.stall_allowance())
            .filter(|e| !e.is_zero())
        else {
            return;
        };
        tracing::warn!(
            stalled_ms = excess.as_millis() as u64,
            "the cluster engine stalled: not counted as peers' silence"
        );
        for peer in self.peers.values_mut().chain(self.dropped.values_mut()) {
            if let Some(t) = &mut peer.last_heard {
                *t = (*t + excess).min(now);
            }
        }
    }

    /// A member we did not know (or whose relay address changed): a fresh link.
    fn join(&mut self, node: String, member: Member) {
        // Gossip lists a dropped peer again (a hiccup): what we heard of it
        // still counts, and its link, never closed, is kept if it still
        // leads there.
        let back = match self.dropped.get(&node) {
            Some(p) if p.member.origin == member.origin => self.dropped.remove(&node),
            _ => None,
        };
        if let Some(back) = &back
            && back.member.relay_addr == member.relay_addr
            && !self.peers.contains_key(&node)
        {
            tracing::info!(peer = %member.origin, "cluster member is back");
            let peer = Peer {
                member,
                ..back.clone()
            };
            self.peers.insert(node, peer);
            return;
        }
        if self.peers.remove(&node).is_some_and(|p| p.has_link())
            || self.dropped.get(&node).is_some_and(Peer::has_link)
            || back.as_ref().is_some_and(Peer::has_link)
        {
            self.actions.push(Action::Close { node: node.clone() });
        }
        tracing::info!(peer = %member.origin, relay = member.relay_addr.as_deref().unwrap_or("-"), "cluster member joined");
        if let Some(addr) = member.relay_addr.clone() {
            self.actions.push(Action::Open {
                node: node.clone(),
                peer: member.origin.clone(),
                addr,
            });
        }
        let peer = Peer {
            member,
            linked: false,
            watermark: back.as_ref().map_or(0, |p| p.watermark),
            last_heard: back.and_then(|p| p.last_heard),
        };
        self.peers.insert(node, peer);
    }

    /// The stamp up to which we (`own_watermark`) and every peer we still wait
    /// for (heard within `order_wait`, gossip listing it or not) have spoken.
    /// The caller reads its own watermark before handing over its queued own
    /// updates (`on_own`): stamping hands over under the clock's lock, so
    /// nothing at or below it is missed.
    pub fn bound(&self, now: Duration, own_watermark: u64) -> u64 {
        self.peers
            .values()
            .chain(self.dropped.values())
            .filter(|p| heard_within(p, now, self.timing.order_wait))
            .map(|p| p.watermark)
            .fold(own_watermark, u64::min)
    }

    /// What may go to the hub now, in order, ending with a `Through` marker
    /// when the settled part of the order moved. Every turn of the engine
    /// calls it, so it also tells our own stalls from peers' silence.
    pub fn release(&mut self, now: Duration, own_watermark: u64) -> Vec<Delivery> {
        self.discount_stall(now);
        self.forget_silent(now);
        let bound = self.bound(now, own_watermark);
        let late_before = self.seq.stats().late;
        let mut out: Vec<Delivery> = self
            .seq
            .release(bound)
            .into_iter()
            .map(Delivery::Update)
            .collect();
        let late = self.seq.stats().late - late_before;
        if late > 0 {
            tracing::warn!(
                late,
                "updates delivered after later ones (a fault bent the order; none lost)"
            );
        }
        // Tell the hub side how far the order is settled (resumes wait on it).
        if bound > self.marked && !self.seq.is_holding() {
            self.marked = bound;
            out.push(Delivery::Through(bound));
        }
        out
    }

    /// Tells each origin that asked for it (gossip `wants_acks`) how much of
    /// it we now hold, on our link to it.
    pub fn send_acks(&mut self) {
        for origin in std::mem::take(&mut self.acks_owed) {
            let Some(peer) = self.peers.get(&*origin.node) else {
                continue;
            };
            if peer.member.origin != origin || !peer.member.wants_acks || !peer.has_link() {
                continue;
            }
            let hwm = self.seq.hwm(&origin);
            let node = origin.node.to_string();
            self.send(&node, Msg::Ack { origin, hwm });
        }
    }

    /// One anti-entropy round: pull what linked peers claim beyond what we
    /// hold, end the start-up hold when caught up, retire departed origins.
    /// `wall` is the wall clock as a stamp (`Hlc::wall`).
    pub fn anti_entropy(&mut self, now: Duration, wall: u64) {
        self.pulls
            .retain(|_, sent| now.saturating_sub(*sent) < PULL_RETRY);
        for (origin, (target, node)) in self.pull_targets() {
            let mine = self.seq.hwm(&origin);
            if origin == self.me || target <= mine || self.pulls.contains_key(&origin) {
                continue;
            }
            if !self.peers.get(&node).is_some_and(Peer::has_link) {
                continue;
            }
            let pull = Msg::Pull {
                origin: origin.clone(),
                from: mine + 1,
                to: target,
            };
            self.send(&node, pull);
            self.pulls.insert(origin, now);
            self.stats.pulls_sent += 1;
        }
        self.bootstrap(now);
        self.retire_origins(wall);
    }

    /// The highest claim per origin, and the peer to pull from: preferably
    /// one that has not already said it no longer retains our gap. Asking the
    /// same peer forever would stall the origin for good when another peer
    /// could settle the gap (fill it, or agree it is gone, which lets
    /// `report_gone` count it as lost). Only linked peers (see `sources`): an
    /// unauthenticated gossip member must not steer our pulls toward itself.
    fn pull_targets(&self) -> BTreeMap<Origin, (u64, String)> {
        let mut best: BTreeMap<Origin, (bool, u64, String)> = BTreeMap::new();
        for (node, peer) in self.peers.iter().filter(|(_, p)| p.linked) {
            for (origin, hwm) in &peer.member.vector {
                let fresh = !self.seq.said_gone(origin, node);
                if best
                    .get(origin)
                    .is_none_or(|(f, h, _)| (fresh, *hwm) > (*f, *h))
                {
                    best.insert(origin.clone(), (fresh, *hwm, node.clone()));
                }
            }
        }
        best.into_iter()
            .map(|(o, (_, hwm, node))| (o, (hwm, node)))
            .collect()
    }

    /// At start-up, hold releases until we hold what the members we can reach
    /// hold, so our history starts in the cluster's order. Only peers whose
    /// relay link is up (they proved the cluster secret) count: a node that
    /// gossips but cannot be linked (wrong secret, firewalled) must not keep us
    /// waiting for updates nobody can give us.
    fn bootstrap(&mut self, elapsed: Duration) {
        if !self.seq.is_holding() {
            return;
        }
        let join = self.timing.join_timeout;
        let linked: Vec<&Peer> = self.peers.values().filter(|p| p.linked).collect();
        let unlinked_ready = self.peers.values().any(|p| p.member.ready && !p.linked);
        let decided = if self.peers.is_empty() {
            elapsed >= join
        } else {
            !linked.is_empty() && (!unlinked_ready || elapsed >= join * 2)
        };
        let caught_up = decided
            && linked.iter().all(|p| {
                p.member
                    .vector
                    .iter()
                    .all(|(o, h)| *o == self.me || self.seq.hwm(o) >= *h)
            });
        let timed_out = elapsed >= join * 10;
        if caught_up || timed_out {
            if !caught_up {
                tracing::warn!("cluster catch-up timed out; serving with what we have");
            }
            tracing::info!(linked = linked.len(), "cluster node ready");
            self.seq.stop_holding();
            self.joined = true;
            self.actions.push(Action::Joined);
        }
    }

    /// Forgets origins of generations that are gone, fully replicated and quiet
    /// for a long time, so vectors and gossip do not grow with every restart.
    /// Their last seq is remembered, so a straggler copy is still a duplicate.
    fn retire_origins(&mut self, wall: u64) {
        let wall = Hlc::millis(wall);
        let quiet_ms = RETIRE_AFTER.as_millis() as u64;
        let retire: Vec<Origin> = self
            .seq
            .vector()
            .into_iter()
            .filter(|(o, h)| {
                *o != self.me
                    && !self.peers.values().any(|p| p.member.origin == *o)
                    && self
                        .seq
                        .last_hlc(o)
                        .is_some_and(|t| wall.saturating_sub(Hlc::millis(t)) > quiet_ms)
                    && self
                        .peers
                        .values()
                        .all(|p| p.member.vector.get(o).is_none_or(|ph| ph <= h))
            })
            .map(|(o, _)| o)
            .collect();
        for origin in retire {
            tracing::info!(%origin, "retiring a departed generation from the version vector");
            self.seq.retire(&origin);
        }
    }

    /// The gossip keys of our vector that changed since the last call, and
    /// those to delete (retired origins).
    pub fn gossip_changes(&mut self) -> (Vec<(String, String)>, Vec<String>) {
        let vector = self.seq.vector();
        let keys = vector
            .iter()
            .filter(|(o, h)| self.gossiped.get(*o) != Some(h))
            .map(|(o, h)| (hwm_key(o), h.to_string()))
            .collect();
        let remove = self
            .gossiped
            .keys()
            .filter(|o| !vector.contains_key(*o))
            .map(hwm_key)
            .collect();
        self.gossiped = vector;
        (keys, remove)
    }
}

/// Whether `peer`'s last watermark reached us within `window` of `now`.
fn heard_within(peer: &Peer, now: Duration, window: Duration) -> bool {
    peer.last_heard
        .is_some_and(|t| now.saturating_sub(t) < window)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::sequencer::SequencerLimits;

    const MS: Duration = Duration::from_millis(1);

    fn node(holding: bool) -> Node {
        let timing = Timing {
            tick: MS,
            anti_entropy: 100 * MS,
            order_wait: 500 * MS,
            join_timeout: 500 * MS,
        };
        let seq = Sequencer::new(SequencerLimits::default(), holding);
        Node::new(Origin::new("me", 1), seq, timing)
    }

    fn member(name: &str, vector: &[(&str, u64)]) -> Member {
        Member {
            origin: Origin::new(name, 1),
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_addr: Some(format!("{name}:1")),
            http_addr: None,
            ready: true,
            leaving: false,
            wants_acks: false,
            subscribers: 0,
            app: BTreeMap::new(),
            vector: vector
                .iter()
                .map(|(o, h)| (Origin::new(*o, 1), *h))
                .collect(),
        }
    }

    fn members(list: &[Member]) -> BTreeMap<String, Member> {
        list.iter()
            .map(|m| (m.origin.node.to_string(), m.clone()))
            .collect()
    }

    fn update(node: &str, seq: u64, hlc: u64) -> Arc<Stamped> {
        crate::stamp::stamped(node, seq, hlc)
    }

    fn released(out: &[Delivery]) -> Vec<String> {
        out.iter()
            .filter_map(|d| match d {
                Delivery::Update(u) => Some(u.update.id.clone()),
                Delivery::Through(_) => None,
            })
            .collect()
    }

    #[test]
    fn members_open_and_close_links() {
        let mut n = node(false);
        n.on_members(members(&[member("a", &[]), member("b", &[])]));
        let opened: Vec<_> = n
            .take_actions()
            .into_iter()
            .filter(|a| matches!(a, Action::Open { .. }))
            .collect();
        assert_eq!(opened.len(), 2);
        let mut restarted = member("a", &[]);
        restarted.origin.generation = 2;
        n.on_members(members(&[restarted]));
        let actions = n.take_actions();
        assert!(actions.contains(&Action::Close { node: "a".into() }));
        assert!(actions.contains(&Action::Close { node: "b".into() }));
        assert!(
            matches!(actions.last(), Some(Action::Open { peer, .. }) if peer.generation == 2),
            "the new generation gets a fresh link: {actions:?}"
        );
    }

    #[test]
    fn the_bound_waits_for_heard_peers_only_within_order_wait() {
        let mut n = node(false);
        n.on_members(members(&[member("a", &[])]));
        n.on_own(update("me", 1, 50));
        assert_eq!(
            released(&n.release(Duration::ZERO, 100)),
            ["me-1"],
            "a peer never heard is not waited for"
        );
        n.on_own(update("me", 2, 80));
        n.on_msg(Origin::new("a", 1), Msg::Watermark(60), 10 * MS);
        assert!(
            released(&n.release(20 * MS, 100)).is_empty(),
            "a's watermark is behind"
        );
        n.on_msg(Origin::new("a", 1), Msg::Watermark(80), 30 * MS);
        assert_eq!(released(&n.release(40 * MS, 100)), ["me-2"]);
        n.on_own(update("me", 3, 90));
        assert!(turns(&mut n, 100 * MS..=500 * MS, 100).is_empty());
        assert_eq!(
            released(&n.release(530 * MS, 100)),
            ["me-3"],
            "a fell silent for order_wait"
        );
        n.on_msg(Origin::new("b", 1), Msg::Watermark(1), 540 * MS);
        assert_eq!(
            n.bound(540 * MS, 100),
            100,
            "strangers' watermarks do not count"
        );
    }

    /// Turns of the engine every anti-entropy round (100 ms) over `times`:
    /// what they released.
    fn turns(n: &mut Node, times: std::ops::RangeInclusive<Duration>, own: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = *times.start();
        while at <= *times.end() {
            out.extend(released(&n.release(at, own)));
            at += 100 * MS;
        }
        out
    }

    #[test]
    fn a_peer_gossip_drops_is_waited_for_while_its_link_talks() {
        let mut n = node(false);
        n.on_members(members(&[member("a", &[])]));
        n.take_actions();
        let a = Origin::new("a", 1);
        n.on_msg(a.clone(), Msg::Watermark(60), 10 * MS);
        n.on_own(update("me", 1, 80));
        assert!(released(&n.release(20 * MS, 100)).is_empty());

        // Gossip (under load) declares a dead, but its link goes on talking.
        n.on_members(BTreeMap::new());
        assert!(
            turns(&mut n, 100 * MS..=400 * MS, 100).is_empty(),
            "a was heard within order_wait: still waited for"
        );
        assert!(
            n.take_actions().is_empty(),
            "the link to a stays up while a may still be alive"
        );
        n.on_msg(a.clone(), Msg::Watermark(70), 400 * MS);
        // An update of a's stamped before our own one, still on its way
        // when gossip dropped a: it must come out first.
        n.on_msg(a.clone(), Msg::Update(update("a", 1, 75)), 700 * MS);
        assert!(turns(&mut n, 500 * MS..=800 * MS, 100).is_empty());
        n.on_msg(a.clone(), Msg::Watermark(90), 850 * MS);
        assert_eq!(
            released(&n.release(860 * MS, 100)),
            ["a-1", "me-1"],
            "one order: a's earlier update first"
        );

        // Gossip lists a again: same peer, same link, what we heard counts.
        n.take_actions();
        n.on_members(members(&[member("a", &[])]));
        assert!(n.take_actions().is_empty(), "no new link");
        assert_eq!(n.peers()["a"].watermark, 90);
        assert!(n.dropped().is_empty());

        // Dropped again, and now silent on its link too: forgotten after
        // order_wait, and only then is its link closed.
        n.on_members(BTreeMap::new());
        n.on_own(update("me", 2, 95));
        assert!(turns(&mut n, 900 * MS..=1300 * MS, 100).is_empty());
        assert!(n.take_actions().is_empty());
        assert_eq!(released(&n.release(1350 * MS, 100)), ["me-2"]);
        assert!(n.dropped().is_empty());
        assert_eq!(n.take_actions(), [Action::Close { node: "a".into() }]);
    }

    #[test]
    fn our_own_stall_is_no_silence_of_our_peers() {
        let mut n = node(false);
        n.on_members(members(&[member("a", &[]), member("b", &[])]));
        let (a, b) = (Origin::new("a", 1), Origin::new("b", 1));
        n.on_msg(a.clone(), Msg::Watermark(60), 10 * MS);
        n.on_msg(b.clone(), Msg::Watermark(60), 10 * MS);
        n.on_own(update("me", 1, 80));
        assert!(released(&n.release(20 * MS, 100)).is_empty());
        // Our task is descheduled for 1.5 s. Meanwhile a sent an update
        // stamped before ours and watermarks, all still unread in our queue;
        // the first thing we do on waking is a turn.
        assert!(
            released(&n.release(1520 * MS, 100)).is_empty(),
            "a and b look silent for 1.5 s, but that was our stall"
        );
        // Then the queue: a's update, then both watermarks.
        n.on_msg(a.clone(), Msg::Update(update("a", 1, 70)), 1521 * MS);
        assert!(released(&n.release(1521 * MS, 100)).is_empty());
        n.on_msg(a.clone(), Msg::Watermark(90), 1522 * MS);
        n.on_msg(b.clone(), Msg::Watermark(90), 1522 * MS);
        assert_eq!(released(&n.release(1523 * MS, 100)), ["a-1", "me-1"]);

        // A real silence, with turns coming round, still ends the wait.
        n.on_own(update("me", 2, 95));
        n.on_msg(a.clone(), Msg::Watermark(100), 1600 * MS);
        assert!(turns(&mut n, 1600 * MS..=2000 * MS, 100).is_empty());
        assert_eq!(
            turns(&mut n, 2100 * MS..=2100 * MS, 100),
            ["me-2"],
            "b silent for order_wait while we turned"
        );
    }

    #[test]
    fn pulls_go_to_the_best_linked_source_once_per_retry() {
        let mut n = node(false);
        n.on_members(members(&[
            member("a", &[("x", 5)]),
            member("b", &[("x", 9)]),
        ]));
        n.take_actions();
        n.anti_entropy(Duration::ZERO, 0);
        assert!(n.take_actions().is_empty(), "no linked peer: no pull");
        n.set_linked("a", true);
        n.set_linked("b", true);
        n.anti_entropy(100 * MS, 0);
        let pull = Msg::Pull {
            origin: Origin::new("x", 1),
            from: 1,
            to: 9,
        };
        assert_eq!(
            n.take_actions(),
            [Action::Send {
                to: "b".into(),
                msg: pull
            }]
        );
        n.anti_entropy(200 * MS, 0);
        assert!(n.take_actions().is_empty(), "in flight");
        n.anti_entropy(1200 * MS, 0);
        assert_eq!(n.take_actions().len(), 1, "asked again after PULL_RETRY");
        assert_eq!(n.stats().pulls_sent, 2);
    }

    #[test]
    fn a_resumed_link_counts_as_a_pull_in_flight() {
        let mut n = node(false);
        n.on_members(members(&[member("a", &[("x", 5)])]));
        n.set_linked("a", true);
        n.take_actions();
        assert_eq!(n.on_have(Origin::new("x", 1), Duration::ZERO), 0);
        n.anti_entropy(10 * MS, 0);
        assert!(n.take_actions().is_empty());
    }

    #[test]
    fn start_up_holds_until_linked_peers_are_caught_up() {
        let mut n = node(true);
        n.on_members(members(&[member("a", &[("a", 2)])]));
        n.anti_entropy(600 * MS, 0);
        assert!(!n.has_joined(), "no linked peer yet");
        n.set_linked("a", true);
        n.on_msg(
            Origin::new("a", 1),
            Msg::Update(update("a", 2, 20)),
            610 * MS,
        );
        n.anti_entropy(620 * MS, 0);
        assert!(!n.has_joined(), "a-1 is still missing");
        n.on_msg(
            Origin::new("a", 1),
            Msg::Update(update("a", 1, 10)),
            630 * MS,
        );
        n.take_actions();
        n.anti_entropy(640 * MS, 0);
        assert!(n.has_joined());
        assert!(n.take_actions().contains(&Action::Joined));
        let out = n.release(650 * MS, u64::MAX);
        assert_eq!(released(&out), ["a-1", "a-2"], "history in cluster order");
    }

    #[test]
    fn a_lone_node_joins_after_the_join_timeout_and_gives_up_after_ten() {
        let mut n = node(true);
        n.anti_entropy(400 * MS, 0);
        assert!(!n.has_joined());
        n.anti_entropy(500 * MS, 0);
        assert!(n.has_joined());
        let mut stuck = node(true);
        stuck.on_members(members(&[member("a", &[])]));
        stuck.anti_entropy(4999 * MS, 0);
        assert!(
            !stuck.has_joined(),
            "a member that cannot be linked is waited for"
        );
        stuck.anti_entropy(5000 * MS, 0);
        assert!(stuck.has_joined(), "but not forever");
    }

    #[test]
    fn direct_updates_are_acked_to_origins_that_want_it() {
        let mut n = node(false);
        let mut a = member("a", &[]);
        a.wants_acks = true;
        n.on_members(members(&[a]));
        n.take_actions();
        n.on_msg(Origin::new("a", 1), Msg::Update(update("a", 1, 10)), MS);
        n.on_msg(Origin::new("a", 1), Msg::Update(update("a", 2, 20)), MS);
        n.send_acks();
        let ack = Msg::Ack {
            origin: Origin::new("a", 1),
            hwm: 2,
        };
        assert_eq!(
            n.take_actions(),
            [
                Action::Observe(10),
                Action::Observe(20),
                Action::Send {
                    to: "a".into(),
                    msg: ack
                }
            ],
            "one coalesced ack"
        );
        n.on_msg(
            Origin::new("a", 1),
            Msg::Ack {
                origin: Origin::new("me", 1),
                hwm: 4,
            },
            MS,
        );
        assert_eq!(n.take_actions(), [Action::Acked(4)]);
    }

    #[test]
    fn a_gap_nobody_retains_is_given_up_once_every_source_says_so() {
        let mut n = node(false);
        n.on_members(members(&[
            member("a", &[("x", 9)]),
            member("b", &[("x", 9)]),
        ]));
        n.set_linked("a", true);
        n.set_linked("b", true);
        let gone = |first| Msg::PullEnd {
            origin: Origin::new("x", 1),
            from: 1,
            first,
        };
        n.on_msg(Origin::new("a", 1), gone(5), MS);
        assert_eq!(
            n.sequencer().hwm(&Origin::new("x", 1)),
            0,
            "b may still have it"
        );
        n.on_msg(Origin::new("b", 1), gone(4), MS);
        assert_eq!(n.sequencer().hwm(&Origin::new("x", 1)), 3);
        assert_eq!(n.sequencer().stats().lost, 3);
    }

    #[test]
    fn gossip_sends_only_what_changed() {
        let mut n = node(false);
        n.on_own(update("me", 1, 10));
        let (keys, removed) = n.gossip_changes();
        assert_eq!(keys, [(hwm_key(&Origin::new("me", 1)), "1".to_string())]);
        assert!(removed.is_empty());
        assert_eq!(n.gossip_changes(), (vec![], vec![]));
    }
}

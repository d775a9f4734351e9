//! The node's event loop: it owns the [`Sequencer`], feeds it our own and our
//! peers' updates, releases updates to the hub in order, answers and issues
//! anti-entropy pulls, keeps one outbound link per live peer, and gossips the
//! version vector. One task, no locks around the ordering state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Delivery;
use crate::membership::{self, Member, Membership, hwm_key};
use crate::relay::{self, Inbound, LinkState, RelayCtx};
use crate::sequencer::{Accepted, Sequencer};
use crate::stamp::{Hlc, Origin, Stamped};
use crate::view::{ClusterStats, ClusterView, MemberView};
use crate::wire::Msg;

/// Most updates sent in answer to one pull; the asker pulls again for the rest.
const PULL_MAX: usize = 1000;
const PULL_RETRY: Duration = Duration::from_secs(1);
const EXTRA_QUEUE: usize = 4096;
/// A departed generation quiet this long (and replicated everywhere) leaves the vector.
const RETIRE_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Timing {
    pub tick: Duration,
    pub anti_entropy: Duration,
    pub order_wait: Duration,
    pub join_timeout: Duration,
}

struct Link {
    extra: mpsc::Sender<Msg>,
    state: Arc<LinkState>,
    cancel: CancellationToken,
}

struct Peer {
    member: Member,
    link: Option<Link>,
    watermark: u64,
    last_heard: Option<Instant>,
}

impl Peer {
    /// Our outbound link is up: the peer proved the cluster secret.
    fn is_linked(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.state.connected.load(Ordering::Relaxed))
    }
}

/// Shared with the `Cluster` handle.
#[derive(Debug, Default)]
pub struct Flags {
    pub ready: AtomicBool,
    /// The same as `ready`, for those who wait for it (`Cluster::joined`).
    pub joined: watch::Sender<bool>,
    /// Set by `Cluster::leave`: gossiped, and readiness reads false.
    pub leaving: AtomicBool,
    pub subscribers: AtomicU64,
}

/// Requests from the `Cluster` handle that the engine answers.
#[derive(Debug)]
pub enum Control {
    /// Answer once every connected link has sent our whole log and the
    /// final watermark, and gossip says we are leaving.
    Leave(oneshot::Sender<()>),
}

/// What [`Engine::new`] takes over: the engine runs as one task, so everything
/// it reads or feeds is handed to it at start and owned by it from then on.
pub struct EngineParts {
    /// Who we are, the cluster secret, our local log and the relay counters;
    /// cloned into every outbound link the engine opens.
    pub ctx: RelayCtx,
    /// The ordering state. Only the engine touches it, so it needs no lock.
    pub seq: Sequencer,
    /// How often to look again: held updates, anti-entropy, silent peers, joining.
    pub timing: Timing,
    /// Gossip: who is alive, and where our vector and readiness are published.
    pub membership: Membership,
    /// Updates this node stamped (`Cluster::submit`).
    pub own_rx: mpsc::Receiver<Arc<Stamped>>,
    /// What arrives on peers' links to our relay listener.
    pub inbound_rx: mpsc::Receiver<Inbound>,
    /// Requests from the `Cluster` handle (leaving).
    pub control_rx: mpsc::Receiver<Control>,
    /// The delivery order, to the hub side (the `Ordered` receiver).
    pub out_tx: mpsc::Sender<Delivery>,
    /// Where every anti-entropy round publishes the view `Cluster::view` reads.
    pub view_tx: watch::Sender<ClusterView>,
    /// Readiness and the subscriber count, shared with the `Cluster` handle.
    pub flags: Arc<Flags>,
    /// Stops the engine; links get child tokens, so they stop with it.
    pub cancel: CancellationToken,
    /// Where link tasks are spawned, so `Cluster::shutdown` waits for them too.
    pub tracker: TaskTracker,
    /// The relay address peers dial (as advertised), shown in the view.
    pub relay_addr: String,
}

pub struct Engine {
    ctx: RelayCtx,
    seq: Sequencer,
    timing: Timing,
    membership: Membership,
    own_rx: mpsc::Receiver<Arc<Stamped>>,
    inbound_rx: mpsc::Receiver<Inbound>,
    control_rx: mpsc::Receiver<Control>,
    out_tx: mpsc::Sender<Delivery>,
    view_tx: watch::Sender<ClusterView>,
    flags: Arc<Flags>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    relay_addr: String,
    /// A pending `Control::Leave`, answered once our links are flushed.
    leaving: Option<oneshot::Sender<()>>,
    /// Origins whose own updates reached us directly since we last told them
    /// how much of them we hold (sent once per turn of the loop: coalesced).
    acks_owed: BTreeSet<Origin>,
    peers: BTreeMap<String, Peer>,
    pulls: HashMap<Origin, Instant>,
    gossiped: BTreeMap<Origin, u64>,
    started: Instant,
    repaired: u64,
    pulls_sent: u64,
    /// The last `Delivery::Through` sent.
    marked: u64,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Self {
        Self {
            ctx: parts.ctx,
            seq: parts.seq,
            timing: parts.timing,
            membership: parts.membership,
            own_rx: parts.own_rx,
            inbound_rx: parts.inbound_rx,
            control_rx: parts.control_rx,
            leaving: None,
            acks_owed: BTreeSet::new(),
            out_tx: parts.out_tx,
            view_tx: parts.view_tx,
            flags: parts.flags,
            cancel: parts.cancel,
            tracker: parts.tracker,
            relay_addr: parts.relay_addr,
            peers: BTreeMap::new(),
            pulls: HashMap::new(),
            gossiped: BTreeMap::new(),
            started: Instant::now(),
            repaired: 0,
            pulls_sent: 0,
            marked: 0,
        }
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.timing.tick);
        let mut ae = tokio::time::interval(self.timing.anti_entropy);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ae.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live = self.membership.live.clone();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                Some(own) = self.own_rx.recv() => { self.seq.accept(own); }
                Some(event) = self.inbound_rx.recv() => self.on_inbound(event),
                Some(Control::Leave(done)) = self.control_rx.recv() => self.leaving = Some(done),
                r = live.changed() => if r.is_ok() {
                    let nodes = live.borrow_and_update().clone();
                    self.on_members(membership::live_members(&nodes, &self.ctx.me));
                },
                // Time matters only while updates wait: a silent peer stops
                // holding them once `order_wait` passes.
                _ = tick.tick(), if self.seq.is_holding() || self.seq.waiting() > 0 || self.leaving.is_some() => {}
                _ = ae.tick() => self.anti_entropy().await,
            }
            if !self.release().await {
                break;
            }
            self.send_acks();
            self.finish_leaving().await;
        }
        for peer in self.peers.values() {
            if let Some(link) = &peer.link {
                link.cancel.cancel();
            }
        }
        self.membership.shutdown().await;
    }

    /// Answers a pending leave once every linked peer has our whole log and
    /// our final watermark. Unlinked peers cannot be flushed: they repair
    /// from the others by anti-entropy, as after any fault.
    async fn finish_leaving(&mut self) {
        if self.leaving.is_none() {
            return;
        }
        let flushed = self.peers.values().all(|p| {
            !p.is_linked()
                || p.link
                    .as_ref()
                    .is_some_and(|l| l.state.sealed.load(Ordering::Relaxed))
        });
        if flushed {
            self.gossip().await;
            if let Some(done) = self.leaving.take() {
                tracing::info!("left the cluster: relay links flushed, peers told");
                let _ = done.send(());
            }
        }
    }

    /// Tells each origin that asked for it (gossip `wants_acks`) how much of
    /// it we now hold, on our link to it.
    fn send_acks(&mut self) {
        for origin in std::mem::take(&mut self.acks_owed) {
            let Some(peer) = self.peers.get(&*origin.node) else {
                continue;
            };
            if peer.member.origin != origin || !peer.member.wants_acks {
                continue;
            }
            if let Some(link) = &peer.link {
                let hwm = self.seq.hwm(&origin);
                let _ = link.extra.try_send(Msg::Ack { origin, hwm });
            }
        }
    }

    fn on_inbound(&mut self, event: Inbound) {
        match event {
            Inbound::Have { origin, reply } => {
                let _ = reply.send(self.seq.hwm(&origin));
                // The origin's link now streams its log from our high-water
                // mark: pulling the same range from anyone would fetch it twice
                // (typically right after a heal). Count it as a pull in flight.
                self.pulls.insert(origin, Instant::now());
            }
            Inbound::Msg { from, msg } => self.on_msg(from, msg),
        }
    }

    fn on_msg(&mut self, from: Origin, msg: Msg) {
        match msg {
            Msg::Update(update) => {
                self.ctx.local.observe(update.stamp.hlc);
                let relayed = update.stamp.origin != from;
                if !relayed {
                    self.acks_owed.insert(from.clone());
                }
                if !matches!(self.seq.accept(update), Accepted::Duplicate) && relayed {
                    self.repaired += 1;
                }
            }
            Msg::Watermark(hlc) => {
                if let Some(peer) = self.peers.get_mut(&*from.node)
                    && peer.member.origin == from
                {
                    peer.watermark = peer.watermark.max(hlc);
                    peer.last_heard = Some(Instant::now());
                }
            }
            Msg::Pull {
                origin,
                from: first,
                to,
            } => self.answer_pull(&from, origin, first, to),
            Msg::PullEnd { origin, first, .. } => {
                self.pulls.remove(&origin);
                let mine = self.seq.hwm(&origin);
                if first > mine + 1 {
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
            }
            Msg::Ack { origin, hwm } => {
                if origin == self.ctx.me {
                    self.ctx.local.acked(hwm);
                }
            }
            Msg::Challenge { .. } | Msg::Hello { .. } | Msg::Welcome { .. } => {}
        }
    }

    /// Linked peers that claim more of `origin` than we hold. Gossip is not
    /// authenticated: a claim counts only from a peer that proved the secret
    /// on its link, or a member without it could keep a gap open forever.
    fn sources(&self, origin: &Origin, mine: u64) -> Vec<Arc<str>> {
        self.peers
            .values()
            .filter(|p| p.is_linked())
            .filter(|p| p.member.vector.get(origin).is_some_and(|h| *h > mine))
            .map(|p| p.member.origin.node.clone())
            .collect()
    }

    fn answer_pull(&mut self, asker: &Origin, origin: Origin, from: u64, to: u64) {
        let Some(link) = self.peers.get(&*asker.node).and_then(|p| p.link.as_ref()) else {
            return;
        };
        let (items, first) = self.seq.range(&origin, from, to, PULL_MAX);
        for item in items {
            if link.extra.try_send(Msg::Update(item)).is_err() {
                return;
            }
        }
        let _ = link.extra.try_send(Msg::PullEnd {
            origin,
            from,
            first,
        });
    }

    fn on_members(&mut self, members: BTreeMap<String, Member>) {
        self.peers.retain(|node, peer| {
            let keep = members
                .get(node)
                .is_some_and(|m| m.origin == peer.member.origin);
            if !keep {
                tracing::warn!(peer = %peer.member.origin, "cluster member left or was declared dead");
                if let Some(link) = &peer.link {
                    link.cancel.cancel();
                }
            }
            keep
        });
        for (node, member) in members {
            let relay_changed = self
                .peers
                .get(&node)
                .is_some_and(|p| p.member.relay_addr != member.relay_addr);
            match self.peers.get_mut(&node) {
                Some(peer) if !relay_changed => peer.member = member,
                _ => {
                    if let Some(link) = self.peers.remove(&node).and_then(|p| p.link) {
                        link.cancel.cancel();
                    }
                    tracing::info!(peer = %member.origin, relay = member.relay_addr.as_deref().unwrap_or("-"), "cluster member joined");
                    let link = member
                        .relay_addr
                        .clone()
                        .map(|addr| self.spawn_link(&member.origin, addr));
                    self.peers.insert(
                        node,
                        Peer {
                            member,
                            link,
                            watermark: 0,
                            last_heard: None,
                        },
                    );
                }
            }
        }
    }

    fn spawn_link(&self, peer: &Origin, addr: String) -> Link {
        let (extra, extra_rx) = mpsc::channel(EXTRA_QUEUE);
        let state = Arc::new(LinkState::default());
        let cancel = self.cancel.child_token();
        self.tracker.spawn(relay::run_link(
            self.ctx.clone(),
            peer.clone(),
            addr,
            extra_rx,
            state.clone(),
            cancel.clone(),
        ));
        Link {
            extra,
            state,
            cancel,
        }
    }

    /// The stamp up to which we and every peer we still wait for have spoken.
    /// Our own watermark is read first, then our own queue drained: stamping
    /// hands over under the clock's lock, so nothing at or below it is missed.
    fn bound(&mut self) -> u64 {
        let own = self.ctx.local.watermark();
        while let Ok(update) = self.own_rx.try_recv() {
            self.seq.accept(update);
        }
        let now = Instant::now();
        self.peers
            .values()
            .filter(|p| {
                p.last_heard
                    .is_some_and(|t| now.duration_since(t) < self.timing.order_wait)
            })
            .map(|p| p.watermark)
            .fold(own, u64::min)
    }

    /// Hands released updates to the hub; false when the hub side is gone.
    async fn release(&mut self) -> bool {
        let bound = self.bound();
        let late_before = self.seq.stats().late;
        let released = self.seq.release(bound);
        let late = self.seq.stats().late - late_before;
        if late > 0 {
            tracing::warn!(
                late,
                "updates delivered after later ones (a fault bent the order; none lost)"
            );
        }
        for update in released {
            if self.out_tx.send(Delivery::Update(update)).await.is_err() {
                return false;
            }
        }
        // Tell the hub side how far the order is settled (resumes wait on it).
        if bound > self.marked && !self.seq.is_holding() {
            self.marked = bound;
            return self.out_tx.send(Delivery::Through(bound)).await.is_ok();
        }
        true
    }

    async fn anti_entropy(&mut self) {
        let now = Instant::now();
        self.pulls
            .retain(|_, sent| now.duration_since(*sent) < PULL_RETRY);
        // The highest claim per origin, and the peer to
        // pull from: preferably one that has not already said it no longer
        // retains our gap. Asking the same peer forever would stall the origin
        // for good when another peer could settle the gap (fill it, or agree
        // it is gone, which lets `report_gone` count it as lost).
        // Only linked peers (see `sources`): an unauthenticated gossip member
        // must not steer our pulls toward itself.
        let mut best: BTreeMap<Origin, (bool, u64, String)> = BTreeMap::new();
        for (node, peer) in self.peers.iter().filter(|(_, p)| p.is_linked()) {
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
        for (origin, (_, target, node)) in &best {
            let mine = self.seq.hwm(origin);
            if *origin == self.ctx.me || *target <= mine || self.pulls.contains_key(origin) {
                continue;
            }
            let Some(link) = self.peers.get(node).and_then(|p| p.link.as_ref()) else {
                continue;
            };
            let pull = Msg::Pull {
                origin: origin.clone(),
                from: mine + 1,
                to: *target,
            };
            if link.extra.try_send(pull).is_ok() {
                self.pulls.insert(origin.clone(), now);
                self.pulls_sent += 1;
            }
        }
        self.bootstrap();
        self.retire_origins();
        self.gossip().await;
        self.publish_view();
    }

    /// At start-up, hold releases until we hold what the members we can reach
    /// hold, so our history starts in the cluster's order. Only peers whose
    /// relay link is up (they proved the cluster secret) count: a node that
    /// gossips but cannot be linked (wrong secret, firewalled) must not keep us
    /// waiting for updates nobody can give us.
    fn bootstrap(&mut self) {
        if !self.seq.is_holding() {
            return;
        }
        let elapsed = self.started.elapsed();
        let join = self.timing.join_timeout;
        let linked: Vec<&Peer> = self.peers.values().filter(|p| p.is_linked()).collect();
        let unlinked_ready = self
            .peers
            .values()
            .any(|p| p.member.ready && !p.is_linked());
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
                    .all(|(o, h)| *o == self.ctx.me || self.seq.hwm(o) >= *h)
            });
        let timed_out = elapsed >= join * 10;
        if caught_up || timed_out {
            if !caught_up {
                tracing::warn!("cluster catch-up timed out; serving with what we have");
            }
            self.seq.stop_holding();
            self.flags.ready.store(true, Ordering::Relaxed);
            self.flags.joined.send_replace(true);
            tracing::info!(linked = linked.len(), "cluster node ready");
        }
    }

    /// Forgets origins of generations that are gone, fully replicated and quiet
    /// for a long time, so vectors and gossip do not grow with every restart.
    /// Their last seq is remembered, so a straggler copy is still a duplicate.
    fn retire_origins(&mut self) {
        let wall = Hlc::millis(Hlc::wall());
        let live: Vec<&Origin> = self.peers.values().map(|p| &p.member.origin).collect();
        let quiet_ms = RETIRE_AFTER.as_millis() as u64;
        let retire: Vec<Origin> = self
            .seq
            .vector()
            .into_iter()
            .filter(|(o, h)| {
                *o != self.ctx.me
                    && !live.contains(&o)
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

    async fn gossip(&mut self) {
        let vector = self.seq.vector();
        let mut keys: Vec<(String, String)> = vector
            .iter()
            .filter(|(o, h)| self.gossiped.get(*o) != Some(h))
            .map(|(o, h)| (hwm_key(o), h.to_string()))
            .collect();
        let remove: Vec<String> = self
            .gossiped
            .keys()
            .filter(|o| !vector.contains_key(*o))
            .map(hwm_key)
            .collect();
        let leaving = self.flags.leaving.load(Ordering::Relaxed);
        let ready = self.flags.ready.load(Ordering::Relaxed) && !leaving;
        keys.push((membership::KEY_READY.into(), ready.to_string()));
        if leaving {
            keys.push((membership::KEY_LEAVING.into(), "true".into()));
        }
        keys.push((
            membership::KEY_SUBSCRIBERS.into(),
            self.flags.subscribers.load(Ordering::Relaxed).to_string(),
        ));
        self.membership.set(keys, remove).await;
        self.gossiped = vector;
    }

    fn publish_view(&self) {
        let wall_ms = Hlc::millis(Hlc::wall());
        let newest = self.ctx.local.newest();
        let vector_view =
            |v: &BTreeMap<Origin, u64>| v.iter().map(|(o, h)| (o.to_string(), *h)).collect();
        let members = self
            .peers
            .values()
            .map(|p| MemberView {
                node: p.member.origin.node.to_string(),
                generation: p.member.origin.generation,
                gossip_addr: p.member.gossip_addr.to_string(),
                relay_addr: p.member.relay_addr.clone(),
                http_addr: p.member.http_addr.clone(),
                ready: p.member.ready,
                leaving: p.member.leaving,
                subscribers: p.member.subscribers,
                vector: vector_view(&p.member.vector),
                link: match &p.link {
                    Some(l) if l.state.connected.load(Ordering::Relaxed) => "connected",
                    Some(_) => "connecting",
                    None => "none",
                },
                reconnects: p
                    .link
                    .as_ref()
                    .map_or(0, |l| l.state.reconnects.load(Ordering::Relaxed)),
                // Cursor 0 means the link never connected: everything is pending.
                backlog: p.link.as_ref().map_or(0, |l| {
                    (newest + 1).saturating_sub(l.state.cursor.load(Ordering::Relaxed).max(1))
                }),
                lag_ms: p
                    .last_heard
                    .map(|_| wall_ms.saturating_sub(Hlc::millis(p.watermark))),
            })
            .collect();
        let s = self.seq.stats();
        let r = &self.ctx.stats;
        let stats = ClusterStats {
            released: s.released,
            late: s.late,
            lost: s.lost,
            duplicates: s.duplicates,
            waiting: self.seq.waiting() as u64,
            repaired: self.repaired,
            pulls_sent: self.pulls_sent,
            relay_bytes_out: r.bytes_out.load(Ordering::Relaxed),
            relay_bytes_in: r.bytes_in.load(Ordering::Relaxed),
            relay_updates_out: r.updates_out.load(Ordering::Relaxed),
            relay_updates_in: r.updates_in.load(Ordering::Relaxed),
            auth_failures: r.auth_failures.load(Ordering::Relaxed),
        };
        self.view_tx.send_replace(ClusterView {
            cluster_id: self.ctx.cluster.clone(),
            node: self.ctx.me.node.to_string(),
            generation: self.ctx.me.generation,
            ready: self.flags.ready.load(Ordering::Relaxed)
                && !self.flags.leaving.load(Ordering::Relaxed),
            relay_addr: self.relay_addr.clone(),
            subscribers: self.flags.subscribers.load(Ordering::Relaxed),
            vector: vector_view(&self.seq.vector()),
            members,
            stats,
        });
    }
}

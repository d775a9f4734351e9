//! The node's event loop: a thin async shell around the I/O-free [`Node`]. It
//! feeds the node our own and our peers' updates, gossip's member list and the
//! time, carries out what the node decides (links to open and close, messages
//! to queue on them, deliveries to the hub, gossip keys), and publishes the
//! view. One task, no locks around the ordering state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::membership::{self, Membership};
use crate::node::{Action, Delivery, Node, Timing};
use crate::relay::{self, Inbound, LinkState, RelayCtx};
use crate::sequencer::Sequencer;
use crate::stamp::{Hlc, Origin, Stamped};
use crate::view::{ClusterStats, ClusterView, MemberView};
use crate::wire::Msg;

const EXTRA_QUEUE: usize = 4096;

/// Our outbound link to one peer: the task that keeps it up, and what it shows.
struct Link {
    extra: mpsc::Sender<Msg>,
    state: Arc<LinkState>,
    cancel: CancellationToken,
}

impl Link {
    fn is_up(&self) -> bool {
        self.state.connected.load(Ordering::Relaxed)
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
    /// The application's own gossiped keys (`Cluster::set_app_key`).
    pub app: std::sync::Mutex<BTreeMap<String, String>>,
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
    node: Node,
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
    /// Our outbound links, by peer node id (opened and closed as `node` says).
    links: BTreeMap<String, Link>,
    /// The node's clock starts here.
    started: Instant,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Self {
        let node = Node::new(parts.ctx.me.clone(), parts.seq, parts.timing.clone());
        Self {
            ctx: parts.ctx,
            node,
            timing: parts.timing,
            membership: parts.membership,
            own_rx: parts.own_rx,
            inbound_rx: parts.inbound_rx,
            control_rx: parts.control_rx,
            leaving: None,
            out_tx: parts.out_tx,
            view_tx: parts.view_tx,
            flags: parts.flags,
            cancel: parts.cancel,
            tracker: parts.tracker,
            relay_addr: parts.relay_addr,
            links: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    fn now(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.timing.tick);
        let mut ae = tokio::time::interval(self.timing.anti_entropy);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ae.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live = self.membership.live.clone();
        loop {
            self.sync_links();
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                Some(own) = self.own_rx.recv() => self.node.on_own(own),
                Some(event) = self.inbound_rx.recv() => self.on_inbound(event),
                Some(Control::Leave(done)) = self.control_rx.recv() => self.leaving = Some(done),
                r = live.changed() => if r.is_ok() {
                    let nodes = live.borrow_and_update().clone();
                    self.node.on_members(membership::live_members(&nodes, &self.ctx.me));
                },
                // Time matters only while updates wait: a silent peer stops
                // holding them once `order_wait` passes.
                _ = tick.tick(), if self.node.needs_ticks() || self.leaving.is_some() => {}
                _ = ae.tick() => self.anti_entropy().await,
            }
            self.carry_out();
            if !self.release().await {
                break;
            }
            self.node.send_acks();
            self.carry_out();
            self.finish_leaving().await;
        }
        for link in self.links.values() {
            link.cancel.cancel();
        }
        self.membership.shutdown().await;
    }

    /// Tells the node which of our outbound links are up (the link tasks own
    /// that state).
    fn sync_links(&mut self) {
        for (node, link) in &self.links {
            self.node.set_linked(node, link.is_up());
        }
    }

    fn on_inbound(&mut self, event: Inbound) {
        let now = self.now();
        match event {
            Inbound::Have { origin, reply } => {
                let _ = reply.send(self.node.on_have(origin, now));
            }
            Inbound::Msg { from, msg } => self.node.on_msg(from, msg, now),
        }
    }

    /// Does what the node decided. A message to a peer whose queue is full is
    /// dropped, and so is the rest of that turn's messages to it: a pull is
    /// asked again, a pull answer that stops early is pulled again.
    fn carry_out(&mut self) {
        let mut full: Vec<String> = Vec::new();
        for action in self.node.take_actions() {
            match action {
                Action::Send { to, msg } => {
                    let Some(link) = self.links.get(&to) else {
                        continue;
                    };
                    if full.contains(&to) || link.extra.try_send(msg).is_err() {
                        full.push(to);
                    }
                }
                Action::Open { node, peer, addr } => {
                    let link = self.spawn_link(&peer, addr);
                    if let Some(old) = self.links.insert(node, link) {
                        old.cancel.cancel();
                    }
                }
                Action::Close { node } => {
                    if let Some(link) = self.links.remove(&node) {
                        link.cancel.cancel();
                    }
                }
                Action::Observe(hlc) => self.ctx.local.observe(hlc),
                Action::Acked(hwm) => self.ctx.local.acked(hwm),
                Action::Joined => {
                    self.flags.ready.store(true, Ordering::Relaxed);
                    self.flags.joined.send_replace(true);
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

    /// Answers a pending leave once every linked peer has our whole log and
    /// our final watermark. Unlinked peers cannot be flushed: they repair
    /// from the others by anti-entropy, as after any fault.
    async fn finish_leaving(&mut self) {
        if self.leaving.is_none() {
            return;
        }
        let flushed = self
            .links
            .values()
            .all(|l| !l.is_up() || l.state.sealed.load(Ordering::Relaxed));
        if flushed {
            self.gossip().await;
            if let Some(done) = self.leaving.take() {
                tracing::info!("left the cluster: relay links flushed, peers told");
                let _ = done.send(());
            }
        }
    }

    /// Hands released updates to the hub; false when the hub side is gone.
    /// Our own watermark is read first, then our own queue drained: stamping
    /// hands over under the clock's lock, so nothing at or below it is missed.
    async fn release(&mut self) -> bool {
        let own = self.ctx.local.watermark();
        while let Ok(update) = self.own_rx.try_recv() {
            self.node.on_own(update);
        }
        for delivery in self.node.release(self.now(), own) {
            if self.out_tx.send(delivery).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn anti_entropy(&mut self) {
        self.sync_links();
        self.node.anti_entropy(self.now(), Hlc::wall());
        self.carry_out();
        self.gossip().await;
        self.publish_view();
    }

    async fn gossip(&mut self) {
        let (mut keys, remove) = self.node.gossip_changes();
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
        let app = self
            .flags
            .app
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        keys.extend(app);
        self.membership.set(keys, remove).await;
    }

    fn publish_view(&self) {
        let wall_ms = Hlc::millis(Hlc::wall());
        let newest = self.ctx.local.newest();
        let vector_view =
            |v: &BTreeMap<Origin, u64>| v.iter().map(|(o, h)| (o.to_string(), *h)).collect();
        let members = self
            .node
            .peers()
            .iter()
            .map(|(node, p)| {
                let link = self.links.get(node);
                MemberView {
                    node: p.member.origin.node.to_string(),
                    generation: p.member.origin.generation,
                    gossip_addr: p.member.gossip_addr.to_string(),
                    relay_addr: p.member.relay_addr.clone(),
                    http_addr: p.member.http_addr.clone(),
                    ready: p.member.ready,
                    leaving: p.member.leaving,
                    subscribers: p.member.subscribers,
                    app: p.member.app.clone(),
                    vector: vector_view(&p.member.vector),
                    link: match link {
                        Some(l) if l.is_up() => "connected",
                        Some(_) => "connecting",
                        None => "none",
                    },
                    reconnects: link.map_or(0, |l| l.state.reconnects.load(Ordering::Relaxed)),
                    // Cursor 0 means the link never connected: everything is pending.
                    backlog: link.map_or(0, |l| {
                        (newest + 1).saturating_sub(l.state.cursor.load(Ordering::Relaxed).max(1))
                    }),
                    lag_ms: p
                        .last_heard
                        .map(|_| wall_ms.saturating_sub(Hlc::millis(p.watermark))),
                }
            })
            .collect();
        let seq = self.node.sequencer();
        let s = seq.stats();
        let n = self.node.stats();
        let r = &self.ctx.stats;
        let stats = ClusterStats {
            released: s.released,
            late: s.late,
            lost: s.lost,
            duplicates: s.duplicates,
            waiting: seq.waiting() as u64,
            repaired: n.repaired,
            pulls_sent: n.pulls_sent,
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
            vector: vector_view(&seq.vector()),
            members,
            stats,
        });
    }
}

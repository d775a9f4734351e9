//! The public handle: start a node, submit updates, read the ordered output,
//! look at the cluster, shut down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubbub_proto::Update;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{Control, Engine, EngineParts, Flags};
use crate::local::LocalOrigin;
use crate::membership::{
    GossipSettings, KEY_HTTP, KEY_READY, KEY_RELAY, KEY_WANTS_ACKS, Membership,
};
use crate::node::{Delivery, Timing};
use crate::relay::{self, RelayCtx, RelayStats};
use crate::sequencer::{Sequencer, SequencerLimits};
use crate::sockets::{BindError, Prebound, Sockets};
use crate::stamp::{Origin, Stamped};
use crate::view::ClusterView;

#[derive(Clone)]
pub struct ClusterConfig {
    pub node_id: String,
    /// A fresh, increasing number per start (boot time in ns by default).
    pub generation: u64,
    pub cluster_id: String,
    /// Where [`Cluster::start`] binds the gossip socket.
    pub gossip_listen: SocketAddr,
    /// Port 0 stands for the port the gossip socket got.
    pub gossip_advertise: SocketAddr,
    /// Where [`Cluster::start`] binds the relay listener; its IP (unless
    /// unspecified) is also the source address of outbound links, which is
    /// all it is used for with [`Cluster::start_on`].
    pub relay_listen: SocketAddr,
    /// `host:port` peers dial; resolved on every connection attempt. Port 0
    /// stands for the port the relay listener got.
    pub relay_advertise: String,
    pub http_advertise: Option<String>,
    /// `host:port` of some members; DNS names are re-resolved (headless Services work).
    pub seeds: Vec<String>,
    /// Authenticates relay links. Gossip itself is not authenticated: keep it private.
    pub secret: String,
    pub gossip_interval: Duration,
    /// Least time between two watermarks a link sends because a peer's update
    /// waits for them: an owed watermark goes out at once when the last one is
    /// older, else when it is this old. So light loads pay no pacing and high
    /// rates at most one watermark per interval; an idle link sends one only
    /// every `min(order_wait / 4, 100 ms)`.
    pub watermark_interval: Duration,
    /// A peer silent this long no longer holds delivery back.
    pub order_wait: Duration,
    /// How long a starting node waits to hear members before it takes what it has.
    pub join_timeout: Duration,
    /// Ask peers to confirm what they hold of our updates (`Msg::Ack`), for
    /// publishes acknowledged only once replicated ([`Cluster::replicated`]).
    pub want_acks: bool,
    pub limits: SequencerLimits,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("generation", &self.generation)
            .field("cluster_id", &self.cluster_id)
            .field("gossip_listen", &self.gossip_listen)
            .field("relay_listen", &self.relay_listen)
            .field("seeds", &self.seeds)
            .field("secret", &"<hidden>")
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// Sensible timings for a LAN; addresses and identity are the caller's.
    pub fn new(
        node_id: impl Into<String>,
        gossip: SocketAddr,
        relay: SocketAddr,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            generation: fresh_generation(),
            cluster_id: "hubbub".into(),
            gossip_listen: gossip,
            gossip_advertise: gossip,
            relay_listen: relay,
            relay_advertise: relay.to_string(),
            http_advertise: None,
            seeds: Vec::new(),
            secret: secret.into(),
            gossip_interval: Duration::from_millis(100),
            watermark_interval: Duration::from_millis(5),
            order_wait: Duration::from_secs(1),
            join_timeout: Duration::from_secs(2),
            want_acks: false,
            limits: SequencerLimits::default(),
        }
    }
}

/// How often an idle relay link sends a watermark: often enough that peers
/// never count us as silent (`order_wait`), rarely enough to cost nothing.
fn keepalive(interval: Duration, order_wait: Duration) -> Duration {
    (order_wait / 4)
        .min(Duration::from_millis(100))
        .max(interval)
}

/// How often the engine looks again while updates wait. Only a silent peer's
/// `order_wait` running out depends on time (watermarks and updates wake the
/// engine themselves), so a twentieth of it is fine enough, and a 1 ms tick
/// would cost a wake-up per millisecond whenever anything is in flight.
fn engine_tick(order_wait: Duration) -> Duration {
    (order_wait / 20).clamp(Duration::from_millis(1), Duration::from_millis(50))
}

/// Boot time in nanoseconds: increases across restarts, as chitchat requires.
pub fn fresh_generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot listen for relay links on {addr}: {source}")]
    RelayListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start gossip on {addr}: {reason}")]
    Gossip { addr: SocketAddr, reason: String },
    #[error("a cluster secret is required")]
    NoSecret,
}

impl From<BindError> for ClusterError {
    fn from(e: BindError) -> Self {
        match e {
            BindError::Gossip { addr, reason } => Self::Gossip { addr, reason },
            BindError::Relay { addr, source } => Self::RelayListen { addr, source },
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The engine is behind; the caller should answer 503 and let the client retry.
    #[error("the cluster node is overloaded; retry shortly")]
    Overloaded,
    #[error("the cluster node is shutting down")]
    ShuttingDown,
}

/// A running cluster node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    me: Origin,
    local: LocalOrigin,
    own_tx: mpsc::Sender<Arc<Stamped>>,
    control: mpsc::Sender<Control>,
    view: watch::Receiver<ClusterView>,
    flags: Arc<Flags>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Updates in delivery order; the caller hands each to its local hub.
pub type Ordered = mpsc::Receiver<Delivery>;

/// What this node gossips about itself from the start.
fn gossip_keys(config: &ClusterConfig) -> Vec<(String, String)> {
    let mut keys = vec![
        (KEY_RELAY.to_owned(), config.relay_advertise.clone()),
        (KEY_READY.to_owned(), "false".to_owned()),
    ];
    if let Some(http) = &config.http_advertise {
        keys.push((KEY_HTTP.to_owned(), http.clone()));
    }
    if config.want_acks {
        keys.push((KEY_WANTS_ACKS.to_owned(), "true".to_owned()));
    }
    keys
}

impl ClusterConfig {
    /// Records what was bound: `gossip_listen` becomes the gossip socket's
    /// address, and an advertised port 0 (the config said "any port") the
    /// port the socket got, so that peers reach the node where it listens.
    fn advertise_bound(&mut self, gossip: SocketAddr, relay: SocketAddr) {
        self.gossip_listen = gossip;
        if self.gossip_advertise.port() == 0 {
            self.gossip_advertise.set_port(gossip.port());
        }
        if let Some(host) = self.relay_advertise.strip_suffix(":0") {
            self.relay_advertise = format!("{host}:{}", relay.port());
        }
    }
}

fn gossip_settings(config: &ClusterConfig) -> GossipSettings {
    GossipSettings {
        cluster_id: config.cluster_id.clone(),
        listen: config.gossip_listen,
        advertise: config.gossip_advertise,
        seeds: config.seeds.clone(),
        interval: config.gossip_interval,
    }
}

fn relay_ctx(config: &ClusterConfig, me: &Origin, local: &LocalOrigin) -> RelayCtx {
    RelayCtx {
        me: me.clone(),
        cluster: config.cluster_id.clone(),
        psk: crate::secure::psk(config.secret.as_bytes()),
        local: local.clone(),
        watermark_interval: config.watermark_interval,
        watermark_keepalive: keepalive(config.watermark_interval, config.order_wait),
        stats: Arc::new(RelayStats::default()),
        bind_ip: Some(config.relay_listen.ip()).filter(|ip| !ip.is_unspecified()),
    }
}

fn timing(config: &ClusterConfig) -> Timing {
    Timing {
        tick: engine_tick(config.order_wait),
        anti_entropy: (config.gossip_interval * 2).max(Duration::from_millis(50)),
        order_wait: config.order_wait,
        join_timeout: config.join_timeout,
    }
}

impl Cluster {
    /// Binds the gossip socket on `gossip_listen` and the relay listener on
    /// `relay_listen`, then starts as [`start_on`](Self::start_on).
    pub async fn start(config: ClusterConfig) -> Result<(Self, Ordered), ClusterError> {
        if config.secret.is_empty() {
            return Err(ClusterError::NoSecret);
        }
        let sockets = Sockets::bind(config.gossip_listen, config.relay_listen).await?;
        Self::start_on(config, sockets).await
    }

    /// Joins gossip and starts the relay listener and the engine on sockets
    /// the caller bound (so that a test can bind port 0 and seed and dial
    /// what it got, instead of guessing free ports). An advertised port 0
    /// becomes the bound one; `gossip_listen` and `relay_listen` are not
    /// bound again (`relay_listen`'s IP still picks the source address of
    /// outbound links).
    pub async fn start_on(
        mut config: ClusterConfig,
        sockets: Sockets,
    ) -> Result<(Self, Ordered), ClusterError> {
        if config.secret.is_empty() {
            return Err(ClusterError::NoSecret);
        }
        let gossip = sockets.gossip.local_addr();
        let relay = sockets
            .relay
            .local_addr()
            .map_err(|source| ClusterError::RelayListen {
                addr: config.relay_listen,
                source,
            })?;
        config.advertise_bound(gossip, relay);
        let me = Origin::new(config.node_id.clone(), config.generation);
        let membership = Membership::start(
            &me,
            &gossip_settings(&config),
            gossip_keys(&config),
            &Prebound::new(sockets.gossip),
        )
        .await
        .map_err(|reason| ClusterError::Gossip {
            addr: gossip,
            reason,
        })?;
        let (cluster, ordered) = Self::spawn(&config, me, sockets.relay, membership);
        // `gossip=` and `relay=` are the bound addresses: tests of the binary
        // read them from this line when the node was told to bind port 0.
        tracing::info!(
            node = %cluster.me,
            gossip = %gossip,
            relay = %relay,
            gossip_advertise = %config.gossip_advertise,
            relay_advertise = %config.relay_advertise,
            "cluster node started"
        );
        Ok((cluster, ordered))
    }

    /// Starts the relay listener and the engine, once the listener is bound
    /// and gossip is up.
    fn spawn(
        config: &ClusterConfig,
        me: Origin,
        listener: TcpListener,
        membership: Membership,
    ) -> (Self, Ordered) {
        // Twice the pacing: a quiet node's last owed watermark still leads
        // the clock when the next one is sent.
        let local = LocalOrigin::new(me.clone(), config.limits.log_entries)
            .lease_when_quiet(config.watermark_interval * 2);
        let ctx = relay_ctx(config, &me, &local);
        let (own_tx, own_rx) = mpsc::channel(16 * 1024);
        let (inbound_tx, inbound_rx) = mpsc::channel(16 * 1024);
        let (out_tx, out_rx) = mpsc::channel(16 * 1024);
        let (control, control_rx) = mpsc::channel(4);
        let (view_tx, view) = watch::channel(ClusterView::default());
        let flags = Arc::new(Flags::default());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(relay::listen(
            listener,
            ctx.clone(),
            inbound_tx,
            cancel.clone(),
            tracker.clone(),
        ));
        let engine = Engine::new(EngineParts {
            ctx,
            // A node with seeds catches up before it delivers anything.
            seq: Sequencer::new(config.limits, true),
            timing: timing(config),
            membership,
            own_rx,
            inbound_rx,
            control_rx,
            out_tx,
            view_tx,
            flags: flags.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            relay_addr: config.relay_advertise.clone(),
        });
        tracker.spawn(engine.run());
        let cluster = Self {
            me,
            local,
            own_tx,
            control,
            view,
            flags,
            cancel,
            tracker,
        };
        (cluster, out_rx)
    }

    pub fn origin(&self) -> &Origin {
        &self.me
    }

    /// Stamps `update` as ours and hands it to the engine and the relay links.
    /// Returns once it is logged here, not after delivery.
    pub fn submit(&self, update: Update) -> Result<Arc<Stamped>, SubmitError> {
        if self.cancel.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        let permit = self.own_tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => SubmitError::ShuttingDown,
        })?;
        self.local
            .stamp(update, |stamped| permit.send(stamped))
            .ok_or(SubmitError::ShuttingDown)
    }

    /// Waits (at most `limit`) until some peer has confirmed that it holds
    /// our update `seq` (and everything of ours before it), so that losing
    /// this node now cannot lose it. Needs `want_acks`; false on timeout.
    pub async fn replicated(&self, seq: u64, limit: Duration) -> bool {
        let mut held = self.local.replicated();
        matches!(
            tokio::time::timeout(limit, held.wait_for(|h| *h >= seq)).await,
            Ok(Ok(_))
        )
    }

    /// Leaves the cluster gracefully, before [`shutdown`](Self::shutdown):
    /// submits are refused from now on; every connected relay link sends the
    /// rest of our log and then a final watermark that tells its peer never
    /// to wait for us again (so nobody holds delivery for `order_wait` on our
    /// account); then gossip marks us as leaving and not ready. The node goes
    /// on receiving and delivering peers' updates in order until shutdown, so
    /// streams still open here stay consistent with the rest of the cluster.
    /// Returns false if the links were not all flushed within `limit`.
    pub async fn leave(&self, limit: Duration) -> bool {
        self.local.seal();
        self.flags.leaving.store(true, Ordering::Relaxed);
        let (done, flushed) = oneshot::channel();
        if self.control.send(Control::Leave(done)).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, flushed).await, Ok(Ok(())))
    }

    /// This node's clock now: at least the wall clock and every stamp seen.
    /// An update a client received anywhere before asking us is (clock skew
    /// aside) stamped at or below it, so waiting for `Through(clock)` makes a
    /// cross-node resume exact.
    pub fn clock(&self) -> u64 {
        self.local.now()
    }

    /// Waits (at most `limit`) until this node has joined and caught up with
    /// the cluster: before that its history is incomplete, so a position in it
    /// (`Last-Event-ID`) means nothing yet. True once joined.
    pub async fn joined(&self, limit: Duration) -> bool {
        let mut joined = self.flags.joined.subscribe();
        matches!(
            tokio::time::timeout(limit, joined.wait_for(|j| *j)).await,
            Ok(Ok(_))
        )
    }

    /// Whether [`joined`](Self::joined) would answer at once.
    pub fn has_joined(&self) -> bool {
        *self.flags.joined.borrow()
    }

    /// Joined and caught up, and not leaving.
    pub fn is_ready(&self) -> bool {
        self.flags.ready.load(Ordering::Relaxed) && !self.flags.leaving.load(Ordering::Relaxed)
    }

    /// Local subscriber count, gossiped to the other members.
    pub fn set_subscribers(&self, n: u64) {
        self.flags.subscribers.store(n, Ordering::Relaxed);
    }

    /// Gossips `value` under the application key `name` (at most
    /// [`MAX_APP_KEYS`](crate::membership::MAX_APP_KEYS) names, values at most
    /// [`MAX_APP_VALUE`](crate::membership::MAX_APP_VALUE) bytes; others are
    /// refused with `false`). Peers see it in [`MemberView::app`](crate::MemberView)
    /// within a gossip round or two.
    pub fn set_app_key(&self, name: &str, value: &str) -> bool {
        use crate::membership::{APP_PREFIX, MAX_APP_KEYS, MAX_APP_VALUE};
        let mut app = self
            .flags
            .app
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = format!("{APP_PREFIX}{name}");
        if value.len() > MAX_APP_VALUE || (app.len() >= MAX_APP_KEYS && !app.contains_key(&key)) {
            return false;
        }
        app.insert(key, value.to_owned());
        true
    }

    /// The latest view (refreshed every anti-entropy round).
    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// Stops links, gossip and the engine.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn an_advertised_port_0_becomes_the_bound_port() {
        let mut c = ClusterConfig::new("n1", addr("127.0.0.1:0"), addr("127.0.0.1:0"), "s");
        c.advertise_bound(addr("127.0.0.1:4001"), addr("127.0.0.1:4002"));
        assert_eq!(c.gossip_listen, addr("127.0.0.1:4001"));
        assert_eq!(c.gossip_advertise, addr("127.0.0.1:4001"));
        assert_eq!(c.relay_advertise, "127.0.0.1:4002");

        // The binary on 0.0.0.0:0 advertises its own address, with port 0 until bound.
        c.gossip_advertise = addr("10.1.2.3:0");
        c.relay_advertise = "node-a.example:0".into();
        c.advertise_bound(addr("0.0.0.0:5001"), addr("0.0.0.0:5002"));
        assert_eq!(c.gossip_advertise, addr("10.1.2.3:5001"));
        assert_eq!(c.relay_advertise, "node-a.example:5002");
    }

    #[test]
    fn explicit_advertised_ports_stay() {
        let mut c = ClusterConfig::new("n1", addr("127.0.0.1:0"), addr("127.0.0.1:0"), "s");
        c.gossip_advertise = addr("10.1.2.3:7946");
        c.relay_advertise = "proxy.example:10".into();
        c.advertise_bound(addr("127.0.0.1:4001"), addr("127.0.0.1:4002"));
        assert_eq!(c.gossip_advertise, addr("10.1.2.3:7946"));
        assert_eq!(c.relay_advertise, "proxy.example:10");
    }
}

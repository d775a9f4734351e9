//! Relay links: one outbound TCP link per peer carries this node's messages to
//! that peer; inbound links carry each peer's messages to us. Every link is a
//! [`secure`](crate::secure) channel: both ends prove the cluster secret in a
//! handshake bound to both identities, and every frame is sealed, so a
//! stranger can neither inject, alter nor read updates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::local::LocalOrigin;
use crate::secure::{self, Framing, Preamble, SecureError, SecureLink};
use crate::stamp::Origin;
use crate::wire::Msg;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame before the peer has proved the cluster secret: a handshake
/// message is a few hundred bytes. The codec reserves what a length prefix
/// announces, so a stranger must not be able to announce `MAX_FRAME`.
const HANDSHAKE_MAX_FRAME: usize = 4 << 10;
/// Inbound connections still in their handshake, at most; more are closed at
/// once (a stranger cannot hold memory or tasks beyond this).
pub const MAX_UNAUTHENTICATED: usize = 64;
/// A relay socket whose sent data stays unacknowledged this long is dropped
/// (`TCP_USER_TIMEOUT`), and a dial gives up after it: after a one-way cut the
/// kernel would otherwise keep a dead link in retransmission back-off for up
/// to minutes while the peer is reachable again. Links carry a watermark at
/// least every 100 ms, so a live peer always acknowledges well within it.
const LINK_STALL: Duration = Duration::from_secs(3);
/// Updates read from the local log per write batch.
const BATCH: usize = 256;

type Link = SecureLink;

/// Relay traffic counters, shared by every link of a node.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub updates_out: AtomicU64,
    pub updates_in: AtomicU64,
    pub auth_failures: AtomicU64,
}

/// What every link of this node shares.
#[derive(Debug, Clone)]
pub struct RelayCtx {
    pub me: Origin,
    pub cluster: String,
    /// The Noise pre-shared key derived from the cluster secret.
    pub psk: [u8; 32],
    pub local: LocalOrigin,
    /// Watermarks owed to peers go out at most this often.
    pub watermark_interval: Duration,
    /// An idle link still sends one this often, so peers keep counting us as
    /// heard (it must stay well under `order_wait`).
    pub watermark_keepalive: Duration,
    pub stats: Arc<RelayStats>,
    /// Source address for outbound links (None: the kernel picks).
    pub bind_ip: Option<std::net::IpAddr>,
}

/// What the engine hears from inbound links.
#[derive(Debug)]
pub enum Inbound {
    /// A verified message from `from`.
    Msg { from: Origin, msg: Msg },
    /// A peer connected: how much of its origin do we hold already?
    Have {
        origin: Origin,
        reply: oneshot::Sender<u64>,
    },
}

/// Live state of one outbound link, for the cluster view.
#[derive(Debug, Default)]
pub struct LinkState {
    pub connected: AtomicBool,
    pub reconnects: AtomicU64,
    /// Next seq of our origin this link will send (its backlog is what lies beyond).
    pub cursor: AtomicU64,
    /// The final watermark (we left) went out after the whole log.
    pub sealed: AtomicBool,
}

/// A connection whose frames are capped at handshake size; the secure
/// channel lifts the cap once the peer has proved the secret.
fn framed(stream: TcpStream) -> Framing {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(LINK_STALL));
    Framed::new(
        stream,
        LengthDelimitedCodec::builder()
            .max_frame_length(HANDSHAKE_MAX_FRAME)
            .new_codec(),
    )
}

async fn send(link: &mut Link, msg: &Msg, stats: &RelayStats) -> std::io::Result<()> {
    let wire = link.feed(&msg.encode()).await?;
    stats.bytes_out.fetch_add(wire as u64, Ordering::Relaxed);
    Ok(())
}

async fn flush(link: &mut Link) -> std::io::Result<()> {
    Ok(link.flush().await?)
}

async fn recv(link: &mut Link, stats: &RelayStats) -> std::io::Result<Option<Msg>> {
    let Some((message, wire)) = link.recv().await? else {
        return Ok(None);
    };
    stats.bytes_in.fetch_add(wire as u64, Ordering::Relaxed);
    Msg::decode(&message)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn protocol_error(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

// ---------------------------------------------------------------- inbound

/// Accepts inbound links until cancelled; each link is a task of `tracker`
/// (the cluster node's), ended by the same token.
pub async fn listen(
    listener: TcpListener,
    ctx: RelayCtx,
    inbound: mpsc::Sender<Inbound>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_UNAUTHENTICATED));
    loop {
        let (stream, addr) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "relay link refused: too many handshakes in progress");
            continue;
        };
        let (ctx, inbound, cancel) = (ctx.clone(), inbound.clone(), cancel.clone());
        tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = serve_inbound(framed(stream), handshake, &ctx, &inbound) => if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "inbound relay link closed");
                },
            }
        });
    }
}

/// `handshake` holds one of the [`MAX_UNAUTHENTICATED`] places until the peer
/// has proved the secret (or failed to).
async fn serve_inbound(
    link: Framing,
    handshake: OwnedSemaphorePermit,
    ctx: &RelayCtx,
    inbound: &mpsc::Sender<Inbound>,
) -> std::io::Result<()> {
    let peer_addr = link.get_ref().peer_addr().ok();
    let (from, accepted) = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(link, ctx))
        .await
        .map_err(|_| protocol_error("handshake timed out"))?
        .inspect_err(|e| {
            if matches!(e, SecureError::Handshake | SecureError::Preamble(_)) {
                ctx.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = ?peer_addr, error = %e, "relay link refused");
            }
        })?;
    drop(handshake);
    let (reply, have) = oneshot::channel();
    inbound
        .send(Inbound::Have {
            origin: from.clone(),
            reply,
        })
        .await
        .map_err(|_| protocol_error("engine gone"))?;
    let have = have.await.map_err(|_| protocol_error("engine gone"))?;
    let mut link = accepted.welcome(have).await?;
    tracing::debug!(peer = %from, have, "inbound relay link up");
    while let Some(msg) = recv(&mut link, &ctx.stats).await? {
        if matches!(msg, Msg::Update(_)) {
            ctx.stats.updates_in.fetch_add(1, Ordering::Relaxed);
        }
        if inbound
            .send(Inbound::Msg {
                from: from.clone(),
                msg,
            })
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Reads the dialer's preamble, refuses a link meant for another node or
/// cluster, and checks the dialer's proof of the secret over it.
async fn accept(
    mut link: Framing,
    ctx: &RelayCtx,
) -> Result<(Origin, secure::Accepted), SecureError> {
    let preamble = Preamble::decode(&secure::next_frame(&mut link).await?)?;
    if preamble.cluster != ctx.cluster {
        return Err(SecureError::Preamble("another cluster id"));
    }
    if preamble.listener != ctx.me {
        return Err(SecureError::Preamble(
            "meant for another node or generation",
        ));
    }
    let accepted = secure::accept(link, &preamble, &ctx.psk).await?;
    Ok((preamble.dialer, accepted))
}

// ---------------------------------------------------------------- outbound

/// Keeps one outbound link to `peer` up (reconnecting with backoff) until
/// cancelled; streams our origin from wherever the peer says it is, plus the
/// `extra` messages (pulls and pull answers) the engine queues for it.
pub async fn run_link(
    ctx: RelayCtx,
    peer: Origin,
    addr: String,
    mut extra: mpsc::Receiver<Msg>,
    state: Arc<LinkState>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            let stream = tokio::time::timeout(LINK_STALL, connect(&addr, ctx.bind_ip))
                .await
                .map_err(|_| protocol_error("connect timed out"))??;
            let (mut link, have) = handshake(stream, &ctx, &peer).await?;
            state.connected.store(true, Ordering::Relaxed);
            tracing::debug!(%peer, %addr, have, "outbound relay link up");
            stream_to(&mut link, &ctx, have + 1, &mut extra, &state).await
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = attempt => r,
        };
        let was_up = state.connected.swap(false, Ordering::Relaxed);
        if was_up {
            backoff = Duration::from_millis(50);
            state.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = result {
            tracing::debug!(%peer, %addr, error = %e, "outbound relay link down; retrying");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Dials `addr`, from our own relay address when we listen on a specific one,
/// so a peer (and a firewall rule) sees links come from where we advertise.
async fn connect(addr: &str, bind_ip: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = bind_ip else {
        return TcpStream::connect(addr).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if ip.is_ipv4() == target.is_ipv4() {
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
        }
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} resolves to nothing"),
        )
    }))
}

/// Opens the secure channel to `peer` over `stream`; returns it and where the
/// peer wants our origin's stream to resume.
async fn handshake(
    stream: TcpStream,
    ctx: &RelayCtx,
    peer: &Origin,
) -> std::io::Result<(Link, u64)> {
    let preamble = Preamble {
        cluster: ctx.cluster.clone(),
        dialer: ctx.me.clone(),
        listener: peer.clone(),
    };
    let dialed = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        secure::dial(framed(stream), &preamble, &ctx.psk),
    )
    .await
    .map_err(|_| protocol_error("handshake timed out"))?;
    dialed.map_err(|e| {
        if matches!(e, SecureError::Handshake) {
            ctx.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "relay peer failed to prove the cluster secret");
        }
        e.into()
    })
}

/// Streams our origin log to one peer from `cursor`, each batch followed by a
/// watermark ("nothing of ours at or below this stamp is still to come").
///
/// Peers hold delivery of an update until every member's watermark has passed
/// its stamp, so a watermark is owed when we publish (sent with the batch) and
/// when a peer's update with a newer stamp reaches us (the others hold it for
/// us; paced to one per `watermark_interval`). An idle cluster owes nothing and
/// sends only a keepalive watermark: no traffic and no wake-ups per tick.
async fn stream_to(
    link: &mut Link,
    ctx: &RelayCtx,
    mut cursor: u64,
    extra: &mut mpsc::Receiver<Msg>,
    state: &LinkState,
) -> std::io::Result<()> {
    let mut last_seq = ctx.local.last_seq();
    let mut observed = ctx.local.observed();
    loop {
        // Marks the stamps seen so far as answered by the watermark below. Taken
        // before it: `observe` moves the clock before it changes `observed`, so
        // the watermark covers them, and anything seen later wakes us again.
        observed.borrow_and_update();
        // Everything logged since the cursor, then a watermark taken under the same lock.
        let watermark;
        loop {
            let batch = ctx.local.read_from(cursor, BATCH);
            if let Some(first) = batch.gap_to {
                let gap = Msg::PullEnd {
                    origin: ctx.me.clone(),
                    from: cursor,
                    first,
                };
                send(link, &gap, &ctx.stats).await?;
                cursor = first;
            }
            for u in &batch.updates {
                send(link, &Msg::Update(u.clone()), &ctx.stats).await?;
                ctx.stats.updates_out.fetch_add(1, Ordering::Relaxed);
                cursor = u.stamp.seq + 1;
            }
            if batch.watermark > 0 {
                watermark = batch.watermark;
                send(link, &Msg::Watermark(watermark), &ctx.stats).await?;
                break;
            }
        }
        flush(link).await?;
        state.cursor.store(cursor, Ordering::Relaxed);
        if watermark == u64::MAX {
            state.sealed.store(true, Ordering::Relaxed);
        }
        let sent = Instant::now();
        let mut owed: Option<Instant> = None;
        loop {
            let wake = owed.unwrap_or(sent + ctx.watermark_keepalive);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                r = last_seq.changed() => if r.is_err() { return Ok(()) } else { break },
                r = observed.changed(), if owed.is_none() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    owed = Some(sent + ctx.watermark_interval);
                }
                m = extra.recv() => match m {
                    Some(msg) => {
                        send(link, &msg, &ctx.stats).await?;
                        while let Ok(msg) = extra.try_recv() {
                            send(link, &msg, &ctx.stats).await?;
                        }
                        flush(link).await?;
                    }
                    None => return Ok(()),
                },
            }
        }
    }
}

/// Links over real loopback sockets, one end at a time: the engine on either
/// side is a stand-in that answers `Have` and hands messages to the test.
#[cfg(test)]
mod tests {
    use super::*;
    use hubbub_proto::Update;

    const WAIT: Duration = Duration::from_secs(5);

    fn ctx(node: &str, secret: &[u8], interval: Duration) -> RelayCtx {
        let me = Origin::new(node, 1);
        RelayCtx {
            local: LocalOrigin::new(me.clone(), 64),
            me,
            cluster: "relay-test".into(),
            psk: secure::psk(secret),
            watermark_interval: interval,
            watermark_keepalive: Duration::from_secs(30),
            stats: Arc::default(),
            bind_ip: None,
        }
    }

    fn stamp(ctx: &RelayCtx, id: &str) -> Arc<crate::stamp::Stamped> {
        let update = Update {
            id: id.into(),
            topics: vec!["t".into()],
            data: id.into(),
            private: false,
            event_type: None,
            retry: None,
        };
        ctx.local.stamp(update, drop).expect("not sealed")
    }

    /// The listening end: what arrives, from whom.
    struct Listening {
        addr: String,
        msgs: mpsc::Receiver<(Origin, Msg)>,
        cancel: CancellationToken,
    }

    impl Drop for Listening {
        fn drop(&mut self) {
            self.cancel.cancel();
        }
    }

    impl Listening {
        /// Listens with `ctx`; the peer is told we hold its origin up to `have`.
        async fn start(ctx: RelayCtx, have: u64) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (inbound_tx, mut inbound) = mpsc::channel(64);
            let (msgs_tx, msgs) = mpsc::channel(1024);
            let cancel = CancellationToken::new();
            tokio::spawn(listen(
                listener,
                ctx,
                inbound_tx,
                cancel.clone(),
                TaskTracker::new(),
            ));
            tokio::spawn(async move {
                while let Some(event) = inbound.recv().await {
                    match event {
                        Inbound::Have { reply, .. } => {
                            let _ = reply.send(have);
                        }
                        Inbound::Msg { from, msg } => {
                            if msgs_tx.send((from, msg)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Self { addr, msgs, cancel }
        }

        async fn next(&mut self) -> (Origin, Msg) {
            tokio::time::timeout(WAIT, self.msgs.recv())
                .await
                .expect("a message in time")
                .expect("the link is open")
        }

        /// The next watermark, skipping nothing else (anything else fails).
        async fn watermark(&mut self) -> u64 {
            match self.next().await.1 {
                Msg::Watermark(w) => w,
                other => panic!("expected a watermark, got {other:?}"),
            }
        }
    }

    /// An outbound link from `from` to the node `to` listening at `addr`.
    struct Dialing {
        extra: mpsc::Sender<Msg>,
        state: Arc<LinkState>,
        cancel: CancellationToken,
    }

    impl Drop for Dialing {
        fn drop(&mut self) {
            self.cancel.cancel();
        }
    }

    fn dial(from: &RelayCtx, to: &Origin, addr: &str) -> Dialing {
        let (extra, extra_rx) = mpsc::channel(16);
        let state = Arc::new(LinkState::default());
        let cancel = CancellationToken::new();
        tokio::spawn(run_link(
            from.clone(),
            to.clone(),
            addr.into(),
            extra_rx,
            state.clone(),
            cancel.clone(),
        ));
        Dialing {
            extra,
            state,
            cancel,
        }
    }

    /// Nodes `a` and `b` with a link from a to b that is up (its first
    /// watermark arrived).
    async fn linked(interval: Duration) -> (RelayCtx, Listening, Dialing) {
        let (a, b) = (ctx("a", b"s", interval), ctx("b", b"s", interval));
        let mut at_b = Listening::start(b.clone(), 0).await;
        let link = dial(&a, &b.me, &at_b.addr);
        at_b.watermark().await;
        (a, at_b, link)
    }

    #[tokio::test]
    async fn the_log_streams_from_where_the_peer_is_each_batch_then_a_watermark() {
        let interval = Duration::from_millis(5);
        let (a, b) = (ctx("a", b"s", interval), ctx("b", b"s", interval));
        let stamps: Vec<_> = ["1", "2", "3"].iter().map(|id| stamp(&a, id)).collect();
        // b holds a's seq 1 already: the link starts at 2.
        let mut at_b = Listening::start(b.clone(), 1).await;
        let link = dial(&a, &b.me, &at_b.addr);
        for want in &stamps[1..] {
            let (from, msg) = at_b.next().await;
            assert_eq!(from, a.me);
            assert_eq!(msg, Msg::Update(want.clone()));
        }
        assert!(at_b.watermark().await >= stamps[2].stamp.hlc);
        // A new update goes out at once, with its watermark.
        let fourth = stamp(&a, "4");
        assert_eq!(at_b.next().await.1, Msg::Update(fourth.clone()));
        assert!(at_b.watermark().await >= fourth.stamp.hlc);
        assert!(link.state.connected.load(Ordering::Relaxed));
        assert_eq!(link.state.cursor.load(Ordering::Relaxed), 5);
        assert_eq!(a.stats.updates_out.load(Ordering::Relaxed), 3);
        assert_eq!(b.stats.updates_in.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_peer_update_is_answered_by_a_watermark_paced_to_the_interval() {
        let interval = Duration::from_millis(400);
        let (a, mut at_b, _link) = linked(interval).await;
        let first = Instant::now();
        // Another node's update stamped ahead of our clock: the others hold it
        // until we promise nothing of ours comes below it.
        let remote = a.local.now() + (1 << 20);
        a.local.observe(remote);
        assert!(at_b.watermark().await >= remote);
        assert!(
            first.elapsed() >= interval - Duration::from_millis(50),
            "owed watermarks are paced: not sooner than an interval after the last"
        );
        // After a quiet interval the next one owed goes out at once.
        tokio::time::sleep(interval).await;
        let later = a.local.now() + (1 << 21);
        let asked = Instant::now();
        a.local.observe(later);
        assert!(at_b.watermark().await >= later);
        assert!(
            asked.elapsed() < interval,
            "light load pays no pacing: {:?}",
            asked.elapsed()
        );
    }

    #[tokio::test]
    async fn extra_messages_share_the_link() {
        let (a, mut at_b, link) = linked(Duration::ZERO).await;
        let pull = Msg::Pull {
            origin: Origin::new("c", 7),
            from: 3,
            to: 9,
        };
        link.extra.send(pull.clone()).await.unwrap();
        assert_eq!(at_b.next().await, (a.me.clone(), pull));
    }

    #[tokio::test]
    async fn sealing_sends_the_rest_then_the_final_watermark() {
        let (a, mut at_b, link) = linked(Duration::ZERO).await;
        let last = stamp(&a, "last");
        a.local.seal();
        assert_eq!(at_b.next().await.1, Msg::Update(last));
        loop {
            if at_b.watermark().await == u64::MAX {
                break;
            }
        }
        let sealed = async {
            while !link.state.sealed.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, sealed).await.expect("sealed");
    }

    /// The attacker's side: a dialer without the secret, or with the secret
    /// but aiming at another node or generation, never gets a message in.
    #[tokio::test]
    async fn strangers_and_misdirected_links_are_refused_and_counted() {
        let interval = Duration::ZERO;
        let b = ctx("b", b"the secret", interval);
        let mut at_b = Listening::start(b.clone(), 0).await;
        let stranger = ctx("x", b"a guess", interval);
        stamp(&stranger, "forged");
        let forged = dial(&stranger, &b.me, &at_b.addr);
        let refused = async {
            while b.stats.auth_failures.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, refused)
            .await
            .expect("the failed proof is counted");
        assert!(!forged.state.connected.load(Ordering::Relaxed));

        // A member of the cluster dialing b's previous generation is refused too.
        let member = ctx("a", b"the secret", interval);
        let _stale = dial(&member, &Origin::new("b", 0), &at_b.addr);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(at_b.msgs.try_recv().is_err(), "nothing got through to b");
        assert_eq!(b.stats.updates_in.load(Ordering::Relaxed), 0);
    }
}

//! N-node clusters in one process: real UDP gossip, real TCP relay links, real
//! HTTP. [`TestCluster`] starts members on sockets bound at port 0 beforehand
//! ([`MemberSockets`]), stops and restarts them and reads their `/cluster`
//! views; [`Collector`] records what one subscriber receives; [`FaultProxy`]
//! is a TCP forwarder that can cut, freeze or slow the relay links that go
//! through it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubbub_cluster::Sockets;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::{get, subscribe_url};
use crate::sse::{SseClient, StreamEnd};
use crate::{Config, StatusCode, TestHub, eventually, lock};

/// The relay secret of [`member_config`].
pub const CLUSTER_SECRET: &str = "hubbub-test-cluster-secret";

/// How long cluster-level waits (joining, catching up, converging) may take:
/// several gossip rounds, a 2 s join timeout and reconnect backoff, on a busy box.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(30);

/// The addresses of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberAddrs {
    pub http: SocketAddr,
    pub gossip: SocketAddr,
    pub relay: SocketAddr,
}

impl MemberAddrs {
    /// Where `config` says the member listens.
    pub fn of(config: &Config) -> Self {
        Self {
            http: config.listen,
            gossip: config.gossip_listen,
            relay: config.relay_listen,
        }
    }
}

/// One member's sockets, bound before it starts: its config names their real
/// addresses, so nothing is guessed (a port picked free and released before
/// the node binds it can be taken in between by anything on the machine).
#[derive(Debug)]
pub struct MemberSockets {
    pub http: TcpListener,
    pub cluster: Sockets,
}

/// How long [`MemberSockets::rebind`] keeps trying.
const REBIND_WAIT: Duration = Duration::from_secs(10);

impl MemberSockets {
    /// HTTP, gossip and relay sockets on `127.0.0.1:0` (the kernel picks).
    pub async fn bind() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::try_bind(MemberAddrs {
            http: any,
            gossip: any,
            relay: any,
        })
        .await
        .unwrap_or_else(|e| panic!("loopback sockets on port 0: {e}"))
    }

    /// The addresses a stopped member had, bound again so that it comes back
    /// where its peers knew it (known ports, not guesses). Retries for a
    /// while: a port just released may still be held, e.g. by the kernel
    /// lending it to an outgoing connection meanwhile.
    pub async fn rebind(addrs: MemberAddrs) -> Self {
        let deadline = Instant::now() + REBIND_WAIT;
        loop {
            match Self::try_bind(addrs).await {
                Ok(sockets) => return sockets,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {addrs:?} again within {REBIND_WAIT:?}: {e}"),
            }
        }
    }

    async fn try_bind(addrs: MemberAddrs) -> Result<Self, String> {
        let http = TcpListener::bind(addrs.http)
            .await
            .map_err(|e| format!("http {}: {e}", addrs.http))?;
        let cluster = Sockets::bind(addrs.gossip, addrs.relay)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { http, cluster })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> MemberAddrs {
        MemberAddrs {
            http: self
                .http
                .local_addr()
                .expect("a bound listener has an address"),
            gossip: self.cluster.gossip.local_addr(),
            relay: self
                .cluster
                .relay
                .local_addr()
                .expect("a bound listener has an address"),
        }
    }
}

/// A member ready to start: its config (adjust it before starting) and the
/// sockets it names.
#[derive(Debug)]
pub struct NewMember {
    pub config: Config,
    pub sockets: MemberSockets,
}

impl NewMember {
    /// Binds fresh sockets and builds the [`member_config`] for them, seeded
    /// with `seeds` and its own gossip address (for a member joining a
    /// running cluster: pass [`TestCluster::seeds`]).
    pub async fn bind(node_id: &str, seeds: &[SocketAddr]) -> Self {
        let sockets = MemberSockets::bind().await;
        let addrs = sockets.addrs();
        let mut seeds = seeds.to_vec();
        seeds.push(addrs.gossip);
        Self {
            config: member_config(node_id, addrs, &seeds),
            sockets,
        }
    }
}

/// A member's config: [`crate::config`] (the test key, anonymous subscribers)
/// plus the cluster settings: node id, addresses, `seeds`, [`CLUSTER_SECRET`],
/// a 50 ms gossip interval and a 500 ms `order_wait`.
pub fn member_config(node_id: &str, addrs: MemberAddrs, seeds: &[SocketAddr]) -> Config {
    Config {
        listen: addrs.http,
        node_id: Some(node_id.to_owned()),
        seeds: seeds.iter().map(SocketAddr::to_string).collect(),
        gossip_listen: addrs.gossip,
        relay_listen: addrs.relay,
        cluster_secret: Some(CLUSTER_SECRET.to_owned()),
        gossip_interval: Duration::from_millis(50),
        order_wait: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(2),
        ..crate::config()
    }
}

/// `n` members `n1..=nN`: every member's sockets are bound first, so each is
/// seeded with every member's real gossip address.
pub async fn new_members(n: usize) -> Vec<NewMember> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(MemberSockets::bind().await);
    }
    let seeds: Vec<SocketAddr> = sockets.iter().map(|s| s.addrs().gossip).collect();
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, sockets)| NewMember {
            config: member_config(&format!("n{}", i + 1), sockets.addrs(), &seeds),
            sockets,
        })
        .collect()
}

/// One member as its `GET /cluster` describes itself.
#[derive(Debug, Clone)]
pub struct View {
    pub node: String,
    pub generation: u64,
    pub ready: bool,
    /// Origin (`node/generation`) -> highest contiguous seq held.
    pub vector: BTreeMap<String, u64>,
    pub members: Vec<MemberInfo>,
    /// The whole document, for anything not lifted out above.
    pub json: Value,
}

/// A member as another one sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub node: String,
    pub generation: u64,
    pub ready: bool,
    /// Our outbound relay link to it: `connected`, `connecting` or `none`.
    pub link: String,
}

impl View {
    pub fn parse(json: Value) -> Self {
        let vector = json["vector"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let members = json["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| MemberInfo {
                        node: m["node"].as_str().unwrap_or_default().to_owned(),
                        generation: m["generation"].as_u64().unwrap_or(0),
                        ready: m["ready"].as_bool().unwrap_or(false),
                        link: m["link"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            node: json["node"].as_str().unwrap_or_default().to_owned(),
            generation: json["generation"].as_u64().unwrap_or(0),
            ready: json["ready"].as_bool().unwrap_or(false),
            vector,
            members,
            json,
        }
    }

    /// A counter of `stats` (`released`, `late`, `lost`, `auth_failures`, ...).
    pub fn stat(&self, name: &str) -> u64 {
        self.json["stats"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no stats.{name} in {}", self.json))
    }

    /// `this node/generation`, as origins are named in vectors.
    pub fn origin(&self) -> String {
        format!("{}/{}", self.node, self.generation)
    }

    /// Whether it lists `node` at `generation` as a ready member with a connected link.
    pub fn connected_to(&self, node: &str, generation: u64) -> bool {
        self.members.iter().any(|m| {
            m.node == node && m.generation == generation && m.ready && m.link == "connected"
        })
    }
}

/// `GET {base_url}/cluster`, parsed.
pub async fn fetch_view(base_url: &str) -> View {
    let r = get(&format!("{base_url}/cluster")).await;
    assert_eq!(r.status, StatusCode::OK, "/cluster: {}", r.body);
    View::parse(serde_json::from_str(&r.body).expect("/cluster is JSON"))
}

/// Whether `GET {base_url}/readyz` answers 200.
pub async fn is_ready(base_url: &str) -> bool {
    get(&format!("{base_url}/readyz")).await.status == StatusCode::OK
}

/// The views of the members at `base_urls`, in order.
async fn fetch_views(base_urls: &[String]) -> Vec<View> {
    let mut views = Vec::with_capacity(base_urls.len());
    for url in base_urls {
        views.push(fetch_view(url).await);
    }
    views
}

/// Waits (at most `timeout`) until every member at `base_urls` is ready and
/// lists every other one (at its current generation) as ready, with a
/// connected relay link. `Err` names the last views, for the caller's panic.
pub async fn mesh_within(base_urls: &[String], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let views = fetch_views(base_urls).await;
        let mut ready = true;
        for url in base_urls {
            ready &= is_ready(url).await;
        }
        let meshed = views.iter().all(|v| {
            v.ready
                && views
                    .iter()
                    .filter(|o| o.node != v.node)
                    .all(|o| v.connected_to(&o.node, o.generation))
        });
        if ready && meshed {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the cluster did not mesh within {timeout:?}; last views: {views:#?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most `timeout`) until every member at `base_urls` holds the same
/// version vector, with nothing waiting and nothing lost; returns that vector.
/// `Err` names the last vectors and stats, for the caller's panic.
pub async fn converged_within(
    base_urls: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, u64>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let views = fetch_views(base_urls).await;
        let vectors: BTreeSet<&BTreeMap<String, u64>> = views.iter().map(|v| &v.vector).collect();
        let settled = views
            .iter()
            .all(|v| v.stat("lost") == 0 && v.stat("waiting") == 0);
        if vectors.len() == 1 && settled {
            return Ok(views
                .into_iter()
                .next()
                .map(|v| v.vector)
                .unwrap_or_default());
        }
        if Instant::now() >= deadline {
            let last: Vec<_> = views
                .iter()
                .map(|v| (&v.node, &v.vector, &v.json["stats"]))
                .collect();
            return Err(format!(
                "the vectors did not converge within {timeout:?}: {last:#?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Member {
    config: Config,
    hub: Option<TestHub>,
}

/// Members of one cluster, addressed by index (`0` is `n1`). Stopped members
/// keep their config, so [`TestCluster::restart`] brings them back on the same
/// addresses and node id with a new generation.
pub struct TestCluster {
    members: Vec<Member>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.members
                    .iter()
                    .map(|m| (&m.config.node_id, m.hub.as_ref().map(|h| h.addr))),
            )
            .finish()
    }
}

impl TestCluster {
    /// `n` members from [`new_members`], started and meshed.
    pub async fn start(n: usize) -> Self {
        Self::start_with(new_members(n).await).await
    }

    /// Starts every member and waits for the mesh ([`TestCluster::wait_mesh`]).
    pub async fn start_with(members: Vec<NewMember>) -> Self {
        let cluster = Self::launch(members).await;
        cluster.wait_mesh().await;
        cluster
    }

    /// Starts every member without waiting for anything.
    pub async fn launch(members: Vec<NewMember>) -> Self {
        let mut cluster = Self {
            members: Vec::with_capacity(members.len()),
        };
        for member in members {
            cluster.join(member).await;
        }
        cluster
    }

    /// Starts one more member (not waiting for it); returns its index.
    pub async fn join(&mut self, member: NewMember) -> usize {
        let NewMember { config, sockets } = member;
        let hub = TestHub::start_cluster_member(config.clone(), sockets).await;
        self.members.push(Member {
            config,
            hub: Some(hub),
        });
        self.members.len() - 1
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Indices of the running members.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].hub.is_some())
            .collect()
    }

    /// The running member `i`; panics if it is stopped.
    pub fn node(&self, i: usize) -> &TestHub {
        self.members[i]
            .hub
            .as_ref()
            .unwrap_or_else(|| panic!("member {i} is stopped"))
    }

    pub fn config(&self, i: usize) -> &Config {
        &self.members[i].config
    }

    pub fn node_id(&self, i: usize) -> &str {
        self.members[i].config.node_id.as_deref().unwrap_or("")
    }

    /// Every member's gossip address (for seeding a newcomer).
    pub fn seeds(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .map(|m| m.config.gossip_listen)
            .collect()
    }

    /// Stops member `i` gracefully (streams end, links and gossip close).
    pub async fn stop(&mut self, i: usize) {
        let mut hub = self.members[i]
            .hub
            .take()
            .unwrap_or_else(|| panic!("member {i} is already stopped"));
        hub.shutdown().await.expect("the member stops cleanly");
    }

    /// Starts a stopped member again: same config and addresses (bound again,
    /// see [`MemberSockets::rebind`]), new generation. Does not wait for it
    /// to catch up.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.members[i].hub.is_none(), "member {i} is running");
        let config = self.members[i].config.clone();
        let sockets = MemberSockets::rebind(MemberAddrs::of(&config)).await;
        self.members[i].hub = Some(TestHub::start_cluster_member(config, sockets).await);
    }

    /// `GET /cluster` of member `i`.
    pub async fn view(&self, i: usize) -> View {
        fetch_view(&self.node(i).base_url()).await
    }

    /// Views of every running member, by index.
    pub async fn views(&self) -> BTreeMap<usize, View> {
        let mut out = BTreeMap::new();
        for i in self.running() {
            out.insert(i, self.view(i).await);
        }
        out
    }

    /// Waits until member `i` answers `/readyz` with 200 (it has caught up).
    pub async fn wait_ready(&self, i: usize) {
        let url = self.node(i).base_url();
        eventually(
            CLUSTER_WAIT,
            &format!("{} ready", self.node_id(i)),
            || async { is_ready(&url).await.then_some(()) },
        )
        .await;
    }

    /// Base URLs of the running members.
    pub fn base_urls(&self) -> Vec<String> {
        self.running()
            .into_iter()
            .map(|i| self.node(i).base_url())
            .collect()
    }

    /// Waits until the running members form a mesh (see [`mesh_within`]).
    pub async fn wait_mesh(&self) {
        let meshed = mesh_within(&self.base_urls(), CLUSTER_WAIT).await;
        meshed.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits until the running members converge (see [`converged_within`]);
    /// returns their common vector.
    pub async fn wait_converged(&self) -> BTreeMap<String, u64> {
        let converged = converged_within(&self.base_urls(), CLUSTER_WAIT).await;
        converged.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops every running member.
    pub async fn shutdown(&mut self) {
        for i in self.running() {
            self.stop(i).await;
        }
    }
}

/// Reads one subscription in the background and records event ids as they
/// arrive, so many subscribers can be read at once.
#[derive(Debug)]
pub struct Collector {
    ids: Arc<Mutex<Vec<String>>>,
    end: Arc<Mutex<Option<StreamEnd>>>,
    task: JoinHandle<()>,
}

impl Collector {
    pub fn spawn(mut sse: SseClient) -> Self {
        let ids = Arc::new(Mutex::new(Vec::new()));
        let end = Arc::new(Mutex::new(None));
        let task = tokio::spawn({
            let (ids, end) = (ids.clone(), end.clone());
            async move {
                while let Some(event) = sse.next_event(Duration::from_secs(3600)).await {
                    lock(&ids).push(event.id.unwrap_or_default());
                }
                *lock(&end) = sse.end().cloned();
            }
        });
        Self { ids, end, task }
    }

    /// Subscribes to `topics` on `hub`, optionally resuming after `last_event_id`.
    pub async fn subscribe(hub: &TestHub, topics: &[&str], last_event_id: Option<&str>) -> Self {
        Self::subscribe_at(&hub.url(), topics, last_event_id).await
    }

    /// As [`Collector::subscribe`], on the hub at `hub_url` (e.g. a [`crate::HubProcess`]).
    pub async fn subscribe_at(hub_url: &str, topics: &[&str], last_event_id: Option<&str>) -> Self {
        let mut request = crate::client()
            .get(subscribe_url(hub_url, topics))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let sse = SseClient::connect(request).await;
        assert_eq!(sse.status, StatusCode::OK, "subscribe on {hub_url}");
        Self::spawn(sse)
    }

    /// The ids received so far, in order.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.ids).clone()
    }

    pub fn len(&self) -> usize {
        lock(&self.ids).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How the stream ended, once it has.
    pub fn end(&self) -> Option<StreamEnd> {
        lock(&self.end).clone()
    }

    /// Waits (at most `timeout`) until at least `n` ids arrived; returns them all.
    pub async fn wait_len(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.ids();
            if ids.len() >= n {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events within {timeout:?} (stream end: {:?}); last: {:?}",
                ids.len(),
                self.end(),
                ids.last()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` ids arrived, then a little longer to catch
    /// extras (duplicates or strays); returns everything.
    pub async fn settle(&self, n: usize, timeout: Duration, extra: Duration) -> Vec<String> {
        self.wait_len(n, timeout).await;
        tokio::time::sleep(extra).await;
        self.ids()
    }

    /// Closes the subscription; returns what was received.
    pub fn stop(self) -> Vec<String> {
        self.task.abort();
        self.ids()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the delivery orders of several nodes part, if they do: the first
/// index at which some order differs from the first one (or one is shorter),
/// with the items around it in every order, labelled; `None` when all agree.
/// Meant for failure messages, so a flaky ordering failure can be read.
pub fn order_difference(orders: &[(&str, &[String])]) -> Option<String> {
    const AROUND: usize = 5;
    let (_, first) = orders.first()?;
    let at = orders
        .iter()
        .filter_map(|(_, order)| {
            let common = order.len().min(first.len());
            let at = (0..common).find(|i| order[*i] != first[*i]);
            at.or((order.len() != first.len()).then_some(common))
        })
        .min()?;
    let from = at.saturating_sub(AROUND);
    let mut out = format!("the orders part at index {at}:\n");
    for (label, order) in orders {
        let to = (at + AROUND + 1).min(order.len());
        let shown: Vec<String> = (from..to)
            .map(|i| {
                let mark = if i == at { ">" } else { " " };
                format!("{mark}{i}:{}", order[i])
            })
            .collect();
        out += &format!("  {label} ({} items): {}\n", order.len(), shown.join(" "));
    }
    for (label, order) in orders {
        out += &format!("  {label} in full: {order:?}\n");
    }
    Some(out)
}

/// What a [`FaultProxy`] does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards (after the configured latency).
    Pass,
    /// Existing connections were dropped; new ones are accepted and closed at once.
    Cut,
    /// Nothing moves, nothing closes: bytes wait in the proxy and new
    /// connections hang, as behind a silent partition or a paused node.
    Frozen,
}

#[derive(Debug)]
struct ProxyShared {
    target: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    latency_us: AtomicU64,
    accepted: AtomicU64,
    /// Cancelled (and replaced) by `cut`: every connection of the old epoch drops.
    epoch: Mutex<CancellationToken>,
    /// Every byte forwarded (both directions), up to [`CAPTURE_MAX`]: what a
    /// passive reader on the path sees.
    captured: Mutex<Vec<u8>>,
    /// Set by [`FaultProxy::corrupt_next`]: flip a bit in the next chunk
    /// going to the target (an active attacker on the path).
    corrupt_next: std::sync::atomic::AtomicBool,
}

const CAPTURE_MAX: usize = 8 << 20;

impl ProxyShared {
    /// Records a chunk passing through, and corrupts it if asked to.
    fn observe(&self, chunk: &[u8], to_target: bool) -> Vec<u8> {
        let mut captured = lock(&self.captured);
        let room = CAPTURE_MAX.saturating_sub(captured.len());
        captured.extend_from_slice(&chunk[..chunk.len().min(room)]);
        drop(captured);
        let mut chunk = chunk.to_vec();
        if to_target && self.corrupt_next.swap(false, Ordering::Relaxed) {
            let last = chunk.len() - 1;
            chunk[last] ^= 0x01;
        }
        chunk
    }

    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }

    async fn wait_unfrozen(&self) {
        let mut rx = self.mode.subscribe();
        let _ = rx.wait_for(|m| *m != ProxyMode::Frozen).await;
    }
}

/// A real TCP forwarder on `127.0.0.1:0` in front of `target`, for cutting,
/// freezing or slowing the links that go through it. Put it in front of a
/// node's relay port by setting that node's `relay_advertise` to
/// [`FaultProxy::addr`]: every peer then dials the proxy to reach the node.
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<ProxyShared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a fresh loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), target).await
    }

    /// Listens on `listen` (a fixed port lets a proxy outlive a restarted target).
    pub async fn start_on(listen: SocketAddr, target: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("the fault proxy binds {listen}: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(ProxyShared {
            target,
            mode: watch::channel(ProxyMode::Pass).0,
            latency_us: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            epoch: Mutex::new(CancellationToken::new()),
            captured: Mutex::default(),
            corrupt_next: Default::default(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Self { addr, shared, task }
    }

    /// Drops every current connection and closes new ones on arrival.
    pub fn cut(&self) {
        self.shared.mode.send_replace(ProxyMode::Cut);
        let old = std::mem::take(&mut *lock(&self.shared.epoch));
        old.cancel();
    }

    /// Stops moving bytes without closing anything.
    pub fn freeze(&self) {
        self.shared.mode.send_replace(ProxyMode::Frozen);
    }

    /// Back to forwarding (frozen bytes flow on; cut connections stay gone).
    pub fn restore(&self) {
        self.shared.mode.send_replace(ProxyMode::Pass);
    }

    /// Delays every chunk by `latency` (each direction), keeping throughput.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.borrow()
    }

    /// The bytes forwarded so far, both directions (the first 8 MiB).
    pub fn captured(&self) -> Vec<u8> {
        lock(&self.shared.captured).clone()
    }

    /// Flips one bit in the next chunk sent toward the target.
    pub fn corrupt_next(&self) {
        self.shared.corrupt_next.store(true, Ordering::Relaxed);
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        lock(&self.shared.epoch).cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if *shared.mode.borrow() == ProxyMode::Cut {
            drop(client);
            continue;
        }
        let epoch = lock(&shared.epoch).clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = epoch.cancelled() => {}
                _ = forward(client, &shared) => {}
            }
        });
    }
}

async fn forward(client: TcpStream, shared: &ProxyShared) {
    shared.wait_unfrozen().await;
    let Ok(server) = TcpStream::connect(shared.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    // The link is gone as soon as either direction ends.
    tokio::select! {
        _ = pipe(client_rx, server_tx, shared, true) => {}
        _ = pipe(server_rx, client_tx, shared, false) => {}
    }
}

/// Copies `from` to `to`: a reader stamps each chunk with its due time, a
/// writer waits for it (and for the proxy to be unfrozen) before writing.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &ProxyShared,
    to_target: bool,
) {
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let read = async move {
        let mut buf = vec![0; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = Instant::now() + shared.latency();
                    let chunk = shared.observe(&buf[..n], to_target);
                    if chunk_tx.send((due, chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = chunk_rx.recv().await {
            tokio::time::sleep_until(due).await;
            shared.wait_unfrozen().await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_differences_name_the_index_and_show_every_order() {
        let ids = |s: &str| -> Vec<String> { s.split(' ').map(String::from).collect() };
        let (a, b, c) = (ids("x y z w"), ids("x y w z"), ids("x y z"));
        assert_eq!(order_difference(&[("n1", &a), ("n2", &a)]), None);
        let d = order_difference(&[("n1", &a), ("n2", &b)]).expect("they differ");
        assert!(d.contains("index 2"), "{d}");
        assert!(d.contains("n1 (4 items):  0:x  1:y >2:z  3:w"), "{d}");
        assert!(d.contains("n2 (4 items):  0:x  1:y >2:w  3:z"), "{d}");
        let d = order_difference(&[("n1", &a), ("n3", &c)]).expect("one is shorter");
        assert!(d.contains("index 3"), "{d}");
    }

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0; msg.len()];
        match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test]
    async fn the_proxy_forwards_cuts_freezes_and_restores() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut a = TcpStream::connect(proxy.addr).await.expect("connect");
        let long = Duration::from_secs(5);
        assert_eq!(
            round_trip(&mut a, b"hi", long).await.as_deref(),
            Some(&b"hi"[..])
        );

        // Frozen: bytes wait, then flow on restore over the same connection.
        proxy.freeze();
        assert_eq!(
            round_trip(&mut a, b"x", Duration::from_millis(200)).await,
            None
        );
        proxy.restore();
        let mut late = [0u8; 1];
        tokio::time::timeout(long, a.read_exact(&mut late))
            .await
            .expect("the frozen byte arrives")
            .expect("read");
        assert_eq!(&late, b"x");

        // Cut: the connection drops and new ones are closed on arrival.
        proxy.cut();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(long, a.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "the old connection is gone");
        let mut b = TcpStream::connect(proxy.addr)
            .await
            .expect("accepted, then closed");
        assert_eq!(
            round_trip(&mut b, b"no", Duration::from_millis(500)).await,
            None
        );
        proxy.restore();
        let mut c = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(
            round_trip(&mut c, b"ok", long).await.as_deref(),
            Some(&b"ok"[..])
        );

        // Latency delays without losing anything.
        proxy.set_latency(Duration::from_millis(100));
        let start = Instant::now();
        assert_eq!(
            round_trip(&mut c, b"slow", long).await.as_deref(),
            Some(&b"slow"[..])
        );
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "both directions delayed"
        );
        assert_eq!(proxy.accepted(), 3);
    }
}

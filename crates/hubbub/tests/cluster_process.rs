//! A cluster of real `hubbub serve` processes on loopback: one delivery order on
//! every node for publishes made to all of them, and a node killed with
//! SIGKILL that comes back (new generation), catches up and serves resume.

use std::collections::HashSet;
use std::time::Duration;

use hubbub_server::HUB_PATH;
use hubbub_testkit::cluster::{converged_within, fetch_view, mesh_within};
use hubbub_testkit::{
    Collector, HubProcess, MemberAddrs, StatusCode, View, order_difference, publish, publisher,
};

const BIN: &str = env!("CARGO_BIN_EXE_hubbub");
/// Joining, catching up, converging: gossip rounds, a join timeout, backoff.
const CLUSTER_WAIT: Duration = Duration::from_secs(40);
/// How long a subscriber keeps reading after the expected count, for extras.
const SETTLE_EXTRA: Duration = Duration::from_millis(700);
const TOPIC: &str = "https://example.com/cluster/processes";
const DEV_KEY: &str = hubbub_server::DEV_JWT_KEY;
const SECRET: &str = "process-test-cluster-secret";

/// A seed for the first node, where nothing listens (port 1 is privileged;
/// no test binds it): seeds are what makes a node a cluster member, and no
/// other member's address is known before the first one has started.
const NO_SEED: &str = "127.0.0.1:1";
/// How long a restart keeps trying to bind the addresses it had.
const REBIND_WAIT: Duration = Duration::from_secs(10);

/// One member. Its first start binds port 0 everywhere; it then keeps the
/// addresses it reported, so a restart comes back where its peers knew it.
struct Node {
    id: String,
    /// Known once started (from its log).
    addrs: Option<MemberAddrs>,
    seeds: String,
    process: Option<HubProcess>,
    /// What earlier (killed) runs logged, for failure messages.
    earlier_logs: String,
    /// More `serve` flags.
    extra: Vec<&'static str>,
}

impl Node {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            addrs: None,
            seeds: NO_SEED.to_owned(),
            process: None,
            earlier_logs: String::new(),
            extra: Vec::new(),
        }
    }

    /// Starts `hubbub serve` and waits until it listens: on port 0 the first
    /// time (then records what it bound), on its known addresses afterwards
    /// (retrying while a port is still held).
    async fn start(&mut self) {
        assert!(self.process.is_none(), "{} is running", self.id);
        let Some(addrs) = self.addrs else {
            let any = "127.0.0.1:0".to_owned();
            let process = HubProcess::serve(BIN, &self.args(&any, &any, &any)).await;
            let logs = || process.stderr();
            self.addrs = Some(MemberAddrs {
                http: process.addr,
                gossip: process
                    .gossip
                    .unwrap_or_else(|| panic!("no gossip address logged: {}", logs())),
                relay: process
                    .relay
                    .unwrap_or_else(|| panic!("no relay address logged: {}", logs())),
            });
            self.process = Some(process);
            return;
        };
        let (http, gossip, relay) = (
            addrs.http.to_string(),
            addrs.gossip.to_string(),
            addrs.relay.to_string(),
        );
        let args = self.args(&http, &gossip, &relay);
        let deadline = tokio::time::Instant::now() + REBIND_WAIT;
        let mut failed = String::new();
        let process = loop {
            match HubProcess::try_serve_with_env(BIN, &args, &[]).await {
                Ok(process) => break process,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    failed += &e;
                    failed.push('\n');
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{} did not start again on {addrs:?}: {e}", self.id),
            }
        };
        self.earlier_logs += &failed;
        self.process = Some(process);
    }

    fn args<'a>(&'a self, http: &'a str, gossip: &'a str, relay: &'a str) -> Vec<&'a str> {
        let mut args = vec![
            "--dev",
            "--listen",
            http,
            "--node-id",
            &self.id,
            "--gossip-listen",
            gossip,
            "--relay-listen",
            relay,
            "--seeds",
            &self.seeds,
            "--cluster-secret",
            SECRET,
            "--gossip-interval",
            "50ms",
            "--order-wait",
            "500ms",
        ];
        args.extend(&self.extra);
        args
    }

    fn addrs(&self) -> MemberAddrs {
        self.addrs
            .unwrap_or_else(|| panic!("{} has not started yet", self.id))
    }

    /// SIGKILL: no drain, no goodbye to the cluster.
    async fn kill(&mut self) {
        let process = self.process.take().expect("running");
        self.earlier_logs += &process.kill().await;
        self.earlier_logs.push('\n');
    }

    fn base(&self) -> String {
        format!("http://{}", self.addrs().http)
    }

    fn url(&self) -> String {
        format!("{}{HUB_PATH}", self.base())
    }

    async fn subscribe(&self, last_event_id: Option<&str>) -> Collector {
        Collector::subscribe_at(&self.url(), &[TOPIC], last_event_id).await
    }

    async fn view(&self) -> View {
        fetch_view(&self.base()).await
    }

    fn logs(&self) -> String {
        let current = self.process.as_ref().map(HubProcess::stderr);
        format!("{}{}", self.earlier_logs, current.unwrap_or_default())
    }
}

/// `n1..=nN`, started one after the other on ports the kernel picks: the
/// first seeded with [`NO_SEED`], each next one with the gossip addresses of
/// those already running (it announces itself to them). Then every node's
/// seeds name all members, for restarts.
async fn start_nodes(n: usize, configure: impl Fn(&mut Node)) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for i in 0..n {
        let mut node = Node::new(&format!("n{}", i + 1));
        if !nodes.is_empty() {
            node.seeds = gossip_addrs(&nodes);
        }
        configure(&mut node);
        node.start().await;
        nodes.push(node);
    }
    let all = gossip_addrs(&nodes);
    for node in &mut nodes {
        node.seeds.clone_from(&all);
    }
    nodes
}

/// The gossip addresses of `nodes`, as a `--seeds` value.
fn gossip_addrs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| n.addrs().gossip.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn base_urls(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(Node::base).collect()
}

/// Waits until every node is ready and has a connected link to each other one.
async fn wait_mesh(nodes: &[Node]) {
    if let Err(e) = mesh_within(&base_urls(nodes), CLUSTER_WAIT).await {
        let logs: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}:\n{}", n.id, n.logs()))
            .collect();
        panic!("{e}\n{}", logs.join("\n"));
    }
}

/// Waits for at least `n` ids, then a little longer for extras; returns all.
/// Does not fail when fewer arrive in time: the caller's checks then say
/// what is missing and where the orders part, with the nodes' logs.
async fn settle(sub: &Collector, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
    while sub.len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(SETTLE_EXTRA).await;
    sub.ids()
}

async fn publish_series(node: &Node, prefix: String, n: usize) -> Vec<String> {
    let (url, token) = (node.url(), publisher(DEV_KEY));
    let ids: Vec<String> = (0..n).map(|k| format!("{prefix}-{k:03}")).collect();
    for id in &ids {
        let form = [("topic", TOPIC), ("id", id.as_str()), ("data", "x")];
        let r = publish(&url, &token, &form).await;
        assert_eq!(r.status, StatusCode::OK, "publish {id}: {}", r.body);
    }
    ids
}

/// Publishes one series per node at the same time.
async fn publish_everywhere(nodes: &[&Node], prefix: &str, n: usize) -> Vec<String> {
    let all = futures_util::future::join_all(
        nodes
            .iter()
            .map(|node| publish_series(node, format!("{prefix}{}", node.id), n)),
    )
    .await;
    all.into_iter().flatten().collect()
}

/// Every labelled order is the same; if not, the failure shows where they
/// part (first differing index, the items around it in each order) and
/// every node's log, so a rare ordering failure can be diagnosed.
#[track_caller]
fn assert_one_order(nodes: &[Node], orders: &[(&str, &[String])], what: &str) {
    if let Some(difference) = order_difference(orders) {
        panic!("{what}: {difference}{}", all_logs(nodes));
    }
}

fn all_logs(nodes: &[Node]) -> String {
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| format!("---- {} log:\n{}", n.id, n.logs()))
        .collect();
    logs.join("\n")
}

/// `got` holds every id of `expected` once and nothing else; if not, the
/// failure lists what is missing, extra or twice, with the nodes' logs.
#[track_caller]
fn assert_exactly(nodes: &[Node], node: &str, got: &[String], expected: &[String]) {
    let mut seen = HashSet::new();
    let twice: Vec<&String> = got.iter().filter(|id| !seen.insert(*id)).collect();
    let want: HashSet<&String> = expected.iter().collect();
    let missing: Vec<&String> = expected.iter().filter(|id| !seen.contains(id)).collect();
    let extra: Vec<&String> = got.iter().filter(|id| !want.contains(id)).collect();
    if !(twice.is_empty() && missing.is_empty() && extra.is_empty()) {
        panic!(
            "{node} got {} of {} ids: missing {missing:?}, extra {extra:?}, twice {twice:?}\n{got:?}\n{}",
            got.len(),
            expected.len(),
            all_logs(nodes)
        );
    }
}

#[tokio::test]
async fn three_processes_share_one_order_and_survive_a_kill_9() {
    // The version vectors below count exactly the updates published here:
    // no subscription events (`--dev` would track subscriptions).
    let mut nodes = start_nodes(3, |n| n.extra.push("--subscriptions=false")).await;
    wait_mesh(&nodes).await;

    let mut subs = Vec::new();
    for n in &nodes {
        subs.push(n.subscribe(None).await);
    }
    let first = publish_everywhere(&nodes.iter().collect::<Vec<_>>(), "a", 30).await;
    let mut orders = Vec::new();
    for sub in &subs {
        orders.push(settle(sub, first.len()).await);
    }
    let labelled: Vec<(&str, &[String])> = nodes
        .iter()
        .zip(&orders)
        .map(|(n, o)| (n.id.as_str(), o.as_slice()))
        .collect();
    assert_one_order(&nodes, &labelled, "the nodes delivered different orders");
    let reference = orders.swap_remove(0);
    assert_exactly(&nodes, "n1", &reference, &first);
    let generation = nodes[1].view().await.generation;

    // A client of n2 read up to here; then n2 is killed outright.
    let cursor = reference[44].clone();
    drop(subs.remove(1));
    nodes[1].kill().await;
    let during = publish_everywhere(&[&nodes[0], &nodes[2]], "b", 15).await;

    nodes[1].start().await;
    wait_mesh(&nodes).await;
    assert_ne!(
        nodes[1].view().await.generation,
        generation,
        "a new generation"
    );

    let resumed = nodes[1].subscribe(Some(&cursor)).await;
    let history = nodes[1].subscribe(Some("earliest")).await;
    let after = publish_series(&nodes[1], "c-n2".into(), 10).await;

    let mut everything = first.clone();
    everything.extend(during);
    everything.extend(after);
    let reference = settle(&subs[0], everything.len()).await;
    let n3 = settle(&subs[1], everything.len()).await;
    assert_one_order(
        &nodes,
        &[("n1", &reference), ("n3", &n3)],
        "n3 and n1 disagree",
    );
    assert_exactly(&nodes, "n1", &reference, &everything);
    let pos = reference
        .iter()
        .position(|id| *id == cursor)
        .expect("cursor");
    assert_eq!(
        settle(&resumed, reference.len() - pos - 1).await,
        reference[pos + 1..],
        "the resumed client got exactly what it missed"
    );
    let n2_history = settle(&history, reference.len()).await;
    assert_one_order(
        &nodes,
        &[("n1", &reference), ("n2 (restarted) history", &n2_history)],
        "the restarted process holds the whole history in another order",
    );
    let vector = converged_within(&base_urls(&nodes), CLUSTER_WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let repaired = nodes[1].view().await.stat("repaired");
    assert!(
        repaired >= 30,
        "the killed generation's updates came back through anti-entropy: {repaired}"
    );
    assert_eq!(
        vector.values().sum::<u64>(),
        everything.len() as u64,
        "{vector:?}"
    );
    assert_eq!(
        vector.len(),
        4,
        "n1, n3 and both generations of n2: {vector:?}"
    );
}

/// `--publish-ack replicated`: an update answered 200 survives a kill -9 of
/// the node that answered, sent right after the answer (mid-stream of
/// publishes): some peer already held it.
#[tokio::test]
async fn replicated_acks_survive_a_kill_9_of_the_publishing_node() {
    let mut nodes = start_nodes(2, |n| {
        if n.id == "n1" {
            n.extra = vec!["--publish-ack", "replicated"];
        }
    })
    .await;
    wait_mesh(&nodes).await;
    let witness = nodes[1].subscribe(None).await;

    let (url, token) = (nodes[0].url(), publisher(DEV_KEY));
    let publishing = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut acked = Vec::new();
        for k in 0.. {
            let id = format!("r-{k:05}");
            let form = [("topic", TOPIC), ("id", id.as_str())];
            // The node dies mid-stream: a transport error ends the run.
            let sent = client.post(&url).bearer_auth(&token).form(&form).send();
            match sent.await {
                Ok(r) if r.status() == reqwest::StatusCode::OK => acked.push(id),
                _ => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    nodes[0].kill().await;
    let acked = publishing.await.expect("the publisher");
    assert!(acked.len() > 10, "publishing ran: {}", acked.len());
    let got = settle(&witness, acked.len()).await;
    let got: HashSet<&String> = got.iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !got.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged then lost with the node: {lost:?}\n{}",
        nodes[1].logs()
    );
}

/// Anyone who can reach the gossip port can make chitchat warn, once per
/// undecodable datagram; the log holds a bounded number of those warnings,
/// however many datagrams arrive, and the node stays healthy.
#[tokio::test]
async fn garbage_gossip_datagrams_cannot_flood_the_log() {
    let mut node = Node::new("n1");
    node.start().await;
    let gossip = node.addrs().gossip;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    for i in 0..300u32 {
        let garbage = [0xde, 0xad, 0xbe, 0xef, (i % 251) as u8, 7, 7, 7];
        socket.send_to(&garbage, gossip).expect("send");
    }
    let health = hubbub_testkit::get(&format!("{}/healthz", node.base())).await;
    assert_eq!(health.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warned = node.logs().matches("invalid-chitchat-payload").count();
    assert!(
        (1..=10).contains(&warned),
        "{warned} warnings for 300 garbage datagrams"
    );
}

/// The resource identifier the presence test's nodes share, so one 1.0
/// token (from the `--dev` issuer) is good on every node.
const PRESENCE_RESOURCE: &str = "https://hub.example/.well-known/mercure";

fn presence_token() -> String {
    let claims = hubbub_proto::token::access_token_claims(
        hubbub_server::DEV_ISSUER,
        PRESENCE_RESOURCE,
        &[(&["subscribe"], &["*"])],
        Duration::from_secs(600),
    );
    hubbub_proto::token::mint_access_token("HS256", DEV_KEY, &claims).unwrap()
}

async fn presence_subscribe(node: &Node, matcher: &str) -> hubbub_testkit::SseClient {
    let url = format!(
        "{}?{}",
        node.url(),
        hubbub_testkit::encode_form(&[("match", matcher)])
    );
    let sse = hubbub_testkit::SseClient::connect(
        hubbub_testkit::client()
            .get(url)
            .bearer_auth(presence_token()),
    )
    .await;
    assert_eq!(sse.status, StatusCode::OK);
    sse
}

/// The matchers `node`'s subscriptions API lists, followers' own left out.
async fn listed(node: &Node) -> std::collections::BTreeSet<String> {
    let (subs, _) = hubbub_testkit::presence::list(&node.base(), &presence_token()).await;
    let mut m = hubbub_testkit::presence::matchers(&subs);
    m.remove(hubbub_testkit::presence::ALL_EVENTS);
    m
}

async fn wait_listed(nodes: &[Node], on: &[usize], expected: &[&str], what: &str) {
    let expected: std::collections::BTreeSet<String> =
        expected.iter().map(|s| (*s).to_owned()).collect();
    let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
    for &i in on {
        loop {
            let got = listed(&nodes[i]).await;
            if got == expected {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{what}: {} lists {got:?}, expected {expected:?}\n{}",
                    nodes[i].id,
                    all_logs(nodes)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[tokio::test]
async fn a_killed_nodes_subscriptions_end_once_everywhere_and_its_restart_leaves_no_ghost() {
    let mut nodes = start_nodes(3, |n| {
        n.extra.extend(["--oauth-resource", PRESENCE_RESOURCE]);
    })
    .await;
    wait_mesh(&nodes).await;
    let watch = hubbub_testkit::PresenceFollower::start(&nodes[1].base(), &presence_token()).await;
    let mut on_n1 = Vec::new();
    let mut all = Vec::new();
    for i in 0..5 {
        let m = format!("https://example.com/n1/{i}");
        on_n1.push(presence_subscribe(&nodes[0], &m).await);
        all.push(m);
    }
    let _on_n3 = presence_subscribe(&nodes[2], "https://example.com/n3").await;
    all.push("https://example.com/n3".to_owned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_listed(&nodes, &[0, 1, 2], &all, "before the kill").await;

    let killed = std::time::Instant::now();
    nodes[0].kill().await;
    wait_listed(
        &nodes,
        &[1, 2],
        &["https://example.com/n3"],
        "after SIGKILL of n1",
    )
    .await;
    eprintln!(
        "presence: n1's subscriptions ended on n2 and n3 {:?} after its SIGKILL",
        killed.elapsed()
    );
    drop(on_n1);
    // More time for duplicates to show: there must be none.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ends: Vec<String> = watch
        .events()
        .into_iter()
        .filter(|(id, on)| !on && id.contains("%2Fn1%2F"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ends.len(),
        5,
        "exactly one end each: {ends:?}\n{}",
        all_logs(&nodes)
    );
    assert!(watch.repeats().is_empty(), "{:?}", watch.repeats());

    // Back as a new generation: it catches up and lists no ghost of its
    // former subscriptions, nor does anyone else.
    nodes[0].start().await;
    wait_mesh(&nodes).await;
    wait_listed(
        &nodes,
        &[0, 1, 2],
        &["https://example.com/n3"],
        "after n1's restart",
    )
    .await;
    let _again = presence_subscribe(&nodes[0], "https://example.com/n1/again").await;
    wait_listed(
        &nodes,
        &[0, 1, 2],
        &["https://example.com/n1/again", "https://example.com/n3"],
        "a subscriber of the restarted n1",
    )
    .await;
    assert!(watch.repeats().is_empty(), "{:?}", watch.repeats());
}

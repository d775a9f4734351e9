//! A cluster of real `hubbub serve` processes on loopback: one delivery order on
//! every node for publishes made to all of them, and a node killed with
//! SIGKILL that comes back (new generation), catches up and serves resume.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hubbub_proto::decode::{EventParser, Item};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const BIN: &str = env!("CARGO_BIN_EXE_hubbub");
const WAIT: Duration = Duration::from_secs(10);
/// Joining, catching up, converging: gossip rounds, a join timeout, backoff.
const CLUSTER_WAIT: Duration = Duration::from_secs(40);
const TOPIC: &str = "https://example.com/cluster/processes";
const DEV_KEY: &str = hubbub_server::DEV_JWT_KEY;
const SECRET: &str = "process-test-cluster-secret";

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn publisher_token() -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(DEV_KEY.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "mercure": { "publish": ["*"] } }),
        &key,
    )
    .expect("signing works")
}

/// One member's fixed addresses and arguments; it can be (re)started any time.
struct Node {
    id: String,
    http: SocketAddr,
    gossip: SocketAddr,
    relay: SocketAddr,
    seeds: String,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn new(
        id: &str,
        seeds: &str,
        (http, gossip, relay): (SocketAddr, SocketAddr, SocketAddr),
    ) -> Self {
        Self {
            id: id.to_owned(),
            http,
            gossip,
            relay,
            seeds: seeds.to_owned(),
            child: None,
            stderr: Arc::default(),
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.id);
        let args = [
            "serve".to_owned(),
            "--dev".to_owned(),
            "--listen".to_owned(),
            self.http.to_string(),
            "--node-id".to_owned(),
            self.id.clone(),
            "--gossip-listen".to_owned(),
            self.gossip.to_string(),
            "--relay-listen".to_owned(),
            self.relay.to_string(),
            "--seeds".to_owned(),
            self.seeds.clone(),
            "--cluster-secret".to_owned(),
            SECRET.to_owned(),
            "--gossip-interval".to_owned(),
            "50ms".to_owned(),
            "--order-wait".to_owned(),
            "500ms".to_owned(),
        ];
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars() {
            if name.starts_with("HUBBUB_") {
                cmd.env_remove(name);
            }
        }
        let mut child = cmd.spawn().expect("the hubbub binary starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let stderr = self.stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                stderr.lock().expect("not poisoned").push(line);
            }
        });
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no goodbye to the cluster.
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.expect("SIGKILL is delivered");
    }

    fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    fn url(&self) -> String {
        format!("{}/.well-known/mercure", self.base())
    }

    fn logs(&self) -> String {
        self.stderr.lock().expect("not poisoned").join("\n")
    }

    async fn ready(&self) -> bool {
        let r = client().get(format!("{}/readyz", self.base())).send().await;
        r.is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
    }

    async fn view(&self) -> Option<serde_json::Value> {
        let r = client()
            .get(format!("{}/cluster", self.base()))
            .send()
            .await
            .ok()?;
        serde_json::from_str(&r.text().await.ok()?).ok()
    }
}

/// Waits until every running node is ready and has a connected link to each other one.
async fn wait_mesh(nodes: &[Node]) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let mut views = BTreeMap::new();
        let mut ready = true;
        for n in nodes {
            ready &= n.ready().await;
            if let Some(v) = n.view().await {
                views.insert(n.id.clone(), v);
            }
        }
        let meshed = views.len() == nodes.len()
            && views.values().all(|v| {
                let connected: HashSet<&str> = v["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| m["link"] == "connected" && m["ready"] == true)
                    .filter_map(|m| m["node"].as_str())
                    .collect();
                nodes
                    .iter()
                    .filter(|n| v["node"] != n.id.as_str())
                    .all(|n| connected.contains(n.id.as_str()))
            });
        if ready && meshed {
            return;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}:\n{}", n.id, n.logs()))
                .collect();
            panic!(
                "no mesh within {CLUSTER_WAIT:?}: {views:#?}\n{}",
                logs.join("\n")
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node reports the same version vector with nothing lost.
async fn wait_converged(nodes: &[Node]) -> serde_json::Value {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let mut vectors = Vec::new();
        let mut lost = 0;
        for n in nodes {
            if let Some(v) = n.view().await {
                lost += v["stats"]["lost"].as_u64().unwrap_or(u64::MAX / 8);
                vectors.push(v["vector"].clone());
            }
        }
        if vectors.len() == nodes.len() && lost == 0 && vectors.iter().all(|v| *v == vectors[0]) {
            return vectors.swap_remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within {CLUSTER_WAIT:?}: {vectors:#?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// A subscription read in the background; ids are recorded as they arrive.
struct Sub {
    ids: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Sub {
    async fn open(node: &Node, last_event_id: Option<&str>) -> Self {
        let mut request = client()
            .get(format!(
                "{}?topic={}",
                node.url(),
                TOPIC.replace(':', "%3A")
            ))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = timeout(WAIT, request.send())
            .await
            .expect("subscribed in time")
            .expect("the node is reachable");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "subscribe");
        let ids = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let ids = ids.clone();
            async move {
                let mut body = response.bytes_stream();
                let mut parser = EventParser::new();
                while let Some(Ok(chunk)) = body.next().await {
                    for item in parser.feed(&chunk) {
                        if let Item::Event(e) = item {
                            ids.lock()
                                .expect("not poisoned")
                                .push(e.id.unwrap_or_default());
                        }
                    }
                }
            }
        });
        Self { ids, task }
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().expect("not poisoned").clone()
    }

    /// Waits for at least `n` ids, then a little longer for extras; returns all.
    async fn settle(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + CLUSTER_WAIT;
        while self.ids().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events arrived",
                self.ids().len()
            );
            sleep(Duration::from_millis(20)).await;
        }
        sleep(Duration::from_millis(700)).await;
        self.ids()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn publish_series(node: &Node, prefix: String, n: usize) -> Vec<String> {
    let (url, token) = (node.url(), publisher_token());
    let ids: Vec<String> = (0..n).map(|k| format!("{prefix}-{k:03}")).collect();
    let task = tokio::spawn({
        let ids = ids.clone();
        async move {
            for id in ids {
                let form = [("topic", TOPIC), ("id", id.as_str()), ("data", "x")];
                let r = timeout(
                    WAIT,
                    client().post(&url).bearer_auth(&token).form(&form).send(),
                )
                .await
                .expect("the node answers in time")
                .expect("the node is reachable");
                assert_eq!(r.status(), reqwest::StatusCode::OK, "publish {id}");
            }
        }
    });
    task.await.expect("publisher");
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

#[track_caller]
fn assert_exactly(node: &str, got: &[String], expected: &[String]) {
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "{node} got duplicates: {got:?}");
    let want: HashSet<&String> = expected.iter().collect();
    assert_eq!(unique, want, "{node} got another set");
}

#[tokio::test]
async fn three_processes_share_one_order_and_survive_a_kill_9() {
    let addrs: Vec<_> = (0..3)
        .map(|_| (free_tcp(), free_udp(), free_tcp()))
        .collect();
    let seeds = addrs
        .iter()
        .map(|a| a.1.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Node::new(&format!("n{}", i + 1), &seeds, *a))
        .collect();
    for n in &mut nodes {
        n.start();
    }
    wait_mesh(&nodes).await;

    let mut subs = Vec::new();
    for n in &nodes {
        subs.push(Sub::open(n, None).await);
    }
    let first = publish_everywhere(&nodes.iter().collect::<Vec<_>>(), "a", 30).await;
    let reference = subs[0].settle(first.len()).await;
    assert_exactly("n1", &reference, &first);
    for (i, sub) in subs.iter().enumerate() {
        assert_eq!(
            sub.settle(first.len()).await,
            reference,
            "n{} delivered another order than n1",
            i + 1
        );
    }
    let generation = nodes[1].view().await.expect("a view")["generation"].clone();

    // A client of n2 read up to here; then n2 is killed outright.
    let cursor = reference[44].clone();
    drop(subs.remove(1));
    nodes[1].kill().await;
    let during = publish_everywhere(&[&nodes[0], &nodes[2]], "b", 15).await;

    nodes[1].start();
    wait_mesh(&nodes).await;
    let view = nodes[1].view().await.expect("a view");
    assert_ne!(view["generation"], generation, "a new generation");

    let resumed = Sub::open(&nodes[1], Some(&cursor)).await;
    let history = Sub::open(&nodes[1], Some("earliest")).await;
    let after = publish_series(&nodes[1], "c-n2".into(), 10).await;

    let mut everything = first.clone();
    everything.extend(during);
    everything.extend(after);
    let reference = subs[0].settle(everything.len()).await;
    assert_exactly("n1", &reference, &everything);
    assert_eq!(
        subs[1].settle(everything.len()).await,
        reference,
        "n3 and n1 agree"
    );
    let pos = reference
        .iter()
        .position(|id| *id == cursor)
        .expect("cursor");
    assert_eq!(
        resumed.settle(reference.len() - pos - 1).await,
        reference[pos + 1..],
        "the resumed client got exactly what it missed"
    );
    assert_eq!(
        history.settle(reference.len()).await,
        reference,
        "the restarted process holds the whole history in the cluster order"
    );
    let vector = wait_converged(&nodes).await;
    let repaired = nodes[1].view().await.expect("a view")["stats"]["repaired"]
        .as_u64()
        .expect("stats.repaired");
    assert!(
        repaired >= 30,
        "the killed generation's updates came back through anti-entropy: {repaired}"
    );
    let counts: Vec<u64> = vector
        .as_object()
        .expect("a vector")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        everything.len() as u64,
        "{vector}"
    );
    assert_eq!(
        counts.len(),
        4,
        "n1, n3 and both generations of n2: {vector}"
    );
}
